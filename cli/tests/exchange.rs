//! The exchange on a real testnet, from the `agora` binary: two providers
//! ask, two buyers bid in one call auction; at its clearing block the
//! crossing bid becomes a lease at one price every node reports, the
//! provider below the price sells, the one above does not, the losing bid is
//! refunded in full and the winner gets back what it escrowed above the
//! price; a cancel in the binding phase is refused with a clear message.

mod common;
use common::*;

use std::time::Duration;

use agora_testnet::http;

fn auctions(api: &str) -> serde_json::Value {
    http::get(api, "/v1/market/auctions").unwrap().json().unwrap()
}

fn balance(api: &str, address: &str) -> u64 {
    let a: serde_json::Value = http::get(api, &format!("/v1/accounts/{address}")).unwrap().json().unwrap();
    a["balance"].as_str().unwrap().parse().unwrap()
}

fn address(home: &str, key: &str) -> String {
    let shown: serde_json::Value =
        serde_json::from_str(&ok(agora(&["--home", home, "keys", "show", "--name", key, "--json"]))).unwrap();
    shown["address"].as_str().unwrap().to_string()
}

/// Waits until an auction has just begun (at least `blocks` blocks before it clears); its number.
fn fresh_auction(api: &str, blocks: u64) -> u64 {
    let mut auction = 0;
    wait_until("a fresh auction", Duration::from_secs(180), || {
        let a = auctions(api);
        auction = a["auction"].as_u64().unwrap();
        a["phase"] == "open" && a["clears_at_height"].as_u64().unwrap() >= a["height"].as_u64().unwrap() + blocks
    });
    auction
}

/// Places an order with `args` and returns (order id, auction number).
fn place(home: &str, api: &str, args: &[&str]) -> (u64, u64) {
    let mut full = vec!["--home", home];
    full.extend_from_slice(args);
    full.extend_from_slice(&["--node", api, "--json"]);
    let out: serde_json::Value = serde_json::from_str(&ok(agora(&full))).unwrap();
    (out["order"]["id"].as_u64().unwrap(), out["auction"].as_u64().unwrap())
}

#[test]
fn a_call_auction_clears_at_one_price_into_leases_on_every_node() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("net");
    let _down = Down(dir.clone());
    let net = testnet_up(&dir, 2, test_ports(13), &["--commit-pause-ms", "300"]);
    let apis: Vec<String> =
        net["nodes"].as_array().unwrap().iter().map(|n| n["api_url"].as_str().unwrap().to_string()).collect();
    let home = |i: usize| net["nodes"][i]["home"].as_str().unwrap().to_string();
    let (p0, p1) = (home(0), home(1));
    let buyer = net["buyer_home"].as_str().unwrap().to_string();
    ok(agora(&["--home", &buyer, "keys", "new", "--name", "second"]));
    let (winner, loser) = (address(&buyer, "default"), address(&buyer, "second"));
    ok(agora(&["--home", &buyer, "transfer", &loser, "100", "--node", &apis[0]]));
    let provider0 = net["nodes"][0]["address"].as_str().unwrap().to_string();
    wait_until("both providers registered", Duration::from_secs(180), || {
        let p: serde_json::Value = http::get(&apis[0], "/v1/providers").unwrap().json().unwrap();
        p.as_array().is_some_and(|l| l.iter().filter(|p| p["active"] == true).count() == 2)
    });

    // Four orders in one auction, placed at once. Simulated H100s are the
    // class H100-80GB-SIM; `h100` names it when it is the only H100 class.
    let auction = fresh_auction(&apis[0], 20);
    let (w0, l0) = (balance(&apis[0], &winner), balance(&apis[0], &loser));
    let runs = [
        (
            p0.as_str(),
            apis[0].as_str(),
            vec!["ask", "--class", "h100", "--gpus", "2", "--hours", "2", "--min-price", "1"],
        ),
        (
            p1.as_str(),
            apis[1].as_str(),
            vec!["ask", "--class", "h100", "--gpus", "2", "--hours", "2", "--min-price", "3"],
        ),
        (
            buyer.as_str(),
            apis[2].as_str(),
            vec!["bid", "--class", "h100-80gb-sim", "--gpus", "2", "--hours", "1", "--max-price", "2"],
        ),
        (
            buyer.as_str(),
            apis[3].as_str(),
            vec!["bid", "--class", "h100", "--gpus", "1", "--hours", "1", "--max-price", "0.5", "--key", "second"],
        ),
    ];
    let placed: Vec<(u64, u64)> = std::thread::scope(|s| {
        let handles: Vec<_> = runs.iter().map(|(h, api, args)| s.spawn(move || place(h, api, args))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(placed.iter().all(|(_, a)| *a == auction), "all in auction {auction}: {placed:?}");
    let listed = ok(agora(&["--home", &buyer, "orders", "--node", &apis[1]]));
    assert!(listed.contains("H100-80GB-SIM") && listed.contains("bid"), "{listed}");

    // Indicative price while the auction is open: D = 2 GPU-hours from 1 to
    // 2 AGR against S = 4, so the midpoint, 1.5.
    let a = auctions(&apis[3]);
    assert_eq!(a["classes"][0]["indicative_price"], "1500000", "{a}");

    // After the clearing block, every node reports the same result.
    let clears_at = auctions(&apis[0])["clears_at_height"].as_u64().unwrap();
    wait_until("the clearing block on every node", Duration::from_secs(180), || {
        apis.iter().all(|api| height(api) > clears_at)
    });
    for api in &apis {
        let prices: serde_json::Value = http::get(api, "/v1/market/prices").unwrap().json().unwrap();
        let r = prices.as_array().unwrap().iter().find(|r| r["auction"] == auction).cloned().unwrap();
        assert_eq!(
            (r["price"].as_str(), r["matched_gpu_hours"].as_u64(), r["leases"].as_u64()),
            (Some("1500000"), Some(2), Some(1)),
            "{api}: {r}"
        );
    }
    let table = ok(agora(&["market", "prices", "--node", &apis[2]]));
    assert!(table.contains("H100-80GB-SIM") && table.contains("1.5"), "{table}");
    // The winner paid 1.5 × 2 GPU-hours (escrowed 4, got 1 back), the loser
    // only the fee; the lease is with the cheaper provider.
    let fee = 1_000;
    assert_eq!(balance(&apis[0], &winner), w0 - fee - 3_000_000);
    assert_eq!(balance(&apis[0], &loser), l0 - fee);
    let leases: serde_json::Value = http::get(&apis[0], &format!("/v1/leases?buyer={winner}")).unwrap().json().unwrap();
    let list = leases["leases"].as_array().or(leases.as_array()).cloned().unwrap_or_default();
    assert!(
        list.iter().any(|l| l["provider"] == provider0.as_str() && l["gpus"] == 2),
        "the auction lease with provider 0: {leases}"
    );
    assert!(ok(agora(&["--home", &buyer, "orders", "--node", &apis[0]])).contains("no open orders"));

    // The reserved GPU time is an asset: the winner sells it, the other buyer buys it.
    let lease = list.iter().find(|l| l["provider"] == provider0.as_str()).unwrap()["id"].as_str().unwrap().to_string();
    ok(agora(&["--home", &buyer, "lease", "sell", &lease, "--price", "2", "--node", &apis[1]]));
    let listed = ok(agora(&["market", "listings", "--node", &apis[2]]));
    assert!(listed.contains(&lease) && listed.contains("H100-80GB-SIM"), "{listed}");
    let too_low = err(agora(&[
        "--home",
        &buyer,
        "lease",
        "buy",
        &lease,
        "--max-price",
        "1",
        "--key",
        "second",
        "--node",
        &apis[2],
    ]));
    assert!(too_low.contains("more than your maximum"), "{too_low}");
    let (seller_before, buyer_before) = (balance(&apis[0], &winner), balance(&apis[0], &loser));
    ok(agora(&["--home", &buyer, "lease", "buy", &lease, "--max-price", "2", "--key", "second", "--node", &apis[2]]));
    wait_until("the sale on node 0", Duration::from_secs(60), || {
        balance(&apis[0], &winner) == seller_before + 2_000_000
    });
    assert_eq!(balance(&apis[0], &loser), buyer_before - fee - 2_000_000);
    let held: serde_json::Value = http::get(&apis[3], &format!("/v1/leases/{lease}")).unwrap().json().unwrap();
    assert_eq!(held["buyer"], loser.as_str(), "the buyer of the listing holds the lease: {held}");

    // In the binding phase a bid cannot be cancelled.
    fresh_auction(&apis[0], 20);
    let (id, _) =
        place(&buyer, &apis[0], &["bid", "--class", "h100", "--gpus", "1", "--hours", "1", "--max-price", "0.1"]);
    wait_until("the binding phase", Duration::from_secs(180), || {
        let a = auctions(&apis[0]);
        let left = a["clears_at_height"].as_u64().unwrap() - a["height"].as_u64().unwrap();
        a["phase"] == "no-cancel" && left + 2 <= a["no_cancel_blocks"].as_u64().unwrap()
    });
    let refused = err(agora(&["--home", &buyer, "order", "cancel", &id.to_string(), "--node", &apis[0]]));
    assert!(refused.contains("binding"), "{refused}");
}
