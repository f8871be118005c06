//! `agora bench scale`: many node processes on one machine (issue 14's
//! 100-node testnet), measured from outside at idle: blocks per second,
//! whether every node follows the chain and holds every provider's offer,
//! each node's RSS, CPU and gossip bytes per second, and how long a killed
//! provider goes unpunished on every node. Prints figures; never asserts
//! them (the scale test behind `AGORA_SCALE_TESTS` does).

use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::bench::{cpu_seconds, gossip_bytes, rss_mib};
use crate::error::Error;
use crate::http;
use crate::local::{self, TestnetFile, UpOptions};

/// How long every node may take to hold every provider's offer.
const OFFERS_DEADLINE: Duration = Duration::from_secs(300);
/// How long every node may take to see the killed provider jailed.
const SLASH_DEADLINE: Duration = Duration::from_secs(600);
/// How often all nodes are polled while waiting.
const POLL_INTERVAL: Duration = Duration::from_millis(500);

#[derive(Clone, Debug)]
pub struct ScaleOptions {
    pub nodes: usize,
    pub validators: usize,
    pub providers: usize,
    pub base_port: u16,
    pub commit_pause_ms: u64,
    /// How long the idle figures are measured over.
    pub seconds: u64,
}

/// Smallest, median and largest of per-node figures.
#[derive(Debug, Serialize)]
pub struct Spread {
    pub min: f64,
    pub p50: f64,
    pub max: f64,
}

fn spread(v: &[f64]) -> Spread {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let at = |q: f64| if s.is_empty() { 0.0 } else { s[((s.len() - 1) as f64 * q).round() as usize] };
    Spread { min: at(0.0), p50: at(0.5), max: at(1.0) }
}

/// What was run, and on what.
#[derive(Debug, Serialize)]
pub struct ScaleSetup {
    pub nodes: usize,
    pub validators: usize,
    pub providers: usize,
    pub commit_pause_ms: u64,
    /// This machine's cores.
    pub cores: usize,
}

/// RSS, CPU and gossip received of a group of nodes.
#[derive(Debug, Serialize)]
pub struct RoleCosts {
    pub rss_mib: Spread,
    pub cpu_percent: Spread,
    pub gossip_bytes_per_s: Spread,
}

/// Each node's figures, in node order (validators first, the first
/// `providers` of them providers).
#[derive(Debug, Serialize)]
pub struct PerNode {
    pub rss_mib: Vec<f64>,
    pub cpu_percent: Vec<f64>,
    pub gossip_bytes_per_s: Vec<f64>,
}

/// What the nodes cost over the window: all of them, by role, and each.
#[derive(Debug, Serialize)]
pub struct NodeCosts {
    /// CPU of all node processes together, in cores.
    pub cpu_cores_total: f64,
    pub all: RoleCosts,
    pub validators: RoleCosts,
    /// Nodes outside the validator set (they follow decided blocks).
    pub full_nodes: RoleCosts,
    pub per_node: PerNode,
}

impl NodeCosts {
    fn new(per_node: PerNode, validators: usize) -> NodeCosts {
        let costs = |range: std::ops::Range<usize>| {
            let of = |v: &[f64]| spread(v.get(range.clone()).unwrap_or_default());
            RoleCosts {
                rss_mib: of(&per_node.rss_mib),
                cpu_percent: of(&per_node.cpu_percent),
                gossip_bytes_per_s: of(&per_node.gossip_bytes_per_s),
            }
        };
        let n = per_node.cpu_percent.len();
        NodeCosts {
            cpu_cores_total: per_node.cpu_percent.iter().sum::<f64>() / 100.0,
            all: costs(0..n),
            validators: costs(0..validators.min(n)),
            full_nodes: costs(validators.min(n)..n),
            per_node,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct ScaleReport {
    pub setup: ScaleSetup,
    /// From the first process started to every node at height 2.
    pub start_s: f64,
    /// From every node at height 2 to every node holding every provider's offer.
    pub offers_everywhere_s: f64,
    /// Node 0's measuring window.
    pub window_s: f64,
    /// Heights node 0 committed in the window, and per second.
    pub blocks: u64,
    pub blocks_per_s: f64,
    /// The slowest node's heights per second over its window (every node follows at least this fast).
    pub slowest_node_blocks_per_s: f64,
    /// At the end of the window: the most blocks any node was behind node 0
    /// (each read right after node 0).
    pub lag_blocks_max: u64,
    /// Nodes that did not answer their API at the end of the window.
    pub nodes_down: usize,
    pub costs: NodeCosts,
    /// The provider SIGKILLed after the window.
    pub killed_provider: usize,
    /// From the kill to every live node reporting it jailed.
    pub slashed_everywhere_s: f64,
}

/// Starts the testnet in `dir` (which must not hold one), measures, and stops it.
pub fn run(agora: &Path, dir: &Path, o: &ScaleOptions, progress: &mut dyn FnMut(String)) -> Result<ScaleReport, Error> {
    if o.providers == 0 || o.providers > o.nodes {
        return Err(Error::BadArgs("need at least one provider, and no more providers than nodes".into()));
    }
    let options = UpOptions {
        validators: Some(o.validators),
        commit_pause_ms: o.commit_pause_ms,
        ..UpOptions::new(o.nodes, o.providers, o.base_port)
    };
    let started = Instant::now();
    let file = local::up(agora, dir, &options, progress)?;
    let start_s = started.elapsed().as_secs_f64();
    let result = measure(&file, o, start_s, progress);
    let _ = local::down(dir);
    result
}

/// Each node's answer, with when it came.
fn timed<T>(apis: &[String], read: impl Fn(&str) -> T) -> Vec<(Instant, T)> {
    apis.iter().map(|a| (Instant::now(), read(a))).collect()
}

/// Seconds from `a` to `b` (never zero).
fn secs(a: Instant, b: Instant) -> f64 {
    b.duration_since(a).as_secs_f64().max(1e-3)
}

/// How many providers' offers a node's book holds.
fn providers_offered(api: &str) -> usize {
    let mut seen: Vec<String> =
        http::get_list(api, "/v1/offers").iter().filter_map(|o| o["provider"].as_str().map(str::to_string)).collect();
    seen.sort_unstable();
    seen.dedup();
    seen.len()
}

fn jailed(api: &str, address: &str) -> bool {
    http::get_list(api, "/v1/providers").iter().any(|p| p["address"] == address && p["status"] == "jailed")
}

/// Seconds until `done` holds on every node but `except`, polling the
/// ones still waiting; an error naming how many never got there after `deadline`.
fn until_everywhere(
    apis: &[String],
    except: Option<usize>,
    deadline: Duration,
    what: &str,
    done: impl Fn(&str) -> bool,
) -> Result<f64, Error> {
    let from = Instant::now();
    let mut waiting: Vec<usize> = (0..apis.len()).filter(|&i| Some(i) != except).collect();
    loop {
        waiting.retain(|&i| !done(&apis[i]));
        if waiting.is_empty() {
            return Ok(from.elapsed().as_secs_f64());
        }
        if from.elapsed() > deadline {
            return Err(Error::NotReady(format!("{} nodes never {what}", waiting.len())));
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

fn measure(
    file: &TestnetFile,
    o: &ScaleOptions,
    start_s: f64,
    progress: &mut dyn FnMut(String),
) -> Result<ScaleReport, Error> {
    let apis: Vec<String> = file.nodes.iter().map(|n| n.api_url.clone()).collect();
    progress(format!("waiting for every node to hold the {} providers' offers", o.providers));
    let offers_everywhere_s = until_everywhere(&apis, None, OFFERS_DEADLINE, "held every provider's offer", |a| {
        providers_offered(a) >= o.providers
    })?;

    progress(format!("measuring the idle network for {} s", o.seconds));
    // Each figure over its own interval: reading 100 APIs on a saturated
    // machine takes seconds.
    let cpu_from = Instant::now();
    let cpu0: Vec<f64> = file.nodes.iter().map(|n| cpu_seconds(n.pid)).collect();
    let bytes0 = timed(&apis, gossip_bytes);
    let h0 = timed(&apis, local::node_height);
    std::thread::sleep(Duration::from_secs(o.seconds));
    let h1 = timed(&apis, local::node_height);
    let bytes1 = timed(&apis, gossip_bytes);
    let cpu: Vec<f64> = file.nodes.iter().map(|n| cpu_seconds(n.pid)).collect();
    let cpu_s = cpu_from.elapsed().as_secs_f64();
    let cpu: Vec<f64> = cpu.iter().zip(&cpu0).map(|(c1, c0)| (c1 - c0) / cpu_s * 100.0).collect();
    let bytes: Vec<f64> = bytes0.iter().zip(&bytes1).map(|((t0, b0), (t1, b1))| (b1 - b0) / secs(*t0, *t1)).collect();
    let rss: Vec<f64> = file.nodes.iter().map(|n| rss_mib(n.pid)).collect();
    let rates: Vec<f64> = h0
        .iter()
        .zip(&h1)
        .map(|((t0, a), (t1, b))| b.unwrap_or(0).saturating_sub(a.unwrap_or(0)) as f64 / secs(*t0, *t1))
        .collect();
    let blocks = h1[0].1.unwrap_or(0).saturating_sub(h0[0].1.unwrap_or(0));
    let window_s = secs(h0[0].0, h1[0].0);
    // Each node against node 0 read just before it: a sweep of 100 APIs
    // takes longer than a block, so heights read across it are not comparable.
    let lag_blocks_max = apis
        .iter()
        .map(|a| {
            let tip = local::node_height(&apis[0]).unwrap_or(0);
            tip.saturating_sub(local::node_height(a).unwrap_or(0))
        })
        .max()
        .unwrap_or(0);

    let victim = &file.nodes[o.providers - 1];
    progress(format!("killing provider node{} and waiting for every node to see it jailed", victim.index));
    local::signal(&file.dir, victim.index, "kill")?;
    let slashed_everywhere_s =
        until_everywhere(&apis, Some(victim.index), SLASH_DEADLINE, "saw the killed provider jailed", |a| {
            jailed(a, &victim.address)
        })?;

    Ok(ScaleReport {
        setup: ScaleSetup {
            nodes: o.nodes,
            validators: o.validators,
            providers: o.providers,
            commit_pause_ms: o.commit_pause_ms,
            cores: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        },
        start_s,
        offers_everywhere_s,
        window_s,
        blocks,
        blocks_per_s: rates[0],
        slowest_node_blocks_per_s: rates.iter().copied().fold(f64::INFINITY, f64::min),
        lag_blocks_max,
        nodes_down: h1.iter().filter(|(_, h)| h.is_none()).count(),
        costs: NodeCosts::new(PerNode { rss_mib: rss, cpu_percent: cpu, gossip_bytes_per_s: bytes }, o.validators),
        killed_provider: victim.index,
        slashed_everywhere_s,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_takes_the_ends_and_the_median() {
        let s = spread(&[3.0, 1.0, 2.0, 10.0, 4.0]);
        assert_eq!((s.min, s.p50, s.max), (1.0, 3.0, 10.0));
        let empty = spread(&[]);
        assert_eq!((empty.min, empty.p50, empty.max), (0.0, 0.0, 0.0));
    }

    #[test]
    fn costs_split_the_validators_from_the_full_nodes() {
        let per_node = |cpu: Vec<f64>| PerNode {
            rss_mib: vec![20.0; cpu.len()],
            gossip_bytes_per_s: cpu.clone(),
            cpu_percent: cpu,
        };
        let c = NodeCosts::new(per_node(vec![4.0, 5.0, 1.0, 2.0, 1.5]), 2);
        assert_eq!((c.validators.cpu_percent.min, c.validators.cpu_percent.max), (4.0, 5.0));
        assert_eq!(
            (c.full_nodes.cpu_percent.min, c.full_nodes.cpu_percent.p50, c.full_nodes.cpu_percent.max),
            (1.0, 1.5, 2.0)
        );
        assert_eq!((c.all.cpu_percent.min, c.all.cpu_percent.max), (1.0, 5.0));
        assert!((c.cpu_cores_total - 0.135).abs() < 1e-9);
        let all_validators = NodeCosts::new(per_node(vec![3.0, 4.0]), 4);
        assert_eq!(all_validators.full_nodes.cpu_percent.max, 0.0, "no full node");
    }
}
