//! The agora node daemon's library. Networking, consensus, offers, liveness
//! and jobs arrive with later issues; today it holds the on-disk key store
//! that both the daemon and the CLI use.

pub mod api;
pub mod config;
pub mod daemon;
pub mod error;
pub mod identity;
pub mod keystore;
pub mod metrics;
pub mod net;
pub mod run;

pub use agora_ledger as ledger;
pub use agora_protocol as protocol;
pub use error::Error;
