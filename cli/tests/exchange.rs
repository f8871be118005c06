//! The exchange on a real testnet, from the `agora` binary: three
//! providers (each with simulated H100s and A100s) ask, five buyers bid
//! across the two classes in one call auction; at its clearing block exactly
//! the expected bids become leases at one price per class that every node
//! reports, the losing bids are refunded in full and the winners get back
//! what they escrowed above the price. A won lease is sold to a losing
//! buyer, who runs jobs on it (`agora lease run`) while the seller no longer
//! can; its GPUs are not leased again on the spot market; a cancel in the
//! binding phase is refused with a clear message; a provider with an
//! automatic ask policy in its config asks for its free GPUs by itself.

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

/// Each provider's GPUs: two classes.
const PROVIDER_GPUS: &str = "simulated:2xH100-80GB,2xA100-40GB";

#[test]
fn a_call_auction_clears_two_classes_at_one_price_each_into_leases_on_every_node() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("net");
    let _down = Down(dir.clone());
    let net = testnet_up(&dir, 3, test_ports(13), &["--commit-pause-ms", "300", "--provider-gpus", PROVIDER_GPUS]);
    let apis = api_urls(&net);
    let home = |i: usize| net["nodes"][i]["home"].as_str().unwrap().to_string();
    let provider = |i: usize| net["nodes"][i]["address"].as_str().unwrap().to_string();
    let buyer = net["buyer_home"].as_str().unwrap().to_string();
    let names = ["default", "b1", "b2", "b3", "b4"];
    for name in &names[1..] {
        ok(agora(&["--home", &buyer, "keys", "new", "--name", name]));
        let to = address(&buyer, name);
        ok(agora(&["--home", &buyer, "transfer", &to, "100", "--node", &apis[0]]));
    }
    let buyers: Vec<String> = names.iter().map(|n| address(&buyer, n)).collect();
    wait_until("three providers registered", Duration::from_secs(180), || {
        let p: serde_json::Value = http::get(&apis[0], "/v1/providers").unwrap().json().unwrap();
        p.as_array().is_some_and(|l| l.iter().filter(|p| p["active"] == true).count() == 3)
    });
    // `h100` is ambiguous no more than `a100`: each names one simulated class.
    let out = err(agora(&[
        "--home",
        &buyer,
        "bid",
        "--class",
        "v100",
        "--gpus",
        "1",
        "--hours",
        "1",
        "--max-price",
        "1",
        "--node",
        &apis[0],
    ]));
    assert!(out.contains("v100") || out.contains("V100"), "{out}");

    // Eight orders in one auction, placed at once.
    let auction = fresh_auction(&apis[0], 20);
    let before: Vec<u64> = buyers.iter().map(|b| balance(&apis[0], b)).collect();
    let (p0, p1, p2) = (home(0), home(1), home(2));
    let order = |gpus: &'static str, max: &'static str, class: &'static str, key: &'static str| {
        vec!["bid", "--class", class, "--gpus", gpus, "--hours", "1", "--max-price", max, "--key", key]
    };
    let runs: Vec<(&str, &str, Vec<&str>)> = vec![
        (&p0, &apis[0], vec!["ask", "--class", "h100", "--gpus", "2", "--hours", "2", "--min-price", "1"]),
        (&p1, &apis[1], vec!["ask", "--class", "h100", "--gpus", "2", "--hours", "2", "--min-price", "3"]),
        (&p2, &apis[2], vec!["ask", "--class", "a100", "--gpus", "2", "--hours", "2", "--min-price", "0.5"]),
        (&buyer, &apis[3], order("2", "2", "h100-80gb-sim", "default")),
        // (A contract may start later: hours 1 to 2 after the clearing.)
        (&buyer, &apis[0], [order("1", "0.5", "h100", "b1"), vec!["--start", "+1h"]].concat()),
        (&buyer, &apis[1], order("1", "1", "a100", "b2")),
        (&buyer, &apis[2], order("1", "2", "a100-40gb-sim", "b3")),
        (&buyer, &apis[3], order("2", "0.4", "a100", "b4")),
    ];
    let placed: Vec<(u64, u64)> = std::thread::scope(|s| {
        let handles: Vec<_> = runs.iter().map(|(h, api, args)| s.spawn(move || place(h, api, args))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(placed.iter().all(|(_, a)| *a == auction), "all in auction {auction}: {placed:?}");
    // Each placement waited for its own node; the checks below read others.
    wait_until("all eight orders on every node", Duration::from_secs(60), || {
        apis.iter().all(|api| {
            let orders: serde_json::Value = http::get(api, "/v1/market/orders").unwrap().json().unwrap();
            orders.as_array().is_some_and(|l| l.len() == 8)
        })
    });
    let later = ok(agora(&["--home", &buyer, "orders", "--key", "b1", "--node", &apis[1]]));
    assert!(later.contains("+1h"), "{later}");
    let listed = ok(agora(&["--home", &buyer, "orders", "--key", "b3", "--node", &apis[1]]));
    assert!(listed.contains("A100-40GB-SIM") && listed.contains("bid"), "{listed}");

    // Indicative prices while the auction is open. H100: D = 2 GPU-hours
    // from 1 to 2 AGR against S = 4, so the midpoint 1.5. A100: D = 2 from
    // 0.5 to 1 (the 0.4 bid is below every ask), S = 4, so 0.75.
    let a = auctions(&apis[3]);
    let indicative = |class: &str| {
        a["classes"].as_array().unwrap().iter().find(|c| c["class"] == class).unwrap()["indicative_price"].clone()
    };
    assert_eq!((indicative("H100-80GB-SIM"), indicative("A100-40GB-SIM")), ("1500000".into(), "750000".into()), "{a}");

    // Before it clears, a buyer can ask why a bid would not fill.
    let explain = |args: &[&str]| {
        let mut full = vec!["--home", buyer.as_str(), "bid", "--explain", "--node", apis[1].as_str()];
        full.extend_from_slice(args);
        agora(&full)
    };
    let low = explain(&["--class", "a100", "--gpus", "2", "--hours", "1", "--max-price", "0.4"]);
    let said = String::from_utf8_lossy(&low.stdout);
    assert_eq!(low.status.code(), Some(1), "would not fill: {said} {}", String::from_utf8_lossy(&low.stderr));
    assert!(said.contains("would not fill") && said.contains("ask_above_bid"), "{said}");
    let fits = ok(explain(&["--class", "h100", "--gpus", "1", "--hours", "1", "--max-price", "5"]));
    assert!(fits.contains("would fill at the indicative price"), "{fits}");

    // After the clearing block, every node reports the same two results.
    let clears_at = auctions(&apis[0])["clears_at_height"].as_u64().unwrap();
    wait_until("the clearing block on every node", Duration::from_secs(180), || {
        apis.iter().all(|api| height(api) > clears_at)
    });
    for api in &apis {
        let prices: serde_json::Value = http::get(api, "/v1/market/prices").unwrap().json().unwrap();
        let result = |class: &str| {
            let r = prices
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["kind"] == "auction" && r["auction"] == auction && r["class"] == class);
            let r = r.unwrap_or_else(|| panic!("{api}: no {class} result in {prices}"));
            (r["price"].as_str().map(str::to_string), r["matched_gpu_hours"].as_u64(), r["leases"].as_u64())
        };
        assert_eq!(result("H100-80GB-SIM"), (Some("1500000".into()), Some(2), Some(1)), "{api}");
        assert_eq!(result("A100-40GB-SIM"), (Some("750000".into()), Some(2), Some(2)), "{api}");
    }
    let table = ok(agora(&["market", "prices", "--node", &apis[2]]));
    assert!(table.contains("H100-80GB-SIM") && table.contains("A100-40GB-SIM") && table.contains("0.75"), "{table}");
    // Every node's explorer shows the market, the providers and their GPUs.
    let page = |path: &str| explorer_page(&apis[1], path);
    let market = page("/explorer/market");
    for want in ["H100-80GB-SIM", "A100-40GB-SIM", "1.5 AGR", "0.75 AGR", "auction"] {
        assert!(market.contains(want), "/explorer/market lacks {want:?}");
    }
    let listed = page("/explorer/providers");
    for i in 0..3 {
        assert!(listed.contains(&provider(i)), "provider {i} missing from /explorer/providers");
    }
    assert!(listed.contains("2× A100-40GB-SIM") && listed.contains("simulated"), "classes, simulated marked");
    let one = page(&format!("/explorer/providers/{}", provider(0)));
    assert!(one.contains("self-reported") && one.contains("H100-80GB-SIM"), "{one}");
    let browser = http::request_with(&apis[1], "GET", "/", None, "Accept: text/html\r\n").unwrap();
    assert_eq!(
        (browser.status, browser.location.as_deref()),
        (303, Some("/explorer/")),
        "a browser at the API root is sent to the explorer"
    );
    let network = page("/explorer/");
    assert!(network.contains("Latest blocks") && network.contains("signed commits"), "{network}");
    // Each validator's uptime is its signatures in the recent commit
    // certificates: with 4 equal validators each certificate holds 3 or 4.
    let counts: Vec<(u64, u64)> = network
        .split("<td>")
        .filter_map(|cell| {
            let (n, rest) = cell.split_once(" of ")?;
            let (of, _) = rest.split_once(" (")?;
            Some((n.parse().ok()?, of.parse().ok()?))
        })
        .collect();
    assert_eq!(counts.len(), 4, "a row per validator: {counts:?}");
    let (signed, certified) = (counts.iter().map(|c| c.0).sum::<u64>(), counts[0].1);
    assert!(certified > 10 && signed >= 3 * certified && signed <= 4 * certified, "{counts:?}");

    // Winners paid the price (escrow minus refund), losers only the fee.
    let fee = 1_000;
    let paid = [3_000_000, 0, 750_000, 750_000, 0];
    for (i, b) in buyers.iter().enumerate() {
        assert_eq!(balance(&apis[0], b), before[i] - fee - paid[i], "buyer {} ({})", names[i], b);
    }
    let leases_of = |who: &str| -> Vec<serde_json::Value> {
        let l: serde_json::Value = http::get(&apis[0], &format!("/v1/leases?buyer={who}")).unwrap().json().unwrap();
        l["leases"].as_array().or(l.as_array()).cloned().unwrap_or_default()
    };
    let won = leases_of(&buyers[0]);
    assert!(won.iter().any(|l| l["provider"] == provider(0).as_str() && l["gpus"] == 2), "{won:?}");
    for (b, p) in [(2, 2), (3, 2)] {
        let l = leases_of(&buyers[b]);
        assert!(
            l.len() == 1 && l[0]["provider"] == provider(p).as_str() && l[0]["gpu_model"] == "A100-40GB-SIM",
            "{l:?}"
        );
    }
    assert!(leases_of(&buyers[1]).is_empty() && leases_of(&buyers[4]).is_empty(), "losers hold nothing");
    assert!(ok(agora(&["--home", &buyer, "orders", "--node", &apis[0]])).contains("no open orders"));

    // The won H100s are provider 0's two: no spot lease can have them.
    let spot = err(submit(
        &buyer,
        &apis[0],
        &["--gpus", "1", "--model", "h100", "--provider", &provider(0), "--duration", "1m", "--", "true"],
    ));
    assert!(spot.contains("free"), "{spot}");
    let why = agora(&[
        "--home",
        &buyer,
        "submit",
        "--explain",
        "--gpus",
        "1",
        "--model",
        "h100",
        "--duration",
        "1m",
        "--node",
        &apis[1],
        "--",
        "true",
    ]);
    let said = String::from_utf8_lossy(&why.stdout);
    assert!(
        said.contains("no_free_gpus") && said.contains("would lease H100"),
        "provider 0's are taken, the others free: {said}"
    );
    assert_eq!(why.status.code(), Some(0), "some offer would take it");

    // The reserved GPU time is an asset: the winner sells it to a loser.
    let lease = won.iter().find(|l| l["provider"] == provider(0).as_str()).unwrap()["id"].as_str().unwrap().to_string();
    ok(agora(&["--home", &buyer, "lease", "sell", &lease, "--price", "2", "--node", &apis[1]]));
    let listed = ok(agora(&["market", "listings", "--node", &apis[2]]));
    assert!(listed.contains(&lease) && listed.contains("H100-80GB-SIM"), "{listed}");
    let too_low =
        err(agora(&["--home", &buyer, "lease", "buy", &lease, "--max-price", "1", "--key", "b1", "--node", &apis[2]]));
    assert!(too_low.contains("more than your maximum"), "{too_low}");
    let (seller_before, buyer_before) = (balance(&apis[0], &buyers[0]), balance(&apis[0], &buyers[1]));
    ok(agora(&["--home", &buyer, "lease", "buy", &lease, "--max-price", "2", "--key", "b1", "--node", &apis[2]]));
    wait_until("the sale on node 0", Duration::from_secs(60), || {
        balance(&apis[0], &buyers[0]) == seller_before + 2_000_000
    });
    assert_eq!(balance(&apis[0], &buyers[1]), buyer_before - fee - 2_000_000);
    wait_until("the sale on every node", Duration::from_secs(60), || {
        apis.iter().all(|api| {
            let held: serde_json::Value = http::get(api, &format!("/v1/leases/{lease}")).unwrap().json().unwrap();
            held["buyer"] == buyers[1].as_str()
        })
    });

    // The new holder runs jobs on it, one after another, on the held GPUs;
    // the seller cannot.
    let job = ["sh", "-c", "echo ran on $AGORA_LEASE_ID with GPUs $CUDA_VISIBLE_DEVICES; exit 3"];
    let mut args = vec!["--home", &buyer, "lease", "run", &lease, "--wait", "--key", "b1", "--node", &apis[3], "--"];
    args.extend_from_slice(&job);
    let out = agora(&args);
    assert_eq!(out.status.code(), Some(3), "the job's exit code: {}", String::from_utf8_lossy(&out.stderr));
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(printed.contains(&format!("ran on {lease} with GPUs")), "{printed}");
    let mut again = vec!["--home", &buyer, "lease", "run", &lease, "--wait", "--key", "b1", "--node", &apis[1], "--"];
    again.extend_from_slice(&["sh", "-c", "echo second"]);
    assert!(ok(agora(&again)).contains("second"), "a second job on the same lease");
    let seller = err(agora(&["--home", &buyer, "lease", "run", &lease, "--node", &apis[0], "--", "true"]));
    assert!(seller.contains("only the lease's holder"), "{seller}");
    let open: serde_json::Value = http::get(&apis[0], &format!("/v1/leases/{lease}")).unwrap().json().unwrap();
    assert_eq!(open["status"], "Open", "jobs ending do not end the lease: {open}");

    // The holder buys another hour at the lease's price (1.5 × 2 GPUs).
    let (end, funds) = (open["end_ms"].as_u64().unwrap(), balance(&apis[0], &buyers[1]));
    let extended =
        ok(agora(&["--home", &buyer, "lease", "extend", &lease, "--hours", "1", "--key", "b1", "--node", &apis[2]]));
    assert!(extended.contains("extended by 1h for 3 AGR"), "{extended}");
    wait_until("the extension on every node", Duration::from_secs(60), || {
        apis.iter().all(|api| {
            let l: serde_json::Value = http::get(api, &format!("/v1/leases/{lease}")).unwrap().json().unwrap();
            l["end_ms"].as_u64() == Some(end + 3_600_000)
        })
    });
    assert_eq!(balance(&apis[0], &buyers[1]), funds - 3_000_000 - fee);

    // In the next auction a buyer bids with a job to run once it wins;
    // and in its binding phase a bid cannot be cancelled.
    fresh_auction(&apis[0], 20);
    place(&p1, &apis[1], &["ask", "--class", "h100", "--gpus", "1", "--hours", "1", "--min-price", "1"]);
    let after_match = {
        let (buyer, api) = (buyer.clone(), apis[2].clone());
        std::thread::spawn(move || {
            agora(&[
                "--home",
                &buyer,
                "bid",
                "--class",
                "h100",
                "--gpus",
                "1",
                "--hours",
                "1",
                "--max-price",
                "2",
                "--key",
                "b2",
                "--job-after-match",
                "--node",
                &api,
                "--",
                "sh",
                "-c",
                "echo matched on $AGORA_LEASE_ID",
            ])
        })
    };
    let (id, _) =
        place(&buyer, &apis[0], &["bid", "--class", "h100", "--gpus", "1", "--hours", "1", "--max-price", "0.1"]);
    wait_until("the binding phase", Duration::from_secs(180), || {
        let a = auctions(&apis[0]);
        let left = a["clears_at_height"].as_u64().unwrap() - a["height"].as_u64().unwrap();
        a["phase"] == "no-cancel" && left + 2 <= a["no_cancel_blocks"].as_u64().unwrap()
    });
    let refused = err(agora(&["--home", &buyer, "order", "cancel", &id.to_string(), "--node", &apis[0]]));
    assert!(refused.contains("binding"), "{refused}");
    let matched = after_match.join().unwrap();
    let said = String::from_utf8_lossy(&matched.stdout);
    assert!(matched.status.success(), "{said} {}", String::from_utf8_lossy(&matched.stderr));
    assert!(said.starts_with("matched on "), "the job ran on the lease won: {said}");

    // A provider that sets a floor in its config asks by itself, every
    // auction, for its free GPUs (provider 2's H100s; its A100s are leased).
    let d = dir.to_str().unwrap();
    ok(agora(&["testnet", "kill", "2", "--dir", d]));
    let config = std::path::Path::new(&p2).join("config.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("\n[auto_ask]\nmin_price = \"0.9\"\nhours = 3\n");
    std::fs::write(&config, text).unwrap();
    ok(agora(&["testnet", "restart", "2", "--dir", d]));
    wait_until("provider 2's automatic ask", Duration::from_secs(120), || {
        let orders: serde_json::Value =
            http::get(&apis[0], &format!("/v1/market/orders?owner={}", provider(2))).unwrap().json().unwrap();
        orders.as_array().is_some_and(|l| {
            l.iter().any(|o| {
                o["side"] == "ask" && o["class"] == "H100-80GB-SIM" && o["gpus"] == 2 && o["price"] == "900000"
            })
        })
    });
    let orders: serde_json::Value =
        http::get(&apis[0], &format!("/v1/market/orders?owner={}", provider(2))).unwrap().json().unwrap();
    assert!(
        !orders.as_array().unwrap().iter().any(|o| o["class"] == "A100-40GB-SIM"),
        "its A100s are leased out: no ask for them: {orders}"
    );
}
