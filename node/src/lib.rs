//! The agora node daemon's library: the key store, configuration, GPU
//! detection, the libp2p network, the daemon's event loop (consensus, block
//! sync, offers), the order book, the HTTP API and metrics.

pub mod api;
pub mod api_guard;
pub mod api_market;
pub mod charts;
pub mod committed;
pub mod config;
pub mod coverage;
pub mod daemon;
pub mod docker;
pub mod edge;
pub mod error;
pub mod explain;
pub mod explorer;
pub mod gossip_txs;
pub mod gpu;
pub mod heartbeat;
pub mod identity;
pub mod keystore;
pub mod liveness;
pub mod market;
pub mod metrics;
pub mod net;
pub mod offers;
pub mod outbox;
pub mod own_txs;
pub mod provider;
pub mod quota;
pub mod repeats;
pub mod run;
pub mod runner;
pub mod state_sync;
pub mod sync;

pub use agora_ledger as ledger;
pub use agora_protocol as protocol;
pub use error::Error;

pub use daemon::HEARTBEAT_INTERVAL;
