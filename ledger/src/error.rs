//! The ledger crate's single error type. A transaction or block that fails
//! with any of these changed nothing; store errors name the height at fault.

use agora_protocol::{Amount, ChainId, Hash, Height, LeaseId, TimestampMs};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    // --- transaction rules ---
    #[error("bad signature: {0}")]
    BadSignature(String),
    #[error(transparent)]
    Protocol(#[from] agora_protocol::Error),
    #[error("wrong nonce: expected {expected}, got {found}")]
    WrongNonce { expected: u64, found: u64 },
    #[error("fee {found} is below the chain's minimum {min}")]
    FeeTooLow { min: Amount, found: Amount },
    #[error("insufficient funds: balance {have} < {need}")]
    InsufficientFunds { need: Amount, have: Amount },
    #[error("insufficient stake: stake {have} < {need}")]
    InsufficientStake { need: Amount, have: Amount },
    #[error("arithmetic overflow in {0}")]
    Overflow(&'static str),
    #[error("unknown lease {0}")]
    UnknownLease(LeaseId),
    #[error("lease {0} already exists")]
    LeaseExists(LeaseId),
    #[error("lease {0} is already settled")]
    LeaseNotOpen(LeaseId),
    #[error("sender is not a party to lease {0} allowed to do this")]
    NotLeaseParty(LeaseId),
    #[error("lease terms do not match: {0}")]
    LeaseTerms(String),
    #[error("lease request expired at {expired_at_ms:?} (block time {now_ms:?})")]
    RequestExpired { expired_at_ms: TimestampMs, now_ms: TimestampMs },
    #[error("no open order {0}")]
    UnknownOrder(u64),
    #[error("order {0} belongs to another account")]
    NotOrderOwner(u64),
    #[error("order refused: {0}")]
    Order(String),
    #[error("not enough free GPUs: {0}")]
    NoCapacity(String),
    #[error("not a registered provider")]
    NotProvider,
    #[error("provider is not active (jailed, tombstoned or under-staked)")]
    ProviderNotActive,
    #[error("provider is permanently jailed")]
    Tombstoned,
    #[error("provider is not jailed")]
    NotJailed,
    #[error("operator: {0}")]
    Operator(String),
    #[error("provider is jailed until height {until}")]
    StillJailed { until: Height },
    #[error("attestation signer is not a validator")]
    NotValidator,
    #[error("evidence is invalid: {0}")]
    BadEvidence(String),
    #[error("attestations hold {have} of {total} voting power; more than 2/3 is needed")]
    InsufficientPower { have: u64, total: u64 },
    #[error("this misbehaviour was already slashed")]
    AlreadySlashed,

    // --- block rules ---
    #[error("block is for chain {found}, this is {expected}")]
    WrongChain { expected: ChainId, found: ChainId },
    #[error("block height {found}, expected {expected}")]
    WrongHeight { expected: Height, found: Height },
    #[error("block parent {found} is not the last block {expected}")]
    WrongParent { expected: Hash, found: Hash },
    #[error("block time {found:?} is not after the previous block time {previous:?}")]
    TimeNotIncreasing { previous: TimestampMs, found: TimestampMs },
    #[error("block has {count} transactions, limit {max}")]
    TooManyTxs { count: usize, max: u64 },
    #[error("block proposer is not a validator")]
    ProposerNotValidator,
    #[error("transaction root mismatch")]
    TxRootMismatch,
    #[error("the block's last commit is not the certificate its header commits to")]
    LastCommitMismatch,
    #[error("state root mismatch: header {header}, computed {computed}")]
    StateRootMismatch { header: Hash, computed: Hash },
    #[error("transaction {index} ({kind}): {source}")]
    InBlock { index: usize, kind: &'static str, source: Box<Error> },

    // --- consensus ---
    #[error("block time is too far ahead of this node's clock")]
    BlockTooFarAhead,
    #[error("bad certificate: {0}")]
    BadCertificate(String),

    // --- genesis and invariants ---
    #[error("invalid genesis: {0}")]
    Genesis(String),
    #[error("invariant violated: {0}")]
    Invariant(String),

    #[error("the block has no room for {size} more bytes ({used} of {budget} used)")]
    BlockBytes { size: usize, used: usize, budget: usize },

    // --- storage ---
    #[error("storage: {0}")]
    Storage(#[from] sled::Error),
    #[error("durable file: {0}")]
    Durable(#[from] crate::durable::DurableError),
    #[error("{0}")]
    SignRefused(String),
    #[error("store is corrupt at height {height}: {reason}")]
    Corrupt { height: Height, reason: String },
    #[error("no ledger store at {0}")]
    NoStore(String),
    #[error("state tree: {0}")]
    Tree(String),
    #[error("not proven: {0}")]
    BadProof(String),
    #[error(
        "not proven: validators you trust hold only {vouching} of {total} power among the signers (more than 1/3 \
         needed): the validator set has changed since your trusted genesis or checkpoint"
    )]
    TooFewTrustedSigners { vouching: u64, total: u64 },
    #[error("store belongs to another genesis (stored {stored}, given {given})")]
    GenesisMismatch { stored: Hash, given: Hash },
}

impl Error {
    /// Whether this error means the node cannot go on safely: its storage
    /// failed or its state broke an invariant. Anything else was caused by one
    /// message, request or transaction, and must not stop the node.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            Error::Storage(_)
                | Error::Durable(_)
                | Error::Corrupt { .. }
                | Error::NoStore(_)
                | Error::GenesisMismatch { .. }
                | Error::Invariant(_)
                | Error::Tree(_)
        )
    }
}

impl From<sled::transaction::TransactionError<Error>> for Error {
    fn from(e: sled::transaction::TransactionError<Error>) -> Self {
        match e {
            sled::transaction::TransactionError::Abort(e) => e,
            sled::transaction::TransactionError::Storage(e) => Error::Storage(e),
        }
    }
}
