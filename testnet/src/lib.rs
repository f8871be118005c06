//! Local agora networks: testnets of real node processes on loopback with
//! fault injection (`local`), the testnet benchmarks (`bench`, and `scale`
//! for many nodes at idle), the
//! deterministic simulation of consensus, ledger and liveness (`sim`), and a
//! small HTTP client for the node API (`http`).

pub mod bench;
pub mod error;
pub mod http;
pub mod local;
pub mod scale;
pub mod sim;

pub use error::Error;
