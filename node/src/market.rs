//! The provider's side of lease negotiation, decided without I/O: whether a
//! buyer's signed request is acceptable (with a plain-language refusal when
//! not), which GPUs are free, reservations held from acceptance until the
//! lease commits or its request expires, and the GPUs a committed lease runs
//! on; for an auctioned lease, the devices it holds and whether its holder's
//! run request may start a job.

use std::collections::BTreeMap;

use agora_ledger::State;
use agora_protocol::job::{JobSpec, LeaseRefusal, RefusalCode, RunRequest};
use agora_protocol::{Address, Amount, ChainId, GpuClass, GpuSpec, LeaseId, LeaseRequest, Signed};

use crate::gpu::Gpu;

/// Accepted requests waiting for their lease to commit, at most.
pub const MAX_RESERVATIONS: usize = 1_024;
/// A request may expire at most this far ahead: its reservation holds GPUs
/// that nobody pays for until the lease commits.
pub const MAX_REQUEST_TTL_MS: u64 = 5 * 60 * 1000;
/// Uncommitted reservations one buyer may hold at once.
pub const MAX_RESERVATIONS_PER_BUYER: usize = 8;
/// A reservation outlives its request's expiry by this much, so a lease
/// committed at the last moment (block time vs. this node's clock) still
/// finds its GPUs reserved.
pub const RESERVATION_GRACE_MS: u64 = 30_000;
/// A run request signed longer ago (or further ahead) than this is refused.
pub const RUN_REQUEST_MAX_AGE_MS: u64 = 60_000;

/// An accepted request: GPUs held for it until it commits or expires.
#[derive(Clone, Debug)]
pub struct Reservation {
    pub request: Signed<LeaseRequest>,
    pub spec: JobSpec,
    /// Indices into the provider's GPU list.
    pub gpus: Vec<usize>,
    pub until_ms: u64,
}

/// A lease this provider runs (or is about to): its job and GPUs.
#[derive(Clone, Debug)]
pub struct Assignment {
    pub lease_id: LeaseId,
    pub buyer: Address,
    pub spec: JobSpec,
    pub gpu_ids: Vec<String>,
}

/// Which jobs this provider runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JobKinds {
    /// Plain commands (in the sandbox, or as processes on a testnet).
    pub plain: bool,
    /// Commands in a container image.
    pub images: bool,
    /// Outbound network for container jobs that ask for it.
    pub egress: bool,
}

#[derive(Clone, Debug)]
pub struct Market {
    gpus: Vec<Gpu>,
    pub price: Amount,
    pub max_lease_secs: u64,
    pub kinds: JobKinds,
    /// Which images this provider accepts.
    pub images: crate::config::ImagePolicy,
    reserved: BTreeMap<LeaseId, Reservation>,
    /// Committed leases and the GPU indices they hold.
    active: BTreeMap<LeaseId, Vec<usize>>,
    /// The newest run request started per auctioned lease (its signing
    /// time): an older or equal one is a replay.
    last_run: BTreeMap<LeaseId, u64>,
}

/// The exchange class of one GPU.
fn class_of(g: &Gpu) -> Option<GpuClass> {
    GpuClass::of(&GpuSpec { model: g.model.clone(), vram_mib: g.vram_mib, count: 1, simulated: g.simulated })
}

fn agr(a: Amount) -> String {
    a.to_string()
}

impl Market {
    pub fn new(gpus: Vec<Gpu>, price: Amount, max_lease_secs: u64, kinds: JobKinds) -> Market {
        Market {
            gpus,
            price,
            max_lease_secs,
            kinds,
            images: crate::config::ImagePolicy::default(),
            reserved: BTreeMap::new(),
            active: BTreeMap::new(),
            last_run: BTreeMap::new(),
        }
    }

    fn busy(&self) -> Vec<usize> {
        self.reserved
            .values()
            .flat_map(|r| r.gpus.iter().copied())
            .chain(self.active.values().flatten().copied())
            .collect()
    }

    /// Free GPUs of `model`, by index.
    pub fn free(&self, model: &str) -> Vec<usize> {
        let busy = self.busy();
        self.gpus.iter().enumerate().filter(|(i, g)| g.model == model && !busy.contains(i)).map(|(i, _)| i).collect()
    }

    /// Whether this provider runs jobs like `spec` at all (plain or image,
    /// which images, network access).
    fn check_spec(&self, spec: &JobSpec) -> Result<(), LeaseRefusal> {
        use RefusalCode as C;
        let refuse = |code: RefusalCode, detail: String| Err(LeaseRefusal::new(code, detail));
        if spec.image.is_some() && !self.kinds.images {
            return refuse(
                C::RunnerUnsupported,
                "this provider does not run container images (--image); submit without it".into(),
            );
        }
        if spec.image.is_none() && !self.kinds.plain {
            return refuse(
                C::RunnerUnsupported,
                "this provider runs jobs only in container images; submit with --image".into(),
            );
        }
        if let Some(why) = spec.image.as_deref().and_then(|i| self.images.refusal(i)) {
            return refuse(C::RunnerUnsupported, why);
        }
        if spec.egress && !self.kinds.egress {
            return refuse(
                C::EgressRefused,
                "this provider gives jobs no network access; submit without --egress".into(),
            );
        }
        if spec.egress && spec.image.is_none() {
            return refuse(
                C::EgressRefused,
                "network access is given only to container jobs; submit with --image to use --egress".into(),
            );
        }
        Ok(())
    }

    /// Checks a buyer's request against this provider's terms, capacity and
    /// the ledger; on success reserves the GPUs and returns the lease id and
    /// the GPU ids to countersign. `now_ms` is this node's clock.
    #[allow(clippy::too_many_arguments)]
    pub fn propose(
        &mut self,
        me: &Address,
        chain: &ChainId,
        state: &State,
        request: &Signed<LeaseRequest>,
        spec: &JobSpec,
        now_ms: u64,
    ) -> Result<(LeaseId, Vec<String>), LeaseRefusal> {
        use RefusalCode as C;
        let no = |code: RefusalCode, detail: String| Err(LeaseRefusal::new(code, detail));
        if request.verify(chain).is_err() {
            return no(C::SpecMismatch, "the request's signature is not valid for this chain".into());
        }
        let terms = &request.body;
        terms.validate().map_err(|e| LeaseRefusal::new(C::SpecMismatch, e.to_string()))?;
        if terms.provider != *me {
            return no(C::WrongProvider, format!("the request is for provider {}, not {me}", terms.provider));
        }
        let id = request.lease_id().map_err(|e| LeaseRefusal::new(C::SpecMismatch, e.to_string()))?;
        if self.reserved.contains_key(&id) || self.active.contains_key(&id) || state.lease(&id).is_some() {
            return no(
                C::AlreadyAccepted,
                format!("lease {id} was already accepted: a request opens at most one lease"),
            );
        }
        if terms.expires_at_ms.0 <= now_ms {
            return no(C::RequestExpired, "the request has expired; submit a new one".into());
        }
        if terms.expires_at_ms.0 > now_ms.saturating_add(MAX_REQUEST_TTL_MS) {
            return no(
                C::RequestExpired,
                format!("the request expires too far ahead (at most {} s)", MAX_REQUEST_TTL_MS / 1000),
            );
        }
        if !state.is_active_provider(me) {
            return no(
                C::ProviderInactive,
                "this provider is not taking leases (not registered, jailed or under-staked)".into(),
            );
        }
        spec.validate().map_err(|e| LeaseRefusal::new(C::SpecMismatch, e.to_string()))?;
        if spec.hash().map_err(|e| LeaseRefusal::new(C::SpecMismatch, e.to_string()))? != terms.job_spec_hash {
            return no(C::SpecMismatch, "the job spec does not match the hash in the signed request".into());
        }
        self.check_spec(spec)?;
        if terms.duration_secs > self.max_lease_secs {
            return no(
                C::DurationTooLong,
                format!(
                    "duration {} s exceeds this provider's maximum of {} s",
                    terms.duration_secs, self.max_lease_secs
                ),
            );
        }
        if terms.price_per_gpu_hour < self.price {
            return no(
                C::PriceBelowAsk,
                format!(
                    "price {}/GPU-hour is below this provider's ask of {}",
                    agr(terms.price_per_gpu_hour),
                    agr(self.price)
                ),
            );
        }
        if !self.gpus.iter().any(|g| g.model == terms.gpu_model) {
            return no(C::NoSuchGpu, format!("provider has no {} GPUs", terms.gpu_model));
        }
        let free = self.free(&terms.gpu_model);
        if free.len() < terms.gpus as usize {
            return no(
                C::NoFreeGpus,
                format!("provider has {} free {} (asked for {})", free.len(), terms.gpu_model, terms.gpus),
            );
        }
        // GPUs in this provider's open asks are promised to the next auction,
        // and the ledger would refuse the lease: count them as taken.
        if let Some(class) = agora_ledger::capacity::class_of_model(state, me, &terms.gpu_model) {
            let on_ledger = agora_ledger::capacity::capacity(state, me, &class);
            let spot = on_ledger.free().saturating_sub(self.pending_gpus(&class));
            if spot < u64::from(terms.gpus) {
                return no(
                    C::NoFreeGpus,
                    format!(
                        "provider has {spot} {} free for spot leases ({} in its open auction asks; asked for {})",
                        terms.gpu_model, on_ledger.asked, terms.gpus
                    ),
                );
            }
        }
        let overflow = || LeaseRefusal::new(C::InsufficientBalance, "escrow overflows");
        let escrow = terms.escrow().ok_or_else(overflow)?;
        let balance = state.account(&request.signer).balance;
        if balance < escrow {
            return no(C::InsufficientBalance, format!("balance {} < escrow {}", agr(balance), agr(escrow)));
        }
        // What this buyer's accepted-but-unopened requests will lock counts too: one
        // funded key must not reserve GPUs for more than it can pay.
        let pending = self
            .reserved
            .values()
            .filter(|r| r.request.signer == request.signer)
            .try_fold(Amount::ZERO, |sum, r| r.request.body.escrow().and_then(|e| sum.checked_add(e)))
            .ok_or_else(overflow)?;
        let needed = pending.checked_add(escrow).ok_or_else(overflow)?;
        if balance < needed {
            return no(
                C::InsufficientBalance,
                format!(
                    "balance {} < escrow {} plus {} for your requests not yet opened",
                    agr(balance),
                    agr(escrow),
                    agr(pending)
                ),
            );
        }
        let pending = self.reserved.values().filter(|r| r.request.signer == request.signer).count();
        if pending >= MAX_RESERVATIONS_PER_BUYER {
            return no(
                C::TooManyPending,
                format!("you already hold {pending} accepted requests not yet opened; open or let them expire first"),
            );
        }
        if self.reserved.len() >= MAX_RESERVATIONS {
            return no(C::Busy, "provider is busy negotiating; retry shortly".into());
        }
        let gpus: Vec<usize> = free.into_iter().take(terms.gpus as usize).collect();
        let gpu_ids = gpus.iter().map(|&i| self.gpus[i].id.clone()).collect();
        let until_ms = terms.expires_at_ms.0.saturating_add(RESERVATION_GRACE_MS);
        self.reserved.insert(id, Reservation { request: request.clone(), spec: spec.clone(), gpus, until_ms });
        Ok((id, gpu_ids))
    }

    /// The lease committed: its reserved GPUs become its own. `None` when
    /// this node holds no reservation (it restarted since accepting).
    pub fn opened(&mut self, id: &LeaseId) -> Option<Assignment> {
        let r = self.reserved.remove(id)?;
        let gpu_ids = r.gpus.iter().map(|&i| self.gpus[i].id.clone()).collect();
        self.active.insert(*id, r.gpus);
        Some(Assignment { lease_id: *id, buyer: r.request.signer, spec: r.spec, gpu_ids })
    }

    /// Marks the GPUs named by a committed lease as held (after a restart).
    pub fn hold(&mut self, id: LeaseId, gpu_ids: &[String]) {
        let idx = self.gpus.iter().enumerate().filter(|(_, g)| gpu_ids.contains(&g.id)).map(|(i, _)| i).collect();
        self.active.insert(id, idx);
    }

    /// GPUs of `class` promised to spot requests whose leases have not committed yet.
    pub fn pending_gpus(&self, class: &GpuClass) -> u64 {
        let n =
            self.reserved.values().flat_map(|r| &r.gpus).filter(|&&i| class_of(&self.gpus[i]).as_ref() == Some(class));
        n.count() as u64
    }

    /// Gives an auctioned lease `gpus` free devices of `class` (its GPU time
    /// is sold ahead; no spot lease may take them); the ones it holds
    /// already if it has them. `None` when too few are free.
    pub fn hold_class(&mut self, id: LeaseId, class: &GpuClass, gpus: u32) -> Option<Vec<String>> {
        if !self.active.contains_key(&id) {
            let busy = self.busy();
            let free: Vec<usize> = (0..self.gpus.len())
                .filter(|i| !busy.contains(i) && class_of(&self.gpus[*i]).as_ref() == Some(class))
                .take(gpus as usize)
                .collect();
            if free.len() < gpus as usize {
                return None;
            }
            self.active.insert(id, free);
        }
        Some(self.active[&id].iter().map(|&i| self.gpus[i].id.clone()).collect())
    }

    /// Checks the holder's request to run a job on an auctioned lease;
    /// `running` says whether a job runs on it now. On success the job may
    /// start, on the lease's devices (held now if they were not yet).
    pub fn run(
        &mut self,
        me: &Address,
        chain: &ChainId,
        state: &State,
        request: &Signed<RunRequest>,
        running: bool,
        now_ms: u64,
    ) -> Result<Assignment, LeaseRefusal> {
        use RefusalCode as C;
        let no = |code: RefusalCode, detail: String| Err(LeaseRefusal::new(code, detail));
        if request.verify(chain).is_err() {
            return no(C::NotBuyer, "the run request's signature is not valid for this chain".into());
        }
        let (id, issued) = (request.body.lease_id, request.body.issued_at_ms.0);
        if issued.abs_diff(now_ms) > RUN_REQUEST_MAX_AGE_MS {
            return no(C::RequestExpired, "the run request is too old (or your clock is off); sign a new one".into());
        }
        let Some(lease) = state.lease(&id).filter(|l| l.provider == *me) else {
            return no(C::UnknownLease, format!("this provider has no lease {id}"));
        };
        if lease.status != agora_ledger::LeaseStatus::Open {
            return no(C::UnknownLease, format!("lease {id} has ended"));
        }
        if !lease.is_reservation() {
            return no(
                C::NotReservation,
                format!("lease {id} was opened for one job and runs no other; run jobs on auctioned leases"),
            );
        }
        if request.signer != lease.buyer {
            return no(C::NotBuyer, format!("only the lease's holder ({}) can run jobs on it", lease.buyer));
        }
        if lease.start_ms.0 > now_ms {
            let secs = (lease.start_ms.0 - now_ms).div_ceil(1000);
            return no(C::NotStarted, format!("lease {id} starts in {secs} s; run the job then"));
        }
        if self.last_run.get(&id).is_some_and(|&last| issued <= last) {
            return no(C::AlreadyAccepted, "this run request was already used; sign a new one".into());
        }
        if running {
            return no(C::JobRunning, format!("a job is running on lease {id}; wait for it to end"));
        }
        let spec = &request.body.spec;
        spec.validate().map_err(|e| LeaseRefusal::new(C::SpecMismatch, e.to_string()))?;
        self.check_spec(spec)?;
        let Some(class) = agora_ledger::capacity::lease_class(state, lease) else {
            return no(C::Internal, format!("lease {id} names no GPU class"));
        };
        let Some(gpu_ids) = self.hold_class(id, &class, lease.gpus) else {
            return no(C::NoFreeGpus, format!("this provider has fewer than {} free {class} GPUs", lease.gpus));
        };
        self.last_run.insert(id, issued);
        Ok(Assignment { lease_id: id, buyer: lease.buyer, spec: spec.clone(), gpu_ids })
    }

    /// The leased GPUs named by `gpu_ids`, as the job runner needs them.
    pub fn leased_gpus(&self, gpu_ids: &[String]) -> Vec<crate::runner::LeasedGpu> {
        self.gpus
            .iter()
            .filter(|g| gpu_ids.contains(&g.id))
            .map(|g| crate::runner::LeasedGpu { id: g.id.clone(), index: g.index, simulated: g.simulated })
            .collect()
    }

    /// The lease ended (settled, or its job stopped): its GPUs are free again.
    pub fn release(&mut self, id: &LeaseId) {
        self.reserved.remove(id);
        self.active.remove(id);
        self.last_run.remove(id);
    }

    /// Drops reservations whose requests can no longer commit.
    pub fn expire(&mut self, now_ms: u64) -> usize {
        let before = self.reserved.len();
        self.reserved.retain(|_, r| r.until_ms > now_ms);
        before - self.reserved.len()
    }

    /// The buyer of a lease this provider has accepted (reserved or running).
    pub fn reserved_buyer(&self, id: &LeaseId) -> Option<Address> {
        self.reserved.get(id).map(|r| r.request.signer)
    }
}

#[cfg(test)]
mod tests {
    use agora_ledger::testkit::{TestChain, chain_id, sign_tx};
    use agora_ledger::{SigCheck, apply_block};
    use agora_protocol::{Keypair, TimestampMs, TxKind};

    use super::*;
    use crate::gpu::{GpuSource, detect};

    const NOW: u64 = 2_000_000_000_000;

    fn spec() -> JobSpec {
        JobSpec { command: vec!["sh".into(), "-c".into(), "echo hi".into()], env: vec![], image: None, egress: false }
    }

    fn request(buyer: &Keypair, provider: Address, gpus: u32, price: u64, nonce: u64) -> Signed<LeaseRequest> {
        let body = LeaseRequest {
            provider,
            offer_seq: 1,
            gpu_model: "H100".into(),
            gpus,
            price_per_gpu_hour: Amount::agr(price),
            duration_secs: 600,
            job_spec_hash: spec().hash().unwrap(),
            nonce,
            expires_at_ms: TimestampMs(NOW + 60_000),
        };
        Signed::sign(body, buyer, &chain_id()).unwrap()
    }

    /// Account 0: staked provider with 2 simulated H100s; 1: funded buyer; 2: buyer with no money.
    fn setup() -> (TestChain, State, Market) {
        setup_with(2)
    }

    /// The same with `n` GPUs registered and detected.
    fn setup_with(n: u32) -> (TestChain, State, Market) {
        let chain = TestChain::new(3, 1, Amount::agr(10_000));
        let mut state = chain.state();
        let gpus = detect(&format!("simulated:{n}xH100-80GB").parse::<GpuSource>().unwrap()).gpus;
        let kind = TxKind::RegisterProvider { region: "eu".into(), gpus: crate::gpu::specs(&gpus) };
        let spend =
            sign_tx(&chain.keys[2], 0, TxKind::Transfer { to: chain.address(1), amount: Amount(9_999_899_000) });
        let block = chain.next_block(&mut state.clone(), vec![sign_tx(&chain.keys[0], 0, kind), spend]).unwrap();
        apply_block(&mut state, &block, SigCheck::Verify).unwrap();
        let kinds = JobKinds { plain: true, images: false, egress: false };
        (chain, state, Market::new(gpus, Amount::agr(2), 3600, kinds))
    }

    #[test]
    fn accepts_then_refuses_when_full_and_frees_on_release() {
        let (chain, state, mut m) = setup();
        let me = chain.address(0);
        let (id, ids) =
            m.propose(&me, &chain_id(), &state, &request(&chain.keys[1], me, 1, 2, 1), &spec(), NOW).unwrap();
        assert_eq!(ids, vec!["SIM-H100-0".to_string()]);
        let (_, ids2) =
            m.propose(&me, &chain_id(), &state, &request(&chain.keys[1], me, 1, 3, 2), &spec(), NOW).unwrap();
        assert_eq!(ids2, vec!["SIM-H100-1".to_string()], "a different GPU");
        let err = m.propose(&me, &chain_id(), &state, &request(&chain.keys[1], me, 1, 2, 3), &spec(), NOW).unwrap_err();
        assert_eq!(
            (err.code, err.detail.as_str()),
            (RefusalCode::NoFreeGpus, "provider has 0 free H100 (asked for 1)")
        );
        assert!(m.opened(&id).is_some());
        m.release(&id);
        assert_eq!(m.free("H100").len(), 1);
        assert_eq!(m.expire(NOW + 60_000 + RESERVATION_GRACE_MS), 1, "the unopened reservation expires");
        assert_eq!(m.free("H100").len(), 2);
    }

    #[test]
    fn one_buyer_cannot_hold_every_gpu_with_unopened_requests() {
        let (chain, state, mut m) = setup_with(16);
        let me = chain.address(0);
        for n in 0..MAX_RESERVATIONS_PER_BUYER as u64 {
            m.propose(&me, &chain_id(), &state, &request(&chain.keys[1], me, 1, 2, n), &spec(), NOW).unwrap();
        }
        let n = MAX_RESERVATIONS_PER_BUYER as u64;
        let err = m.propose(&me, &chain_id(), &state, &request(&chain.keys[1], me, 1, 2, n), &spec(), NOW).unwrap_err();
        assert!(err.detail.contains("accepted requests not yet opened"), "{err}");
        assert_eq!(m.free("H100").len(), 16 - MAX_RESERVATIONS_PER_BUYER);
    }

    #[test]
    fn unopened_requests_count_against_the_buyers_balance() {
        let (chain, state, mut m) = setup_with(16);
        let me = chain.address(0);
        // Buyer 2 holds 0.1 AGR; each request (1 GPU, 10 min at 0.5 AGR/h) escrows 0.083334 AGR.
        let cheap = |n: u64| {
            let mut body = request(&chain.keys[2], me, 1, 2, n).body;
            body.price_per_gpu_hour = Amount(500_000);
            Signed::sign(body, &chain.keys[2], &chain_id()).unwrap()
        };
        m.price = Amount(500_000);
        m.propose(&me, &chain_id(), &state, &cheap(1), &spec(), NOW).expect("the first fits the balance");
        let err = m.propose(&me, &chain_id(), &state, &cheap(2), &spec(), NOW).unwrap_err();
        assert!(err.detail.contains("for your requests not yet opened"), "{err}");
        assert_eq!(m.free("H100").len(), 15, "the refused request reserved nothing");
    }

    #[test]
    fn refusals_say_why() {
        let (chain, state, mut m) = setup();
        let me = chain.address(0);
        let c = chain_id();
        let mut refuse = |req: Signed<LeaseRequest>, spec: JobSpec, now: u64| {
            m.propose(&me, &c, &state, &req, &spec, now).unwrap_err()
        };
        assert!(refuse(request(&chain.keys[1], me, 1, 1, 1), spec(), NOW).detail.contains("below this provider's ask"));
        assert!(refuse(request(&chain.keys[1], me, 3, 2, 1), spec(), NOW).detail.contains("provider has 2 free H100"));
        assert!(
            refuse(request(&chain.keys[2], me, 1, 2, 1), spec(), NOW)
                .detail
                .starts_with("balance 0.1 AGR < escrow 0.333334 AGR")
        );
        assert!(refuse(request(&chain.keys[1], me, 1, 2, 1), spec(), NOW + 60_000).detail.contains("expired"));
        let mut far = request(&chain.keys[1], me, 1, 2, 1).body;
        far.expires_at_ms = TimestampMs(NOW + MAX_REQUEST_TTL_MS + 1);
        assert!(refuse(Signed::sign(far, &chain.keys[1], &c).unwrap(), spec(), NOW).detail.contains("too far ahead"));
        assert!(
            refuse(request(&chain.keys[1], chain.address(2), 1, 2, 1), spec(), NOW).detail.contains("is for provider")
        );
        let other = JobSpec { command: vec!["true".into()], ..spec() };
        assert!(refuse(request(&chain.keys[1], me, 1, 2, 1), other, NOW).detail.contains("does not match"));
        let image = JobSpec { image: Some("ubuntu".into()), ..spec() };
        let mut r = request(&chain.keys[1], me, 1, 2, 1).body;
        r.job_spec_hash = image.hash().unwrap();
        assert!(refuse(Signed::sign(r, &chain.keys[1], &c).unwrap(), image, NOW).detail.contains("container images"));
        let mut forged = request(&chain.keys[1], me, 1, 2, 1);
        forged.body.gpus = 2;
        assert!(refuse(forged, spec(), NOW).detail.contains("signature"));
        let mut long = request(&chain.keys[1], me, 1, 2, 1).body;
        long.duration_secs = 7200;
        assert!(
            refuse(Signed::sign(long, &chain.keys[1], &c).unwrap(), spec(), NOW).detail.contains("maximum of 3600 s")
        );
        let mut a100 = request(&chain.keys[1], me, 1, 2, 1).body;
        a100.gpu_model = "A100".into();
        assert!(refuse(Signed::sign(a100, &chain.keys[1], &c).unwrap(), spec(), NOW).detail.contains("no A100"));
        let ok = request(&chain.keys[1], me, 1, 2, 9);
        m.propose(&me, &c, &state, &ok, &spec(), NOW).unwrap();
        let replay = m.propose(&me, &c, &state, &ok, &spec(), NOW).unwrap_err();
        assert!(replay.detail.contains("already accepted"), "{replay}");
        assert_eq!(m.free("H100").len(), 1, "refusals reserve nothing");
        m.kinds.plain = false;
        let plain = m.propose(&me, &c, &state, &request(&chain.keys[1], me, 1, 2, 10), &spec(), NOW).unwrap_err();
        assert!(plain.detail.contains("only in container images"), "{plain}");
        let signed_for = |spec: &JobSpec, nonce: u64| {
            let mut r = request(&chain.keys[1], me, 1, 2, nonce).body;
            r.job_spec_hash = spec.hash().unwrap();
            Signed::sign(r, &chain.keys[1], &c).unwrap()
        };
        m.kinds = JobKinds { plain: true, images: true, egress: false };
        let net = JobSpec { image: Some("busybox".into()), egress: true, ..spec() };
        let refused = m.propose(&me, &c, &state, &signed_for(&net, 11), &net, NOW).unwrap_err();
        assert_eq!(refused.code, RefusalCode::EgressRefused);
        assert_eq!(refused.detail, "this provider gives jobs no network access; submit without --egress");
        m.kinds.egress = true;
        let plain_net = JobSpec { egress: true, ..spec() };
        let refused = m.propose(&me, &c, &state, &signed_for(&plain_net, 12), &plain_net, NOW).unwrap_err();
        assert!(refused.detail.contains("only to container jobs"), "{refused}");
        let injected = JobSpec { image: Some("--privileged".into()), ..spec() };
        let refused = m.propose(&me, &c, &state, &signed_for(&injected, 13), &injected, NOW).unwrap_err();
        assert!(refused.detail.contains("--privileged"), "{refused}");
        m.propose(&me, &c, &state, &signed_for(&net, 14), &net, NOW).expect("egress allowed for an image job");
        m.images = crate::config::ImagePolicy { allowed: vec!["pytorch/pytorch".into()], require_digest: false };
        let other = JobSpec { image: Some("busybox:1".into()), ..spec() };
        let refused = m.propose(&me, &c, &state, &signed_for(&other, 15), &other, NOW).unwrap_err();
        assert!(refused.detail.contains("does not run image \"busybox\""), "{refused}");
    }

    fn commit(chain: &TestChain, state: &mut State, txs: Vec<agora_protocol::SignedTx>) {
        let block = chain.next_block(&mut state.clone(), txs).unwrap();
        apply_block(state, &block, SigCheck::Verify).unwrap();
    }

    fn sim_class() -> GpuClass {
        GpuClass::parse("H100-80GB-SIM").unwrap()
    }

    fn place_ask(chain: &TestChain, state: &mut State, gpus: u32) {
        let nonce = state.account(&chain.address(0)).nonce;
        let kind = TxKind::PlaceAsk { class: sim_class(), gpus, hours: 3, min_price: Amount::agr(1) };
        commit(chain, state, vec![sign_tx(&chain.keys[0], nonce, kind)]);
    }

    #[test]
    fn gpus_in_open_asks_are_not_leased_on_the_spot_market() {
        let (chain, mut state, mut m) = setup();
        let me = chain.address(0);
        place_ask(&chain, &mut state, 1);
        m.propose(&me, &chain_id(), &state, &request(&chain.keys[1], me, 1, 2, 1), &spec(), NOW).expect("one is free");
        let err = m.propose(&me, &chain_id(), &state, &request(&chain.keys[1], me, 1, 2, 2), &spec(), NOW).unwrap_err();
        assert_eq!(err.code, RefusalCode::NoFreeGpus);
        assert!(err.detail.contains("0 H100 free for spot leases (1 in its open auction asks"), "{err}");
    }

    /// Clears an auction in which the buyer (account 1) wins 1 of the provider's 2 GPUs: its lease.
    fn auctioned_lease(chain: &TestChain, state: &mut State) -> agora_ledger::Lease {
        auctioned_lease_from(chain, state, 0)
    }

    fn auctioned_lease_from(chain: &TestChain, state: &mut State, start_hours: u32) -> agora_ledger::Lease {
        place_ask(chain, state, 2);
        let bid = TxKind::PlaceBid {
            class: sim_class(),
            gpus: 1,
            hours: 1,
            max_price: Amount::agr(2),
            split: false,
            start_hours,
        };
        let nonce = state.account(&chain.address(1)).nonce;
        commit(chain, state, vec![sign_tx(&chain.keys[1], nonce, bid)]);
        for _ in 0..2 * state.params().market.auction_blocks {
            if let Some(l) = state.open_leases().find(|l| l.is_reservation()) {
                return l.clone();
            }
            commit(chain, state, vec![]);
        }
        panic!("the auction did not clear");
    }

    #[test]
    fn the_holder_of_an_auctioned_lease_runs_jobs_on_its_held_gpus_one_at_a_time() {
        let (chain, mut state, mut m) = setup();
        let me = chain.address(0);
        let lease = auctioned_lease(&chain, &mut state);
        assert_eq!(lease.buyer, chain.address(1));
        let held = m.hold_class(lease.id, &sim_class(), lease.gpus).expect("a free GPU of the class");
        assert_eq!(held, vec!["SIM-H100-0".to_string()]);
        assert_eq!(m.free("H100"), vec![1], "the other GPU stays free for the spot market");
        let c = chain_id();
        let run = |key: &Keypair, lease_id: LeaseId, at: u64| {
            let body = RunRequest { lease_id, spec: spec(), issued_at_ms: TimestampMs(at) };
            Signed::sign(body, key, &c).unwrap()
        };
        let holder = &chain.keys[1];
        let refused = |m: &mut Market, req: &Signed<RunRequest>, running: bool, now: u64| {
            m.run(&me, &c, &state, req, running, now).unwrap_err()
        };
        assert_eq!(refused(&mut m, &run(&chain.keys[2], lease.id, NOW), false, NOW).code, RefusalCode::NotBuyer);
        let stale = refused(&mut m, &run(holder, lease.id, NOW), false, NOW + RUN_REQUEST_MAX_AGE_MS + 1);
        assert_eq!(stale.code, RefusalCode::RequestExpired);
        let unknown = refused(&mut m, &run(holder, LeaseId(agora_protocol::Hash([5; 32])), NOW), false, NOW);
        assert_eq!(unknown.code, RefusalCode::UnknownLease);
        let mut forged = run(holder, lease.id, NOW);
        forged.body.spec.command = vec!["rm".into()];
        assert_eq!(refused(&mut m, &forged, false, NOW).code, RefusalCode::NotBuyer, "signature");

        let first = run(holder, lease.id, NOW);
        let a = m.run(&me, &c, &state, &first, false, NOW).expect("the holder runs a job");
        assert_eq!((a.gpu_ids, a.buyer, a.spec), (held.clone(), lease.buyer, spec()));
        assert_eq!(refused(&mut m, &first, false, NOW + 1).code, RefusalCode::AlreadyAccepted, "no replay");
        let second = run(holder, lease.id, NOW + 10);
        assert_eq!(refused(&mut m, &second, true, NOW + 10).code, RefusalCode::JobRunning);
        let b = m.run(&me, &c, &state, &second, false, NOW + 10).expect("the next job once the first ended");
        assert_eq!(b.gpu_ids, held, "on the same devices");
        m.release(&lease.id);
        assert_eq!(m.free("H100").len(), 2, "settled: the devices are free again");
    }

    #[test]
    fn a_lease_that_starts_later_runs_nothing_before_its_start() {
        let (chain, mut state, mut m) = setup();
        let me = chain.address(0);
        let lease = auctioned_lease_from(&chain, &mut state, 2);
        assert!(lease.start_ms.0 > state.time_ms().0 + 3_600_000, "two hours after the clearing");
        assert_eq!(lease.end_ms.0 - lease.start_ms.0, 3_600_000);
        let run = |at: u64| {
            let body = RunRequest { lease_id: lease.id, spec: spec(), issued_at_ms: TimestampMs(at) };
            Signed::sign(body, &chain.keys[1], &chain_id()).unwrap()
        };
        let early = lease.start_ms.0 - 1_000;
        let err = m.run(&me, &chain_id(), &state, &run(early), false, early).unwrap_err();
        assert_eq!((err.code, err.detail.contains("starts in 1 s")), (RefusalCode::NotStarted, true), "{err}");
        let at = lease.start_ms.0;
        m.run(&me, &chain_id(), &state, &run(at), false, at).expect("from its start");
    }

    #[test]
    fn a_spot_lease_runs_no_second_job() {
        let (chain, mut state, mut m) = setup();
        let me = chain.address(0);
        let mut body = request(&chain.keys[1], me, 1, 2, 1).body;
        body.expires_at_ms = TimestampMs(state.time_ms().0 + 60_000);
        let req = Signed::sign(body, &chain.keys[1], &chain_id()).unwrap();
        let (id, gpu_ids) = m.propose(&me, &chain_id(), &state, &req, &spec(), state.time_ms().0).unwrap();
        let accept =
            Signed::sign(agora_protocol::LeaseAccept { lease_id: id, gpu_ids }, &chain.keys[0], &chain_id()).unwrap();
        let nonce = state.account(&me).nonce;
        commit(&chain, &mut state, vec![sign_tx(&chain.keys[0], nonce, TxKind::OpenLease { request: req, accept })]);
        assert!(state.lease(&id).is_some_and(|l| !l.is_reservation()));
        let body = RunRequest { lease_id: id, spec: spec(), issued_at_ms: TimestampMs(NOW) };
        let run = Signed::sign(body, &chain.keys[1], &chain_id()).unwrap();
        let err = m.run(&me, &chain_id(), &state, &run, false, NOW).unwrap_err();
        assert_eq!(err.code, RefusalCode::NotReservation, "{err}");
    }
}
