//! `agora bench liveness`: how long a dead provider goes unpunished. Each
//! run starts a fresh 4-node testnet (3 providers), SIGKILLs one provider and
//! times kill → the slash committed (seen on a surviving node), in
//! milliseconds and blocks; also reports a heartbeat's size on the wire.

use std::path::Path;
use std::time::{Duration, Instant};

use agora_protocol::{Hash, Heartbeat, Height, Keypair, Signed, codec};
use agora_testnet::http;
use agora_testnet::local::{self, UpOptions};
use serde::Serialize;

/// How long one run may take to see the slash.
const DETECTION_DEADLINE: Duration = Duration::from_secs(120);

#[derive(Serialize)]
pub struct LivenessBenchReport {
    pub runs: usize,
    pub window_blocks: u64,
    pub detection_ms: Vec<u64>,
    pub detection_ms_p50: u64,
    pub detection_ms_max: u64,
    /// Blocks from the height at the kill to the block holding the slash.
    pub detection_blocks: Vec<u64>,
    pub detection_blocks_max: u64,
    /// A signed heartbeat's encoding, before gossipsub framing.
    pub heartbeat_bytes: usize,
    pub heartbeats_per_sec: f64,
}

fn providers(api: &str) -> Vec<serde_json::Value> {
    http::get_list(api, "/v1/providers")
}

fn height(api: &str) -> u64 {
    local::node_height(api).unwrap_or(0)
}

pub fn run(root: &Path, runs: usize, base_port: u16) -> anyhow::Result<LivenessBenchReport> {
    let mut detection_ms = Vec::new();
    let mut detection_blocks = Vec::new();
    let params = agora_ledger::Params::default();
    for r in 0..runs {
        let dir = root.join(format!("run{r}"));
        let mut progress = |line: String| eprintln!("run {r}: {line}");
        let file = local::up(&std::env::current_exe()?, &dir, &UpOptions::new(4, 3, base_port), &mut progress)?;
        let result = (|| -> anyhow::Result<(u64, u64)> {
            let watcher = file.nodes[3].api_url.clone();
            let until = Instant::now() + DETECTION_DEADLINE;
            while providers(&watcher).iter().filter(|p| p["status"] == "active").count() < 3 {
                anyhow::ensure!(Instant::now() < until, "providers never registered");
                std::thread::sleep(Duration::from_millis(100));
            }
            let victim = &file.nodes[r % 3];
            let h0 = height(&watcher);
            let killed = Instant::now();
            local::signal(&dir, victim.index, "kill")?;
            loop {
                let p = providers(&watcher).into_iter().find(|p| p["address"] == victim.address.as_str());
                if let Some(p) = p.filter(|p| p["status"] == "jailed") {
                    let slashed_at = p["jailed_until"].as_u64().unwrap_or(0).saturating_sub(params.jail_blocks);
                    return Ok((killed.elapsed().as_millis() as u64, slashed_at.saturating_sub(h0)));
                }
                anyhow::ensure!(
                    Instant::now() < until,
                    "the killed provider was not slashed in {DETECTION_DEADLINE:?}"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        })();
        let _ = local::down(&dir);
        let (ms, blocks) = result?;
        eprintln!("run {r}: slashed {ms} ms / {blocks} blocks after the kill");
        detection_ms.push(ms);
        detection_blocks.push(blocks);
    }
    let mut sorted = detection_ms.clone();
    sorted.sort_unstable();
    let key = Keypair::from_seed_phrase("bench");
    let chain = agora_protocol::ChainId::new(local::TESTNET_CHAIN_ID)?;
    let hb = Signed::sign(
        Heartbeat { seq: u64::MAX, height: Height(u64::MAX), block_hash: Hash([0xff; 32]) },
        &key,
        &chain,
    )?;
    Ok(LivenessBenchReport {
        runs,
        window_blocks: params.downtime_window_blocks,
        detection_ms_p50: sorted.get(sorted.len() / 2).copied().unwrap_or(0),
        detection_ms_max: sorted.last().copied().unwrap_or(0),
        detection_blocks_max: detection_blocks.iter().copied().max().unwrap_or(0),
        detection_ms,
        detection_blocks,
        heartbeat_bytes: codec::encode(&hb)?.len(),
        heartbeats_per_sec: 1.0 / agora_node::HEARTBEAT_INTERVAL.as_secs_f64(),
    })
}
