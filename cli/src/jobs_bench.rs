//! `agora bench jobs`: what each job runner adds to a job's start, measured
//! on this host with the provider's own runner code and no chain: N jobs of
//! `true` started one after another per runner, each timed from the start
//! call to its exit (process fork/exec, namespaces, root filesystem, cgroup,
//! seccomp, and teardown for the sandbox; create, start, wait and remove
//! through the Engine for docker, with a local busybox image). The chain's part of submit →
//! running is in `agora bench leases`.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agora_node::runner::{self, Isolation, Launch, LeasedGpu, LogLimits, Runners};
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
    /// Docker p50 minus process p50.
    pub docker_added_p50_ms: Option<f64>,
}

fn resources() -> JobResources {
    // 64 MiB is the least the docker runner's scratch (a tmpfs) and init need here.
    JobResources { cpu_millicores_per_gpu: 1000, memory_mib_per_gpu: 1024, scratch_mib_per_gpu: 64, egress: false }
}

async fn time_runner(
    dir: &Path,
    runners: &runner::Runners,
    samples: usize,
    spec: &JobSpec,
) -> anyhow::Result<Vec<f64>> {
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
        runner::start(launch, runners, tx).map_err(|e| anyhow::anyhow!(e))?;
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
    let plain = JobSpec { command: vec!["true".into()], env: vec![], image: None, egress: false };
    let image = JobSpec { image: Some(agora_node::docker::TEST_IMAGE.into()), ..plain.clone() };
    let mut figures = Vec::new();
    for name in runners {
        let node = format!("bench-{}", std::process::id());
        let (runners, spec) = match name.as_str() {
            "process" => (Runners { plain: Some(Isolation::Process), docker: None }, &plain),
            "sandbox" => {
                let home = temp.path().join("home");
                let sandbox =
                    agora_sandbox::Sandbox::new(&node, &[home], &[]).map_err(|e| anyhow::anyhow!("sandbox: {e}"))?;
                (Runners { plain: Some(Isolation::Sandbox(Arc::new(sandbox))), docker: None }, &plain)
            }
            "docker" => {
                let engine = agora_node::docker::Engine::probe(agora_node::docker::DOCKER_SOCKET, &node)
                    .map_err(|e| anyhow::anyhow!("docker: {e}"))?;
                agora_node::docker::build_test_image().map_err(|e| anyhow::anyhow!(e))?;
                (Runners { plain: None, docker: Some(Arc::new(engine)) }, &image)
            }
            other => anyhow::bail!("--runner {other:?}: expected process, sandbox or docker"),
        };
        let dir = temp.path().join(name);
        std::fs::create_dir_all(&dir)?;
        eprintln!("timing {samples} jobs with the {name} runner");
        let times = rt.block_on(time_runner(&dir, &runners, samples, spec))?;
        figures.push(RunnerFigures { runner: name.clone(), start_to_exit: percentiles(times) });
    }
    let p50 = |r: &str| figures.iter().find(|f| f.runner == r).map(|f| f.start_to_exit.p50_ms);
    let sandbox_added_p50_ms = p50("sandbox").zip(p50("process")).map(|(s, p)| s - p);
    let docker_added_p50_ms = p50("docker").zip(p50("process")).map(|(s, p)| s - p);
    Ok(JobsBenchReport { runners: figures, sandbox_added_p50_ms, docker_added_p50_ms })
}
