//! Mempool floods on a real 4-node testnet (issue 11, item 2).
//!
//! 1. The attack as it was found: 12,800 transfers with nonces 1..64 from 200
//!    fresh, unfunded keys posted to every API. None is admitted (the senders
//!    cannot pay the fee; nonce 64 is past the window), the pools stay empty,
//!    and a funded `agora transfer` commits within 10 blocks.
//! 2. The paid version: 160 funded keys queue 63 minimum-fee transfers each
//!    (10,080, four times what a node takes from its clients) through one
//!    API. The node takes them up to its edge mark and refuses the rest as
//!    load before checking a signature (`mempool_busy`, 503, a whole
//!    request refused with `Retry-After`, each refusal with `retry_after_ms`).
//!    Every transfer taken commits: none is lost behind a gap or dropped by
//!    a peer. A user who pays ten times the minimum fee (taken at once: it
//!    outbids the pool) and one who pays the minimum (the CLI retries after
//!    the hint) both commit within 10 blocks.

mod common;
use common::*;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use agora_ledger::params::DEFAULT_MIN_TX_FEE as FEE;
use agora_protocol::{Amount, ChainId, Keypair, Signed, Transaction, TxKind, codec};
use agora_testnet::http;

const FRESH_KEYS: usize = 200;
const FUNDED_KEYS: usize = 160;
const TXS_PER_FUNDED_KEY: u64 = 63;
/// Transfers timed quiet and during the junk flood.
const LATENCY_SAMPLES: usize = 10;

fn account(api: &str, address: &str) -> serde_json::Value {
    http::get(api, &format!("/v1/accounts/{address}")).ok().and_then(|r| r.json().ok()).unwrap_or_default()
}

fn transfer(
    key: &Keypair,
    nonce: u64,
    to: agora_protocol::Address,
    amount: Amount,
    chain: &ChainId,
) -> Signed<Transaction> {
    let body = Transaction { nonce, fee: FEE, kind: TxKind::Transfer { to, amount } };
    Signed::sign(body, key, chain).unwrap()
}

/// Posts in batches of at most 1,000; returns the number accepted and the
/// rejections counted by code. A request refused whole for load counts
/// each of its transactions under the refusal's code; every load refusal
/// must carry a retry hint.
fn post(api: &str, txs: &[Signed<Transaction>]) -> (u64, BTreeMap<String, u64>) {
    post_in(api, txs, 1_000)
}

/// `post` with `per_request` transactions per request.
fn post_in(api: &str, txs: &[Signed<Transaction>], per_request: usize) -> (u64, BTreeMap<String, u64>) {
    let mut accepted = 0;
    let mut codes = BTreeMap::new();
    for chunk in txs.chunks(per_request) {
        let hex: Vec<String> = chunk.iter().map(|t| hex::encode(codec::encode(t).unwrap())).collect();
        let r = http::post(api, "/v1/txs", &serde_json::json!({ "txs": hex }).to_string()).unwrap();
        let v = r.json().unwrap();
        if r.status == 503 {
            assert_eq!(v["code"], "mempool_busy", "{}", r.body);
            let ms = v["retry_after_ms"].as_u64().filter(|ms| *ms >= 200);
            let secs = r.retry_after.as_deref().and_then(|s| s.parse::<u64>().ok());
            assert!(ms.is_some(), "{}", r.body);
            assert_eq!(secs, ms.map(|ms| ms.div_ceil(1000)), "Retry-After is the hint in whole seconds, rounded up");
            *codes.entry("mempool_busy".to_string()).or_insert(0) += chunk.len() as u64;
            *codes.entry("whole requests refused".to_string()).or_insert(0) += 1;
            continue;
        }
        assert_eq!(r.status, 200, "{}", r.body);
        accepted += v["accepted"].as_u64().unwrap();
        for rej in v["rejected"].as_array().unwrap() {
            if rej["code"] == "mempool_busy" {
                assert!(rej["retry_after_ms"].as_u64().is_some_and(|ms| ms >= 200), "{rej}");
            }
            *codes.entry(rej["code"].as_str().unwrap().to_string()).or_insert(0) += 1;
        }
    }
    (accepted, codes)
}

/// Posts a quarter of `txs` through each API at once.
fn post_everywhere(apis: &[String], txs: &[Signed<Transaction>]) -> (u64, BTreeMap<String, u64>) {
    let quarter = txs.len().div_ceil(apis.len());
    std::thread::scope(|s| {
        let posts: Vec<_> = txs.chunks(quarter).zip(apis).map(|(chunk, a)| s.spawn(move || post(a, chunk))).collect();
        let mut total = (0, BTreeMap::new());
        for p in posts {
            let (n, codes) = p.join().unwrap();
            total.0 += n;
            for (c, k) in codes {
                *total.1.entry(c).or_insert(0) += k;
            }
        }
        total
    })
}

fn mempool(api: &str) -> u64 {
    status(api).and_then(|s| s["mempool"].as_u64()).unwrap_or(u64::MAX)
}

/// `agora transfer` output "… at height H …" → H.
#[test]
fn junk_from_strangers_is_refused_and_a_paid_flood_cannot_delay_a_user() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("net");
    let _down = Down(dir.clone());
    let net = testnet_up(&dir, 1, test_ports(12), &["--commit-pause-ms", "2000"]);
    let apis = api_urls(&net);
    let chain = ChainId::new(net["chain_id"].as_str().unwrap()).unwrap();
    let buyer_home = net["buyer_home"].as_str().unwrap().to_string();
    let buyer = agora_node::keystore::load(Path::new(&buyer_home), "default").unwrap().keypair;
    let sink = net["nodes"][2]["address"].as_str().unwrap().to_string();
    let sink_addr: agora_protocol::Address = sink.parse().unwrap();

    // A normal transfer's latency (submit → committed, as `agora transfer`
    // sees it, polling every 200 ms), quiet first.
    let timed_transfer = || {
        let started = std::time::Instant::now();
        let out = ok(agora(&["--home", &buyer_home, "transfer", &sink, "1", "--node", &apis[3]]));
        (started.elapsed(), committed_at(&out))
    };
    let median = |v: &[Duration]| Duration::from_millis(percentile_ms(v, 50) as u64);
    let quiet_samples: Vec<Duration> = (0..LATENCY_SAMPLES).map(|_| timed_transfer().0).collect();
    let quiet = median(&quiet_samples);

    // 1. 200 fresh keys × nonces 1..=64, nothing funded.
    let fresh: Vec<Keypair> = (0..FRESH_KEYS).map(|_| Keypair::generate().unwrap()).collect();
    let junk: Vec<_> = fresh
        .iter()
        .flat_map(|k| (1..=64u64).map(move |n| (k, n)))
        .map(|(k, n)| transfer(k, n, sink_addr, Amount(1), &chain))
        .collect();
    assert_eq!(junk.len(), 12_800);
    let (accepted, codes) = post_everywhere(&apis, &junk);
    assert_eq!(accepted, 0, "junk admitted; refusals: {codes:?}");
    assert_eq!(codes.get("cannot_pay"), Some(&(FRESH_KEYS as u64 * 63)), "{codes:?}");
    assert_eq!(codes.get("nonce_too_far"), Some(&(FRESH_KEYS as u64)), "{codes:?}");
    assert!(apis.iter().all(|a| mempool(a) < 10), "the pools stayed empty");
    // The same flood again, continuously, while a user sends transfers.
    let stop = std::sync::atomic::AtomicBool::new(false);
    let under_attack = std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                post_everywhere(&apis, &junk);
            }
        });
        let mut samples = Vec::new();
        for _ in 0..LATENCY_SAMPLES {
            let h0 = height(&apis[3]);
            let (took, at) = timed_transfer();
            assert!(at <= h0 + 10, "committed at {at} after {h0}");
            samples.push(took);
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        samples
    });
    report_latency(
        "mempool junk flood (12,800 unpayable transfers, posted again and again)",
        &quiet_samples,
        &under_attack,
    );
    let under_attack = median(&under_attack);
    // Target: within 2x of quiet (plus one CLI polling interval of slack on a busy machine).
    assert!(under_attack <= quiet * 2 + Duration::from_millis(400), "{under_attack:?} vs quiet {quiet:?}");

    // 2. A second user beside the buyer, and 160 flooding keys, funded (the
    // buyer's nonce window is 64: in rounds).
    let second: serde_json::Value =
        serde_json::from_str(&ok(agora(&["--home", &buyer_home, "keys", "new", "--name", "second", "--json"])))
            .unwrap();
    let second = second["address"].as_str().unwrap().to_string();
    ok(agora(&["--home", &buyer_home, "transfer", &second, "10", "--node", &apis[3]]));
    let funded: Vec<Keypair> = (0..FUNDED_KEYS).map(|_| Keypair::generate().unwrap()).collect();
    for round in funded.chunks(60) {
        let n0 = account(&apis[3], &buyer.address().to_string())["nonce"].as_u64().unwrap();
        let txs: Vec<_> = round
            .iter()
            .enumerate()
            .map(|(i, k)| transfer(&buyer, n0 + i as u64, k.address(), Amount::agr(1), &chain))
            .collect();
        assert_eq!(post(&apis[3], &txs).0, round.len() as u64);
        let last = round.last().unwrap().address().to_string();
        wait_until("a funding round committed", Duration::from_secs(120), || {
            account(&apis[3], &last)["balance"].as_str().is_some_and(|b| b != "0")
        });
    }
    // 10,080 minimum-fee transfers, each affordable (1 AGR pays 63 × (fee + 1 µAGR)).
    let flood: Vec<_> = funded
        .iter()
        .flat_map(|k| (0..TXS_PER_FUNDED_KEY).map(move |n| (k, n)))
        .map(|(k, n)| transfer(k, n, sink_addr, Amount(1), &chain))
        .collect();
    let h1 = height(&apis[3]);
    // All through one node, which takes them up to its edge mark. Each
    // request holds whole keys (15 × 63), as a client should send them: the
    // node takes a prefix of each request, so a key split across two
    // requests could have its later nonces taken after its earlier ones
    // were refused (a block emptying the pool in between), and those would
    // wait behind the gap until they aged out.
    let (accepted, codes) = post_in(&apis[0], &flood, 15 * TXS_PER_FUNDED_KEY as usize);
    let busy = codes.get("mempool_busy").copied().unwrap_or(0);
    assert_eq!(accepted + busy, flood.len() as u64, "only load refusals: {codes:?}");
    let mark = agora_node::edge::EDGE_MAX_TXS as u64;
    // Blocks committed while the 11 requests went in make room for more.
    assert!(accepted >= mark, "the node took {accepted} of the paid flood, its mark is {mark} ({codes:?})");
    assert!(busy >= 1_000, "the node shed only {busy} of the paid flood ({codes:?})");
    assert!(codes.contains_key("whole requests refused"), "no request was refused whole: {codes:?}");
    let pools: Vec<u64> = apis.iter().map(|a| mempool(a)).collect();
    eprintln!("flood: {accepted} admitted, refused {codes:?}, pools {pools:?} at height {h1}");
    // Node 0 gossips the burst paced, highest fee first: no peer's send queue overflows.
    let dropped = metric(&apis[0], "agora_tx_gossip_dropped_total");
    eprintln!("node 0: {dropped} transactions found every gossip send queue full");

    // A user paying ten times the minimum and one paying the minimum (told
    // the pool is full and retrying) both commit within 10 blocks. Which
    // commits first is not asserted: each proposer takes the higher fee
    // first (`mempool::tests`), but across the network a transaction sent
    // during the burst reaches the other validators behind the thousands
    // each validates one by one, so on this 2-core machine the minimum fee
    // sometimes commits first (docs/design/threats.md).
    let paying = std::thread::scope(|s| {
        let high =
            s.spawn(|| agora(&["--home", &buyer_home, "transfer", &sink, "1", "--fee", "0.01", "--node", &apis[0]]));
        let low = agora(&["--home", &buyer_home, "transfer", &sink, "1", "--key", "second", "--node", &apis[0]]);
        (high.join().unwrap(), low)
    });
    eprintln!("high-fee user's stderr: {}", String::from_utf8_lossy(&paying.0.stderr));
    eprintln!("low-fee user's stderr: {}", String::from_utf8_lossy(&paying.1.stderr));
    let (high, low) = (ok(paying.0), ok(paying.1));
    eprintln!("high fee: {high}low fee: {low}");
    assert!(committed_at(&high) <= h1 + 10, "the higher fee committed at {} after {h1}", committed_at(&high));
    assert!(committed_at(&low) <= h1 + 10, "the minimum fee committed at {} after {h1}", committed_at(&low));

    // Every transfer the edge took commits (each key's taken ones are a
    // prefix of its nonces: refusals past the mark are monotone within a
    // request), and is paid for: the fees went to proposers.
    let nonces = || -> u64 {
        funded.iter().map(|k| account(&apis[3], &k.address().to_string())["nonce"].as_u64().unwrap_or(0)).sum()
    };
    wait_until("every transfer taken from the flood committed", Duration::from_secs(180), || nonces() >= accepted);
    assert_eq!(nonces(), accepted, "committed more than the node took");
    let h2 = height(&apis[3]);
    wait_until("every node 3 blocks further", Duration::from_secs(120), || apis.iter().all(|a| height(a) >= h2 + 3));
}
