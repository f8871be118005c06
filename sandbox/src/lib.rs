//! The sandbox a provider runs buyers' jobs in: each job in its own namespaces, root filesystem,
//! cgroup and uid, with no capabilities, `no_new_privs` and a seccomp
//! denylist; the provider's home, keys and other jobs are not in its world.
//! [`policy`] decides what the job sees, [`cgroup`] limits and kills it,
//! [`seccomp`] builds the filter, and `child` carries the plan out between
//! fork and exec.

pub mod cgroup;
mod child;
mod error;
pub mod policy;
pub mod seccomp;

use std::ffi::CString;
use std::path::{Path, PathBuf};

use agora_protocol::JobResources;

use self::cgroup::{JobCgroup, Layout};
pub use self::error::Error;
use self::error::io;
use self::policy::{HostEntry, LeasedDevice, Mount, PlanInputs};

/// First host uid (and gid) given to jobs; each job gets one of
/// [`JOB_UID_RANGE`] above it, far from system and login users.
pub const JOB_UID_BASE: u32 = 800_000;
/// How many distinct job uids there are.
pub const JOB_UID_RANGE: u32 = 100_000;

fn cstr(p: &Path) -> Result<CString, Error> {
    CString::new(p.as_os_str().as_encoded_bytes()).map_err(|_| Error::Nul(p.display().to_string()))
}

/// Whether this machine can sandbox jobs: root, usable cgroups, a seccomp filter for its architecture.
pub fn available() -> Result<(), Error> {
    probe_host().map(|_| ())
}

/// Root, the cgroup layout and the seccomp filters: what every sandbox needs from the host.
fn probe_host() -> Result<(Layout, Vec<seccompiler::BpfProgram>), Error> {
    // SAFETY: geteuid(2) has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(Error::NotRoot);
    }
    Ok((Layout::detect()?, seccomp::job_filters()?))
}

/// tmpfs mount options: a size (at least a page), a mode, and the job's uid/gid where it owns it.
fn tmpfs_options(size_bytes: u64, mode: u32, owner: Option<(u32, u32)>) -> Result<CString, Error> {
    let owner = owner.map(|(uid, gid)| format!(",uid={uid},gid={gid}")).unwrap_or_default();
    CString::new(format!("size={},mode={mode:o}{owner}", size_bytes.max(4096))).map_err(|_| Error::Nul("tmpfs".into()))
}

/// What a host path is, or None where it does not exist.
pub fn probe_entry(path: &Path) -> Option<HostEntry> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    if meta.file_type().is_symlink() {
        return std::fs::read_link(path).ok().map(HostEntry::Symlink);
    }
    Some(if meta.is_dir() { HostEntry::Dir } else { HostEntry::File })
}

/// One job to sandbox.
pub struct SandboxJob<'a> {
    /// The job's name in cgroups (the lease id in hex).
    pub name: String,
    /// The job's control directory on the host (logs, generated /etc, mount point); never inside its world.
    pub dir: &'a Path,
    pub leased: Vec<LeasedDevice>,
    pub real_gpus: bool,
    pub resources: JobResources,
    pub gpu_count: u32,
    /// Picks the job's uid.
    pub uid_seed: u32,
}

/// A job ready to spawn: what the child does, and the cgroup it will be in.
pub struct Prepared {
    child: child::Prepared,
    pub cgroup: JobCgroup,
    pub limits: policy::Limits,
}

/// The sandbox runner's host facts, probed once at start.
#[derive(Clone, Debug)]
pub struct Sandbox {
    layout: Layout,
    /// This node's cgroup directory name (jobs of other nodes on the host are not its business).
    node: String,
    filters: Vec<seccompiler::BpfProgram>,
    host: Vec<(PathBuf, HostEntry)>,
    extra: Vec<(PathBuf, HostEntry)>,
    host_devices: Vec<String>,
    forbidden: Vec<PathBuf>,
}

impl Sandbox {
    /// Checks that this host can sandbox jobs (root, cgroups, seccomp) and
    /// probes what to mount. `forbidden` are paths no job may see (the node's
    /// home and data); `extra_paths` are read-only paths the operator adds.
    pub fn new(node: &str, forbidden: &[PathBuf], extra_paths: &[PathBuf]) -> Result<Sandbox, Error> {
        let (layout, filters) = probe_host()?;
        let probe = |paths: &mut dyn Iterator<Item = PathBuf>| -> Vec<(PathBuf, HostEntry)> {
            paths.filter_map(|p| probe_entry(&p).map(|e| (p, e))).collect()
        };
        let host = probe(&mut policy::SYSTEM_PATHS.iter().map(PathBuf::from));
        let extra = probe(&mut extra_paths.iter().cloned());
        let host_devices = policy::BASIC_DEVICES
            .iter()
            .chain(policy::NVIDIA_CONTROL_DEVICES)
            .filter(|d| Path::new("/dev").join(d).exists())
            .map(|d| d.to_string())
            .collect();
        let forbidden = forbidden.iter().map(|p| std::fs::canonicalize(p).unwrap_or_else(|_| p.clone())).collect();
        let sandbox = Sandbox { layout, node: node.to_string(), filters, host, extra, host_devices, forbidden };
        // Refuse at start, not per job, when the configuration would expose the home.
        sandbox.plan(&SandboxJob {
            name: String::new(),
            dir: Path::new("/nonexistent"),
            leased: vec![],
            real_gpus: false,
            resources: JobResources {
                cpu_millicores_per_gpu: 1,
                memory_mib_per_gpu: 16,
                scratch_mib_per_gpu: 1,
                egress: false,
            },
            gpu_count: 1,
            uid_seed: 0,
        })?;
        Ok(sandbox)
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    fn uid(seed: u32) -> u32 {
        JOB_UID_BASE + seed % JOB_UID_RANGE
    }

    fn plan(&self, job: &SandboxJob<'_>) -> Result<policy::Plan, Error> {
        let uid = Sandbox::uid(job.uid_seed);
        policy::plan(&PlanInputs {
            host: &self.host,
            extra_paths: &self.extra,
            host_devices: &self.host_devices,
            leased: &job.leased,
            real_gpus: job.real_gpus,
            etc_dir: &job.dir.join("etc"),
            forbidden: &self.forbidden,
            resources: job.resources,
            gpu_count: job.gpu_count,
            uid,
            gid: uid,
        })
    }

    /// Writes the job's generated files, makes its cgroup and prepares the child's steps.
    pub fn prepare(&self, job: &SandboxJob<'_>) -> Result<Prepared, Error> {
        let plan = self.plan(job)?;
        let etc = job.dir.join("etc");
        let root = job.dir.join("root");
        for d in [&etc, &root] {
            std::fs::create_dir_all(d).map_err(io(d))?;
        }
        for (name, text) in policy::etc_files(plan.uid, plan.gid) {
            let path = etc.join(name);
            std::fs::write(&path, text).map_err(io(&path))?;
        }
        let cgroup = JobCgroup::create(&self.layout, &self.node, &job.name, &plan.limits)?;
        let steps = plan.mounts.iter().map(|m| step(&root, m, plan.uid, plan.gid)).collect::<Result<Vec<_>, _>>()?;
        let child = child::Prepared {
            cgroup_procs: cgroup.procs_files().iter().map(|p| cstr(p)).collect::<Result<_, _>>()?,
            root: cstr(&root)?,
            root_data: tmpfs_options(policy::ROOT_TMPFS_BYTES, 0o755, None)?,
            steps,
            isolate_network: plan.isolate_network,
            hostname: policy::JOB_HOSTNAME.as_bytes(),
            uid: plan.uid,
            gid: plan.gid,
            uid_map: format!("{0} {0} 1\n", plan.uid).into_bytes(),
            gid_map: format!("{0} {0} 1\n", plan.gid).into_bytes(),
            workdir: cstr(Path::new(policy::WORK_DIR))?,
            filters: self.filters.clone(),
        };
        Ok(Prepared { child, cgroup, limits: plan.limits })
    }

    /// Kills and removes every job cgroup an earlier run of this node left; returns their names.
    pub fn reap_leftovers(&self) -> Vec<String> {
        let names = self.layout.jobs_of(&self.node);
        for name in &names {
            let cg = JobCgroup::existing(&self.layout, &self.node, name);
            if let Err(e) = cg.destroy() {
                tracing::error!(job = %name, error = %e, "cannot remove a leftover job cgroup");
            }
        }
        names
    }
}

/// Sets the command up to run in the sandbox (the program is looked up inside it).
pub fn apply(cmd: &mut tokio::process::Command, prepared: Prepared) {
    let child = prepared.child;
    // SAFETY: `enter` runs between fork and exec and only makes system calls on `child`'s prepared data.
    unsafe {
        cmd.pre_exec(move || child::enter(&child));
    }
}

/// The host path of `target` under the job's root, and its ancestors below the root, top first.
fn under_root(root: &Path, target: &Path) -> Result<(CString, Vec<CString>), Error> {
    let rel = target.strip_prefix("/").unwrap_or(target);
    let full = root.join(rel);
    let mut parents: Vec<CString> = full
        .ancestors()
        .skip(1)
        .take_while(|a| a.starts_with(root) && *a != root)
        .map(cstr)
        .collect::<Result<_, _>>()?;
    parents.reverse();
    Ok((cstr(&full)?, parents))
}

fn step(root: &Path, m: &Mount, uid: u32, gid: u32) -> Result<child::Step, Error> {
    Ok(match m {
        Mount::BindReadOnly { source, target, dir } => {
            let (target, parents) = under_root(root, target)?;
            child::Step::Bind { source: cstr(source)?, target, parents, dir: *dir, readonly: true }
        }
        Mount::Device { source, target } => {
            let (target, parents) = under_root(root, target)?;
            child::Step::Bind { source: cstr(source)?, target, parents, dir: false, readonly: false }
        }
        Mount::Tmpfs { target, size_bytes, mode, job_owned } => {
            let (target, parents) = under_root(root, target)?;
            let data = tmpfs_options(*size_bytes, *mode, job_owned.then_some((uid, gid)))?;
            child::Step::Tmpfs { target, parents, data }
        }
        Mount::Proc { target } => {
            let (target, parents) = under_root(root, target)?;
            child::Step::Proc { target, parents }
        }
        Mount::Symlink { link, points_to } => {
            let (link, parents) = under_root(root, link)?;
            child::Step::Symlink { link, parents, points_to: cstr(points_to)? }
        }
    })
}
