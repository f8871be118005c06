//! Deterministic simulation of consensus + ledger over a faulty network.
//! `AGORA_SIM_SEEDS=N` runs more seeds; `AGORA_SIM_SEED=S` replays one.

use agora_testnet::sim::{NetworkFaults, Sim, SimConfig};

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

#[test]
fn four_validators_commit_on_a_perfect_network() {
    let mut config = SimConfig::new(1, 4);
    config.faults = NetworkFaults::none();
    let report = Sim::new(config).run().unwrap_or_else(|e| panic!("{e}"));
    assert!(report.min_height >= 10);
    assert!(report.committed_txs > 0, "{report:?}");
    eprintln!("{report:?}");
}

#[test]
fn same_seed_same_run() {
    let a = Sim::new(SimConfig::new(7, 4)).run().unwrap_or_else(|e| panic!("{e}"));
    let b = Sim::new(SimConfig::new(7, 4)).run().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(a, b);
}

#[test]
fn replay_seed() {
    let Some(seed) = env_u64("AGORA_SIM_SEED") else { return };
    let validators = env_u64("AGORA_SIM_VALIDATORS").unwrap_or(4) as usize;
    let report = Sim::new(SimConfig::new(seed, validators))
        .run()
        .unwrap_or_else(|e| panic!("{e}"));
    eprintln!("{report:?}");
}

#[test]
fn lossy_network_seeds_keep_safety_and_liveness() {
    let seeds = env_u64("AGORA_SIM_SEEDS").unwrap_or(20);
    for seed in 0..seeds {
        for validators in [4, 7] {
            Sim::new(SimConfig::new(1_000 + seed, validators))
                .run()
                .unwrap_or_else(|e| panic!("{e}"));
        }
    }
}
