//! Local agora networks. Today: the single-process demo that runs the whole
//! market path (stake, register, lease, job, settlement) on the real ledger
//! and sled store. Multi-process testnets arrive with the node issue.

pub mod bench;
pub mod error;
pub mod http;
pub mod local;
pub mod sim;

pub use error::Error;
