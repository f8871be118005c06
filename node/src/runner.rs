//! Runs a lease's job on the provider: a child process in its own process
//! group and working directory, with a cleared environment plus the buyer's
//! variables and `CUDA_VISIBLE_DEVICES` naming exactly the leased GPUs; its
//! stdout and stderr go to a log file and a bounded in-memory ring that the
//! buyer reads over the lease protocol. The lease's time limit is enforced,
//! and cancel, expiry or shutdown kill the whole process group.

use std::collections::VecDeque;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agora_protocol::LeaseId;
use agora_protocol::job::{JobSpec, JobState, LogChunk};
use agora_protocol::limits::MAX_LOG_CHUNK_BYTES;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

/// Default bytes of a job's output kept in memory for the buyer (the file keeps all of it).
pub const DEFAULT_LOG_RING_BYTES: usize = 1024 * 1024;
/// PATH a job gets unless the buyer sets one.
pub const JOB_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Job-ended reports queued for the daemon at most.
pub const JOB_EVENTS_QUEUE: usize = 256;
/// Name prefix of the containers of `--image` jobs.
pub const CONTAINER_PREFIX: &str = "agora-";

/// The job's output: all of it in a file, the newest part in memory.
struct JobLog {
    ring: VecDeque<u8>,
    cap: usize,
    /// Bytes written so far; the ring holds the last `ring.len()` of them.
    total: u64,
    file: Option<std::fs::File>,
}

impl JobLog {
    fn append(&mut self, data: &[u8]) {
        if let Some(f) = self.file.as_mut() {
            // The file is for the operator; a full disk must not stop the job.
            let _ = f.write_all(data);
        }
        self.total += data.len() as u64;
        self.ring.extend(data);
        while self.ring.len() > self.cap {
            self.ring.pop_front();
        }
    }

    fn read(&self, offset: u64) -> (Vec<u8>, u64, u64) {
        let first = self.total - self.ring.len() as u64;
        let start = offset.clamp(first, self.total);
        let skip = (start - first) as usize;
        let data: Vec<u8> = self.ring.iter().skip(skip).take(MAX_LOG_CHUNK_BYTES).copied().collect();
        let next = start + data.len() as u64;
        (data, next, first)
    }
}

struct Inner {
    log: JobLog,
    state: JobState,
    pgid: Option<i32>,
    container: Option<String>,
}

/// A job this provider runs or ran; cheap to clone.
#[derive(Clone)]
pub struct Job {
    pub lease_id: LeaseId,
    pub buyer: agora_protocol::Address,
    pub dir: PathBuf,
    inner: Arc<Mutex<Inner>>,
}

/// Reported to the daemon when a job's process has ended, whatever ended it.
#[derive(Debug)]
pub struct JobEnded {
    pub lease_id: LeaseId,
    pub state: JobState,
}

fn kill_group(pgid: i32) {
    // SAFETY: killpg(2) on the process group we created for this job; no memory is involved.
    unsafe {
        libc::killpg(pgid, libc::SIGKILL);
    }
}

impl Job {
    /// A job known only from disk (after a restart): its log file, a final state.
    pub fn finished(lease_id: LeaseId, buyer: agora_protocol::Address, dir: &Path, state: JobState, cap: usize) -> Job {
        let mut log = JobLog { ring: VecDeque::new(), cap, total: 0, file: None };
        if let Ok(bytes) = std::fs::read(dir.join("output.log")) {
            log.append(&bytes);
        }
        let inner = Inner { log, state, pgid: None, container: None };
        Job { lease_id, buyer, dir: dir.to_path_buf(), inner: Arc::new(Mutex::new(inner)) }
    }

    pub fn state(&self) -> JobState {
        self.inner.lock().map(|i| i.state.clone()).unwrap_or(JobState::Stopped { reason: "internal error".into() })
    }

    pub fn is_running(&self) -> bool {
        self.state() == JobState::Running
    }

    /// Up to `MAX_LOG_CHUNK_BYTES` of output from `offset`.
    pub fn chunk(&self, offset: u64) -> LogChunk {
        match self.inner.lock() {
            Ok(i) => {
                let (data, next_offset, first_available) = i.log.read(offset);
                LogChunk { data, next_offset, first_available, state: i.state.clone() }
            }
            Err(_) => LogChunk {
                data: Vec::new(),
                next_offset: offset,
                first_available: 0,
                state: JobState::Stopped { reason: "internal error".into() },
            },
        }
    }

    /// Kills the whole process group (and container) and records why.
    pub fn stop(&self, reason: &str) {
        let Ok(mut i) = self.inner.lock() else { return };
        if i.state == JobState::Running || i.state == JobState::Waiting {
            i.state = JobState::Stopped { reason: reason.to_string() };
        }
        if let Some(pgid) = i.pgid {
            kill_group(pgid);
        }
        if let Some(name) = i.container.take() {
            let _ = std::process::Command::new("docker")
                .args(["kill", &name])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// Where a job's files live: `jobs_dir/LEASE_ID/{spec.json,pgid,output.log,work/}`.
pub fn job_dir(jobs_dir: &Path, lease_id: &LeaseId) -> PathBuf {
    jobs_dir.join(lease_id.to_string())
}

/// Starts `spec` for a committed lease; the process ends by itself, at
/// `deadline`, or when stopped, and then `ended` hears of it.
#[allow(clippy::too_many_arguments)]
pub fn start(
    lease_id: LeaseId,
    buyer: agora_protocol::Address,
    spec: &JobSpec,
    gpu_ids: &[String],
    jobs_dir: &Path,
    deadline: Instant,
    log_cap: usize,
    ended: mpsc::Sender<JobEnded>,
) -> Result<Job, String> {
    let dir = job_dir(jobs_dir, &lease_id);
    let work = dir.join("work");
    std::fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
    if let Ok(json) = serde_json::to_vec_pretty(&serde_json::json!({ "command": spec.command, "image": spec.image })) {
        let _ = std::fs::write(dir.join("spec.json"), json);
    }
    let file = std::fs::File::create(dir.join("output.log")).ok();
    let visible = gpu_ids.join(",");
    let container = spec.image.as_ref().map(|_| format!("{CONTAINER_PREFIX}{}", &lease_id.to_string()[..16]));
    let mut cmd = match (&spec.image, &container) {
        (Some(image), Some(name)) => {
            let mut c = tokio::process::Command::new("docker");
            c.args(["run", "--rm", "--name", name]);
            // Simulated GPUs are not devices docker could pass through.
            if gpu_ids.iter().all(|g| !g.starts_with(crate::gpu::SIMULATED_ID_PREFIX)) {
                c.arg("--gpus").arg(format!("\"device={visible}\""));
            }
            c.arg("-e").arg(format!("CUDA_VISIBLE_DEVICES={visible}"));
            for (k, v) in &spec.env {
                c.arg("-e").arg(format!("{k}={v}"));
            }
            c.arg(image).args(&spec.command);
            c
        }
        _ => {
            let mut c = tokio::process::Command::new(&spec.command[0]);
            c.args(&spec.command[1..]);
            c
        }
    };
    cmd.env_clear()
        .env("PATH", JOB_PATH)
        .env("HOME", &work)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .env("CUDA_VISIBLE_DEVICES", &visible)
        .env("NVIDIA_VISIBLE_DEVICES", &visible)
        .env("AGORA_LEASE_ID", lease_id.to_string())
        .current_dir(&work)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|e| format!("cannot start {:?}: {e}", spec.command[0]))?;
    let pgid = child.id().map(|p| p as i32);
    if let Some(p) = pgid {
        let _ = std::fs::write(dir.join("pgid"), p.to_string());
    }
    let log = JobLog { ring: VecDeque::new(), cap: log_cap.max(1), total: 0, file };
    let inner = Arc::new(Mutex::new(Inner { log, state: JobState::Running, pgid, container }));
    let job = Job { lease_id, buyer, dir: dir.clone(), inner: inner.clone() };
    let readers: Vec<_> = [
        child.stdout.take().map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
        child.stderr.take().map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
    ]
    .into_iter()
    .flatten()
    .map(|mut stream| {
        let inner = inner.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 16 * 1024];
            while let Ok(n) = stream.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                if let Ok(mut i) = inner.lock() {
                    i.log.append(&buf[..n]);
                }
            }
        })
    })
    .collect();
    let job_for_task = job.clone();
    tokio::spawn(async move {
        let status = tokio::select! {
            s = child.wait() => s.ok(),
            _ = tokio::time::sleep_until(deadline.into()) => None,
        };
        if status.is_none() {
            job_for_task.stop("the lease's time ran out");
            let _ = child.wait().await;
        }
        // Children the job left behind go with it.
        if let Some(p) = pgid {
            kill_group(p);
        }
        for r in readers {
            // Output written before the exit is still in the pipes.
            let _ = tokio::time::timeout(Duration::from_secs(2), r).await;
        }
        let state = {
            let Ok(mut i) = inner.lock() else { return };
            i.pgid = None;
            if i.state == JobState::Running {
                i.state = JobState::Exited { code: status.and_then(|s| s.code()) };
            }
            i.state.clone()
        };
        let _ = ended.send(JobEnded { lease_id, state }).await;
    });
    Ok(job)
}

/// Kills the process group a previous run of this node left for `lease_id`
/// (recorded in its `pgid` file), if any; returns whether there was one.
pub fn kill_leftover(jobs_dir: &Path, lease_id: &LeaseId) -> bool {
    let path = job_dir(jobs_dir, lease_id).join("pgid");
    let Some(pgid) = std::fs::read_to_string(&path).ok().and_then(|s| s.trim().parse::<i32>().ok()) else {
        return false;
    };
    let _ = std::fs::remove_file(&path);
    if pgid > 1 {
        kill_group(pgid);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> LeaseId {
        LeaseId(agora_protocol::Hash([n; 32]))
    }

    fn buyer() -> agora_protocol::Address {
        agora_protocol::Keypair::from_seed_phrase("buyer").address()
    }

    fn sh(script: &str) -> JobSpec {
        JobSpec {
            command: vec!["sh".into(), "-c".into(), script.into()],
            env: vec![("GREETING".into(), "hello".into())],
            image: None,
        }
    }

    /// Whether any process of group `pgid` is alive (killed ones may linger as
    /// zombies until init reaps them; those do not count).
    fn group_alive(pgid: i32) -> bool {
        std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
            let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            let Some((_, rest)) = stat.rsplit_once(')') else { return false };
            let fields: Vec<&str> = rest.split_whitespace().collect();
            fields.len() > 2 && fields[2] == pgid.to_string() && fields[0] != "Z"
        })
    }

    async fn wait_ended(rx: &mut mpsc::Receiver<JobEnded>) -> JobEnded {
        tokio::time::timeout(Duration::from_secs(30), rx.recv()).await.expect("job should end").unwrap()
    }

    #[tokio::test(flavor = "current_thread")]
    async fn runs_with_cleared_env_and_leased_gpus_and_captures_output() {
        let tmp = tempfile::tempdir().unwrap();
        let (tx, mut rx) = mpsc::channel(4);
        // SAFETY: nextest runs each test in its own process; nothing else reads the environment now.
        unsafe { std::env::set_var("AGORA_SECRET_OF_THE_PROVIDER", "leak") };
        let spec = sh(
            "echo $GREETING; echo gpus=$CUDA_VISIBLE_DEVICES; echo secret=$AGORA_SECRET_OF_THE_PROVIDER; pwd; exit 3",
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        let ids = ["SIM-H100-0".to_string(), "SIM-H100-1".to_string()];
        let job = start(id(1), buyer(), &spec, &ids, tmp.path(), deadline, 1 << 20, tx).unwrap();
        let ended = wait_ended(&mut rx).await;
        assert_eq!(ended.state, JobState::Exited { code: Some(3) });
        let chunk = job.chunk(0);
        let text = String::from_utf8_lossy(&chunk.data);
        assert!(text.contains("hello\ngpus=SIM-H100-0,SIM-H100-1\nsecret=\n"), "{text}");
        assert!(text.contains(&job_dir(tmp.path(), &id(1)).join("work").display().to_string()), "{text}");
        assert_eq!(chunk.next_offset, chunk.data.len() as u64);
        assert_eq!(job.chunk(chunk.next_offset).data.len(), 0);
        let file = std::fs::read_to_string(job_dir(tmp.path(), &id(1)).join("output.log")).unwrap();
        assert_eq!(file, text);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn stop_kills_the_whole_process_group_at_once() {
        let tmp = tempfile::tempdir().unwrap();
        let (tx, mut rx) = mpsc::channel(4);
        // A child that would outlive a plain kill of the shell.
        let spec = sh("sleep 300 & echo started; wait");
        let job = start(id(2), buyer(), &spec, &[], tmp.path(), Instant::now() + Duration::from_secs(600), 1 << 20, tx)
            .unwrap();
        let pgid: i32 = loop {
            if let Ok(s) = std::fs::read_to_string(job_dir(tmp.path(), &id(2)).join("pgid")) {
                break s.trim().parse().unwrap();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        while !String::from_utf8_lossy(&job.chunk(0).data).contains("started") {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let stopped_at = Instant::now();
        job.stop("cancelled by the buyer");
        let ended = wait_ended(&mut rx).await;
        assert_eq!(ended.state, JobState::Stopped { reason: "cancelled by the buyer".into() });
        // SIGKILL is delivered asynchronously: the group must be gone within a second.
        while group_alive(pgid) && stopped_at.elapsed() < Duration::from_secs(1) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(!group_alive(pgid), "a process of the job's group survived a second after the stop");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_time_limit_stops_the_job_and_the_ring_keeps_the_newest_output() {
        let tmp = tempfile::tempdir().unwrap();
        let (tx, mut rx) = mpsc::channel(4);
        let spec = sh("i=0; while [ $i -lt 2000 ]; do echo line-$i; i=$((i+1)); done; sleep 300");
        let job =
            start(id(3), buyer(), &spec, &[], tmp.path(), Instant::now() + Duration::from_secs(2), 1000, tx).unwrap();
        let ended = wait_ended(&mut rx).await;
        assert_eq!(ended.state, JobState::Stopped { reason: "the lease's time ran out".into() });
        let chunk = job.chunk(0);
        assert!(chunk.first_available > 0, "old output was dropped from memory");
        assert_eq!(chunk.data.len(), 1000);
        assert!(String::from_utf8_lossy(&chunk.data).ends_with("line-1999\n"));
        let file = std::fs::read_to_string(job_dir(tmp.path(), &id(3)).join("output.log")).unwrap();
        assert!(file.starts_with("line-0\n"), "the file keeps everything");
    }

    #[test]
    fn a_missing_program_is_a_clear_error() {
        let tmp = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let (tx, _rx) = mpsc::channel(4);
        let spec = JobSpec { command: vec!["/no/such/program".into()], env: vec![], image: None };
        let err = rt
            .block_on(async { start(id(4), buyer(), &spec, &[], tmp.path(), Instant::now(), 100, tx).err() })
            .unwrap();
        assert!(err.contains("cannot start \"/no/such/program\""), "{err}");
    }
}
