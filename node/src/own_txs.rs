//! This node's own transactions in flight (slashes, lease opens and closes):
//! which nonce the next one takes, and which to sign again when they are
//! stuck (lost, or refused and blocking the nonces after them). Pure: the
//! daemon and the deterministic simulation feed it the ledger state, so both
//! run the same nonce and re-send rules.

use std::collections::BTreeMap;

use agora_ledger::{LeaseStatus, ProviderStatus, State};
use agora_protocol::{Address, Height, TxKind};

/// Blocks an own transaction may stay uncommitted before all of them are
/// signed again from the ledger's nonce.
pub const OWN_TX_RETRY_BLOCKS: u64 = 10;

#[derive(Debug, Default)]
pub struct OwnTxs {
    /// By nonce: what was sent and at which height.
    pending: BTreeMap<u64, (TxKind, Height)>,
}

impl OwnTxs {
    /// The nonce for a new transaction from `me`: after the ledger's and
    /// every one of ours still pending.
    pub fn next_nonce(&mut self, state: &State, me: &Address) -> u64 {
        let ledger_nonce = state.account(me).nonce;
        self.pending.retain(|n, _| *n >= ledger_nonce);
        self.pending.keys().next_back().map_or(ledger_nonce, |n| n + 1)
    }

    /// Records a transaction sent at `nonce`.
    pub fn sent(&mut self, nonce: u64, kind: TxKind, height: Height) {
        self.pending.insert(nonce, (kind, height));
    }

    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// After a commit: if the oldest pending transaction has waited
    /// `OWN_TX_RETRY_BLOCKS`, everything pending is to be signed again from
    /// the ledger's nonce, leaving out what no longer makes sense (closes of
    /// leases already settled, slashes of providers already jailed or
    /// tombstoned). Returns (nonce, kind) to send; the caller records each
    /// with `sent`.
    pub fn stuck(&mut self, state: &State, me: &Address) -> Vec<(u64, TxKind)> {
        let ledger_nonce = state.account(me).nonce;
        self.pending.retain(|n, _| *n >= ledger_nonce);
        let height = state.height().0;
        let stuck = self.pending.values().next().is_some_and(|(_, h)| height >= h.0 + OWN_TX_RETRY_BLOCKS);
        if !stuck {
            return Vec::new();
        }
        std::mem::take(&mut self.pending)
            .into_values()
            .map(|(k, _)| k)
            .filter(|k| still_wanted(state, k))
            .enumerate()
            .map(|(i, k)| (ledger_nonce + i as u64, k))
            .collect()
    }
}

fn still_wanted(state: &State, kind: &TxKind) -> bool {
    match kind {
        TxKind::CloseLease { lease_id, .. } => state.lease(lease_id).is_some_and(|l| l.status == LeaseStatus::Open),
        // Someone else's slash got in first, or the provider is already jailed.
        TxKind::SlashDowntime { evidence } => state.is_active_provider(&evidence.provider),
        TxKind::SlashEquivocation { evidence } => state
            .provider(&state.acting_for(&evidence.offender()))
            .is_some_and(|p| p.status != ProviderStatus::Tombstoned),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use agora_ledger::testkit::{TestChain, transfer};
    use agora_ledger::{SigCheck, apply_block};
    use agora_protocol::{Amount, LeaseId};

    use super::*;

    #[test]
    fn nonces_follow_the_pending_ones_and_stuck_ones_are_signed_again_from_the_ledger_nonce() {
        let chain = TestChain::new(2, 1, Amount::agr(10));
        let mut state = chain.state();
        let me = chain.address(1);
        let mut own = OwnTxs::default();
        let close = TxKind::CloseLease { lease_id: LeaseId(agora_protocol::Hash([1; 32])), exit_code: None };
        for _ in 0..3 {
            let n = own.next_nonce(&state, &me);
            own.sent(n, TxKind::Unjail, state.height());
        }
        let n = own.next_nonce(&state, &me);
        own.sent(n, close, state.height());
        assert_eq!(own.next_nonce(&state, &me), 4, "after the four pending");
        // Nonce 0 commits; the rest wait.
        let block =
            chain.next_block(&mut state.clone(), vec![transfer(&chain.keys[1], 0, chain.address(0), Amount(1))]);
        apply_block(&mut state, &block.unwrap(), SigCheck::Verify).unwrap();
        assert!(own.stuck(&state, &me).is_empty(), "not stuck yet");
        assert_eq!(own.len(), 3, "the committed nonce is forgotten");
        for _ in 0..OWN_TX_RETRY_BLOCKS {
            let block = chain.next_block(&mut state.clone(), vec![]).unwrap();
            apply_block(&mut state, &block, SigCheck::Verify).unwrap();
        }
        let again = own.stuck(&state, &me);
        // Two Unjails again from the ledger's nonce 1; the close of a lease that is not open is left out.
        assert_eq!(again, vec![(1, TxKind::Unjail), (2, TxKind::Unjail)]);
        assert!(own.is_empty(), "the caller records what it sends again");
    }
}
