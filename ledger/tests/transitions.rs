//! The rules of each transaction, one behaviour per test: transfers, staking
//! and unbonding, provider registration, lease escrow and settlement,
//! slashing with jail and unjail, and block-level checks.

use agora_ledger::testkit::{TEST_FEE, TestChain, chain_id, sign_tx, transfer};
use agora_ledger::{
    Error, Event, LeaseStatus, ProviderStatus, SettleReason, SigCheck, State, apply_block, apply_tx, build_block,
};
use agora_protocol::{
    Amount, DowntimeAttestation, DowntimeEvidence, EquivocationEvidence, GpuSpec, Hash, Heartbeat, Height, Keypair,
    LeaseAccept, LeaseId, LeaseRequest, Signed, SignedTx, TimestampMs, TxKind,
};

/// Accounts: 0..=3 validators, 4 provider, 5 buyer, 6 other.
const PROVIDER: usize = 4;
const BUYER: usize = 5;
const OTHER: usize = 6;

fn chain() -> TestChain {
    TestChain::new(7, 4, Amount::agr(10_000))
}

/// Commits one block with `txs`, failing the test if any is rejected.
fn commit(chain: &TestChain, state: &mut State, txs: Vec<SignedTx>) -> Vec<Event> {
    let n = txs.len();
    let block = chain.next_block(state, txs).unwrap();
    assert_eq!(block.txs.len(), n, "a transaction was rejected by the builder");
    let outcome = apply_block(state, &block, SigCheck::Verify).unwrap();
    state.audit().unwrap();
    outcome.events
}

/// Commits `n` empty blocks (advancing time by n seconds).
fn advance(chain: &TestChain, state: &mut State, n: u64) {
    for _ in 0..n {
        commit(chain, state, vec![]);
    }
}

fn nonce(state: &State, chain: &TestChain, i: usize) -> u64 {
    state.account(&chain.address(i)).nonce
}

fn gpus() -> Vec<GpuSpec> {
    vec![GpuSpec { model: "H100-80GB".into(), vram_mib: 81_920, count: 4, simulated: true }]
}

/// Stakes and registers the provider.
fn setup_provider(chain: &TestChain, state: &mut State) {
    let key = &chain.keys[PROVIDER];
    commit(
        chain,
        state,
        vec![
            sign_tx(key, 0, TxKind::Stake { amount: Amount::agr(1_000) }),
            sign_tx(key, 1, TxKind::RegisterProvider { region: "eu-west".into(), gpus: gpus() }),
        ],
    );
}

fn lease_request(chain: &TestChain, state: &State, gpus: u32, duration_secs: u64, nonce: u64) -> Signed<LeaseRequest> {
    let body = LeaseRequest {
        provider: chain.address(PROVIDER),
        offer_seq: 1,
        gpu_model: "H100-80GB".into(),
        gpus,
        price_per_gpu_hour: Amount::agr(2),
        duration_secs,
        job_spec_hash: Hash([9; 32]),
        nonce,
        expires_at_ms: TimestampMs(state.time_ms().0 + 60_000),
    };
    Signed::sign(body, &chain.keys[BUYER], &chain_id()).unwrap()
}

fn accept(chain: &TestChain, request: &Signed<LeaseRequest>) -> Signed<LeaseAccept> {
    let gpu_ids = (0..request.body.gpus).map(|i| format!("sim-gpu-{i}")).collect();
    Signed::sign(LeaseAccept { lease_id: request.lease_id().unwrap(), gpu_ids }, &chain.keys[PROVIDER], &chain_id())
        .unwrap()
}

/// The provider's OpenLease transaction for a buyer's request, countersigned.
fn open_tx(chain: &TestChain, nonce: u64, request: Signed<LeaseRequest>) -> SignedTx {
    sign_tx(&chain.keys[PROVIDER], nonce, TxKind::OpenLease { accept: accept(chain, &request), request })
}

/// Opens a lease for 2 GPUs × 1 hour at 2 AGR/GPU-hour (escrow 4 AGR).
fn open_lease(chain: &TestChain, state: &mut State) -> LeaseId {
    let request = lease_request(chain, state, 2, 3600, 1);
    let id = request.lease_id().unwrap();
    let accept = accept(chain, &request);
    let n = nonce(state, chain, PROVIDER);
    commit(chain, state, vec![sign_tx(&chain.keys[PROVIDER], n, TxKind::OpenLease { request, accept })]);
    id
}

fn expect_err(state: &mut State, tx: &SignedTx) -> Error {
    let before = state.clone();
    let err = apply_tx(state, tx, SigCheck::Verify).unwrap_err();
    assert_eq!(*state, before, "a rejected transaction changed the state");
    err
}

#[test]
fn transfer_moves_funds_and_bumps_nonce() {
    let chain = chain();
    let mut state = chain.state();
    let proposer = state.validators()[0].address;
    let proposer_before = state.account(&proposer).balance;
    let events =
        commit(&chain, &mut state, vec![transfer(&chain.keys[BUYER], 0, chain.address(OTHER), Amount::agr(5))]);
    assert_eq!(state.account(&chain.address(BUYER)).balance, Amount(Amount::agr(9_995).0 - TEST_FEE.0));
    assert_eq!(state.account(&chain.address(OTHER)).balance, Amount::agr(10_005));
    assert_eq!(nonce(&state, &chain, BUYER), 1);
    // The fee went to the block's proposer: moved, not minted or burned (commit audits the supply).
    assert_eq!(state.account(&proposer).balance, proposer_before.checked_add(TEST_FEE).unwrap());
    assert!(events.contains(&Event::FeesPaid { proposer, amount: TEST_FEE }));
    assert_eq!(state.burned(), Amount::ZERO);
}

#[test]
fn bad_transfers_are_rejected_with_typed_errors() {
    let chain = chain();
    let mut state = chain.state();
    let key = &chain.keys[BUYER];
    let to = chain.address(OTHER);
    assert!(matches!(
        expect_err(&mut state, &transfer(key, 1, to, Amount(1))),
        Error::WrongNonce { expected: 0, found: 1 }
    ));
    assert!(matches!(
        expect_err(&mut state, &transfer(key, 0, to, Amount::agr(10_001))),
        Error::InsufficientFunds { .. }
    ));
    assert!(matches!(expect_err(&mut state, &transfer(key, 0, to, Amount::ZERO)), Error::Protocol(_)));
    let mut forged = transfer(key, 0, to, Amount(1));
    forged.signer = chain.address(OTHER);
    assert!(matches!(expect_err(&mut state, &forged), Error::BadSignature(_)));
    // Signed for another chain: the chain id is inside the digest.
    let other_chain = agora_protocol::ChainId::new("agora-other-1").unwrap();
    let foreign = Signed::sign(
        agora_protocol::Transaction {
            nonce: 0,
            fee: agora_ledger::testkit::TEST_FEE,
            kind: TxKind::Transfer { to, amount: Amount(1) },
        },
        key,
        &other_chain,
    )
    .unwrap();
    assert!(matches!(expect_err(&mut state, &foreign), Error::BadSignature(_)));
}

#[test]
fn extreme_amounts_fail_cleanly() {
    let chain = chain();
    let mut state = chain.state();
    setup_provider(&chain, &mut state);
    let key = &chain.keys[BUYER];
    let max = Amount::MAX;
    assert!(matches!(
        expect_err(&mut state, &transfer(key, 0, chain.address(OTHER), max)),
        Error::InsufficientFunds { .. }
    ));
    assert!(matches!(
        expect_err(&mut state, &sign_tx(key, 0, TxKind::Stake { amount: max })),
        Error::InsufficientFunds { .. }
    ));
    assert!(matches!(
        expect_err(&mut state, &sign_tx(key, 0, TxKind::Unstake { amount: max })),
        Error::InsufficientStake { .. }
    ));
    let mut request = lease_request(&chain, &state, 64, 30 * 24 * 3600, 1);
    request.body.price_per_gpu_hour = max;
    let request = Signed::sign(request.body, key, &chain_id()).unwrap();
    let tx = open_tx(&chain, 2, request);
    assert!(matches!(expect_err(&mut state, &tx), Error::Overflow("escrow")));
}

#[test]
fn unstaked_tokens_return_after_the_unbonding_period() {
    let chain = chain();
    let mut state = chain.state();
    let key = &chain.keys[OTHER];
    commit(&chain, &mut state, vec![sign_tx(key, 0, TxKind::Stake { amount: Amount::agr(300) })]);
    let events = commit(&chain, &mut state, vec![sign_tx(key, 1, TxKind::Unstake { amount: Amount::agr(100) })]);
    let release = state.height().0 + state.params().unbonding_blocks;
    assert!(events.contains(&Event::UnbondingStarted {
        account: chain.address(OTHER),
        amount: Amount::agr(100),
        release_height: Height(release)
    }));
    let acct = state.account(&chain.address(OTHER));
    let fees = 2 * TEST_FEE.0;
    assert_eq!(
        (acct.balance, acct.stake, acct.unbonding),
        (Amount(Amount::agr(9_700).0 - fees), Amount::agr(200), Amount::agr(100))
    );
    let n = release - state.height().0 - 1;
    advance(&chain, &mut state, n);
    assert_eq!(state.account(&chain.address(OTHER)).unbonding, Amount::agr(100), "released too early");
    advance(&chain, &mut state, 1);
    let acct = state.account(&chain.address(OTHER));
    assert_eq!((acct.balance, acct.unbonding), (Amount(Amount::agr(9_800).0 - fees), Amount::ZERO));
    assert!(matches!(
        expect_err(&mut state, &sign_tx(key, 2, TxKind::Unstake { amount: Amount::agr(201) })),
        Error::InsufficientStake { .. }
    ));
}

#[test]
fn registering_a_provider_needs_minimum_stake() {
    let chain = chain();
    let mut state = chain.state();
    let key = &chain.keys[PROVIDER];
    let register = sign_tx(key, 0, TxKind::RegisterProvider { region: "eu-west".into(), gpus: gpus() });
    assert!(matches!(expect_err(&mut state, &register), Error::InsufficientStake { .. }));
    setup_provider(&chain, &mut state);
    assert!(state.is_active_provider(&chain.address(PROVIDER)));
    assert_eq!(state.provider(&chain.address(PROVIDER)).unwrap().gpus, gpus());
}

#[test]
fn opening_a_lease_locks_escrow_and_closing_settles_pro_rata() {
    let chain = chain();
    let mut state = chain.state();
    setup_provider(&chain, &mut state);
    let buyer_before = state.account(&chain.address(BUYER)).balance;
    let provider_before = state.account(&chain.address(PROVIDER)).balance;
    let id = open_lease(&chain, &mut state);
    assert_eq!(state.account(&chain.address(BUYER)).balance, buyer_before.checked_sub(Amount::agr(4)).unwrap());
    // 900 blocks of 1 s = a quarter of the hour later, the provider closes it.
    advance(&chain, &mut state, 899);
    let n = nonce(&state, &chain, PROVIDER);
    let events = commit(
        &chain,
        &mut state,
        vec![sign_tx(&chain.keys[PROVIDER], n, TxKind::CloseLease { lease_id: id, exit_code: Some(0) })],
    );
    assert!(events.contains(&Event::LeaseSettled {
        lease_id: id,
        reason: SettleReason::Closed,
        paid: Amount::agr(1),
        refunded: Amount::agr(3)
    }));
    // Paid 1 AGR; it paid two fees (open and close).
    let provider_after = Amount(provider_before.0 + Amount::agr(1).0 - 2 * TEST_FEE.0);
    assert_eq!(state.account(&chain.address(PROVIDER)).balance, provider_after);
    assert_eq!(state.account(&chain.address(BUYER)).balance, buyer_before.checked_sub(Amount::agr(1)).unwrap());
    assert!(matches!(state.lease(&id).unwrap().status, LeaseStatus::Settled { exit_code: Some(0), .. }));
}

#[test]
fn lease_rules_reject_wrong_parties_replays_and_bad_terms() {
    let chain = chain();
    let mut state = chain.state();
    setup_provider(&chain, &mut state);
    let request = lease_request(&chain, &state, 2, 3600, 1);
    let good_accept = accept(&chain, &request);
    let open = |nonce, accept: &Signed<LeaseAccept>| {
        sign_tx(&chain.keys[PROVIDER], nonce, TxKind::OpenLease { request: request.clone(), accept: accept.clone() })
    };
    // An outsider cannot open it.
    let by_other =
        sign_tx(&chain.keys[OTHER], 0, TxKind::OpenLease { request: request.clone(), accept: good_accept.clone() });
    assert!(matches!(expect_err(&mut state, &by_other), Error::NotLeaseParty(_)));
    // Acceptance signed by someone else than the provider.
    let forged = Signed::sign(good_accept.body.clone(), &chain.keys[OTHER], &chain_id()).unwrap();
    assert!(matches!(expect_err(&mut state, &open(2, &forged)), Error::LeaseTerms(_)));
    // Wrong number of GPU ids.
    let short = Signed::sign(
        LeaseAccept { gpu_ids: vec!["0".into()], ..good_accept.body.clone() },
        &chain.keys[PROVIDER],
        &chain_id(),
    )
    .unwrap();
    assert!(matches!(expect_err(&mut state, &open(2, &short)), Error::LeaseTerms(_)));
    // A buyer who cannot pay: 4 GPUs × 30 days × 10 AGR = 28800 AGR > 10000.
    let mut huge = lease_request(&chain, &state, 4, 30 * 24 * 3600, 2).body;
    huge.price_per_gpu_hour = Amount::agr(10);
    let huge_tx = open_tx(&chain, 2, Signed::sign(huge, &chain.keys[BUYER], &chain_id()).unwrap());
    assert!(matches!(expect_err(&mut state, &huge_tx), Error::InsufficientFunds { .. }));
    // The real one opens once; the same request cannot open a second lease.
    commit(&chain, &mut state, vec![open(2, &good_accept)]);
    assert!(matches!(expect_err(&mut state, &open(3, &good_accept)), Error::LeaseExists(_)));
    let id = request.lease_id().unwrap();
    let close_by_buyer = sign_tx(&chain.keys[BUYER], 0, TxKind::CloseLease { lease_id: id, exit_code: None });
    assert!(matches!(expect_err(&mut state, &close_by_buyer), Error::NotLeaseParty(_)));
    let cancel_by_other = sign_tx(&chain.keys[OTHER], 0, TxKind::CancelLease { lease_id: id });
    assert!(matches!(expect_err(&mut state, &cancel_by_other), Error::NotLeaseParty(_)));
    let unknown = sign_tx(&chain.keys[BUYER], 0, TxKind::CancelLease { lease_id: LeaseId(Hash([1; 32])) });
    assert!(matches!(expect_err(&mut state, &unknown), Error::UnknownLease(_)));
}

#[test]
fn expired_lease_requests_cannot_open() {
    let chain = chain();
    let mut state = chain.state();
    setup_provider(&chain, &mut state);
    let request = lease_request(&chain, &state, 1, 60, 1);
    advance(&chain, &mut state, 61);
    let tx = open_tx(&chain, 2, request);
    assert!(matches!(expect_err(&mut state, &tx), Error::RequestExpired { .. }));
}

#[test]
fn buyer_cancel_refunds_the_unused_time() {
    let chain = chain();
    let mut state = chain.state();
    setup_provider(&chain, &mut state);
    let id = open_lease(&chain, &mut state);
    advance(&chain, &mut state, 1799);
    let events = commit(&chain, &mut state, vec![sign_tx(&chain.keys[BUYER], 0, TxKind::CancelLease { lease_id: id })]);
    assert!(events.contains(&Event::LeaseSettled {
        lease_id: id,
        reason: SettleReason::Cancelled,
        paid: Amount::agr(2),
        refunded: Amount::agr(2)
    }));
    let again = sign_tx(&chain.keys[BUYER], 1, TxKind::CancelLease { lease_id: id });
    assert!(matches!(expect_err(&mut state, &again), Error::LeaseNotOpen(_)));
}

#[test]
fn the_holder_extends_a_lease_before_it_runs_out_and_pays_for_the_whole_pro_rata() {
    let chain = chain();
    let mut state = chain.state();
    setup_provider(&chain, &mut state);
    let id = open_lease(&chain, &mut state); // 2 GPUs × 1 h at 2 AGR: escrow 4
    let end = state.lease(&id).unwrap().end_ms;
    let extend = |n: u64, from: usize, hours: u32, max: u64| {
        sign_tx(&chain.keys[from], n, TxKind::ExtendLease { lease_id: id, hours, max_cost: Amount::agr(max) })
    };
    assert!(matches!(expect_err(&mut state, &extend(0, OTHER, 1, 4)), Error::NotLeaseParty(_)));
    let dear = expect_err(&mut state, &extend(0, BUYER, 1, 3));
    assert!(matches!(&dear, Error::LeaseTerms(m) if m.contains("more than your maximum")), "{dear}");
    let long = expect_err(&mut state, &extend(0, BUYER, 720, 10_000));
    assert!(matches!(&long, Error::LeaseTerms(m) if m.contains("at most 720 hours")), "{long}");
    let before = state.account(&chain.address(BUYER)).balance;
    let events = commit(&chain, &mut state, vec![extend(0, BUYER, 1, 4)]);
    let end2 = TimestampMs(end.0 + 3_600_000);
    assert!(events.contains(&Event::LeaseExtended { lease_id: id, hours: 1, cost: Amount::agr(4), end_ms: end2 }));
    let lease = state.lease(&id).unwrap().clone();
    assert_eq!((lease.escrow, lease.end_ms), (Amount::agr(8), end2));
    assert_eq!(state.account(&chain.address(BUYER)).balance, Amount(before.0 - Amount::agr(4).0 - TEST_FEE.0));
    // Half of the two hours later the buyer cancels: half of the 8 each way.
    advance(&chain, &mut state, 3599 - 1);
    let events = commit(&chain, &mut state, vec![sign_tx(&chain.keys[BUYER], 1, TxKind::CancelLease { lease_id: id })]);
    assert!(
        events.contains(&Event::LeaseSettled {
            lease_id: id,
            reason: SettleReason::Cancelled,
            paid: Amount::agr(4),
            refunded: Amount::agr(4)
        }),
        "{events:?}"
    );
    assert!(matches!(expect_err(&mut state, &extend(2, BUYER, 1, 4)), Error::LeaseNotOpen(_)));
}

#[test]
fn a_lease_that_runs_out_settles_in_full() {
    let chain = chain();
    let mut state = chain.state();
    setup_provider(&chain, &mut state);
    let request = lease_request(&chain, &state, 1, 10, 1);
    let id = request.lease_id().unwrap();
    let tx = open_tx(&chain, 2, request);
    commit(&chain, &mut state, vec![tx]);
    let escrow = state.lease(&id).unwrap().escrow;
    assert_eq!(escrow, Amount(5_556), "2 AGR/h × 10 s rounds up to the micro-unit");
    advance(&chain, &mut state, 9);
    assert_eq!(state.lease(&id).unwrap().status, LeaseStatus::Open);
    advance(&chain, &mut state, 1);
    assert!(
        matches!(state.lease(&id).unwrap().status, LeaseStatus::Settled { reason: SettleReason::Expired, paid, .. } if paid == escrow)
    );
}

fn attest(chain: &TestChain, validator: usize, start: u64, end: u64) -> Signed<DowntimeAttestation> {
    let body =
        DowntimeAttestation { provider: chain.address(PROVIDER), window_start: Height(start), window_end: Height(end) };
    Signed::sign(body, &chain.keys[validator], &chain_id()).unwrap()
}

fn downtime(chain: &TestChain, validators: &[usize], start: u64, end: u64) -> TxKind {
    TxKind::SlashDowntime {
        evidence: DowntimeEvidence {
            provider: chain.address(PROVIDER),
            window_start: Height(start),
            window_end: Height(end),
            attestations: validators.iter().map(|v| attest(chain, *v, start, end)).collect(),
        },
    }
}

#[test]
fn downtime_quorum_slashes_jails_refunds_and_only_once() {
    let chain = chain();
    let mut state = chain.state();
    setup_provider(&chain, &mut state);
    let id = open_lease(&chain, &mut state);
    advance(&chain, &mut state, 30);
    let burned_before = state.burned();
    let stake_before = state.account(&chain.address(PROVIDER)).stake;
    // 2 of 4 equal validators is not more than 2/3.
    let weak = sign_tx(&chain.keys[OTHER], 0, downtime(&chain, &[0, 1], 3, 25));
    assert!(matches!(expect_err(&mut state, &weak), Error::InsufficientPower { .. }));
    // A non-validator's attestation is refused.
    let outsider = sign_tx(&chain.keys[OTHER], 0, downtime(&chain, &[0, 1, OTHER], 3, 25));
    assert!(matches!(expect_err(&mut state, &outsider), Error::NotValidator));
    // A repeated validator does not count twice.
    let dup = sign_tx(&chain.keys[OTHER], 0, downtime(&chain, &[0, 1, 1], 3, 25));
    assert!(matches!(expect_err(&mut state, &dup), Error::BadEvidence(_)));
    // Too short a silence is no evidence, even with every validator.
    let short = sign_tx(&chain.keys[OTHER], 0, downtime(&chain, &[0, 1, 2, 3], 3, 8));
    assert!(matches!(expect_err(&mut state, &short), Error::BadEvidence(_)));
    // Windows that overlap (validators saw the silence start a block apart)
    // count for the part they share; one that misses it does not.
    let mut staggered = downtime(&chain, &[0, 1, 2], 3, 25);
    if let TxKind::SlashDowntime { evidence } = &mut staggered {
        evidence.attestations[0] = attest(&chain, 0, 2, 25);
        evidence.attestations[1] = attest(&chain, 1, 3, 26);
        let mut missing = evidence.clone();
        missing.attestations[2] = attest(&chain, 2, 4, 26);
        let tx = sign_tx(&chain.keys[OTHER], 0, TxKind::SlashDowntime { evidence: missing });
        assert!(matches!(expect_err(&mut state, &tx), Error::BadEvidence(_)), "does not cover the window");
    }
    // A window that has not ended yet.
    let h = state.height().0;
    let future = sign_tx(&chain.keys[OTHER], 0, downtime(&chain, &[0, 1, 2], h - 2, h + 1));
    assert!(matches!(expect_err(&mut state, &future), Error::BadEvidence(_)));

    let events = commit(&chain, &mut state, vec![sign_tx(&chain.keys[OTHER], 0, staggered)]);
    let slash = stake_before.mul_div_floor(100, 10_000).unwrap();
    assert_eq!(state.account(&chain.address(PROVIDER)).stake, stake_before.checked_sub(slash).unwrap());
    assert_eq!(state.burned(), burned_before.checked_add(slash).unwrap());
    assert!(matches!(state.provider(&chain.address(PROVIDER)).unwrap().status, ProviderStatus::Jailed { .. }));
    assert!(events.iter().any(|e| matches!(e, Event::LeaseSettled { reason: SettleReason::ProviderSlashed, .. })));
    assert!(matches!(state.lease(&id).unwrap().status, LeaseStatus::Settled { .. }));
    assert!(!state.is_active_provider(&chain.address(PROVIDER)));
    // The same or an overlapping window is never slashed again.
    let again = sign_tx(&chain.keys[OTHER], 1, downtime(&chain, &[0, 1, 2, 3], 5, 28));
    assert!(matches!(expect_err(&mut state, &again), Error::AlreadySlashed));
}

#[test]
fn a_jailed_provider_cannot_lease_and_unjails_after_the_jail_period() {
    let chain = chain();
    let mut state = chain.state();
    setup_provider(&chain, &mut state);
    advance(&chain, &mut state, 30);
    commit(&chain, &mut state, vec![sign_tx(&chain.keys[OTHER], 0, downtime(&chain, &[0, 1, 2], 3, 25))]);
    let ProviderStatus::Jailed { until } = state.provider(&chain.address(PROVIDER)).unwrap().status else {
        panic!("not jailed")
    };
    let request = lease_request(&chain, &state, 1, 60, 7);
    let lease = open_tx(&chain, 2, request);
    assert!(matches!(expect_err(&mut state, &lease), Error::ProviderNotActive));
    let unjail = sign_tx(&chain.keys[PROVIDER], 2, TxKind::Unjail);
    assert!(matches!(expect_err(&mut state, &unjail), Error::StillJailed { .. }));
    let n = until.0 - state.height().0;
    advance(&chain, &mut state, n);
    commit(&chain, &mut state, vec![unjail]);
    assert!(state.is_active_provider(&chain.address(PROVIDER)));
    let again = sign_tx(&chain.keys[PROVIDER], 3, TxKind::Unjail);
    assert!(matches!(expect_err(&mut state, &again), Error::NotJailed));
}

fn heartbeat(key: &Keypair, seq: u64, height: u64) -> Signed<Heartbeat> {
    Signed::sign(Heartbeat { seq, height: Height(height), block_hash: Hash([height as u8; 32]) }, key, &chain_id())
        .unwrap()
}

#[test]
fn equivocating_heartbeats_tombstone_the_provider_once() {
    let chain = chain();
    let mut state = chain.state();
    setup_provider(&chain, &mut state);
    let key = &chain.keys[PROVIDER];
    let same = EquivocationEvidence::Heartbeats { first: heartbeat(key, 5, 1), second: heartbeat(key, 5, 1) };
    let tx = sign_tx(&chain.keys[OTHER], 0, TxKind::SlashEquivocation { evidence: same });
    assert!(matches!(expect_err(&mut state, &tx), Error::BadEvidence(_)));
    let ev = EquivocationEvidence::Heartbeats { first: heartbeat(key, 5, 1), second: heartbeat(key, 5, 2) };
    let stake = state.account(&chain.address(PROVIDER)).stake;
    commit(
        &chain,
        &mut state,
        vec![sign_tx(&chain.keys[OTHER], 0, TxKind::SlashEquivocation { evidence: ev.clone() })],
    );
    assert_eq!(
        state.account(&chain.address(PROVIDER)).stake,
        stake.checked_sub(stake.mul_div_floor(500, 10_000).unwrap()).unwrap()
    );
    assert_eq!(state.provider(&chain.address(PROVIDER)).unwrap().status, ProviderStatus::Tombstoned);
    let twice = sign_tx(&chain.keys[OTHER], 1, TxKind::SlashEquivocation { evidence: ev });
    assert!(matches!(expect_err(&mut state, &twice), Error::AlreadySlashed));
    assert!(matches!(expect_err(&mut state, &sign_tx(key, 2, TxKind::Unjail)), Error::Tombstoned));
}

#[test]
fn a_validator_that_double_votes_is_slashed_once() {
    use agora_protocol::consensus::{Vote, VoteKind};
    let chain = chain();
    let mut state = chain.state();
    let v = 0; // a genesis validator, not a provider
    let vote = |block: Option<Hash>| {
        let body = Vote { kind: VoteKind::Precommit, height: Height(7), round: 1, block };
        Signed::sign(body, &chain.keys[v], &chain_id()).unwrap()
    };
    let evidence = |a, b| TxKind::SlashEquivocation { evidence: EquivocationEvidence::Votes { first: a, second: b } };
    let same = sign_tx(&chain.keys[OTHER], 0, evidence(vote(Some(Hash([1; 32]))), vote(Some(Hash([1; 32])))));
    assert!(matches!(expect_err(&mut state, &same), Error::BadEvidence(_)));
    let mut forged = vote(None);
    forged.signature.0[3] ^= 1;
    let bad = sign_tx(&chain.keys[OTHER], 0, evidence(vote(Some(Hash([1; 32]))), forged));
    assert!(matches!(expect_err(&mut state, &bad), Error::BadSignature(_)));
    let stake = state.account(&chain.address(v)).stake;
    let ev = evidence(vote(Some(Hash([1; 32]))), vote(None));
    commit(&chain, &mut state, vec![sign_tx(&chain.keys[OTHER], 0, ev.clone())]);
    let slash = stake.mul_div_floor(500, 10_000).unwrap();
    assert_eq!(state.account(&chain.address(v)).stake, stake.checked_sub(slash).unwrap(), "5% burned");
    let twice = sign_tx(&chain.keys[OTHER], 1, ev);
    assert!(matches!(expect_err(&mut state, &twice), Error::AlreadySlashed), "the same evidence slashes once");
}

#[test]
fn slashing_reaches_unbonding_stake() {
    let chain = chain();
    let mut state = chain.state();
    setup_provider(&chain, &mut state);
    // The provider tries to escape by unstaking almost everything.
    commit(&chain, &mut state, vec![sign_tx(&chain.keys[PROVIDER], 2, TxKind::Unstake { amount: Amount::agr(995) })]);
    advance(&chain, &mut state, 30);
    commit(&chain, &mut state, vec![sign_tx(&chain.keys[OTHER], 0, downtime(&chain, &[0, 1, 2], 3, 25))]);
    let acct = state.account(&chain.address(PROVIDER));
    // 1% of 1000 AGR bonded = 10 AGR: 5 from stake, 5 from unbonding.
    assert_eq!((acct.stake, acct.unbonding), (Amount::ZERO, Amount::agr(990)));
    assert_eq!(state.burned(), Amount::agr(10));
}

#[test]
fn a_block_with_one_bad_transaction_changes_nothing() {
    let chain = chain();
    let mut state = chain.state();
    let good = transfer(&chain.keys[BUYER], 0, chain.address(OTHER), Amount(1));
    let mut block = chain.next_block(&mut state, vec![good]).unwrap();
    // Smuggle in a transaction with a wrong nonce, fixing the tx root so only the rule fails.
    block.txs.push(transfer(&chain.keys[BUYER], 5, chain.address(OTHER), Amount(1)));
    block.header.tx_root = agora_protocol::block::tx_root(&block.txs).unwrap();
    let before = state.clone();
    let err = apply_block(&mut state, &block, SigCheck::Verify).unwrap_err();
    assert!(matches!(err, Error::InBlock { index: 1, .. }), "{err}");
    assert_eq!(state, before);
}

#[test]
fn block_header_checks_reject_bad_blocks() {
    let chain = chain();
    let mut state = chain.state();
    let block =
        chain.next_block(&mut state, vec![transfer(&chain.keys[BUYER], 0, chain.address(OTHER), Amount(1))]).unwrap();
    let before = state.clone();
    let mutate = |f: &dyn Fn(&mut agora_protocol::Block)| {
        let mut b = block.clone();
        f(&mut b);
        b
    };
    let cases: Vec<(agora_protocol::Block, &str)> = vec![
        (mutate(&|b| b.header.height = Height(2)), "height"),
        (mutate(&|b| b.header.parent_hash = Hash([1; 32])), "parent"),
        (mutate(&|b| b.header.time_ms = TimestampMs(0)), "time"),
        (mutate(&|b| b.header.state_root = Hash([1; 32])), "state root"),
        (mutate(&|b| b.header.tx_root = Hash([1; 32])), "transaction root"),
        (mutate(&|b| b.header.proposer = chain.address(OTHER)), "proposer"),
        (
            mutate(&|b| {
                b.txs[0].signature.0[0] ^= 1;
                b.header.tx_root = agora_protocol::block::tx_root(&b.txs).unwrap();
            }),
            "signature",
        ),
    ];
    let mut s = state.clone();
    for (bad, what) in cases {
        let err = apply_block(&mut s, &bad, SigCheck::Verify).unwrap_err().to_string();
        assert!(err.contains(what), "{what}: {err}");
        assert_eq!(s, before);
    }
    apply_block(&mut state, &block, SigCheck::Verify).unwrap();
    assert!(matches!(apply_block(&mut state, &block, SigCheck::Verify), Err(Error::WrongHeight { .. })));
}

#[test]
fn the_builder_leaves_out_invalid_transactions() {
    let chain = chain();
    let mut state = chain.state();
    let before = state.clone();
    let good = transfer(&chain.keys[BUYER], 0, chain.address(OTHER), Amount(1));
    let bad = transfer(&chain.keys[BUYER], 0, chain.address(OTHER), Amount(2)); // same nonce, now stale
    let time = TimestampMs(state.time_ms().0 + 1);
    let (block, rejected) = build_block(&mut state, vec![good.clone(), bad], time, chain.address(0), None).unwrap();
    assert_eq!(block.txs, vec![good]);
    assert!(matches!(rejected[0].1, Error::WrongNonce { .. }));
    assert_eq!(state, before, "building must not change the state");
}

#[test]
fn an_operator_key_runs_the_provider_but_cannot_touch_its_money() {
    let chain = chain();
    let mut state = chain.state();
    let (account, cold) = (chain.address(PROVIDER), &chain.keys[PROVIDER]);
    let operator = Keypair::from_seed_phrase("operator on the GPU host");
    let op = operator.address();
    commit(&chain, &mut state, vec![sign_tx(cold, 0, TxKind::Stake { amount: Amount::agr(1_000) })]);
    // Refusals: no operator to withdraw, oneself, a provider's key, chains.
    let none = sign_tx(cold, 1, TxKind::SetOperator { operator: None });
    assert!(matches!(expect_err(&mut state, &none), Error::Operator(_)));
    let itself = sign_tx(cold, 1, TxKind::SetOperator { operator: Some(account) });
    assert!(matches!(expect_err(&mut state, &itself), Error::Operator(_)));
    commit(&chain, &mut state, vec![sign_tx(cold, 1, TxKind::SetOperator { operator: Some(op) })]);
    assert_eq!((state.operator_of(&account), state.acting_for(&op)), (Some(op), account));
    // The operator pays its own fees, from a small balance of its own.
    commit(&chain, &mut state, vec![transfer(&chain.keys[OTHER], 0, op, Amount::agr(1))]);
    let chained = sign_tx(&operator, 0, TxKind::SetOperator { operator: Some(chain.address(OTHER)) });
    assert!(matches!(expect_err(&mut state, &chained), Error::Operator(_)));
    let taken = sign_tx(&chain.keys[OTHER], 1, TxKind::SetOperator { operator: Some(op) });
    assert!(matches!(expect_err(&mut state, &taken), Error::Operator(_)), "one operator serves one account");

    // The operator registers the account's GPUs (its node has them) and answers leases for it.
    commit(
        &chain,
        &mut state,
        vec![sign_tx(&operator, 0, TxKind::RegisterProvider { region: "eu".into(), gpus: gpus() })],
    );
    assert!(state.provider(&account).is_some() && state.provider(&op).is_none());
    let request = lease_request(&chain, &state, 1, 3600, 1);
    let id = request.lease_id().unwrap();
    let gpu_ids = vec!["sim-gpu-0".to_string()];
    let accept = Signed::sign(LeaseAccept { lease_id: id, gpu_ids }, &operator, &chain_id()).unwrap();
    commit(&chain, &mut state, vec![sign_tx(&operator, 1, TxKind::OpenLease { request, accept })]);
    assert_eq!(state.lease(&id).unwrap().provider, account);
    advance(&chain, &mut state, 2);
    let balance = state.account(&account).balance;
    commit(&chain, &mut state, vec![sign_tx(&operator, 2, TxKind::CloseLease { lease_id: id, exit_code: Some(0) })]);
    assert!(state.account(&account).balance > balance, "the account is paid, not the operator");
    assert_eq!(state.account(&op).balance, Amount(Amount::agr(1).0 - 3 * TEST_FEE.0), "only its fees left it");

    // It cannot move the account's money or stake: its own transactions spend its own small account.
    let steal = sign_tx(&operator, 3, TxKind::Transfer { to: op, amount: Amount::agr(1) });
    assert!(matches!(expect_err(&mut state, &steal), Error::InsufficientFunds { .. }));
    let unstake = sign_tx(&operator, 3, TxKind::Unstake { amount: Amount::agr(1) });
    assert!(expect_err(&mut state, &unstake).to_string().contains("stake"));

    // Its double heartbeat slashes the account that chose it.
    let stake = state.account(&account).stake;
    let ev = EquivocationEvidence::Heartbeats { first: heartbeat(&operator, 7, 1), second: heartbeat(&operator, 7, 2) };
    commit(&chain, &mut state, vec![sign_tx(&chain.keys[OTHER], 1, TxKind::SlashEquivocation { evidence: ev })]);
    assert!(state.account(&account).stake < stake);
    assert_eq!(state.provider(&account).unwrap().status, ProviderStatus::Tombstoned);

    // The account withdraws the key; the key acts for nobody.
    commit(&chain, &mut state, vec![sign_tx(cold, 2, TxKind::SetOperator { operator: None })]);
    assert_eq!((state.operator_of(&account), state.acting_for(&op)), (None, op));
}

#[test]
fn a_proposer_fills_blocks_by_bytes_and_never_builds_one_it_cannot_encode() {
    // The attack: ~1,000 valid OpenLease transactions at price 0, each naming
    // 64 long GPU ids (~4.7 KB), more than a 4 MiB block holds. A provider
    // leases out only GPUs it registered (8 kinds of 64 at most), so it takes
    // 125 providers to make them all valid.
    const PROVIDERS: usize = 125;
    const FIRST: usize = 4;
    let buyer = FIRST + PROVIDERS;
    let chain = TestChain::new(buyer + 1, 4, Amount::agr(10_000));
    let mut state = chain.state();
    let kinds: Vec<GpuSpec> =
        (0..8).map(|k| GpuSpec { model: format!("H{k}00"), vram_mib: 81_920, count: 64, simulated: true }).collect();
    let setup: Vec<SignedTx> = (FIRST..buyer)
        .flat_map(|p| {
            let key = &chain.keys[p];
            [
                sign_tx(key, 0, TxKind::Stake { amount: Amount::agr(1_000) }),
                sign_tx(key, 1, TxKind::RegisterProvider { region: "eu-west".into(), gpus: kinds.clone() }),
            ]
        })
        .collect();
    commit(&chain, &mut state, setup);
    let txs: Vec<SignedTx> = (0..1_000u64)
        .map(|n| {
            let provider = &chain.keys[FIRST + (n as usize) / 8];
            let body = LeaseRequest {
                provider: provider.address(),
                offer_seq: 1,
                gpu_model: format!("H{}00", n % 8),
                gpus: 64,
                price_per_gpu_hour: Amount::ZERO,
                duration_secs: 60,
                job_spec_hash: Hash([9; 32]),
                nonce: n,
                expires_at_ms: TimestampMs(state.time_ms().0 + 3_600_000),
            };
            let request = Signed::sign(body, &chain.keys[buyer], &chain_id()).unwrap();
            let gpu_ids = (0..64).map(|i| format!("GPU-{i:04}-{}", "x".repeat(50))).collect();
            let accept =
                Signed::sign(LeaseAccept { lease_id: request.lease_id().unwrap(), gpu_ids }, provider, &chain_id())
                    .unwrap();
            sign_tx(&chain.keys[buyer], n, TxKind::OpenLease { request, accept })
        })
        .collect();
    let offered: usize = txs.iter().map(|t| agora_protocol::codec::encode(t).unwrap().len()).sum();
    assert!(offered > agora_protocol::limits::MAX_BLOCK_BYTES, "the attack offers {offered} bytes");
    let time = TimestampMs(state.time_ms().0 + 1_000);
    let (block, _) = build_block(&mut state, txs, time, chain.address(0), None).unwrap();
    let encoded = agora_protocol::codec::encode(&block).expect("the block encodes");
    assert!(encoded.len() <= agora_protocol::limits::MAX_BLOCK_BYTES, "{} bytes", encoded.len());
    assert!(block.txs.len() > 300 && block.txs.len() < 1_000, "a full block by bytes: {} txs", block.txs.len());
    apply_block(&mut state, &block, SigCheck::Verify).expect("and it applies");
    state.audit().unwrap();
}

#[test]
fn one_downtime_cannot_be_split_into_many_slashes_or_slashed_late() {
    let chain = chain();
    let mut state = chain.state();
    setup_provider(&chain, &mut state);
    advance(&chain, &mut state, 45);
    let stake = state.account(&chain.address(PROVIDER)).stake;
    // Attestations covering [3, 40], presented as a one-block window: refused.
    let split = |s: u64, e: u64| {
        let mut kind = downtime(&chain, &[0, 1, 2], 3, 40);
        if let TxKind::SlashDowntime { evidence } = &mut kind {
            (evidence.window_start, evidence.window_end) = (Height(s), Height(e));
        }
        kind
    };
    let tiny = sign_tx(&chain.keys[OTHER], 0, split(10, 10));
    assert!(matches!(expect_err(&mut state, &tiny), Error::BadEvidence(_)), "a one-block window");
    // One slash for the first half of the span…
    commit(&chain, &mut state, vec![sign_tx(&chain.keys[OTHER], 0, split(3, 20))]);
    let once = state.account(&chain.address(PROVIDER)).stake;
    assert!(once < stake);
    // …and the same attestations cannot back another, while jailed or after.
    let second = sign_tx(&chain.keys[OTHER], 1, split(21, 40));
    assert!(matches!(expect_err(&mut state, &second), Error::AlreadySlashed));
    advance(&chain, &mut state, 50);
    let n = nonce(&state, &chain, PROVIDER);
    commit(&chain, &mut state, vec![sign_tx(&chain.keys[PROVIDER], n, TxKind::Unjail)]);
    let reused = sign_tx(&chain.keys[OTHER], 1, split(21, 40));
    assert!(matches!(expect_err(&mut state, &reused), Error::AlreadySlashed | Error::BadEvidence(_)));
    assert_eq!(
        state.slashed_windows(&chain.address(PROVIDER)),
        vec![(Height(3), Height(40))],
        "everything the attestations covered is spent, not only the window slashed"
    );
    assert_eq!(state.account(&chain.address(PROVIDER)).stake, once, "slashed exactly once");
    // Evidence older than max_evidence_age_blocks is refused (unbonding outlasts that age).
    let age = state.params().max_evidence_age_blocks;
    advance(&chain, &mut state, age);
    let late = sign_tx(&chain.keys[OTHER], 1, downtime(&chain, &[0, 1, 2], 60, 90));
    assert!(matches!(expect_err(&mut state, &late), Error::BadEvidence(_)));
}

#[test]
fn unbonding_must_outlast_the_oldest_evidence() {
    let bad = agora_ledger::Params { unbonding_blocks: 50, max_evidence_age_blocks: 50, ..Default::default() };
    assert!(bad.validate().unwrap_err().to_string().contains("unbonding_blocks must exceed"));
    let ok = agora_ledger::Params { unbonding_blocks: 51, max_evidence_age_blocks: 50, ..Default::default() };
    ok.validate().unwrap();
}

/// Commits an empty block `ms` of block time after the current one.
fn jump(state: &mut State, ms: u64) {
    let time = TimestampMs(state.time_ms().0 + ms);
    let proposer = state.validators()[0].address;
    let (block, _) = build_block(state, vec![], time, proposer, None).unwrap();
    apply_block(state, &block, SigCheck::Verify).unwrap();
    state.audit().unwrap();
}

#[test]
fn settled_leases_are_pruned_after_the_retention_and_cannot_be_opened_again() {
    let mut chain = chain();
    let retention = agora_protocol::limits::MAX_LEASE_REQUEST_TTL_MS;
    chain.genesis.params.market.settled_lease_retention_ms = retention;
    let mut state = chain.state();
    setup_provider(&chain, &mut state);
    // A request valid for longer than the longest allowed is refused: once
    // its lease is pruned it could open it again.
    let mut long = lease_request(&chain, &state, 1, 60, 7);
    long.body.expires_at_ms = TimestampMs(state.time_ms().0 + retention + 2_000);
    let long = Signed::sign(long.body, &chain.keys[BUYER], &chain_id()).unwrap();
    assert!(matches!(expect_err(&mut state, &open_tx(&chain, 2, long)), Error::LeaseTerms(_)));

    // Two leases: one cancelled at once, one left to run out ten minutes later.
    let request = lease_request(&chain, &state, 2, 3600, 1);
    let first = request.lease_id().unwrap();
    commit(&chain, &mut state, vec![open_tx(&chain, 2, request.clone())]);
    commit(&chain, &mut state, vec![sign_tx(&chain.keys[BUYER], 0, TxKind::CancelLease { lease_id: first })]);
    let settled_at = state.time_ms().0;
    let second = lease_request(&chain, &state, 1, 600, 2);
    let second_id = second.lease_id().unwrap();
    commit(&chain, &mut state, vec![open_tx(&chain, 3, second)]);

    // Kept through the retention…
    let waited = state.time_ms().0 - settled_at;
    jump(&mut state, retention - waited - 1);
    assert!(state.lease(&first).is_some(), "pruned before the retention ended");
    let earned = state.provider(&chain.address(PROVIDER)).unwrap().earned;
    // …and pruned at its end, the other (now run out, settled) kept for its own.
    jump(&mut state, 1);
    assert!(state.lease(&first).is_none(), "a settled lease outlived the retention");
    let second_lease = state.lease(&second_id).expect("the later lease is still there");
    assert!(matches!(second_lease.status, LeaseStatus::Settled { .. }), "{:?}", second_lease.status);
    // The provider's record of what it earned and served stays.
    assert_eq!(state.provider(&chain.address(PROVIDER)).unwrap().earned, earned);
    // The incremental root, the root from scratch and the state rebuilt
    // from the leaves agree after the deletion.
    assert_eq!(state.root(), state.root_from_scratch().unwrap());
    state.check_leaves().unwrap();

    // The pruned lease's request, countersigned again, cannot open it anew.
    let again = open_tx(&chain, nonce(&state, &chain, PROVIDER), request);
    assert!(matches!(expect_err(&mut state, &again), Error::RequestExpired { .. }));
    jump(&mut state, retention);
    assert!(state.lease(&second_id).is_none());
}
