//! `agora bench testnet`: a real testnet of node processes on loopback,
//! measured from outside as a user would see it: idle memory per node, how
//! fast a provider's offer reaches every order book, and committed
//! transfers per second with their commit latency under a steady load sent
//! through the nodes' HTTP APIs. Prints figures; never asserts them.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agora_protocol::{Amount, ChainId, Keypair, Signed, Transaction, TxKind, codec};
use serde::Serialize;

use crate::error::Error;
use crate::http;
use crate::local::{self, TestnetFile, UpOptions};

/// Load accounts funded at genesis; many, because each may queue only a few transactions.
pub const LOAD_ACCOUNTS: usize = 400;
/// How often the load generator sends a batch.
const LOAD_TICK: Duration = Duration::from_millis(100);
/// How long to wait for an offer to reach every node.
const OFFER_DEADLINE: Duration = Duration::from_secs(20);
/// How long after the load stops to wait for the last transactions to commit.
const DRAIN_DEADLINE: Duration = Duration::from_secs(60);
/// How often the observer asks for new blocks.
const OBSERVE_INTERVAL: Duration = Duration::from_millis(20);

/// When a transaction was submitted and when its block was seen.
type Commit = (Instant, Instant);

#[derive(Clone, Debug)]
pub struct BenchOptions {
    pub nodes: usize,
    pub base_port: u16,
    pub commit_pause_ms: u64,
    /// Offer announcements timed (alternating between the providers).
    pub offers: usize,
    /// Offered load, transfers per second.
    pub rate: u64,
    /// How long the load runs.
    pub seconds: u64,
}

#[derive(Debug, Serialize)]
pub struct Percentiles {
    pub samples: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// p50, p99 and max of millisecond samples.
pub fn percentiles(mut v: Vec<f64>) -> Percentiles {
    v.sort_by(f64::total_cmp);
    let at = |q: f64| if v.is_empty() { 0.0 } else { v[((v.len() - 1) as f64 * q).round() as usize] };
    Percentiles { samples: v.len(), p50_ms: at(0.5), p99_ms: at(0.99), max_ms: v.last().copied().unwrap_or(0.0) }
}

#[derive(Debug, Serialize)]
pub struct BenchReport {
    pub nodes: usize,
    pub providers: usize,
    pub idle_rss_mib: Vec<f64>,
    /// From the provider signing its offer to the last node having it in its book.
    pub offer_propagation: Percentiles,
    pub offered_rate_tps: u64,
    pub load_seconds: u64,
    /// Transfers the nodes accepted (refused ones are sent again later).
    pub submitted_txs: usize,
    pub committed_txs: usize,
    /// Committed transfers over the time from the first submission to the last commit.
    pub committed_tps: f64,
    /// From submission to the block holding the transaction being visible on node 0.
    pub commit_latency: Percentiles,
    pub blocks: u64,
    pub rss_after_load_mib: Vec<f64>,
    /// Slashes of the (live) providers after the load: heartbeats must stay on time under load.
    pub provider_slashes_after_load: u64,
}

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    kb / 1024.0
}

fn load_key(i: usize) -> Keypair {
    Keypair::from_seed_phrase(&format!("agora-bench-load-{i}"))
}

fn bad(what: String) -> Error {
    Error::NotReady(what)
}

/// Runs the whole scenario in `dir` (which must not hold a testnet) and stops the testnet after.
pub fn run(agora: &Path, dir: &Path, o: &BenchOptions, progress: &mut dyn FnMut(String)) -> Result<BenchReport, Error> {
    let keys: Vec<Keypair> = (0..LOAD_ACCOUNTS).map(load_key).collect();
    let providers = 2.min(o.nodes);
    let options = UpOptions {
        commit_pause_ms: o.commit_pause_ms,
        funded: keys.iter().map(Keypair::address).collect(),
        ..UpOptions::new(o.nodes, providers, o.base_port)
    };
    let file = local::up(agora, dir, &options, progress)?;
    let result = measure(&file, o, &keys, providers, progress);
    let _ = local::down(dir);
    result
}

fn measure(
    file: &TestnetFile,
    o: &BenchOptions,
    keys: &[Keypair],
    providers: usize,
    progress: &mut dyn FnMut(String),
) -> Result<BenchReport, Error> {
    let apis: Vec<String> = file.nodes.iter().map(|n| n.api_url.clone()).collect();
    progress("waiting for the providers' first offers on every node".into());
    let until = Instant::now() + OFFER_DEADLINE * 3;
    while !apis.iter().all(|a| offers(a).len() >= providers) {
        if Instant::now() > until {
            return Err(bad("providers' offers never reached every node".into()));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(3));
    let idle_rss_mib: Vec<f64> = file.nodes.iter().map(|n| rss_mib(n.pid)).collect();

    progress(format!("timing {} offer announcements", o.offers));
    let mut offer_ms = Vec::new();
    for k in 0..o.offers {
        let provider = &file.nodes[k % providers];
        let reply = crate::local::admin_call(provider, "/v1/admin/announce", "{}").map_err(|e| bad(e.to_string()))?;
        let seq = reply.json().ok().and_then(|j| j["seq"].as_u64()).ok_or_else(|| bad(reply.body.clone()))?;
        let until = Instant::now() + OFFER_DEADLINE;
        let mut latest = 0u64;
        for api in &apis {
            loop {
                let seen = offers(api)
                    .into_iter()
                    .find(|x| x["provider"] == provider.address.as_str() && x["seq"].as_u64() == Some(seq));
                if let Some(x) = seen {
                    latest = latest.max(x["received_at_ms"].as_u64().unwrap_or(0));
                    break;
                }
                if Instant::now() > until {
                    return Err(bad(format!("offer {seq} never reached {api}")));
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        // The sequence number is the provider's clock when it signed (one machine, one clock).
        offer_ms.push(latest.saturating_sub(seq) as f64);
    }

    progress(format!("sending {} transfers/s for {} s", o.rate, o.seconds));
    let chain = ChainId::new(&file.chain_id)?;
    let submitted: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let committed: Arc<Mutex<Vec<Commit>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let start_height = local::node_height(&apis[0]).unwrap_or(0);
    let observer = {
        let (submitted, committed, stop, api) = (submitted.clone(), committed.clone(), stop.clone(), apis[0].clone());
        std::thread::spawn(move || observe(&api, start_height, &submitted, &committed, &stop))
    };
    let mut nonces = vec![0u64; keys.len()];
    // Transactions a node refused (its mempool was full): sent again first,
    // since every later nonce of the same account waits for them.
    let mut retry: std::collections::VecDeque<Signed<Transaction>> = std::collections::VecDeque::new();
    let started = Instant::now();
    let mut sent = 0usize;
    let mut tick = 0u64;
    let recipient = file.nodes[0].address.parse().map_err(|e: agora_protocol::Error| bad(e.to_string()))?;
    while started.elapsed() < Duration::from_secs(o.seconds) {
        tick += 1;
        let due = (o.rate as f64 * started.elapsed().as_secs_f64()).ceil() as usize;
        let fresh = due.saturating_sub(sent).saturating_sub(retry.len());
        let mut batch: Vec<Signed<Transaction>> = retry.drain(..).collect();
        for i in sent..sent + fresh {
            let a = i % keys.len();
            // Testnets run the default parameters: the minimum fee.
            let fee = agora_ledger::params::DEFAULT_MIN_TX_FEE;
            let tx = Transaction { nonce: nonces[a], fee, kind: TxKind::Transfer { to: recipient, amount: Amount(1) } };
            nonces[a] += 1;
            batch.push(Signed::sign(tx, &keys[a], &chain)?);
        }
        sent += fresh;
        for (n, chunk) in batch.chunks(batch.len().div_ceil(apis.len()).max(1)).enumerate() {
            let hex: Vec<String> = chunk.iter().map(|t| codec::encode(t).map(hex::encode)).collect::<Result<_, _>>()?;
            let body = serde_json::json!({ "txs": hex }).to_string();
            let at = Instant::now();
            let api = &apis[(n + tick as usize) % apis.len()];
            let reply = http::post(api, "/v1/txs", &body).map_err(|e| bad(e.to_string()))?;
            let answer = reply.json().map_err(|e| bad(e.to_string()))?;
            let mut map = submitted.lock().map_err(|_| bad("lock".into()))?;
            for h in answer["hashes"].as_array().into_iter().flatten().filter_map(|h| h.as_str()) {
                map.insert(h.to_string(), at);
            }
            for r in answer["rejected"].as_array().into_iter().flatten() {
                if let Some(tx) = r["index"].as_u64().and_then(|i| chunk.get(i as usize)) {
                    retry.push_back(tx.clone());
                }
            }
        }
        let next = started + LOAD_TICK * (tick as u32);
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    let submitted_count = submitted.lock().map(|m| m.len()).unwrap_or(0);
    progress(format!("{submitted_count} transfers accepted; waiting for the last commits"));
    let drain_until = Instant::now() + DRAIN_DEADLINE;
    while Instant::now() < drain_until {
        let done = committed.lock().map(|c| c.len()).unwrap_or(0);
        if done >= submitted_count {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::Relaxed);
    let blocks = observer.join().unwrap_or(0);
    let committed = committed.lock().map(|c| c.clone()).unwrap_or_default();
    let last_commit = committed.iter().map(|(_, c)| *c).max().unwrap_or(started);
    let latencies: Vec<f64> = committed.iter().map(|(s, c)| c.duration_since(*s).as_secs_f64() * 1000.0).collect();
    let span = last_commit.duration_since(started).as_secs_f64().max(0.001);
    Ok(BenchReport {
        nodes: o.nodes,
        providers,
        idle_rss_mib,
        offer_propagation: percentiles(offer_ms),
        offered_rate_tps: o.rate,
        load_seconds: o.seconds,
        submitted_txs: submitted_count,
        committed_txs: latencies.len(),
        committed_tps: latencies.len() as f64 / span,
        commit_latency: percentiles(latencies),
        blocks,
        rss_after_load_mib: file.nodes.iter().map(|n| rss_mib(n.pid)).collect(),
        provider_slashes_after_load: http::get(&apis[0], "/v1/providers")
            .ok()
            .and_then(|r| r.json().ok())
            .and_then(|j| j.as_array().map(|a| a.iter().filter_map(|p| p["slashes"].as_u64()).sum()))
            .unwrap_or(u64::MAX),
    })
}

fn offers(api: &str) -> Vec<serde_json::Value> {
    http::get_list(api, "/v1/offers")
}

/// Follows node 0's new blocks and records when each submitted transaction
/// is seen committed; returns how many blocks it saw.
fn observe(
    api: &str,
    mut height: u64,
    submitted: &Mutex<HashMap<String, Instant>>,
    committed: &Mutex<Vec<Commit>>,
    stop: &AtomicBool,
) -> u64 {
    let first = height;
    let mut early: Vec<(String, Instant)> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let tip = local::node_height(api).unwrap_or(height);
        while height < tip {
            let Some(block) = http::get(api, &format!("/v1/blocks/{}", height + 1)).ok().and_then(|r| r.json().ok())
            else {
                break;
            };
            height += 1;
            let seen = Instant::now();
            let hashes = block["txs"].as_array().into_iter().flatten().filter_map(|t| t["hash"].as_str());
            early.extend(hashes.map(|h| (h.to_string(), seen)));
        }
        // A transaction can commit before its submitter recorded it: retry those.
        if let (Ok(sub), Ok(mut done)) = (submitted.lock(), committed.lock()) {
            early.retain(|(h, seen)| match sub.get(h) {
                Some(at) => {
                    done.push((*at, (*seen).max(*at)));
                    false
                }
                // Not ours (a provider's registration, say); forget it after a while.
                None => seen.elapsed() < Duration::from_secs(10),
            });
        }
        std::thread::sleep(OBSERVE_INTERVAL);
    }
    height - first
}
