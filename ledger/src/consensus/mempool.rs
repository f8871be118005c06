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

    /// The nonce a new transaction from `sender` should use: after the
    /// ledger's and every one already queued in a row after it.
    pub fn next_nonce(&self, state: &State, sender: &Address) -> u64 {
        let mut n = state.account(sender).nonce;
        while self.txs.contains_key(&(*sender, n)) {
            n += 1;
        }
        n
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

    /// Drops every transaction whose nonce the ledger has already used, and
    /// each account's next transaction if it no longer applies (a close of a
    /// lease settled meanwhile, a spend of funds now gone): left in the pool
    /// it would hold that nonce forever, and no replacement could enter.
    pub fn prune(&mut self, state: &mut State) {
        self.txs.retain(|(sender, nonce), _| *nonce >= state.account(sender).nonce);
        let heads: Vec<(Address, u64)> =
            self.txs.keys().filter(|(sender, nonce)| *nonce == state.account(sender).nonce).copied().collect();
        for key in heads {
            let Some(tx) = self.txs.get(&key) else { continue };
            let mark = state.checkpoint();
            // Signatures were checked when the transaction entered the pool.
            let applies = crate::apply::apply_tx(state, tx, crate::apply::SigCheck::Skip).is_ok();
            state.rollback(mark);
            if !applies {
                self.txs.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use agora_protocol::{Amount, TxKind};

    use super::*;
    use crate::testkit::{TestChain, sign_tx, transfer};

    #[test]
    fn a_head_that_no_longer_applies_is_evicted_so_its_nonce_can_be_reused() {
        let chain = TestChain::new(3, 1, Amount::agr(10));
        let mut state = chain.state();
        let mut pool = Mempool::default();
        // Account 1 queues a spend of everything and a second spend after it.
        pool.add(&state, transfer(&chain.keys[1], 0, chain.address(2), Amount::agr(10))).unwrap();
        pool.add(&state, transfer(&chain.keys[1], 1, chain.address(2), Amount::agr(1))).unwrap();
        pool.add(&state, sign_tx(&chain.keys[2], 0, TxKind::Unjail)).unwrap();
        pool.prune(&mut state);
        assert_eq!(pool.len(), 2, "account 1's head still applies; account 2's Unjail (not a provider) does not");
        let root = state.root();
        // Meanwhile the funds go elsewhere (another node's transaction got in first).
        let other = transfer(&chain.keys[1], 0, chain.address(0), Amount::agr(5));
        let mut s2 = state.clone();
        let block = chain.next_block(&mut s2, vec![other]).unwrap();
        crate::apply::apply_block(&mut state, &block, crate::apply::SigCheck::Verify).unwrap();
        assert_ne!(state.root(), root);
        pool.prune(&mut state);
        // Nonce 0 is used now; nonce 1 (spend 1 AGR of the 5 left) applies and stays.
        assert_eq!(pool.len(), 1);
        assert!(pool.check(&state, &transfer(&chain.keys[1], 1, chain.address(2), Amount::agr(2))).is_err());
        // A head spending more than is left is evicted, freeing its nonce for a replacement.
        let mut pool = Mempool::default();
        pool.add(&state, transfer(&chain.keys[1], 1, chain.address(2), Amount::agr(9))).unwrap();
        pool.prune(&mut state);
        assert!(pool.is_empty());
        assert!(pool.check(&state, &transfer(&chain.keys[1], 1, chain.address(2), Amount::agr(1))).is_ok());
    }
}
