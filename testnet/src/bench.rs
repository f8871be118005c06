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
/// How long the idle CPU and gossip traffic are measured over.
const IDLE_WINDOW: Duration = Duration::from_secs(10);
/// Clock ticks per second of /proc's CPU times (USER_HZ, 100 on Linux).
const CLOCK_TICKS_PER_S: f64 = 100.0;
/// How often the observer asks for new blocks.
const OBSERVE_INTERVAL: Duration = Duration::from_millis(20);

/// Transactions per `POST /v1/txs` at most (the API's limit).
const MAX_REQUEST_TXS: usize = 1_000;

/// When a transaction was submitted and when its block was seen.
type Commit = (Instant, Instant);

#[derive(Clone, Debug)]
pub struct BenchOptions {
    pub nodes: usize,
    /// Validators among the nodes (the first ones); None: all.
    pub validators: Option<usize>,
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
    /// The first `validators` nodes are validators, the rest full nodes
    /// (the per-node figures below are in node order).
    pub validators: usize,
    pub providers: usize,
    pub idle_rss_mib: Vec<f64>,
    /// Each node's CPU while idle (offers and heartbeats only), % of one core.
    pub idle_cpu_percent: Vec<f64>,
    /// Gossip bytes each node received per second while idle.
    pub idle_gossip_bytes_per_s: Vec<f64>,
    /// From the provider signing its offer to the last node having it in its book.
    pub offer_propagation: Percentiles,
    pub offered_rate_tps: u64,
    pub load_seconds: u64,
    /// Transfers the nodes accepted (refused ones are sent again later).
    pub submitted_txs: usize,
    /// Submissions refused for load (503 or a retry hint), each sent again.
    pub refused_for_load: usize,
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

pub(crate) fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    kb / 1024.0
}

/// CPU time a process has used (user + system), in seconds.
pub(crate) fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces, in parentheses):
    // utime and stime are the 12th and 13th.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / CLOCK_TICKS_PER_S
}

/// Gossip bytes a node has received, all topics.
pub(crate) fn gossip_bytes(api: &str) -> f64 {
    let body = http::get(api, "/metrics").map(|r| r.body).unwrap_or_default();
    body.lines()
        .filter(|l| l.starts_with("agora_gossip_bytes_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
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
        validators: o.validators,
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
    progress(format!("measuring idle CPU and gossip traffic for {} s", IDLE_WINDOW.as_secs()));
    let cpu0: Vec<f64> = file.nodes.iter().map(|n| cpu_seconds(n.pid)).collect();
    let bytes0: Vec<f64> = apis.iter().map(|a| gossip_bytes(a)).collect();
    let idle_from = Instant::now();
    std::thread::sleep(IDLE_WINDOW);
    let idle_s = idle_from.elapsed().as_secs_f64();
    let idle_cpu_percent: Vec<f64> =
        file.nodes.iter().zip(&cpu0).map(|(n, c0)| (cpu_seconds(n.pid) - c0) / idle_s * 100.0).collect();
    let idle_gossip_bytes_per_s: Vec<f64> =
        apis.iter().zip(&bytes0).map(|(a, b0)| (gossip_bytes(a) - b0) / idle_s).collect();

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
    let recipient = file.nodes[0].address.parse().map_err(|e: agora_protocol::Error| bad(e.to_string()))?;
    let mut client = Client::new(keys, chain, recipient);
    let started = Instant::now();
    let mut attempted = 0usize;
    let mut tick = 0u64;
    while started.elapsed() < Duration::from_secs(o.seconds) {
        tick += 1;
        let due = (o.rate as f64 * started.elapsed().as_secs_f64()).ceil() as usize;
        let batch = client.next(due.saturating_sub(attempted), Instant::now())?;
        attempted += batch.len();
        // Each account talks to one node, as a wallet does, and all of an
        // account's transfers of a tick go in one request: a node takes a
        // prefix of each request, so an account split across two requests
        // could have later nonces taken after earlier ones were refused (a
        // block emptying the pool in between) — a gap they would age out
        // behind.
        let mut by_node: Vec<Vec<Sent>> = vec![Vec::new(); apis.len()];
        for sent in batch {
            by_node[sent.0 % apis.len()].push(sent);
        }
        let requests: Vec<(usize, Vec<Sent>)> = by_node
            .into_iter()
            .enumerate()
            .flat_map(|(n, b)| whole_accounts(b).into_iter().map(move |r| (n, r)))
            .collect();
        for (n, chunk) in requests.iter().map(|(n, c)| (*n, c.as_slice())) {
            let hex: Vec<String> =
                chunk.iter().map(|(_, t)| codec::encode(t).map(hex::encode)).collect::<Result<_, _>>()?;
            let body = serde_json::json!({ "txs": hex }).to_string();
            let at = Instant::now();
            let api = &apis[n];
            let reply = http::post(api, "/v1/txs", &body).map_err(|e| bad(e.to_string()))?;
            if reply.status == 503 {
                // Refused whole, before any work: every one is sent again.
                let hint = reply.json().ok().and_then(|j| j["retry_after_ms"].as_u64());
                chunk.iter().for_each(|t| client.refused(t.clone(), hint, at));
                continue;
            }
            if reply.status != 200 {
                return Err(bad(format!("POST /v1/txs: {} {}", reply.status, reply.body)));
            }
            let answer = reply.json().map_err(|e| bad(e.to_string()))?;
            let mut map = submitted.lock().map_err(|_| bad("lock".into()))?;
            for h in answer["hashes"].as_array().into_iter().flatten().filter_map(|h| h.as_str()) {
                map.insert(h.to_string(), at);
            }
            for r in answer["rejected"].as_array().into_iter().flatten() {
                if let Some(t) = r["index"].as_u64().and_then(|i| chunk.get(i as usize)) {
                    client.refused(t.clone(), r["retry_after_ms"].as_u64(), at);
                }
            }
        }
        let next = started + LOAD_TICK * (tick as u32);
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    let refused_for_load = client.refused_for_load;
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
        validators: file.nodes.iter().filter(|n| n.validator).count(),
        providers,
        idle_rss_mib,
        idle_cpu_percent,
        idle_gossip_bytes_per_s,
        offer_propagation: percentiles(offer_ms),
        offered_rate_tps: o.rate,
        load_seconds: o.seconds,
        submitted_txs: submitted_count,
        refused_for_load,
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

/// A transfer and the index of the load account that signed it.
type Sent = (usize, Signed<Transaction>);

/// Requests of at most `MAX_REQUEST_TXS`, each holding every transfer of
/// its accounts (in their order), so no account is split across two.
fn whole_accounts(sent: Vec<Sent>) -> Vec<Vec<Sent>> {
    let mut per_account: std::collections::BTreeMap<usize, Vec<Sent>> = std::collections::BTreeMap::new();
    for s in sent {
        per_account.entry(s.0).or_default().push(s);
    }
    let mut requests: Vec<Vec<Sent>> = Vec::new();
    for (_, txs) in per_account {
        match requests.last_mut() {
            Some(r) if r.len() + txs.len() <= MAX_REQUEST_TXS => r.extend(txs),
            // An account with more than a request holds (its refused ones
            // piled up behind a long hint) is split, in nonce order.
            _ => requests.extend(txs.chunks(MAX_REQUEST_TXS).map(<[Sent]>::to_vec)),
        }
    }
    requests
}

/// The load's clients, one per account, as a wallet behaves: each account
/// sends its transfers in nonce order; those refused for load are sent
/// again, in order, after the node's hint, and the account sends nothing
/// new meanwhile (a later nonce would only wait behind a refused one, and
/// age out of the pools).
struct Client<'a> {
    keys: &'a [Keypair],
    chain: ChainId,
    recipient: agora_protocol::Address,
    nonces: Vec<u64>,
    /// Per account, its refused transfers by nonce and when to send them again.
    held: Vec<(Instant, std::collections::BTreeMap<u64, Signed<Transaction>>)>,
    /// The next account to send a fresh transfer from.
    cursor: usize,
    /// Submissions refused for load (a 503 or a retry hint).
    refused_for_load: usize,
}

impl<'a> Client<'a> {
    fn new(keys: &'a [Keypair], chain: ChainId, recipient: agora_protocol::Address) -> Client<'a> {
        let now = Instant::now();
        Client {
            keys,
            chain,
            recipient,
            nonces: vec![0; keys.len()],
            held: vec![(now, Default::default()); keys.len()],
            cursor: 0,
            refused_for_load: 0,
        }
    }

    /// Up to `budget` transfers to send now: held ones whose time has come
    /// first (each account's whole queue, in nonce order), then fresh ones
    /// from accounts holding none.
    fn next(&mut self, budget: usize, now: Instant) -> Result<Vec<Sent>, Error> {
        let mut out = Vec::with_capacity(budget);
        for (a, (at, queue)) in self.held.iter_mut().enumerate() {
            if *at <= now && !queue.is_empty() && out.len() + queue.len() <= budget {
                out.extend(std::mem::take(queue).into_values().map(|t| (a, t)));
            }
        }
        let mut tried = 0;
        while out.len() < budget && tried < self.keys.len() {
            let a = self.cursor;
            self.cursor = (self.cursor + 1) % self.keys.len();
            tried += 1;
            if !self.held[a].1.is_empty() {
                continue;
            }
            tried = 0;
            // Testnets run the default parameters: the minimum fee.
            let fee = agora_ledger::params::DEFAULT_MIN_TX_FEE;
            let kind = TxKind::Transfer { to: self.recipient, amount: Amount(1) };
            let tx = Transaction { nonce: self.nonces[a], fee, kind };
            self.nonces[a] += 1;
            out.push((a, Signed::sign(tx, &self.keys[a], &self.chain)?));
        }
        Ok(out)
    }

    /// A transfer the node refused: its account's queue is sent again after
    /// `hint_ms` (or the next tick without one, a refusal not for load).
    fn refused(&mut self, (a, tx): Sent, hint_ms: Option<u64>, at: Instant) {
        self.refused_for_load += usize::from(hint_ms.is_some());
        let again = at + hint_ms.map_or(LOAD_TICK, Duration::from_millis);
        let (when, queue) = &mut self.held[a];
        *when = if queue.is_empty() { again } else { (*when).max(again) };
        queue.insert(tx.body.nonce, tx);
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_request_holds_more_than_the_api_takes() {
        let key = Keypair::from_seed_phrase("bench split");
        let chain = ChainId::new("agora-split").unwrap();
        let sent = |account: usize, nonce: u64| -> Sent {
            let kind = agora_protocol::TxKind::Transfer { to: key.address(), amount: agora_protocol::Amount(1) };
            let body = Transaction { nonce, fee: agora_protocol::Amount(1), kind };
            (account, Signed::sign(body, &key, &chain).unwrap())
        };
        let mut all: Vec<Sent> = (0..2_500).map(|n| sent(7, n)).collect();
        all.extend((0..10).map(|n| sent(8, n)));
        let requests = whole_accounts(all);
        assert!(requests.iter().all(|r| r.len() <= MAX_REQUEST_TXS), "a request over the API's limit");
        let nonces: Vec<u64> = requests.iter().flatten().filter(|s| s.0 == 7).map(|s| s.1.body.nonce).collect();
        assert_eq!(nonces, (0..2_500).collect::<Vec<_>>(), "one account's transfers stay in nonce order");
        assert_eq!(requests.iter().flatten().count(), 2_510);
    }
}
