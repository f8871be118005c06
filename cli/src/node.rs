//! `agora init` and `agora node run`: set up a node home and run the daemon.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use agora_node::config::{NODE_KEY_NAME, NodeConfig};
use agora_node::keystore;
use clap::{Args, Subcommand};

#[derive(Args)]
pub struct InitArgs {
    /// A human name for this node
    #[arg(long, default_value = "agora-node")]
    moniker: String,
    /// A genesis file to copy into the home
    #[arg(long, value_name = "FILE")]
    genesis: Option<PathBuf>,
}

#[derive(Subcommand)]
pub enum NodeCommand {
    /// Run the node daemon (P2P, consensus, HTTP API) until SIGINT/SIGTERM
    Run(RunArgs),
}

/// Flag overrides for every config.toml field.
#[derive(Args)]
pub struct RunArgs {
    #[arg(long)]
    moniker: Option<String>,
    /// libp2p listen multiaddr
    #[arg(long)]
    listen: Option<String>,
    /// HTTP API address
    #[arg(long)]
    api: Option<String>,
    /// Bootstrap peer multiaddr (repeatable; replaces the configured list)
    #[arg(long)]
    bootstrap: Vec<String>,
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// none | auto | simulated:2xH100-80GB
    #[arg(long)]
    gpus: Option<String>,
    #[arg(long)]
    commit_pause_ms: Option<u64>,
    #[arg(long)]
    timeout_propose_ms: Option<u64>,
    /// Expose fault-injection endpoints (testnets only)
    #[arg(long)]
    testnet_admin: bool,
    /// Provider asking price in AGR per GPU-hour, e.g. 2.5
    #[arg(long)]
    price_per_gpu_hour: Option<String>,
    /// Region advertised in offers
    #[arg(long)]
    region: Option<String>,
    /// Longest lease accepted, in seconds
    #[arg(long)]
    max_lease_secs: Option<u64>,
    /// Run plain jobs as processes of the node's own user even with real GPUs
    /// (a job could then read the node's keys: only for hosts you fully trust the jobs of)
    #[arg(long)]
    unsafe_process_runner: bool,
    /// Log level or filter (overrides RUST_LOG)
    #[arg(long)]
    log_level: Option<String>,
    /// Log as JSON lines
    #[arg(long)]
    log_json: bool,
    /// Join from a certified state snapshot fetched from the bootstrap peers
    /// instead of replaying every block from genesis (only while the store
    /// holds no block; a store with blocks is kept)
    #[arg(long)]
    state_sync: bool,
    /// With --state-sync: take only the snapshot of this block (its hash, from a
    /// source you trust), checked against the validators that decided it rather
    /// than the genesis' (for a chain whose validator set has moved on)
    #[arg(long, value_name = "BLOCK_HASH", requires = "state_sync")]
    trust_hash: Option<String>,
    /// Take a state snapshot for joining peers every N blocks (0: never)
    #[arg(long)]
    snapshot_interval_blocks: Option<u64>,
    /// Keep every block since genesis (otherwise the newest are kept, see --block-retention-blocks)
    #[arg(long)]
    archive: bool,
    /// Blocks kept behind the tip when not an archive node (at least 100)
    #[arg(long)]
    block_retention_blocks: Option<u64>,
    /// Worker threads of the node's async runtime (1 to 64; default 2)
    #[arg(long)]
    runtime_threads: Option<usize>,
    /// Peers each gossip topic's mesh keeps (3 to 12; default 6)
    #[arg(long)]
    gossip_mesh: Option<usize>,
}

pub fn init(home: &Path, args: InitArgs) -> anyhow::Result<ExitCode> {
    if NodeConfig::path(home).exists() {
        anyhow::bail!(
            "{} already exists; refusing to overwrite a node's configuration",
            NodeConfig::path(home).display()
        );
    }
    std::fs::create_dir_all(home)?;
    let key = keystore::create(home, NODE_KEY_NAME)?;
    NodeConfig::new(&args.moniker).save(home)?;
    if let Some(g) = args.genesis {
        let genesis: agora_ledger::Genesis = serde_json::from_str(&std::fs::read_to_string(&g)?)
            .map_err(|e| anyhow::anyhow!("{}: not a genesis file: {e}", g.display()))?;
        agora_node::config::save_genesis(home, &genesis)?;
    }
    println!("initialised node {:?} in {}", args.moniker, home.display());
    println!("address: {}", key.address());
    println!("peer id: {}", agora_node::identity::peer_id(&key.keypair)?);
    Ok(ExitCode::SUCCESS)
}

pub fn run(home: &Path, cmd: NodeCommand) -> anyhow::Result<ExitCode> {
    let NodeCommand::Run(args) = cmd;
    init_logging(args.log_level.as_deref(), args.log_json);
    let mut config = NodeConfig::load(home)?;
    if let Some(v) = args.moniker {
        config.moniker = v;
    }
    if let Some(v) = args.listen {
        config.listen = v;
    }
    if let Some(v) = args.api {
        config.api = v;
    }
    if !args.bootstrap.is_empty() {
        config.bootstrap = args.bootstrap;
    }
    if let Some(v) = args.data_dir {
        config.data_dir = v;
    }
    if let Some(v) = args.gpus {
        config.gpus = v;
    }
    if let Some(v) = args.commit_pause_ms {
        config.commit_pause_ms = v;
    }
    if let Some(v) = args.timeout_propose_ms {
        config.timeout_propose_ms = v;
    }
    config.testnet_admin |= args.testnet_admin;
    if let Some(v) = args.price_per_gpu_hour {
        config.price_per_gpu_hour = v;
    }
    if let Some(v) = args.region {
        config.region = v;
    }
    if let Some(v) = args.max_lease_secs {
        config.max_lease_secs = v;
    }
    if let Some(v) = args.snapshot_interval_blocks {
        config.snapshot_interval_blocks = v;
    }
    config.archive |= args.archive;
    if let Some(v) = args.block_retention_blocks {
        config.block_retention_blocks = v;
    }
    if let Some(v) = args.runtime_threads {
        config.net.runtime_threads = v;
    }
    if let Some(v) = args.gossip_mesh {
        config.net.gossip_mesh = v;
    }
    config.jobs.unsafe_process_runner = args.unsafe_process_runner;
    let trust_hash = match args.trust_hash {
        Some(h) => Some(
            agora_protocol::Hash::from_hex("--trust-hash", &h)
                .map_err(|e| anyhow::anyhow!("{e} (a block hash: 64 hex digits)"))?,
        ),
        None => None,
    };
    let state_sync = args.state_sync.then_some(agora_node::run::StateSyncOptions { trust_hash });
    agora_node::run::run(home, config, state_sync)?;
    Ok(ExitCode::SUCCESS)
}

fn init_logging(level: Option<&str>, json: bool) {
    use tracing_subscriber::EnvFilter;
    let filter = match level {
        Some(l) => EnvFilter::new(l),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| {
            EnvFilter::new("info,libp2p=warn,arc_malachitebft_core_consensus=warn,arc_malachitebft_core_driver=warn")
        }),
    };
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
