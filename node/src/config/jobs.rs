//! `[jobs]` in config.toml: how a provider runs buyers' jobs — which runners,
//! the per-GPU CPU, memory and scratch each job gets (and offers promise),
//! whether jobs may reach the network, log sizes and how long job files are
//! kept — and the start-up decision of which isolation plain jobs get.

use std::path::PathBuf;

use agora_protocol::JobResources;
use serde::{Deserialize, Serialize};

/// Default scratch space per GPU (memory-backed, counted in the job's memory).
pub const DEFAULT_SCRATCH_MIB_PER_GPU: u32 = 1024;
/// Share of the host's memory given to jobs when not configured (the rest is the node's and the OS's).
pub const AUTO_MEMORY_SHARE_PERCENT: u64 = 75;
/// Default time a finished job's log and files stay on disk.
pub const DEFAULT_RETENTION_SECS: u64 = 24 * 3600;
/// Largest in-memory log ring per job.
pub const MAX_LOG_RING_BYTES: usize = 64 * 1024 * 1024;

/// A way of running jobs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Runner {
    /// Namespaces, own root, cgroup, unprivileged uid, seccomp (plain jobs). Needs root.
    Sandbox,
    /// A hardened container (jobs with `--image`). Needs a Docker Engine.
    Docker,
    /// A child process as the node's own user: testnets with simulated GPUs only.
    Process,
}

fn default_runners() -> Vec<Runner> {
    vec![Runner::Sandbox]
}
fn default_scratch() -> u32 {
    DEFAULT_SCRATCH_MIB_PER_GPU
}
fn default_log_bytes() -> usize {
    crate::runner::DEFAULT_LOG_RING_BYTES
}
fn default_log_file_bytes() -> u64 {
    crate::runner::DEFAULT_LOG_FILE_BYTES
}
fn default_retention() -> u64 {
    DEFAULT_RETENTION_SECS
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobsConfig {
    /// How jobs may run: `sandbox` (plain jobs), `docker` (jobs with an image), `process` (testnets only).
    #[serde(default = "default_runners")]
    pub runners: Vec<Runner>,
    /// CPU per leased GPU in millicores; 0: the host's cores shared out over its GPUs.
    #[serde(default)]
    pub cpu_millicores_per_gpu: u32,
    /// Memory per leased GPU in MiB; 0: three quarters of the host's memory shared out over its GPUs.
    #[serde(default)]
    pub memory_mib_per_gpu: u32,
    /// Scratch space per leased GPU in MiB (memory-backed).
    #[serde(default = "default_scratch")]
    pub scratch_mib_per_gpu: u32,
    /// Whether jobs that ask for outbound network get it (docker runner only).
    #[serde(default)]
    pub allow_egress: bool,
    /// Extra host paths jobs see read-only (e.g. `/opt/conda`); never the node's home.
    #[serde(default)]
    pub extra_paths: Vec<PathBuf>,
    /// Bytes of each job's output kept in memory for its buyer.
    #[serde(default = "default_log_bytes")]
    pub log_bytes: usize,
    /// Size of a job's log file before it is rotated (one old file is kept).
    #[serde(default = "default_log_file_bytes")]
    pub log_file_bytes: u64,
    /// How long a finished job's files stay on disk, in seconds.
    #[serde(default = "default_retention")]
    pub retention_secs: u64,
    /// Images jobs may use, by repository (`pytorch/pytorch`, `ghcr.io/org/app`); empty: any.
    #[serde(default)]
    pub allowed_images: Vec<String>,
    /// Accept only images pinned by digest (`name@sha256:…`), so a tag cannot be moved under a lease.
    #[serde(default)]
    pub require_image_digest: bool,
    /// Run plain jobs as processes even on a host with real GPUs (`--unsafe-process-runner`; never saved).
    #[serde(skip)]
    pub unsafe_process_runner: bool,
}

impl Default for JobsConfig {
    fn default() -> JobsConfig {
        JobsConfig {
            runners: default_runners(),
            cpu_millicores_per_gpu: 0,
            memory_mib_per_gpu: 0,
            scratch_mib_per_gpu: DEFAULT_SCRATCH_MIB_PER_GPU,
            allow_egress: false,
            extra_paths: Vec::new(),
            log_bytes: default_log_bytes(),
            log_file_bytes: default_log_file_bytes(),
            retention_secs: DEFAULT_RETENTION_SECS,
            allowed_images: Vec::new(),
            require_image_digest: false,
            unsafe_process_runner: false,
        }
    }
}

impl JobsConfig {
    /// Checks the values a provider would otherwise only see fail per job.
    pub fn check(&self) -> Result<(), String> {
        if self.log_bytes == 0 || self.log_bytes > MAX_LOG_RING_BYTES {
            return Err("log_bytes must be 1 byte to 64 MiB".into());
        }
        if self.log_file_bytes == 0 {
            return Err("log_file_bytes must be at least 1".into());
        }
        if self.runners.is_empty() {
            return Err("runners must name at least one of sandbox, docker, process".into());
        }
        if let Some(bad) = self.allowed_images.iter().find(|i| agora_protocol::job::validate_image_ref(i).is_err()) {
            return Err(format!("allowed_images: {bad:?} is not an image repository"));
        }
        if let Some(p) = self.extra_paths.iter().find(|p| !p.is_absolute()) {
            return Err(format!("extra_paths: {} is not absolute", p.display()));
        }
        self.resources(1, 1, 1024).validate().map_err(|e| e.to_string())
    }

    /// Which images this provider accepts.
    pub fn image_policy(&self) -> ImagePolicy {
        ImagePolicy { allowed: self.allowed_images.clone(), require_digest: self.require_image_digest }
    }

    pub fn allows(&self, r: Runner) -> bool {
        self.runners.contains(&r)
    }

    /// What each leased GPU comes with on a host of `host_cores` and
    /// `host_memory_mib` with `gpus` GPUs, filling in the automatic values.
    pub fn resources(&self, gpus: u32, host_cores: u32, host_memory_mib: u64) -> JobResources {
        let gpus = gpus.max(1);
        let cpu = match self.cpu_millicores_per_gpu {
            0 => (host_cores.max(1).saturating_mul(1000) / gpus).max(1),
            n => n,
        };
        let memory = match self.memory_mib_per_gpu {
            0 => u32::try_from(host_memory_mib * AUTO_MEMORY_SHARE_PERCENT / 100 / u64::from(gpus))
                .unwrap_or(u32::MAX)
                .max(agora_protocol::limits::MIN_JOB_MEMORY_MIB),
            n => n,
        };
        JobResources {
            cpu_millicores_per_gpu: cpu.min(agora_protocol::limits::MAX_CPU_MILLICORES_PER_GPU),
            memory_mib_per_gpu: memory.min(agora_protocol::limits::MAX_JOB_MEMORY_MIB_PER_GPU),
            scratch_mib_per_gpu: self.scratch_mib_per_gpu,
            egress: self.allow_egress && self.allows(Runner::Docker),
        }
    }
}

/// The images a provider accepts: by repository (empty: any), and optionally only digest-pinned ones.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImagePolicy {
    pub allowed: Vec<String>,
    pub require_digest: bool,
}

impl ImagePolicy {
    /// Why `image` (already a valid reference) is refused, if it is.
    pub fn refusal(&self, image: &str) -> Option<String> {
        let (name, digest) = image.split_once('@').map_or((image, None), |(n, d)| (n, Some(d)));
        if self.require_digest && digest.is_none() {
            return Some(format!("this provider runs only images pinned by digest (NAME@sha256:…), not {image:?}"));
        }
        // The repository is the name without its tag (a ':' after the last '/').
        let last_slash = name.rfind('/').map_or(0, |i| i + 1);
        let repository = name[last_slash..].rfind(':').map_or(name, |i| &name[..last_slash + i]);
        let listed = self.allowed.is_empty() || self.allowed.iter().any(|a| a == repository);
        (!listed)
            .then(|| format!("this provider does not run image {repository:?}; it runs {}", self.allowed.join(", ")))
    }
}

/// How plain (non-image) jobs will run, decided at start: the sandbox when
/// configured (and it must work), else the process runner only where every
/// GPU is simulated or the operator said `--unsafe-process-runner`; `None`
/// when only images are allowed. `sandbox` is the probe's result, asked for
/// only when the sandbox is configured.
pub fn choose_isolation<S>(
    jobs: &JobsConfig,
    all_gpus_simulated: bool,
    sandbox: impl FnOnce() -> Result<S, String>,
) -> Result<Option<PlainJobs<S>>, String> {
    if jobs.allows(Runner::Sandbox) {
        return sandbox().map(|s| Some(PlainJobs::Sandbox(s))).map_err(|e| {
            format!("runner sandbox: {e} (or set [jobs] runners = [\"docker\"], or [\"process\"] on a testnet)")
        });
    }
    if !jobs.allows(Runner::Process) {
        return Ok(None);
    }
    if !all_gpus_simulated && !jobs.unsafe_process_runner {
        return Err("refusing the process runner on a host with real GPUs: a job would run as the node's own user \
                    and could read its keys and ledger; use runners = [\"sandbox\"] or [\"docker\"] (or pass \
                    --unsafe-process-runner if you accept that)"
            .into());
    }
    Ok(Some(PlainJobs::Process))
}

/// The outcome of [`choose_isolation`].
#[derive(Debug, PartialEq, Eq)]
pub enum PlainJobs<S> {
    Sandbox(S),
    Process,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jobs(runners: &[Runner]) -> JobsConfig {
        JobsConfig { runners: runners.to_vec(), ..JobsConfig::default() }
    }

    #[test]
    fn the_process_runner_needs_simulated_gpus_or_the_unsafe_flag() {
        let ok = || Ok::<_, String>(());
        let process = jobs(&[Runner::Process]);
        assert_eq!(choose_isolation(&process, true, ok), Ok(Some(PlainJobs::Process)));
        let err = choose_isolation(&process, false, ok).unwrap_err();
        assert!(err.contains("real GPUs") && err.contains("--unsafe-process-runner"), "{err}");
        let unsafe_ok = JobsConfig { unsafe_process_runner: true, ..process };
        assert_eq!(choose_isolation(&unsafe_ok, false, ok), Ok(Some(PlainJobs::Process)));
    }

    #[test]
    fn a_configured_sandbox_must_work_and_docker_alone_runs_no_plain_jobs() {
        let sandbox = jobs(&[Runner::Sandbox, Runner::Process]);
        let err = choose_isolation(&sandbox, true, || Err::<(), _>("needs root".to_string())).unwrap_err();
        assert!(err.starts_with("runner sandbox: needs root"), "{err}");
        assert_eq!(choose_isolation(&sandbox, false, || Ok::<_, String>(7)), Ok(Some(PlainJobs::Sandbox(7))));
        assert_eq!(choose_isolation(&jobs(&[Runner::Docker]), false, || Ok::<_, String>(())), Ok(None));
    }

    #[test]
    fn the_image_policy_lists_repositories_and_can_require_digests() {
        let open = ImagePolicy::default();
        assert_eq!(open.refusal("anything:latest"), None);
        let listed = ImagePolicy { allowed: vec!["pytorch/pytorch".into(), "localhost:5000/job".into()], ..open };
        assert_eq!(listed.refusal("pytorch/pytorch:2.4"), None);
        assert_eq!(listed.refusal("localhost:5000/job:v1"), None, "a registry port is not a tag");
        assert!(listed.refusal("pytorch/pytorch-evil:1").unwrap().contains("does not run image"));
        let digest = format!("pytorch/pytorch@sha256:{}", "a".repeat(64));
        let pinned = ImagePolicy { require_digest: true, ..listed };
        assert!(pinned.refusal("pytorch/pytorch:2.4").unwrap().contains("pinned by digest"));
        assert_eq!(pinned.refusal(&digest), None);
        assert!(JobsConfig { allowed_images: vec!["--privileged".into()], ..JobsConfig::default() }.check().is_err());
    }

    #[test]
    fn automatic_resources_share_the_host_out_over_its_gpus() {
        let r = JobsConfig::default().resources(4, 32, 256 * 1024);
        assert_eq!(r.cpu_millicores_per_gpu, 8_000);
        assert_eq!(r.memory_mib_per_gpu, 48 * 1024);
        assert!(!r.egress, "no network unless the operator allows it");
        let set = JobsConfig { cpu_millicores_per_gpu: 500, memory_mib_per_gpu: 256, ..JobsConfig::default() };
        let r = set.resources(4, 32, 256 * 1024);
        assert_eq!((r.cpu_millicores_per_gpu, r.memory_mib_per_gpu), (500, 256));
        let egress = JobsConfig { allow_egress: true, runners: vec![Runner::Sandbox], ..JobsConfig::default() };
        assert!(!egress.resources(1, 1, 1024).egress, "egress is given only through the docker runner");
        assert!(JobsConfig { log_bytes: 0, ..JobsConfig::default() }.check().is_err());
        assert!(JobsConfig { runners: vec![], ..JobsConfig::default() }.check().is_err());
    }
}
