//! The daemon's lease duties: answering the lease protocol (negotiation,
//! logs, and jobs on auctioned leases) as a provider, forwarding a local
//! buyer's requests to providers, starting a job when its lease commits and
//! stopping it when the lease settles or changes hands, closing a spot lease
//! when its job ends (an auctioned lease stays open for its holder's next
//! job), and the provider's own transactions (nonces in order, re-sent if
//! they get lost).

use std::time::{Duration, Instant};

use agora_ledger::{Event, LeaseStatus, SettleReason};
use agora_protocol::job::{JobState, LeaseRefusal, LeaseRpc, LeaseRpcReply, LogChunk, RefusalCode};
use agora_protocol::{Address, LeaseAccept, LeaseId, Signed, Transaction, TxKind};
use libp2p::request_response::{self, Message, OutboundRequestId};
use tokio::sync::oneshot;

use super::{Daemon, now_ms};
use crate::error::Error;
use crate::runner::{self, Job, JobEnded};

/// A logs request signed longer ago (or further ahead) than this is refused, so
/// a captured request cannot be replayed later.
pub const LOGS_REQUEST_MAX_AGE_MS: u64 = 60_000;
/// Finished jobs whose logs stay readable, at most (oldest forgotten first; the files stay).
pub const MAX_FINISHED_JOBS: usize = 1_024;
/// Lease requests this node may have in flight to providers.
pub const MAX_PENDING_LEASE_RPCS: usize = 256;

pub type RpcReply = oneshot::Sender<Result<LeaseRpcReply, String>>;

impl Daemon {
    /// Sends `rpc` to `provider` (or answers it here if this node is the provider).
    pub(super) fn lease_rpc(&mut self, provider: Address, rpc: LeaseRpc, reply: RpcReply) {
        // This node answers for the provider whose node key is its own key.
        if self.store.state().node_key_of(&provider) == self.key.address() {
            let answer = self.answer_lease_rpc(rpc);
            let _ = reply.send(Ok(answer));
            return;
        }
        if self.lease_rpcs.pending.len() >= MAX_PENDING_LEASE_RPCS {
            let _ = reply.send(Err("this node has too many lease requests in flight; retry".into()));
            return;
        }
        let peer = match self.provider_peer(&provider) {
            Ok(p) => p,
            Err(e) => {
                let _ = reply.send(Err(e.to_string()));
                return;
            }
        };
        let id = self.net.swarm.behaviour_mut().lease.send_request(&peer, rpc);
        self.lease_rpcs.pending.insert(id, reply);
    }

    pub(super) fn on_lease_event(&mut self, event: request_response::Event<LeaseRpc, LeaseRpcReply>) {
        match event {
            request_response::Event::Message { peer, message: Message::Request { request, channel, .. }, .. } => {
                // Answered in this call, so one in flight per peer is enough;
                // a peer over its per-second quota is told to wait, at once.
                let answer = if self.lease_rpcs.quota.admit(peer, now_ms()) {
                    let answer = self.answer_lease_rpc(request);
                    self.lease_rpcs.quota.done(&peer);
                    answer
                } else {
                    self.shared.metrics.lease_rpcs_refused.inc();
                    LeaseRpcReply::Refused(LeaseRefusal::new(
                        RefusalCode::Busy,
                        "too many lease-protocol requests from your node; retry shortly",
                    ))
                };
                let _ = self.net.swarm.behaviour_mut().lease.send_response(channel, answer);
            }
            request_response::Event::Message { message: Message::Response { request_id, response }, .. } => {
                if self.liveness.pending_probes.contains_key(&request_id) {
                    if let Err(e) = self.probe_result(request_id, Some(response)) {
                        tracing::warn!(error = %e, "probe result");
                    }
                } else if let Some(reply) = self.lease_rpcs.pending.remove(&request_id) {
                    let _ = reply.send(Ok(response));
                }
            }
            request_response::Event::OutboundFailure { request_id, error, .. } => {
                if self.liveness.pending_probes.contains_key(&request_id) {
                    if let Err(e) = self.probe_result(request_id, None) {
                        tracing::warn!(error = %e, "probe result");
                    }
                } else {
                    self.fail_rpc(request_id, format!("the provider could not be reached: {error}"));
                }
            }
            _ => {}
        }
    }

    fn fail_rpc(&mut self, id: OutboundRequestId, why: String) {
        if let Some(reply) = self.lease_rpcs.pending.remove(&id) {
            let _ = reply.send(Err(why));
        }
    }

    /// This node's answer as a provider.
    fn answer_lease_rpc(&mut self, rpc: LeaseRpc) -> LeaseRpcReply {
        match rpc {
            LeaseRpc::Propose { request, spec } => {
                let me = self.acting_as();
                let Some(market) = self.provision.market.as_mut() else {
                    return LeaseRpcReply::Refused(LeaseRefusal::new(
                        RefusalCode::NotProvider,
                        "this node is not a provider",
                    ));
                };
                let now = now_ms();
                market.expire(now);
                match market.propose(&me, &self.chain, self.store.state(), &request, &spec, now) {
                    Ok((lease_id, gpu_ids)) => {
                        match Signed::sign(LeaseAccept { lease_id, gpu_ids }, &self.key, &self.chain) {
                            Ok(accept) => {
                                tracing::info!(lease = %lease_id, buyer = %request.signer, "lease request accepted");
                                self.shared.metrics.leases_accepted.inc();
                                LeaseRpcReply::Accepted(accept)
                            }
                            Err(e) => LeaseRpcReply::Refused(LeaseRefusal::new(
                                RefusalCode::Internal,
                                format!("provider cannot sign: {e}"),
                            )),
                        }
                    }
                    Err(why) => {
                        tracing::info!(buyer = %request.signer, reason = %why, "lease request refused");
                        self.shared.metrics.leases_refused.inc();
                        LeaseRpcReply::Refused(why)
                    }
                }
            }
            LeaseRpc::Run(req) => match self.run_on_lease(&req) {
                Ok(gpu_ids) => LeaseRpcReply::Started { gpu_ids },
                Err(why) => {
                    tracing::info!(lease = %req.body.lease_id, reason = %why, "run request refused");
                    LeaseRpcReply::Refused(why)
                }
            },
            LeaseRpc::Logs(req) => match self.logs(&req) {
                Ok(chunk) => LeaseRpcReply::Logs(chunk),
                Err(why) => LeaseRpcReply::Refused(why),
            },
            LeaseRpc::Probe if self.provision.provider.is_some() => match self.probe_answer() {
                Ok(hb) => LeaseRpcReply::Alive(hb),
                Err(e) => LeaseRpcReply::Refused(LeaseRefusal::new(RefusalCode::Internal, e.to_string())),
            },
            LeaseRpc::Probe => {
                LeaseRpcReply::Refused(LeaseRefusal::new(RefusalCode::NotProvider, "this node is not a provider"))
            }
        }
    }

    /// The holder of an auctioned lease starts a job on it.
    fn run_on_lease(&mut self, req: &Signed<agora_protocol::job::RunRequest>) -> Result<Vec<String>, LeaseRefusal> {
        let me = self.acting_as();
        let id = req.body.lease_id;
        let running = self.provision.jobs.by_lease.get(&id).is_some_and(|j| j.is_running());
        let Some(market) = self.provision.market.as_mut() else {
            return Err(LeaseRefusal::new(RefusalCode::NotProvider, "this node is not a provider"));
        };
        let assignment = market.run(&me, &self.chain, self.store.state(), req, running, now_ms())?;
        let gpu_ids = assignment.gpu_ids.clone();
        self.launch(assignment).map_err(|why| LeaseRefusal::new(RefusalCode::Internal, why))?;
        Ok(gpu_ids)
    }

    fn logs(&self, req: &Signed<agora_protocol::job::LogsRequest>) -> Result<LogChunk, LeaseRefusal> {
        use agora_protocol::job::RefusalCode as C;
        req.verify(&self.chain)
            .map_err(|_| LeaseRefusal::new(C::NotBuyer, "the logs request's signature is not valid"))?;
        let now = now_ms();
        if req.body.issued_at_ms.0.abs_diff(now) > LOGS_REQUEST_MAX_AGE_MS {
            return Err(LeaseRefusal::new(
                C::NotBuyer,
                "the logs request is too old (or your clock is off); sign a new one",
            ));
        }
        let id = req.body.lease_id;
        let buyer = self
            .store
            .state()
            .lease(&id)
            .filter(|l| l.provider == self.acting_as())
            .map(|l| l.buyer)
            .or_else(|| self.provision.market.as_ref().and_then(|m| m.reserved_buyer(&id)))
            .or_else(|| self.provision.jobs.by_lease.get(&id).map(|j| j.buyer))
            .ok_or_else(|| LeaseRefusal::new(C::UnknownLease, format!("this provider has no lease {id}")))?;
        if req.signer != buyer {
            return Err(LeaseRefusal::new(C::NotBuyer, "only the lease's buyer can read its logs"));
        }
        Ok(match self.provision.jobs.by_lease.get(&id) {
            Some(job) => job.chunk(req.body.offset),
            None => LogChunk {
                data: Vec::new(),
                next_offset: req.body.offset,
                first_available: 0,
                state: JobState::Waiting,
            },
        })
    }

    /// Starts and stops jobs as leases of this provider open and settle.
    pub(super) fn on_lease_events(&mut self, events: &[Event]) -> Result<(), Error> {
        let me = self.acting_as();
        for event in events {
            match event {
                Event::LeaseOpened { lease_id, provider, .. } if *provider == me => self.start_job(*lease_id)?,
                Event::LeaseExtended { lease_id, end_ms, .. } => {
                    // Paid time added: the running job may use it.
                    if let Some(job) = self.provision.jobs.by_lease.get(lease_id).filter(|j| j.is_running()) {
                        job.extend(Instant::now() + Duration::from_millis(end_ms.0.saturating_sub(now_ms())));
                    }
                }
                Event::LeaseTransferred { lease_id, .. } => {
                    // The time is the new holder's: the old holder's job ends.
                    if let Some(job) = self.provision.jobs.by_lease.get(lease_id).filter(|j| j.is_running()) {
                        job.stop("the lease changed hands");
                    }
                }
                Event::LeaseSettled { lease_id, reason, .. } => {
                    if let Some(m) = self.provision.market.as_mut() {
                        m.release(lease_id);
                    }
                    if let Some(job) = self.provision.jobs.by_lease.get(lease_id).filter(|j| j.is_running()) {
                        job.stop(match reason {
                            SettleReason::Cancelled => "the lease was cancelled",
                            SettleReason::Expired => "the lease's time ran out",
                            SettleReason::ProviderSlashed => "the provider was slashed; the lease was settled",
                            SettleReason::Closed => "the lease was closed",
                        });
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn start_job(&mut self, lease_id: LeaseId) -> Result<(), Error> {
        let Some(lease) = self.store.state().lease(&lease_id).cloned() else { return Ok(()) };
        if lease.is_reservation() {
            self.hold_reservation(&lease);
            return Ok(());
        }
        let Some(assignment) = self.provision.market.as_mut().and_then(|m| m.opened(&lease_id)) else {
            // Accepted before a restart: the job spec is gone with the reservation.
            let reason = "the provider restarted after accepting; the lease is closed for the time served";
            self.remember_job(Job::finished(
                lease_id,
                lease.buyer,
                &runner::job_dir(&self.provision.jobs.dir, &lease_id),
                JobState::Stopped { reason: reason.into() },
                self.provision.jobs.log.ring_bytes,
            ));
            return self.submit_own_tx(TxKind::CloseLease { lease_id, exit_code: None });
        };
        if let Err(why) = self.launch(assignment) {
            tracing::warn!(lease = %lease_id, error = %why, "job could not start; closing the lease");
            let dir = runner::job_dir(&self.provision.jobs.dir, &lease_id);
            let state = JobState::Stopped { reason: format!("the job could not start: {why}") };
            self.remember_job(Job::finished(lease_id, lease.buyer, &dir, state, self.provision.jobs.log.ring_bytes));
            if let Some(m) = self.provision.market.as_mut() {
                m.release(&lease_id);
            }
            return self.submit_own_tx(TxKind::CloseLease { lease_id, exit_code: None });
        }
        Ok(())
    }

    /// An auctioned lease of this provider: its devices are set aside for
    /// its holder, who runs jobs on it later (`agora lease run`).
    fn hold_reservation(&mut self, lease: &agora_ledger::Lease) {
        let Some(market) = self.provision.market.as_mut() else { return };
        let held = agora_ledger::capacity::lease_class(self.store.state(), lease)
            .and_then(|class| market.hold_class(lease.id, &class, lease.gpus));
        match held {
            Some(gpus) => {
                tracing::info!(lease = %lease.id, gpus = %gpus.join(","), holder = %lease.buyer, "GPU time sold in an auction; devices held for its holder")
            }
            None => {
                tracing::warn!(lease = %lease.id, class = %lease.gpu_model, gpus = lease.gpus, "too few free GPUs of the class to hold for an auctioned lease; its holder's run will be refused until some are free")
            }
        }
    }

    /// Starts `assignment`'s job on its GPUs until the lease's end.
    fn launch(&mut self, assignment: crate::market::Assignment) -> Result<(), String> {
        let lease_id = assignment.lease_id;
        let end_ms = self.store.state().lease(&lease_id).map_or(0, |l| l.end_ms.0);
        let remaining = Duration::from_millis(end_ms.saturating_sub(now_ms()));
        let gpus = self.provision.market.as_ref().map(|m| m.leased_gpus(&assignment.gpu_ids)).unwrap_or_default();
        let launch = runner::Launch {
            lease_id,
            buyer: assignment.buyer,
            spec: &assignment.spec,
            gpus: &gpus,
            jobs_dir: &self.provision.jobs.dir,
            deadline: Instant::now() + remaining,
            log: self.provision.jobs.log,
            resources: self.provision.jobs.resources,
        };
        let starting = Instant::now();
        let job = runner::start(launch, &self.provision.jobs.runners, self.provision.jobs.ended_tx.clone())?;
        let start_ms = starting.elapsed().as_secs_f64() * 1000.0;
        tracing::info!(lease = %lease_id, gpus = %assignment.gpu_ids.join(","), start_ms, "job started");
        self.shared.metrics.jobs_started.inc();
        self.remember_job(job);
        Ok(())
    }

    fn remember_job(&mut self, job: Job) {
        let jobs = &mut self.provision.jobs.by_lease;
        if jobs.len() >= MAX_FINISHED_JOBS {
            let oldest = jobs.iter().filter(|(_, j)| !j.is_running()).map(|(id, _)| *id).next();
            if let Some(id) = oldest {
                jobs.remove(&id);
            }
        }
        jobs.insert(job.lease_id, job);
    }

    /// A job's process ended: free its GPUs and, if its lease is still open, close it.
    pub(super) fn on_job_ended(&mut self, ended: JobEnded) -> Result<(), Error> {
        tracing::info!(lease = %ended.lease_id, state = ?ended.state, "job ended");
        let lease = self.store.state().lease(&ended.lease_id);
        let open = lease.is_some_and(|l| l.status == LeaseStatus::Open);
        if open && lease.is_some_and(|l| l.is_reservation()) {
            // The holder's time is not over: the devices stay theirs for the next job.
            return Ok(());
        }
        if let Some(m) = self.provision.market.as_mut() {
            m.release(&ended.lease_id);
        }
        if !open {
            return Ok(());
        }
        let exit_code = match ended.state {
            JobState::Exited { code } => code,
            _ => None,
        };
        self.submit_own_tx(TxKind::CloseLease { lease_id: ended.lease_id, exit_code })
    }

    /// After a restart: leases of this provider still open on the ledger had
    /// their jobs killed with the old process; kill what is left of them and
    /// close the leases for the time served (the buyer sees why in the logs).
    pub(super) async fn close_orphaned_leases(&mut self) -> Result<(), Error> {
        let me = self.acting_as();
        // Sandboxed jobs are found by their cgroups, which no job can forge or hide from.
        if let Some(runner::Isolation::Sandbox(sandbox)) = &self.provision.jobs.runners.plain {
            let killed = sandbox.reap_leftovers();
            if !killed.is_empty() {
                tracing::warn!(jobs = killed.len(), "killed jobs a previous run of this node left running");
            }
        }
        if let Some(engine) = self.provision.jobs.runners.docker.clone() {
            let removed = engine.reap_leftovers().await;
            if !removed.is_empty() {
                tracing::warn!(containers = removed.len(), "removed containers a previous run of this node left");
            }
        }
        let held: Vec<_> = self.store.state().open_leases_of(&me).filter(|l| l.is_reservation()).cloned().collect();
        for lease in held {
            // Auctioned leases stay open: their holders run the next job.
            if matches!(self.provision.jobs.runners.plain, Some(runner::Isolation::Process)) {
                runner::kill_leftover(&self.provision.jobs.dir, &lease.id);
            }
            self.hold_reservation(&lease);
        }
        let open: Vec<_> = self
            .store
            .state()
            .leases()
            .filter(|l| l.provider == me && l.status == LeaseStatus::Open && !l.is_reservation())
            .map(|l| (l.id, l.buyer, l.gpu_ids.clone()))
            .collect();
        for (lease_id, buyer, gpu_ids) in open {
            let killed = matches!(self.provision.jobs.runners.plain, Some(runner::Isolation::Process))
                && runner::kill_leftover(&self.provision.jobs.dir, &lease_id);
            tracing::warn!(lease = %lease_id, killed, "lease left open by a previous run; closing it");
            if let Some(m) = self.provision.market.as_mut() {
                m.hold(lease_id, &gpu_ids);
            }
            let reason = "the provider restarted while the job ran; the lease is closed for the time served";
            let dir = runner::job_dir(&self.provision.jobs.dir, &lease_id);
            self.remember_job(Job::finished(
                lease_id,
                buyer,
                &dir,
                JobState::Stopped { reason: reason.into() },
                self.provision.jobs.log.ring_bytes,
            ));
            self.submit_own_tx(TxKind::CloseLease { lease_id, exit_code: None })?;
        }
        Ok(())
    }

    /// Stops every running job (node shutdown).
    pub(super) fn stop_all_jobs(&mut self) {
        for job in self.provision.jobs.by_lease.values().filter(|j| j.is_running()) {
            job.stop("the provider shut down");
        }
    }

    /// Signs a transaction with the node's own key at the next free nonce
    /// (after the ones still pending) and submits it.
    pub(super) fn submit_own_tx(&mut self, kind: TxKind) -> Result<(), Error> {
        let nonce = self.relay.own_txs.next_nonce(self.store.state(), &self.key.address());
        self.send_own(nonce, kind)
    }

    fn send_own(&mut self, nonce: u64, kind: TxKind) -> Result<(), Error> {
        let state = self.store.state();
        let fee = state.params().min_tx_fee;
        if state.account(&self.key.address()).balance < fee {
            // Slashes, closes and lease openings need a fee like any
            // transaction; an operator key needs a small balance of its own.
            tracing::warn!(kind = kind.name(), %fee, "this node's key cannot pay the transaction fee; fund it");
        }
        let tx = Signed::sign(Transaction { nonce, fee, kind: kind.clone() }, &self.key, &self.chain)?;
        self.relay.own_txs.sent(nonce, kind, self.store.height());
        self.gossip_tx(fee, tx.clone());
        let actions = self.consensus.engine.handle(now_ms(), agora_ledger::consensus::Input::Tx(Box::new(tx)));
        self.act(actions)
    }

    /// Own transactions stuck for `OWN_TX_RETRY_BLOCKS` are signed again
    /// from the ledger's nonce (see `own_txs`).
    pub(super) fn resend_own_txs(&mut self) -> Result<(), Error> {
        let again = self.relay.own_txs.stuck(self.store.state(), &self.key.address());
        if !again.is_empty() {
            tracing::warn!(count = again.len(), "own transactions stuck; signing them again");
        }
        for (nonce, kind) in again {
            self.send_own(nonce, kind)?;
        }
        Ok(())
    }
}
