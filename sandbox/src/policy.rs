//! What a sandboxed job sees and may use, decided without I/O: the mounts of
//! its root filesystem (read-only system directories, private scratch, /tmp,
//! /proc and /dev), the device nodes of exactly the leased GPUs, and its
//! cgroup limits. The spawner carries the plan out step by step; tests check
//! the plan itself (nothing of the node's home, no unleased GPU).

use std::path::{Path, PathBuf};

use agora_protocol::JobResources;

use crate::error::Error;

/// Host paths bound read-only into every job when they exist: the programs,
/// libraries and certificates a job needs, nothing with host secrets.
pub const SYSTEM_PATHS: &[&str] = &[
    "/usr",
    "/bin",
    "/sbin",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/etc/alternatives",
    "/etc/ssl",
    "/etc/ca-certificates",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/localtime",
    "/etc/nsswitch.conf",
];
/// Host devices every job gets (harmless ones, as in every container runtime).
pub const BASIC_DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];
/// NVIDIA control devices a job with a real GPU needs besides its own `/dev/nvidiaN`.
pub const NVIDIA_CONTROL_DEVICES: &[&str] = &["nvidiactl", "nvidia-uvm", "nvidia-uvm-tools", "nvidia-modeset"];
/// The job's writable working directory inside the sandbox.
pub const WORK_DIR: &str = "/work";
/// Size of the root tmpfs the mounts hang from (mount points and /etc files only).
pub const ROOT_TMPFS_BYTES: u64 = 4 * 1024 * 1024;
/// Size of /dev (device mount points and symlinks only).
pub const DEV_TMPFS_BYTES: u64 = 64 * 1024;
/// Processes and threads a job may have at once, per leased GPU (a fork bomb stops here).
pub const PIDS_PER_GPU: u64 = 1_024;
/// The host name a job sees.
pub const JOB_HOSTNAME: &str = "agora-job";

/// What a host path is, as probed by the runner (the plan follows symlinks by
/// recreating them, so `/bin -> usr/bin` stays a link inside the job).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostEntry {
    Dir,
    File,
    Symlink(PathBuf),
}

/// One step of building the job's root, in order; targets are inside the new root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mount {
    /// A host path seen read-only (and nosuid, nodev).
    BindReadOnly {
        source: PathBuf,
        target: PathBuf,
        dir: bool,
    },
    /// A host device node (or a simulated GPU's stand-in file), read-write.
    Device {
        source: PathBuf,
        target: PathBuf,
    },
    /// A fresh memory-backed filesystem of at most `size_bytes`, nosuid, nodev
    /// (owned by the job's uid when `job_owned`, else by root).
    Tmpfs {
        target: PathBuf,
        size_bytes: u64,
        mode: u32,
        job_owned: bool,
    },
    /// The job's own /proc (it sees only its pid namespace).
    Proc {
        target: PathBuf,
    },
    Symlink {
        link: PathBuf,
        points_to: PathBuf,
    },
}

/// A GPU of the lease: its device node on the host and the name it gets in the job's /dev.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeasedDevice {
    pub host_path: PathBuf,
    pub name: String,
}

/// Cgroup limits of one job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub memory_bytes: u64,
    pub pids: u64,
    /// CPU time per 100 ms period, in microseconds (`cpu.max` / `cfs_quota_us`).
    pub cpu_quota_us: u64,
    pub scratch_bytes: u64,
}

/// CFS period the CPU quota is measured against.
pub const CPU_PERIOD_US: u64 = 100_000;

/// Everything the spawner needs to build the job's world.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub mounts: Vec<Mount>,
    pub limits: Limits,
    /// Whether the job gets a network namespace of its own with only loopback.
    pub isolate_network: bool,
    pub uid: u32,
    pub gid: u32,
}

/// What the plan is built from.
#[derive(Clone, Debug)]
pub struct PlanInputs<'a> {
    /// System paths that exist on this host, as probed (see [`SYSTEM_PATHS`]).
    pub host: &'a [(PathBuf, HostEntry)],
    /// Extra read-only paths the operator allows (e.g. `/opt/conda`).
    pub extra_paths: &'a [(PathBuf, HostEntry)],
    /// Basic and NVIDIA control devices present on this host, by name under /dev.
    pub host_devices: &'a [String],
    pub leased: &'a [LeasedDevice],
    /// Whether any leased GPU is real (then the NVIDIA control devices are needed).
    pub real_gpus: bool,
    /// Directory of the job's generated /etc files (passwd, group, hosts), outside its tree.
    pub etc_dir: &'a Path,
    /// Paths no job may see: the node's home, its data and the other jobs.
    pub forbidden: &'a [PathBuf],
    pub resources: JobResources,
    pub gpu_count: u32,
    pub uid: u32,
    pub gid: u32,
}

fn overlaps(a: &Path, b: &Path) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

/// The job's limits: per-GPU resources times the leased GPUs (saturating).
pub fn limits(resources: &JobResources, gpus: u32) -> Limits {
    let n = u64::from(gpus.max(1));
    let mib = 1024 * 1024;
    Limits {
        memory_bytes: u64::from(resources.memory_mib_per_gpu).saturating_mul(mib).saturating_mul(n),
        pids: PIDS_PER_GPU.saturating_mul(n),
        cpu_quota_us: u64::from(resources.cpu_millicores_per_gpu).saturating_mul(n).saturating_mul(CPU_PERIOD_US)
            / 1000,
        scratch_bytes: u64::from(resources.scratch_mib_per_gpu).saturating_mul(mib).saturating_mul(n),
    }
}

/// Builds the plan for one job.
pub fn plan(inputs: &PlanInputs<'_>) -> Result<Plan, Error> {
    if inputs.gpu_count == 0 {
        return Err(Error::NoGpu);
    }
    let limits = limits(&inputs.resources, inputs.gpu_count);
    let mut mounts = vec![];
    for (path, entry) in inputs.host.iter().chain(inputs.extra_paths) {
        if !path.is_absolute() {
            return Err(Error::NotAbsolute(path.display().to_string()));
        }
        // A symlink exposes nothing by itself: what it points to is bound (or not) on its own.
        if !matches!(entry, HostEntry::Symlink(_)) {
            if let Some(f) = inputs.forbidden.iter().find(|f| overlaps(path, f)) {
                return Err(Error::ExposesForbidden {
                    path: path.display().to_string(),
                    forbidden: f.display().to_string(),
                });
            }
        }
        mounts.push(match entry {
            HostEntry::Symlink(to) => Mount::Symlink { link: path.clone(), points_to: to.clone() },
            HostEntry::Dir | HostEntry::File => {
                Mount::BindReadOnly { source: path.clone(), target: path.clone(), dir: *entry == HostEntry::Dir }
            }
        });
    }
    for name in ["passwd", "group", "hosts"] {
        mounts.push(Mount::BindReadOnly {
            source: inputs.etc_dir.join(name),
            target: Path::new("/etc").join(name),
            dir: false,
        });
    }
    let scratch = limits.scratch_bytes;
    mounts.push(Mount::Tmpfs { target: WORK_DIR.into(), size_bytes: scratch, mode: 0o700, job_owned: true });
    mounts.push(Mount::Tmpfs { target: "/tmp".into(), size_bytes: scratch, mode: 0o1777, job_owned: false });
    mounts.push(Mount::Proc { target: "/proc".into() });
    mounts.push(Mount::Tmpfs { target: "/dev".into(), size_bytes: DEV_TMPFS_BYTES, mode: 0o755, job_owned: false });
    mounts.push(Mount::Tmpfs { target: "/dev/shm".into(), size_bytes: scratch, mode: 0o1777, job_owned: false });
    let wanted =
        |name: &str| BASIC_DEVICES.contains(&name) || (inputs.real_gpus && NVIDIA_CONTROL_DEVICES.contains(&name));
    for name in inputs.host_devices.iter().filter(|n| wanted(n)) {
        mounts.push(Mount::Device { source: Path::new("/dev").join(name), target: Path::new("/dev").join(name) });
    }
    for d in inputs.leased {
        mounts.push(Mount::Device { source: d.host_path.clone(), target: Path::new("/dev").join(&d.name) });
    }
    for (link, to) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        mounts.push(Mount::Symlink { link: Path::new("/dev").join(link), points_to: to.into() });
    }
    Ok(Plan { mounts, limits, isolate_network: true, uid: inputs.uid, gid: inputs.gid })
}

/// The job's /etc/passwd, /etc/group and /etc/hosts.
pub fn etc_files(uid: u32, gid: u32) -> [(&'static str, String); 3] {
    [
        (
            "passwd",
            format!("root:x:0:0:root:/root:/usr/sbin/nologin\njob:x:{uid}:{gid}:agora job:{WORK_DIR}:/bin/sh\n"),
        ),
        ("group", format!("root:x:0:\njob:x:{gid}:\n")),
        ("hosts", format!("127.0.0.1 localhost {JOB_HOSTNAME}\n::1 localhost\n")),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resources() -> JobResources {
        JobResources { cpu_millicores_per_gpu: 1500, memory_mib_per_gpu: 2048, scratch_mib_per_gpu: 512, egress: false }
    }

    fn host() -> Vec<(PathBuf, HostEntry)> {
        vec![
            ("/usr".into(), HostEntry::Dir),
            ("/bin".into(), HostEntry::Symlink("usr/bin".into())),
            ("/etc/ssl".into(), HostEntry::Dir),
            ("/etc/ld.so.cache".into(), HostEntry::File),
        ]
    }

    fn devices() -> Vec<String> {
        ["null", "zero", "urandom", "nvidiactl", "nvidia-uvm", "sda", "mem", "kmsg"].map(String::from).to_vec()
    }

    fn inputs<'a>(
        host: &'a [(PathBuf, HostEntry)],
        devices: &'a [String],
        leased: &'a [LeasedDevice],
        forbidden: &'a [PathBuf],
        real: bool,
    ) -> PlanInputs<'a> {
        PlanInputs {
            host,
            extra_paths: &[],
            host_devices: devices,
            leased,
            real_gpus: real,
            etc_dir: Path::new("/var/agora/jobs/L/etc"),
            forbidden,
            resources: resources(),
            gpu_count: leased.len() as u32,
            uid: 801_234,
            gid: 801_234,
        }
    }

    fn sources(plan: &Plan) -> Vec<PathBuf> {
        plan.mounts
            .iter()
            .filter_map(|m| match m {
                Mount::BindReadOnly { source, .. } | Mount::Device { source, .. } => Some(source.clone()),
                _ => None,
            })
            .collect()
    }

    fn leased(n: &[u32]) -> Vec<LeasedDevice> {
        n.iter()
            .map(|i| LeasedDevice { host_path: format!("/dev/nvidia{i}").into(), name: format!("nvidia{i}") })
            .collect()
    }

    #[test]
    fn only_the_leased_gpus_and_harmless_devices_are_visible() {
        let (host, devs, forbidden) = (host(), devices(), vec![PathBuf::from("/home/op/.agora")]);
        let lease = leased(&[2]);
        let plan = plan(&inputs(&host, &devs, &lease, &forbidden, true)).unwrap();
        let devices: Vec<_> = plan
            .mounts
            .iter()
            .filter_map(|m| match m {
                Mount::Device { target, .. } => Some(target.display().to_string()),
                _ => None,
            })
            .collect();
        assert_eq!(
            devices,
            ["/dev/null", "/dev/zero", "/dev/urandom", "/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia2"]
        );
        assert!(!sources(&plan).iter().any(|s| s.ends_with("sda") || s.ends_with("mem") || s.ends_with("kmsg")));
        // Simulated GPUs need no NVIDIA control devices.
        let sim = plan_without_real(&host, &devs, &lease, &forbidden);
        assert!(!sources(&sim).iter().any(|s| s.ends_with("nvidiactl")));
    }

    fn plan_without_real(
        host: &[(PathBuf, HostEntry)],
        devs: &[String],
        lease: &[LeasedDevice],
        forbidden: &[PathBuf],
    ) -> Plan {
        plan(&inputs(host, devs, lease, forbidden, false)).unwrap()
    }

    #[test]
    fn the_nodes_home_is_never_mounted() {
        let devs = devices();
        let lease = leased(&[0]);
        let forbidden = vec![PathBuf::from("/usr/local/agora")];
        let err = plan(&inputs(&host(), &devs, &lease, &forbidden, false)).unwrap_err();
        assert!(matches!(err, Error::ExposesForbidden { .. }), "{err}");
        let mut extra = host();
        extra.push(("/".into(), HostEntry::Dir));
        let forbidden = vec![PathBuf::from("/root/.agora")];
        assert!(plan(&inputs(&extra, &devs, &lease, &forbidden, false)).is_err(), "binding / would expose the home");
        let ok = plan(&inputs(&host(), &devs, &lease, &forbidden, false)).unwrap();
        assert!(sources(&ok).iter().all(|s| !s.starts_with("/root")));
    }

    #[test]
    fn system_paths_are_read_only_and_symlinks_stay_links() {
        let (host, devs) = (host(), devices());
        let lease = leased(&[0]);
        let plan = plan(&inputs(&host, &devs, &lease, &[], false)).unwrap();
        assert!(plan.mounts.contains(&Mount::BindReadOnly { source: "/usr".into(), target: "/usr".into(), dir: true }));
        assert!(plan.mounts.contains(&Mount::Symlink { link: "/bin".into(), points_to: "usr/bin".into() }));
        let writable: Vec<_> = plan
            .mounts
            .iter()
            .filter_map(|m| match m {
                Mount::Tmpfs { target, .. } => Some(target.display().to_string()),
                _ => None,
            })
            .collect();
        assert_eq!(writable, ["/work", "/tmp", "/dev", "/dev/shm"], "the only writable places are fresh tmpfs");
        assert!(plan.isolate_network);
    }

    #[test]
    fn limits_scale_with_the_leased_gpus() {
        let l = limits(&resources(), 2);
        assert_eq!(l.memory_bytes, 4096 * 1024 * 1024);
        assert_eq!(l.cpu_quota_us, 300_000, "3 cores per 100 ms period");
        assert_eq!(l.pids, 2 * PIDS_PER_GPU);
        assert_eq!(l.scratch_bytes, 1024 * 1024 * 1024);
        let huge = JobResources { cpu_millicores_per_gpu: u32::MAX, memory_mib_per_gpu: u32::MAX, ..resources() };
        let l = limits(&huge, u32::MAX);
        assert!(l.memory_bytes > 0 && l.cpu_quota_us > 0, "no overflow to zero");
        assert!(matches!(plan(&inputs(&host(), &devices(), &[], &[], false)).unwrap_err(), Error::NoGpu));
    }
}
