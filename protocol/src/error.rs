//! The protocol crate's single error type: every way decoding, parsing or
//! verifying untrusted input can fail, each with enough detail for a one-line
//! message.

/// Errors from parsing, decoding and verifying protocol objects.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("invalid address {input:?}: {reason}")]
    Address { input: String, reason: String },
    #[error("invalid amount {input:?}: {reason}")]
    Amount { input: String, reason: String },
    #[error("invalid chain id {input:?}: {reason}")]
    ChainId { input: String, reason: String },
    #[error("invalid hex {what}: {reason}")]
    Hex { what: &'static str, reason: String },
    #[error("{type_name}: {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { type_name: &'static str, len: usize, max: usize },
    #[error("{type_name}: empty input")]
    Empty { type_name: &'static str },
    #[error("{type_name}: unsupported version {found} (expected {expected})")]
    Version { type_name: &'static str, found: u8, expected: u8 },
    #[error("{type_name}: malformed encoding: {reason}")]
    Malformed { type_name: &'static str, reason: String },
    #[error("{type_name}: {extra} trailing bytes after the encoded value")]
    TrailingBytes { type_name: &'static str, extra: usize },
    #[error("{type_name}: encoding failed: {reason}")]
    Encode { type_name: &'static str, reason: String },
    #[error("bad signature on {domain}: {reason}")]
    BadSignature { domain: &'static str, reason: &'static str },
    #[error("invalid secret key: {0}")]
    SecretKey(String),
    #[error("{what} is invalid: {reason}")]
    Invalid { what: &'static str, reason: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
