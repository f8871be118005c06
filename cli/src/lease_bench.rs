//! `agora bench leases`: leases on a real 4-node testnet, measured as a buyer
//! sees them. (1) Latency: leases submitted one after another through a
//! non-provider node, each timed from the first request to its job running
//! (negotiation, the OpenLease commit, the provider starting the process).
//! (2) Acceptance rate: a burst of signed lease requests sent at once to one
//! provider with 64 simulated GPUs, timed until every countersignature is back.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use agora_protocol::job::JobSpec;
use agora_protocol::{Amount, ChainId, LeaseRequest, Signed, TimestampMs, codec};
use agora_testnet::bench::{Percentiles, percentiles};
use agora_testnet::http;
use agora_testnet::local::{self, UpOptions};
use serde::Serialize;

use crate::client::NodeArgs;
use crate::lease::{Ask, open_lease};

/// GPUs the benchmark's provider declares: enough for the whole burst.
const BENCH_PROVIDER_GPUS: &str = "simulated:64xH100-80GB";
/// Funded buyers the burst's requests are spread over (a provider holds at
/// most a few unopened requests per buyer).
const BURST_BUYERS: usize = 64;

fn burst_key(i: usize) -> agora_protocol::Keypair {
    agora_protocol::Keypair::from_seed_phrase(&format!("agora-bench-lease-buyer-{i}"))
}

/// How long one lease may take to start before the run fails.
const START_DEADLINE: Duration = Duration::from_secs(60);

#[derive(Serialize)]
pub struct LeaseBenchReport {
    /// How the provider ran the jobs.
    pub runner: String,
    /// From the first lease request to the job running on the provider.
    pub submit_to_running: Percentiles,
    pub burst_requests: usize,
    pub burst_accepted: usize,
    pub burst_threads: usize,
    pub burst_wall_ms: f64,
    /// Lease requests one provider accepted (countersigned) per second.
    pub accepted_per_sec: f64,
    /// Per-request round trip during the burst (buyer's node → provider → back).
    pub accept_round_trip: Percentiles,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

pub fn run(
    dir: &Path,
    samples: usize,
    burst: usize,
    threads: usize,
    base_port: u16,
    runner: Option<agora_node::config::Runner>,
) -> anyhow::Result<LeaseBenchReport> {
    let options = UpOptions {
        provider_gpus: BENCH_PROVIDER_GPUS.into(),
        runner,
        funded: (0..BURST_BUYERS).map(|i| burst_key(i).address()).collect(),
        ..UpOptions::new(4, 1, base_port)
    };
    let mut progress = |line: String| eprintln!("{line}");
    let file = local::up(&std::env::current_exe()?, dir, &options, &mut progress)?;
    let runner = format!("{:?}", local::testnet_runner(runner)).to_lowercase();
    let result = measure(&file, samples, burst, threads).map(|r| LeaseBenchReport { runner, ..r });
    let _ = local::down(dir);
    result
}

fn measure(
    file: &local::TestnetFile,
    samples: usize,
    burst: usize,
    threads: usize,
) -> anyhow::Result<LeaseBenchReport> {
    let api = file.nodes[3].api_url.clone();
    let node = NodeArgs::new(Some(api.clone()), true);
    let until = Instant::now() + START_DEADLINE;
    while node.get("/v1/offers")?.as_array().is_none_or(|a| a.is_empty()) {
        anyhow::ensure!(Instant::now() < until, "the provider's offer never arrived");
        std::thread::sleep(Duration::from_millis(100));
    }
    let keypair = agora_node::keystore::load(&file.buyer_home, "default")?.keypair;
    let chain = ChainId::new(&file.chain_id)?;

    eprintln!("timing {samples} leases from request to running job");
    let mut latencies = Vec::new();
    for _ in 0..samples {
        let ask = Ask {
            gpus: 1,
            model: None,
            min_vram_gb: None,
            max_price: None,
            provider: None,
            duration_secs: 60,
            spec: JobSpec { command: vec!["true".into()], env: vec![], image: None, egress: false },
        };
        let started = Instant::now();
        let opened = open_lease(&keypair, &ask, &node)?;
        // Running (or already finished) as the provider reports it.
        loop {
            let req = Signed::sign(
                agora_protocol::job::LogsRequest {
                    lease_id: opened.lease_id,
                    offset: u64::MAX,
                    issued_at_ms: TimestampMs(now_ms()),
                },
                &keypair,
                &chain,
            )?;
            let body = serde_json::json!({ "request": hex::encode(codec::encode(&req)?) }).to_string();
            let reply = http::post(&api, &format!("/v1/leases/{}/logs", opened.lease_id), &body)?;
            let state = reply.json()?["state"].clone();
            if reply.status == 200 && state != "Waiting" {
                break;
            }
            anyhow::ensure!(started.elapsed() < START_DEADLINE, "lease {} never started", opened.lease_id);
            std::thread::sleep(Duration::from_millis(10));
        }
        latencies.push(started.elapsed().as_secs_f64() * 1000.0);
    }

    eprintln!("sending {burst} lease requests at once from {threads} threads");
    let provider = file.nodes[0].address.parse()?;
    let spec = JobSpec { command: vec!["true".into()], env: vec![], image: None, egress: false };
    let spec_hex = hex::encode(codec::encode(&spec)?);
    let bodies: Vec<String> = (0..burst)
        .map(|i| {
            let body = LeaseRequest {
                provider,
                offer_seq: 0,
                gpu_model: "H100".into(),
                gpus: 1,
                price_per_gpu_hour: Amount::agr(2),
                duration_secs: 60,
                job_spec_hash: spec.hash()?,
                nonce: 1_000_000 + i as u64,
                expires_at_ms: TimestampMs(now_ms() + 120_000),
            };
            let request = Signed::sign(body, &burst_key(i % BURST_BUYERS), &chain)?;
            Ok(serde_json::json!({ "request": hex::encode(codec::encode(&request)?), "spec": spec_hex }).to_string())
        })
        .collect::<anyhow::Result<_>>()?;
    let started = Instant::now();
    let chunks: Vec<Vec<String>> = bodies.chunks(burst.div_ceil(threads)).map(|c| c.to_vec()).collect();
    let handles: Vec<_> = chunks
        .into_iter()
        .map(|chunk| {
            let api = api.clone();
            std::thread::spawn(move || {
                chunk
                    .iter()
                    .map(|b| {
                        let t = Instant::now();
                        let ok = http::post(&api, "/v1/leases/propose", b).is_ok_and(|r| r.status == 200);
                        (ok, t.elapsed().as_secs_f64() * 1000.0)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let results: Vec<(bool, f64)> = handles.into_iter().flat_map(|h| h.join().unwrap_or_default()).collect();
    let wall = started.elapsed().as_secs_f64();
    let accepted = results.iter().filter(|(ok, _)| *ok).count();
    Ok(LeaseBenchReport {
        runner: String::new(),
        submit_to_running: percentiles(latencies),
        burst_requests: burst,
        burst_accepted: accepted,
        burst_threads: threads,
        burst_wall_ms: wall * 1000.0,
        accepted_per_sec: accepted as f64 / wall.max(1e-9),
        accept_round_trip: percentiles(results.iter().map(|(_, ms)| *ms).collect()),
    })
}
