//! `agora testnet up|down|status|kill|pause|resume|restart`: a network of
//! real `agora node run` processes on loopback. `up` generates keys, a genesis
//! and one home per node, starts the processes in the background, waits until
//! they commit blocks and records everything in `DIR/testnet.json`; the other
//! commands act only on the processes recorded there.

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use agora_ledger::{Genesis, GenesisAccount, Params};
use agora_node::config::{NODE_KEY_NAME, NetConfig, NodeConfig, Runner, save_genesis};
use agora_node::{identity, keystore};
use agora_protocol::{Amount, ChainId, TimestampMs};
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::http;

/// The chain id of local testnets.
pub const TESTNET_CHAIN_ID: &str = "agora-testnet-1";
/// The file that describes a running testnet.
pub const TESTNET_FILE: &str = "testnet.json";
/// How long `up` waits for the first blocks.
pub const START_DEADLINE: Duration = Duration::from_secs(90);
/// Default block-time floor of testnet nodes.
pub const TESTNET_COMMIT_PAUSE_MS: u64 = 200;
/// Blocks between state snapshots on a testnet's nodes: a node joining by
/// state sync finds one within about half a minute of `up`.
pub const TESTNET_SNAPSHOT_INTERVAL_BLOCKS: u64 = 100;
/// Testnet nodes share one machine: a short propose timeout keeps rounds
/// with a dead proposer brief.
pub const TESTNET_PROPOSE_TIMEOUT_MS: u64 = 1_000;
/// Simulated GPUs each provider node declares.
pub const TESTNET_PROVIDER_GPUS: &str = "simulated:2xH100-80GB";

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NodeEntry {
    pub index: usize,
    pub moniker: String,
    pub peer_id: String,
    pub address: String,
    pub p2p: String,
    pub api_url: String,
    pub home: PathBuf,
    pub pid: u32,
    pub provider: bool,
    /// In the genesis validator set (the others are full nodes).
    #[serde(default = "yes")]
    pub validator: bool,
}

fn yes() -> bool {
    true
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TestnetFile {
    pub chain_id: String,
    pub dir: PathBuf,
    /// Home directory holding the funded buyer key (`keys/default.json`).
    pub buyer_home: PathBuf,
    pub nodes: Vec<NodeEntry>,
}

impl TestnetFile {
    pub fn load(dir: &Path) -> Result<TestnetFile, Error> {
        let path = dir.join(TESTNET_FILE);
        let text = fs::read_to_string(&path).map_err(|_| Error::NoTestnet(dir.to_path_buf()))?;
        serde_json::from_str(&text).map_err(|e| Error::Io { path, source: std::io::Error::other(e) })
    }

    fn save(&self) -> Result<(), Error> {
        let path = self.dir.join(TESTNET_FILE);
        let text = serde_json::to_string_pretty(self)
            .map_err(|e| Error::Io { path: path.clone(), source: std::io::Error::other(e) })?;
        fs::write(&path, text).map_err(|source| Error::Io { path, source })
    }

    pub fn node(&self, index: usize) -> Result<&NodeEntry, Error> {
        self.nodes.get(index).ok_or(Error::NoSuchNode(index, self.nodes.len()))
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io { path: path.to_path_buf(), source }
}

/// Creates homes and a genesis for `nodes` validators (the first `providers`
/// of them providers with simulated GPUs) and starts them.
/// How `up` builds a testnet.
#[derive(Clone, Debug)]
pub struct UpOptions {
    pub nodes: usize,
    /// The first `validators` nodes are the validators (more stake, and the
    /// chain's `max_validators`); the rest are full nodes. None: every node,
    /// up to the default `max_validators`.
    pub validators: Option<usize>,
    /// The first `providers` nodes declare simulated GPUs.
    pub providers: usize,
    /// Node i uses base+2i (P2P) and base+2i+1 (API).
    pub base_port: u16,
    pub commit_pause_ms: u64,
    /// Extra accounts funded at genesis (load generators), each with `FUNDED_BALANCE_AGR`.
    pub funded: Vec<agora_protocol::Address>,
    /// What each provider node declares (`gpus` of its config).
    pub provider_gpus: String,
    /// How providers run plain jobs; None: the sandbox where this machine can
    /// (root and cgroups), else the process runner (simulated GPUs only).
    pub runner: Option<Runner>,
}

impl UpOptions {
    /// `nodes` validators, the first `providers` of them with `TESTNET_PROVIDER_GPUS`.
    pub fn new(nodes: usize, providers: usize, base_port: u16) -> UpOptions {
        UpOptions {
            nodes,
            validators: None,
            providers,
            base_port,
            commit_pause_ms: TESTNET_COMMIT_PAUSE_MS,
            funded: Vec::new(),
            provider_gpus: TESTNET_PROVIDER_GPUS.into(),
            runner: None,
        }
    }
}

/// The runner a testnet's providers use for plain jobs: `wanted`, or the
/// sandbox where this machine can run it, else the process runner.
pub fn testnet_runner(wanted: Option<Runner>) -> Runner {
    wanted.unwrap_or_else(|| if agora_sandbox::available().is_ok() { Runner::Sandbox } else { Runner::Process })
}

/// Balance of each extra funded account.
pub const FUNDED_BALANCE_AGR: u64 = 1_000_000;

pub fn up(
    agora: &Path,
    dir: &Path,
    options: &UpOptions,
    progress: &mut dyn FnMut(String),
) -> Result<TestnetFile, Error> {
    let UpOptions { nodes, providers, base_port, commit_pause_ms, .. } = *options;
    if nodes == 0 || providers > nodes {
        return Err(Error::BadArgs("need at least one node, and no more providers than nodes".into()));
    }
    let validators = testnet_validators(nodes, options.validators)?;
    let base_port = free_ports(base_port, 2 * nodes as u16)?;
    if base_port != options.base_port {
        progress(format!("ports from {} are in use (another testnet?): using {base_port}", options.base_port));
    }
    if dir.join(TESTNET_FILE).exists() {
        return Err(Error::DirNotEmpty(dir.to_path_buf()));
    }
    fs::create_dir_all(dir).map_err(io(dir))?;
    let mut entries = Vec::new();
    let mut keys = Vec::new();
    for i in 0..nodes {
        let home = dir.join(format!("node{i}"));
        let key = keystore::create(&home, NODE_KEY_NAME)?.keypair;
        let port = base_port + 2 * i as u16;
        let peer_id = identity::peer_id(&key)?.to_string();
        entries.push(NodeEntry {
            index: i,
            moniker: format!("node{i}"),
            peer_id: peer_id.clone(),
            address: key.address().to_string(),
            p2p: format!("/ip4/127.0.0.1/tcp/{port}/p2p/{peer_id}"),
            api_url: format!("http://127.0.0.1:{}", port + 1),
            home,
            pid: 0,
            provider: i < providers,
            validator: i < validators,
        });
        keys.push(key);
    }
    let buyer_home = dir.join("buyer");
    let buyer = keystore::create(&buyer_home, "default")?.keypair;
    let genesis = testnet_genesis(&keys, validators, &buyer, &options.funded)?;
    let runner = testnet_runner(options.runner);
    if runner == Runner::Sandbox {
        agora_sandbox::available().map_err(|e| Error::BadArgs(format!("--runner sandbox: {e}")))?;
    }
    progress(format!("providers run plain jobs with the {runner:?} runner").to_lowercase());
    for (i, e) in entries.iter().enumerate() {
        let mut config = NodeConfig::new(&e.moniker);
        config.listen = format!("/ip4/127.0.0.1/tcp/{}", base_port + 2 * i as u16);
        config.api = e.api_url.trim_start_matches("http://").to_string();
        config.bootstrap = bootstrap_of(i, &entries);
        config.gpus = if e.provider { options.provider_gpus.clone() } else { "none".into() };
        config.commit_pause_ms = commit_pause_ms;
        config.timeout_propose_ms = TESTNET_PROPOSE_TIMEOUT_MS;
        config.testnet_admin = true;
        config.snapshot_interval_blocks = TESTNET_SNAPSHOT_INTERVAL_BLOCKS;
        config.jobs.runners = vec![runner, Runner::Docker];
        if nodes >= CROWDED_TESTNET_NODES {
            config.net = crowded_net();
        }
        config.save(&e.home)?;
        save_genesis(&e.home, &genesis)?;
    }
    let mut file =
        TestnetFile { chain_id: TESTNET_CHAIN_ID.into(), dir: dir.to_path_buf(), buyer_home, nodes: entries };
    for i in 0..nodes {
        file.nodes[i].pid = spawn(agora, &file.nodes[i].home)?;
        progress(format!("started node{i} (pid {}) api {}", file.nodes[i].pid, file.nodes[i].api_url));
    }
    file.save()?;
    wait_for_height(&file, 2, START_DEADLINE)?;
    check_identities(&file)?;
    Ok(file)
}

/// From this many nodes on, a testnet crowds its machine (many node
/// processes to a core): each node gets `crowded_net`.
pub const CROWDED_TESTNET_NODES: usize = 20;

/// One runtime worker and a gossip mesh of 4 per node: on 2 cores, a
/// 100-node testnet committed 0.51 blocks/s with the defaults (2 workers,
/// mesh 6, 500 ms gossip heartbeat), 0.63 with one worker, 0.75 with the
/// 1 s heartbeat as well and 0.87-0.94 with a mesh of 4 too
/// (docs/performance.md). Threads waking each other and each message
/// relayed to six peers cost more than they buy when 100 nodes share two
/// cores.
fn crowded_net() -> NetConfig {
    NetConfig { runtime_threads: 1, gossip_mesh: 4 }
}

/// Ring neighbours each testnet node bootstraps from (on top of the providers).
pub const TESTNET_BOOTSTRAP_NEIGHBOURS: usize = 8;

/// Whom node `i` dials and stays connected to: its next
/// `TESTNET_BOOTSTRAP_NEIGHBOURS` nodes on a ring, and every provider (lease
/// requests and liveness probes go to a provider directly). Every other
/// node on a small testnet; linear in the nodes on a large one, where a full
/// mesh (each node redialling all the others) would spend the machine on
/// connections.
fn bootstrap_of(i: usize, entries: &[NodeEntry]) -> Vec<String> {
    let n = entries.len();
    let mut peers: Vec<usize> =
        (1..=TESTNET_BOOTSTRAP_NEIGHBOURS.min(n.saturating_sub(1))).map(|d| (i + d) % n).collect();
    peers.extend(entries.iter().filter(|e| e.provider && e.index != i).map(|e| e.index));
    peers.sort_unstable();
    peers.dedup();
    peers.into_iter().map(|p| entries[p].p2p.clone()).collect()
}

/// Port blocks tried after `base` when its ports are taken.
pub const PORT_BLOCKS_TRIED: u16 = 64;

/// The first block of `count` ports on 127.0.0.1, from `base` on, that are
/// all free now (a node that cannot bind would leave its URL answered by
/// whatever holds the port).
fn free_ports(base: u16, count: u16) -> Result<u16, Error> {
    let free = |start: u16| {
        (start..start.saturating_add(count)).all(|p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok())
    };
    (0..PORT_BLOCKS_TRIED)
        .filter_map(|i| base.checked_add(i.checked_mul(count)?))
        .filter(|start| start.checked_add(count).is_some())
        .find(|start| free(*start))
        .ok_or_else(|| Error::BadArgs(format!("no {count} free ports on 127.0.0.1 from {base}: pick --base-port")))
}

/// Each node's API answers as that node (its key's address), not as a
/// process that held the port before it.
fn check_identities(file: &TestnetFile) -> Result<(), Error> {
    for n in &file.nodes {
        let status = http::get(&n.api_url, "/v1/status").ok().and_then(|r| r.json().ok()).unwrap_or_default();
        if status["address"].as_str() != Some(n.address.as_str()) {
            return Err(Error::NotReady(format!(
                "node{}'s API {} answers as {} (another process took its port); see {}",
                n.index,
                n.api_url,
                status["address"].as_str().unwrap_or("nothing"),
                n.home.join("node.log").display()
            )));
        }
    }
    Ok(())
}

/// How many of `nodes` are validators: `wanted`, or every node up to the
/// default `max_validators`.
fn testnet_validators(nodes: usize, wanted: Option<usize>) -> Result<usize, Error> {
    let most = agora_protocol::limits::MAX_VALIDATORS.min(nodes);
    match wanted {
        None => Ok(nodes.min(Params::default().max_validators as usize)),
        Some(v) if (1..=most).contains(&v) => Ok(v),
        Some(v) => Err(Error::BadArgs(format!("--validators {v}: must be 1 to {most} (and no more than --nodes)"))),
    }
}

/// Stake of a validator node; full nodes stake the provider minimum (so
/// that any of them can be a provider) and stay out of the set.
const VALIDATOR_STAKE_AGR: u64 = 1_000;

/// The testnet's genesis: the first `validators` keys are the validators,
/// and the chain's `max_validators` keeps the set at that size when stakes
/// rotate it (the other nodes stake less).
fn testnet_genesis(
    keys: &[agora_protocol::Keypair],
    validators: usize,
    buyer: &agora_protocol::Keypair,
    funded: &[agora_protocol::Address],
) -> Result<Genesis, Error> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
    let params = Params { max_validators: validators as u64, ..Params::default() };
    let mut accounts: Vec<GenesisAccount> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| GenesisAccount {
            address: k.address(),
            balance: Amount::agr(10_000),
            stake: if i < validators { Amount::agr(VALIDATOR_STAKE_AGR) } else { params.min_provider_stake },
        })
        .collect();
    accounts.push(GenesisAccount { address: buyer.address(), balance: Amount::agr(100_000), stake: Amount::ZERO });
    accounts.extend(funded.iter().map(|a| GenesisAccount {
        address: *a,
        balance: Amount::agr(FUNDED_BALANCE_AGR),
        stake: Amount::ZERO,
    }));
    Ok(Genesis {
        chain_id: ChainId::new(TESTNET_CHAIN_ID)?,
        genesis_time_ms: TimestampMs(now),
        params,
        accounts,
        validators: keys[..validators].iter().map(|k| k.address()).collect(),
    })
}

/// Starts `agora node run` for a home in its own process group, logging to HOME/node.log.
fn spawn(agora: &Path, home: &Path) -> Result<u32, Error> {
    let log_path = home.join("node.log");
    let log = fs::OpenOptions::new().create(true).append(true).open(&log_path).map_err(io(&log_path))?;
    let err = log.try_clone().map_err(io(&log_path))?;
    let child = Command::new(agora)
        .arg("--home")
        .arg(home)
        .args(["node", "run"])
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err)
        .process_group(0)
        .spawn()
        .map_err(io(agora))?;
    Ok(child.id())
}

/// Polls every live node until all report at least `height`.
pub fn wait_for_height(file: &TestnetFile, height: u64, deadline: Duration) -> Result<(), Error> {
    let until = Instant::now() + deadline;
    loop {
        let heights: Vec<Option<u64>> = file.nodes.iter().map(|n| node_height(&n.api_url)).collect();
        if heights.iter().all(|h| h.is_some_and(|h| h >= height)) {
            return Ok(());
        }
        if Instant::now() > until {
            return Err(Error::NotReady(format!("heights {heights:?} after {deadline:?}; see DIR/nodeN/node.log")));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A node's committed height, if its API answers.
pub fn node_height(api_url: &str) -> Option<u64> {
    http::get(api_url, "/v1/status").ok()?.json().ok()?["height"].as_u64()
}

/// Whether `pid` is still the `agora node run` of `home` (not a recycled pid).
fn is_our_process(pid: u32, home: &Path) -> bool {
    let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else { return false };
    let text = String::from_utf8_lossy(&cmdline);
    text.contains("node") && text.contains(&*home.to_string_lossy())
}

fn send_signal(pid: u32, signal: i32) -> bool {
    // SAFETY: kill(2) with a pid we recorded and checked; no memory is involved.
    unsafe { libc::kill(pid as i32, signal) == 0 }
}

/// Stops every recorded node that is still ours: SIGTERM, then SIGKILL after a grace period.
pub fn down(dir: &Path) -> Result<Vec<(usize, bool)>, Error> {
    let file = TestnetFile::load(dir)?;
    let mut stopped = Vec::new();
    for n in &file.nodes {
        let ours = is_our_process(n.pid, &n.home);
        if ours {
            send_signal(n.pid, libc::SIGCONT);
            send_signal(n.pid, libc::SIGTERM);
        }
        stopped.push((n.index, ours));
    }
    let until = Instant::now() + Duration::from_secs(10);
    for n in &file.nodes {
        while is_our_process(n.pid, &n.home) && !is_zombie(n.pid) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(50));
        }
        if is_our_process(n.pid, &n.home) && !is_zombie(n.pid) {
            send_signal(n.pid, libc::SIGKILL);
        }
    }
    Ok(stopped)
}

fn is_zombie(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| s.rsplit(')').next().is_some_and(|r| r.trim_start().starts_with('Z')))
}

/// Fault injection on one node: `kill` (SIGKILL), `pause` (SIGSTOP), `resume` (SIGCONT).
pub fn signal(dir: &Path, index: usize, what: &str) -> Result<(), Error> {
    let file = TestnetFile::load(dir)?;
    let n = file.node(index)?;
    let sig = match what {
        "kill" => libc::SIGKILL,
        "pause" => libc::SIGSTOP,
        "resume" => libc::SIGCONT,
        other => return Err(Error::BadArgs(format!("unknown signal action {other}"))),
    };
    if !is_our_process(n.pid, &n.home) || !send_signal(n.pid, sig) {
        return Err(Error::BadArgs(format!("node{index} (pid {}) is not running", n.pid)));
    }
    Ok(())
}

/// Starts a node again on the same home (after kill or crash).
pub fn restart(agora: &Path, dir: &Path, index: usize) -> Result<u32, Error> {
    let mut file = TestnetFile::load(dir)?;
    let n = file.node(index)?.clone();
    if is_our_process(n.pid, &n.home) && !is_zombie(n.pid) {
        send_signal(n.pid, libc::SIGKILL);
        std::thread::sleep(Duration::from_millis(200));
    }
    let pid = spawn(agora, &n.home)?;
    file.nodes[index].pid = pid;
    file.save()?;
    Ok(pid)
}

/// Parses a partition like `0,1|2,3`: every node in exactly one group, at least two groups.
pub fn parse_partition(spec: &str, nodes: usize) -> Result<Vec<Vec<usize>>, Error> {
    let bad = |reason: String| Error::BadArgs(format!("partition {spec:?}: {reason}"));
    let mut seen = vec![false; nodes];
    let mut groups = Vec::new();
    for group in spec.split('|') {
        let mut members = Vec::new();
        for item in group.split(',').map(str::trim) {
            let i: usize = item.parse().map_err(|_| bad(format!("{item:?} is not a node index")))?;
            if i >= nodes {
                return Err(bad(format!("no node {i} (the testnet has {nodes})")));
            }
            if std::mem::replace(&mut seen[i], true) {
                return Err(bad(format!("node {i} is in two groups")));
            }
            members.push(i);
        }
        groups.push(members);
    }
    if groups.len() < 2 {
        return Err(bad("need at least two groups separated by |".into()));
    }
    if let Some(missing) = seen.iter().position(|s| !s) {
        return Err(bad(format!("node {missing} is in no group")));
    }
    Ok(groups)
}

/// Splits the testnet into groups that cannot reach each other: every node
/// drops traffic to and from the peers outside its group (the nodes'
/// testnet-only admin endpoint; `heal` undoes it).
pub fn partition(dir: &Path, spec: &str) -> Result<Vec<Vec<usize>>, Error> {
    let file = TestnetFile::load(dir)?;
    let groups = parse_partition(spec, file.nodes.len())?;
    for group in &groups {
        let outside: Vec<&str> =
            file.nodes.iter().filter(|n| !group.contains(&n.index)).map(|n| n.peer_id.as_str()).collect();
        let body = serde_json::json!({ "block": outside }).to_string();
        for &i in group {
            admin(&file.nodes[i], "/v1/admin/partition", &body)?;
        }
    }
    Ok(groups)
}

/// Ends a partition: every node accepts all peers again and redials them.
pub fn heal(dir: &Path) -> Result<(), Error> {
    let file = TestnetFile::load(dir)?;
    for n in &file.nodes {
        admin(n, "/v1/admin/heal", "{}")?;
    }
    Ok(())
}

/// Calls a node's admin endpoint with the token from its home.
pub fn admin_call(node: &NodeEntry, path: &str, body: &str) -> Result<http::Reply, Error> {
    let token_path = agora_node::api_guard::token_path(&node.home);
    let token = fs::read_to_string(&token_path).map_err(|e| Error::Io { path: token_path, source: e })?;
    http::post_authorized(&node.api_url, path, body, token.trim())
        .map_err(|e| Error::BadArgs(format!("node{} is not answering ({e}); is it running?", node.index)))
}

fn admin(node: &NodeEntry, path: &str, body: &str) -> Result<(), Error> {
    let reply = admin_call(node, path, body)?;
    if reply.status != 200 {
        return Err(Error::BadArgs(format!("node{} refused {path}: {} {}", node.index, reply.status, reply.body)));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_testnet_is_a_full_mesh_and_a_large_one_a_ring_plus_the_providers() {
        let entry = |index: usize, provider: bool| NodeEntry {
            index,
            moniker: format!("node{index}"),
            peer_id: String::new(),
            address: String::new(),
            p2p: format!("/node/{index}"),
            api_url: String::new(),
            home: PathBuf::new(),
            pid: 0,
            provider,
            validator: true,
        };
        let small: Vec<NodeEntry> = (0..5).map(|i| entry(i, i < 2)).collect();
        assert_eq!(bootstrap_of(3, &small), vec!["/node/0", "/node/1", "/node/2", "/node/4"]);
        let large: Vec<NodeEntry> = (0..100).map(|i| entry(i, i < 10)).collect();
        let peers = bootstrap_of(95, &large);
        let expected: Vec<String> =
            [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 96, 97, 98, 99].iter().map(|p| format!("/node/{p}")).collect();
        assert_eq!(peers, expected, "8 ring neighbours (wrapping) and the 10 providers, once each");
        assert!(!bootstrap_of(3, &large).contains(&"/node/3".to_string()), "never itself");
        // Every node is reachable from node 0 over bootstrap links (each link is a connection, both ways).
        let mut seen = [false; 100];
        let mut todo = vec![0];
        while let Some(i) = todo.pop() {
            if std::mem::replace(&mut seen[i], true) {
                continue;
            }
            for p in bootstrap_of(i, &large) {
                todo.push(p.trim_start_matches("/node/").parse().unwrap());
            }
        }
        assert!(seen.iter().all(|s| *s));
    }

    #[test]
    fn full_nodes_stake_less_and_the_set_stays_the_chosen_validators() {
        let keys: Vec<agora_protocol::Keypair> =
            (0..6).map(|i| agora_protocol::Keypair::from_seed_phrase(&format!("testnet node {i}"))).collect();
        let buyer = agora_protocol::Keypair::from_seed_phrase("testnet buyer");
        let genesis = testnet_genesis(&keys, 2, &buyer, &[]).unwrap();
        let chosen: Vec<_> = keys[..2].iter().map(|k| k.address()).collect();
        assert_eq!(genesis.validators, chosen);
        assert_eq!(genesis.params.max_validators, 2);
        // An epoch's rotation by stake picks the same two, not the full nodes
        // (which stake the provider minimum, so any of them can be a provider).
        let state = genesis.state().unwrap();
        let mut rotated: Vec<_> = agora_ledger::validators::staked_set(&state).into_iter().map(|v| v.address).collect();
        rotated.sort();
        let mut expected = chosen.clone();
        expected.sort();
        assert_eq!(rotated, expected);
        assert_eq!(state.account(&keys[5].address()).stake, genesis.params.min_provider_stake);
        // Defaults and bounds.
        assert_eq!(testnet_validators(4, None).unwrap(), 4);
        assert_eq!(testnet_validators(30, None).unwrap(), 21);
        assert!(testnet_validators(4, Some(0)).is_err());
        assert!(testnet_validators(4, Some(5)).is_err());
    }

    #[test]
    fn a_taken_port_moves_the_testnet_to_a_free_block() {
        let held = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let port = held.local_addr().unwrap().port();
        let base = port.saturating_sub(1);
        let found = free_ports(base, 4).unwrap();
        assert!(found >= base + 4 && !(found..found + 4).contains(&port), "{found} overlaps the held {port}");
        drop(held);
    }

    #[test]
    fn partitions_parse_strictly() {
        assert_eq!(parse_partition("0,1|2,3", 4).unwrap(), vec![vec![0, 1], vec![2, 3]]);
        assert_eq!(parse_partition("3|0,1,2", 4).unwrap(), vec![vec![3], vec![0, 1, 2]]);
        for bad in ["0,1,2,3", "0|1|2", "0,1|1,2,3", "0|1,2,x", "0|1,2,3,4", ""] {
            assert!(parse_partition(bad, 4).is_err(), "{bad}");
        }
    }
}
