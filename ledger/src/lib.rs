//! The agora ledger: a deterministic state machine (accounts, stake, providers,
//! lease escrow, slashing) with no I/O and no clocks, and the modules that
//! touch disk: `store`, which commits blocks to sled atomically, and
//! `durable`, the fdatasync'd files under the consensus WAL and the
//! double-sign guard.

mod accounts;
pub mod apply;
pub mod auction;
pub mod capacity;
pub mod clearing;
pub mod consensus;
pub mod durable;
pub mod error;
pub mod events;
pub mod genesis;
mod journal;
mod lease;
pub mod light;
mod orders;
pub mod params;
mod provider;
mod slashing;
pub mod sled_nodes;
pub mod snapshot;
pub mod state;
pub mod store;
pub mod testkit;
pub mod tree;
pub mod validators;

pub use apply::{BLOCK_TX_BYTES_BUDGET, BlockBuilder, BlockOutcome, SigCheck, apply_block, apply_tx, build_block};
pub use error::Error;
pub use events::{Event, SettleReason, SlashReason};
pub use genesis::{Genesis, GenesisAccount};
pub use journal::Mark;
pub use params::{AuctionPhase, MarketParams, Params};
pub use state::{Account, Lease, LeaseStatus, Order, Provider, ProviderStatus, Side, State, Validator};
pub use store::Store;
