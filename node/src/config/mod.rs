//! The node's configuration: `HOME/config.toml`, written by `agora init`, with
//! every field overridable by a flag of `agora node run`. The genesis lives
//! beside it in `HOME/genesis.json`; the node key in `HOME/keys/node.json`.
//! How jobs run is its own table, `[jobs]` ([`JobsConfig`]); runtime threads
//! and the gossip mesh another, `[net]` ([`NetConfig`]).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::Error;

mod jobs;
mod net;
pub use jobs::{ImagePolicy, JobsConfig, PlainJobs, Runner, choose_isolation};
pub use net::NetConfig;

/// The key name of a node's own key in its home.
pub const NODE_KEY_NAME: &str = "node";
/// Default P2P listen address.
pub const DEFAULT_LISTEN: &str = "/ip4/127.0.0.1/tcp/26656";
/// Default wait for a proposal (Tendermint's timeout_propose).
pub const DEFAULT_PROPOSE_TIMEOUT_MS: u64 = 3_000;

fn default_propose_timeout() -> u64 {
    DEFAULT_PROPOSE_TIMEOUT_MS
}

/// Default asking price, in AGR per GPU-hour.
pub const DEFAULT_PRICE_PER_GPU_HOUR: &str = "2";
/// Default region a provider advertises.
pub const DEFAULT_REGION: &str = "local";
/// Default longest lease a provider accepts (a day).
pub const DEFAULT_MAX_LEASE_SECS: u64 = 24 * 3600;

fn default_price() -> String {
    DEFAULT_PRICE_PER_GPU_HOUR.into()
}

fn default_region() -> String {
    DEFAULT_REGION.into()
}

fn default_max_lease_secs() -> u64 {
    DEFAULT_MAX_LEASE_SECS
}

/// Default HTTP API address (loopback only: the API can submit transactions).
pub const DEFAULT_API: &str = "127.0.0.1:7600";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// A human name for this node, shown in status and logs.
    pub moniker: String,
    /// libp2p listen address (multiaddr).
    pub listen: String,
    /// HTTP API listen address.
    pub api: String,
    /// Peers to dial at start, as multiaddrs ending in /p2p/PEER_ID.
    #[serde(default)]
    pub bootstrap: Vec<String>,
    /// Where the ledger store lives; relative paths are under the home.
    pub data_dir: PathBuf,
    /// `none`, `auto` (NVML, then nvidia-smi) or `simulated:2xH100-80GB`.
    pub gpus: String,
    /// Pause after each commit before the next height (block-time floor).
    pub commit_pause_ms: u64,
    /// How long to wait for a round's proposal before prevoting nil; later
    /// rounds wait longer. Prevote and precommit waits are a third of it.
    #[serde(default = "default_propose_timeout")]
    pub timeout_propose_ms: u64,
    /// Exposes fault-injection endpoints (testnets only).
    #[serde(default)]
    pub testnet_admin: bool,
    /// Provider terms (used only when the node has GPUs): asking price in
    /// AGR per GPU-hour, e.g. "2.5".
    #[serde(default = "default_price")]
    pub price_per_gpu_hour: String,
    /// The region advertised in offers and registered on the ledger.
    #[serde(default = "default_region")]
    pub region: String,
    /// The longest lease this provider accepts, in seconds.
    #[serde(default = "default_max_lease_secs")]
    pub max_lease_secs: u64,
    /// How the provider runs jobs: runners, limits, logs (`[jobs]`).
    #[serde(default)]
    pub jobs: JobsConfig,
    /// Offer idle GPUs in every auction at a floor price (`[auto_ask]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_ask: Option<AutoAskConfig>,
    /// Take a state snapshot for peers joining by state sync every this
    /// many blocks (0: never; the node still joins by state sync itself).
    #[serde(default = "default_snapshot_interval")]
    pub snapshot_interval_blocks: u64,
    /// Keep every block since genesis (an archive node: explorers, peers
    /// syncing from genesis). Otherwise only the newest
    /// `block_retention_blocks` are kept.
    #[serde(default)]
    pub archive: bool,
    /// Blocks kept behind the tip when not an archive node (at least 100,
    /// and at least two snapshot intervals, so the snapshots served have
    /// their blocks).
    #[serde(default = "default_block_retention")]
    pub block_retention_blocks: u64,
    /// Runtime threads and the gossip mesh (`[net]`).
    #[serde(default)]
    pub net: NetConfig,
}

/// Blocks a pruning node keeps by default: about three days at a block every 2.5 s.
pub const DEFAULT_BLOCK_RETENTION_BLOCKS: u64 = 100_000;

fn default_block_retention() -> u64 {
    DEFAULT_BLOCK_RETENTION_BLOCKS
}

/// Blocks between two state snapshots by default: about 40 minutes at a
/// block every 2.5 s, a few minutes on a local testnet.
pub const DEFAULT_SNAPSHOT_INTERVAL_BLOCKS: u64 = 1_000;

fn default_snapshot_interval() -> u64 {
    DEFAULT_SNAPSHOT_INTERVAL_BLOCKS
}

/// The automatic ask policy: each auction, every class of this provider's
/// GPUs with some free is asked for at `min_price` for up to `hours`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoAskConfig {
    /// The floor price per GPU-hour, in AGR, e.g. "1.8".
    pub min_price: String,
    /// The longest contract offered, in hours (1 to 720).
    pub hours: u32,
}

impl NodeConfig {
    pub fn new(moniker: &str) -> NodeConfig {
        NodeConfig {
            moniker: moniker.to_string(),
            listen: DEFAULT_LISTEN.to_string(),
            api: DEFAULT_API.to_string(),
            bootstrap: Vec::new(),
            data_dir: PathBuf::from("data"),
            gpus: "auto".to_string(),
            commit_pause_ms: 500,
            timeout_propose_ms: DEFAULT_PROPOSE_TIMEOUT_MS,
            testnet_admin: false,
            price_per_gpu_hour: default_price(),
            region: default_region(),
            max_lease_secs: DEFAULT_MAX_LEASE_SECS,
            jobs: JobsConfig::default(),
            auto_ask: None,
            snapshot_interval_blocks: DEFAULT_SNAPSHOT_INTERVAL_BLOCKS,
            archive: false,
            block_retention_blocks: DEFAULT_BLOCK_RETENTION_BLOCKS,
            net: NetConfig::default(),
        }
    }

    /// Blocks the store keeps behind the tip (None: all, archive).
    pub fn block_retention(&self) -> Option<u64> {
        (!self.archive).then(|| self.block_retention_blocks.max(2 * self.snapshot_interval_blocks))
    }

    pub fn path(home: &Path) -> PathBuf {
        home.join("config.toml")
    }

    pub fn load(home: &Path) -> Result<NodeConfig, Error> {
        let path = NodeConfig::path(home);
        let text = std::fs::read_to_string(&path).map_err(Error::io(&path))?;
        toml::from_str(&text).map_err(|e| Error::Config { path, reason: e.message().to_string() })
    }

    pub fn save(&self, home: &Path) -> Result<(), Error> {
        let path = NodeConfig::path(home);
        let text = toml::to_string(self).map_err(|e| Error::Config { path: path.clone(), reason: e.to_string() })?;
        std::fs::write(&path, text).map_err(Error::io(&path))
    }

    /// Consensus round timeouts derived from `timeout_propose_ms`.
    pub fn timeouts(&self) -> agora_ledger::consensus::LinearTimeouts {
        use std::time::Duration;
        let propose = Duration::from_millis(self.timeout_propose_ms.max(50));
        let vote = propose / 3;
        agora_ledger::consensus::LinearTimeouts {
            propose,
            propose_delta: propose / 6,
            prevote: vote,
            prevote_delta: vote / 2,
            precommit: vote,
            precommit_delta: vote / 2,
            rebroadcast: propose + 2 * vote,
            max_timeout: Duration::from_secs(60),
        }
    }

    /// The asking price, parsed.
    pub fn price(&self, home: &Path) -> Result<agora_protocol::Amount, Error> {
        self.price_per_gpu_hour.parse().map_err(|e| Error::Config {
            path: NodeConfig::path(home),
            reason: format!("price_per_gpu_hour {:?}: {e}", self.price_per_gpu_hour),
        })
    }

    /// Checks the region and longest lease against the protocol's limits,
    /// so a provider fails at start rather than with every offer refused.
    pub fn check_provider_terms(&self, home: &Path) -> Result<(), Error> {
        let bad = |reason: String| Error::Config { path: NodeConfig::path(home), reason };
        agora_protocol::market::validate_region(&self.region).map_err(|e| bad(format!("region: {e}")))?;
        let max = agora_protocol::limits::MAX_LEASE_DURATION_SECS;
        if self.max_lease_secs == 0 || self.max_lease_secs > max {
            return Err(bad(format!("max_lease_secs must be 1 to {max}")));
        }
        self.jobs.check().map_err(|e| bad(format!("[jobs] {e}")))?;
        self.ask_policy(home)?;
        self.price(home).map(|_| ())
    }

    /// The automatic ask policy, parsed and checked, if configured.
    pub fn ask_policy(&self, home: &Path) -> Result<Option<crate::provider::AskPolicy>, Error> {
        let Some(a) = &self.auto_ask else { return Ok(None) };
        let bad =
            |reason: String| Error::Config { path: NodeConfig::path(home), reason: format!("[auto_ask] {reason}") };
        let price: agora_protocol::Amount = a.min_price.parse().map_err(|e| bad(format!("min_price: {e}")))?;
        if price.is_zero() {
            return Err(bad("min_price must be positive".into()));
        }
        if a.hours == 0 || a.hours > agora_protocol::limits::MAX_CONTRACT_HOURS {
            return Err(bad(format!("hours must be 1 to {}", agora_protocol::limits::MAX_CONTRACT_HOURS)));
        }
        Ok(Some(crate::provider::AskPolicy::new(price, a.hours)))
    }

    /// Where job working directories and logs live.
    pub fn jobs_dir(&self, home: &Path) -> PathBuf {
        home.join(&self.data_dir).join("jobs")
    }

    /// The fdatasync'd reservation of heartbeat sequence numbers.
    pub fn heartbeat_seq_path(&self, home: &Path) -> PathBuf {
        home.join(&self.data_dir).join("heartbeat.seq")
    }

    /// The ledger store directory.
    /// The consensus write-ahead log (an fdatasync'd append-only file).
    pub fn wal_path(&self, home: &Path) -> PathBuf {
        home.join(&self.data_dir).join("consensus.wal")
    }

    /// The double-sign guard's last signed step.
    pub fn signer_state_path(&self, home: &Path) -> PathBuf {
        home.join(&self.data_dir).join("signer.state")
    }

    pub fn ledger_dir(&self, home: &Path) -> PathBuf {
        home.join(&self.data_dir).join("ledger")
    }
}

/// `HOME/genesis.json`.
pub fn genesis_path(home: &Path) -> PathBuf {
    home.join("genesis.json")
}

pub fn load_genesis(home: &Path) -> Result<agora_ledger::Genesis, Error> {
    let path = genesis_path(home);
    let text = std::fs::read_to_string(&path).map_err(Error::io(&path))?;
    serde_json::from_str(&text).map_err(|e| Error::Config { path, reason: e.to_string() })
}

pub fn save_genesis(home: &Path, genesis: &agora_ledger::Genesis) -> Result<(), Error> {
    let path = genesis_path(home);
    let text = serde_json::to_string_pretty(genesis)
        .map_err(|e| Error::Config { path: path.clone(), reason: e.to_string() })?;
    std::fs::write(&path, text).map_err(Error::io(&path))
}
