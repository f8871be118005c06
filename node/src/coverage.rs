//! Heartbeat coverage per window, as this node saw it: for each provider and
//! each window of `downtime_window_blocks` blocks, how many valid heartbeats
//! reached this node and the first of them, kept as proof (a heartbeat is
//! signed by the provider and names a block, so it shows the provider was up
//! after that block). The explorer shows it next to the ledger's slashes; it
//! is this node's observation, not consensus, and is bounded in memory.

use std::collections::{BTreeMap, VecDeque};

use agora_protocol::{Address, Heartbeat, Height, Signed};

/// Windows kept per provider (the newest).
pub const COVERAGE_WINDOWS: usize = 24;

/// One window of one provider.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WindowCoverage {
    /// The window's first height (a multiple of the window length).
    pub start: Height,
    /// Valid heartbeats naming a block of this window that reached this node.
    pub heartbeats: u32,
    /// The first of them.
    pub proof: Signed<Heartbeat>,
}

#[derive(Debug)]
pub struct Coverage {
    window: u64,
    /// The height this node started watching at: no record before it.
    since: Height,
    by_provider: BTreeMap<Address, VecDeque<WindowCoverage>>,
}

impl Coverage {
    pub fn new(window: u64, since: Height) -> Coverage {
        Coverage { window: window.max(1), since, by_provider: BTreeMap::new() }
    }

    pub fn window(&self) -> u64 {
        self.window
    }

    pub fn since(&self) -> Height {
        self.since
    }

    /// This node was catching up to `tip`: it saw no heartbeats before it.
    pub fn watch_from(&mut self, tip: Height) {
        self.since = tip;
    }

    /// The first height of the window `height` falls in.
    pub fn window_start(&self, height: Height) -> Height {
        Height(height.0 - height.0 % self.window)
    }

    /// A heartbeat of `provider` passed the liveness checks (signature,
    /// recent block of this chain, newer than the last).
    pub fn record(&mut self, provider: Address, hb: &Signed<Heartbeat>) {
        let start = self.window_start(hb.body.height);
        let windows = self.by_provider.entry(provider).or_default();
        match windows.binary_search_by_key(&start, |w| w.start) {
            Ok(i) => windows[i].heartbeats = windows[i].heartbeats.saturating_add(1),
            Err(i) => {
                if windows.len() >= COVERAGE_WINDOWS && i == 0 {
                    return; // older than everything kept
                }
                windows.insert(i, WindowCoverage { start, heartbeats: 1, proof: hb.clone() });
                while windows.len() > COVERAGE_WINDOWS {
                    windows.pop_front();
                }
            }
        }
    }

    /// Forgets providers whose newest window ended more than
    /// `COVERAGE_WINDOWS` windows before `tip` (gone or long silent: the
    /// ledger's slashes tell their story).
    pub fn prune(&mut self, tip: Height) {
        let horizon = tip.0.saturating_sub(self.window * COVERAGE_WINDOWS as u64);
        self.by_provider.retain(|_, w| w.back().is_some_and(|w| w.start.0 + self.window > horizon));
    }

    /// `provider`'s windows from `from` to `to` (heights), oldest first,
    /// with the windows no heartbeat of it reached this node in as `None`.
    pub fn windows(&self, provider: &Address, from: Height, to: Height) -> Vec<(Height, Option<&WindowCoverage>)> {
        let kept = self.by_provider.get(provider);
        let first = self.window_start(from).0;
        let mut out = Vec::new();
        let mut start = first;
        while start <= to.0 && out.len() < COVERAGE_WINDOWS * 2 {
            let found = kept.and_then(|w| w.iter().find(|w| w.start.0 == start));
            out.push((Height(start), found));
            start += self.window;
        }
        out
    }
}

/// One window of a provider's recent history, for the API and the explorer.
#[derive(Debug)]
pub struct WindowReport<'a> {
    pub start: Height,
    pub end: Height,
    /// Heartbeats of the window this node saw, and the first as proof.
    pub seen: Option<&'a WindowCoverage>,
    /// The ledger slashed downtime overlapping the window.
    pub slashed: bool,
}

impl Coverage {
    /// `address`'s windows, newest first, from the latest of its
    /// registration, this node's start and `COVERAGE_WINDOWS` windows ago,
    /// up to the tip.
    pub fn report(&self, ledger: &agora_ledger::State, address: &Address) -> Vec<WindowReport<'_>> {
        let tip = ledger.height();
        let registered = ledger.provider(address).map_or(Height(0), |p| p.registered_at);
        let recent = tip.0.saturating_sub(self.window * (COVERAGE_WINDOWS as u64 - 1));
        let from = Height(recent.max(registered.0).max(self.since.0));
        let slashed = ledger.slashed_windows(address);
        self.windows(address, from, tip)
            .into_iter()
            .rev()
            .map(|(start, seen)| {
                let end = Height(start.0 + self.window - 1);
                WindowReport { start, end, seen, slashed: slashed.iter().any(|(a, b)| *a <= end && *b >= start) }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use agora_protocol::{ChainId, Hash, Keypair};

    use super::*;

    fn hb(key: &Keypair, seq: u64, height: u64) -> Signed<Heartbeat> {
        let body = Heartbeat { seq, height: Height(height), block_hash: Hash([height as u8; 32]) };
        Signed::sign(body, key, &ChainId::new("test").unwrap()).unwrap()
    }

    #[test]
    fn counts_heartbeats_per_window_and_keeps_the_first_as_proof() {
        let key = Keypair::generate().unwrap();
        let mut c = Coverage::new(10, Height(0));
        for (seq, h) in [(1, 3), (2, 4), (3, 9), (4, 12), (5, 31)] {
            c.record(key.address(), &hb(&key, seq, h));
        }
        let w = c.windows(&key.address(), Height(0), Height(35));
        let counts: Vec<(u64, u32)> = w.iter().map(|(s, w)| (s.0, w.map_or(0, |w| w.heartbeats))).collect();
        assert_eq!(counts, vec![(0, 3), (10, 1), (20, 0), (30, 1)]);
        assert_eq!(w[0].1.unwrap().proof.body.seq, 1);
        assert!(c.windows(&Keypair::generate().unwrap().address(), Height(0), Height(9))[0].1.is_none());
    }

    #[test]
    fn keeps_a_bounded_number_of_windows_and_forgets_the_long_silent() {
        let (a, b) = (Keypair::generate().unwrap(), Keypair::generate().unwrap());
        let mut c = Coverage::new(5, Height(0));
        for i in 0..(COVERAGE_WINDOWS as u64 * 3) {
            c.record(a.address(), &hb(&a, i + 1, i * 5));
        }
        c.record(b.address(), &hb(&b, 1, 0));
        assert_eq!(c.by_provider[&a.address()].len(), COVERAGE_WINDOWS);
        // A heartbeat older than every window kept is not recorded.
        c.record(a.address(), &hb(&a, 1_000, 0));
        assert_eq!(c.by_provider[&a.address()].front().unwrap().start, Height(5 * 2 * COVERAGE_WINDOWS as u64));
        c.prune(Height(5 * 3 * COVERAGE_WINDOWS as u64));
        assert!(c.by_provider.contains_key(&a.address()));
        assert!(!c.by_provider.contains_key(&b.address()), "b was last heard {} windows ago", 3 * COVERAGE_WINDOWS);
    }
}
