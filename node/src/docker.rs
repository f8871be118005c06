//! The docker runner: a lease's `--image` job as a container, driven through
//! the Docker Engine API (`bollard`), never through CLI arguments. The
//! container is hardened as far as the engine allows — no capabilities, no
//! new privileges, read-only root with sized tmpfs scratch, memory (no swap),
//! pids and CPU limits, uid 65534, no network unless the lease has egress,
//! GPUs as a device request for exactly the leased UUIDs — and labelled with
//! its lease and node so a restarted node finds and removes what an earlier
//! run left. The image reference was checked against the registry grammar
//! before the lease was accepted; the buyer's variables go into the
//! container's environment only.

use std::collections::HashMap;

use agora_protocol::job::JobSpec;
use agora_protocol::{JobResources, LeaseId};
use agora_sandbox::policy;
use bollard::Docker;
use bollard::models::{ContainerCreateBody, DeviceRequest, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, KillContainerOptions, ListContainersOptions, LogsOptions,
    RemoveContainerOptions, WaitContainerOptions,
};
use futures::StreamExt;

use crate::runner::LeasedGpu;

/// Label every agora container carries, with its lease id as value.
pub const LEASE_LABEL: &str = "agora.lease";
/// Label naming the node (its address) that runs the container.
pub const NODE_LABEL: &str = "agora.node";
/// uid:gid the job runs as inside the container.
pub const CONTAINER_USER: &str = "65534:65534";
/// The Engine's socket.
pub const DOCKER_SOCKET: &str = "/var/run/docker.sock";
/// Seconds a control request (create, start, kill, remove, list) may take.
pub const CONTROL_TIMEOUT_SECS: u64 = 120;
/// Seconds the log and wait streams may stay open: a lease's longest life.
pub const STREAM_TIMEOUT_SECS: u64 = agora_protocol::limits::MAX_LEASE_DURATION_SECS + 3600;
/// Seconds a missing image may take to pull before the job is refused.
pub const PULL_TIMEOUT_SECS: u64 = 1800;

/// A reachable Docker Engine and the API version both sides speak.
#[derive(Clone, Debug)]
pub struct Engine {
    socket: String,
    version: bollard::ClientVersion,
    /// This node's address, on every container it makes.
    node: String,
}

impl Engine {
    /// Connects to the Engine on `socket` and agrees on an API version (in a
    /// runtime of its own, so it can be called from the daemon's start).
    pub fn probe(socket: &str, node: &str) -> Result<Engine, String> {
        let socket = socket.to_string();
        let node = node.to_string();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
            rt.block_on(async {
                let docker = Docker::connect_with_socket(&socket, CONTROL_TIMEOUT_SECS, bollard::API_DEFAULT_VERSION)
                    .map_err(|e| e.to_string())?;
                let docker = docker.negotiate_version().await.map_err(|e| e.to_string())?;
                docker.ping().await.map_err(|e| e.to_string())?;
                Ok(Engine { socket, version: docker.client_version(), node })
            })
        })
        .join()
        .map_err(|_| "the docker probe panicked".to_string())?
    }

    fn client(&self, timeout_secs: u64) -> Result<Docker, String> {
        Docker::connect_with_socket(&self.socket, timeout_secs, &self.version).map_err(|e| e.to_string())
    }

    /// Creates and starts the container; pulls the image first if the Engine lacks it.
    pub async fn start(&self, name: &str, body: ContainerCreateBody) -> Result<(), String> {
        let docker = self.client(CONTROL_TIMEOUT_SECS)?;
        let image = body.image.clone().unwrap_or_default();
        if docker.inspect_image(&image).await.is_err() {
            self.pull(&image).await?;
        }
        let options = CreateContainerOptions { name: Some(name.to_string()), ..Default::default() };
        docker.create_container(Some(options), body).await.map_err(|e| format!("cannot create the container: {e}"))?;
        docker.start_container(name, None).await.map_err(|e| format!("cannot start the container: {e}"))
    }

    async fn pull(&self, image: &str) -> Result<(), String> {
        let docker = self.client(PULL_TIMEOUT_SECS)?;
        let options = CreateImageOptions { from_image: Some(image.to_string()), ..Default::default() };
        let mut stream = docker.create_image(Some(options), None, None);
        while let Some(step) = stream.next().await {
            step.map_err(|e| format!("image {image:?} is not on this provider and could not be pulled: {e}"))?;
        }
        Ok(())
    }

    /// The container's stdout and stderr as they come, until it ends.
    pub fn logs(&self, name: &str) -> Result<impl futures::Stream<Item = Vec<u8>> + use<>, String> {
        let docker = self.client(STREAM_TIMEOUT_SECS)?;
        let options = LogsOptions { follow: true, stdout: true, stderr: true, ..Default::default() };
        Ok(docker
            .logs(name, Some(options))
            .take_while(|r| std::future::ready(r.is_ok()))
            .filter_map(|r| std::future::ready(r.ok().map(|out| out.as_ref().to_vec()))))
    }

    /// Waits for the container to end; its exit code.
    pub async fn wait(&self, name: &str) -> Result<i64, String> {
        let docker = self.client(STREAM_TIMEOUT_SECS)?;
        let mut stream = docker.wait_container(name, None::<WaitContainerOptions>);
        match stream.next().await {
            Some(Ok(r)) => Ok(r.status_code),
            Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => Ok(code),
            Some(Err(e)) => Err(e.to_string()),
            None => Err("the wait stream ended without a status".into()),
        }
    }

    /// Kills the container at once (SIGKILL to every process in it).
    pub async fn kill(&self, name: &str) {
        if let Ok(docker) = self.client(CONTROL_TIMEOUT_SECS) {
            let _ = docker.kill_container(name, Some(KillContainerOptions { signal: "SIGKILL".into() })).await;
        }
    }

    /// Removes the container (killing it first if it still runs).
    pub async fn remove(&self, name: &str) {
        if let Ok(docker) = self.client(CONTROL_TIMEOUT_SECS) {
            let options = RemoveContainerOptions { force: true, ..Default::default() };
            let _ = docker.remove_container(name, Some(options)).await;
        }
    }

    /// Removes every container this node's earlier runs left (found by label,
    /// never by a file a job could write); returns their lease ids.
    pub async fn reap_leftovers(&self) -> Vec<String> {
        let Ok(docker) = self.client(CONTROL_TIMEOUT_SECS) else { return vec![] };
        let filters: HashMap<String, Vec<String>> =
            [("label".to_string(), vec![format!("{NODE_LABEL}={}", self.node)])].into_iter().collect();
        let options = ListContainersOptions { all: true, filters: Some(filters), ..Default::default() };
        let containers = docker.list_containers(Some(options)).await.unwrap_or_default();
        let mut leases = Vec::new();
        for c in containers {
            let Some(id) = c.id else { continue };
            let options = RemoveContainerOptions { force: true, ..Default::default() };
            if docker.remove_container(&id, Some(options)).await.is_ok() {
                leases.extend(c.labels.and_then(|l| l.get(LEASE_LABEL).cloned()));
            }
        }
        leases
    }

    pub fn node(&self) -> &str {
        &self.node
    }
}

/// A small image for tests and local testnets, built here from Debian's
/// static busybox (`apt-get install busybox-static`): no registry needed.
pub const TEST_IMAGE: &str = "agora-test-busybox:1";

/// Builds [`TEST_IMAGE`] with the docker CLI (cached by the Engine after the first time).
pub fn build_test_image() -> Result<(), String> {
    let dir = std::env::temp_dir().join(format!("agora-test-image-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    std::fs::copy("/bin/busybox", dir.join("busybox"))
        .map_err(|e| format!("/bin/busybox: {e} (apt-get install busybox-static)"))?;
    let dockerfile =
        "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n";
    std::fs::write(dir.join("Dockerfile"), dockerfile).map_err(|e| e.to_string())?;
    let out = std::process::Command::new("docker")
        .args(["build", "-q", "-t", TEST_IMAGE])
        .arg(&dir)
        .output()
        .map_err(|e| format!("docker: {e}"))?;
    let _ = std::fs::remove_dir_all(&dir);
    if !out.status.success() {
        return Err(format!("docker build: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(())
}

/// The container for a lease's job (pure: what the Engine is asked for).
pub fn container_body(
    image: &str,
    spec: &JobSpec,
    gpus: &[LeasedGpu],
    lease_id: &LeaseId,
    node: &str,
    resources: &JobResources,
) -> ContainerCreateBody {
    let limits = policy::limits(resources, gpus.len() as u32);
    let visible = gpus.iter().map(|g| g.id.as_str()).collect::<Vec<_>>().join(",");
    let mut env: Vec<String> = spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    env.extend([
        format!("HOME={}", policy::WORK_DIR),
        format!("CUDA_VISIBLE_DEVICES={visible}"),
        format!("NVIDIA_VISIBLE_DEVICES={visible}"),
        format!("AGORA_LEASE_ID={lease_id}"),
    ]);
    // Owned by the job's user: the Engine resets the mode of the working directory's mount.
    let scratch = format!("rw,nosuid,nodev,size={},mode=0700,uid=65534,gid=65534", limits.scratch_bytes);
    let tmp = format!("rw,nosuid,nodev,size={},mode=1777", limits.scratch_bytes);
    let tmpfs: HashMap<String, String> =
        [(policy::WORK_DIR.to_string(), scratch), ("/tmp".to_string(), tmp)].into_iter().collect();
    // Simulated GPUs are not devices the Engine could pass through.
    let real: Vec<String> = gpus.iter().filter(|g| !g.simulated).map(|g| g.id.clone()).collect();
    let device_requests = (!real.is_empty()).then(|| {
        vec![DeviceRequest {
            driver: Some("nvidia".into()),
            device_ids: Some(real),
            capabilities: Some(vec![vec!["gpu".into()]]),
            ..Default::default()
        }]
    });
    let to_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    let host_config = HostConfig {
        cap_drop: Some(vec!["ALL".into()]),
        security_opt: Some(vec!["no-new-privileges".into()]),
        readonly_rootfs: Some(true),
        privileged: Some(false),
        tmpfs: Some(tmpfs),
        memory: Some(to_i64(limits.memory_bytes)),
        memory_swap: Some(to_i64(limits.memory_bytes)),
        pids_limit: Some(to_i64(limits.pids)),
        nano_cpus: Some(to_i64(limits.cpu_quota_us.saturating_mul(1_000_000_000) / policy::CPU_PERIOD_US)),
        network_mode: Some(if spec.egress { "bridge" } else { "none" }.into()),
        device_requests,
        init: Some(true),
        ..Default::default()
    };
    let labels: HashMap<String, String> =
        [(LEASE_LABEL.to_string(), lease_id.to_string()), (NODE_LABEL.to_string(), node.to_string())]
            .into_iter()
            .collect();
    ContainerCreateBody {
        image: Some(image.to_string()),
        cmd: Some(spec.command.clone()),
        env: Some(env),
        user: Some(CONTAINER_USER.into()),
        working_dir: Some(policy::WORK_DIR.into()),
        labels: Some(labels),
        network_disabled: Some(!spec.egress),
        host_config: Some(host_config),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(egress: bool) -> JobSpec {
        JobSpec {
            command: vec!["python3".into(), "train.py".into()],
            env: vec![("DOCKER_HOST".into(), "tcp://evil:2375".into()), ("LR".into(), "0.1".into())],
            image: Some("pytorch/pytorch:2.4".into()),
            egress,
        }
    }

    fn resources() -> JobResources {
        JobResources { cpu_millicores_per_gpu: 1500, memory_mib_per_gpu: 2048, scratch_mib_per_gpu: 256, egress: true }
    }

    fn gpu(id: &str, simulated: bool) -> LeasedGpu {
        LeasedGpu { id: id.into(), index: 0, simulated }
    }

    #[test]
    fn the_container_is_hardened_and_limited_from_the_offer() {
        let id = LeaseId(agora_protocol::Hash([7; 32]));
        let gpus = [gpu("GPU-aaaa", false), gpu("GPU-bbbb", false)];
        let body = container_body("pytorch/pytorch:2.4", &spec(false), &gpus, &id, "agora1node", &resources());
        let h = body.host_config.as_ref().unwrap();
        assert_eq!(h.cap_drop.as_deref(), Some(&["ALL".to_string()][..]));
        assert_eq!(h.security_opt.as_deref(), Some(&["no-new-privileges".to_string()][..]));
        assert_eq!((h.readonly_rootfs, h.privileged), (Some(true), Some(false)));
        assert_eq!(h.network_mode.as_deref(), Some("none"));
        assert_eq!(body.network_disabled, Some(true));
        assert_eq!(h.memory, Some(4096 * 1024 * 1024));
        assert_eq!(h.memory_swap, h.memory, "no swap");
        assert_eq!(h.nano_cpus, Some(3_000_000_000), "1.5 cores per GPU");
        assert_eq!(h.pids_limit, Some(2 * policy::PIDS_PER_GPU as i64));
        assert!(h.tmpfs.as_ref().unwrap()["/work"].contains(&format!("size={}", 512 * 1024 * 1024)));
        assert!(h.binds.is_none() && h.mounts.is_none() && h.devices.is_none(), "nothing of the host");
        let req = &h.device_requests.as_ref().unwrap()[0];
        assert_eq!(req.device_ids.as_deref(), Some(&["GPU-aaaa".to_string(), "GPU-bbbb".to_string()][..]));
        assert_eq!(body.user.as_deref(), Some(CONTAINER_USER));
        assert_eq!(body.labels.as_ref().unwrap()[LEASE_LABEL], id.to_string());
        assert_eq!(body.labels.as_ref().unwrap()[NODE_LABEL], "agora1node");
        let env = body.env.unwrap();
        assert!(env.contains(&"DOCKER_HOST=tcp://evil:2375".to_string()), "buyer variables stay inside");
        assert!(env.contains(&"CUDA_VISIBLE_DEVICES=GPU-aaaa,GPU-bbbb".to_string()));
        assert_eq!(body.cmd.unwrap(), ["python3", "train.py"]);
    }

    #[test]
    fn egress_and_simulated_gpus() {
        let id = LeaseId(agora_protocol::Hash([1; 32]));
        let body = container_body("busybox", &spec(true), &[gpu("SIM-H100-0", true)], &id, "n", &resources());
        let h = body.host_config.unwrap();
        assert_eq!(h.network_mode.as_deref(), Some("bridge"));
        assert_eq!(body.network_disabled, Some(false));
        assert!(h.device_requests.is_none(), "a simulated GPU is no device");
    }
}
