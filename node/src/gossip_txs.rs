//! Transactions from gossip, their signatures checked in batches.
//!
//! A node checks every transaction's signature once; those from gossip
//! were checked one by one on the event loop, about half of a loaded node's
//! CPU (docs/design/scaling.md). A batch check costs about half as much per
//! signature, so gossiped transactions that pass the cheap checks (decoding,
//! mempool admission) wait here until `GOSSIP_TX_BATCH` are pending or the
//! oldest has waited `GOSSIP_TX_WAIT_MS`, and are then checked together;
//! gossipsub holds their forwarding until the verdict (its validation is
//! asynchronous by design). A batch that fails is checked one by one
//! (`mempool::verify_all`), so each forged transaction is rejected, and its
//! sender penalised, alone; the valid ones enter the pool as verified, not
//! checked again. Pure: the daemon pushes, asks for the deadline, and
//! reports verdicts.

use agora_protocol::SignedTx;

/// Transactions checked together at most (and a batch is checked at once when full).
pub const GOSSIP_TX_BATCH: usize = 64;
/// Longest a gossiped transaction waits for its batch.
pub const GOSSIP_TX_WAIT_MS: u64 = 10;

/// Gossiped transactions waiting for their signature check, with what
/// identifies each to gossipsub.
#[derive(Debug)]
pub struct Pending<Id> {
    items: Vec<(Id, SignedTx)>,
    /// When the oldest waiting one arrived (ms).
    since_ms: Option<u64>,
}

impl<Id> Default for Pending<Id> {
    fn default() -> Self {
        Pending { items: Vec::new(), since_ms: None }
    }
}

impl<Id> Pending<Id> {
    /// Queues a transaction; true when the batch is full and due now.
    pub fn push(&mut self, id: Id, tx: SignedTx, now_ms: u64) -> bool {
        self.since_ms.get_or_insert(now_ms);
        self.items.push((id, tx));
        self.items.len() >= GOSSIP_TX_BATCH
    }

    /// When the waiting batch is due, if one waits.
    pub fn deadline_ms(&self) -> Option<u64> {
        self.since_ms.map(|t| t + GOSSIP_TX_WAIT_MS)
    }

    /// The waiting transactions, leaving none.
    pub fn take(&mut self) -> Vec<(Id, SignedTx)> {
        self.since_ms = None;
        std::mem::take(&mut self.items)
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use agora_protocol::{Address, Amount, ChainId, Keypair, Signed, Transaction, TxKind};

    use super::*;

    fn tx(i: u64) -> SignedTx {
        let key = Keypair::from_seed_phrase(&format!("gossip batch {i}"));
        let body = Transaction {
            nonce: i,
            fee: Amount(1_000),
            kind: TxKind::Transfer { to: Address([7; 32]), amount: Amount(1) },
        };
        Signed::sign(body, &key, &ChainId::new("agora-test").unwrap()).unwrap()
    }

    #[test]
    fn a_batch_is_due_when_full_or_when_its_oldest_has_waited() {
        let mut p = Pending::default();
        assert_eq!(p.deadline_ms(), None);
        assert!(!p.push(1, tx(1), 1_000));
        assert!(!p.push(2, tx(2), 1_005));
        assert_eq!(p.deadline_ms(), Some(1_000 + GOSSIP_TX_WAIT_MS), "from the oldest");
        for i in 3..GOSSIP_TX_BATCH as u64 {
            assert!(!p.push(i, tx(i), 1_006));
        }
        assert!(p.push(99, tx(99), 1_007), "the batch is full");
        let taken = p.take();
        assert_eq!(taken.len(), GOSSIP_TX_BATCH);
        assert_eq!(taken[0].0, 1, "in arrival order");
        assert!(p.is_empty());
        assert_eq!(p.deadline_ms(), None);
    }
}
