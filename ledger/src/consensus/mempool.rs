//! The bounded mempool: pending transactions keyed by (sender, nonce), so
//! iteration yields each account's transactions in nonce order. Duplicates
//! are dropped, each account may queue only a few, and the whole pool is
//! capped; committed or stale transactions are pruned after every block.

use std::collections::BTreeMap;

use agora_protocol::{Address, SignedTx};

use crate::state::State;

/// Transactions the pool holds at most (≈ 2 full blocks).
pub const MAX_MEMPOOL_TXS: usize = 10_000;
/// Transactions one account may have queued: a cheap per-account rate limit.
pub const MAX_TXS_PER_ACCOUNT: usize = 64;

#[derive(Debug, PartialEq, Eq)]
pub enum AddError {
    Full,
    AccountLimit,
    StaleNonce,
    Duplicate,
}

impl std::fmt::Display for AddError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AddError::Full => "mempool full; retry later",
            AddError::AccountLimit => "too many pending transactions from this account; wait for some to commit",
            AddError::StaleNonce => "nonce already used",
            AddError::Duplicate => "already pending",
        })
    }
}

#[derive(Clone, Debug, Default)]
pub struct Mempool {
    txs: BTreeMap<(Address, u64), SignedTx>,
}

impl Mempool {
    pub fn len(&self) -> usize {
        self.txs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.txs.is_empty()
    }

    /// Queues a transaction whose nonce is not already used on `state`.
    pub fn add(&mut self, state: &State, tx: SignedTx) -> Result<(), AddError> {
        self.check(state, &tx)?;
        self.txs.insert((tx.signer, tx.body.nonce), tx);
        Ok(())
    }

    /// Whether `add` would queue `tx` (its signature aside): lets a node
    /// refuse work it cannot keep before spending a signature check or a
    /// gossip forward on it.
    pub fn check(&self, state: &State, tx: &SignedTx) -> Result<(), AddError> {
        let key = (tx.signer, tx.body.nonce);
        if tx.body.nonce < state.account(&tx.signer).nonce {
            return Err(AddError::StaleNonce);
        }
        if self.txs.contains_key(&key) {
            return Err(AddError::Duplicate);
        }
        if self.txs.len() >= MAX_MEMPOOL_TXS {
            return Err(AddError::Full);
        }
        let queued = self.txs.range((tx.signer, 0)..=(tx.signer, u64::MAX)).count();
        if queued >= MAX_TXS_PER_ACCOUNT {
            return Err(AddError::AccountLimit);
        }
        Ok(())
    }

    /// Whether exactly this transaction (same body and signature) is queued,
    /// and so was signature-checked when it entered.
    pub fn contains(&self, tx: &SignedTx) -> bool {
        self.txs.get(&(tx.signer, tx.body.nonce)).is_some_and(|queued| queued == tx)
    }

    /// Up to `max` candidates, each account's in nonce order.
    pub fn candidates(&self, max: usize) -> Vec<SignedTx> {
        self.txs.values().take(max).cloned().collect()
    }

    /// Drops every transaction whose nonce the ledger has already used.
    pub fn prune(&mut self, state: &State) {
        self.txs.retain(|(sender, nonce), _| *nonce >= state.account(sender).nonce);
    }
}
