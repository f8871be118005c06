//! The provider's jobs as the daemon holds them: the jobs it runs or ran
//! (bounded), how plain jobs are isolated, what each leased GPU comes with,
//! log limits, and the periodic removal of finished jobs' files; and how a
//! provider's runners are set up at start.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use agora_protocol::{JobResources, Keypair, LeaseId};
use tokio::sync::mpsc;

use crate::config::NodeConfig;
use crate::error::Error;
use crate::provider::Provider;
use crate::runner::{Job, JobEnded, LogLimits, Runners};

/// How often finished jobs' directories are looked at for removal.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(60);

pub(super) struct Jobs {
    /// Jobs running or finished, by lease (finished ones forgotten oldest first past a bound).
    pub by_lease: BTreeMap<LeaseId, Job>,
    pub ended_tx: mpsc::Sender<JobEnded>,
    pub ended_rx: mpsc::Receiver<JobEnded>,
    /// Control directories of jobs (logs, generated files); never inside a job's world.
    pub dir: PathBuf,
    pub log: LogLimits,
    /// How plain and image jobs run (neither on a non-provider).
    pub runners: Runners,
    pub resources: JobResources,
    /// How long a finished job's files stay.
    pub retention: Duration,
    pub last_sweep: Instant,
}

impl Jobs {
    pub fn new(dir: PathBuf, log: LogLimits, runners: Runners, resources: JobResources, retention: Duration) -> Jobs {
        let (ended_tx, ended_rx) = mpsc::channel(crate::runner::JOB_EVENTS_QUEUE);
        Jobs {
            by_lease: BTreeMap::new(),
            ended_tx,
            ended_rx,
            dir,
            log,
            runners,
            resources,
            retention,
            last_sweep: Instant::now(),
        }
    }

    /// Removes finished jobs' directories past the retention, at most once per [`SWEEP_INTERVAL`].
    pub fn sweep(&mut self) {
        if self.last_sweep.elapsed() < SWEEP_INTERVAL {
            return;
        }
        self.last_sweep = Instant::now();
        let running = |name: &str| self.by_lease.iter().any(|(id, j)| j.is_running() && id.to_string() == name);
        let removed = crate::runner::sweep_job_dirs(&self.dir, &running, self.retention);
        if removed > 0 {
            tracing::info!(removed, "finished jobs' files removed after the retention period");
        }
    }
}

/// CPU cores this host has (for the automatic per-GPU share).
pub(super) fn host_cores() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| n.get() as u32)
}

/// Memory this host has, in MiB (for the automatic per-GPU share).
pub(super) fn host_memory_mib() -> u64 {
    // SAFETY: sysinfo(2) fills the zeroed struct we pass.
    let mut info: libc::sysinfo = unsafe { std::mem::zeroed() };
    if unsafe { libc::sysinfo(&mut info) } != 0 {
        return 1024;
    }
    (info.totalram as u64).saturating_mul(u64::from(info.mem_unit)) / (1024 * 1024)
}

/// A provider's negotiation state and job host: which jobs it accepts
/// (plain ones only with a working isolation; images only where docker
/// works) and how it runs them. Non-providers get an empty job host.
pub(super) fn provider_jobs(
    home: &Path,
    config: &NodeConfig,
    key: &Keypair,
    provider: Option<&Provider>,
) -> Result<(Option<crate::market::Market>, Jobs), Error> {
    use crate::config::{PlainJobs, Runner, choose_isolation};
    let log = crate::runner::LogLimits { ring_bytes: config.jobs.log_bytes, file_bytes: config.jobs.log_file_bytes };
    let retention = Duration::from_secs(config.jobs.retention_secs);
    let Some(p) = provider else {
        let resources = config.jobs.resources(1, 1, 1024);
        let none = crate::runner::Runners::default();
        return Ok((None, Jobs::new(config.jobs_dir(home), log, none, resources, retention)));
    };
    let all_simulated = p.gpus.iter().all(|g| g.simulated);
    let forbidden = [home.to_path_buf(), home.join(&config.data_dir)];
    let node = key.address().to_string();
    let plain = choose_isolation(&config.jobs, all_simulated, || {
        agora_sandbox::Sandbox::new(&node, &forbidden, &config.jobs.extra_paths).map_err(|e| e.to_string())
    })
    .map_err(|reason| Error::Config { path: NodeConfig::path(home), reason })?;
    let isolation = plain.map(|p| match p {
        PlainJobs::Sandbox(s) => crate::runner::Isolation::Sandbox(std::sync::Arc::new(s)),
        PlainJobs::Process => crate::runner::Isolation::Process,
    });
    let engine = match config.jobs.allows(Runner::Docker) {
        true => crate::docker::Engine::probe(crate::docker::DOCKER_SOCKET, &node)
            .inspect_err(|e| tracing::warn!(error = %e, "docker runner configured but no Docker Engine answers"))
            .ok()
            .map(std::sync::Arc::new),
        false => None,
    };
    let docker = engine.is_some();
    let kinds =
        crate::market::JobKinds { plain: isolation.is_some(), images: docker, egress: p.resources.egress && docker };
    let runner = match &isolation {
        Some(crate::runner::Isolation::Sandbox(_)) => "sandbox",
        Some(crate::runner::Isolation::Process) => "process (unsandboxed: testnets only)",
        None => "none (images only)",
    };
    tracing::info!(plain_jobs = runner, docker, egress = kinds.egress, resources = ?p.resources, "job runners");
    let mut market = crate::market::Market::new(p.gpus.clone(), p.price, p.max_lease_secs, kinds);
    market.images = config.jobs.image_policy();
    let runners = crate::runner::Runners { plain: isolation, docker: engine };
    Ok((Some(market), Jobs::new(config.jobs_dir(home), log, runners, p.resources, retention)))
}
