//! The docker runner's container: `docker run` with every hardening flag a
//! container runtime offers (no capabilities, no new privileges, read-only
//! root with a sized scratch tmpfs, memory/pids/CPU limits, a non-root user,
//! no network unless the lease has egress), labelled with its lease id. The
//! image reference was validated against the registry grammar before the
//! provider accepted the lease, so it can never be read as an option; the
//! buyer's variables go into the container only (`--env` pairs), never into
//! the docker CLI's own environment.

use agora_protocol::job::JobSpec;
use agora_protocol::{JobResources, LeaseId};

use crate::runner::LeasedGpu;
use agora_sandbox::policy;

/// Label every agora container carries, with its lease id as value.
pub const LEASE_LABEL: &str = "agora.lease";
/// uid:gid the job runs as inside the container.
pub const CONTAINER_USER: &str = "65534:65534";

/// The `docker run` command for a lease's container.
pub fn run_command(
    name: &str,
    image: &str,
    spec: &JobSpec,
    gpus: &[LeasedGpu],
    lease_id: &LeaseId,
    resources: &JobResources,
) -> tokio::process::Command {
    let limits = policy::limits(resources, gpus.len() as u32);
    let visible = gpus.iter().map(|g| g.id.as_str()).collect::<Vec<_>>().join(",");
    let mut c = tokio::process::Command::new("docker");
    c.args(["run", "--rm", "--name", name, "--label"]).arg(format!("{LEASE_LABEL}={lease_id}"));
    c.args(["--cap-drop", "ALL", "--security-opt", "no-new-privileges", "--read-only", "--user", CONTAINER_USER]);
    c.args(["--network", if spec.egress { "bridge" } else { "none" }]);
    c.arg("--memory").arg(limits.memory_bytes.to_string());
    c.arg("--memory-swap").arg(limits.memory_bytes.to_string());
    c.arg("--pids-limit").arg(limits.pids.to_string());
    c.arg("--cpus").arg(format!("{:.3}", limits.cpu_quota_us as f64 / policy::CPU_PERIOD_US as f64));
    for dir in [policy::WORK_DIR, "/tmp"] {
        c.arg("--tmpfs").arg(format!("{dir}:rw,nosuid,nodev,size={},mode=1777", limits.scratch_bytes));
    }
    c.args(["--workdir", policy::WORK_DIR, "--env", &format!("HOME={}", policy::WORK_DIR)]);
    // Simulated GPUs are not devices docker could pass through.
    if !visible.is_empty() && gpus.iter().all(|g| !g.simulated) {
        c.arg("--gpus").arg(format!("\"device={visible}\""));
    }
    c.arg("--env").arg(format!("CUDA_VISIBLE_DEVICES={visible}"));
    c.arg("--env").arg(format!("AGORA_LEASE_ID={lease_id}"));
    for (k, v) in &spec.env {
        c.arg("--env").arg(format!("{k}={v}"));
    }
    // `--` ends the options: nothing after it is read as one, whatever it says.
    c.arg("--").arg(image).args(&spec.command);
    c
}
