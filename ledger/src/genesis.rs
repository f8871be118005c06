//! Genesis: the chain id, parameters, initial balances and stakes, and the
//! initial validators. Its hash is the parent of block 1, binding every
//! block to one genesis.

use std::collections::BTreeSet;

use agora_protocol::{Address, Amount, ChainId, Hash, TimestampMs};
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::params::Params;
use crate::state::{Account, State, StateData, Validator};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenesisAccount {
    pub address: Address,
    pub balance: Amount,
    pub stake: Amount,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Genesis {
    pub chain_id: ChainId,
    pub genesis_time_ms: TimestampMs,
    pub params: Params,
    pub accounts: Vec<GenesisAccount>,
    /// Initial validators; each needs stake, which becomes its voting power.
    pub validators: Vec<Address>,
}

impl agora_protocol::Wire for Genesis {
    const NAME: &'static str = "genesis";
    const VERSION: u8 = 1;
    /// Local files and stores only; room for two million accounts.
    const MAX_BYTES: usize = 128 * 1024 * 1024;
}

impl Genesis {
    /// The genesis identity, used as block 1's parent hash.
    pub fn hash(&self) -> Hash {
        // Plain owned data: canonical encoding cannot fail.
        Hash::of_canonical(b"agora/genesis/1", self).unwrap_or(Hash::ZERO)
    }

    /// The state at height 0, after checking the genesis is coherent.
    /// The genesis state, its tree in memory.
    pub fn state(&self) -> Result<State, Error> {
        self.state_in(std::sync::Arc::new(crate::tree::MemNodes::default()))
    }

    /// The genesis state, its tree (version 0) written to `store`.
    pub fn state_in(&self, store: std::sync::Arc<dyn crate::tree::NodeStore>) -> Result<State, Error> {
        let data = self.data()?;
        let computed = crate::tree::compute(&*store, &data, crate::tree::all_keys(&data), 0)?;
        store.write(0, &computed.batch, &computed.keys)?;
        Ok(State::from_data(data, self.hash(), crate::tree::TreeHandle::new(store)))
    }

    /// The genesis state's contents, after checking the genesis is coherent.
    pub(crate) fn data(&self) -> Result<StateData, Error> {
        self.chain_id.validate()?;
        self.params.validate()?;
        let mut accounts = crate::state::Map::new();
        let mut supply = Amount::ZERO;
        let overflow = || Error::Genesis("total supply overflows u64".into());
        for a in &self.accounts {
            let acct = Account { balance: a.balance, stake: a.stake, unbonding: Amount::ZERO, nonce: 0 };
            supply = supply.checked_add(a.balance).and_then(|s| s.checked_add(a.stake)).ok_or_else(overflow)?;
            if acct.is_empty() {
                continue;
            }
            if accounts.insert(a.address, acct).is_some() {
                return Err(Error::Genesis(format!("account {} listed twice", a.address)));
            }
        }
        let validators = self.validator_set(&accounts)?;
        let data = StateData {
            time_ms: self.genesis_time_ms,
            supply,
            accounts,
            last_validators: validators.clone(),
            validators,
            ..StateData::empty(self.chain_id.clone(), self.params.clone())
        };
        Ok(data)
    }

    fn validator_set(&self, accounts: &crate::state::Map<Address, Account>) -> Result<Vec<Validator>, Error> {
        if self.validators.is_empty() || self.validators.len() as u64 > self.params.max_validators {
            return Err(Error::Genesis(format!("needs 1 to {} validators", self.params.max_validators)));
        }
        let mut seen = BTreeSet::new();
        let mut set = Vec::with_capacity(self.validators.len());
        for v in &self.validators {
            if !seen.insert(*v) {
                return Err(Error::Genesis(format!("validator {v} listed twice")));
            }
            let stake = accounts.get(v).map(|a| a.stake).unwrap_or_default();
            if stake.is_zero() {
                return Err(Error::Genesis(format!("validator {v} has no stake")));
            }
            set.push(Validator { address: *v, power: stake.0 });
        }
        // Canonical order, the same the epoch rotation produces.
        set.sort_by_key(|v| v.address);
        Ok(set)
    }
}
