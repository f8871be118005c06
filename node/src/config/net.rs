//! `[net]`: how hard the node works its machine and its peers — the async
//! runtime's worker threads and the gossip mesh's degree. The defaults suit
//! one node on its own host; a machine running many nodes (a large local
//! testnet) gives each node one worker and a smaller mesh, so the nodes
//! spend the cores on blocks rather than on waking threads and relaying
//! each message to six peers.

use serde::{Deserialize, Serialize};

/// Default worker threads of the node's async runtime.
pub const DEFAULT_RUNTIME_THREADS: usize = 2;
/// Most worker threads a node may ask for.
pub const MAX_RUNTIME_THREADS: usize = 64;
/// Default gossip mesh degree (gossipsub's D; libp2p's default).
pub const DEFAULT_GOSSIP_MESH: usize = 6;
/// Smallest gossip mesh degree: below it one lost peer partitions a topic.
pub const MIN_GOSSIP_MESH: usize = 3;
/// Largest gossip mesh degree.
pub const MAX_GOSSIP_MESH: usize = 12;

fn default_runtime_threads() -> usize {
    DEFAULT_RUNTIME_THREADS
}

fn default_gossip_mesh() -> usize {
    DEFAULT_GOSSIP_MESH
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetConfig {
    /// Worker threads of the async runtime (1 to 64).
    #[serde(default = "default_runtime_threads")]
    pub runtime_threads: usize,
    /// Peers each gossip topic's mesh keeps (gossipsub's D, 3 to 12): each
    /// message is pushed to about this many peers, and received from as many.
    #[serde(default = "default_gossip_mesh")]
    pub gossip_mesh: usize,
}

impl Default for NetConfig {
    fn default() -> NetConfig {
        NetConfig { runtime_threads: DEFAULT_RUNTIME_THREADS, gossip_mesh: DEFAULT_GOSSIP_MESH }
    }
}

impl NetConfig {
    /// Refuses values outside their ranges (one line, for the config error).
    pub fn check(&self) -> Result<(), String> {
        if !(1..=MAX_RUNTIME_THREADS).contains(&self.runtime_threads) {
            return Err(format!("runtime_threads must be 1 to {MAX_RUNTIME_THREADS}"));
        }
        if !(MIN_GOSSIP_MESH..=MAX_GOSSIP_MESH).contains(&self.gossip_mesh) {
            return Err(format!("gossip_mesh must be {MIN_GOSSIP_MESH} to {MAX_GOSSIP_MESH}"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_range_values_are_refused() {
        assert!(NetConfig::default().check().is_ok());
        for bad in [
            NetConfig { runtime_threads: 0, ..NetConfig::default() },
            NetConfig { runtime_threads: MAX_RUNTIME_THREADS + 1, ..NetConfig::default() },
            NetConfig { gossip_mesh: MIN_GOSSIP_MESH - 1, ..NetConfig::default() },
            NetConfig { gossip_mesh: MAX_GOSSIP_MESH + 1, ..NetConfig::default() },
        ] {
            assert!(bad.check().is_err(), "{bad:?}");
        }
    }
}
