//! Transactions from gossip, their signatures checked in batches.
//!
//! Transactions travel in bundles (`TxBundle`, one gossipsub message and
//! one gossipsub signature for up to `MAX_TXS_PER_BUNDLE`). A node checks
//! every transaction's signature once; a batch check costs about half as
//! much per signature as one by one, so bundles that pass the cheap checks
//! (decoding, mempool admission of at least one of their transactions) wait
//! here until `GOSSIP_TX_BATCH` transactions are pending or the oldest has
//! waited `GOSSIP_TX_WAIT_MS`, and are then checked together; gossipsub
//! holds their forwarding until the verdict (its validation is asynchronous
//! by design). Every transaction of a bundle is checked, those this node
//! will not keep included: a forwarded bundle must not carry a forgery that
//! would get this node penalised by the next. A bundle holding one forgery
//! is rejected (its sender penalised) alone; the valid transactions enter
//! the pool as verified, not checked again. Pure: the daemon pushes, asks
//! for the deadline, and hands the due bundles to `check`.

use agora_ledger::consensus::mempool::{VerifiedTx, verify_all};
use agora_protocol::{ChainId, SignedTx};

/// Transactions checked together at most (and a batch is checked at once when full).
pub const GOSSIP_TX_BATCH: usize = 64;
/// Longest a gossiped transaction waits for its batch.
pub const GOSSIP_TX_WAIT_MS: u64 = 10;

/// A gossiped bundle waiting for its check: what identifies it to
/// gossipsub, its transactions, and which of them this node would keep.
#[derive(Debug)]
pub struct Waiting<Id> {
    pub id: Id,
    pub txs: Vec<SignedTx>,
    pub keep: Vec<bool>,
}

/// Gossiped bundles waiting for their signature check.
#[derive(Debug)]
pub struct Pending<Id> {
    bundles: Vec<Waiting<Id>>,
    txs: usize,
    /// When the oldest waiting one arrived (ms).
    since_ms: Option<u64>,
}

impl<Id> Default for Pending<Id> {
    fn default() -> Self {
        Pending { bundles: Vec::new(), txs: 0, since_ms: None }
    }
}

impl<Id> Pending<Id> {
    /// Queues a bundle; true when enough transactions wait to be checked now.
    pub fn push(&mut self, bundle: Waiting<Id>, now_ms: u64) -> bool {
        self.since_ms.get_or_insert(now_ms);
        self.txs += bundle.txs.len();
        self.bundles.push(bundle);
        self.txs >= GOSSIP_TX_BATCH
    }

    /// When the waiting batch is due, if one waits.
    pub fn deadline_ms(&self) -> Option<u64> {
        self.since_ms.map(|t| t + GOSSIP_TX_WAIT_MS)
    }

    /// The waiting bundles, leaving none.
    pub fn take(&mut self) -> Vec<Waiting<Id>> {
        self.since_ms = None;
        self.txs = 0;
        std::mem::take(&mut self.bundles)
    }

    pub fn is_empty(&self) -> bool {
        self.bundles.is_empty()
    }
}

/// Checks every signature of the bundles as one batch (one by one only if
/// it fails): each bundle's verdict (true: every signature valid) and the
/// valid transactions this node keeps.
pub fn check<Id>(chain: &ChainId, bundles: Vec<Waiting<Id>>) -> (Vec<(Id, bool)>, Vec<VerifiedTx>) {
    let mut shapes = Vec::with_capacity(bundles.len());
    let mut all = Vec::new();
    for b in bundles {
        shapes.push((b.id, b.keep));
        all.extend(b.txs);
    }
    let mut checked = verify_all(chain, all).into_iter();
    let mut verdicts = Vec::with_capacity(shapes.len());
    let mut kept = Vec::new();
    for (id, keep) in shapes {
        let mut valid = true;
        for (k, tx) in keep.into_iter().zip(checked.by_ref()) {
            valid &= tx.is_some();
            kept.extend(tx.filter(|_| k));
        }
        verdicts.push((id, valid));
    }
    (verdicts, kept)
}

#[cfg(test)]
mod tests {
    use agora_protocol::{Address, Amount, ChainId, Keypair, Signed, Transaction, TxKind};

    use super::*;

    fn chain() -> ChainId {
        ChainId::new("agora-test").unwrap()
    }

    fn tx(i: u64) -> SignedTx {
        let key = Keypair::from_seed_phrase(&format!("gossip batch {i}"));
        let body = Transaction {
            nonce: i,
            fee: Amount(1_000),
            kind: TxKind::Transfer { to: Address([7; 32]), amount: Amount(1) },
        };
        Signed::sign(body, &key, &chain()).unwrap()
    }

    fn bundle(id: u32, range: std::ops::Range<u64>) -> Waiting<u32> {
        let txs: Vec<SignedTx> = range.map(tx).collect();
        Waiting { id, keep: vec![true; txs.len()], txs }
    }

    #[test]
    fn a_batch_is_due_when_full_or_when_its_oldest_has_waited() {
        let mut p = Pending::default();
        assert_eq!(p.deadline_ms(), None);
        assert!(!p.push(bundle(1, 0..1), 1_000));
        assert!(!p.push(bundle(2, 1..3), 1_005));
        assert_eq!(p.deadline_ms(), Some(1_000 + GOSSIP_TX_WAIT_MS), "from the oldest");
        assert!(!p.push(bundle(3, 3..GOSSIP_TX_BATCH as u64 - 1), 1_006));
        assert!(p.push(bundle(4, 100..101), 1_007), "enough transactions wait");
        let taken = p.take();
        assert_eq!(taken.iter().map(|b| b.id).collect::<Vec<_>>(), [1, 2, 3, 4], "in arrival order");
        assert!(p.is_empty());
        assert_eq!(p.deadline_ms(), None);
        assert!(!p.push(bundle(5, 0..1), 2_000), "the count starts over");
    }

    #[test]
    fn a_forgery_rejects_its_bundle_alone_and_only_kept_valid_transactions_enter() {
        let mut forged = bundle(2, 10..14);
        forged.txs[2].signature.0[5] ^= 1;
        // A forgery this node would not keep (a stale nonce, say) still rejects its bundle.
        let mut hidden = bundle(3, 20..22);
        hidden.txs[1].signature.0[5] ^= 1;
        hidden.keep[1] = false;
        let mut partly = bundle(4, 30..33);
        partly.keep[0] = false;
        let (verdicts, kept) = check(&chain(), vec![bundle(1, 0..3), forged, hidden, partly]);
        assert_eq!(verdicts, [(1, true), (2, false), (3, false), (4, true)]);
        let nonces: Vec<u64> = kept.iter().map(|t| t.tx().body.nonce).collect();
        assert_eq!(nonces, [0, 1, 2, 10, 11, 13, 20, 31, 32], "valid and kept, in order");
        let (verdicts, kept) = check::<u32>(&chain(), Vec::new());
        assert!(verdicts.is_empty() && kept.is_empty());
    }
}
