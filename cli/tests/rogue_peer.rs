//! Misbehaving gossip peers: each joins a real 4-node testnet and floods one
//! topic (consensus, heartbeats, attestations) with forged and malformed
//! messages. The nodes reject them (counted in /metrics per topic), stop
//! listening to each once its score falls below the graylist threshold, and
//! keep committing blocks.

mod common;
use common::*;

use std::process::Command;
use std::time::{Duration, Instant};

use agora_node::net::{build_swarm, gossip};
use agora_protocol::consensus::{ConsensusMessage, Vote, VoteKind};
use agora_protocol::{ChainId, DowntimeAttestation, Hash, Heartbeat, Height, Keypair, Signed, codec};
use agora_testnet::http;
use futures::StreamExt;

/// Builds the i-th bad message of a flood, signed (badly) with the rogue's key.
type MakeMessage = dyn Fn(u64, &Keypair) -> Vec<u8>;

fn rejected(api: &str, topic: &str) -> u64 {
    let body = http::get(api, "/metrics").map(|r| r.body).unwrap_or_default();
    body.lines()
        .filter(|l| l.starts_with("agora_gossip_messages_total") && l.contains("rejected"))
        .filter(|l| l.contains(&format!("topic=\"{topic}\"")))
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
    let base = common::test_ports(6);
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

    // One rogue per topic (each is graylisted on its own): forged consensus
    // messages and garbage, forged heartbeats, forged attestations.
    let other = ChainId::new("agora-elsewhere-1").unwrap();
    let floods: Vec<(&str, Box<MakeMessage>, u64)> = vec![
        (gossip::TOPIC_CONSENSUS, Box::new(bad_message), 300),
        (
            gossip::TOPIC_HEARTBEATS,
            Box::new(move |i, key| {
                let hb = Heartbeat { seq: i, height: Height(i), block_hash: Hash([i as u8; 32]) };
                codec::encode(&Signed::sign(hb, key, &other).unwrap()).unwrap()
            }),
            100,
        ),
        (
            gossip::TOPIC_ATTESTATIONS,
            Box::new(|i, key| {
                let body = DowntimeAttestation {
                    provider: key.address(),
                    window_start: Height(i),
                    window_end: Height(i + 40),
                };
                let mut att = Signed::sign(body, key, &ChainId::new("agora-testnet-1").unwrap()).unwrap();
                att.signature.0[9] ^= 1;
                codec::encode(&att).unwrap()
            }),
            100,
        ),
    ];
    let runtime = tokio::runtime::Runtime::new().unwrap();
    for (topic, make, max) in floods {
        let rogue = Keypair::generate().unwrap();
        let before = rejected(&api0, topic);
        let target = target.clone();
        let sent = runtime.block_on(async {
            let mut swarm = build_swarm(agora_node::identity::libp2p_keypair(&rogue).unwrap()).unwrap();
            swarm.behaviour_mut().gossipsub.subscribe(&gossip::topic(topic)).unwrap();
            swarm.dial(target).unwrap();
            let mut sent = 0u64;
            let until = Instant::now() + Duration::from_secs(60);
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            while Instant::now() < until && sent < max {
                tokio::select! {
                    _ = swarm.select_next_some() => {}
                    _ = tick.tick() => {
                        if swarm.behaviour_mut().gossipsub.publish(gossip::topic(topic), make(sent, &rogue)).is_ok() {
                            sent += 1;
                        }
                    }
                }
            }
            sent
        });
        assert!(sent >= max / 3, "the rogue peer could publish only {sent} messages on {topic}");
        let count = rejected(&api0, topic) - before;
        eprintln!("rogue sent {sent} invalid messages on {topic}; node 0 rejected {count} before ignoring it");
        assert!(count >= 1, "node 0 rejected nothing on {topic}");
        assert!(count < sent, "node 0 kept processing all {sent} messages from a graylisted peer on {topic}");
    }

    // Honest nodes keep committing.
    let before: Vec<u64> = apis.iter().map(|a| height(a)).collect();
    let until = Instant::now() + Duration::from_secs(120);
    while apis.iter().zip(&before).any(|(a, b)| height(a) < b + 3) {
        assert!(Instant::now() < until, "consensus stalled after the flood: {before:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}
