//! One cgroup per job, under `agora/<node>/<lease>` in every hierarchy the
//! host has: cgroup v2 where it is the host's hierarchy (memory, pids and cpu
//! enabled on the way down), v1 otherwise (one directory per controller). It
//! limits memory, processes and CPU, kills every process of the job at once
//! (`cgroup.kill`, or freeze, kill, thaw), and lets a restarted node find the
//! jobs an earlier run left without trusting any file a job could write.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::{Error, io};
use crate::policy::{CPU_PERIOD_US, Limits};

/// Where the cgroup hierarchies are mounted.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// The directory under each hierarchy that holds every agora node's jobs.
pub const AGORA_CGROUP: &str = "agora";
/// v1 controllers a job's cgroup is made in (the first two are required).
const V1_CONTROLLERS: [&str; 4] = ["memory", "pids", "cpu", "freezer"];
/// How long a kill may take to empty the cgroup before it is reported as failed.
pub const KILL_TIMEOUT: Duration = Duration::from_secs(5);

/// Which cgroup layout the host has.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Layout {
    /// The unified hierarchy at this path.
    V2(PathBuf),
    /// Controller name → its hierarchy's mount point.
    V1(Vec<(&'static str, PathBuf)>),
}

fn write(path: &Path, value: &str) -> Result<(), Error> {
    std::fs::write(path, value).map_err(io(path))
}

impl Layout {
    /// Finds the host's layout: v2 when the root is the unified hierarchy with
    /// memory and pids available, else the v1 controllers that are mounted.
    pub fn detect() -> Result<Layout, Error> {
        Layout::detect_at(Path::new(CGROUP_ROOT))
    }

    pub fn detect_at(root: &Path) -> Result<Layout, Error> {
        if let Ok(controllers) = std::fs::read_to_string(root.join("cgroup.controllers")) {
            let has = |c: &str| controllers.split_whitespace().any(|x| x == c);
            return if has("memory") && has("pids") { Ok(Layout::V2(root.into())) } else { Err(Error::NoCgroups) };
        }
        let found: Vec<_> =
            V1_CONTROLLERS.iter().map(|c| (*c, root.join(c))).filter(|(_, p)| p.join("tasks").exists()).collect();
        if found.iter().filter(|(c, _)| ["memory", "pids"].contains(c)).count() < 2 {
            return Err(Error::NoCgroups);
        }
        Ok(Layout::V1(found))
    }

    /// The directories that make up the cgroup at `rel` (one per v1 controller).
    fn dirs(&self, rel: &Path) -> Vec<PathBuf> {
        match self {
            Layout::V2(root) => vec![root.join(rel)],
            Layout::V1(ctrls) => ctrls.iter().map(|(_, p)| p.join(rel)).collect(),
        }
    }

    fn dir_of(&self, controller: &str, rel: &Path) -> Option<PathBuf> {
        match self {
            Layout::V2(root) => Some(root.join(rel)),
            Layout::V1(ctrls) => ctrls.iter().find(|(c, _)| *c == controller).map(|(_, p)| p.join(rel)),
        }
    }

    /// The node's own subtree, `agora/<node>`, relative to each hierarchy.
    pub fn node_rel(node: &str) -> PathBuf {
        Path::new(AGORA_CGROUP).join(node)
    }

    /// Leftover job cgroups of this node (names only), from an earlier run.
    pub fn jobs_of(&self, node: &str) -> Vec<String> {
        let mut names: Vec<String> = self
            .dirs(&Layout::node_rel(node))
            .iter()
            .filter_map(|d| std::fs::read_dir(d).ok())
            .flat_map(|entries| entries.flatten())
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        names.sort();
        names.dedup();
        names
    }
}

/// A job's cgroup (in every hierarchy of the layout).
#[derive(Clone, Debug)]
pub struct JobCgroup {
    layout: Layout,
    rel: PathBuf,
}

impl JobCgroup {
    /// Creates `agora/<node>/<job>` (enabling v2 controllers on the way) and sets `limits`.
    pub fn create(layout: &Layout, node: &str, job: &str, limits: &Limits) -> Result<JobCgroup, Error> {
        let rel = Layout::node_rel(node).join(job);
        if let Layout::V2(root) = layout {
            // Controllers must be enabled in every parent's subtree_control.
            let mut dir = root.clone();
            for part in [Path::new(AGORA_CGROUP), Path::new(node)] {
                enable_v2_controllers(&dir)?;
                dir = dir.join(part);
                std::fs::create_dir_all(&dir).map_err(io(&dir))?;
            }
            enable_v2_controllers(&dir)?;
        }
        for d in layout.dirs(&rel) {
            std::fs::create_dir_all(&d).map_err(io(&d))?;
        }
        let cg = JobCgroup { layout: layout.clone(), rel };
        cg.set_limits(limits)?;
        Ok(cg)
    }

    /// The cgroup of an existing job (for killing what an earlier run left).
    pub fn existing(layout: &Layout, node: &str, job: &str) -> JobCgroup {
        JobCgroup { layout: layout.clone(), rel: Layout::node_rel(node).join(job) }
    }

    fn set_limits(&self, l: &Limits) -> Result<(), Error> {
        let quota = l.cpu_quota_us.max(1_000);
        match &self.layout {
            Layout::V2(root) => {
                let d = root.join(&self.rel);
                write(&d.join("memory.max"), &l.memory_bytes.to_string())?;
                // Swap would let a job exceed its memory on the host's disk.
                let _ = std::fs::write(d.join("memory.swap.max"), "0");
                write(&d.join("pids.max"), &l.pids.to_string())?;
                if d.join("cpu.max").exists() {
                    write(&d.join("cpu.max"), &format!("{quota} {CPU_PERIOD_US}"))?;
                }
            }
            Layout::V1(_) => {
                if let Some(d) = self.layout.dir_of("memory", &self.rel) {
                    write(&d.join("memory.limit_in_bytes"), &l.memory_bytes.to_string())?;
                    // Where swap is accounted, memory+swap gets the same cap (no swap).
                    let _ = std::fs::write(d.join("memory.memsw.limit_in_bytes"), l.memory_bytes.to_string());
                }
                if let Some(d) = self.layout.dir_of("pids", &self.rel) {
                    write(&d.join("pids.max"), &l.pids.to_string())?;
                }
                if let Some(d) = self.layout.dir_of("cpu", &self.rel) {
                    write(&d.join("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())?;
                    write(&d.join("cpu.cfs_quota_us"), &quota.to_string())?;
                }
            }
        }
        Ok(())
    }

    /// The `cgroup.procs` files a new process writes its pid into to join the job.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.layout.dirs(&self.rel).into_iter().map(|d| d.join("cgroup.procs")).collect()
    }

    /// Pids in the job's cgroup now.
    pub fn pids(&self) -> Vec<i32> {
        let mut pids: Vec<i32> = self
            .procs_files()
            .iter()
            .filter_map(|p| std::fs::read_to_string(p).ok())
            .flat_map(|s| s.split_whitespace().filter_map(|x| x.parse().ok()).collect::<Vec<i32>>())
            .collect();
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// Whether the cgroup still holds any process.
    pub fn is_empty(&self) -> bool {
        self.pids().is_empty()
    }

    /// Kills every process of the job at once, forks in flight included, and
    /// waits (up to [`KILL_TIMEOUT`]) until none is left.
    pub fn kill(&self) -> Result<(), Error> {
        let frozen = self.freeze(true);
        let deadline = Instant::now() + KILL_TIMEOUT;
        loop {
            let kill_file = self.layout.dir_of("", &self.rel).map(|d| d.join("cgroup.kill"));
            match kill_file.filter(|f| f.exists()) {
                Some(f) => write(&f, "1")?,
                None => {
                    for pid in self.pids() {
                        // SAFETY: kill(2) with a pid read from the job's own cgroup; no memory involved.
                        unsafe { libc::kill(pid, libc::SIGKILL) };
                    }
                }
            }
            if frozen {
                // Killed tasks die only once thawed.
                self.freeze(false);
            }
            if self.is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Error::Survivors(self.rel.display().to_string()));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Freezes (or thaws) the job so it cannot fork while it is being killed; false where no freezer exists.
    fn freeze(&self, on: bool) -> bool {
        match &self.layout {
            Layout::V2(root) => {
                let f = root.join(&self.rel).join("cgroup.freeze");
                f.exists() && std::fs::write(f, if on { "1" } else { "0" }).is_ok()
            }
            Layout::V1(_) => self
                .layout
                .dir_of("freezer", &self.rel)
                .is_some_and(|d| std::fs::write(d.join("freezer.state"), if on { "FROZEN" } else { "THAWED" }).is_ok()),
        }
    }

    /// Peak memory use in bytes, where the kernel reports it.
    pub fn memory_peak_bytes(&self) -> Option<u64> {
        let d = self.layout.dir_of("memory", &self.rel)?;
        ["memory.peak", "memory.max_usage_in_bytes"]
            .iter()
            .find_map(|f| std::fs::read_to_string(d.join(f)).ok())
            .and_then(|s| s.trim().parse().ok())
    }

    /// Whether the kernel's OOM killer acted in this job.
    pub fn oom_killed(&self) -> bool {
        let Some(d) = self.layout.dir_of("memory", &self.rel) else { return false };
        let events = std::fs::read_to_string(d.join("memory.events"))
            .or_else(|_| std::fs::read_to_string(d.join("memory.oom_control")))
            .unwrap_or_default();
        events.lines().any(|l| {
            let mut it = l.split_whitespace();
            matches!((it.next(), it.next()), (Some("oom_kill"), Some(n)) if n != "0")
        })
    }

    /// Kills what is left and removes the cgroup.
    pub fn destroy(&self) -> Result<(), Error> {
        self.kill()?;
        for d in self.layout.dirs(&self.rel) {
            if d.exists() {
                // rmdir (not remove_dir_all): a cgroup's files cannot be deleted, only the directory.
                std::fs::remove_dir(&d).map_err(io(&d))?;
            }
        }
        Ok(())
    }
}

fn enable_v2_controllers(dir: &Path) -> Result<(), Error> {
    let available = std::fs::read_to_string(dir.join("cgroup.controllers")).map_err(io(dir))?;
    for c in ["memory", "pids", "cpu"] {
        if available.split_whitespace().any(|x| x == c) {
            // Already enabled is fine; a controller that cannot be enabled shows up as a missing limit file.
            let _ = std::fs::write(dir.join("cgroup.subtree_control"), format!("+{c}"));
        }
    }
    Ok(())
}
