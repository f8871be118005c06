//! The agora node daemon. Networking, consensus, offers, liveness and jobs arrive with later issues; for now it re-exports the libraries the daemon will drive.

pub use agora_ledger as ledger;
pub use agora_protocol as protocol;
