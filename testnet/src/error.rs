//! The testnet crate's single error type.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Ledger(#[from] agora_ledger::Error),
    #[error(transparent)]
    Node(#[from] agora_node::Error),
    #[error(transparent)]
    Protocol(#[from] agora_protocol::Error),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{0} is not empty; the demo needs a fresh directory")]
    DirNotEmpty(PathBuf),
    #[error("the demo's {what} transaction was rejected: {reason}")]
    Rejected { what: &'static str, reason: String },
    #[error("job could not start: {0}")]
    JobStart(std::io::Error),
    #[error("the job command is empty")]
    EmptyJob,
}
