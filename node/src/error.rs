//! The node crate's single error type.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("key {name:?} already exists at {path}; refusing to overwrite it")]
    KeyExists { name: String, path: PathBuf },
    #[error("no key named {name:?} in {dir} (create one with `agora keys new --name {name}`)")]
    KeyNotFound { name: String, dir: PathBuf },
    #[error("invalid key name {0:?}: use 1 to 64 letters, digits, '-' or '_'")]
    KeyName(String),
    #[error("key file {path} is readable by other users (mode {mode:o}); run `chmod 600 {path}`")]
    KeyPermissions { path: PathBuf, mode: u32 },
    #[error("key file {path} is malformed: {reason}")]
    KeyFile { path: PathBuf, reason: String },
    #[error("{path}: {reason}")]
    Config { path: PathBuf, reason: String },
    #[error(transparent)]
    Ledger(#[from] agora_ledger::Error),
    #[error("network: {0}")]
    Network(String),
    #[error("state sync failed: {0}")]
    StateSync(String),
    #[error("{0}")]
    Gpu(String),
    #[error("identity: {0}")]
    Identity(String),
    #[error(transparent)]
    Protocol(#[from] agora_protocol::Error),
    /// The node cannot go on safely (its store or consensus WAL failed).
    #[error("{0}")]
    Halt(String),
}

impl Error {
    /// Whether the node must stop: its storage failed, its state broke an
    /// invariant, or a file it depends on failed. Errors caused by a message,
    /// request or transaction are logged and the node goes on.
    pub fn is_fatal(&self) -> bool {
        match self {
            Error::Ledger(e) => e.is_fatal(),
            Error::Network(_) | Error::Protocol(_) | Error::Identity(_) => false,
            _ => true,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { path, source }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_storage_and_invariant_failures_stop_the_node() {
        let bad_tx = Error::Ledger(agora_ledger::Error::BlockBytes { size: 1, used: 0, budget: 0 });
        assert!(!bad_tx.is_fatal());
        assert!(!Error::Network("dial failed".into()).is_fatal());
        let encode = Error::Protocol(agora_protocol::Error::Invalid { what: "x", reason: "too big".into() });
        assert!(!encode.is_fatal());
        assert!(
            Error::Ledger(agora_ledger::Error::Corrupt { height: agora_protocol::Height(3), reason: "x".into() })
                .is_fatal()
        );
        assert!(Error::Ledger(agora_ledger::Error::Invariant("supply".into())).is_fatal());
    }
}
