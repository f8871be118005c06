//! Transactions from gossip, their signatures checked in batches.
//!
//! A node checks every transaction's signature once; those from gossip
//! were checked one by one on the event loop, about half of a loaded node's
//! CPU (docs/design/scaling.md). A batch check costs about half as much per
//! signature, so gossiped transactions that pass the cheap checks (decoding,
//! mempool admission) wait here until `GOSSIP_TX_BATCH` are pending or the
//! oldest has waited `GOSSIP_TX_WAIT_MS`, and are then checked together;
//! gossipsub holds their forwarding until the verdict (its validation is
//! asynchronous by design). A batch that fails is checked one by one, so
//! each forged transaction is rejected, and its sender penalised, alone.
//! Pure: the daemon pushes, asks for the deadline, and reports verdicts.

use agora_protocol::sign::{BatchItem, verify_batch};
use agora_protocol::{ChainId, SignedTx};

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

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

/// Whether each transaction's signature is valid on `chain`: one batch
/// check, and one by one only if the batch fails.
pub fn verdicts(chain: &ChainId, txs: &[SignedTx]) -> Vec<bool> {
    let items: Option<Vec<BatchItem>> = txs
        .iter()
        .map(|tx| tx.digest(chain).ok().map(|digest| BatchItem { digest, signature: tx.signature, signer: tx.signer }))
        .collect();
    if items.is_some_and(|items| verify_batch(&items).is_ok()) {
        return vec![true; txs.len()];
    }
    txs.iter().map(|tx| tx.verify(chain).is_ok()).collect()
}

#[cfg(test)]
mod tests {
    use agora_protocol::{Address, Amount, Keypair, Signed, Transaction, TxKind};

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

    #[test]
    fn each_forgery_is_found_alone_and_honest_ones_pass() {
        let chain = ChainId::new("agora-test").unwrap();
        let mut txs: Vec<SignedTx> = (0..10).map(tx).collect();
        assert_eq!(verdicts(&chain, &txs), vec![true; 10]);
        txs[3].signature.0[10] ^= 1;
        txs[7].body.nonce += 1;
        let v = verdicts(&chain, &txs);
        assert_eq!(v.iter().filter(|ok| !**ok).count(), 2, "{v:?}");
        assert!(!v[3] && !v[7]);
        let other = ChainId::new("agora-other").unwrap();
        assert_eq!(verdicts(&other, &txs[..2]), vec![false, false], "signed for another chain");
        assert!(verdicts(&chain, &[]).is_empty());
    }
}
