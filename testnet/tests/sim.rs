//! Deterministic simulation of consensus + ledger over a faulty network:
//! loss, duplication, delays, a crash and restart from store + WAL (losing
//! the WAL appends not yet fdatasync'd, as a power cut would), a partition
//! that heals, and one Byzantine validator (double votes, garbage, and as
//! proposer two valid blocks for one round, each with its proposal, to the
//! two halves of the network), and a stake-less griefing peer (stale replays,
//! votes from its own key, unpayable transactions), every delivery judged by
//! the daemon's relay verdict, with safety and liveness invariants checked
//! after every step.
//! `AGORA_SIM_SEEDS=N` runs N seeds per size; `AGORA_SIM_SEED=S` replays one
//! (with `AGORA_SIM_VALIDATORS=7` for the 7-validator network).

use agora_testnet::sim::{NetworkFaults, Sim, SimConfig, SimReport};

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

fn run(config: SimConfig) -> SimReport {
    Sim::new(config).run().unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn four_validators_commit_on_a_perfect_network() {
    let mut config = SimConfig::new(1, 4);
    config.faults = NetworkFaults::none();
    let report = run(config);
    assert!(report.min_height >= 10);
    assert!(report.committed_txs > 0, "{report:?}");
}

#[test]
fn same_seed_same_run_bit_for_bit() {
    let a = run(SimConfig::all_faults(7, 4));
    let b = run(SimConfig::all_faults(7, 4));
    assert_eq!(a, b);
    let c = run(SimConfig::all_faults(8, 4));
    assert_ne!(a.trace, c.trace, "different seeds should give different runs");
}

#[test]
fn replay_seed() {
    let Some(seed) = env_u64("AGORA_SIM_SEED") else { return };
    let validators = env_u64("AGORA_SIM_VALIDATORS").unwrap_or(4) as usize;
    eprintln!("{:?}", run(SimConfig::all_faults(seed, validators)));
}

fn many_seeds(validators: usize, default_seeds: u64) -> u64 {
    let seeds = env_u64("AGORA_SIM_SEEDS").unwrap_or(default_seeds);
    let started = std::time::Instant::now();
    let (mut evidence, mut set_changes, mut equivocated, mut griefing, mut dropped) = (0, 0, 0, 0, 0);
    let (mut forged, mut auctions) = (0, 0);
    for seed in 0..seeds {
        let report = run(SimConfig::all_faults(seed, validators));
        // The crashed validator lost every WAL append not yet fdatasync'd;
        // its own votes were synced, so its replay never even needed the
        // double-sign guard (the run fails on any double vote).
        assert_eq!(report.sign_refusals, 0, "seed {seed}: the guard had to refuse a signature");
        evidence += report.evidence;
        set_changes += report.set_changes;
        equivocated += report.proposals_equivocated;
        griefing += report.griefing;
        dropped += report.relay_dropped;
        forged += report.blocks_forged;
        auctions += report.auctions;
    }
    assert!(auctions > 0, "no auction cleared (bids alone: refunded) in any run");
    eprintln!("{seeds} seeds of {validators} validators with all faults in {:?}", started.elapsed());
    assert!(set_changes > 0, "no run crossed a validator-set change");
    // The Byzantine validator, as proposer, sent two valid blocks to the two
    // halves of the network; the runs still commit one block per height.
    assert!(equivocated > 0, "the Byzantine proposer never equivocated");
    // It also forged blocks naming another proposer or carrying a stripped
    // certificate, each with a proposal: a run fails if any is committed.
    assert!(forged > 0, "the Byzantine proposer never forged a block");
    // A stake-less griefing peer replayed stale messages, signed votes and
    // sent unpayable transactions: dropped by the relay verdict and mempool
    // admission (a run fails if any mempool kept its transactions).
    assert!(
        griefing > 0 && dropped > 0,
        "the griefing peer did nothing ({griefing}) or nothing was dropped ({dropped})"
    );
    eprintln!(
        "{equivocated} equivocating proposals, {forged} forged blocks, {evidence} double votes caught, {griefing} griefing messages, {dropped} deliveries dropped by the relay verdict, {auctions} auction results"
    );
    evidence
}

#[test]
fn four_validators_with_every_fault_stay_safe_and_live() {
    let evidence = many_seeds(4, 200);
    assert!(evidence > 0, "the Byzantine validator's double votes were never caught");
}

#[test]
fn seven_validators_with_every_fault_stay_safe_and_live() {
    let evidence = many_seeds(7, 50);
    assert!(evidence > 0, "the Byzantine validator's double votes were never caught");
}

/// Liveness on top of every fault: no provider is slashed for an outage
/// shorter than the window (nor, ever, an always-up one, whatever the
/// Byzantine validator attests), every long outage is slashed, none twice,
/// with supply conserved and all nodes agreeing throughout.
/// `AGORA_SIM_LIVENESS_SEEDS=N` runs more; `AGORA_SIM_LIVENESS_SEED=S` replays one.
#[test]
fn liveness_slashes_every_long_outage_and_never_an_honest_provider() {
    if let Some(seed) = env_u64("AGORA_SIM_LIVENESS_SEED") {
        let validators = env_u64("AGORA_SIM_VALIDATORS").unwrap_or(4) as usize;
        eprintln!("{:?}", run(SimConfig::liveness(seed, validators)));
        return;
    }
    let seeds = env_u64("AGORA_SIM_LIVENESS_SEEDS").unwrap_or(20);
    let started = std::time::Instant::now();
    let (mut slashed, mut restarts, mut leases) = (0, 0, 0);
    for seed in 0..seeds {
        let validators = if seed % 5 == 4 { 7 } else { 4 };
        let report = run(SimConfig::liveness(seed, validators));
        slashed += report.long_outages_slashed;
        restarts += report.provider_restarts;
        leases += report.auction_leases;
    }
    // Providers ask and clients bid in the auctions: fills become leases,
    // and every node agrees on every result (their state roots do).
    assert!(leases > 0, "no auction made a lease in {seeds} runs");
    // Every outage ends in a restart with the clock stepped back to the last
    // heartbeat: the durable reservation kept every sequence number fresh
    // (a run fails if any validator sees a provider equivocate).
    assert!(restarts >= 2 * seeds, "only {restarts} provider restarts in {seeds} runs");
    eprintln!(
        "{seeds} liveness seeds in {:?}: {slashed} long outages slashed, {leases} auction leases",
        started.elapsed()
    );
    // Two long outages per run; most last past the bound (the rest were cut
    // short by consensus stalls and are not judged).
    assert!(slashed >= seeds, "only {slashed} long outages reached the bound in {seeds} runs");
}

/// The crashed validator comes back by state sync — the node's `StateSync`
/// deciding, verifying offers and chunks against the certified root — from
/// its peers' newest snapshot (one every 2 blocks), with every fault on and
/// the Byzantine validator offering a forged snapshot (7 validators: with one
/// down and one Byzantine of 4, no quorum would go on to leave the crashed
/// one behind): the restored state is
/// the chain's (checked at the join), the node then commits the same blocks
/// as everyone (the run's safety check), and the chain stays live.
/// `AGORA_SIM_STATE_SYNC_SEEDS=N` runs more.
#[test]
fn a_crashed_validator_rejoins_by_state_sync_under_every_fault() {
    let seeds = env_u64("AGORA_SIM_STATE_SYNC_SEEDS").unwrap_or(20);
    let (mut synced, mut liars) = (0, 0);
    for seed in 0..seeds {
        let mut config = SimConfig::all_faults(seed, 7);
        config.scenario.state_sync = true;
        config.target_height = 24;
        let report = run(config);
        assert_eq!(report.sign_refusals, 0, "seed {seed}: the guard had to refuse a signature");
        synced += report.state_synced;
        liars += report.snapshot_liars;
    }
    eprintln!("{seeds} seeds: {synced} restarts by state sync, {liars} lying peers caught");
    // A restart before its peers took a newer snapshot replays its own blocks.
    assert!(synced >= seeds / 5, "only {synced} of {seeds} restarts joined by state sync");
    assert!(liars > 0, "the Byzantine validator's forged offers were never caught");
}
