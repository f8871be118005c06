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

/// A counter or gauge from a node's /metrics, summed over its label sets (0 if absent).
pub fn metric(api: &str, name: &str) -> u64 {
    let body = http::get(api, "/metrics").map(|r| r.body).unwrap_or_default();
    body.lines()
        .filter(|l| l.strip_prefix(name).is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{')))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// The hash of block `h` as `api` serves it (None: not held).
pub fn block_hash(api: &str, h: u64) -> Option<String> {
    let r = http::get(api, &format!("/v1/blocks/{h}")).ok()?;
    (r.status == 200).then(|| r.json().ok()?["hash"].as_str().map(str::to_string))?
}

/// A child process killed when the test ends, passed or not.
pub struct Child(pub std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A new node joining by state sync: its home `dir/name`, initialised with
/// `genesis`, runs `node run --state-sync --gpus none` and `args` on the
/// two ports `offset` and `offset + 1` past `api0`'s (P2P, API: past the
/// testnet's own, wherever `up` put them), its log in `dir/name.log`.
/// The process and its API URL.
pub fn state_sync_node(
    dir: &std::path::Path,
    name: &str,
    genesis: &std::path::Path,
    api0: &str,
    offset: u16,
    args: &[&str],
) -> (Child, String) {
    let home = dir.join(name);
    let home = home.to_str().unwrap();
    ok(agora(&["--home", home, "init", "--moniker", name, "--genesis", genesis.to_str().unwrap()]));
    let port0: u16 = api0.rsplit(':').next().unwrap().parse().unwrap();
    let api = format!("127.0.0.1:{}", port0 + offset + 1);
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_agora"))
        .args(["--home", home, "node", "run", "--state-sync", "--gpus", "none"])
        .args(["--listen", &format!("/ip4/127.0.0.1/tcp/{}", port0 + offset), "--api", &api])
        .args(args)
        .stderr(std::fs::File::create(dir.join(format!("{name}.log"))).unwrap())
        .spawn()
        .unwrap();
    (Child(child), format!("http://{api}"))
}

/// Gossip messages a node judged on `topic` with `verdict` (accepted,
/// ignored, rejected), from its /metrics.
pub fn gossip_count(api: &str, topic: &str, verdict: &str) -> u64 {
    let body = http::get(api, "/metrics").map(|r| r.body).unwrap_or_default();
    body.lines()
        .filter(|l| l.starts_with("agora_gossip_messages_total") && l.contains(&format!("verdict=\"{verdict}\"")))
        .filter(|l| l.contains(&format!("topic=\"{topic}\"")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// The height `agora transfer` reports its transfer committed at.
pub fn committed_at(out: &str) -> u64 {
    out.split("height ").nth(1).and_then(|s| s.split_whitespace().next()).and_then(|h| h.parse().ok()).unwrap_or(0)
}

/// A normal user's experience: `n` transfers of 1 AGR from `home`'s key to
/// `to` through `api`, one after another, each timed from submission to
/// commit as `agora transfer` sees it (it polls every 200 ms); each must
/// commit within 10 blocks of being sent.
pub fn timed_transfers(home: &str, to: &str, api: &str, n: usize) -> Vec<Duration> {
    (0..n)
        .map(|_| {
            let h0 = height(api);
            let started = Instant::now();
            let out = ok(agora(&["--home", home, "transfer", to, "1", "--node", api]));
            let took = started.elapsed();
            let at = committed_at(&out);
            assert!(at <= h0 + 10, "a transfer sent at height {h0} committed at {at}: {out}");
            took
        })
        .collect()
}

/// The nearest-rank percentile `p` (0–100) of `samples`, in milliseconds.
pub fn percentile_ms(samples: &[Duration], p: usize) -> u128 {
    let mut v: Vec<u128> = samples.iter().map(Duration::as_millis).collect();
    v.sort_unstable();
    let rank = (p * v.len()).div_ceil(100).clamp(1, v.len().max(1));
    v.get(rank - 1).copied().unwrap_or(0)
}

/// Runs `attack` (given a flag that says when to stop) while `user` takes
/// its samples, and returns the samples; the attack must stop soon after
/// the flag is set (and bound itself in time and count regardless).
pub fn during<T: Send>(
    attack: impl FnOnce(&std::sync::atomic::AtomicBool) -> T,
    user: impl FnOnce() -> Vec<Duration> + Send,
) -> (T, Vec<Duration>) {
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let sampler = s.spawn(|| {
            let samples = user();
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            samples
        });
        let outcome = attack(&stop);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        (outcome, sampler.join().expect("the user's transfers"))
    })
}

/// Prints a normal transfer's latency quiet and during an attack as one JSON
/// line (`latency-under-attack {...}`), for docs/performance.md.
pub fn report_latency(attack: &str, quiet: &[Duration], under_attack: &[Duration]) {
    let line = serde_json::json!({
        "attack": attack,
        "samples": under_attack.len(),
        "quiet_p50_ms": percentile_ms(quiet, 50),
        "quiet_p99_ms": percentile_ms(quiet, 99),
        "attack_p50_ms": percentile_ms(under_attack, 50),
        "attack_p99_ms": percentile_ms(under_attack, 99),
    });
    eprintln!("latency-under-attack {line}");
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

/// The API URLs of the nodes `agora testnet up --json` reported, in node order.
pub fn api_urls(net: &serde_json::Value) -> Vec<String> {
    net["nodes"].as_array().unwrap().iter().map(|n| n["api_url"].as_str().unwrap().to_string()).collect()
}

/// `agora account ADDRESS --prove --json` against `genesis`, asked of `api`.
pub fn proven_account(address: &str, genesis: &str, api: &str) -> serde_json::Value {
    let out = ok(agora(&["account", address, "--prove", "--genesis", genesis, "--node", api, "--json"]));
    serde_json::from_str(&out).unwrap()
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

/// Ports per test binary: a block of its own (`slot` 0–14, one per testnet
/// test) below the kernel's ephemeral range (32768+), offset by the process
/// id so two runs of one test rarely meet. A testnet uses base..base+20.
pub fn test_ports(slot: u16) -> u16 {
    assert!(slot <= 14, "port slots end at 14 (below the ephemeral range at 32768)");
    10_000 + slot * 1_500 + (std::process::id() % 74) as u16 * 20
}

/// Headless Chromium for the explorer's browser checks: Debian's `chromium`
/// (CI installs it). None, with a note, when `AGORA_SKIP_BROWSER_TESTS` is
/// set; a clear failure when it is missing otherwise.
pub fn chromium() -> Option<std::path::PathBuf> {
    if std::env::var_os("AGORA_SKIP_BROWSER_TESTS").is_some() {
        eprintln!("AGORA_SKIP_BROWSER_TESTS is set: browser checks skipped");
        return None;
    }
    let found = ["chromium", "chromium-browser", "google-chrome"].iter().find_map(|name| {
        std::env::var_os("PATH")?
            .to_str()?
            .split(':')
            .map(|dir| std::path::Path::new(dir).join(name))
            .find(|p| p.is_file())
    });
    assert!(found.is_some(), "no chromium: apt-get install chromium, or set AGORA_SKIP_BROWSER_TESTS=1");
    found
}

/// An explorer page of the node at `api`: 200, HTML, its body.
pub fn explorer_page(api: &str, path: &str) -> String {
    let r = agora_testnet::http::get(api, path).unwrap();
    assert_eq!(r.status, 200, "{path}: {}", r.body);
    assert_eq!(r.content_type.as_deref(), Some("text/html; charset=utf-8"), "{path}");
    r.body
}

/// The DOM of `url` after its scripts ran for `virtual_ms` of (virtual) time.
pub fn rendered_dom(browser: &std::path::Path, url: &str, virtual_ms: u64) -> String {
    let out = std::process::Command::new(browser)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        .arg(format!("--virtual-time-budget={virtual_ms}"))
        .args(["--dump-dom", url])
        .output()
        .expect("chromium runs");
    assert!(out.status.success(), "chromium: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Saves a screenshot of `url`, `height` pixels tall, as `target/explorer/NAME.png` for review.
pub fn screenshot(browser: &std::path::Path, url: &str, name: &str, height: u32) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/explorer");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.png"));
    let out = std::process::Command::new(browser)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars"])
        .arg(format!("--window-size=1280,{height}"))
        .arg("--virtual-time-budget=2000")
        .arg(format!("--screenshot={}", path.display()))
        .arg(url)
        .output()
        .expect("chromium runs");
    assert!(out.status.success() && path.is_file(), "screenshot {name}: {}", String::from_utf8_lossy(&out.stderr));
}
