//! Misbehaving gossip peers: each joins a real 4-node testnet and floods one
//! topic (consensus, heartbeats, attestations, transactions) with forged and
//! malformed messages (the forged transactions name a funded sender, so they
//! pass every check but the signature's, made in batches). The nodes reject them (counted in /metrics per topic), stop
//! listening to each once its score falls below the graylist threshold, and
//! keep committing blocks. Then the relay rules: 1,000 validly signed votes
//! from a key that holds no validator seat are judged by the node the rogue
//! reaches and relayed to none, and 1,000 copies of one captured validator
//! vote wrapped as repeats with fresh nonces (each a new gossip message) are
//! judged by that node and forwarded at most once a second.

mod common;
use common::*;

use std::process::Command;
use std::time::{Duration, Instant};

use agora_node::config::NetConfig;
use agora_node::net::{build_swarm, gossip};
use agora_protocol::consensus::{ConsensusMessage, Vote, VoteKind};
use agora_protocol::{ChainId, DowntimeAttestation, Hash, Heartbeat, Height, Keypair, Signed, codec};
use futures::StreamExt;

/// A user's transfers timed quiet and during the sustained vote flood.
const LATENCY_SAMPLES: usize = 10;
/// Votes the sustained flood publishes at most.
const MAX_VOTE_FLOOD: u64 = 100_000;

/// Builds the i-th bad message of a flood, signed (badly) with the rogue's key.
type MakeMessage = dyn Fn(u64, &Keypair) -> Vec<u8>;

fn rejected(api: &str, topic: &str) -> u64 {
    gossip_count(api, topic, "rejected")
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
    let apis = api_urls(&net);
    let target: libp2p::Multiaddr = net["nodes"][0]["p2p"].as_str().unwrap().parse().unwrap();

    // One rogue per topic (each is graylisted on its own): forged consensus
    // messages and garbage, forged heartbeats, forged attestations, and
    // transfers that claim a funded validator's account as their signer.
    let other = ChainId::new("agora-elsewhere-1").unwrap();
    let funded: agora_protocol::Address = net["nodes"][1]["address"].as_str().unwrap().parse().unwrap();
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
        (
            gossip::TOPIC_TXS,
            Box::new(move |i, key| {
                let body = agora_protocol::Transaction {
                    nonce: i % 60,
                    fee: agora_ledger::params::DEFAULT_MIN_TX_FEE,
                    kind: agora_protocol::TxKind::Transfer { to: key.address(), amount: agora_protocol::Amount(1 + i) },
                };
                let mut tx = Signed::sign(body, key, &ChainId::new("agora-testnet-1").unwrap()).unwrap();
                tx.signer = funded;
                codec::encode(&agora_protocol::TxBundle { txs: vec![tx] }).unwrap()
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
            let mut swarm =
                build_swarm(agora_node::identity::libp2p_keypair(&rogue).unwrap(), &NetConfig::default()).unwrap();
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

    // Relay rules. A stranger's key signs valid votes for the current height,
    // and a captured old validator vote is re-published over and over under
    // fresh sequence numbers (the rogue's own gossip ids are per sequence
    // number, so its gossipsub sends every copy).
    let stranger = Keypair::generate().unwrap();
    let chain = ChainId::new("agora-testnet-1").unwrap();
    let (node0_before, node1_before) = (
        gossip_count(&api0, gossip::TOPIC_CONSENSUS, "ignored"),
        gossip_count(&apis[1], gossip::TOPIC_CONSENSUS, "ignored"),
    );
    let repeats = |api: &str| {
        ["ignored", "accepted", "rejected"]
            .iter()
            .map(|v| gossip_count(api, gossip::TOPIC_CONSENSUS_REPEAT, v))
            .sum::<u64>()
    };
    let (repeats0_before, repeats1_before) = (repeats(&api0), repeats(&apis[1]));
    let (copies, votes) = runtime.block_on(async {
        let mut swarm = build_swarm(agora_node::identity::libp2p_keypair(&stranger).unwrap(), &NetConfig::default()).unwrap();
        swarm.behaviour_mut().gossipsub.subscribe(&gossip::topic(gossip::TOPIC_CONSENSUS)).unwrap();
        swarm.behaviour_mut().gossipsub.subscribe(&gossip::topic(gossip::TOPIC_CONSENSUS_REPEAT)).unwrap();
        swarm.dial(target.clone()).unwrap();
        let mut captured: Option<Vec<u8>> = None;
        let (mut copies, mut votes) = (0u64, 0u64);
        let until = Instant::now() + Duration::from_secs(60);
        let mut tick = tokio::time::interval(Duration::from_millis(2));
        while Instant::now() < until && votes < 1_000 {
            tokio::select! {
                event = swarm.select_next_some() => {
                    if let libp2p::swarm::SwarmEvent::Behaviour(agora_node::net::BehaviourEvent::Gossipsub(
                        libp2p::gossipsub::Event::Message { message, .. },
                    )) = event
                    {
                        if captured.is_none() && matches!(codec::decode::<ConsensusMessage>(&message.data), Ok(ConsensusMessage::Vote(_))) {
                            captured = Some(message.data);
                        }
                    }
                }
                _ = tick.tick() => {
                    let Some(copy) = captured.clone() else { continue };
                    let publish = |swarm: &mut libp2p::Swarm<agora_node::net::Behaviour>, data| {
                        swarm.behaviour_mut().gossipsub.publish(gossip::topic(gossip::TOPIC_CONSENSUS), data).is_ok()
                    };
                    // First the copies, as repeats with fresh nonces (each a
                    // new gossip message); the vote goes stale meanwhile.
                    if copies < 1_000 {
                        let message = codec::decode::<ConsensusMessage>(&copy).unwrap();
                        let repeat = codec::encode(&agora_protocol::ConsensusRepeat { nonce: copies, message }).unwrap();
                        let topic = gossip::topic(gossip::TOPIC_CONSENSUS_REPEAT);
                        copies += u64::from(swarm.behaviour_mut().gossipsub.publish(topic, repeat).is_ok());
                        continue;
                    }
                    let h = height(&api0) + 1;
                    let v = Vote { kind: VoteKind::Prevote, height: Height(h), round: votes as u32, block: None };
                    let msg = ConsensusMessage::Vote(Signed::sign(v, &stranger, &chain).unwrap());
                    votes += u64::from(publish(&mut swarm, codec::encode(&msg).unwrap()));
                }
            }
        }
        (copies, votes)
    });
    assert!(copies == 1_000 && votes == 1_000, "the rogue published {copies} copies and {votes} votes");
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline && gossip_count(&api0, gossip::TOPIC_CONSENSUS, "ignored") < node0_before + 990 {
        std::thread::sleep(Duration::from_millis(200));
    }
    let node0 = gossip_count(&api0, gossip::TOPIC_CONSENSUS, "ignored") - node0_before;
    let node1 = gossip_count(&apis[1], gossip::TOPIC_CONSENSUS, "ignored") - node1_before;
    let (repeats0, repeats1) = (repeats(&api0) - repeats0_before, repeats(&apis[1]) - repeats1_before);
    let forwarded = gossip_count(&api0, gossip::TOPIC_CONSENSUS_REPEAT, "accepted");
    eprintln!(
        "relay rules: node 0 ignored {node0} consensus messages (1,000 stranger votes sent) and judged {repeats0} \
         repeats (1,000 copies of one vote sent; {forwarded} forwarded in all), node 1 {node1} and {repeats1}"
    );
    // 1,000 stranger votes, plus the late votes any node ignores after each commit.
    assert!(node0 >= 990, "node 0 judged only {node0} of the stranger's 1,000 votes");
    assert!(node0 < 1_000 + 300, "node 0 judged {node0} plain consensus messages");
    assert!(node1 < 300, "node 0 relayed the stranger's votes: node 1 ignored {node1}");
    // Each copy is judged by node 0, and forwarded at most once a second
    // (the 1,000 copies take ~2 s): node 1 hears a handful.
    assert!(repeats0 >= 990, "node 0 judged only {repeats0} of the 1,000 copies");
    assert!(repeats1 < 20, "node 0 relayed the copies: node 1 judged {repeats1}");

    // A sustained flood of the stranger's votes for the current height (each
    // judged by the relay verdict at node 0), while a user of node 0 sends
    // transfers; quiet first.
    let buyer_home = net["buyer_home"].as_str().unwrap().to_string();
    let to = net["nodes"][2]["address"].as_str().unwrap().to_string();
    let quiet = timed_transfers(&buyer_home, &to, &api0, LATENCY_SAMPLES);
    let (flooded, under_attack) = during(
        |stop| {
            runtime.block_on(async {
                let mut swarm =
                    build_swarm(agora_node::identity::libp2p_keypair(&stranger).unwrap(), &NetConfig::default()).unwrap();
                swarm.behaviour_mut().gossipsub.subscribe(&gossip::topic(gossip::TOPIC_CONSENSUS)).unwrap();
                swarm.dial(target.clone()).unwrap();
                let mut sent = 0u64;
                let until = Instant::now() + Duration::from_secs(180);
                let mut tick = tokio::time::interval(Duration::from_millis(2));
                let mut h = height(&api0) + 1;
                while Instant::now() < until && sent < MAX_VOTE_FLOOD && !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    tokio::select! {
                        _ = swarm.select_next_some() => {}
                        _ = tick.tick() => {
                            if sent % 100 == 0 {
                                h = height(&api0) + 1;
                            }
                            let v = Vote { kind: VoteKind::Prevote, height: Height(h), round: sent as u32, block: None };
                            let msg = ConsensusMessage::Vote(Signed::sign(v, &stranger, &chain).unwrap());
                            let data = codec::encode(&msg).unwrap();
                            sent += u64::from(swarm.behaviour_mut().gossipsub.publish(gossip::topic(gossip::TOPIC_CONSENSUS), data).is_ok());
                        }
                    }
                }
                sent
            })
        },
        || timed_transfers(&buyer_home, &to, &api0, LATENCY_SAMPLES),
    );
    eprintln!("sustained stranger-vote flood: {flooded} votes published");
    assert!(flooded >= 100, "the flood published only {flooded} votes");
    report_latency(
        "stranger-vote flood (validly signed votes from a non-validator, every 2 ms)",
        &quiet,
        &under_attack,
    );

    // Honest nodes keep committing.
    let before: Vec<u64> = apis.iter().map(|a| height(a)).collect();
    let until = Instant::now() + Duration::from_secs(120);
    while apis.iter().zip(&before).any(|(a, b)| height(a) < b + 3) {
        assert!(Instant::now() < until, "consensus stalled after the flood: {before:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}
