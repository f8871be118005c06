//! Peer-verified liveness, decided without I/O: which heartbeats count (fresh,
//! naming a recent block of this chain, from a provider, newer than the last),
//! which providers have been silent long enough to probe, the attestation a
//! failed probe turns into, and when attestations from validators holding
//! more than 2/3 of the voting power add up to downtime evidence. One
//! validator's view never slashes anyone: it can only sign its own attestation.

use std::collections::{BTreeMap, VecDeque};

use agora_ledger::{ProviderStatus, State};
use agora_protocol::{
    Address, ChainId, DowntimeAttestation, DowntimeEvidence, EquivocationEvidence, Hash, Heartbeat, Height, Signed,
};

/// A heartbeat must name one of the last this-many blocks.
pub const MAX_HEARTBEAT_AGE_BLOCKS: u64 = 10;
/// A heartbeat this far behind is refused and its sender penalised: an honest
/// node forwards only heartbeats within `MAX_HEARTBEAT_AGE_BLOCKS` of its
/// own tip, so it would have to lag this much to relay one.
pub const REPLAY_REJECT_BLOCKS: u64 = 100;
/// Recent block hashes kept to check the block a heartbeat names.
pub const RECENT_BLOCKS: usize = 64;
/// Blocks between two probes of the same silent provider.
pub const PROBE_RETRY_BLOCKS: u64 = 5;
/// Attestations older than this many windows are forgotten.
pub const ATTESTATION_KEEP_WINDOWS: u64 = 10;
/// Blocks before downtime evidence for the same provider is submitted again
/// (if the first submission did not commit: lost, or stuck behind another
/// transaction of the submitter that failed).
pub const EVIDENCE_RETRY_BLOCKS: u64 = 5;

/// What to do with a gossiped heartbeat.
#[derive(Debug, PartialEq, Eq)]
pub enum HeartbeatVerdict {
    /// New and valid: forward it.
    Fresh,
    /// Not useful now (stale, duplicate, from a block this node does not know
    /// yet, not a provider): dropped without blaming the relayer.
    Ignore(&'static str),
    /// Forged or naming a block that is not on this chain: the relayer is penalised.
    Invalid(String),
    /// Two different heartbeats with one sequence number: slashable evidence.
    Equivocation(Box<EquivocationEvidence>),
}

/// What became of a valid gossiped attestation.
#[derive(Debug, PartialEq, Eq)]
pub enum Attested {
    /// From a current validator about a watched provider: kept (and
    /// relayed), with the downtime evidence it completed, if any.
    Kept(Option<DowntimeEvidence>),
    /// From a key that is not a current validator, or about an account that
    /// is not a provider: dropped, not relayed, the relayer not blamed (its
    /// ledger may differ from ours by a block).
    Ignored,
}

/// What a probe showed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probed {
    Alive,
    /// Not proven up; the attestation to sign, if the silence is a window long.
    Failed(Option<DowntimeAttestation>),
}

#[derive(Debug, Default)]
pub struct Liveness {
    window: u64,
    /// When this node started watching: no silence before it is attested.
    watching_since: Height,
    recent: VecDeque<(Height, Hash)>,
    /// Per provider, the newest block height a valid heartbeat or probe answer proved it up at.
    last_seen: BTreeMap<Address, Height>,
    /// Per provider, its newest heartbeat (sequence, message), for replay and equivocation checks.
    last_heartbeat: BTreeMap<Address, Signed<Heartbeat>>,
    /// Providers probed, and the height the probe went out at.
    probed: BTreeMap<Address, Height>,
    /// Attestations by provider and validator (the newest per validator).
    attestations: BTreeMap<Address, BTreeMap<Address, Signed<DowntimeAttestation>>>,
    /// Providers whose evidence this node submitted, and when.
    submitted: BTreeMap<Address, Height>,
    /// Equivocations already reported (offender, sequence).
    reported: std::collections::BTreeSet<(Address, u64)>,
}

fn is_watched(state: &State, provider: &Address) -> bool {
    state.provider(provider).is_some_and(|p| p.status != ProviderStatus::Tombstoned)
}

impl Liveness {
    /// Watches from `tip` on, with the chain's `downtime_window_blocks`.
    pub fn new(window: u64, tip: Height) -> Liveness {
        Liveness { window: window.max(1), watching_since: tip, ..Liveness::default() }
    }

    /// This node was catching up: silence before `tip` is none of its business.
    pub fn watch_from(&mut self, tip: Height) {
        self.watching_since = tip;
    }

    pub fn window(&self) -> u64 {
        self.window
    }

    /// A block was committed.
    pub fn on_block(&mut self, height: Height, hash: Hash) {
        self.recent.push_back((height, hash));
        while self.recent.len() > RECENT_BLOCKS {
            self.recent.pop_front();
        }
        let horizon = height.0.saturating_sub(self.window * ATTESTATION_KEEP_WINDOWS);
        for by_validator in self.attestations.values_mut() {
            by_validator.retain(|_, a| a.body.window_end.0 >= horizon);
        }
        self.attestations.retain(|_, v| !v.is_empty());
    }

    fn tip(&self) -> Height {
        self.recent.back().map(|(h, _)| *h).unwrap_or(self.watching_since)
    }

    /// The newest height `provider` was seen up at, as far as this node knows.
    pub fn last_seen(&self, provider: &Address) -> Option<Height> {
        self.last_seen.get(provider).copied()
    }

    /// Since when `provider` has been silent, as far as this node can tell.
    fn silent_since(&self, state: &State, provider: &Address) -> Height {
        let registered = state.provider(provider).map_or(Height(0), |p| p.registered_at);
        let seen = self.last_seen.get(provider).copied().unwrap_or(Height(0));
        Height(seen.0.max(registered.0).max(self.watching_since.0))
    }

    pub fn heartbeat(&mut self, hb: &Signed<Heartbeat>, chain: &ChainId, state: &State) -> HeartbeatVerdict {
        if hb.verify(chain).is_err() {
            return HeartbeatVerdict::Invalid("bad heartbeat signature".into());
        }
        // An operator's heartbeat speaks for the account that named it.
        let provider = state.acting_for(&hb.signer);
        if !is_watched(state, &provider) {
            return HeartbeatVerdict::Ignore("not a provider");
        }
        let tip = self.tip();
        if hb.body.height > tip {
            return HeartbeatVerdict::Ignore("names a block this node has not committed yet");
        }
        if tip.0 - hb.body.height.0 > REPLAY_REJECT_BLOCKS {
            return HeartbeatVerdict::Invalid("a replayed heartbeat, long stale".into());
        }
        if tip.0 - hb.body.height.0 > MAX_HEARTBEAT_AGE_BLOCKS {
            return HeartbeatVerdict::Ignore("stale");
        }
        match self.recent.iter().find(|(h, _)| *h == hb.body.height) {
            Some((_, hash)) if *hash != hb.body.block_hash => {
                return HeartbeatVerdict::Invalid("names a block that is not on this chain".into());
            }
            None => return HeartbeatVerdict::Ignore("names a block this node does not know"),
            Some(_) => {}
        }
        if let Some(prev) = self.last_heartbeat.get(&hb.signer) {
            if prev.body.seq == hb.body.seq && prev.body != hb.body {
                if !self.reported.insert((hb.signer, hb.body.seq)) {
                    return HeartbeatVerdict::Ignore("equivocation already reported");
                }
                let evidence = EquivocationEvidence::Heartbeats { first: prev.clone(), second: hb.clone() };
                return HeartbeatVerdict::Equivocation(Box::new(evidence));
            }
            if hb.body.seq <= prev.body.seq {
                return HeartbeatVerdict::Ignore("duplicate or replayed heartbeat");
            }
        }
        self.last_heartbeat.insert(hb.signer, hb.clone());
        self.alive(provider, hb.body.height);
        HeartbeatVerdict::Fresh
    }

    /// `provider` was proven up at `height` (a heartbeat or a probe answer).
    fn alive(&mut self, provider: Address, height: Height) {
        let seen = self.last_seen.entry(provider).or_insert(height);
        *seen = (*seen).max(height);
        self.probed.remove(&provider);
    }

    /// Active providers silent for more than a window and not probed
    /// recently; they are marked probed at `tip`.
    pub fn due_probes(&mut self, state: &State) -> Vec<Address> {
        let tip = self.tip();
        let due: Vec<Address> = state
            .providers()
            .filter(|(a, _)| state.is_active_provider(a))
            .map(|(a, _)| *a)
            .filter(|a| tip.0.saturating_sub(self.silent_since(state, a).0) > self.window)
            .filter(|a| self.probed.get(a).is_none_or(|h| tip.0 >= h.0 + PROBE_RETRY_BLOCKS))
            .collect();
        for a in &due {
            self.probed.insert(*a, tip);
        }
        due
    }

    /// The probe of `provider` failed: the attestation this validator signs,
    /// covering its whole silence so far, if that is at least a window.
    fn probe_failed(&mut self, provider: Address, state: &State) -> Option<DowntimeAttestation> {
        let tip = self.tip();
        let since = self.silent_since(state, &provider);
        let (start, end) = (Height(since.0 + 1), Height(tip.0.saturating_sub(1)));
        if !state.is_active_provider(&provider) || end.0 < start.0 || end.0 - start.0 + 1 < self.window {
            return None;
        }
        Some(DowntimeAttestation { provider, window_start: start, window_end: end })
    }

    /// A probe's outcome: a heartbeat signed by the provider's node proves
    /// it up; no answer, a refusal or a heartbeat from anyone else is a
    /// failed probe, and after a window of silence an attestation to sign.
    pub fn probe_answered(
        &mut self,
        provider: Address,
        answer: Option<&Signed<Heartbeat>>,
        chain: &ChainId,
        state: &State,
    ) -> Probed {
        match answer {
            Some(hb) if state.acting_for(&hb.signer) == provider && hb.verify(chain).is_ok() => {
                self.alive(provider, state.height());
                Probed::Alive
            }
            _ => Probed::Failed(self.probe_failed(provider, state)),
        }
    }

    /// Keeps a validator's attestation; returns downtime evidence once the
    /// attestations for this provider that share a window hold more than
    /// 2/3 of the power (and this node has not just submitted it).
    /// `Err` means the attestation is invalid whatever this node's view;
    /// `Ignored`, that it is not from a current validator or not about a
    /// watched provider (not kept, not relayed).
    pub fn attestation(
        &mut self,
        att: Signed<DowntimeAttestation>,
        chain: &ChainId,
        state: &State,
    ) -> Result<Attested, String> {
        att.verify(chain).map_err(|_| "bad attestation signature".to_string())?;
        let b = &att.body;
        if b.window_end < b.window_start || b.window_end.0 - b.window_start.0 + 1 < self.window {
            return Err(format!("an attestation must cover at least {} blocks", self.window));
        }
        if !state.is_validator(&att.signer) || !is_watched(state, &b.provider) {
            return Ok(Attested::Ignored);
        }
        let provider = b.provider;
        let by_validator = self.attestations.entry(provider).or_default();
        let newer = by_validator.get(&att.signer).is_none_or(|old| old.body.window_end <= b.window_end);
        if newer {
            by_validator.insert(att.signer, att);
        }
        Ok(Attested::Kept(self.evidence(provider, state)))
    }

    /// Evidence that is ready but not (recently) submitted, for every
    /// provider with attestations: checked on every block, so a slash whose
    /// first submission was lost is sent again without waiting for new
    /// attestations.
    pub fn due_evidence(&mut self, state: &State) -> Vec<DowntimeEvidence> {
        let providers: Vec<Address> = self.attestations.keys().copied().collect();
        providers.into_iter().filter_map(|p| self.evidence(p, state)).collect()
    }

    /// The largest set of attestations for `provider` whose windows share
    /// a stretch the ledger has not slashed, if it holds > 2/3 of the power.
    fn evidence(&mut self, provider: Address, state: &State) -> Option<DowntimeEvidence> {
        let tip = self.tip();
        if !state.is_active_provider(&provider)
            || self.submitted.get(&provider).is_some_and(|h| tip.0 < h.0 + EVIDENCE_RETRY_BLOCKS)
        {
            return None;
        }
        let power = |a: &Address| state.validators().iter().find(|v| v.address == *a).map_or(0, |v| v.power);
        let total: u64 = state.validators().iter().map(|v| v.power).sum();
        let slashed = state.slashed_windows(&provider);
        let atts: Vec<&Signed<DowntimeAttestation>> =
            self.attestations.get(&provider)?.values().filter(|a| power(&a.signer) > 0).collect();
        // Try each attestation's end as the shared stretch's end: take every
        // attestation covering it, intersect, and check power.
        let mut best: Option<DowntimeEvidence> = None;
        for anchor in &atts {
            let end = anchor.body.window_end;
            let group: Vec<&Signed<DowntimeAttestation>> =
                atts.iter().filter(|a| a.body.window_start <= end && a.body.window_end >= end).copied().collect();
            let start = group.iter().map(|a| a.body.window_start).max()?;
            let end = group.iter().map(|a| a.body.window_end).min()?;
            let have: u64 = group.iter().map(|a| power(&a.signer)).sum();
            let overlaps_slashed = slashed.iter().any(|(s, e)| *s <= end && *e >= start);
            // The ledger takes only windows nearly W long: wait until the shared stretch is.
            let long_enough =
                start <= end && end.0 - start.0 + 1 >= agora_ledger::params::min_evidence_window(self.window);
            if long_enough && !overlaps_slashed && u128::from(have) * 3 > u128::from(total) * 2 {
                let ev = DowntimeEvidence {
                    provider,
                    window_start: start,
                    window_end: end,
                    attestations: group.into_iter().cloned().collect(),
                };
                if best.as_ref().is_none_or(|b| b.attestations.len() < ev.attestations.len()) {
                    best = Some(ev);
                }
            }
        }
        if best.is_some() {
            self.submitted.insert(provider, tip);
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use agora_ledger::testkit::{TestChain, chain_id, sign_tx};
    use agora_ledger::{SigCheck, apply_block};
    use agora_protocol::{Amount, GpuSpec, Keypair, TxKind};

    use super::*;

    const W: u64 = 20;

    /// Accounts 0–3 validators (equal power); 4 and 5 staked providers.
    fn setup() -> (TestChain, State) {
        let chain = TestChain::new(6, 4, Amount::agr(10_000));
        let mut state = chain.state();
        let gpus = vec![GpuSpec { model: "H100".into(), vram_mib: 81_920, count: 2, simulated: true }];
        let mut txs = Vec::new();
        for p in [4, 5] {
            txs.push(sign_tx(&chain.keys[p], 0, TxKind::Stake { amount: Amount::agr(500) }));
            txs.push(sign_tx(&chain.keys[p], 1, TxKind::RegisterProvider { region: "eu".into(), gpus: gpus.clone() }));
        }
        let block = chain.next_block(&mut state.clone(), txs).unwrap();
        apply_block(&mut state, &block, SigCheck::Verify).unwrap();
        (chain, state)
    }

    fn hash(h: u64) -> Hash {
        Hash([h as u8; 32])
    }

    fn run_to(l: &mut Liveness, from: u64, to: u64) {
        for h in from..=to {
            l.on_block(Height(h), hash(h));
        }
    }

    fn beat(key: &Keypair, seq: u64, h: u64) -> Signed<Heartbeat> {
        Signed::sign(Heartbeat { seq, height: Height(h), block_hash: hash(h) }, key, &chain_id()).unwrap()
    }

    #[test]
    fn heartbeats_must_be_fresh_on_chain_from_providers_and_newer() {
        let (chain, state) = setup();
        let mut l = Liveness::new(W, Height(1));
        run_to(&mut l, 1, 30);
        let c = chain_id();
        assert_eq!(l.heartbeat(&beat(&chain.keys[4], 1, 28), &c, &state), HeartbeatVerdict::Fresh);
        assert_eq!(l.last_seen(&chain.address(4)), Some(Height(28)));
        assert!(
            matches!(l.heartbeat(&beat(&chain.keys[4], 1, 28), &c, &state), HeartbeatVerdict::Ignore(_)),
            "duplicate"
        );
        assert!(matches!(l.heartbeat(&beat(&chain.keys[4], 2, 10), &c, &state), HeartbeatVerdict::Ignore("stale")));
        let mut far = Liveness::new(W, Height(1));
        run_to(&mut far, 1, 200);
        assert!(
            matches!(far.heartbeat(&beat(&chain.keys[4], 9, 20), &c, &state), HeartbeatVerdict::Invalid(_)),
            "a heartbeat replayed 180 blocks later costs its sender"
        );
        assert!(matches!(l.heartbeat(&beat(&chain.keys[4], 3, 31), &c, &state), HeartbeatVerdict::Ignore(_)), "future");
        assert!(
            matches!(l.heartbeat(&beat(&chain.keys[0], 1, 29), &c, &state), HeartbeatVerdict::Ignore(_)),
            "not a provider"
        );
        let wrong =
            Signed::sign(Heartbeat { seq: 4, height: Height(29), block_hash: hash(7) }, &chain.keys[4], &c).unwrap();
        assert!(matches!(l.heartbeat(&wrong, &c, &state), HeartbeatVerdict::Invalid(_)), "a block not on this chain");
        let mut forged = beat(&chain.keys[4], 5, 29);
        forged.body.seq = 6;
        assert!(matches!(l.heartbeat(&forged, &c, &state), HeartbeatVerdict::Invalid(_)));
        let conflicting = beat(&chain.keys[4], 1, 29);
        let HeartbeatVerdict::Equivocation(ev) = l.heartbeat(&conflicting, &c, &state) else {
            panic!("two heartbeats with sequence 1 are equivocation")
        };
        assert_eq!(ev.offender(), chain.address(4));
    }

    #[test]
    fn a_silent_provider_is_probed_then_attested_and_a_quorum_is_evidence() {
        let (chain, state) = setup();
        let c = chain_id();
        let mut l = Liveness::new(W, Height(1));
        run_to(&mut l, 1, 10);
        l.heartbeat(&beat(&chain.keys[4], 1, 10), &c, &state);
        l.heartbeat(&beat(&chain.keys[5], 1, 10), &c, &state);
        run_to(&mut l, 11, 30);
        assert!(l.due_probes(&state).is_empty(), "20 blocks of silence is not more than the window");
        run_to(&mut l, 31, 31);
        let mut due = l.due_probes(&state);
        due.sort();
        let mut want = vec![chain.address(4), chain.address(5)];
        want.sort();
        assert_eq!(due, want, "both silent for more than a window");
        assert!(l.due_probes(&state).is_empty(), "not probed again at once");
        // Provider 5 answers its probe; provider 4 does not.
        l.alive(chain.address(5), Height(31));
        let att = l.probe_failed(chain.address(4), &state).expect("a failed probe after a window of silence");
        assert_eq!((att.window_start, att.window_end), (Height(11), Height(30)));
        // One validator's attestation is not evidence; nor two of four.
        let sign = |v: usize, s: u64, e: u64| {
            let body =
                DowntimeAttestation { provider: chain.address(4), window_start: Height(s), window_end: Height(e) };
            Signed::sign(body, &chain.keys[v], &c).unwrap()
        };
        assert_eq!(l.attestation(sign(0, 11, 30), &c, &state), Ok(Attested::Kept(None)));
        assert_eq!(l.attestation(sign(1, 12, 31), &c, &state), Ok(Attested::Kept(None)));
        assert!(l.attestation(sign(2, 20, 30), &c, &state).is_err(), "shorter than a window");
        assert_eq!(
            l.attestation(sign(4, 11, 30), &c, &state),
            Ok(Attested::Ignored),
            "a non-validator's attestation counts for nothing and is not relayed"
        );
        let Ok(Attested::Kept(Some(ev))) = l.attestation(sign(2, 11, 32), &c, &state) else {
            panic!("3 of 4 validators share 12..=30")
        };
        assert_eq!((ev.window_start, ev.window_end), (Height(12), Height(30)));
        assert_eq!(ev.attestations.len(), 3);
        assert_eq!(
            l.attestation(sign(3, 11, 30), &c, &state),
            Ok(Attested::Kept(None)),
            "not submitted twice in a row"
        );
        // The ledger accepts exactly this evidence.
        let mut s2 = state.clone();
        run_ledger_to(&chain, &mut s2, 35);
        let tx = sign_tx(&chain.keys[0], 0, TxKind::SlashDowntime { evidence: ev });
        let block = chain.next_block(&mut s2.clone(), vec![tx]).unwrap();
        assert_eq!(block.txs.len(), 1, "the ledger took the evidence");
    }

    fn run_ledger_to(chain: &TestChain, state: &mut State, height: u64) {
        while state.height().0 < height {
            let block = chain.next_block(&mut state.clone(), vec![]).unwrap();
            apply_block(state, &block, SigCheck::Verify).unwrap();
        }
    }

    #[test]
    fn no_probe_for_silence_before_this_node_was_watching() {
        let (chain, state) = setup();
        let mut l = Liveness::new(W, Height(100));
        run_to(&mut l, 100, 110);
        assert!(l.due_probes(&state).is_empty(), "a node that just started has seen 10 blocks, not a window");
        assert_eq!(l.probe_failed(chain.address(4), &state), None);
    }
}
