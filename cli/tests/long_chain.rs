//! A node joins a long chain in seconds (issue 14, item 3), behind
//! `AGORA_LONG_CHAIN_TESTS=1`: a real 4-node testnet commits 10,000 blocks
//! (a 5 ms pause: a few minutes on a release build), then a new node holding
//! only the genesis starts with `--state-sync`, installs the newest certified
//! snapshot and reaches the tip without replaying the chain; it holds no
//! block before its snapshot and agrees with the testnet on the blocks after.
//! Run it alone, on a release build:
//! `AGORA_LONG_CHAIN_TESTS=1 cargo nextest run --release -p agora-cli --test long_chain`.

mod common;
use common::*;

use std::time::{Duration, Instant};

use agora_testnet::http;

/// The height the chain reaches before the node joins.
const LONG_CHAIN_BLOCKS: u64 = 10_000;
/// How long the join may take, from process start to the tip (generous: the
/// machine is shared; it takes well under a second here).
const JOIN_DEADLINE: Duration = Duration::from_secs(60);

#[test]
fn a_node_joins_a_chain_of_ten_thousand_blocks_by_state_sync_in_seconds() {
    if std::env::var_os("AGORA_LONG_CHAIN_TESTS").is_none() {
        eprintln!("AGORA_LONG_CHAIN_TESTS is not set: the 10,000-block join is skipped");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("net");
    let _down = Down(dir.clone());
    let net = testnet_up(&dir, 0, test_ports(2), &["--commit-pause-ms", "5"]);
    let api = api_urls(&net);
    let started = Instant::now();
    wait_until("the chain to reach 10,000 blocks", Duration::from_secs(1_800), || height(&api[0]) >= LONG_CHAIN_BLOCKS);
    eprintln!("{LONG_CHAIN_BLOCKS} blocks in {:?}", started.elapsed());

    let tip = height(&api[0]);
    let joining = Instant::now();
    let bootstrap = [
        "--bootstrap",
        net["nodes"][0]["p2p"].as_str().unwrap(),
        "--bootstrap",
        net["nodes"][1]["p2p"].as_str().unwrap(),
    ];
    let (_joined, joiner_api) =
        state_sync_node(tmp.path(), "joiner", &dir.join("node0/genesis.json"), &api[0], 8, &bootstrap);
    wait_until("the joiner to reach the tip", JOIN_DEADLINE, || height(&joiner_api) >= tip);
    eprintln!("joined at the tip {tip} in {:?} from its init (home, keys) and start", joining.elapsed());
    let earliest = status(&joiner_api).unwrap()["earliest_height"].as_u64().unwrap();
    assert!(earliest >= LONG_CHAIN_BLOCKS - 100, "it joined from a recent snapshot, not the genesis: {earliest}");
    assert_eq!(http::get(&joiner_api, "/v1/blocks/1").unwrap().status, 404, "it replayed from the genesis");
    let now = height(&api[0]);
    wait_until("the joiner to follow", Duration::from_secs(60), || height(&joiner_api) >= now + 10);
    for h in [earliest, now] {
        assert_eq!(block_hash(&joiner_api, h), block_hash(&api[0], h), "the joiner disagrees at height {h}");
    }
}
