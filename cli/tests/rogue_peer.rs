//! A misbehaving gossip peer: it joins a real 4-node testnet and floods the
//! consensus topic with forged and malformed messages. The nodes reject them
//! (counted in /metrics), stop listening to it once its score falls below the
//! graylist threshold, and keep committing blocks.

mod common;
use common::*;

use std::process::Command;
use std::time::{Duration, Instant};

use agora_node::net::{build_swarm, gossip};
use agora_protocol::consensus::{ConsensusMessage, Vote, VoteKind};
use agora_protocol::{ChainId, Hash, Height, Keypair, Signed, codec};
use agora_testnet::http;
use futures::StreamExt;

fn rejected(api: &str) -> u64 {
    let body = http::get(api, "/metrics").map(|r| r.body).unwrap_or_default();
    body.lines()
        .filter(|l| l.starts_with("agora_gossip_messages_total") && l.contains("rejected"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// Forged votes (signed for another chain, or with a flipped signature bit) and raw garbage.
fn bad_message(i: u64, key: &Keypair) -> Vec<u8> {
    let other = ChainId::new("agora-elsewhere-1").unwrap();
    let vote = Vote { kind: VoteKind::Prevote, height: Height(i), round: 0, block: Some(Hash([i as u8; 32])) };
    match i % 3 {
        0 => codec::encode(&ConsensusMessage::Vote(Signed::sign(vote, key, &other).unwrap())).unwrap(),
        1 => {
            let mut v = Signed::sign(vote, key, &ChainId::new("agora-testnet-1").unwrap()).unwrap();
            v.signature.0[5] ^= 1;
            codec::encode(&ConsensusMessage::Vote(v)).unwrap()
        }
        _ => (0..64).map(|b| (b as u64 * 31 + i) as u8).collect(),
    }
}

#[test]
fn a_peer_flooding_invalid_gossip_is_rejected_and_consensus_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("net");
    let base = 40_000 + (std::process::id() % 500) as u16 * 20;
    let _down = Down(dir.clone());
    let out = Command::new(env!("CARGO_BIN_EXE_agora"))
        .args([
            "testnet",
            "up",
            "--nodes",
            "4",
            "--json",
            "--commit-pause-ms",
            "50",
            "--base-port",
            &base.to_string(),
            "--dir",
        ])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let net: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let api0 = net["nodes"][0]["api_url"].as_str().unwrap().to_string();
    let apis: Vec<String> =
        net["nodes"].as_array().unwrap().iter().map(|n| n["api_url"].as_str().unwrap().into()).collect();
    let target: libp2p::Multiaddr = net["nodes"][0]["p2p"].as_str().unwrap().parse().unwrap();

    let rogue = Keypair::generate().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let sent = runtime.block_on(async {
        let mut swarm = build_swarm(agora_node::identity::libp2p_keypair(&rogue).unwrap()).unwrap();
        swarm.behaviour_mut().gossipsub.subscribe(&gossip::topic(gossip::TOPIC_CONSENSUS)).unwrap();
        swarm.dial(target).unwrap();
        let mut sent = 0u64;
        let until = Instant::now() + Duration::from_secs(60);
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        while Instant::now() < until && sent < 300 {
            tokio::select! {
                _ = swarm.select_next_some() => {}
                _ = tick.tick() => {
                    let data = bad_message(sent, &rogue);
                    if swarm.behaviour_mut().gossipsub.publish(gossip::topic(gossip::TOPIC_CONSENSUS), data).is_ok() {
                        sent += 1;
                    }
                }
            }
        }
        sent
    });
    assert!(sent >= 100, "the rogue peer could publish only {sent} messages");
    let count = rejected(&api0);
    eprintln!("rogue sent {sent} invalid messages; node 0 rejected {count} before ignoring it");
    assert!(count >= 1, "node 0 rejected nothing");
    assert!(count < sent, "node 0 kept processing all {sent} messages from a graylisted peer ({count} rejected)");

    // Honest nodes keep committing.
    let before: Vec<u64> = apis.iter().map(|a| height(a)).collect();
    let until = Instant::now() + Duration::from_secs(120);
    while apis.iter().zip(&before).any(|(a, b)| height(a) < b + 3) {
        assert!(Instant::now() < until, "consensus stalled after the flood: {before:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}
