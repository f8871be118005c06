//! Transactions waiting to be gossiped, published highest fee first at a
//! paced rate. A node handed thousands of transactions at once (a batch on
//! its API) would otherwise push them all into gossipsub's per-peer send
//! queues at once; the queues overflow, gossipsub drops the overflow (and,
//! having recorded it as published, never sends it again), and a
//! transaction submitted during the burst — whatever its fee — reaches the
//! other validators' pools only by chance. Paced, a burst drains in a few
//! seconds and a higher fee arriving in the middle of it goes out next.
//! Due transactions go out in bundles (`bundles`): gossipsub signs and
//! checks each message, once per bundle rather than per transaction.
//! Pure: the daemon asks what is due and reports what could not go out.

use std::cmp::Reverse;
use std::collections::BTreeMap;

use agora_protocol::Amount;

/// Transactions published per second at most, on average (well above what
/// a chain commits, far below what fills a peer's send queue in a second).
pub const TX_GOSSIP_PER_SEC: u64 = 5_000;
/// Transactions published at once at most (gossipsub queues 5,000 per peer).
pub const TX_GOSSIP_BURST: u64 = 1_000;
/// After a publish found every peer's send queue full, nothing more is
/// published for this long (the peers drain slower than the rate allows).
pub const CONGESTION_PAUSE_MS: u64 = 250;
/// Transactions waiting at most: a full mempool's worth and a margin. Over
/// it, the lowest fee (the newest among equals) is dropped from the outbox:
/// it stays in this node's mempool, and in its blocks.
pub const MAX_OUTBOX: usize = 12_000;

/// Where arrival numbers start: pushes count up from it, put-backs down.
const FIRST_SEQ: u64 = 1 << 40;

/// Waiting transactions by (fee descending, arrival), with a token bucket.
#[derive(Debug)]
pub struct Outbox<T> {
    waiting: BTreeMap<(Reverse<Amount>, u64), T>,
    pushed: u64,
    put_back: u64,
    tokens: u64,
    /// When the bucket was last refilled (ms), None before the first use.
    refilled_ms: Option<u64>,
    /// Nothing is due before this time (ms): the peers' queues were full.
    paused_until_ms: u64,
    dropped: u64,
}

impl<T> Default for Outbox<T> {
    fn default() -> Self {
        Outbox {
            waiting: BTreeMap::new(),
            pushed: 0,
            put_back: 0,
            tokens: 0,
            refilled_ms: None,
            paused_until_ms: 0,
            dropped: 0,
        }
    }
}

impl<T> Outbox<T> {
    /// Queues a transaction paying `fee`.
    pub fn push(&mut self, fee: Amount, data: T) {
        if self.waiting.len() >= MAX_OUTBOX {
            self.dropped += 1;
            let cheaper_waits =
                matches!(self.waiting.last_key_value(), Some(((Reverse(lowest), _), _)) if *lowest < fee);
            if !cheaper_waits {
                return;
            }
            self.waiting.pop_last();
        }
        self.waiting.insert((Reverse(fee), FIRST_SEQ + self.pushed), data);
        self.pushed += 1;
    }

    /// The transactions to publish now (highest fee first), as many as the
    /// rate allows at `now_ms`.
    pub fn due(&mut self, now_ms: u64) -> Vec<(Amount, T)> {
        if now_ms < self.paused_until_ms {
            return Vec::new();
        }
        // A fresh outbox starts with a full burst; tokens are earned in whole
        // ones, and the time of a refill that earned none keeps counting.
        let earned = match self.refilled_ms {
            None => TX_GOSSIP_BURST,
            Some(at) => now_ms.saturating_sub(at).saturating_mul(TX_GOSSIP_PER_SEC) / 1_000,
        };
        if earned > 0 {
            self.tokens = (self.tokens + earned).min(TX_GOSSIP_BURST);
            self.refilled_ms = Some(now_ms);
        }
        let n = (self.tokens as usize).min(self.waiting.len());
        self.tokens -= n as u64;
        (0..n).filter_map(|_| self.waiting.pop_first()).map(|((Reverse(fee), _), data)| (fee, data)).collect()
    }

    /// Transactions that were due and did not go out (no subscribed peer):
    /// next time they go out in the same order, ahead of everything of
    /// their fee (their tokens are given back).
    pub fn put_back(&mut self, unsent: impl IntoIterator<Item = (Amount, T)>) {
        let unsent: Vec<_> = unsent.into_iter().collect();
        self.tokens = (self.tokens + unsent.len() as u64).min(TX_GOSSIP_BURST);
        // Later ones first, each ahead of the one put back before it.
        for (fee, data) in unsent.into_iter().rev() {
            self.put_back += 1;
            self.waiting.insert((Reverse(fee), FIRST_SEQ.saturating_sub(self.put_back)), data);
        }
    }

    /// A publish found every peer's send queue full: what was due and not
    /// yet published goes back, and publishing pauses so the queues drain.
    pub fn congested(&mut self, now_ms: u64, unsent: impl IntoIterator<Item = (Amount, T)>) {
        self.put_back(unsent);
        self.tokens = 0;
        self.paused_until_ms = now_ms.saturating_add(CONGESTION_PAUSE_MS);
    }

    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// Transactions dropped from the outbox because it was full.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

/// Splits due transactions, in order, into bundles of at most `max_items`
/// whose sizes (`size`) sum to at most `max_bytes`; one larger than
/// `max_bytes` goes alone.
pub fn bundles<T>(
    due: Vec<(Amount, T)>,
    max_items: usize,
    max_bytes: usize,
    size: impl Fn(&T) -> usize,
) -> Vec<Vec<(Amount, T)>> {
    let mut out: Vec<Vec<(Amount, T)>> = Vec::new();
    let mut bytes = 0;
    for item in due {
        let len = size(&item.1);
        match out.last_mut() {
            Some(open) if open.len() < max_items && bytes + len <= max_bytes => {
                bytes += len;
                open.push(item);
            }
            _ => {
                bytes = len;
                out.push(vec![item]);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_transactions_are_bundled_in_order_by_count_and_bytes() {
        let items = |sizes: &[usize]| sizes.iter().map(|&n| (Amount(1_000), vec![0u8; n])).collect::<Vec<_>>();
        let lens = |b: Vec<Vec<(Amount, Vec<u8>)>>| -> Vec<Vec<usize>> {
            b.into_iter().map(|v| v.into_iter().map(|(_, d)| d.len()).collect()).collect()
        };
        assert_eq!(lens(bundles(items(&[1, 2, 3, 4, 5]), 2, 100, Vec::len)), [vec![1, 2], vec![3, 4], vec![5]]);
        assert_eq!(
            lens(bundles(items(&[40, 50, 20, 200, 10]), 10, 100, Vec::len)),
            [vec![40, 50], vec![20], vec![200], vec![10]]
        );
        assert!(bundles(items(&[]), 2, 100, Vec::len).is_empty());
    }

    #[test]
    fn a_burst_is_paced_and_a_higher_fee_jumps_it() {
        let mut o = Outbox::default();
        for i in 0..10_000u32 {
            o.push(Amount(1_000), i.to_be_bytes().to_vec());
        }
        let first = o.due(0);
        assert_eq!(first.len() as u64, TX_GOSSIP_BURST, "at most a burst at once");
        assert_eq!(first[0].1, 0u32.to_be_bytes(), "equal fees in arrival order");
        assert!(o.due(0).is_empty(), "no tokens left in the same instant");
        o.push(Amount(10_000), b"urgent".to_vec());
        let next = o.due(10);
        assert_eq!(next.len() as u64, 10 * TX_GOSSIP_PER_SEC / 1_000);
        assert_eq!(next[0].1, b"urgent", "a higher fee goes out next, ahead of the burst");
        // The rest drains at the rate: a second later, another second's worth (capped by the burst).
        assert_eq!(o.due(1_010).len() as u64, TX_GOSSIP_BURST.min(TX_GOSSIP_PER_SEC));
        let mut left = o.len();
        let mut t = 1_010;
        while left > 0 {
            t += 100;
            left -= o.due(t).len();
            assert!(t < 10_000, "drained within seconds");
        }
    }

    #[test]
    fn a_full_outbox_keeps_the_highest_fees_and_put_back_goes_first() {
        let mut o = Outbox::default();
        for i in 0..MAX_OUTBOX as u64 {
            o.push(Amount(1_000 + i % 3), i.to_be_bytes().to_vec());
        }
        o.push(Amount(999), b"cheap".to_vec());
        assert_eq!((o.len(), o.dropped()), (MAX_OUTBOX, 1), "a lower fee than all waiting is dropped");
        o.push(Amount(5_000), b"rich".to_vec());
        assert_eq!((o.len(), o.dropped()), (MAX_OUTBOX, 2), "a higher fee replaces the lowest");
        let mut batch = o.due(0).into_iter();
        let (fee, data) = batch.next().unwrap();
        assert_eq!((fee, data.as_slice()), (Amount(5_000), &b"rich"[..]));
        let second = batch.next().unwrap();
        o.put_back([(fee, data), second.clone()]);
        let again = o.due(0);
        assert_eq!(again.len(), 2, "their tokens came back");
        assert_eq!(again[0].1, b"rich", "put back: first again");
        assert_eq!(again[1], second, "in the same order");
    }

    #[test]
    fn full_send_queues_pause_publishing() {
        let mut o = Outbox::default();
        for i in 0..3_000u32 {
            o.push(Amount(1_000), i.to_be_bytes().to_vec());
        }
        let mut due = o.due(0).into_iter();
        let _lost = due.next();
        o.congested(0, due);
        assert_eq!(o.len(), 2_999, "the unsent went back");
        assert!(o.due(CONGESTION_PAUSE_MS - 1).is_empty(), "paused");
        let resumed = o.due(CONGESTION_PAUSE_MS);
        assert_eq!(resumed.len() as u64, (CONGESTION_PAUSE_MS * TX_GOSSIP_PER_SEC / 1_000).min(TX_GOSSIP_BURST));
        assert_eq!(resumed[0].1, 1u32.to_be_bytes(), "in order again");
    }
}
