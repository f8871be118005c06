//! Block stuffing on a real 4-node testnet: 128 colluding keys, each staked
//! and registered as a provider of 8 × 64 simulated GPUs, lease each other's
//! GPUs in ~1,000 valid OpenLease transactions of ~4.7 KB each (64 long GPU
//! ids, a price of one micro-AGR), more than a 4 MiB block holds. (A
//! provider leases out only GPUs it registered and has free, so the attack
//! takes that many staked providers.) Proposers fill blocks by bytes, every
//! node keeps running, and a normal transfer still commits within 10 blocks.

mod common;
use common::*;

use std::path::Path;
use std::time::Duration;

use agora_protocol::{
    Amount, ChainId, Hash, Keypair, LeaseAccept, LeaseRequest, Signed, TimestampMs, Transaction, TxKind, codec,
};
use agora_testnet::http;

const ATTACKERS: usize = 128;
/// GPU kinds each attacker registers (the most a provider may), 64 of each:
/// one 64-GPU lease per kind, so this many stuffing transactions per key.
const KINDS: u64 = 8;
/// The attackers' first two transactions stake and register.
const SETUP_TXS: u64 = 2;
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
    let api = api_urls(&net);
    let chain = ChainId::new(net["chain_id"].as_str().unwrap()).unwrap();
    let buyer_home = net["buyer_home"].as_str().unwrap().to_string();
    let buyer = agora_node::keystore::load(Path::new(&buyer_home), "default").unwrap().keypair;
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

    // Fund the attackers (in batches within the funder's nonce window), then
    // each stakes the minimum and registers as a provider.
    let attackers: Vec<Keypair> = (0..ATTACKERS).map(|_| Keypair::generate().unwrap()).collect();
    let stake = agora_ledger::Params::default().min_provider_stake;
    for batch in attackers.chunks(32) {
        let n0 = nonce(&api[3], &buyer.address().to_string());
        let funding: Vec<_> = batch
            .iter()
            .enumerate()
            .map(|(i, a)| {
                let kind = TxKind::Transfer { to: a.address(), amount: Amount(stake.0 + Amount::agr(1).0) };
                Signed::sign(Transaction { nonce: n0 + i as u64, fee: FEE, kind }, &buyer, &chain).unwrap()
            })
            .collect();
        assert_eq!(post(&api[3], &funding), batch.len() as u64);
        let last = batch.last().unwrap().address().to_string();
        wait_until("a funding batch committed", Duration::from_secs(60), || {
            nonce(&api[3], &buyer.address().to_string()) > n0 && {
                let a: serde_json::Value = http::get(&api[3], &format!("/v1/accounts/{last}"))
                    .ok()
                    .and_then(|r| r.json().ok())
                    .unwrap_or_default();
                a["balance"].as_str().is_some_and(|b| b != "0")
            }
        });
    }
    let kinds: Vec<agora_protocol::GpuSpec> = (0..KINDS)
        .map(|k| agora_protocol::GpuSpec { model: format!("H{k}00"), vram_mib: 81_920, count: 64, simulated: true })
        .collect();
    let setup: Vec<_> = attackers
        .iter()
        .flat_map(|a| {
            let register = TxKind::RegisterProvider { region: "eu".into(), gpus: kinds.clone() };
            [(0, TxKind::Stake { amount: stake }), (1, register)]
                .map(|(n, kind)| Signed::sign(Transaction { nonce: n, fee: FEE, kind }, a, &chain).unwrap())
        })
        .collect();
    assert_eq!(post(&api[3], &setup[..setup.len() / 2]) + post(&api[3], &setup[setup.len() / 2..]), setup.len() as u64);
    // On every node: each is posted a quarter of the stuffing, and one a
    // block behind would refuse its quarter (unpayable, or no such provider).
    wait_until("the attackers registered on every node", Duration::from_secs(120), || {
        api.iter().all(|node| {
            let p: serde_json::Value =
                http::get(node, "/v1/providers").ok().and_then(|r| r.json().ok()).unwrap_or_default();
            p.as_array().is_some_and(|a| a.len() > ATTACKERS)
        })
    });

    // ~4.7 KB each: attacker i leases each kind of attacker i+1's GPUs, 64
    // GPU ids of 60 characters, countersigned by that provider.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let stuffing: Vec<Signed<Transaction>> = (0..ATTACKERS)
        .flat_map(|i| (0..KINDS).map(move |k| (i, k)))
        .map(|(i, k)| {
            let (buyer, provider) = (&attackers[i], &attackers[(i + 1) % ATTACKERS]);
            let body = LeaseRequest {
                provider: provider.address(),
                offer_seq: 0,
                gpu_model: format!("H{k}00"),
                gpus: 64,
                price_per_gpu_hour: Amount(1),
                duration_secs: 600,
                job_spec_hash: Hash([7; 32]),
                nonce: k,
                expires_at_ms: TimestampMs(now + 600_000),
            };
            let request = Signed::sign(body, buyer, &chain).unwrap();
            let gpu_ids = (0..64).map(|i| format!("GPU-{i:04}-{}", "x".repeat(50))).collect();
            let accept =
                Signed::sign(LeaseAccept { lease_id: request.lease_id().unwrap(), gpu_ids }, provider, &chain).unwrap();
            let kind = TxKind::OpenLease { request, accept };
            Signed::sign(Transaction { nonce: SETUP_TXS + k, fee: FEE, kind }, buyer, &chain).unwrap()
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
    assert!(accepted > 950, "the mempools took {accepted} stuffing transactions");

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
        attackers.iter().all(|a| nonce(&api[3], &a.address().to_string()) == SETUP_TXS + KINDS)
    });
}
