//! Hostile jobs against the docker runner, on the real Docker Engine with a
//! locally built busybox image: the container runs as nobody with no
//! capabilities, no new privileges, a read-only root, no network, its
//! limits, and the buyer's variables only inside; a stop kills it within 2 s
//! and the container is removed; a restarted node removes what an earlier
//! run left, found by label.
//!
//! These need a Docker Engine and `/bin/busybox` (Debian's busybox-static),
//! as CI has; AGORA_SKIP_DOCKER_TESTS=1 skips them knowingly elsewhere.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agora_node::docker::{DOCKER_SOCKET, Engine, LEASE_LABEL, TEST_IMAGE, build_test_image};
use agora_node::runner::{self, Job, JobEnded, Launch, LeasedGpu, LogLimits, Runners};
use agora_protocol::job::{JobSpec, JobState};
use agora_protocol::{Hash, JobResources, Keypair, LeaseId};
use tokio::sync::mpsc;

struct Host {
    _tmp: tempfile::TempDir,
    jobs: PathBuf,
    engine: Arc<Engine>,
}

fn host(node: &str) -> Option<Host> {
    if std::env::var_os("AGORA_SKIP_DOCKER_TESTS").is_some() {
        eprintln!("AGORA_SKIP_DOCKER_TESTS is set: docker tests skipped");
        return None;
    }
    let engine = Engine::probe(DOCKER_SOCKET, node)
        .unwrap_or_else(|e| panic!("no Docker Engine ({e}); start one or set AGORA_SKIP_DOCKER_TESTS=1"));
    build_test_image().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let jobs = tmp.path().join("jobs");
    std::fs::create_dir_all(&jobs).unwrap();
    Some(Host { _tmp: tmp, jobs, engine: Arc::new(engine) })
}

fn unique() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
}

fn lease() -> LeaseId {
    let mut b = [9u8; 32];
    b[..8].copy_from_slice(&unique().to_le_bytes());
    LeaseId(Hash(b))
}

fn image_job(script: &str) -> JobSpec {
    JobSpec {
        command: vec!["sh".into(), "-c".into(), script.into()],
        env: vec![("DOCKER_HOST".into(), "tcp://attacker:2375".into()), ("GREETING".into(), "hi".into())],
        image: Some(TEST_IMAGE.into()),
        egress: false,
    }
}

impl Host {
    fn start(&self, id: LeaseId, spec: &JobSpec, secs: u64) -> (Job, mpsc::Receiver<JobEnded>) {
        let (tx, rx) = mpsc::channel(4);
        let gpus = [LeasedGpu { id: "SIM-H100-0".into(), index: 0, simulated: true }];
        let launch = Launch {
            lease_id: id,
            buyer: Keypair::from_seed_phrase("buyer").address(),
            spec,
            gpus: &gpus,
            jobs_dir: &self.jobs,
            deadline: Instant::now() + Duration::from_secs(secs),
            log: LogLimits { ring_bytes: 1 << 20, file_bytes: 1 << 20 },
            resources: JobResources {
                cpu_millicores_per_gpu: 500,
                memory_mib_per_gpu: 64,
                scratch_mib_per_gpu: 8,
                egress: false,
            },
        };
        let runners = Runners { plain: None, docker: Some(self.engine.clone()) };
        (runner::start(launch, &runners, tx).expect("job starts"), rx)
    }
}

/// Containers of `lease` the Engine still has, running or not.
fn containers_of(lease: &LeaseId) -> Vec<String> {
    let out = Command::new("docker")
        .args(["ps", "-aq", "--filter", &format!("label={LEASE_LABEL}={lease}")])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect()
}

#[tokio::test]
async fn the_container_is_locked_down_and_removed_after() {
    let Some(h) = host("agora-test-docker-a") else { return };
    let script = "id -u; echo greeting=$GREETING; echo gpus=$CUDA_VISIBLE_DEVICES; \
                  grep -E '^(CapEff|NoNewPrivs)' /proc/self/status; \
                  touch /evil 2>&1; ls /sys/class/net; \
                  head -c 20000000 /dev/zero > /work/f 2>&1; echo work=$(wc -c < /work/f); exit 3";
    let id = lease();
    let (job, mut rx) = h.start(id, &image_job(script), 120);
    let ended = tokio::time::timeout(Duration::from_secs(120), rx.recv()).await.unwrap().unwrap();
    let out = String::from_utf8_lossy(&job.chunk(0).data).into_owned();
    assert_eq!(ended.state, JobState::Exited { code: Some(3) }, "{out}");
    assert!(out.starts_with("65534\ngreeting=hi\ngpus=SIM-H100-0\n"), "{out}");
    assert!(out.contains("CapEff:\t0000000000000000") && out.contains("NoNewPrivs:\t1"), "{out}");
    assert!(out.contains("Read-only file system"), "{out}");
    let nets: Vec<&str> = out.lines().filter(|l| *l == "lo" || l.starts_with("eth")).collect();
    assert_eq!(nets, ["lo"], "no network but loopback:\n{out}");
    let work: u64 = out.split("work=").nth(1).and_then(|s| s.trim().parse().ok()).unwrap_or(u64::MAX);
    assert!(work <= 8 * 1024 * 1024, "scratch is capped at 8 MiB, wrote {work}:\n{out}");
    assert!(containers_of(&id).is_empty(), "the container was removed");
}

#[tokio::test]
async fn stop_kills_the_container_within_two_seconds() {
    let Some(h) = host("agora-test-docker-b") else { return };
    let id = lease();
    let (job, mut rx) = h.start(id, &image_job("echo started; sleep 600 & sleep 600"), 600);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !String::from_utf8_lossy(&job.chunk(0).data).contains("started") {
        assert!(Instant::now() < deadline, "the container never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stopped = Instant::now();
    job.stop("the lease was cancelled");
    let ended = tokio::time::timeout(Duration::from_secs(30), rx.recv()).await.unwrap().unwrap();
    assert_eq!(ended.state, JobState::Stopped { reason: "the lease was cancelled".into() });
    assert!(stopped.elapsed() < Duration::from_secs(2), "took {:?}", stopped.elapsed());
    assert!(containers_of(&id).is_empty());
}

#[tokio::test]
async fn a_missing_image_ends_the_job_with_a_reason() {
    let Some(h) = host("agora-test-docker-c") else { return };
    let spec = JobSpec { image: Some(format!("agora-no-such-image-{}:1", unique())), ..image_job("true") };
    let (job, mut rx) = h.start(lease(), &spec, 120);
    let ended = tokio::time::timeout(Duration::from_secs(120), rx.recv()).await.unwrap().unwrap();
    let JobState::Stopped { reason } = ended.state else { panic!("{:?}", ended.state) };
    assert!(reason.contains("could not be pulled"), "{reason}");
    assert!(String::from_utf8_lossy(&job.chunk(0).data).contains("agora: image"));
}

#[tokio::test]
async fn a_restarted_node_removes_the_containers_it_left() {
    let Some(h) = host(&format!("agora-test-docker-d-{}", unique())) else { return };
    let id = lease();
    let (job, _rx) = h.start(id, &image_job("echo started; sleep 600"), 600);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !String::from_utf8_lossy(&job.chunk(0).data).contains("started") {
        assert!(Instant::now() < deadline, "the container never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The node "crashes": its Job is forgotten, the container runs on.
    std::mem::forget(job);
    assert_eq!(containers_of(&id).len(), 1);
    let removed = h.engine.reap_leftovers().await;
    assert_eq!(removed, vec![id.to_string()]);
    assert!(containers_of(&id).is_empty());
    // Another node's containers are not its business.
    let other = Engine::probe(DOCKER_SOCKET, "some-other-node").unwrap();
    assert!(other.reap_leftovers().await.is_empty());
}
