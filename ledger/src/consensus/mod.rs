//! Consensus: Tendermint as implemented by Malachite's sans-io core, driven
//! by `Engine`, a sans-io state machine of our own. Inputs (peer messages,
//! timer expiries, transactions) go in; actions (messages to broadcast, timers,
//! committed blocks with their certificates, evidence) come out. Malachite's
//! types stay inside this module.

pub mod certificate;
pub mod context;
pub mod engine;
pub mod mempool;
pub mod signer;
pub mod wal;

pub use engine::{
    Action, CheckedDecided, Decided, Engine, EngineConfig, Input, Recovered, Relay, Timer, VoteEquivocation,
};
pub use malachite_core_types::LinearTimeouts;
pub use signer::{LastSigned, SignGuard, SignerFile};
pub use wal::{WalEntry, WalFile};
