//! agora's shared vocabulary: the types that cross the wire or enter the ledger,
//! addresses and keys, domain-separated signatures and the one versioned codec.
//! Pure data and pure functions only: nothing here does I/O.

#[macro_use]
mod serde_util;

pub mod address;
pub mod amount;
pub mod block;
pub mod class;
pub mod codec;
pub mod consensus;
pub mod error;
pub mod ids;
pub mod job;
pub mod keys;
pub mod limits;
pub mod liveness;
pub mod market;
pub mod rng;
pub mod sign;
pub mod snapshot;
pub mod sync;
pub mod tx;
pub mod zip215;

pub use address::Address;
pub use amount::Amount;
pub use block::{Block, CommitCertificate, CommitSig, Header};
pub use class::GpuClass;
pub use codec::{Wire, decode, encode};
pub use consensus::{ConsensusMessage, ConsensusRepeat, Proposal, ProposalBlock, Vote, VoteKind};
pub use error::Error;
pub use ids::{ChainId, Hash, Height, LeaseId, TimestampMs};
pub use keys::{Keypair, Signature};
pub use liveness::{DowntimeAttestation, DowntimeEvidence, EquivocationEvidence, Heartbeat};
pub use market::{GpuSpec, JobResources, LeaseAccept, LeaseRequest, Offer};
pub use sign::{Domain, Signable, Signed};
pub use sync::DecidedBlock;
pub use tx::{SignedTx, Transaction, TxBundle, TxKind};
