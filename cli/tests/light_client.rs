//! Full nodes and validator-set changes, end to end on a real testnet of 4
//! validators and 3 full nodes. The full nodes take no votes and follow the
//! chain by gossiped decided blocks; a rogue peer feeding one of them forged
//! certificates for the next height is rejected and the node follows on.
//! Then the full nodes stake their way into 3 of the 4 seats (they take the
//! votes; the validators that lost a seat, staked below the weakest seat,
//! leave them and follow by decided blocks), and a buyer holding only the
//! genesis proves its balance with `agora account --prove`: the genesis
//! validators no longer vouch for the tip (1 of 4 seats), so the CLI
//! follows the set's change through `GET
//! /v1/light/transitions`, checks it, and verifies the answer against the
//! validators it learned; the set it learned is its checkpoint, so the
//! next check starts there (a damaged checkpoint is set aside, never
//! trusted). Last, a new node holding only the genesis joins
//! by state sync from a snapshot the new set decided, trusting it through
//! the validator-set transitions its peer serves; a node that joins from a
//! later checkpoint (`--trust-hash`) holds none, which the buyer's own
//! checkpoint does not need and a check from the genesis is refused for.

mod common;
use common::*;

use std::time::{Duration, Instant};

use agora_node::config::NetConfig;
use agora_node::net::{BehaviourEvent, build_swarm, gossip};
use agora_protocol::{DecidedBlock, Keypair, TimestampMs, codec};
use agora_testnet::http;
use futures::StreamExt;

/// Forged decided blocks and garbage the rogue peer sends at most.
const MAX_FORGERIES: u64 = 100;

/// Every verdict a node gave on a topic.
fn judged(api: &str, topic: &str) -> u64 {
    ["accepted", "ignored", "rejected"].iter().map(|v| gossip_count(api, topic, v)).sum()
}

/// The block after `real`, "certified" by `real`'s signers with the
/// signatures they gave `real` (so none is valid for it).
fn forged_next(real: &DecidedBlock) -> DecidedBlock {
    let mut block = real.block.clone();
    block.header.height = real.block.header.height.next();
    block.header.parent_hash = real.block.hash();
    block.header.time_ms = TimestampMs(real.block.header.time_ms.0 + 1);
    let mut certificate = real.certificate.clone();
    certificate.height = block.header.height;
    certificate.block_hash = block.hash();
    DecidedBlock { block, certificate }
}

/// A rogue peer on `target`'s decided topic: for each decided block it
/// hears, a forgery of the next at once (the first message it sends);
/// between them, garbage and frames whose leading hash is not their
/// block's. Returns how many it sent.
fn feed_forgeries(target: libp2p::Multiaddr) -> u64 {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let rogue = Keypair::generate().unwrap();
        let mut swarm =
            build_swarm(agora_node::identity::libp2p_keypair(&rogue).unwrap(), &NetConfig::default()).unwrap();
        let topic = gossip::topic(gossip::TOPIC_DECIDED);
        swarm.behaviour_mut().gossipsub.subscribe(&topic).unwrap();
        swarm.dial(target).unwrap();
        let (mut sent, mut last): (u64, Option<DecidedBlock>) = (0, None);
        let until = Instant::now() + Duration::from_secs(60);
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        while Instant::now() < until && sent < MAX_FORGERIES {
            let data = tokio::select! {
                event = swarm.select_next_some() => {
                    let libp2p::swarm::SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(
                        libp2p::gossipsub::Event::Message { message, .. },
                    )) = event else { continue };
                    let Some((_, body)) = gossip::decided_unframe(&message.data) else { continue };
                    let Ok(real) = codec::decode::<DecidedBlock>(body) else { continue };
                    let forged = forged_next(&real);
                    last = Some(real);
                    gossip::decided_frame(&forged.certificate.block_hash, &codec::encode(&forged).unwrap())
                }
                _ = tick.tick() => match &last {
                    // A real block under another block's hash.
                    Some(real) if sent % 2 == 0 => {
                        gossip::decided_frame(&real.block.header.parent_hash, &codec::encode(real).unwrap())
                    }
                    Some(_) => (0..200).map(|b| (b as u64 * 7 + sent) as u8).collect(),
                    // The first message is a forgery of the block after one heard.
                    None => continue,
                },
            };
            if swarm.behaviour_mut().gossipsub.publish(topic.clone(), data).is_ok() {
                sent += 1;
            }
        }
        sent
    })
}

/// Each node's height and verdicts, the validator set and the transitions:
/// what a timed-out wait prints.
fn report(api: &[String]) -> String {
    let each: Vec<String> = api
        .iter()
        .map(|a| {
            format!(
                "{a}: h={} decided judged={} accepted={} consensus accepted={}",
                height(a),
                judged(a, gossip::TOPIC_DECIDED),
                gossip_count(a, gossip::TOPIC_DECIDED, "accepted"),
                gossip_count(a, gossip::TOPIC_CONSENSUS, "accepted")
            )
        })
        .collect();
    let validators = http::get(&api[0], "/v1/validators").map(|r| r.body).unwrap_or_default();
    let heights: Vec<_> = transitions(&api[0]).iter().map(|t| t["height"].clone()).collect();
    format!("{each:#?}\nvalidators {validators}\ntransitions {heights:?}")
}

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
    let api = api_urls(&net);
    let buyer_home = net["buyer_home"].as_str().unwrap().to_string();
    let buyer = {
        let shown = ok(agora(&["--home", &buyer_home, "keys", "show", "--json"]));
        serde_json::from_str::<serde_json::Value>(&shown).unwrap()["address"].as_str().unwrap().to_string()
    };
    let genesis = dir.join("node0/genesis.json");
    let genesis = genesis.to_str().unwrap();
    assert!(transitions(&api[0]).is_empty(), "no change of the set yet");

    // The full nodes follow by decided blocks and hear no vote; the
    // validators hear no decided block.
    wait_until("each full node to commit 5 gossiped decided blocks", Duration::from_secs(120), || {
        api[4..].iter().all(|a| gossip_count(a, gossip::TOPIC_DECIDED, "accepted") >= 5)
    });
    for a in &api[4..] {
        assert_eq!(judged(a, gossip::TOPIC_CONSENSUS) + judged(a, gossip::TOPIC_CONSENSUS_REPEAT), 0, "{a}");
    }
    for a in &api[..4] {
        assert_eq!(judged(a, gossip::TOPIC_DECIDED), 0, "{a}");
    }
    // Forged certificates for the next height, garbage, and real blocks
    // under another block's hash, fed to full node 4.
    let rejected_before = gossip_count(&api[4], gossip::TOPIC_DECIDED, "rejected");
    let target: libp2p::Multiaddr = net["nodes"][4]["p2p"].as_str().unwrap().parse().unwrap();
    let sent = feed_forgeries(target);
    let rejected = gossip_count(&api[4], gossip::TOPIC_DECIDED, "rejected") - rejected_before;
    eprintln!("the rogue sent {sent} forged decided blocks; node 4 rejected {rejected} before ignoring it");
    assert!(sent >= MAX_FORGERIES / 2, "the rogue could send only {sent}");
    assert!(rejected >= 1 && rejected < sent, "rejected {rejected} of {sent}: judged, then graylisted");
    let tip = height(&api[0]);
    wait_until("node 4 to follow past the flood", Duration::from_secs(120), || height(&api[4]) > tip + 5);

    // Node 0 stakes 1 AGR more, then the three full nodes 2,000 AGR more
    // each: at the next epoch (every 100 blocks) they hold three of the
    // four seats and node 0 the fourth; nodes 1–3 then hold less stake than
    // the weakest seat, so they are not about to rejoin the set either.
    let stake = |i: usize, amount: &str| {
        let home = dir.join(format!("node{i}"));
        ok(agora(&["--home", home.to_str().unwrap(), "stake", amount, "--key", "node", "--node", &api[i]]));
    };
    stake(0, "1");
    for i in 4..7 {
        stake(i, "2000");
    }
    // An epoch boundary may fall between the stakes: then a first change
    // seats some and the next epoch's the rest.
    let seated: Vec<&str> = [0, 4, 5, 6].iter().map(|&i| net["nodes"][i]["address"].as_str().unwrap()).collect();
    wait_until("the three full nodes and node 0 to hold the seats", Duration::from_secs(300), || {
        let set = http::get(&api[0], "/v1/validators").map(|r| r.body).unwrap_or_default();
        seated.iter().all(|a| set.contains(a)) && set.contains("\"power\":\"1001000000\"")
    });
    let changes = transitions(&api[0]);
    let changed_at = changes.last().unwrap()["height"].as_u64().unwrap();
    // One change, or two when the stakes straddled an epoch boundary (the
    // genesis vouches for the second only if enough of it signed that block).
    let followed_from_genesis = |line: &str| match changes.len() {
        1 => line.contains("after following 1 validator-set change from the genesis"),
        _ => line.contains("after following ") && line.contains(" from the genesis"),
    };
    // The proof must be of a block the new set decided.
    wait_until("a block decided by the new set", Duration::from_secs(120), || height(&api[0]) > changed_at + 1);

    // The roles swapped: the new validators take votes, and the genesis
    // validators that lost their seats leave the votes and follow by
    // decided blocks.
    for a in &api[4..] {
        assert!(gossip_count(a, gossip::TOPIC_CONSENSUS, "accepted") > 0, "{a} takes votes now");
    }
    let followed = || api[1..4].iter().all(|a| gossip_count(a, gossip::TOPIC_DECIDED, "accepted") > 0);
    let deadline = Instant::now() + Duration::from_secs(120);
    while !followed() {
        assert!(Instant::now() < deadline, "nodes 1–3 committed no decided block: {}", report(&api));
        std::thread::sleep(Duration::from_millis(200));
    }
    for i in 1..4 {
        let log = std::fs::read_to_string(dir.join(format!("node{i}/node.log"))).unwrap();
        assert!(log.contains("consensus topics left"), "node {i} left the votes");
    }
    let tip = height(&api[4]);
    wait_until("every genesis validator to follow the new set", Duration::from_secs(120), || {
        api[..4].iter().all(|a| height(a) > tip)
    });

    // The buyer's `account --prove`, asked of `node`, with its checkpoint in its home.
    let prove_at = |node: &str, extra: &[&str]| {
        let mut args = vec!["--home", &buyer_home, "account", &buyer, "--prove", "--genesis", genesis, "--node", node];
        args.extend_from_slice(extra);
        agora(&args)
    };
    let prove = |extra: &[&str]| prove_at(&api[0], extra);
    let shown = ok(prove(&[]));
    assert!(followed_from_genesis(&shown), "{shown}");
    // The set it learned is its checkpoint: the next check starts there.
    let checkpoints: Vec<_> = std::fs::read_dir(std::path::Path::new(&buyer_home).join("light"))
        .expect("a checkpoint directory")
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(checkpoints.len(), 1, "{checkpoints:?}");
    let proven: serde_json::Value = serde_json::from_str(&ok(prove(&["--json"]))).unwrap();
    assert!(proven["verified_height"].as_u64() > Some(changed_at), "{proven}");
    assert_eq!(proven["trust"]["trusted_from_height"].as_u64(), Some(changed_at), "{proven}");
    assert_eq!(proven["trust"]["changes_followed"].as_u64(), Some(0), "{proven}");
    let served = http::get(&api[0], &format!("/v1/accounts/{buyer}")).unwrap().json().unwrap();
    assert_eq!(proven["balance"], served["balance"], "{proven}");
    assert!(ok(prove(&[])).contains(&format!("trusted from your checkpoint at height {changed_at}")));
    let again = ok(prove(&["--from-genesis"]));
    assert!(followed_from_genesis(&again), "{again}");
    // A damaged checkpoint is set aside with a warning, never trusted: the
    // check starts from the genesis again and writes a good one.
    std::fs::write(&checkpoints[0], b"{\"chain_id\": 7").unwrap();
    let damaged = prove(&[]);
    assert!(String::from_utf8_lossy(&damaged.stderr).contains("ignoring the light-client checkpoint"));
    let damaged = ok(damaged);
    assert!(followed_from_genesis(&damaged), "{damaged}");
    assert!(ok(prove(&[])).contains("trusted from your checkpoint"), "rewritten");

    // A new node holding only the genesis joins by state sync, no
    // --trust-hash: the newest snapshot (every 100 blocks) is decided by
    // the new set, so it follows its peer's transitions from the genesis to
    // check it, and keeps them to serve the next joiner.
    let snapshot_at = (changed_at / 100 + 1) * 100;
    wait_until("a snapshot decided by the new set", Duration::from_secs(180), || height(&api[0]) > snapshot_at);
    let bootstrap = ["--bootstrap", net["nodes"][0]["p2p"].as_str().unwrap()];
    let (_joined, joiner_api) =
        state_sync_node(tmp.path(), "joiner", std::path::Path::new(genesis), &api[0], 13, &bootstrap);
    let tip = height(&api[0]);
    wait_until("the joiner to reach the tip", Duration::from_secs(180), || height(&joiner_api) >= tip);
    let earliest = status(&joiner_api).unwrap()["earliest_height"].as_u64().unwrap();
    assert!(earliest >= snapshot_at, "it installed a snapshot the new set decided: from {earliest}");
    let log = std::fs::read_to_string(tmp.path().join("joiner.log")).unwrap();
    assert!(log.contains("installed the snapshot"), "{log}");
    assert_eq!(transitions(&joiner_api), transitions(&api[0]), "it serves the transitions it followed");

    // A node that joined from a checkpoint after the change holds no
    // transition: the buyer's checkpoint needs none; the genesis alone
    // cannot be followed there, and the CLI says so in one line.
    // The newest snapshot: peers serve their newest two, so it stays on
    // offer for at least another 100 blocks however slow the machine is.
    let newest = height(&api[0]) / 100 * 100;
    let trust_hash = block_hash(&api[0], newest).expect("the snapshot's block");
    let late_args = ["--bootstrap", net["nodes"][0]["p2p"].as_str().unwrap(), "--trust-hash", &trust_hash];
    let (_late, late_api) = state_sync_node(tmp.path(), "late", std::path::Path::new(genesis), &api[0], 15, &late_args);
    let tip = height(&api[0]);
    wait_until("the late joiner to reach the tip", Duration::from_secs(180), || height(&late_api) >= tip);
    assert!(transitions(&late_api).is_empty(), "it holds no transition");
    let shown = ok(prove_at(&late_api, &[]));
    assert!(shown.contains(&format!("trusted from your checkpoint at height {changed_at}")), "{shown}");
    let refused = err(prove_at(&late_api, &["--from-genesis"]));
    assert!(refused.contains("lists no change after height 0"), "{refused}");
    assert_eq!(refused.trim().lines().count(), 1, "{refused}");
}
