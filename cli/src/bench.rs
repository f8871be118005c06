//! `agora bench testnet`: a real 4-node testnet measured from outside (idle
//! RSS, offer propagation, committed transfers/s and commit latency under a
//! steady load); see agora_testnet::bench.
//!
//! `agora bench scale`: many nodes at idle (100 by default); see agora_testnet::scale.
//!
//! `agora bench jobs`: what each job runner adds to a job's start; see jobs_bench.
//!
//! `agora bench consensus`: the deterministic simulation as a benchmark. A
//! 4-validator network (configurable) with a fixed latency and no faults
//! commits a preloaded batch of signed transfers; prints JSON figures. With
//! zero latency this is the pure CPU cost of consensus + ledger for every
//! node, all on one core: the upper bound for a real network.

use std::process::ExitCode;
use std::time::Instant;

use agora_testnet::sim::{NetworkFaults, Sim, SimConfig};
use clap::Subcommand;
use serde::Serialize;

use crate::print_json;

/// Most node processes `agora bench scale` starts on one machine.
const MAX_SCALE_NODES: usize = 200;

/// Transfers one client account contributes (below the mempool's per-account cap).
const TXS_PER_CLIENT: usize = 50;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Committed transactions and blocks per second of a simulated network
    Consensus {
        #[arg(long, default_value_t = 4)]
        validators: usize,
        /// One-way message latency in simulated milliseconds
        #[arg(long, default_value_t = 0)]
        latency_ms: u64,
        /// Signed transfers to commit (at most 10,000: the mempool's capacity)
        #[arg(long, default_value_t = 10_000)]
        txs: usize,
        /// Empty blocks to commit for the blocks/s figure
        #[arg(long, default_value_t = 200)]
        blocks: u64,
    },
    /// Real node processes on loopback: idle RSS, offer propagation, transfers/s and commit latency
    Testnet {
        #[arg(long, default_value_t = 4)]
        nodes: usize,
        /// How many of the nodes are validators (the first ones; the rest are full nodes) [default: all]
        #[arg(long)]
        validators: Option<usize>,
        /// Offered load in transfers per second
        #[arg(long, default_value_t = 1_500)]
        rate: u64,
        /// How long the load runs, in seconds
        #[arg(long, default_value_t = 20)]
        seconds: u64,
        /// Offer announcements to time
        #[arg(long, default_value_t = 40)]
        offers: usize,
        /// Pause after each commit (the block-time floor)
        #[arg(long, default_value_t = agora_testnet::local::TESTNET_COMMIT_PAUSE_MS)]
        commit_pause_ms: u64,
        #[arg(long, default_value_t = 28_000)]
        base_port: u16,
        /// Keep the testnet's homes and logs here (must not hold a testnet) instead of a temporary directory
        #[arg(long)]
        dir: Option<std::path::PathBuf>,
    },
    /// Many nodes on loopback at idle: blocks/s, every node following, offers everywhere, a killed provider slashed everywhere; per-node RSS, CPU and gossip bytes/s
    Scale {
        #[arg(long, default_value_t = 100)]
        nodes: usize,
        /// The first nodes are validators, the rest full nodes
        #[arg(long, default_value_t = 16)]
        validators: usize,
        /// The first nodes declare simulated GPUs; the last of them is killed at the end
        #[arg(long, default_value_t = 10)]
        providers: usize,
        /// Pause after each commit (the block-time floor)
        #[arg(long, default_value_t = agora_testnet::local::TESTNET_COMMIT_PAUSE_MS)]
        commit_pause_ms: u64,
        /// How long the idle network is measured
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        #[arg(long, default_value_t = 30_000)]
        base_port: u16,
        /// Keep the testnet's homes and logs here (must not hold a testnet) instead of a temporary directory
        #[arg(long)]
        dir: Option<std::path::PathBuf>,
    },
    /// Liveness on real testnets: kill → slash committed, over repeated runs
    Liveness {
        #[arg(long, default_value_t = 5)]
        runs: usize,
        #[arg(long, default_value_t = 28_200)]
        base_port: u16,
    },
    /// Job runners on this host: what each adds to a job's start (no chain)
    Jobs {
        /// Jobs of `true` started per runner, one after another
        #[arg(long, default_value_t = 50)]
        samples: usize,
        /// Runners to time (repeatable): process, sandbox, docker
        #[arg(long = "runner", default_values_t = ["process".to_string(), "sandbox".to_string()])]
        runners: Vec<String>,
    },
    /// Leases on a real testnet: submit → job running latency, and lease requests one provider accepts per second
    Leases {
        /// Leases submitted one after another, each timed until its job runs
        #[arg(long, default_value_t = 20)]
        samples: usize,
        /// Lease requests sent at once to one provider (it has 64 simulated GPUs)
        #[arg(long, default_value_t = 60)]
        burst: usize,
        /// Threads sending the burst
        #[arg(long, default_value_t = 8)]
        threads: usize,
        #[arg(long, default_value_t = 28_100)]
        base_port: u16,
        /// Keep the testnet's homes and logs here instead of a temporary directory
        #[arg(long)]
        dir: Option<std::path::PathBuf>,
        /// How the provider runs jobs: sandbox or process [default: sandbox where this machine can]
        #[arg(long, value_parser = crate::testnet::parse_runner)]
        runner: Option<agora_node::config::Runner>,
    },
    /// The exchange on a real testnet: a bid's placement → listed by `agora orders` on every node
    Market {
        /// Bids placed one after another, each timed until every node lists it
        #[arg(long, default_value_t = 50)]
        samples: usize,
        #[arg(long, default_value_t = 28_300)]
        base_port: u16,
        /// Keep the testnet's homes and logs here instead of a temporary directory
        #[arg(long)]
        dir: Option<std::path::PathBuf>,
    },
}

#[derive(Serialize)]
struct Report {
    validators: usize,
    latency_ms: u64,
    txs_committed: u64,
    txs_wall_ms: u128,
    txs_per_sec_wall: f64,
    txs_per_sec_simulated: f64,
    blocks_for_txs: u64,
    empty_blocks: u64,
    empty_blocks_wall_ms: u128,
    blocks_per_sec_wall: f64,
    blocks_per_sec_simulated: f64,
}

fn config(validators: usize, latency_ms: u64) -> SimConfig {
    let mut c = SimConfig::new(1, validators);
    c.faults = NetworkFaults {
        latency_min_ms: latency_ms,
        latency_max_ms: latency_ms,
        drop_per_mille: 0,
        duplicate_per_mille: 0,
    };
    c.load.txs_per_second = 0;
    c
}

pub fn run(cmd: BenchCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        BenchCommand::Consensus { validators, latency_ms, txs, blocks } => {
            consensus(validators, latency_ms, txs, blocks)
        }
        BenchCommand::Testnet { nodes, validators, rate, seconds, offers, commit_pause_ms, base_port, dir } => {
            anyhow::ensure!((1..=16).contains(&nodes), "--nodes must be 1 to 16");
            anyhow::ensure!((1..=20_000).contains(&rate), "--rate must be 1 to 20000");
            anyhow::ensure!((1..=600).contains(&seconds), "--seconds must be 1 to 600");
            let temp = tempfile::Builder::new().prefix("agora-bench-").tempdir()?;
            let dir = dir.unwrap_or_else(|| temp.path().join("net"));
            let options = agora_testnet::bench::BenchOptions {
                nodes,
                validators,
                base_port,
                commit_pause_ms,
                offers,
                rate,
                seconds,
            };
            let mut progress = |line: String| eprintln!("{line}");
            let report = agora_testnet::bench::run(&std::env::current_exe()?, &dir, &options, &mut progress)?;
            print_json(&report)?;
            Ok(ExitCode::SUCCESS)
        }
        BenchCommand::Scale { nodes, validators, providers, commit_pause_ms, seconds, base_port, dir } => {
            anyhow::ensure!((2..=MAX_SCALE_NODES).contains(&nodes), "--nodes must be 2 to {MAX_SCALE_NODES}");
            anyhow::ensure!((1..=600).contains(&seconds), "--seconds must be 1 to 600");
            let temp = tempfile::Builder::new().prefix("agora-bench-").tempdir()?;
            let dir = dir.unwrap_or_else(|| temp.path().join("net"));
            let options = agora_testnet::scale::ScaleOptions {
                nodes,
                validators,
                providers,
                base_port,
                commit_pause_ms,
                seconds,
            };
            let mut progress = |line: String| eprintln!("{line}");
            let report = agora_testnet::scale::run(&std::env::current_exe()?, &dir, &options, &mut progress)?;
            print_json(&report)?;
            Ok(ExitCode::SUCCESS)
        }
        BenchCommand::Liveness { runs, base_port } => {
            anyhow::ensure!((1..=50).contains(&runs), "--runs must be 1 to 50");
            let temp = tempfile::Builder::new().prefix("agora-bench-").tempdir()?;
            let report = crate::liveness_bench::run(temp.path(), runs, base_port)?;
            print_json(&report)?;
            Ok(ExitCode::SUCCESS)
        }
        BenchCommand::Jobs { samples, runners } => {
            anyhow::ensure!((1..=10_000).contains(&samples), "--samples must be 1 to 10000");
            print_json(&crate::jobs_bench::run(samples, &runners)?)?;
            Ok(ExitCode::SUCCESS)
        }
        BenchCommand::Market { samples, base_port, dir } => {
            anyhow::ensure!((1..=1000).contains(&samples), "--samples must be 1 to 1000");
            let temp = tempfile::Builder::new().prefix("agora-bench-").tempdir()?;
            let dir = dir.unwrap_or_else(|| temp.path().join("net"));
            print_json(&crate::market_bench::run(&dir, samples, base_port)?)?;
            Ok(ExitCode::SUCCESS)
        }
        BenchCommand::Leases { samples, burst, threads, base_port, dir, runner } => {
            anyhow::ensure!((1..=1000).contains(&samples), "--samples must be 1 to 1000");
            anyhow::ensure!((1..=64).contains(&burst), "--burst must be 1 to 64 (the provider's GPUs)");
            anyhow::ensure!((1..=64).contains(&threads), "--threads must be 1 to 64");
            let temp = tempfile::Builder::new().prefix("agora-bench-").tempdir()?;
            let dir = dir.unwrap_or_else(|| temp.path().join("net"));
            let report = crate::lease_bench::run(&dir, samples, burst, threads, base_port, runner)?;
            print_json(&report)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn consensus(validators: usize, latency_ms: u64, txs: usize, blocks: u64) -> anyhow::Result<ExitCode> {
    anyhow::ensure!((1..=100).contains(&validators), "--validators must be 1 to 100");
    anyhow::ensure!(txs <= agora_ledger::consensus::mempool::MAX_MEMPOOL_TXS, "--txs must be at most 10000");
    let mut c = config(validators, latency_ms);
    c.load.clients = txs.div_ceil(TXS_PER_CLIENT).max(1);
    c.load.preload_txs = txs;
    c.load.stop_when_preload_committed = true;
    let started = Instant::now();
    let with_txs = Sim::new(c).run()?;
    let txs_wall = started.elapsed();

    let mut c = config(validators, latency_ms);
    c.target_height = blocks;
    let started = Instant::now();
    let empty = Sim::new(c).run()?;
    let blocks_wall = started.elapsed();

    let per_sec = |n: u64, ms: f64| if ms > 0.0 { n as f64 * 1_000.0 / ms } else { f64::INFINITY };
    print_json(&Report {
        validators,
        latency_ms,
        txs_committed: with_txs.committed_txs,
        txs_wall_ms: txs_wall.as_millis(),
        txs_per_sec_wall: per_sec(with_txs.committed_txs, txs_wall.as_secs_f64() * 1_000.0),
        txs_per_sec_simulated: per_sec(with_txs.committed_txs, with_txs.sim_time_ms as f64),
        blocks_for_txs: with_txs.min_height,
        empty_blocks: empty.min_height,
        empty_blocks_wall_ms: blocks_wall.as_millis(),
        blocks_per_sec_wall: per_sec(empty.min_height, blocks_wall.as_secs_f64() * 1_000.0),
        blocks_per_sec_simulated: per_sec(empty.min_height, empty.sim_time_ms as f64),
    })?;
    Ok(ExitCode::SUCCESS)
}
