//! `agora bench jobs`: what each job runner adds to a job's start, measured
//! on this host with the provider's own runner code and no chain: N jobs of
//! `true` started one after another per runner, each timed from the start
//! call to its exit (process fork/exec, namespaces, root filesystem, cgroup,
//! seccomp, and teardown for the sandbox). The chain's part of submit →
//! running is in `agora bench leases`.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agora_node::runner::{self, Isolation, Launch, LeasedGpu, LogLimits};
use agora_protocol::job::{JobSpec, JobState};
use agora_protocol::{Hash, JobResources, LeaseId};
use agora_testnet::bench::{Percentiles, percentiles};
use serde::Serialize;

/// How long one job may take before the run fails.
const JOB_DEADLINE: Duration = Duration::from_secs(60);

#[derive(Serialize)]
pub struct RunnerFigures {
    pub runner: String,
    /// From the runner's start call to the job's exit, for `true`.
    pub start_to_exit: Percentiles,
}

#[derive(Serialize)]
pub struct JobsBenchReport {
    pub runners: Vec<RunnerFigures>,
    /// Sandbox p50 minus process p50: what isolation adds to a job's start and end.
    pub sandbox_added_p50_ms: Option<f64>,
}

fn resources() -> JobResources {
    JobResources { cpu_millicores_per_gpu: 1000, memory_mib_per_gpu: 1024, scratch_mib_per_gpu: 64, egress: false }
}

async fn time_runner(dir: &Path, isolation: &Isolation, samples: usize, spec: &JobSpec) -> anyhow::Result<Vec<f64>> {
    let gpus = [LeasedGpu { id: "SIM-H100-0".into(), index: 0, simulated: true }];
    let mut times = Vec::with_capacity(samples);
    for i in 0..samples {
        let mut id = [0u8; 32];
        id[..8].copy_from_slice(&(i as u64).to_le_bytes());
        let (tx, mut rx) = tokio::sync::mpsc::channel(1);
        let launch = Launch {
            lease_id: LeaseId(Hash(id)),
            buyer: agora_protocol::Keypair::from_seed_phrase("bench").address(),
            spec,
            gpus: &gpus,
            jobs_dir: dir,
            deadline: Instant::now() + JOB_DEADLINE,
            log: LogLimits { ring_bytes: 64 * 1024, file_bytes: 1 << 20 },
            resources: resources(),
        };
        let started = Instant::now();
        let runners = runner::Runners { plain: Some(isolation.clone()), docker: None };
        runner::start(launch, &runners, tx).map_err(|e| anyhow::anyhow!(e))?;
        let ended = tokio::time::timeout(JOB_DEADLINE, rx.recv())
            .await?
            .ok_or_else(|| anyhow::anyhow!("the runner dropped the job"))?;
        anyhow::ensure!(ended.state == JobState::Exited { code: Some(0) }, "job {i} ended {:?}", ended.state);
        times.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(times)
}

pub fn run(samples: usize, runners: &[String]) -> anyhow::Result<JobsBenchReport> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let temp = tempfile::Builder::new().prefix("agora-bench-jobs-").tempdir()?;
    let spec = JobSpec { command: vec!["true".into()], env: vec![], image: None, egress: false };
    let mut figures = Vec::new();
    for name in runners {
        let isolation = match name.as_str() {
            "process" => Isolation::Process,
            "sandbox" => {
                let home = temp.path().join("home");
                let sandbox = agora_sandbox::Sandbox::new(&format!("bench-{}", std::process::id()), &[home], &[])
                    .map_err(|e| anyhow::anyhow!("sandbox: {e}"))?;
                Isolation::Sandbox(Arc::new(sandbox))
            }
            other => anyhow::bail!("--runner {other:?}: expected process or sandbox"),
        };
        let dir = temp.path().join(name);
        std::fs::create_dir_all(&dir)?;
        eprintln!("timing {samples} jobs with the {name} runner");
        let times = rt.block_on(time_runner(&dir, &isolation, samples, &spec))?;
        figures.push(RunnerFigures { runner: name.clone(), start_to_exit: percentiles(times) });
    }
    let p50 = |r: &str| figures.iter().find(|f| f.runner == r).map(|f| f.start_to_exit.p50_ms);
    let sandbox_added_p50_ms = p50("sandbox").zip(p50("process")).map(|(s, p)| s - p);
    Ok(JobsBenchReport { runners: figures, sandbox_added_p50_ms })
}
