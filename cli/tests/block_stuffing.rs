//! Block stuffing on a real 4-node testnet: a provider and 16 buyer keys in
//! collusion post ~960 valid OpenLease transactions of ~4.7 KB each (64 long
//! GPU ids, a price of one micro-AGR), more than a 4 MiB block holds.
//! Proposers fill blocks by bytes, every node keeps running, and a normal
//! transfer still commits within 10 blocks.

mod common;
use common::*;

use std::path::Path;
use std::time::Duration;

use agora_protocol::{
    Amount, ChainId, Hash, Keypair, LeaseAccept, LeaseRequest, Signed, TimestampMs, Transaction, TxKind, codec,
};
use agora_testnet::http;

const ATTACKERS: usize = 16;
/// Transactions per attacker key (below the mempool's per-account cap of 64).
const TXS_EACH: u64 = 60;
const FEE: Amount = agora_ledger::params::DEFAULT_MIN_TX_FEE;

fn nonce(api: &str, address: &str) -> u64 {
    let a: serde_json::Value = http::get(api, &format!("/v1/accounts/{address}")).unwrap().json().unwrap();
    a["nonce"].as_u64().unwrap()
}

fn post(api: &str, txs: &[Signed<Transaction>]) -> u64 {
    let hex: Vec<String> = txs.iter().map(|t| hex::encode(codec::encode(t).unwrap())).collect();
    let r = http::post(api, "/v1/txs", &serde_json::json!({ "txs": hex }).to_string()).unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    r.json().unwrap()["accepted"].as_u64().unwrap()
}

#[test]
fn stuffed_blocks_stay_encodable_and_a_transfer_still_commits() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("net");
    let base = common::test_ports(9);
    let _down = Down(dir.clone());
    // Slow blocks, so the stuffing is all in the mempools before the next proposal.
    let net = testnet_up(&dir, 1, base, &["--commit-pause-ms", "1500"]);
    let api: Vec<String> =
        net["nodes"].as_array().unwrap().iter().map(|n| n["api_url"].as_str().unwrap().to_string()).collect();
    let chain = ChainId::new(net["chain_id"].as_str().unwrap()).unwrap();
    let buyer_home = net["buyer_home"].as_str().unwrap().to_string();
    let buyer = agora_node::keystore::load(Path::new(&buyer_home), "default").unwrap().keypair;
    let provider_home = net["nodes"][0]["home"].as_str().unwrap();
    let provider = agora_node::keystore::load(Path::new(provider_home), "node").unwrap().keypair;
    wait_until("provider 0 registered", Duration::from_secs(120), || {
        http::get(&api[3], "/v1/providers")
            .ok()
            .and_then(|r| r.json().ok())
            .is_some_and(|p| p.as_array().is_some_and(|a| !a.is_empty()))
    });
    // A normal transfer's latency with nothing going on, for comparison.
    let to = net["nodes"][2]["address"].as_str().unwrap().to_string();
    let started = std::time::Instant::now();
    ok(agora(&["--home", &buyer_home, "transfer", &to, "1", "--node", &api[3]]));
    let quiet = started.elapsed();

    // Fund the attackers.
    let attackers: Vec<Keypair> = (0..ATTACKERS).map(|_| Keypair::generate().unwrap()).collect();
    let n0 = nonce(&api[3], &buyer.address().to_string());
    let funding: Vec<_> = attackers
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let kind = TxKind::Transfer { to: a.address(), amount: Amount::agr(1) };
            Signed::sign(Transaction { nonce: n0 + i as u64, fee: FEE, kind }, &buyer, &chain).unwrap()
        })
        .collect();
    assert_eq!(post(&api[3], &funding), ATTACKERS as u64);
    let last = attackers.last().unwrap().address().to_string();
    // On every node: each is posted a quarter of the stuffing, and one a
    // block behind would refuse its quarter as unpayable.
    wait_until("the attackers funded on every node", Duration::from_secs(60), || {
        api.iter().all(|node| {
            let a: serde_json::Value =
                http::get(node, &format!("/v1/accounts/{last}")).ok().and_then(|r| r.json().ok()).unwrap_or_default();
            a["balance"].as_str().is_some_and(|b| b != "0")
        })
    });

    // ~4.7 KB each: 64 GPU ids of 60 characters, countersigned by the colluding provider.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let stuffing: Vec<Signed<Transaction>> = attackers
        .iter()
        .flat_map(|a| (0..TXS_EACH).map(move |n| (a, n)))
        .map(|(a, n)| {
            let body = LeaseRequest {
                provider: provider.address(),
                offer_seq: 0,
                gpu_model: "H100".into(),
                gpus: 64,
                price_per_gpu_hour: Amount(1),
                duration_secs: 60,
                job_spec_hash: Hash([7; 32]),
                nonce: n,
                expires_at_ms: TimestampMs(now + 600_000),
            };
            let request = Signed::sign(body, a, &chain).unwrap();
            let gpu_ids = (0..64).map(|i| format!("GPU-{i:04}-{}", "x".repeat(50))).collect();
            let accept =
                Signed::sign(LeaseAccept { lease_id: request.lease_id().unwrap(), gpu_ids }, &provider, &chain)
                    .unwrap();
            Signed::sign(Transaction { nonce: n, fee: FEE, kind: TxKind::OpenLease { request, accept } }, a, &chain)
                .unwrap()
        })
        .collect();
    let bytes: usize = stuffing.iter().map(|t| codec::encode(t).unwrap().len()).sum();
    assert!(bytes > agora_protocol::limits::MAX_BLOCK_BYTES, "{bytes} bytes of stuffing");
    // All at once, a quarter through each node.
    let quarter = stuffing.len().div_ceil(api.len());
    let accepted: u64 = std::thread::scope(|s| {
        let posts: Vec<_> =
            stuffing.chunks(quarter).zip(&api).map(|(chunk, a)| s.spawn(move || post(a, chunk))).collect();
        posts.into_iter().map(|p| p.join().unwrap()).sum()
    });
    assert!(accepted > 900, "the mempools took {accepted} stuffing transactions");

    // A normal transfer commits within 10 blocks while the stuffing drains.
    let h0 = height(&api[3]);
    let started = std::time::Instant::now();
    let sent = ok(agora(&["--home", &buyer_home, "transfer", &to, "1", "--node", &api[3]]));
    eprintln!("transfer latency: quiet {quiet:?}, while the stuffing drains {:?}", started.elapsed());
    let at: u64 = sent.split("height ").nth(1).and_then(|s| s.split_whitespace().next()).unwrap().parse().unwrap();
    assert!(at <= h0 + 10, "the transfer committed at {at}, more than 10 blocks after {h0}");

    // Every node keeps running and committing, and the stuffing is committed block by block.
    let h1 = height(&api[3]);
    wait_until("every node 5 blocks further", Duration::from_secs(120), || api.iter().all(|a| height(a) >= h1 + 5));
    wait_until("the stuffing committed", Duration::from_secs(300), || {
        attackers.iter().all(|a| nonce(&api[3], &a.address().to_string()) == TXS_EACH)
    });
}
