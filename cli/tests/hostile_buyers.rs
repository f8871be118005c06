//! A buyer with little money trying to hold a provider's GPUs on a real
//! testnet: signed lease requests posted straight to the API, each within
//! its balance alone. The provider counts what it has already accepted and
//! not yet seen on the ledger, so the buyer cannot reserve more than it can
//! pay for, and the GPU stays free for an honest buyer.

mod common;
use common::*;

use std::path::Path;

use agora_protocol::job::JobSpec;
use agora_protocol::{Amount, ChainId, LeaseRequest, Signed, TimestampMs, codec};
use agora_testnet::http;

#[test]
fn a_buyer_cannot_reserve_more_than_its_balance_across_pending_requests() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("net");
    let base = common::test_ports(8);
    let _down = Down(dir.clone());
    let net = testnet_up(&dir, 1, base, &["--commit-pause-ms", "50"]);
    let api3 = net["nodes"][3]["api_url"].as_str().unwrap().to_string();
    let provider = net["nodes"][0]["address"].as_str().unwrap().to_string();
    let buyer_home = net["buyer_home"].as_str().unwrap().to_string();
    ok(agora(&["--home", &buyer_home, "keys", "new", "--name", "thin"]));
    let thin = agora_node::keystore::load(Path::new(&buyer_home), "thin").unwrap().keypair;
    // 0.5 AGR: one 10-minute GPU at 2 AGR/hour (0.333334 AGR escrow) fits, two do not.
    ok(agora(&["--home", &buyer_home, "transfer", &thin.address().to_string(), "0.5", "--node", &api3]));
    // The provider judges the balance by its own ledger: wait until it has the transfer.
    let api0 = net["nodes"][0]["api_url"].as_str().unwrap().to_string();
    wait_until("the transfer on the provider's node", std::time::Duration::from_secs(60), || {
        http::get(&api0, &format!("/v1/accounts/{}", thin.address()))
            .ok()
            .and_then(|r| r.json().ok())
            .is_some_and(|a: serde_json::Value| a["balance"] == "500000")
    });
    wait_until("the provider's offer", std::time::Duration::from_secs(120), || {
        http::get(&api3, "/v1/offers")
            .ok()
            .and_then(|r| r.json().ok())
            .is_some_and(|o| o.as_array().is_some_and(|a| !a.is_empty()))
    });
    let chain = ChainId::new(net["chain_id"].as_str().unwrap()).unwrap();
    let spec = JobSpec { command: vec!["true".into()], env: vec![], image: None, egress: false };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let propose = |nonce: u64| {
        let body = LeaseRequest {
            provider: provider.parse().unwrap(),
            offer_seq: 0,
            gpu_model: "H100".into(),
            gpus: 1,
            price_per_gpu_hour: Amount::agr(2),
            duration_secs: 600,
            job_spec_hash: spec.hash().unwrap(),
            nonce,
            expires_at_ms: TimestampMs(now + 120_000),
        };
        let request = Signed::sign(body, &thin, &chain).unwrap();
        let req = serde_json::json!({
            "request": hex::encode(codec::encode(&request).unwrap()),
            "spec": hex::encode(codec::encode(&spec).unwrap()),
        });
        let r = http::post(&api3, "/v1/leases/propose", &req.to_string()).unwrap();
        (r.status, r.json().unwrap()["error"].as_str().unwrap_or("").to_string())
    };
    assert_eq!(propose(1).0, 200, "the first request fits the balance");
    let (code, why) = propose(2);
    assert_eq!(code, 409, "{why}");
    assert!(why.contains("for your requests not yet opened"), "{why}");
    // The provider's second GPU is still free for someone who can pay.
    let honest = ok(submit(
        &buyer_home,
        &api3,
        &["--gpus", "1", "--provider", &provider, "--duration", "5m", "--wait", "--", "echo", "served"],
    ));
    assert_eq!(honest, "served\n");
}
