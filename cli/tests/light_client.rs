//! Light-client proofs across validator-set changes, end to end: on a real
//! testnet whose full nodes stake their way into 3 of the 4 seats, a buyer
//! holding only the genesis proves its balance with `agora account --prove`:
//! the genesis validators no longer vouch for the tip (1 of 4 seats), so the
//! CLI follows the set's change through `GET /v1/light/transitions`, checks
//! it, and verifies the answer against the validators it learned.

mod common;
use common::*;

use std::time::Duration;

use agora_testnet::http;

fn transitions(api: &str) -> Vec<serde_json::Value> {
    http::get(api, "/v1/light/transitions")
        .ok()
        .and_then(|r| r.json().ok())
        .and_then(|j: serde_json::Value| j["transitions"].as_array().cloned())
        .unwrap_or_default()
}

#[test]
fn a_prove_follows_the_validator_set_after_it_rotated_away_from_the_genesis() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("net");
    let _down = Down(dir.clone());
    let (d, base) = (dir.to_str().unwrap().to_string(), test_ports(14).to_string());
    let up = ok(agora(&[
        "testnet",
        "up",
        "--json",
        "--dir",
        &d,
        "--nodes",
        "7",
        "--validators",
        "4",
        "--providers",
        "1",
        "--base-port",
        &base,
        "--commit-pause-ms",
        "50",
    ]));
    let net: serde_json::Value = serde_json::from_str(&up).unwrap();
    let api: Vec<String> =
        net["nodes"].as_array().unwrap().iter().map(|n| n["api_url"].as_str().unwrap().to_string()).collect();
    let buyer_home = net["buyer_home"].as_str().unwrap().to_string();
    let buyer = {
        let shown = ok(agora(&["--home", &buyer_home, "keys", "show", "--json"]));
        serde_json::from_str::<serde_json::Value>(&shown).unwrap()["address"].as_str().unwrap().to_string()
    };
    let genesis = dir.join("node0/genesis.json");
    let genesis = genesis.to_str().unwrap();
    assert!(transitions(&api[0]).is_empty(), "no change of the set yet");

    // The three full nodes stake 2,000 AGR more each: at the next epoch
    // (every 100 blocks) they hold three of the four seats.
    for (i, node_api) in api.iter().enumerate().skip(4) {
        let home = dir.join(format!("node{i}"));
        ok(agora(&["--home", home.to_str().unwrap(), "stake", "2000", "--key", "node", "--node", node_api]));
    }
    wait_until("the validator set to change", Duration::from_secs(300), || !transitions(&api[0]).is_empty());
    let changed_at = transitions(&api[0])[0]["height"].as_u64().unwrap();
    // The proof must be of a block the new set decided.
    wait_until("a block decided by the new set", Duration::from_secs(120), || height(&api[0]) > changed_at + 1);

    let shown = ok(agora(&["account", &buyer, "--prove", "--genesis", genesis, "--node", &api[0]]));
    assert!(shown.contains("after following 1 validator-set change from the genesis"), "{shown}");
    let proven = proven_account(&buyer, genesis, &api[0]);
    assert!(proven["verified_height"].as_u64() > Some(changed_at), "{proven}");
    let served = http::get(&api[0], &format!("/v1/accounts/{buyer}")).unwrap().json().unwrap();
    assert_eq!(proven["balance"], served["balance"], "{proven}");
}
