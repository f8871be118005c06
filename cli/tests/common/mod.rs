//! Helpers shared by the integration tests that drive the `agora` binary and
//! real testnets: run a command, wait on a condition with a generous
//! deadline, stop a testnet (printing its logs when a test fails).

#![allow(dead_code)] // each test binary uses its own subset

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use agora_testnet::http;

/// Runs `agora ARGS` with no AGORA_HOME from the environment.
pub fn agora(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_agora")).args(args).env_remove("AGORA_HOME").output().expect("run agora")
}

/// The stdout of a command that must succeed.
pub fn ok(o: Output) -> String {
    assert!(o.status.success(), "agora failed: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The stderr of a command that must fail.
pub fn err(o: Output) -> String {
    assert!(!o.status.success(), "agora should have failed: {}", String::from_utf8_lossy(&o.stdout));
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Polls `f` until it holds; fails the test after `deadline` (generous: the machine is shared and slow).
pub fn wait_until(what: &str, deadline: Duration, mut f: impl FnMut() -> bool) {
    let until = Instant::now() + deadline;
    while !f() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn status(api: &str) -> Option<serde_json::Value> {
    http::get(api, "/v1/status").ok()?.json().ok()
}

/// A node's committed height (0 if its API does not answer).
pub fn height(api: &str) -> u64 {
    status(api).and_then(|s| s["height"].as_u64()).unwrap_or(0)
}

/// Stops the testnet in this directory when dropped, even when an assertion
/// fails; then it first prints the end of every node's log.
pub struct Down(pub PathBuf);

impl Drop for Down {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for i in 0.. {
                let Ok(log) = std::fs::read_to_string(self.0.join(format!("node{i}/node.log"))) else { break };
                let lines: Vec<&str> = log.lines().filter(|l| !l.contains(" committed ")).collect();
                let last_commit = log.lines().rfind(|l| l.contains(" committed ")).unwrap_or("(no commit)");
                eprintln!(
                    "--- node{i}/node.log (last 30 lines besides commits; last commit: {last_commit})\n{}",
                    lines[lines.len().saturating_sub(30)..].join("\n")
                );
            }
        }
        let _ = agora(&["testnet", "down", "--dir", self.0.to_str().unwrap()]);
    }
}

/// `agora testnet up --json` of 4 nodes, the first `providers` of them
/// providers, ports from `base_port`, plus `extra` flags; returns testnet.json.
pub fn testnet_up(dir: &std::path::Path, providers: usize, base_port: u16, extra: &[&str]) -> serde_json::Value {
    let (d, p, b) = (dir.to_str().unwrap().to_string(), providers.to_string(), base_port.to_string());
    let mut args = vec!["testnet", "up", "--json", "--dir", &d, "--nodes", "4", "--providers", &p, "--base-port", &b];
    args.extend_from_slice(extra);
    serde_json::from_str(&ok(agora(&args))).unwrap()
}

/// `agora --home HOME submit --node NODE ARGS…`: a buyer's submission.
pub fn submit(home: &str, node: &str, args: &[&str]) -> Output {
    let mut all = vec!["--home", home, "submit", "--node", node];
    all.extend_from_slice(args);
    agora(&all)
}

/// Live (non-zombie) processes of the job of `lease`: those in its cgroup
/// (sandbox runner), whatever session or process group they moved to.
pub fn job_pids(lease: &str) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let pid: i32 = e.file_name().to_str()?.parse().ok()?;
            let cgroup = std::fs::read_to_string(e.path().join("cgroup")).ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            let zombie = stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'));
            (cgroup.contains(lease) && !zombie).then_some(pid)
        })
        .collect()
}

/// Waits until the job of `lease` has at least `n` processes running.
pub fn wait_job_running(lease: &str, n: usize) {
    wait_until("the job's processes", Duration::from_secs(60), || job_pids(lease).len() >= n);
}

/// Ports per test binary: a block of its own (`slot` 0–12, one per testnet
/// test) below the kernel's ephemeral range (32768+), offset by the process
/// id so two runs of one test rarely meet. A testnet uses base..base+20.
pub fn test_ports(slot: u16) -> u16 {
    assert!(slot <= 12, "port slots end at 12");
    10_000 + slot * 1_600 + (std::process::id() % 80) as u16 * 20
}
