//! `agora bench market`: the exchange on a real 4-node testnet, measured as
//! a trader sees it: each bid is timed from its POST to one node until it is
//! listed by `GET /v1/market/orders` on every node (what `agora orders`
//! shows), bids sent one after another to the nodes in turn.

use std::path::Path;
use std::time::{Duration, Instant};

use agora_protocol::{Amount, GpuClass, Keypair, Signed, Transaction, TxKind, codec};
use agora_testnet::bench::{Percentiles, percentiles};
use agora_testnet::http;
use agora_testnet::local::{self, UpOptions};
use serde::Serialize;

/// A key holds at most this many open orders (the ledger's per-account limit).
const BIDS_PER_KEY: usize = 16;
/// How long one bid may take to show everywhere before the run fails.
const VISIBLE_DEADLINE: Duration = Duration::from_secs(30);
/// How often the nodes are asked.
const POLL: Duration = Duration::from_millis(10);

fn bench_key(i: usize) -> Keypair {
    Keypair::from_seed_phrase(&format!("agora-bench-market-bidder-{i}"))
}

#[derive(Serialize)]
pub struct MarketBenchReport {
    pub nodes: usize,
    pub commit_pause_ms: u64,
    /// From the POST until the node it went to lists the order.
    pub placed_to_listed_here: Percentiles,
    /// From the POST until every node lists it (the target: p99 ≤ 1 s).
    pub placed_to_listed_everywhere: Percentiles,
}

pub fn run(dir: &Path, samples: usize, base_port: u16) -> anyhow::Result<MarketBenchReport> {
    let keys = samples.div_ceil(BIDS_PER_KEY);
    let options =
        UpOptions { funded: (0..keys).map(|i| bench_key(i).address()).collect(), ..UpOptions::new(4, 2, base_port) };
    let mut progress = |line: String| eprintln!("{line}");
    let file = local::up(&std::env::current_exe()?, dir, &options, &mut progress)?;
    let result = measure(&file, samples);
    let _ = local::down(dir);
    result.map(|(here, everywhere)| MarketBenchReport {
        nodes: file.nodes.len(),
        commit_pause_ms: options.commit_pause_ms,
        placed_to_listed_here: percentiles(here),
        placed_to_listed_everywhere: percentiles(everywhere),
    })
}

fn json(api: &str, path: &str) -> anyhow::Result<serde_json::Value> {
    Ok(http::get(api, path)?.json()?)
}

/// Whether `api` lists an open order of `owner` at `price`.
fn listed(api: &str, owner: &str, price: u64) -> anyhow::Result<bool> {
    let list = json(api, &format!("/v1/market/orders?owner={owner}"))?;
    Ok(list.as_array().into_iter().flatten().any(|o| o["price"] == price.to_string().as_str()))
}

fn measure(file: &local::TestnetFile, samples: usize) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
    let apis: Vec<String> = file.nodes.iter().map(|n| n.api_url.clone()).collect();
    let chain = agora_protocol::ChainId::new(&file.chain_id)?;
    let class = GpuClass::parse(&format!("{}-SIM", "H100-80GB"))?;
    let fee = agora_ledger::params::DEFAULT_MIN_TX_FEE;
    let (mut here, mut everywhere) = (Vec::new(), Vec::new());
    eprintln!("timing {samples} bids from placement to listed on every node");
    for i in 0..samples {
        // Not in an auction's last blocks: its clearing takes every order off the book.
        let until = Instant::now() + VISIBLE_DEADLINE;
        loop {
            let a = json(&apis[0], "/v1/market/auctions")?;
            let left = a["clears_at_height"].as_u64().unwrap_or(0).saturating_sub(a["height"].as_u64().unwrap_or(0));
            if left > 3 {
                break;
            }
            anyhow::ensure!(Instant::now() < until, "the chain is not advancing");
            std::thread::sleep(POLL);
        }
        let key = bench_key(i / BIDS_PER_KEY);
        let owner = key.address().to_string();
        let nonce = json(&apis[0], &format!("/v1/accounts/{owner}"))?["nonce"].as_u64().unwrap_or(0);
        // A price of its own tells this bid apart; tiny, so the escrow is too.
        let price = 1_000 + i as u64;
        let kind = TxKind::PlaceBid {
            class: class.clone(),
            gpus: 1,
            hours: 1,
            max_price: Amount(price),
            split: false,
            start_hours: 0,
        };
        let tx = Signed::sign(Transaction { nonce, fee, kind }, &key, &chain)?;
        let body = serde_json::json!({ "tx": hex::encode(codec::encode(&tx)?) }).to_string();
        let to = &apis[i % apis.len()];
        let started = Instant::now();
        let reply = http::post(to, "/v1/tx", &body)?;
        anyhow::ensure!(reply.status == 200, "bid {i} refused: {}", reply.json()?);
        let mut seen_here = None;
        let mut pending: Vec<&String> = apis.iter().collect();
        while !pending.is_empty() {
            anyhow::ensure!(started.elapsed() < VISIBLE_DEADLINE, "bid {i} not listed everywhere in time");
            let mut still = Vec::new();
            for api in pending {
                if listed(api, &owner, price)? {
                    if api == to {
                        seen_here = Some(started.elapsed());
                    }
                } else {
                    still.push(api);
                }
            }
            pending = still;
            if !pending.is_empty() {
                std::thread::sleep(POLL);
            }
        }
        everywhere.push(started.elapsed().as_secs_f64() * 1000.0);
        here.push(seen_here.unwrap_or_else(|| started.elapsed()).as_secs_f64() * 1000.0);
        // The account's nonce must be final before the next bid from it.
        let until = Instant::now() + VISIBLE_DEADLINE;
        while json(&apis[0], &format!("/v1/accounts/{owner}"))?["nonce"].as_u64().unwrap_or(0) <= nonce {
            anyhow::ensure!(Instant::now() < until, "bid {i}'s nonce never advanced");
            std::thread::sleep(POLL);
        }
    }
    Ok((here, everywhere))
}
