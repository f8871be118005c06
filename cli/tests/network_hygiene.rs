//! Connection-level hostility on a real 4-node testnet. A peer that speaks
//! identify and gossipsub but not ping (as a js-libp2p node may) stays
//! connected and learns the node's agent string; a flood of 300 half-open
//! TCP connections to one node is capped by its connection limits, floods of
//! sync requests and of liveness probes are answered only within the peer's
//! quotas (sync off the consensus loop), and a normal transfer still commits within 10 blocks. Then the
//! API: clients that trickle their request bodies take every slot of the
//! transaction endpoint; status still answers, the overflow is refused at
//! once (503), the slow clients are cut off by the timeout (504), and a
//! transfer goes through.

mod common;
use common::*;

use std::time::{Duration, Instant};

use agora_node::config::NetConfig;
use agora_node::net::gossip;
use agora_protocol::Keypair;
use futures::StreamExt;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{identify, noise, tcp, yamux};

/// A foreign peer's stack: identify and gossipsub, no ping.
#[derive(NetworkBehaviour)]
struct NoPing {
    identify: identify::Behaviour,
    gossipsub: libp2p::gossipsub::Behaviour,
}

/// Liveness probes one rogue peer sends at the provider.
const PROBE_FLOOD: u32 = 300;
/// Sync requests in the flood (bounded).
const SYNC_FLOOD: u32 = 200;

/// Connections half-opened in the flood (bounded).
const FLOOD_CONNECTIONS: usize = 300;
/// A user's transfers timed quiet and during each flood.
const LATENCY_SAMPLES: usize = 10;
/// Requests one flood sends at most, however long the user's transfers take.
const MAX_FLOOD: u32 = 20_000;
/// How long a trickling API client may wait for its 504.
const COSTLY_TIMEOUT_SLACK: Duration = Duration::from_secs(30);

#[test]
fn a_peer_without_ping_stays_and_a_connection_flood_does_not_stall_the_chain() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("net");
    let base = common::test_ports(7);
    let _down = Down(dir.clone());
    let net = testnet_up(&dir, 1, base, &["--commit-pause-ms", "50"]);
    let api = api_urls(&net);
    let target: libp2p::Multiaddr = net["nodes"][0]["p2p"].as_str().unwrap().parse().unwrap();
    let target_peer = match target.iter().last() {
        Some(libp2p::multiaddr::Protocol::P2p(p)) => p,
        _ => panic!("no peer id in {target}"),
    };

    // The ping-less peer: connected for three ping intervals, and told who it talks to.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (agent, still_connected) = runtime.block_on(async {
        let key = agora_node::identity::libp2p_keypair(&Keypair::generate().unwrap()).unwrap();
        let mut swarm = libp2p::SwarmBuilder::with_existing_identity(key)
            .with_tokio()
            .with_tcp(tcp::Config::default(), noise::Config::new, yamux::Config::default)
            .unwrap()
            .with_behaviour(|key| NoPing {
                identify: identify::Behaviour::new(identify::Config::new("/js-like/1".into(), key.public())),
                gossipsub: gossip::behaviour(NetConfig::default().gossip_mesh).unwrap(),
            })
            .unwrap()
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
            .build();
        swarm.behaviour_mut().gossipsub.subscribe(&gossip::topic(gossip::TOPIC_OFFERS)).unwrap();
        swarm.dial(target.clone()).unwrap();
        let mut agent = None;
        let mut closed = false;
        let until = Instant::now() + agora_node::net::PING_INTERVAL * 3 + Duration::from_secs(5);
        while Instant::now() < until {
            let event = tokio::time::timeout(Duration::from_millis(200), swarm.select_next_some()).await;
            match event {
                Ok(SwarmEvent::Behaviour(NoPingEvent::Identify(identify::Event::Received {
                    peer_id, info, ..
                }))) if peer_id == target_peer => agent = Some(info.agent_version),
                Ok(SwarmEvent::ConnectionClosed { peer_id, num_established: 0, .. }) if peer_id == target_peer => {
                    closed = true;
                }
                _ => {}
            }
        }
        (agent, !closed && swarm.is_connected(&target_peer))
    });
    assert!(still_connected, "node 0 dropped a peer that does not speak ping");
    let agent = agent.expect("identify told the peer nothing");
    assert!(agent.starts_with("agora/"), "agent string {agent:?}");

    // A normal user of node 0 (the node under attack), quiet first; each
    // flood below goes on until the same number of its transfers committed.
    let buyer_home = net["buyer_home"].as_str().unwrap().to_string();
    let to = net["nodes"][2]["address"].as_str().unwrap().to_string();
    let user = |api: &str| timed_transfers(&buyer_home, &to, api, LATENCY_SAMPLES);
    let quiet = user(&api[0]);

    // A sync flood: requests for 16 blocks each, as fast as one peer can
    // send them (at least 200, and on while the user's transfers go through).
    let ((answered, empty), under_attack) = during(
        |stop| {
            runtime.block_on(async {
                let rogue = agora_node::identity::libp2p_keypair(&Keypair::generate().unwrap()).unwrap();
                let mut swarm = agora_node::net::build_swarm(rogue, &NetConfig::default()).unwrap();
                swarm.dial(target.clone()).unwrap();
                let (mut answered, mut empty, mut sent) = (0u32, 0u32, 0u32);
                let until = Instant::now() + Duration::from_secs(120);
                let more = |done: u32| done < SYNC_FLOOD || !stop.load(std::sync::atomic::Ordering::Relaxed);
                while Instant::now() < until && more(answered + empty) {
                    if sent < MAX_FLOOD && sent < answered + empty + 16 && swarm.is_connected(&target_peer) {
                        let request = agora_protocol::sync::SyncRequest { have: agora_protocol::Height(0), max: 16 };
                        swarm.behaviour_mut().sync.send_request(&target_peer, request);
                        sent += 1;
                    }
                    let event = tokio::time::timeout(Duration::from_millis(5), swarm.select_next_some()).await;
                    if let Ok(SwarmEvent::Behaviour(agora_node::net::BehaviourEvent::Sync(
                        libp2p::request_response::Event::Message {
                            message: libp2p::request_response::Message::Response { response, .. },
                            ..
                        },
                    ))) = event
                    {
                        if response.blocks.is_empty() { empty += 1 } else { answered += 1 }
                    }
                }
                (answered, empty)
            })
        },
        || user(&api[0]),
    );
    eprintln!("sync flood: {answered} answered with blocks, {empty} refused");
    report_latency("sync flood (one peer, 16-block requests nonstop)", &quiet, &under_attack);
    assert!(answered >= 1, "a peer within its quota is served");
    assert!(empty > 0, "a flood is refused past the quota");
    let metrics = agora_testnet::http::get(&api[0], "/metrics").unwrap().body;
    assert!(metrics.lines().any(|l| l.starts_with("agora_sync_refused_total") && !l.ends_with(" 0")), "counted");

    // A probe flood at the provider (node 0): liveness probes as fast as
    // one peer can send them (at least 300, on while the user's transfers go
    // through). Answered from its latest heartbeat within the peer's quota
    // (50 a second); the rest are refused at once as busy.
    let ((alive, busy), under_attack) = during(
        |stop| {
            runtime.block_on(async {
                let rogue = agora_node::identity::libp2p_keypair(&Keypair::generate().unwrap()).unwrap();
                let mut swarm = agora_node::net::build_swarm(rogue, &NetConfig::default()).unwrap();
                swarm.dial(target.clone()).unwrap();
                let (mut sent, mut alive, mut busy) = (0u32, 0u32, 0u32);
                let until = Instant::now() + Duration::from_secs(120);
                let more = |done: u32| done < PROBE_FLOOD || !stop.load(std::sync::atomic::Ordering::Relaxed);
                while Instant::now() < until && more(alive + busy) {
                    if sent < MAX_FLOOD && sent < alive + busy + 32 && swarm.is_connected(&target_peer) {
                        swarm.behaviour_mut().lease.send_request(&target_peer, agora_protocol::job::LeaseRpc::Probe);
                        sent += 1;
                    }
                    let event = tokio::time::timeout(Duration::from_millis(1), swarm.select_next_some()).await;
                    if let Ok(SwarmEvent::Behaviour(agora_node::net::BehaviourEvent::Lease(
                        libp2p::request_response::Event::Message {
                            message: libp2p::request_response::Message::Response { response, .. },
                            ..
                        },
                    ))) = event
                    {
                        match response {
                            agora_protocol::job::LeaseRpcReply::Alive(_) => alive += 1,
                            agora_protocol::job::LeaseRpcReply::Refused(r)
                                if r.code == agora_protocol::job::RefusalCode::Busy =>
                            {
                                busy += 1
                            }
                            other => panic!("unexpected answer to a probe: {other:?}"),
                        }
                    }
                }
                (alive, busy)
            })
        },
        || user(&api[0]),
    );
    eprintln!("probe flood: {alive} answered, {busy} refused as busy");
    report_latency("probe flood (one peer, lease-protocol probes nonstop)", &quiet, &under_attack);
    assert!(alive >= 1, "probes within the quota are answered");
    assert!(busy > 0, "a probe flood is refused past the quota");

    // The flood: half-open TCP connections that never finish a handshake.
    let addr = format!("127.0.0.1:{base}");
    let flood: Vec<std::net::TcpStream> =
        (0..FLOOD_CONNECTIONS).filter_map(|_| std::net::TcpStream::connect(&addr).ok()).collect();
    eprintln!("{} half-open connections to node 0", flood.len());
    let under_attack = user(&api[0]);
    report_latency("connection flood (300 half-open TCP connections held)", &quiet, &under_attack);
    // Honest peers stay connected through it.
    let peers = status(&api[0]).unwrap()["peers"].as_u64().unwrap();
    assert!(peers >= 3, "node 0 lost its peers during the flood ({peers})");
    drop(flood);

    // The API: clients that send a transaction request's headers and never
    // its body. From one address, only its share of the costly slots is
    // held and the rest are refused at once, while a user elsewhere goes on;
    // from four addresses every slot is held: cheap reads still answer at
    // once, the overflow is refused at once (503, code "unavailable"), the
    // slow ones are cut off by the timeout, and a transfer goes through after.
    use std::io::{Read, Write};
    let api_addr = api[0].trim_start_matches("http://").to_string();
    let trickle = |from: &str| {
        let mut c = runtime.block_on(async {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
            socket.connect(api_addr.parse().unwrap()).await.unwrap().into_std().unwrap()
        });
        c.set_nonblocking(false).unwrap();
        let head = format!(
            "POST /v1/tx HTTP/1.1\r\nHost: {api_addr}\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n{{"
        );
        c.write_all(head.as_bytes()).unwrap();
        c
    };
    let answer_of = |mut c: &std::net::TcpStream, wait: Duration| {
        c.set_read_timeout(Some(wait)).unwrap();
        let mut buf = [0u8; 64];
        let n = c.read(&mut buf).unwrap_or(0);
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let share = agora_node::api_guard::MAX_COSTLY_PER_CLIENT;
    let (refused, under_attack) = during(
        |_| {
            let one: Vec<std::net::TcpStream> =
                (0..agora_node::api::MAX_CONCURRENT_COSTLY).map(|_| trickle("127.0.0.2")).collect();
            // Refusals come at once; whichever requests got the slots wait.
            std::thread::sleep(Duration::from_secs(1));
            let (refused, held): (Vec<_>, Vec<_>) =
                one.iter().partition(|c| answer_of(c, Duration::from_millis(100)).starts_with("HTTP/1.1 503"));
            assert_eq!(held.len(), share, "one address held other than its share");
            for c in held {
                assert!(answer_of(c, COSTLY_TIMEOUT_SLACK).starts_with("HTTP/1.1 504"), "a trickler was not cut off");
            }
            refused.len()
        },
        || user(&api[0]),
    );
    assert_eq!(refused, agora_node::api::MAX_CONCURRENT_COSTLY - share, "one address held more than its share");
    report_latency(
        "API slots held from one address (32 trickling clients: 8 held until the 10 s timeout, 24 refused)",
        &quiet,
        &under_attack,
    );

    let slow: Vec<std::net::TcpStream> =
        (0..agora_node::api::MAX_CONCURRENT_COSTLY).map(|i| trickle(&format!("127.0.0.{}", 2 + i / share))).collect();
    std::thread::sleep(Duration::from_millis(500));
    let started = std::time::Instant::now();
    assert!(status(&api[0]).is_some(), "status answers while the costly slots are held");
    let shed = agora_testnet::http::post(&api[0], "/v1/tx", "{\"tx\": \"00\"}").unwrap();
    assert_eq!(shed.status, 503, "{}", shed.body);
    assert_eq!(shed.json().unwrap()["code"], "unavailable");
    assert!(started.elapsed() < Duration::from_secs(3), "refused at once, not queued: {:?}", started.elapsed());
    // The slow clients are answered 504 when their time is up.
    let cut = slow.iter().filter(|c| answer_of(c, COSTLY_TIMEOUT_SLACK).starts_with("HTTP/1.1 504")).count();
    assert_eq!(cut, agora_node::api::MAX_CONCURRENT_COSTLY, "every trickling client was cut off");
    let after = user(&api[0]);
    report_latency("after the API slots were cut off", &quiet, &after);
}
