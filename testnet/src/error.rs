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
    #[error("{0} is not empty; use a fresh directory")]
    DirNotEmpty(PathBuf),
    #[error("the demo's {what} transaction was rejected: {reason}")]
    Rejected { what: &'static str, reason: String },
    #[error("job could not start: {0}")]
    JobStart(std::io::Error),
    #[error("the job command is empty")]
    EmptyJob,
    #[error("no testnet in {0} (start one with `agora testnet up --dir DIR`)")]
    NoTestnet(PathBuf),
    #[error("no node {0}: the testnet has {1} nodes")]
    NoSuchNode(usize, usize),
    #[error("{0}")]
    BadArgs(String),
    #[error("testnet not ready: {0}")]
    NotReady(String),
}
