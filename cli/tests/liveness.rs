//! Peer-verified liveness on a real testnet (4 validators, 3 of them
//! providers): a killed provider is slashed and jailed within W + 5 blocks on
//! every surviving node, exactly once, its buyer refunded and the others
//! untouched; it comes back with `agora unjail` after the jail period and
//! takes leases again. No false slashing: a provider paused for less than
//! the window, or cut off from one validator, is not slashed, and a
//! validator's false attestation achieves nothing.

mod common;
use common::*;

use std::path::{Path, PathBuf};
use std::time::Duration;

use agora_protocol::{DowntimeAttestation, DowntimeEvidence, Height, Signed, Transaction, TxKind, codec};
use agora_testnet::http;

/// The chain's downtime window (Params::default) and jail period.
const W: u64 = 20;
const JAIL_BLOCKS: u64 = 50;

fn provider(api: &str, address: &str) -> serde_json::Value {
    let list: serde_json::Value = http::get(api, "/v1/providers").unwrap().json().unwrap();
    list.as_array().unwrap().iter().find(|p| p["address"] == address).cloned().unwrap_or_default()
}

/// A testnet admin call with the token from the node's home.
fn admin(home: &std::path::Path, api: &str, path: &str, body: &str) {
    let token = std::fs::read_to_string(agora_node::api_guard::token_path(home)).unwrap();
    assert_eq!(http::post_authorized(api, path, body, token.trim()).unwrap().status, 200, "{path}");
}

#[test]
fn downtime_is_slashed_once_by_quorum_and_never_falsely() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("net");
    let d = dir.to_str().unwrap();
    let base = common::test_ports(5);
    let _down = Down(dir.clone());
    let net = testnet_up(&dir, 3, base, &[]);
    let node = |i: usize| net["nodes"][i].clone();
    let api: Vec<String> = (0..4).map(|i| node(i)["api_url"].as_str().unwrap().to_string()).collect();
    let addr: Vec<String> = (0..4).map(|i| node(i)["address"].as_str().unwrap().to_string()).collect();
    let peer: Vec<String> = (0..4).map(|i| node(i)["peer_id"].as_str().unwrap().to_string()).collect();
    let home = |i: usize| PathBuf::from(node(i)["home"].as_str().unwrap());
    let buyer_home = net["buyer_home"].as_str().unwrap().to_string();
    wait_until("three offers on node 3", Duration::from_secs(120), || {
        let offers: serde_json::Value =
            http::get(&api[3], "/v1/offers").ok().and_then(|r| r.json().ok()).unwrap_or_default();
        offers.as_array().is_some_and(|a| a.len() == 3)
    });

    // A buyer's long job on provider 1, which is about to die.
    let lease = ok(submit(
        &buyer_home,
        &api[3],
        &["--gpus", "1", "--provider", &addr[1], "--duration", "1h", "--", "sleep", "600"],
    ))
    .trim()
    .to_string();
    let buyer_before: u64 = {
        let b: serde_json::Value = http::get(
            &api[3],
            &format!(
                "/v1/accounts/{}",
                agora_node::keystore::load(Path::new(&buyer_home), "default").unwrap().address()
            ),
        )
        .unwrap()
        .json()
        .unwrap();
        b["balance"].as_str().unwrap().parse().unwrap()
    };

    // Provider 0 paused for well under a window, provider 2 cut off from
    // validator 3 (heartbeats still reach it through the others).
    ok(agora(&["testnet", "pause", "0", "--dir", d]));
    std::thread::sleep(Duration::from_millis(1500));
    ok(agora(&["testnet", "resume", "0", "--dir", d]));
    // Without the node's token (any local user, any web page) the admin endpoints refuse.
    let block = format!("{{\"block\": [\"{}\"]}}", peer[3]);
    assert_eq!(http::post(&api[2], "/v1/admin/partition", &block).unwrap().status, 401);
    assert_eq!(http::post_authorized(&api[2], "/v1/admin/partition", &block, "guess").unwrap().status, 401);
    // A page served from another name (DNS rebinding) is refused whatever it asks.
    let raw = |host: &str| {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(api[2].trim_start_matches("http://")).unwrap();
        write!(s, "GET /v1/status HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out.split_whitespace().nth(1).unwrap_or("").to_string()
    };
    let port = api[2].rsplit(':').next().unwrap();
    assert_eq!(raw(&format!("evil.example:{port}")), "421");
    assert_eq!(raw(&format!("localhost:{port}")), "200");
    admin(&home(2), &api[2], "/v1/admin/partition", &block);
    admin(&home(3), &api[3], "/v1/admin/partition", &format!("{{\"block\": [\"{}\"]}}", peer[2]));

    // Validator 3 alone claims provider 2 was down: the ledger refuses it.
    wait_until("a window's worth of blocks", Duration::from_secs(120), || height(&api[0]) >= 2 * W);
    let h = height(&api[0]);
    let v3 = agora_node::keystore::load(&home(3), "node").unwrap().keypair;
    let chain = agora_protocol::ChainId::new(net["chain_id"].as_str().unwrap()).unwrap();
    let lie = DowntimeAttestation {
        provider: addr[2].parse().unwrap(),
        window_start: Height(h.saturating_sub(W + 5)),
        window_end: Height(h - 2),
    };
    let evidence = DowntimeEvidence {
        provider: lie.provider,
        window_start: lie.window_start,
        window_end: lie.window_end,
        attestations: vec![Signed::sign(lie, &v3, &chain).unwrap()],
    };
    let nonce = {
        let a: serde_json::Value = http::get(&api[0], &format!("/v1/accounts/{}", addr[3])).unwrap().json().unwrap();
        a["nonce"].as_u64().unwrap()
    };
    let tx = Signed::sign(
        Transaction { nonce, fee: agora_ledger::params::DEFAULT_MIN_TX_FEE, kind: TxKind::SlashDowntime { evidence } },
        &v3,
        &chain,
    )
    .unwrap();
    let r =
        http::post(&api[0], "/v1/tx", &format!("{{\"tx\":\"{}\"}}", hex::encode(codec::encode(&tx).unwrap()))).unwrap();
    assert_eq!(r.status, 400);
    assert!(r.body.contains("voting power"), "{}", r.body);

    // Provider 1 dies.
    let killed_at = height(&api[0]);
    ok(agora(&["testnet", "kill", "1", "--dir", d]));
    for i in [0, 2, 3] {
        wait_until(&format!("provider 1 jailed on node {i}"), Duration::from_secs(120), || {
            provider(&api[i], &addr[1])["status"] == "jailed"
        });
    }
    let p1 = provider(&api[0], &addr[1]);
    let slashed_at = p1["jailed_until"].as_u64().unwrap() - JAIL_BLOCKS;
    assert!(slashed_at <= killed_at + W + 5, "killed at {killed_at}, slashed at {slashed_at}");
    // Exactly once, everywhere, even after more blocks and more probes.
    let later = height(&api[0]) + W + 5;
    wait_until("W + 5 more blocks", Duration::from_secs(120), || height(&api[0]) >= later);
    for i in [0, 2, 3] {
        let p = provider(&api[i], &addr[1]);
        assert_eq!((p["slashes"].as_u64(), p["stake"].as_str()), (Some(1), Some("990000000")), "node {i}: {p}");
    }
    // Every node can show the slash with the evidence that proved it.
    let slashes: serde_json::Value =
        http::get(&api[2], &format!("/v1/providers/{}/slashes", addr[1])).unwrap().json().unwrap();
    let slashes = slashes.as_array().unwrap();
    assert_eq!(slashes.len(), 1, "{slashes:?}");
    assert_eq!(slashes[0]["reason"], "downtime");
    assert_eq!(slashes[0]["height"].as_u64(), Some(slashed_at));
    assert!(slashes[0]["attestations"].as_array().unwrap().len() >= 3, "more than 2/3 of 4 equal validators");
    // Anyone can check the evidence offline: every attestation's signature.
    let evidence = tempfile::NamedTempFile::new().unwrap();
    let raw = http::get(&api[2], &format!("/v1/providers/{}/slashes", addr[1])).unwrap().body;
    std::fs::write(evidence.path(), &raw).unwrap();
    let checked = ok(agora(&["verify", evidence.path().to_str().unwrap()]));
    let attested = slashes[0]["attestations"].as_array().unwrap().len();
    assert_eq!(checked.matches("ok   downtime attestation by").count(), attested, "{checked}");
    assert!(checked.contains(&format!("provider {} silent over heights", addr[1])), "{checked}");
    // One flipped hex digit in one attestation is caught.
    let first = slashes[0]["attestations"][0]["signed"].as_str().unwrap();
    // The last hex digit of the encoding changed.
    let (head, last) = first.split_at(first.len() - 1);
    let flip = format!("{head}{}", if last == "0" { "1" } else { "0" });
    std::fs::write(evidence.path(), raw.replace(first, &flip)).unwrap();
    let out = agora(&["verify", evidence.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "a tampered attestation fails verify");
    assert!(String::from_utf8_lossy(&out.stdout).contains("BAD"));

    // The explorer shows it jailed, with the attestations that proved it.
    let page = explorer_page(&api[2], &format!("/explorer/providers/{}", addr[1]));
    let jailed = |html: &str| html.contains("jailed until height") || html.contains("jailed; may unjail since height");
    assert!(jailed(&page) && page.contains("downtime"), "{}", page);
    for a in slashes[0]["attestations"].as_array().unwrap() {
        let signer = a["validator"].as_str().unwrap();
        assert!(page.contains(signer), "attestation by {signer} listed");
    }
    assert!(page.contains("slashed: heights"), "the uptime chart marks the slashed span");
    // Heartbeat coverage, as node 2 heard it: windows with heartbeats (each
    // with a signed one as proof) before the kill, the slashed window after.
    let coverage: serde_json::Value =
        http::get(&api[2], &format!("/v1/providers/{}/heartbeats", addr[1])).unwrap().json().unwrap();
    let windows = coverage["windows"].as_array().unwrap();
    let heard = windows.iter().filter(|w| w["heartbeats"].as_u64() > Some(0)).count();
    assert!(heard > 0, "heartbeats heard before the kill: {coverage}");
    let after_kill = |w: &&serde_json::Value| w["start"].as_u64().unwrap() > killed_at + 3;
    assert!(windows.iter().filter(after_kill).all(|w| w["heartbeats"] == 0), "none after the kill: {coverage}");
    assert!(
        windows.iter().any(|w| w["slashed"] == true && w["heartbeats"] == 0),
        "a silent slashed window: {coverage}"
    );
    std::fs::write(evidence.path(), serde_json::to_string(&coverage).unwrap()).unwrap();
    let checked = ok(agora(&["verify", evidence.path().to_str().unwrap()]));
    assert_eq!(checked.matches("ok   heartbeat by").count(), heard, "{checked}");
    assert!(page.contains("Heartbeat coverage") && page.contains("not heard here"), "{}", page);
    // And in a real browser: the rendered DOM has the data, and the height
    // advances live, without a reload. Screenshots go to target/explorer/.
    if let Some(browser) = chromium() {
        let url = |path: &str| format!("{}{path}", api[2]);
        let dom = rendered_dom(&browser, &url(&format!("/explorer/providers/{}", addr[1])), 1_000);
        assert!(jailed(&dom), "the slashed provider shows jailed in the browser");
        for a in slashes[0]["attestations"].as_array().unwrap() {
            assert!(dom.contains(a["validator"].as_str().unwrap()), "its attestations are listed");
        }
        // "Verify in this browser": every attestation and heartbeat proof
        // on the page checks out in the browser's own ed25519.
        let verified = rendered_dom(&browser, &url(&format!("/explorer/providers/{}#verify", addr[1])), 3_000);
        let done: usize = verified
            .split("data-verify-done=\"")
            .nth(1)
            .and_then(|v| v.split('"').next()?.parse().ok())
            .unwrap_or_else(|| panic!("the in-browser check ran: {verified}"));
        assert!(
            done >= attested + heard,
            "{done} objects checked, {attested} attestations and {heard} heartbeats shown"
        );
        assert_eq!(verified.matches("data-verified=\"ok\"").count(), done, "every signature verifies in the browser");
        assert!(verified.contains(&format!("{done} of {done} signatures verified in this browser")));
        let listed = rendered_dom(&browser, &url("/explorer/providers"), 1_000);
        for p in &addr[..2] {
            assert!(listed.contains(p.as_str()), "provider {p} in the rendered providers page");
        }
        assert!(listed.contains("H100-80GB-SIM"), "their GPU class");
        let market = rendered_dom(&browser, &url("/explorer/market"), 1_000);
        assert!(market.contains("Spot offers") && market.contains("2 AGR"), "the offers, with their price");
        // The header's height as rendered and as the page's script last set it.
        let live = |dom: &str| -> (u64, u64) {
            let tag = dom.split("data-live=\"height\" data-rendered=\"").nth(1).expect("the live height");
            let (rendered, rest) = tag.split_once('"').unwrap();
            let shown = rest.split_once('>').unwrap().1.split('<').next().unwrap();
            (rendered.parse().unwrap(), shown.trim().parse().unwrap())
        };
        // The newest block row the feed added, as (the table's top, the first row's height).
        let feed = |dom: &str| -> (u64, u64) {
            let table = dom.split("id=\"blocks\" data-top=\"").nth(1).expect("the block feed");
            let top = table.split('"').next().unwrap().parse().unwrap();
            let first = table.split("/explorer/blocks/").nth(1).unwrap().split('"').next().unwrap().parse().unwrap();
            (top, first)
        };
        wait_until("the height and the block feed to advance live in the browser", Duration::from_secs(60), || {
            let dom = rendered_dom(&browser, &url("/explorer/"), 6_000);
            let ((rendered, shown), (top, first)) = (live(&dom), feed(&dom));
            shown > rendered && top > rendered && first == top
        });
        // Sections marked data-refresh are re-rendered live: the providers
        // table shows a later height than the page was served at.
        let as_of = |dom: &str| -> u64 {
            let v = dom.split("data-as-of=\"\">").nth(1).expect("a live section");
            v.split('<').next().unwrap().trim().parse().unwrap()
        };
        wait_until("the providers table to refresh live in the browser", Duration::from_secs(60), || {
            let dom = rendered_dom(&browser, &url("/explorer/providers"), 12_000);
            as_of(&dom) > live(&dom).0
        });
        for (path, name) in [
            ("/explorer/".to_string(), "network"),
            ("/explorer/providers".to_string(), "providers"),
            (format!("/explorer/providers/{}#verify", addr[1]), "provider-jailed"),
            ("/explorer/market".to_string(), "market"),
        ] {
            screenshot(&browser, &url(&path), name, if name == "provider-jailed" { 2_000 } else { 1_000 });
        }
    }
    // Its buyer is refunded; the other providers are untouched (0 was only paused, 2 only cut off from one validator).
    let l: serde_json::Value = http::get(&api[3], &format!("/v1/leases/{lease}")).unwrap().json().unwrap();
    assert_eq!(l["status"]["Settled"]["reason"], "ProviderSlashed", "{l}");
    let refunded: u64 = l["status"]["Settled"]["refunded"].as_str().unwrap().parse().unwrap();
    assert!(refunded > 0);
    let b: serde_json::Value = http::get(
        &api[3],
        &format!("/v1/accounts/{}", agora_node::keystore::load(Path::new(&buyer_home), "default").unwrap().address()),
    )
    .unwrap()
    .json()
    .unwrap();
    assert_eq!(
        b["balance"].as_str().unwrap().parse::<u64>().unwrap(),
        buyer_before + refunded,
        "the refund reached the buyer"
    );
    for i in [0, 2] {
        let p = provider(&api[3], &addr[i]);
        assert_eq!((p["status"].as_str(), p["slashes"].as_u64()), (Some("active"), Some(0)), "provider {i}: {p}");
    }
    admin(&home(2), &api[2], "/v1/admin/heal", "{}");
    admin(&home(3), &api[3], "/v1/admin/heal", "{}");

    // Unjail is refused while jailed or silent; after the jail period, with the
    // node back and heartbeating, it works and the provider leases again.
    let early = agora(&["--home", &home(1).to_string_lossy(), "unjail", "--node", &api[0]]);
    assert!(!early.status.success());
    ok(agora(&["testnet", "restart", "1", "--dir", d]));
    let until = p1["jailed_until"].as_u64().unwrap();
    wait_until("the jail period to pass on node 1", Duration::from_secs(180), || height(&api[1]) > until);
    wait_until("node 1's own heartbeats", Duration::from_secs(60), || {
        provider(&api[1], &addr[1])["last_heartbeat_height"].as_u64().is_some_and(|h| height(&api[1]) - h <= 5)
    });
    ok(agora(&["--home", &home(1).to_string_lossy(), "unjail", "--node", &api[1]]));
    wait_until("provider 1 active and offering on node 3", Duration::from_secs(120), || {
        let offers: serde_json::Value =
            http::get(&api[3], "/v1/offers").ok().and_then(|r| r.json().ok()).unwrap_or_default();
        provider(&api[3], &addr[1])["status"] == "active"
            && offers.as_array().is_some_and(|a| a.iter().any(|o| o["provider"] == addr[1].as_str()))
    });
    let again = ok(submit(
        &buyer_home,
        &api[3],
        &["--gpus", "1", "--provider", &addr[1], "--duration", "5m", "--wait", "--", "echo", "back"],
    ));
    assert_eq!(again, "back\n");
    // Metrics count what happened.
    let m = http::get(&api[0], "/metrics").unwrap().body;
    for name in [
        "agora_probes_sent_total",
        "agora_probes_failed_total",
        "agora_attestations_signed_total",
        "agora_heartbeats_seen_total",
    ] {
        let line = m.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("{name} missing"));
        assert!(!line.ends_with(" 0"), "{line}");
    }
}
