//! The sandbox crate's single error type: why a job cannot be sandboxed here.

use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "the sandbox runner needs root (it makes namespaces, cgroups and mounts); run the node as root, \
         or use the docker runner"
    )]
    NotRoot,
    #[error(
        "no usable cgroup hierarchy at {} (need v2 with memory and pids, or v1 memory and pids)",
        crate::cgroup::CGROUP_ROOT
    )]
    NoCgroups,
    #[error("processes of job cgroup {0} survived a kill")]
    Survivors(String),
    #[error("cannot build the seccomp filter: {0}")]
    Seccomp(String),
    #[error("{path} would be visible to jobs but holds or is inside {forbidden}; move the node's home elsewhere")]
    ExposesForbidden { path: String, forbidden: String },
    #[error("{0} is not an absolute path")]
    NotAbsolute(String),
    #[error("a lease must have at least one GPU")]
    NoGpu,
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{0:?} contains a NUL byte")]
    Nul(String),
}

pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io { path: path.display().to_string(), source }
}
