//! The daemon's liveness duties: a provider gossips signed heartbeats; every
//! node checks the heartbeats and attestations it relays; a validator probes
//! providers silent for a window, signs and gossips a downtime attestation
//! when a probe fails, and submits the slash once validators holding more
//! than 2/3 of the power agree (or equivocation evidence when it sees it).

use std::time::{Duration, Instant};

use agora_protocol::job::{LeaseRpc, LeaseRpcReply};
use agora_protocol::{Address, DowntimeAttestation, Heartbeat, Signed, TxKind, codec};
use libp2p::gossipsub::MessageAcceptance;
use libp2p::request_response::OutboundRequestId;

use super::{Daemon, now_ms};
use crate::error::Error;
use crate::liveness::{HeartbeatVerdict, Probed};
use crate::net::gossip::{TOPIC_ATTESTATIONS, TOPIC_HEARTBEATS, topic};

/// How often a provider gossips a heartbeat.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
/// Vote equivocations remembered as already submitted.
pub const MAX_REPORTED_VOTES: usize = 1_024;
/// Probes in flight at most.
pub const MAX_PENDING_PROBES: usize = 256;
/// A committed block older than this was fetched while catching up: a node
/// that is catching up does not judge anyone's liveness.
pub const CATCHING_UP_LAG_MS: u64 = 10_000;

impl Daemon {
    /// A signed heartbeat naming this node's tip, with a sequence number that
    /// rises across restarts (the clock) so it never repeats one.
    pub(super) fn make_heartbeat(&mut self) -> Result<Signed<Heartbeat>, Error> {
        let (height, hash) = (self.store.height(), self.store.state().last_block_hash());
        self.liveness.heartbeats.sign(&self.key, &self.chain, height, hash, now_ms())
    }

    /// A probe's answer: the latest heartbeat if it is recent, else a new one
    /// (so probing makes the provider sign at most once a second).
    pub(super) fn probe_answer(&mut self) -> Result<Signed<Heartbeat>, Error> {
        match self.liveness.heartbeats.recent(now_ms()) {
            Some(hb) => Ok(hb),
            None => self.make_heartbeat(),
        }
    }

    /// Providers registered on the ledger (jailed ones too: they must show
    /// they are back before they unjail) heartbeat every second.
    pub(super) fn heartbeat_tick(&mut self) -> Result<(), Error> {
        let me = self.acting_as();
        if self.provision.provider.is_none() || self.store.state().provider(&me).is_none() {
            return Ok(());
        }
        if self.liveness.last_heartbeat_at.is_some_and(|t| t.elapsed() < HEARTBEAT_INTERVAL) {
            return Ok(());
        }
        self.liveness.last_heartbeat_at = Some(Instant::now());
        let hb = self.make_heartbeat()?;
        self.record_seen(me, &hb);
        let data = codec::encode(&hb)?;
        let _ = self.net.swarm.behaviour_mut().gossipsub.publish(topic(TOPIC_HEARTBEATS), data);
        self.shared.metrics.heartbeats_sent.inc();
        Ok(())
    }

    /// The engine caught a validator signing two different votes for one
    /// step: any node may submit the evidence; validators do, once.
    pub(super) fn on_vote_equivocation(&mut self, e: agora_ledger::consensus::VoteEquivocation) -> Result<(), Error> {
        let key = (e.first.signer, e.first.body.height.0, e.first.body.round);
        tracing::warn!(validator = %key.0, height = key.1, round = key.2, "validator signed two different votes");
        if !self.is_validator() || !self.liveness.reported_votes.insert(key) {
            return Ok(());
        }
        if self.liveness.reported_votes.len() > MAX_REPORTED_VOTES {
            self.liveness.reported_votes.pop_first();
        }
        let evidence = agora_protocol::EquivocationEvidence::Votes { first: e.first, second: e.second };
        self.shared.metrics.slashes_submitted.inc();
        self.submit_own_tx(TxKind::SlashEquivocation { evidence })
    }

    fn record_seen(&self, provider: Address, hb: &Signed<Heartbeat>) {
        let height = hb.body.height.0;
        if let Ok(mut seen) = self.shared.last_seen.write() {
            let h = seen.entry(provider).or_insert(height);
            *h = (*h).max(height);
        }
        if let Ok(mut coverage) = self.shared.coverage.write() {
            coverage.record(provider, hb);
        }
    }

    fn is_validator(&self) -> bool {
        self.store.state().is_validator(&self.key.address())
    }

    pub(super) fn on_heartbeat_gossip(&mut self, data: &[u8]) -> Result<MessageAcceptance, Error> {
        let Ok(hb) = codec::decode::<Signed<Heartbeat>>(data) else { return Ok(MessageAcceptance::Reject) };
        let verdict = self.liveness.view.heartbeat(&hb, &self.chain, self.store.state());
        Ok(match verdict {
            HeartbeatVerdict::Fresh => {
                self.shared.metrics.heartbeats_seen.inc();
                let provider = self.store.state().acting_for(&hb.signer);
                self.record_seen(provider, &hb);
                MessageAcceptance::Accept
            }
            HeartbeatVerdict::Ignore(_) => MessageAcceptance::Ignore,
            HeartbeatVerdict::Invalid(why) => {
                tracing::debug!(reason = %why, "invalid heartbeat");
                MessageAcceptance::Reject
            }
            HeartbeatVerdict::Equivocation(evidence) => {
                tracing::warn!(provider = %evidence.offender(), "provider signed two heartbeats with one sequence");
                if self.is_validator() {
                    self.submit_own_tx(TxKind::SlashEquivocation { evidence: *evidence })?;
                    self.shared.metrics.slashes_submitted.inc();
                }
                MessageAcceptance::Accept
            }
        })
    }

    pub(super) fn on_attestation_gossip(&mut self, data: &[u8]) -> Result<MessageAcceptance, Error> {
        let Ok(att) = codec::decode::<Signed<DowntimeAttestation>>(data) else { return Ok(MessageAcceptance::Reject) };
        self.take_attestation(att)
    }

    fn take_attestation(&mut self, att: Signed<DowntimeAttestation>) -> Result<MessageAcceptance, Error> {
        match self.liveness.view.attestation(att, &self.chain, self.store.state()) {
            Err(why) => {
                tracing::debug!(reason = %why, "invalid attestation");
                Ok(MessageAcceptance::Reject)
            }
            Ok(crate::liveness::Attested::Ignored) => Ok(MessageAcceptance::Ignore),
            Ok(crate::liveness::Attested::Kept(evidence)) => {
                self.shared.metrics.attestations_seen.inc();
                if let Some(evidence) = evidence.filter(|_| self.is_validator()) {
                    tracing::warn!(
                        provider = %evidence.provider,
                        start = %evidence.window_start,
                        end = %evidence.window_end,
                        attesters = evidence.attestations.len(),
                        "downtime proven by a quorum of validators; submitting the slash"
                    );
                    self.submit_own_tx(TxKind::SlashDowntime { evidence })?;
                    self.shared.metrics.slashes_submitted.inc();
                }
                Ok(MessageAcceptance::Accept)
            }
        }
    }

    /// After each commit: a validator that is caught up probes the
    /// providers that have been silent for a window.
    pub(super) fn liveness_after_commit(
        &mut self,
        height: agora_protocol::Height,
        hash: agora_protocol::Hash,
        time_ms: u64,
    ) {
        self.liveness.view.on_block(height, hash);
        let catching_up = now_ms().saturating_sub(time_ms) > CATCHING_UP_LAG_MS;
        if let Ok(mut coverage) = self.shared.coverage.write() {
            if catching_up {
                coverage.watch_from(height);
            } else if height.0 % coverage.window() == 0 {
                coverage.prune(height);
            }
        }
        if catching_up {
            self.liveness.view.watch_from(height);
            return;
        }
        if !self.is_validator() || self.sync.client.in_flight() {
            return;
        }
        for evidence in self.liveness.view.due_evidence(self.store.state()) {
            tracing::warn!(provider = %evidence.provider, "downtime evidence ready: submitting the slash");
            if let Err(e) = self.submit_own_tx(TxKind::SlashDowntime { evidence }) {
                tracing::warn!(error = %e, "cannot submit the slash");
            }
            self.shared.metrics.slashes_submitted.inc();
        }
        if self.liveness.pending_probes.len() >= MAX_PENDING_PROBES {
            return;
        }
        for provider in self.liveness.view.due_probes(self.store.state()) {
            if provider == self.acting_as() {
                continue;
            }
            let Ok(peer) = self.provider_peer(&provider) else { continue };
            tracing::info!(%provider, "provider silent for a window: probing it");
            let id = self.net.swarm.behaviour_mut().lease.send_request(&peer, LeaseRpc::Probe);
            self.liveness.pending_probes.insert(id, provider);
            self.shared.metrics.probes_sent.inc();
        }
    }

    /// A probe's outcome: an answer signed by the provider proves it up;
    /// anything else is a failed probe and, after a window, an attestation.
    pub(super) fn probe_result(&mut self, id: OutboundRequestId, reply: Option<LeaseRpcReply>) -> Result<bool, Error> {
        let Some(provider) = self.liveness.pending_probes.remove(&id) else { return Ok(false) };
        let answer = match &reply {
            Some(LeaseRpcReply::Alive(hb)) => Some(hb),
            _ => None,
        };
        match self.liveness.view.probe_answered(provider, answer, &self.chain, self.store.state()) {
            Probed::Alive => {
                if let Some(hb) = answer {
                    self.record_seen(provider, hb);
                }
            }
            Probed::Failed(attestation) => {
                self.shared.metrics.probes_failed.inc();
                if let Some(body) = attestation {
                    self.attest(provider, body)?;
                }
            }
        }
        Ok(true)
    }

    fn attest(&mut self, provider: Address, body: DowntimeAttestation) -> Result<(), Error> {
        tracing::warn!(%provider, start = %body.window_start, end = %body.window_end, "probe failed: attesting downtime");
        let att = Signed::sign(body, &self.key, &self.chain)?;
        let data = codec::encode(&att)?;
        let _ = self.net.swarm.behaviour_mut().gossipsub.publish(topic(TOPIC_ATTESTATIONS), data);
        self.shared.metrics.attestations_signed.inc();
        self.take_attestation(att).map(|_| ())
    }
}
