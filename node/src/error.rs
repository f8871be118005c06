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
    #[error("{0}")]
    Gpu(String),
    #[error("identity: {0}")]
    Identity(String),
    #[error(transparent)]
    Protocol(#[from] agora_protocol::Error),
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { path, source }
    }
}
