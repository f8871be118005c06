//! The bounded mempool: what a node holds for the next blocks. Admission is
//! the defence against being filled for free (see docs/decisions.md, "Fees
//! and the mempool"): a transaction enters only if its sender's balance can
//! pay its fee and what it moves, together with everything the sender already
//! has queued; only within a window of nonces after the account's; within a
//! byte quota per account and in total. When the pool is full a higher fee
//! evicts the cheapest, newest waiting transaction. Blocks take transactions
//! by fee, then arrival, each account's in nonce order. Whatever can no
//! longer execute (spent funds, a nonce gap that is never filled, old age)
//! is dropped after every block, so nothing is kept forever.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};

use agora_protocol::{Address, Amount, SignedTx};

use crate::state::State;

/// Transactions the pool holds at most (≈ 2 full blocks).
pub const MAX_MEMPOOL_TXS: usize = 10_000;
/// Encoded bytes the pool holds at most (4 full blocks).
pub const MAX_MEMPOOL_BYTES: usize = 4 * agora_protocol::limits::MAX_BLOCK_BYTES;
/// What a node takes from its own clients at most (see `node::edge`): a
/// quarter of the pool, so the rest is room for what peers gossip and a
/// transaction taken at one node's edge still fits in the others' pools.
pub const EDGE_MAX_TXS: usize = MAX_MEMPOOL_TXS / 4;
/// The nonce window: a transaction's nonce must be below the account's
/// nonce plus this, so one account queues at most this many.
pub const MAX_TXS_PER_ACCOUNT: usize = 64;
/// Encoded bytes one account may have queued.
pub const MAX_ACCOUNT_BYTES: usize = 512 * 1024;
/// Blocks a transaction may wait behind a missing nonce before it is dropped.
pub const GAP_TTL_BLOCKS: u64 = 20;
/// Blocks any transaction may wait at all (one outbid for this long is dropped).
pub const TX_TTL_BLOCKS: u64 = 600;
/// Entries an eviction looks at before giving up: bounds the work one
/// incoming transaction can cause.
const MAX_EVICTION_SCAN: usize = 1_024;

/// A transaction whose signature was checked for the chain it was checked
/// against: `verify_all` is the only way to make one, so the pool can take
/// it without checking again (a node checks each signature once, wherever
/// the transaction came from: its API or gossip).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedTx(SignedTx);

impl VerifiedTx {
    pub fn tx(&self) -> &SignedTx {
        &self.0
    }

    pub fn into_inner(self) -> SignedTx {
        self.0
    }
}

/// Checks the transactions' signatures on `chain`: one batch check, and one
/// by one only if the batch fails, so each forgery is found alone. Each
/// comes back verified, or as None.
pub fn verify_all(chain: &agora_protocol::ChainId, txs: Vec<SignedTx>) -> Vec<Option<VerifiedTx>> {
    use agora_protocol::sign::{BatchItem, verify_batch};
    let items: Option<Vec<BatchItem>> = txs.iter().map(|tx| tx.batch_item(chain).ok()).collect();
    let all_valid = items.is_some_and(|items| verify_batch(&items).is_ok());
    txs.into_iter().map(|tx| (all_valid || tx.verify(chain).is_ok()).then_some(VerifiedTx(tx))).collect()
}

/// Why a transaction was not admitted. `code` is what the API sends.
#[derive(Debug, PartialEq, Eq)]
pub enum AddError {
    /// The pool is full of transactions paying at least as much.
    Full,
    /// The account's byte quota is used up.
    AccountLimit,
    StaleNonce,
    /// The nonce is beyond the account's window.
    NonceTooFar {
        account_nonce: u64,
    },
    Duplicate,
    FeeTooLow {
        min: Amount,
    },
    /// The balance cannot pay this on top of what the account has queued.
    CannotPay {
        need: u128,
        balance: Amount,
    },
}

impl AddError {
    /// A stable machine-readable code for the API and CLI.
    pub fn code(&self) -> &'static str {
        match self {
            AddError::Full => "mempool_full",
            AddError::AccountLimit => "account_quota",
            AddError::StaleNonce => "nonce_used",
            AddError::NonceTooFar { .. } => "nonce_too_far",
            AddError::Duplicate => "already_pending",
            AddError::FeeTooLow { .. } => "fee_too_low",
            AddError::CannotPay { .. } => "cannot_pay",
        }
    }

    /// Load rather than a fault of the transaction: worth retrying later.
    pub fn is_retryable(&self) -> bool {
        matches!(self, AddError::Full | AddError::AccountLimit | AddError::NonceTooFar { .. })
    }
}

impl std::fmt::Display for AddError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AddError::Full => {
                f.write_str("mempool full of transactions paying at least this fee; retry later or pay more")
            }
            AddError::AccountLimit => {
                f.write_str("too many pending transaction bytes from this account; wait for some to commit")
            }
            AddError::StaleNonce => f.write_str("nonce already used"),
            AddError::NonceTooFar { account_nonce } => write!(
                f,
                "nonce too far ahead: the account's nonce is {account_nonce} and at most {MAX_TXS_PER_ACCOUNT} may wait"
            ),
            AddError::Duplicate => f.write_str("already pending"),
            AddError::FeeTooLow { min } => write!(f, "fee below the chain's minimum of {min}"),
            AddError::CannotPay { need, balance } => write!(
                f,
                "balance {balance} cannot pay {} for this and the account's pending transactions",
                Amount(u64::try_from(*need).unwrap_or(u64::MAX))
            ),
        }
    }
}

#[derive(Clone, Debug)]
struct Entry {
    tx: SignedTx,
    bytes: usize,
    cost: u128,
    /// Arrival order, for fair ordering among equal fees.
    seq: u64,
    /// The ledger height when it arrived, for ageing out.
    height: u64,
}

/// What one account has queued.
#[derive(Clone, Copy, Debug, Default)]
struct Usage {
    count: usize,
    bytes: usize,
    cost: u128,
}

/// Eviction order: lowest fee first, newest first among equal fees.
type EvictKey = (Amount, Reverse<u64>, Address, u64);

#[derive(Clone, Debug, Default)]
pub struct Mempool {
    txs: BTreeMap<(Address, u64), Entry>,
    usage: HashMap<Address, Usage>,
    by_fee: BTreeSet<EvictKey>,
    bytes: usize,
    next_seq: u64,
}

impl Mempool {
    pub fn len(&self) -> usize {
        self.txs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.txs.is_empty()
    }

    /// Encoded bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Transactions `sender` has queued.
    pub fn pending_from(&self, sender: &Address) -> usize {
        self.usage.get(sender).map_or(0, |u| u.count)
    }

    /// The lowest fee waiting, if any.
    pub fn cheapest_fee(&self) -> Option<Amount> {
        self.by_fee.first().map(|k| k.0)
    }

    /// Queues a transaction (its signature already checked), evicting
    /// cheaper ones if the pool is full.
    pub fn add(&mut self, state: &State, tx: SignedTx) -> Result<(), AddError> {
        let bytes = encoded_len(&tx);
        let evict = self.admission(state, &tx, bytes)?;
        for key in evict {
            self.remove(&key);
        }
        let entry = Entry { cost: tx.body.upfront_cost(), bytes, seq: self.next_seq, height: state.height().0, tx };
        self.next_seq += 1;
        self.insert(entry);
        Ok(())
    }

    /// Whether `add` would queue `tx` (its signature aside): lets a node
    /// refuse work it cannot keep before spending a signature check or a
    /// gossip forward on it.
    pub fn check(&self, state: &State, tx: &SignedTx) -> Result<(), AddError> {
        self.admission(state, tx, encoded_len(tx)).map(|_| ())
    }

    /// The admission rules; on success, what must be evicted to make room.
    fn admission(&self, state: &State, tx: &SignedTx, bytes: usize) -> Result<Vec<(Address, u64)>, AddError> {
        let acct = state.account(&tx.signer);
        let nonce = tx.body.nonce;
        if nonce < acct.nonce {
            return Err(AddError::StaleNonce);
        }
        if nonce - acct.nonce >= MAX_TXS_PER_ACCOUNT as u64 {
            return Err(AddError::NonceTooFar { account_nonce: acct.nonce });
        }
        if self.txs.contains_key(&(tx.signer, nonce)) {
            return Err(AddError::Duplicate);
        }
        let min = state.params().min_tx_fee;
        if tx.body.fee < min {
            return Err(AddError::FeeTooLow { min });
        }
        let used = self.usage.get(&tx.signer).copied().unwrap_or_default();
        if used.bytes + bytes > MAX_ACCOUNT_BYTES {
            return Err(AddError::AccountLimit);
        }
        let need = used.cost + tx.body.upfront_cost();
        if need > u128::from(acct.balance.0) {
            return Err(AddError::CannotPay { need, balance: acct.balance });
        }
        if self.txs.len() < MAX_MEMPOOL_TXS && self.bytes + bytes <= MAX_MEMPOOL_BYTES {
            return Ok(Vec::new());
        }
        self.eviction_for(tx, bytes).ok_or(AddError::Full)
    }

    /// The cheapest, newest waiting transactions (each the last of its
    /// account's queue, so no queue gets a gap) whose removal makes room for
    /// `tx`, all paying strictly less; `None` if there are not enough.
    fn eviction_for(&self, tx: &SignedTx, bytes: usize) -> Option<Vec<(Address, u64)>> {
        let mut count = self.txs.len() + 1;
        let mut total = self.bytes + bytes;
        let mut evict = Vec::new();
        for &(fee, _, addr, nonce) in self.by_fee.iter().take(MAX_EVICTION_SCAN) {
            if count <= MAX_MEMPOOL_TXS && total <= MAX_MEMPOOL_BYTES {
                break;
            }
            if fee >= tx.body.fee {
                return None;
            }
            let is_tail = !self.txs.contains_key(&(addr, nonce + 1)) || evict.contains(&(addr, nonce + 1));
            if addr == tx.signer || !is_tail {
                continue;
            }
            count -= 1;
            total -= self.txs[&(addr, nonce)].bytes;
            evict.push((addr, nonce));
        }
        (count <= MAX_MEMPOOL_TXS && total <= MAX_MEMPOOL_BYTES).then_some(evict)
    }

    fn insert(&mut self, entry: Entry) {
        let key = (entry.tx.signer, entry.tx.body.nonce);
        let used = self.usage.entry(key.0).or_default();
        used.count += 1;
        used.bytes += entry.bytes;
        used.cost += entry.cost;
        self.bytes += entry.bytes;
        self.by_fee.insert((entry.tx.body.fee, Reverse(entry.seq), key.0, key.1));
        self.txs.insert(key, entry);
    }

    fn remove(&mut self, key: &(Address, u64)) -> Option<Entry> {
        let entry = self.txs.remove(key)?;
        self.by_fee.remove(&(entry.tx.body.fee, Reverse(entry.seq), key.0, key.1));
        self.bytes -= entry.bytes;
        if let Some(used) = self.usage.get_mut(&key.0) {
            used.count -= 1;
            used.bytes -= entry.bytes;
            used.cost -= entry.cost;
            if used.count == 0 {
                self.usage.remove(&key.0);
            }
        }
        Some(entry)
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
        self.txs.get(&(tx.signer, tx.body.nonce)).is_some_and(|queued| queued.tx == *tx)
    }

    /// Up to `max` candidates for the next block on `state`: the highest fee
    /// first, then the earliest arrival, each account's in nonce order from
    /// its current nonce (what waits behind a gap cannot execute yet).
    pub fn candidates(&self, state: &State, max: usize) -> Vec<SignedTx> {
        // Max-heap on (fee, earliest arrival) over each account's next transaction.
        let mut heads: BinaryHeap<(Amount, Reverse<u64>, Address, u64)> = BinaryHeap::new();
        for addr in self.usage.keys() {
            let nonce = state.account(addr).nonce;
            if let Some(e) = self.txs.get(&(*addr, nonce)) {
                heads.push((e.tx.body.fee, Reverse(e.seq), *addr, nonce));
            }
        }
        let mut out = Vec::with_capacity(max.min(self.txs.len()));
        while out.len() < max {
            let Some((_, _, addr, nonce)) = heads.pop() else { break };
            out.push(self.txs[&(addr, nonce)].tx.clone());
            if let Some(next) = self.txs.get(&(addr, nonce + 1)) {
                heads.push((next.tx.body.fee, Reverse(next.seq), addr, nonce + 1));
            }
        }
        out
    }

    /// After a block: drops every transaction whose nonce is used, whose
    /// account can no longer pay for it (with the ones before it), that has
    /// waited behind a nonce gap for `GAP_TTL_BLOCKS` or at all for
    /// `TX_TTL_BLOCKS`; and each account's next transaction if it no longer
    /// applies (a close of a lease settled meanwhile): left in the pool it
    /// would hold that nonce forever, and no replacement could enter.
    pub fn prune(&mut self, state: &mut State) {
        let now = state.height().0;
        let mut drop = Vec::new();
        let mut heads = Vec::new();
        for addr in self.usage.keys() {
            let acct = state.account(addr);
            let balance = u128::from(acct.balance.0);
            let mut cost = 0u128;
            let mut expected = acct.nonce;
            for (&(_, nonce), e) in self.txs.range((*addr, 0)..=(*addr, u64::MAX)) {
                let stale = nonce < acct.nonce;
                let behind_gap = nonce != expected;
                if !stale && !behind_gap {
                    expected += 1;
                    cost += e.cost;
                }
                let too_old = now.saturating_sub(e.height) > TX_TTL_BLOCKS;
                let gap_expired = behind_gap && now.saturating_sub(e.height) > GAP_TTL_BLOCKS;
                if stale || too_old || gap_expired || cost > balance {
                    drop.push((*addr, nonce));
                } else if nonce == acct.nonce {
                    heads.push((*addr, nonce));
                }
            }
        }
        for key in drop {
            self.remove(&key);
        }
        for key in heads {
            let Some(entry) = self.txs.get(&key) else { continue };
            let mark = state.checkpoint();
            // Signatures were checked when the transaction entered the pool.
            let applies = crate::apply::apply_tx(state, &entry.tx, crate::apply::SigCheck::Skip).is_ok();
            state.rollback(mark);
            if !applies {
                self.remove(&key);
            }
        }
    }
}

/// The transaction's size on the wire (0 for one that cannot be encoded:
/// such a transaction never passes the ledger's own checks anyway).
fn encoded_len(tx: &SignedTx) -> usize {
    agora_protocol::codec::encoded_len(tx).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use agora_protocol::{Keypair, Signed, Transaction, TxKind};

    use super::*;
    use crate::testkit::{TEST_FEE, TestChain, chain_id, sign_tx, transfer};

    fn with_fee(key: &Keypair, nonce: u64, fee: Amount, to: Address) -> SignedTx {
        let body = Transaction { nonce, fee, kind: TxKind::Transfer { to, amount: Amount(1) } };
        Signed::sign(body, key, &chain_id()).unwrap()
    }

    #[test]
    fn verify_all_finds_each_forgery_alone_and_passes_the_honest_ones() {
        let keys: Vec<Keypair> = (0..10).map(|i| Keypair::from_seed_phrase(&format!("verify all {i}"))).collect();
        let mut txs: Vec<SignedTx> =
            keys.iter().enumerate().map(|(i, k)| with_fee(k, i as u64, TEST_FEE, Address([7; 32]))).collect();
        let verdicts = |txs: &[SignedTx], chain: &agora_protocol::ChainId| -> Vec<bool> {
            verify_all(chain, txs.to_vec()).iter().map(Option::is_some).collect()
        };
        assert_eq!(verdicts(&txs, &chain_id()), vec![true; 10]);
        let honest = verify_all(&chain_id(), txs[..1].to_vec()).pop().unwrap().unwrap();
        assert_eq!(honest.tx(), &txs[0], "a verified transaction is the one given");
        txs[3].signature.0[10] ^= 1;
        txs[7].body.nonce += 1;
        let v = verdicts(&txs, &chain_id());
        assert_eq!(v.iter().filter(|ok| !**ok).count(), 2, "{v:?}");
        assert!(!v[3] && !v[7]);
        let other = agora_protocol::ChainId::new("agora-other").unwrap();
        assert_eq!(verdicts(&txs[..2], &other), vec![false, false], "signed for another chain");
        assert!(verify_all(&chain_id(), Vec::new()).is_empty());
    }

    #[test]
    fn what_can_no_longer_execute_is_dropped_so_its_nonce_can_be_reused() {
        let chain = TestChain::new(3, 1, Amount::agr(10));
        let mut state = chain.state();
        let mut pool = Mempool::default();
        pool.add(&state, transfer(&chain.keys[1], 0, chain.address(2), Amount::agr(5))).unwrap();
        pool.add(&state, transfer(&chain.keys[1], 1, chain.address(2), Amount::agr(1))).unwrap();
        pool.add(&state, sign_tx(&chain.keys[2], 0, TxKind::Unjail)).unwrap();
        pool.prune(&mut state);
        assert_eq!(pool.len(), 2, "account 1's queue still applies; account 2's Unjail (not a provider) does not");
        // Meanwhile the funds go elsewhere (another node's transaction got in first).
        let other = transfer(&chain.keys[1], 0, chain.address(0), Amount::agr(9));
        let block = chain.next_block(&mut state.clone(), vec![other]).unwrap();
        crate::apply::apply_block(&mut state, &block, crate::apply::SigCheck::Verify).unwrap();
        pool.prune(&mut state);
        // Nonce 0 is used; nonce 1 (1 AGR + fee) cannot be paid from the 0.999 AGR left.
        assert!(pool.is_empty());
        let replacement = transfer(&chain.keys[1], 1, chain.address(2), Amount(500_000));
        assert_eq!(pool.check(&state, &replacement), Ok(()));
        let too_much = transfer(&chain.keys[1], 1, chain.address(2), Amount(999_000));
        assert!(matches!(pool.check(&state, &too_much), Err(AddError::CannotPay { .. })), "the fee comes on top");
    }

    #[test]
    fn unfunded_senders_gaps_and_far_nonces_are_refused() {
        let chain = TestChain::new(2, 1, Amount::agr(10));
        let state = chain.state();
        let pool = Mempool::default();
        let stranger = Keypair::from_seed_phrase("mempool-stranger");
        // The attack of issue 11: a fresh key, nonces from 1.
        let junk = transfer(&stranger, 1, chain.address(0), Amount(1));
        assert!(matches!(pool.check(&state, &junk), Err(AddError::CannotPay { .. })));
        let far = transfer(&chain.keys[1], MAX_TXS_PER_ACCOUNT as u64, chain.address(0), Amount(1));
        assert_eq!(pool.check(&state, &far), Err(AddError::NonceTooFar { account_nonce: 0 }));
        let cheap = with_fee(&chain.keys[1], 0, Amount(TEST_FEE.0 - 1), chain.address(0));
        assert_eq!(pool.check(&state, &cheap), Err(AddError::FeeTooLow { min: TEST_FEE }));
    }

    #[test]
    fn a_gap_ages_out_and_a_funded_queue_is_capped_by_what_it_can_pay() {
        let chain = TestChain::new(2, 1, Amount::agr(1));
        let mut state = chain.state();
        let mut pool = Mempool::default();
        // Nonce 1 without 0: waits, then ages out.
        pool.add(&state, transfer(&chain.keys[1], 1, chain.address(0), Amount(1))).unwrap();
        for _ in 0..GAP_TTL_BLOCKS {
            let block = chain.next_block(&mut state.clone(), vec![]).unwrap();
            crate::apply::apply_block(&mut state, &block, crate::apply::SigCheck::Verify).unwrap();
            pool.prune(&mut state);
        }
        assert_eq!(pool.len(), 1, "still within its time");
        let block = chain.next_block(&mut state.clone(), vec![]).unwrap();
        crate::apply::apply_block(&mut state, &block, crate::apply::SigCheck::Verify).unwrap();
        pool.prune(&mut state);
        assert!(pool.is_empty(), "a transaction behind a gap is dropped after {GAP_TTL_BLOCKS} blocks");
        // 1 AGR pays for 1000 minimum fees, less the 1 µAGR each moves: 999 fit, not 1000 —
        // but the window stops it at 64 first.
        for n in 0..MAX_TXS_PER_ACCOUNT as u64 {
            pool.add(&state, transfer(&chain.keys[1], n, chain.address(0), Amount(1))).unwrap();
        }
        let next = transfer(&chain.keys[1], MAX_TXS_PER_ACCOUNT as u64, chain.address(0), Amount(1));
        assert!(matches!(pool.check(&state, &next), Err(AddError::NonceTooFar { .. })));
        let big = transfer(&chain.keys[0], 0, chain.address(1), Amount::agr(1));
        assert!(matches!(pool.check(&state, &big), Err(AddError::CannotPay { .. })), "fee on top of everything");
    }

    #[test]
    fn blocks_take_higher_fees_first_then_arrival_and_a_full_pool_evicts_the_cheapest() {
        let chain = TestChain::new(4, 1, Amount::agr(1_000));
        let state = chain.state();
        let mut pool = Mempool::default();
        let to = chain.address(0);
        pool.add(&state, with_fee(&chain.keys[1], 0, TEST_FEE, to)).unwrap();
        pool.add(&state, with_fee(&chain.keys[1], 1, Amount(TEST_FEE.0 * 9), to)).unwrap();
        pool.add(&state, with_fee(&chain.keys[2], 0, TEST_FEE, to)).unwrap();
        pool.add(&state, with_fee(&chain.keys[3], 0, Amount(TEST_FEE.0 * 5), to)).unwrap();
        let order: Vec<(Address, u64)> = pool.candidates(&state, 10).iter().map(|t| (t.signer, t.body.nonce)).collect();
        // Account 3 pays most among the heads; account 1's nonce 1 pays more but waits for its nonce 0,
        // which arrived before account 2's equal fee.
        assert_eq!(
            order,
            vec![(chain.address(3), 0), (chain.address(1), 0), (chain.address(1), 1), (chain.address(2), 0)]
        );

        // Fill the pool with minimum-fee transactions from many funded accounts.
        let rich = TestChain::new(MAX_MEMPOOL_TXS / MAX_TXS_PER_ACCOUNT + 2, 1, Amount::agr(10));
        let state = rich.state();
        let mut pool = Mempool::default();
        'fill: for k in &rich.keys[1..] {
            for n in 0..MAX_TXS_PER_ACCOUNT as u64 {
                if pool.len() == MAX_MEMPOOL_TXS {
                    break 'fill;
                }
                pool.add(&state, with_fee(k, n, TEST_FEE, to)).unwrap();
            }
        }
        let user = &rich.keys[0];
        assert_eq!(pool.check(&state, &with_fee(user, 0, TEST_FEE, to)), Err(AddError::Full));
        // Paying more gets in, evicting the newest cheapest tail.
        let newest_tail = pool.by_fee.iter().next().map(|k| (k.2, k.3)).unwrap();
        pool.add(&state, with_fee(user, 0, Amount(TEST_FEE.0 + 1), to)).unwrap();
        assert_eq!(pool.len(), MAX_MEMPOOL_TXS);
        assert!(!pool.txs.contains_key(&newest_tail));
        assert_eq!(pool.candidates(&state, 1)[0].signer, user.address(), "the higher fee goes first");
        assert_eq!(pool.usage.values().map(|u| u.count).sum::<usize>(), pool.len());
        assert_eq!(pool.txs.values().map(|e| e.bytes).sum::<usize>(), pool.bytes());
    }

    /// The bookkeeping the admission rules rely on, checked from scratch.
    fn assert_consistent(pool: &Mempool, state: &State) {
        assert!(pool.len() <= MAX_MEMPOOL_TXS && pool.bytes() <= MAX_MEMPOOL_BYTES);
        assert_eq!(pool.txs.values().map(|e| e.bytes).sum::<usize>(), pool.bytes());
        assert_eq!(pool.by_fee.len(), pool.len());
        for (addr, used) in &pool.usage {
            let mine: Vec<&Entry> = pool.txs.range((*addr, 0)..=(*addr, u64::MAX)).map(|(_, e)| e).collect();
            assert_eq!(used.count, mine.len());
            assert_eq!(used.bytes, mine.iter().map(|e| e.bytes).sum::<usize>());
            assert_eq!(used.cost, mine.iter().map(|e| e.cost).sum::<u128>());
            assert!(used.bytes <= MAX_ACCOUNT_BYTES);
            let acct = state.account(addr);
            assert!(mine.iter().all(|e| e.tx.body.nonce >= acct.nonce
                && e.tx.body.nonce < acct.nonce + MAX_TXS_PER_ACCOUNT as u64));
        }
        assert_eq!(pool.usage.values().map(|u| u.count).sum::<usize>(), pool.len());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        /// Random submissions (senders with various balances, nonces with
        /// gaps, fees) interleaved with blocks: the pool's bookkeeping holds,
        /// every admitted queue is affordable, no unfunded sender gets in, and
        /// candidates come in nonce order from each account's nonce with the
        /// best-paying head first.
        #[test]
        fn admission_eviction_and_ordering_keep_their_invariants(
            ops in proptest::collection::vec((0usize..6, 0u64..8, 1u64..5, 0u8..4, proptest::bool::ANY), 1..200)
        ) {
            // Accounts 0..4 funded from rich to poor (account 0 is the validator), 5 unfunded.
            let mut chain = TestChain::new(5, 1, Amount::agr(1));
            chain.genesis.accounts[1].balance = Amount(3_500);
            chain.genesis.accounts[2].balance = Amount(20_000);
            let stranger = Keypair::from_seed_phrase("proptest-stranger");
            let mut state = chain.state();
            let mut pool = Mempool::default();
            for (who, nonce, fee_mult, amount, commit) in ops {
                let key = if who < 5 { &chain.keys[who] } else { &stranger };
                let body = Transaction {
                    nonce: state.account(&key.address()).nonce + nonce,
                    fee: Amount(TEST_FEE.0 * fee_mult),
                    kind: TxKind::Transfer { to: chain.address(0), amount: Amount(u64::from(amount) * 500) },
                };
                let tx = Signed::sign(body, key, &chain_id()).unwrap();
                let result = pool.add(&state, tx.clone());
                if who == 5 {
                    let refused = matches!(result, Err(AddError::CannotPay { .. }));
                    proptest::prop_assert!(refused, "an unfunded sender got in: {:?}", result);
                }
                if result.is_ok() {
                    let used = pool.usage[&key.address()];
                    proptest::prop_assert!(used.cost <= u128::from(state.account(&key.address()).balance.0));
                }
                assert_consistent(&pool, &state);
                if commit {
                    let candidates = pool.candidates(&state, 50);
                    let mut next: std::collections::HashMap<Address, u64> = std::collections::HashMap::new();
                    for c in &candidates {
                        let expected = next.entry(c.signer).or_insert(state.account(&c.signer).nonce);
                        proptest::prop_assert_eq!(c.body.nonce, *expected, "nonce order from the account's nonce");
                        *expected += 1;
                    }
                    let best_head = pool
                        .usage
                        .keys()
                        .filter_map(|a| pool.txs.get(&(*a, state.account(a).nonce)))
                        .map(|e| e.tx.body.fee)
                        .max();
                    proptest::prop_assert_eq!(candidates.first().map(|c| c.body.fee), best_head);
                    let block = chain.next_block(&mut state.clone(), candidates).unwrap();
                    crate::apply::apply_block(&mut state, &block, crate::apply::SigCheck::Verify).unwrap();
                    pool.prune(&mut state);
                    assert_consistent(&pool, &state);
                    for (addr, used) in &pool.usage {
                        proptest::prop_assert!(used.cost <= u128::from(state.account(addr).balance.0), "pruned to what pays");
                    }
                }
            }
        }
    }
}
