//! Hostile jobs against the sandbox runner, on the real kernel: each test
//! starts a job through the runner exactly as a provider does and checks that
//! the job cannot read the node's files, write outside its scratch, see other
//! jobs or unleased GPUs, escape its limits, or outlive its lease.
//!
//! These need root (namespaces, cgroups, mounts), as CI has. On a machine
//! without it, set AGORA_SKIP_SANDBOX_TESTS=1 to skip them knowingly.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agora_node::runner::{self, Isolation, Job, JobEnded, Launch, LeasedGpu, LogLimits, Runners};
use agora_protocol::job::{JobSpec, JobState};
use agora_protocol::{Hash, JobResources, Keypair, LeaseId};
use agora_sandbox::Sandbox;
use tokio::sync::mpsc;

/// A node's home with a key in it, and the sandbox a provider with that home would use.
struct Host {
    _tmp: tempfile::TempDir,
    home: PathBuf,
    jobs: PathBuf,
    sandbox: Arc<Sandbox>,
    node: String,
}

const SECRET: &str = "THE-PROVIDERS-SECRET-KEY";

fn host() -> Option<Host> {
    if std::env::var_os("AGORA_SKIP_SANDBOX_TESTS").is_some() {
        eprintln!("AGORA_SKIP_SANDBOX_TESTS is set: sandbox tests skipped");
        return None;
    }
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    std::fs::create_dir_all(home.join("keys")).unwrap();
    std::fs::write(home.join("keys/node.json"), SECRET).unwrap();
    let jobs = home.join("data/jobs");
    std::fs::create_dir_all(&jobs).unwrap();
    // One cgroup subtree per test process, so parallel tests never reap each other's jobs.
    let node = format!("test-{}-{}", std::process::id(), rand_suffix());
    let sandbox = Sandbox::new(&node, std::slice::from_ref(&home), &[]).unwrap_or_else(|e| {
        panic!("the sandbox is not available here ({e}); run as root or set AGORA_SKIP_SANDBOX_TESTS=1")
    });
    Some(Host { _tmp: tmp, home, jobs, sandbox: Arc::new(sandbox), node })
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 % 1_000_000_007
}

fn lease(n: u8) -> LeaseId {
    let mut b = [n; 32];
    b[4..12].copy_from_slice(&rand_suffix().to_le_bytes());
    LeaseId(Hash(b))
}

fn sh(script: &str) -> JobSpec {
    JobSpec { command: vec!["/bin/sh".into(), "-c".into(), script.into()], env: vec![], image: None, egress: false }
}

/// Scratch (memory-backed) per GPU in these tests.
const SCRATCH_MIB: u32 = 512;

fn resources(memory_mib: u32) -> JobResources {
    JobResources {
        cpu_millicores_per_gpu: 1000,
        memory_mib_per_gpu: memory_mib,
        scratch_mib_per_gpu: SCRATCH_MIB,
        egress: false,
    }
}

fn sim_gpus(indices: &[u32]) -> Vec<LeasedGpu> {
    indices.iter().map(|i| LeasedGpu { id: format!("SIM-H100-{i}"), index: *i, simulated: true }).collect()
}

impl Host {
    fn start(
        &self,
        id: LeaseId,
        spec: &JobSpec,
        gpus: &[LeasedGpu],
        memory_mib: u32,
        secs: u64,
    ) -> (Job, mpsc::Receiver<JobEnded>) {
        let (tx, rx) = mpsc::channel(4);
        let launch = Launch {
            lease_id: id,
            buyer: Keypair::from_seed_phrase("buyer").address(),
            spec,
            gpus,
            jobs_dir: &self.jobs,
            deadline: Instant::now() + Duration::from_secs(secs),
            log: LogLimits { ring_bytes: 1 << 20, file_bytes: 1 << 20 },
            resources: resources(memory_mib),
        };
        let runners = Runners { plain: Some(Isolation::Sandbox(self.sandbox.clone())), docker: None };
        let job = runner::start(launch, &runners, tx).expect("job starts");
        (job, rx)
    }

    /// Runs a job to its end and returns its exit code and output.
    async fn run(&self, script: &str) -> (Option<i32>, String) {
        let (job, mut rx) = self.start(lease(1), &sh(script), &sim_gpus(&[0]), 256, 120);
        let ended = tokio::time::timeout(Duration::from_secs(60), rx.recv()).await.expect("job ends").unwrap();
        let out = String::from_utf8_lossy(&job.chunk(0).data).into_owned();
        match ended.state {
            JobState::Exited { code } => (code, out),
            other => panic!("job did not exit by itself: {other:?}\n{out}"),
        }
    }

    fn cgroup_dirs(&self) -> Vec<PathBuf> {
        let root = Path::new(agora_sandbox::cgroup::CGROUP_ROOT);
        ["", "memory", "pids", "unified"]
            .iter()
            .map(|c| root.join(c).join(agora_sandbox::cgroup::AGORA_CGROUP).join(&self.node))
            .filter(|p| p.exists())
            .collect()
    }
}

/// Bytes of all files under `dir`.
fn walk_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => walk_size(&e.path()),
            _ => e.metadata().map(|m| m.len()).unwrap_or(0),
        })
        .sum()
}

/// Processes on the host whose command line contains `marker`.
fn host_processes_with(marker: &str) -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit()))
        .filter_map(|e| {
            let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            let zombie = stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'));
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            (!zombie && cmd.contains(marker)).then_some(cmd)
        })
        .collect()
}

async fn wait_gone(marker: &str, within: Duration) -> Vec<String> {
    let deadline = Instant::now() + within;
    loop {
        let left = host_processes_with(marker);
        if left.is_empty() || Instant::now() > deadline {
            return left;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_job_runs_as_an_unprivileged_user_in_its_own_world() {
    let Some(h) = host() else { return };
    let (code, out) = h
        .run("id -u; hostname; pwd; echo HOME=$HOME; ls /; echo gpus=$CUDA_VISIBLE_DEVICES; grep -c . /proc/self/status >/dev/null && echo proc-ok; exit 7")
        .await;
    assert_eq!(code, Some(7), "{out}");
    let mut lines = out.lines();
    let uid: u32 = lines.next().unwrap().parse().unwrap();
    assert!(uid >= agora_sandbox::JOB_UID_BASE, "job uid {uid} is not an unprivileged job uid\n{out}");
    assert!(out.contains("agora-job\n/work\nHOME=/work\n"), "{out}");
    assert!(out.contains("gpus=SIM-H100-0\nproc-ok"), "{out}");
    for absent in ["root\n", "home\n", "var\n", "sys\n", "old_root\n"] {
        assert!(!out.contains(absent), "{absent:?} is visible in the job's root:\n{out}");
    }
}

#[tokio::test]
async fn the_nodes_keys_and_home_cannot_be_read_or_written() {
    let Some(h) = host() else { return };
    let key = h.home.join("keys/node.json");
    let script = format!(
        "exec 2>&1; cat {key} ../../../../keys/node.json /work/../../keys/node.json /proc/1/root{key}; \
         for p in /proc/[0-9]*; do cat $p/environ 2>/dev/null | tr '\\0' '\\n'; done; \
         touch {home}/x 2>&1; echo hacked > /usr/bin/agora-x 2>&1; echo x >> /etc/passwd 2>&1; \
         ls /proc | grep -c '^[0-9]' ; echo done",
        key = key.display(),
        home = h.home.display()
    );
    // SAFETY: nextest runs each test in its own process; nothing else reads the environment now.
    unsafe { std::env::set_var("AGORA_NODE_ENV_SECRET", SECRET) };
    let (_, out) = h.run(&script).await;
    assert!(!out.contains(SECRET), "the job read a secret:\n{out}");
    assert!(out.contains("Read-only file system") || out.contains("Permission denied"), "{out}");
    assert!(!h.home.join("x").exists() && !Path::new("/usr/bin/agora-x").exists(), "the job wrote to the host");
    // One stream (`exec 2>&1`): the shell's complaints about the failed
    // redirections went to its stderr, which could arrive after stdout's
    // last lines.
    let pids: u32 = out.lines().rev().nth(1).unwrap().trim().parse().unwrap();
    assert!(pids <= 4, "the job sees {pids} processes: only its own should be visible\n{out}");
    assert!(!out.contains("agora") || !out.contains("node run"), "the job saw the node's command line:\n{out}");
}

#[tokio::test]
async fn only_the_leased_gpus_devices_exist_and_no_network() {
    let Some(h) = host() else { return };
    let (job, mut rx) = h.start(
        lease(2),
        &sh("ls /dev; cat /dev/nvidia1; cat /dev/nvidia3 2>&1; echo x > /dev/nvidia1 2>&1; \
             cat /sys/class/net/*/operstate 2>&1; (echo > /dev/tcp/127.0.0.1/22) 2>&1; ls /sys 2>&1; echo end"),
        &sim_gpus(&[1]),
        256,
        60,
    );
    tokio::time::timeout(Duration::from_secs(60), rx.recv()).await.unwrap().unwrap();
    let out = String::from_utf8_lossy(&job.chunk(0).data).into_owned();
    assert!(out.contains("simulated GPU SIM-H100-1"), "the leased GPU is visible:\n{out}");
    assert!(out.contains("/dev/nvidia3: No such file"), "an unleased GPU is not:\n{out}");
    assert!(!out.contains("nvidia0") && !out.contains("nvidia2"), "{out}");
    for dev in ["sda", "vda", "mem", "kmsg", "nvidiactl"] {
        assert!(!out.lines().any(|l| l == dev), "/dev/{dev} is visible:\n{out}");
    }
    assert!(out.contains("Read-only file system") || out.contains("Permission denied"), "{out}");
}

#[tokio::test]
async fn escapes_through_the_kernel_are_refused() {
    let Some(h) = host() else { return };
    let (_, out) = h
        .run(
            "unshare -r true 2>&1 && echo UNSHARED; unshare -m true 2>&1 && echo UNSHARED; \
             mount -t tmpfs x /tmp 2>&1 && echo MOUNTED; grep -E '^(CapEff|CapBnd|NoNewPrivs|Seccomp):' /proc/self/status",
        )
        .await;
    assert!(!out.contains("UNSHARED") && !out.contains("MOUNTED"), "{out}");
    assert!(out.contains("CapEff:\t0000000000000000"), "{out}");
    assert!(out.contains("CapBnd:\t0000000000000000"), "{out}");
    assert!(out.contains("NoNewPrivs:\t1") && out.contains("Seccomp:\t2"), "{out}");
}

/// A shell command whose process carries `marker` in its command line (dash has no `exec -a`).
fn sleeper(marker: &str) -> String {
    format!("sh -c 'sleep 300; echo {marker}'")
}

async fn wait_for_processes(marker: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while host_processes_with(marker).len() < n {
        assert!(Instant::now() < deadline, "the job's {n} processes never showed up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn processes_left_behind_die_with_the_job_and_the_cgroup_is_removed() {
    let Some(h) = host() else { return };
    let marker = format!("agora-orphan-{}", rand_suffix());
    let s = sleeper(&marker);
    // A session leader, a double fork and a daemonised grandchild; then the main process exits.
    let script = format!("setsid {s} & ({s} &) ; sh -c '({s} &) &' ; sleep 2; echo main-exits");
    let (job, mut rx) = h.start(lease(7), &sh(&script), &sim_gpus(&[0]), 256, 120);
    wait_for_processes(&marker, 3).await;
    let ended = tokio::time::timeout(Duration::from_secs(60), rx.recv()).await.unwrap().unwrap();
    assert_eq!(ended.state, JobState::Exited { code: Some(0) });
    assert!(String::from_utf8_lossy(&job.chunk(0).data).contains("main-exits"));
    let left = wait_gone(&marker, Duration::from_secs(2)).await;
    assert!(left.is_empty(), "processes outlived the job: {left:?}");
    let leftover: Vec<_> = h
        .cgroup_dirs()
        .iter()
        .flat_map(|d| std::fs::read_dir(d).unwrap().flatten())
        .filter(|e| e.path().is_dir())
        .collect();
    assert!(leftover.is_empty(), "job cgroups left: {leftover:?}");
}

#[tokio::test]
async fn stop_kills_every_process_of_the_job_within_two_seconds() {
    let Some(h) = host() else { return };
    let marker = format!("agora-stop-{}", rand_suffix());
    let s = sleeper(&marker);
    let script = format!("setsid {s} & sh -c '({s} &)'; echo started; {s}");
    let (job, mut rx) = h.start(lease(3), &sh(&script), &sim_gpus(&[0]), 256, 600);
    wait_for_processes(&marker, 3).await;
    let stopped = Instant::now();
    job.stop("the lease was cancelled");
    let left = wait_gone(&marker, Duration::from_secs(2)).await;
    assert!(left.is_empty(), "alive {:?} after stop: {left:?}", stopped.elapsed());
    let ended = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.unwrap().unwrap();
    assert_eq!(ended.state, JobState::Stopped { reason: "the lease was cancelled".into() });
}

#[tokio::test]
async fn a_fork_bomb_and_a_memory_hog_hit_their_limits_not_the_host() {
    let Some(h) = host() else { return };
    // The pids limit (1,024 per GPU) stops the bomb; the job ends at its deadline.
    let bomb = "b() { b | b & }; b 2>/dev/null; sleep 2; echo survived";
    let (job, mut rx) = h.start(lease(4), &sh(bomb), &sim_gpus(&[0]), 256, 8);
    let ended = tokio::time::timeout(Duration::from_secs(60), rx.recv()).await.unwrap().unwrap();
    assert!(matches!(ended.state, JobState::Stopped { .. } | JobState::Exited { .. }), "{:?}", ended.state);
    assert!(host_processes_with("b | b").is_empty());
    drop(job);
    // 64 MiB of memory, 512 MiB of scratch: scratch is memory, so filling it past 64 MiB gets the job's
    // writer killed by the kernel inside the job's cgroup, and the host is unharmed.
    let hog = "head -c 300000000 /dev/zero > /work/fill; echo wrote $(stat -c %s /work/fill)";
    let (job, mut rx) = h.start(lease(5), &sh(hog), &sim_gpus(&[0]), 64, 60);
    tokio::time::timeout(Duration::from_secs(60), rx.recv()).await.unwrap().unwrap();
    let out = String::from_utf8_lossy(&job.chunk(0).data).into_owned();
    let wrote: u64 =
        out.split("wrote ").nth(1).and_then(|s| s.split_whitespace().next()).and_then(|n| n.parse().ok()).unwrap_or(0);
    assert!(wrote <= 64 * 1024 * 1024, "the job wrote {wrote} bytes past its memory limit:\n{out}");
    assert!(out.contains("reached its memory limit"), "the buyer is told why:\n{out}");
    // Disk: the job's writable places are all memory-backed; the host's disk never sees its bytes.
    let disk = "head -c 100000000 /dev/zero > /tmp/f 2>&1; head -c 100000000 /dev/zero > /dev/shm/f 2>&1; df -k /work /tmp 2>&1; echo end";
    let (job, mut rx) = h.start(lease(8), &sh(disk), &sim_gpus(&[0]), 1024, 60);
    tokio::time::timeout(Duration::from_secs(60), rx.recv()).await.unwrap().unwrap();
    let out = String::from_utf8_lossy(&job.chunk(0).data).into_owned();
    assert!(out.contains("tmpfs"), "scratch is tmpfs:\n{out}");
    let job_files: u64 = walk_size(&h.jobs);
    assert!(job_files < 1024 * 1024, "the job's bytes reached the host disk ({job_files} bytes under the jobs dir)");
}

#[tokio::test]
async fn two_jobs_cannot_see_each_other() {
    let Some(h) = host() else { return };
    let marker = format!("agora-tenant-{}", rand_suffix());
    let first = format!("echo {marker} > /work/mine; echo {marker} > /tmp/mine; {}", sleeper(&marker));
    let (job_a, _rx_a) = h.start(lease(6), &sh(&first), &sim_gpus(&[0]), 256, 60);
    wait_for_processes(&marker, 1).await;
    let jobs = h.jobs.display();
    let probe = format!(
        "cat /work/mine /tmp/mine 2>&1; ls /proc | grep -c '^[0-9]'; grep -l {marker} /proc/*/cmdline 2>/dev/null; \
         ls {jobs} 2>&1; echo end"
    );
    let (_, out) = h.run(&probe).await;
    let marker_lines = out.lines().filter(|l| l.contains(&marker)).count();
    assert_eq!(marker_lines, 0, "the second job saw the first:\n{out}");
    assert!(out.contains("No such file"), "{out}");
    job_a.stop("done");
}
