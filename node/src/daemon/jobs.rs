//! The provider's jobs as the daemon holds them: the jobs it runs or ran
//! (bounded), how plain jobs are isolated, what each leased GPU comes with,
//! log limits, and the periodic removal of finished jobs' files.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use agora_protocol::{JobResources, LeaseId};
use tokio::sync::mpsc;

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
