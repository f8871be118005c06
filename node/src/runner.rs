//! Runs a lease's job on the provider. By default in the sandbox (own
//! namespaces, root filesystem, cgroup and unprivileged uid: see
//! [`agora_sandbox`]); as a plain child process only on testnets that ask for
//! it (`Isolation::Process`); `--image` jobs in a hardened container. The
//! job gets a cleared environment plus the buyer's variables and
//! `CUDA_VISIBLE_DEVICES` naming exactly the leased GPUs; its stdout and
//! stderr go to a capped, rotated log file outside its world and a bounded
//! in-memory ring the buyer reads over the lease protocol. The lease's time
//! limit is enforced, and cancel, expiry or shutdown kill the whole job.

use std::collections::VecDeque;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agora_protocol::job::{JobSpec, JobState, LogChunk};
use agora_protocol::limits::MAX_LOG_CHUNK_BYTES;
use agora_protocol::{JobResources, LeaseId};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

use agora_sandbox::cgroup::JobCgroup;
use agora_sandbox::policy::LeasedDevice;
use agora_sandbox::{Sandbox, SandboxJob};

/// Default bytes of a job's output kept in memory for the buyer.
pub const DEFAULT_LOG_RING_BYTES: usize = 1024 * 1024;
/// Default size of a job's log file before it is rotated (one old file is kept).
pub const DEFAULT_LOG_FILE_BYTES: u64 = 64 * 1024 * 1024;
/// PATH a job gets unless the buyer sets one.
pub const JOB_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Job-ended reports queued for the daemon at most.
pub const JOB_EVENTS_QUEUE: usize = 256;
/// Name prefix of the containers of `--image` jobs.
pub const CONTAINER_PREFIX: &str = "agora-";
/// The job's log file, in its control directory.
pub const LOG_FILE: &str = "output.log";

/// How this provider runs jobs: plain commands (if at all) and images (where a Docker Engine answers).
#[derive(Clone, Default)]
pub struct Runners {
    pub plain: Option<Isolation>,
    pub docker: Option<Arc<crate::docker::Engine>>,
}

/// How plain (non-image) jobs run on this provider.
#[derive(Clone)]
pub enum Isolation {
    /// In the sandbox: the default, and the only choice on a host with real GPUs.
    Sandbox(Arc<Sandbox>),
    /// As a child process of the node, as the node's user: testnets with simulated GPUs only.
    Process,
}

/// A leased GPU as the runner needs it.
#[derive(Clone, Debug)]
pub struct LeasedGpu {
    pub id: String,
    pub index: u32,
    pub simulated: bool,
}

/// Where a job's output goes and how much of it is kept.
#[derive(Clone, Copy, Debug)]
pub struct LogLimits {
    pub ring_bytes: usize,
    pub file_bytes: u64,
}

/// Everything needed to start one job.
pub struct Launch<'a> {
    pub lease_id: LeaseId,
    pub buyer: agora_protocol::Address,
    pub spec: &'a JobSpec,
    pub gpus: &'a [LeasedGpu],
    pub jobs_dir: &'a Path,
    pub deadline: Instant,
    pub log: LogLimits,
    pub resources: JobResources,
}

/// The job's output: a capped file on disk (rotated once), the newest part in memory.
struct JobLog {
    ring: VecDeque<u8>,
    cap: usize,
    /// Bytes written so far; the ring holds the last `ring.len()` of them.
    total: u64,
    file: Option<LogFile>,
}

struct LogFile {
    path: PathBuf,
    file: std::fs::File,
    written: u64,
    cap: u64,
}

impl LogFile {
    fn write(&mut self, data: &[u8]) {
        if self.written + data.len() as u64 > self.cap {
            // Rotate: one previous file is kept, so the disk holds at most twice the cap.
            let old = self.path.with_extension("log.1");
            let _ = std::fs::rename(&self.path, old);
            match std::fs::File::create(&self.path) {
                Ok(f) => self.file = f,
                Err(_) => return,
            }
            self.written = 0;
        }
        let take = data.len().min(self.cap as usize);
        // The file is for the operator; a full disk must not stop the job.
        if self.file.write_all(&data[..take]).is_ok() {
            self.written += take as u64;
        }
    }
}

impl JobLog {
    fn append(&mut self, data: &[u8]) {
        if let Some(f) = self.file.as_mut() {
            f.write(data);
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

/// How to kill a running job.
enum Handle {
    /// The process group of a process-runner job.
    Group(i32),
    /// The sandbox's outer process (its death takes the job's pid namespace with it) and cgroup.
    Sandbox { pid: i32, cgroup: JobCgroup },
    /// A container, killed through the Engine.
    Container { engine: Arc<crate::docker::Engine>, name: String },
}

struct Inner {
    log: JobLog,
    state: JobState,
    handle: Option<Handle>,
}

/// A job this provider runs or ran; cheap to clone.
#[derive(Clone)]
pub struct Job {
    pub lease_id: LeaseId,
    pub buyer: agora_protocol::Address,
    pub dir: PathBuf,
    inner: Arc<Mutex<Inner>>,
    /// When the lease's paid time runs out; moved later when the lease is extended.
    deadline: Arc<tokio::sync::watch::Sender<Instant>>,
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

fn kill_handle(handle: &Handle) {
    match handle {
        Handle::Group(pgid) => kill_group(*pgid),
        Handle::Sandbox { pid, cgroup } => {
            // SAFETY: kill(2) of the job's outer process, which the node spawned and has not reaped yet.
            unsafe { libc::kill(*pid, libc::SIGKILL) };
            let cgroup = cgroup.clone();
            // Killing through the cgroup as well catches anything that raced the namespace's end.
            std::thread::spawn(move || {
                if let Err(e) = cgroup.kill() {
                    tracing::error!(error = %e, "job cgroup kill");
                }
            });
        }
        Handle::Container { engine, name } => {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                let (engine, name) = (engine.clone(), name.clone());
                rt.spawn(async move { engine.kill(&name).await });
            }
        }
    }
}

impl Job {
    /// A job known only from disk (after a restart): its log file, a final state.
    pub fn finished(lease_id: LeaseId, buyer: agora_protocol::Address, dir: &Path, state: JobState, cap: usize) -> Job {
        let mut log = JobLog { ring: VecDeque::new(), cap, total: 0, file: None };
        if let Ok(bytes) = std::fs::read(dir.join(LOG_FILE)) {
            log.append(&bytes);
        }
        let inner = Inner { log, state, handle: None };
        let deadline = Arc::new(tokio::sync::watch::Sender::new(Instant::now()));
        Job { lease_id, buyer, dir: dir.to_path_buf(), inner: Arc::new(Mutex::new(inner)), deadline }
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

    /// Kills the whole job (every process of it) and records why.
    pub fn stop(&self, reason: &str) {
        let Ok(mut i) = self.inner.lock() else { return };
        if i.state == JobState::Running || i.state == JobState::Waiting {
            i.state = JobState::Stopped { reason: reason.to_string() };
        }
        if let Some(h) = i.handle.as_ref() {
            kill_handle(h);
        }
    }
}

/// Where a job's files live: `jobs_dir/LEASE_ID/{spec.json,output.log,…}`.
pub fn job_dir(jobs_dir: &Path, lease_id: &LeaseId) -> PathBuf {
    jobs_dir.join(lease_id.to_string())
}

/// The device each leased GPU is in the job: the real `/dev/nvidiaN`, or a
/// read-only stand-in file (made in the job's control directory) for a simulated one.
fn leased_devices(dir: &Path, gpus: &[LeasedGpu]) -> Result<Vec<LeasedDevice>, String> {
    let stand_ins = dir.join("dev");
    let mut devices = Vec::new();
    for g in gpus {
        let name = format!("nvidia{}", g.index);
        let host_path = if g.simulated {
            std::fs::create_dir_all(&stand_ins).map_err(|e| format!("{}: {e}", stand_ins.display()))?;
            let path = stand_ins.join(&name);
            std::fs::write(&path, format!("simulated GPU {}\n", g.id))
                .map_err(|e| format!("{}: {e}", path.display()))?;
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o444));
            path
        } else {
            PathBuf::from(format!("/dev/{name}"))
        };
        devices.push(LeasedDevice { host_path, name });
    }
    Ok(devices)
}

/// The job's program and arguments with a cleared environment.
fn job_command(spec: &JobSpec) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(&spec.command[0]);
    c.args(&spec.command[1..]).env_clear();
    c
}

/// The uid seed of a job: from its lease id, so concurrent jobs almost never share a uid.
fn uid_seed(lease_id: &LeaseId) -> u32 {
    let b = lease_id.0.0;
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// Starts a job for a committed lease; it ends by itself, at the deadline,
/// or when stopped, and then `ended` hears of it.
pub fn start(launch: Launch<'_>, runners: &Runners, ended: mpsc::Sender<JobEnded>) -> Result<Job, String> {
    let dir = job_dir(launch.jobs_dir, &launch.lease_id);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let spec = launch.spec;
    if let Ok(json) = serde_json::to_vec_pretty(&serde_json::json!({ "command": spec.command, "image": spec.image })) {
        let _ = std::fs::write(dir.join("spec.json"), json);
    }
    match (&spec.image, &runners.plain, &runners.docker) {
        (Some(image), _, Some(engine)) => Ok(start_container(launch, image, engine.clone(), dir, ended)),
        (Some(_), _, None) => Err("this provider does not run container images".into()),
        (None, Some(isolation), _) => start_process(launch, isolation, dir, ended),
        (None, None, _) => Err("this provider runs only container images".into()),
    }
}

/// A new job's shared state, running, with its log file.
fn new_job(
    lease_id: LeaseId,
    buyer: agora_protocol::Address,
    dir: &Path,
    log: LogLimits,
    handle: Option<Handle>,
    deadline: Instant,
) -> Job {
    let file = std::fs::File::create(dir.join(LOG_FILE)).ok().map(|file| LogFile {
        path: dir.join(LOG_FILE),
        file,
        written: 0,
        cap: log.file_bytes.max(1),
    });
    let job_log = JobLog { ring: VecDeque::new(), cap: log.ring_bytes.max(1), total: 0, file };
    let inner = Arc::new(Mutex::new(Inner { log: job_log, state: JobState::Running, handle }));
    let deadline = Arc::new(tokio::sync::watch::Sender::new(deadline));
    Job { lease_id, buyer, dir: dir.to_path_buf(), inner, deadline }
}

impl Job {
    /// The lease was extended: the job may run until `until`.
    pub fn extend(&self, until: Instant) {
        self.deadline.send_if_modified(|d| {
            let later = until > *d;
            if later {
                *d = until;
            }
            later
        });
    }

    /// Resolves when the deadline passes (following any extension).
    async fn deadline_passed(&self) {
        let mut rx = self.deadline.subscribe();
        loop {
            let at = *rx.borrow_and_update();
            tokio::select! {
                _ = tokio::time::sleep_until(at.into()) => return,
                changed = rx.changed() => if changed.is_err() {
                    tokio::time::sleep_until(at.into()).await;
                    return;
                },
            }
        }
    }

    /// The job never got going: says why in its log, records it and reports the end.
    async fn failed_to_start(&self, why: &str, ended: &mpsc::Sender<JobEnded>) {
        self.append(format!("agora: {why}\n").as_bytes());
        self.stop(&format!("the job could not start: {why}"));
        let state = self.finish(None, None);
        let _ = ended.send(JobEnded { lease_id: self.lease_id, state }).await;
    }

    fn append(&self, data: &[u8]) {
        if let Ok(mut i) = self.inner.lock() {
            i.log.append(data);
        }
    }

    /// Records how the job ended (unless it was stopped first) and returns the final state.
    fn finish(&self, code: Option<i32>, note: Option<&str>) -> JobState {
        let Ok(mut i) = self.inner.lock() else { return JobState::Stopped { reason: "internal error".into() } };
        i.handle = None;
        if let Some(note) = note {
            i.log.append(note.as_bytes());
        }
        if i.state == JobState::Running {
            i.state = JobState::Exited { code };
        }
        i.state.clone()
    }
}

/// Runs an image job in a container through the Engine; creation failures
/// (an image that cannot be had, say) end the job with the reason in its log.
fn start_container(
    launch: Launch<'_>,
    image: &str,
    engine: Arc<crate::docker::Engine>,
    dir: PathBuf,
    ended: mpsc::Sender<JobEnded>,
) -> Job {
    let Launch { lease_id, buyer, spec, gpus, deadline, log, resources, .. } = launch;
    let name = format!("{CONTAINER_PREFIX}{lease_id}");
    let body = crate::docker::container_body(image, spec, gpus, &lease_id, engine.node(), &resources);
    let handle = Handle::Container { engine: engine.clone(), name: name.clone() };
    let job = new_job(lease_id, buyer, &dir, log, Some(handle), deadline);
    let task_job = job.clone();
    tokio::spawn(async move {
        let job = task_job;
        if let Err(why) = engine.start(&name, body).await {
            engine.remove(&name).await;
            job.failed_to_start(&why, &ended).await;
            return;
        }
        let reader = engine.logs(&name).map(|stream| {
            let job = job.clone();
            tokio::spawn(async move {
                use futures::StreamExt;
                let mut stream = std::pin::pin!(stream);
                while let Some(chunk) = stream.next().await {
                    job.append(&chunk);
                }
            })
        });
        let code = tokio::select! {
            r = engine.wait(&name) => r.ok(),
            _ = job.deadline_passed() => None,
        };
        if code.is_none() {
            job.stop("the lease's time ran out");
            engine.kill(&name).await;
        }
        if let Ok(r) = reader {
            // Output written before the end is still on its way.
            let _ = tokio::time::timeout(Duration::from_secs(2), r).await;
        }
        engine.remove(&name).await;
        let state = job.finish(code.and_then(|c| i32::try_from(c).ok()), None);
        let _ = ended.send(JobEnded { lease_id, state }).await;
    });
    job
}

/// Runs a plain job in the sandbox or as a process.
fn start_process(
    launch: Launch<'_>,
    isolation: &Isolation,
    dir: PathBuf,
    ended: mpsc::Sender<JobEnded>,
) -> Result<Job, String> {
    let Launch { lease_id, buyer, spec, gpus, deadline, log, resources, .. } = launch;
    let visible = gpus.iter().map(|g| g.id.as_str()).collect::<Vec<_>>().join(",");
    // The sandbox's cgroup, for killing and removing the job; None for the process runner.
    let mut cgroup = None;
    let mut cmd = match isolation {
        Isolation::Sandbox(sandbox) => {
            let job = SandboxJob {
                name: lease_id.to_string(),
                dir: &dir,
                leased: leased_devices(&dir, gpus)?,
                real_gpus: gpus.iter().any(|g| !g.simulated),
                resources,
                gpu_count: gpus.len() as u32,
                uid_seed: uid_seed(&lease_id),
            };
            let prepared = sandbox.prepare(&job).map_err(|e| format!("the sandbox could not be set up: {e}"))?;
            let mut c = job_command(spec);
            c.env("HOME", agora_sandbox::policy::WORK_DIR);
            cgroup = Some(prepared.cgroup.clone());
            agora_sandbox::apply(&mut c, prepared);
            c
        }
        Isolation::Process => {
            let work = dir.join("work");
            std::fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
            let mut c = job_command(spec);
            c.env("HOME", &work).current_dir(&work).process_group(0);
            c
        }
    };
    cmd.envs(spec.env.iter().map(|(k, v)| (k, v)));
    cmd.env("PATH", JOB_PATH)
        .env("CUDA_VISIBLE_DEVICES", &visible)
        .env("NVIDIA_VISIBLE_DEVICES", &visible)
        .env("AGORA_LEASE_ID", lease_id.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    // Spawning waits until the job has exec'd (for the sandbox: after its root is built), which
    // must not hold up the daemon's loop: the job is Running from now, its handle set once spawned.
    let job = new_job(lease_id, buyer, &dir, log, None, deadline);
    let task_job = job.clone();
    let program = spec.command[0].clone();
    tokio::spawn(async move {
        let job = task_job;
        let spawned = tokio::task::spawn_blocking(move || cmd.spawn()).await;
        let child = match spawned {
            Ok(Ok(child)) => child,
            failed => {
                let why = match failed {
                    Ok(Err(e)) => format!("cannot start {program:?}: {e}"),
                    _ => "the runner failed".to_string(),
                };
                if let Some(cgroup) = cgroup {
                    let _ = tokio::task::spawn_blocking(move || cgroup.destroy()).await;
                }
                job.failed_to_start(&why, &ended).await;
                return;
            }
        };
        supervise(job, child, cgroup, &dir, ended).await;
    });
    Ok(job)
}

/// Follows a spawned job: its output into the log, the deadline, and its end
/// (every process left behind killed, the sandbox's cgroup removed).
async fn supervise(
    job: Job,
    mut child: tokio::process::Child,
    cgroup: Option<JobCgroup>,
    dir: &Path,
    ended: mpsc::Sender<JobEnded>,
) {
    let pid = child.id().map(|p| p as i32);
    let handle = match (cgroup, pid) {
        (Some(cgroup), Some(pid)) => Some(Handle::Sandbox { pid, cgroup }),
        (None, Some(pid)) => {
            let _ = std::fs::write(dir.join("pgid"), pid.to_string());
            Some(Handle::Group(pid))
        }
        _ => None,
    };
    if let Ok(mut i) = job.inner.lock() {
        // Stopped while it was being spawned: kill it at once.
        if let (false, Some(h)) = (i.state == JobState::Running, handle.as_ref()) {
            kill_handle(h);
        }
        i.handle = handle;
    }
    let readers: Vec<_> = [
        child.stdout.take().map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
        child.stderr.take().map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
    ]
    .into_iter()
    .flatten()
    .map(|mut stream| {
        let job = job.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 16 * 1024];
            while let Ok(n) = stream.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                job.append(&buf[..n]);
            }
        })
    })
    .collect();
    let status = tokio::select! {
        s = child.wait() => s.ok(),
        _ = job.deadline_passed() => None,
    };
    if status.is_none() {
        job.stop("the lease's time ran out");
        let _ = child.wait().await;
    }
    let handle = job.inner.lock().ok().and_then(|mut i| i.handle.take());
    let note = match handle {
        // Children the job left behind go with it.
        Some(Handle::Group(pgid)) => {
            kill_group(pgid);
            None
        }
        Some(Handle::Sandbox { cgroup, .. }) => {
            let oom = cgroup.oom_killed();
            let _ = tokio::task::spawn_blocking(move || {
                if let Err(e) = cgroup.destroy() {
                    tracing::error!(error = %e, "removing the job's cgroup");
                }
            })
            .await;
            oom.then_some("\nagora: the job reached its memory limit and the kernel killed a process of it\n")
        }
        _ => None,
    };
    for r in readers {
        // Output written before the exit is still in the pipes.
        let _ = tokio::time::timeout(Duration::from_secs(2), r).await;
    }
    let state = job.finish(status.and_then(|s| s.code()), note);
    let _ = ended.send(JobEnded { lease_id: job.lease_id, state }).await;
}

/// Kills the process group a previous process-runner run of this node left
/// for `lease_id` (recorded in its `pgid` file), if any; returns whether there
/// was one. Only for the testnet-only process runner: sandboxed jobs are
/// found by their cgroups ([`Sandbox::reap_leftovers`]), which no job can forge.
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

/// Deletes the control directories of jobs that are not running and whose
/// log has not changed for `retention`; returns how many were removed.
pub fn sweep_job_dirs(jobs_dir: &Path, running: &dyn Fn(&str) -> bool, retention: Duration) -> usize {
    let Ok(entries) = std::fs::read_dir(jobs_dir) else { return 0 };
    let now = std::time::SystemTime::now();
    let mut removed = 0;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if running(&name) || !e.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let last = std::fs::metadata(e.path().join(LOG_FILE)).or_else(|_| e.metadata()).and_then(|m| m.modified());
        let old = last.ok().and_then(|t| now.duration_since(t).ok()).is_some_and(|age| age >= retention);
        if old && std::fs::remove_dir_all(e.path()).is_ok() {
            removed += 1;
        }
    }
    removed
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
            egress: false,
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

    fn gpus(ids: &[&str]) -> Vec<LeasedGpu> {
        ids.iter()
            .enumerate()
            .map(|(i, id)| LeasedGpu { id: id.to_string(), index: i as u32, simulated: true })
            .collect()
    }

    fn resources() -> JobResources {
        JobResources { cpu_millicores_per_gpu: 1000, memory_mib_per_gpu: 512, scratch_mib_per_gpu: 64, egress: false }
    }

    /// Starts `spec` with the process runner.
    fn run(
        lease: LeaseId,
        spec: &JobSpec,
        gpus: &[LeasedGpu],
        dir: &Path,
        deadline: Instant,
        ring_bytes: usize,
        tx: mpsc::Sender<JobEnded>,
    ) -> Result<Job, String> {
        let launch = Launch {
            lease_id: lease,
            buyer: buyer(),
            spec,
            gpus,
            jobs_dir: dir,
            deadline,
            log: LogLimits { ring_bytes, file_bytes: DEFAULT_LOG_FILE_BYTES },
            resources: resources(),
        };
        start(launch, &Runners { plain: Some(Isolation::Process), docker: None }, tx)
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
        let ids = gpus(&["SIM-H100-0", "SIM-H100-1"]);
        let job = run(id(1), &spec, &ids, tmp.path(), deadline, 1 << 20, tx).unwrap();
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
        let job = run(id(2), &spec, &[], tmp.path(), Instant::now() + Duration::from_secs(600), 1 << 20, tx).unwrap();
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
    async fn an_extended_lease_moves_the_jobs_time_limit() {
        let tmp = tempfile::tempdir().unwrap();
        let (tx, mut rx) = mpsc::channel(4);
        let job =
            run(id(5), &sh("sleep 2; echo done"), &[], tmp.path(), Instant::now() + Duration::from_secs(1), 1000, tx)
                .unwrap();
        job.extend(Instant::now() + Duration::from_secs(60));
        job.extend(Instant::now() + Duration::from_millis(10));
        let ended = wait_ended(&mut rx).await;
        assert_eq!(ended.state, JobState::Exited { code: Some(0) }, "ran past the first limit; never shortened");
        assert_eq!(job.chunk(0).data, b"done\n");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_time_limit_stops_the_job_and_the_ring_keeps_the_newest_output() {
        let tmp = tempfile::tempdir().unwrap();
        let (tx, mut rx) = mpsc::channel(4);
        let spec = sh("i=0; while [ $i -lt 2000 ]; do echo line-$i; i=$((i+1)); done; sleep 300");
        let job = run(id(3), &spec, &[], tmp.path(), Instant::now() + Duration::from_secs(2), 1000, tx).unwrap();
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
    fn a_missing_program_ends_the_job_with_a_clear_reason() {
        let tmp = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let (tx, mut rx) = mpsc::channel(4);
        let spec = JobSpec { command: vec!["/no/such/program".into()], env: vec![], image: None, egress: false };
        let deadline = Instant::now() + Duration::from_secs(30);
        let (ended, job) = rt.block_on(async {
            let job = run(id(4), &spec, &[], tmp.path(), deadline, 1000, tx).unwrap();
            (wait_ended(&mut rx).await, job)
        });
        let JobState::Stopped { reason } = ended.state else { panic!("{:?}", ended.state) };
        assert!(reason.contains("cannot start \"/no/such/program\""), "{reason}");
        assert!(String::from_utf8_lossy(&job.chunk(0).data).contains("agora: cannot start"));
    }

    #[test]
    fn the_log_file_is_capped_and_rotated_once() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join(LOG_FILE);
        let file = std::fs::File::create(&path).unwrap();
        let mut log = JobLog {
            ring: VecDeque::new(),
            cap: 10,
            total: 0,
            file: Some(LogFile { path: path.clone(), file, written: 0, cap: 100 }),
        };
        for i in 0..50u8 {
            log.append(&[b'a' + (i % 26); 10]);
        }
        let current = std::fs::metadata(&path).unwrap().len();
        let old = std::fs::metadata(path.with_extension("log.1")).unwrap().len();
        assert!(current <= 100 && old <= 100, "at most twice the cap on disk: {current} + {old}");
        assert_eq!(log.total, 500, "the buyer's offsets still count every byte");
        assert_eq!(log.ring.len(), 10, "the ring stays bounded");
        let dirs = std::fs::read_dir(tmp.path()).unwrap().count();
        assert_eq!(dirs, 2, "one old file is kept, no more");
    }

    #[test]
    fn finished_jobs_files_are_swept_after_the_retention() {
        let tmp = tempfile::tempdir().unwrap();
        for name in ["done", "running"] {
            std::fs::create_dir_all(tmp.path().join(name)).unwrap();
            std::fs::write(tmp.path().join(name).join(LOG_FILE), "x").unwrap();
        }
        let running = |n: &str| n == "running";
        assert_eq!(sweep_job_dirs(tmp.path(), &running, Duration::from_secs(3600)), 0, "too recent");
        assert_eq!(sweep_job_dirs(tmp.path(), &running, Duration::ZERO), 1);
        assert!(!tmp.path().join("done").exists() && tmp.path().join("running").exists());
    }
}
