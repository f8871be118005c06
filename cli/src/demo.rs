//! `agora testnet demo`: the project's main job, end to end over a real
//! network. It starts a 4-node testnet of real `agora node run` processes on
//! loopback (two of them providers with simulated GPUs), shows the offers,
//! submits a job as the buyer through a node that is not a provider, prints
//! the job's output as the provider streams it, shows the settlement and the
//! balances; then an auction round: a provider asks, the buyer bids, the
//! auction clears at one price and the buyer runs a job on the lease it
//! won; and it shuts the testnet down, whatever happened.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use agora_protocol::job::JobSpec;
use agora_protocol::{Address, Amount, LeaseId};
use agora_testnet::local::{self, TestnetFile, UpOptions};
use serde::Serialize;

use crate::client::NodeArgs;
use crate::lease::{Ask, describe, follow, open_lease};
use crate::print_json;
use crate::view::{gpu_kinds, micros};

/// The job the buyer runs when none is given.
pub const DEFAULT_JOB: &[&str] =
    &["sh", "-c", "echo 'hello from an agora lease'; echo \"leased GPUs: $CUDA_VISIBLE_DEVICES\"; sleep 2"];
/// GPUs the demo leases, and for how long it pays up front.
const DEMO_GPUS: u32 = 2;
const DEMO_LEASE_SECS: u64 = 600;
/// How long the demo waits for the providers' offers.
const OFFERS_DEADLINE: Duration = Duration::from_secs(60);

#[derive(Serialize)]
pub struct DemoReport {
    pub chain_id: String,
    pub dir: PathBuf,
    pub offers: serde_json::Value,
    pub buyer: String,
    pub provider: Address,
    pub lease_id: LeaseId,
    pub gpu_ids: Vec<String>,
    pub escrow: Amount,
    pub job_state: agora_protocol::job::JobState,
    pub job_exit_code: i32,
    pub job_output: String,
    pub provider_paid: Amount,
    pub buyer_refunded: Amount,
    pub buyer_balance_before: Amount,
    pub buyer_balance_after: Amount,
    pub provider_balance_before: Amount,
    pub provider_balance_after: Amount,
    /// Transaction fees the buyer paid (to block proposers).
    pub buyer_fees: Amount,
    pub supply_conserved: bool,
    pub auction: AuctionRound,
}

/// The demo's auction round.
#[derive(Serialize)]
pub struct AuctionRound {
    pub class: String,
    pub auction: u64,
    pub clearing_price: Amount,
    pub lease_id: String,
    pub provider: String,
    pub gpu_ids: Vec<String>,
    pub job_output: String,
    pub job_exit_code: i32,
    pub buyer_balance_after: Amount,
    pub supply_conserved: bool,
}

/// The round's orders: one simulated H100 for an hour; the provider's floor
/// and the buyer's maximum clear at their midpoint.
const ROUND_CLASS: &str = "H100-80GB-SIM";
const ROUND_MIN_PRICE: &str = "1";
const ROUND_MAX_PRICE: &str = "2";
/// Blocks an auction must have left for both orders to commit in it.
const ROUND_BLOCKS_NEEDED: u64 = 10;
/// The job run on the auctioned lease.
const ROUND_JOB: &[&str] = &["sh", "-c", "echo \"hello from an auctioned lease on GPUs $CUDA_VISIBLE_DEVICES\""];
/// How long the demo waits for the auction to come round and clear.
const ROUND_DEADLINE: Duration = Duration::from_secs(180);

pub fn run(dir: Option<PathBuf>, json: bool, job: Vec<String>, base_port: u16) -> anyhow::Result<ExitCode> {
    let command = if job.is_empty() { DEFAULT_JOB.iter().map(|s| s.to_string()).collect() } else { job };
    let temp;
    let dir = match dir {
        Some(d) => d,
        None => {
            temp = tempfile::Builder::new().prefix("agora-demo-").tempdir()?;
            temp.path().join("net")
        }
    };
    let say = |line: String| {
        if !json {
            println!("{line}");
        }
    };
    say(format!("starting a testnet of 4 node processes (2 providers with simulated GPUs) in {}", dir.display()));
    let options = UpOptions::new(4, 2, base_port);
    let mut progress = |line: String| say(format!("  {line}"));
    let file = local::up(&std::env::current_exe()?, &dir, &options, &mut progress)?;
    let result = demo(&file, command, json);
    let _ = local::down(&dir);
    say("testnet stopped".into());
    let report = result?;
    if json {
        print_json(&report)?;
    }
    if !report.supply_conserved || !report.auction.supply_conserved {
        anyhow::bail!("the balances do not add up: supply not conserved");
    }
    Ok(ExitCode::SUCCESS)
}

fn demo(file: &TestnetFile, command: Vec<String>, json: bool) -> anyhow::Result<DemoReport> {
    let say = |line: String| {
        if !json {
            println!("{line}");
        }
    };
    // The buyer talks to node 3, which is not a provider: everything it
    // sees and does goes over the network.
    let node = NodeArgs::new(Some(file.nodes[3].api_url.clone()), json);
    let until = Instant::now() + OFFERS_DEADLINE;
    let offers = loop {
        let offers = node.get("/v1/offers")?;
        if offers.as_array().is_some_and(|a| a.len() >= 2) {
            break offers;
        }
        anyhow::ensure!(Instant::now() < until, "the providers' offers did not arrive within {OFFERS_DEADLINE:?}");
        std::thread::sleep(Duration::from_millis(200));
    };
    say("\noffers seen by node3 (agora offers):".into());
    for o in offers.as_array().into_iter().flatten() {
        say(format!(
            "  {}  {}  {}/GPU-hour",
            o["provider"].as_str().unwrap_or("?"),
            gpu_kinds(&o["gpus"], " (simulated)"),
            micros(&o["price_per_gpu_hour"])
        ));
    }
    let keypair = agora_node::keystore::load(&file.buyer_home, "default")?.keypair;
    let buyer = keypair.address().to_string();
    let balance =
        |a: &str| -> anyhow::Result<Amount> { Ok(micros(&node.get(&format!("/v1/accounts/{a}"))?["balance"])) };
    let buyer_before = balance(&buyer)?;
    let nonce =
        |a: &str| -> anyhow::Result<u64> { Ok(node.get(&format!("/v1/accounts/{a}"))?["nonce"].as_u64().unwrap_or(0)) };
    let buyer_nonce_before = nonce(&buyer)?;
    let min_fee: Amount = serde_json::from_value(node.get("/v1/status")?["min_tx_fee"].clone())?;
    say(format!("\nbuyer {buyer} has {buyer_before}; submitting: {}", command.join(" ")));
    let ask = Ask {
        gpus: DEMO_GPUS,
        model: None,
        min_vram_gb: None,
        max_price: None,
        provider: None,
        duration_secs: DEMO_LEASE_SECS,
        spec: JobSpec { command, env: vec![], image: None, egress: false },
    };
    // Every provider is also paid by nobody else during the demo, so its
    // balance before the lease opens is the one to compare with.
    let candidates: Vec<(String, Amount)> = file
        .nodes
        .iter()
        .filter(|n| n.provider)
        .map(|n| Ok((n.address.clone(), balance(&n.address)?)))
        .collect::<anyhow::Result<_>>()?;
    let opened = open_lease(&keypair, &ask, &node)?;
    let provider_before = candidates
        .iter()
        .find(|(a, _)| *a == opened.provider.to_string())
        .map(|(_, b)| *b)
        .ok_or_else(|| anyhow::anyhow!("the lease went to an unknown provider"))?;
    say(format!("lease {} opened at height {}; job output:\n", opened.lease_id, opened.height));
    let finished = follow(&keypair, opened.lease_id, &node, !json)?;
    let s = &finished.lease["status"]["Settled"];
    let (paid, refunded) = (micros(&s["paid"]), micros(&s["refunded"]));
    let buyer_after = balance(&buyer)?;
    let provider_after = balance(&opened.provider.to_string())?;
    // The buyer's transactions each paid the minimum fee (the CLI's default).
    let buyer_fees = Amount(min_fee.0 * (nonce(&buyer)? - buyer_nonce_before));
    let ledger_adds_up = node.get("/v1/supply")?["conserved"].as_bool() == Some(true);
    let supply_conserved = ledger_adds_up
        && paid.0 + refunded.0 == opened.escrow.0
        && buyer_before.0 == buyer_after.0 + paid.0 + buyer_fees.0;
    say(format!(
        "\n{}; lease settled: provider paid {paid}, buyer refunded {refunded} of the {} escrow",
        describe(&finished.state),
        opened.escrow
    ));
    say(format!("buyer    {buyer}: {buyer_before} -> {buyer_after} ({paid} to the provider, {buyer_fees} in fees)"));
    say(format!("provider {}: {provider_before} -> {provider_after}", opened.provider));
    say(format!(
        "supply conserved (every holding on the ledger adds up, the buyer paid exactly price and fees): {}",
        if supply_conserved { "yes" } else { "NO" }
    ));
    let provider_home = &file.nodes.iter().find(|n| n.provider).ok_or_else(|| anyhow::anyhow!("no provider"))?.home;
    let auction = auction_round(&node, &keypair, provider_home, json)?;
    Ok(DemoReport {
        chain_id: file.chain_id.clone(),
        dir: file.dir.clone(),
        offers,
        buyer,
        provider: opened.provider,
        lease_id: opened.lease_id,
        gpu_ids: opened.gpu_ids,
        escrow: opened.escrow,
        job_exit_code: finished.exit_code(),
        job_state: finished.state,
        job_output: String::from_utf8_lossy(&finished.output).into_owned(),
        provider_paid: paid,
        buyer_refunded: refunded,
        buyer_balance_before: buyer_before,
        buyer_balance_after: buyer_after,
        provider_balance_before: provider_before,
        provider_balance_after: provider_after,
        buyer_fees,
        supply_conserved,
        auction,
    })
}

/// A provider asks, the buyer bids, both in one auction; once it clears,
/// the buyer runs a job on the lease it won.
fn auction_round(
    node: &NodeArgs,
    buyer: &agora_protocol::Keypair,
    provider_home: &std::path::Path,
    json: bool,
) -> anyhow::Result<AuctionRound> {
    use agora_protocol::{GpuClass, TxKind};
    let say = |line: String| {
        if !json {
            println!("{line}");
        }
    };
    let class = GpuClass::parse(ROUND_CLASS)?;
    let until = Instant::now() + ROUND_DEADLINE;
    let auctions = || node.get("/v1/market/auctions");
    say(format!(
        "
auction round: the exchange clears each GPU class at one price every {} blocks",
        auctions()?["auction_blocks"]
    ));
    let auction = loop {
        let a = auctions()?;
        let left = a["clears_at_height"].as_u64().unwrap_or(0).saturating_sub(a["height"].as_u64().unwrap_or(0));
        if a["phase"] == "open" && left >= ROUND_BLOCKS_NEEDED {
            break a["auction"].as_u64().unwrap_or(0);
        }
        anyhow::ensure!(Instant::now() < until, "no auction came round within {ROUND_DEADLINE:?}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let provider = agora_node::keystore::load(provider_home, "node")?.keypair;
    let ask = TxKind::PlaceAsk {
        class: class.clone(),
        gpus: 1,
        hours: 1,
        min_price: crate::client::parse_amount(ROUND_MIN_PRICE)?,
    };
    crate::client::submit_and_wait(&provider, ask, node)?;
    say(format!(
        "  provider {} asks: 1 {class} for up to 1 h at no less than {ROUND_MIN_PRICE} AGR/GPU-hour",
        provider.address()
    ));
    let bid = TxKind::PlaceBid {
        class: class.clone(),
        gpus: 1,
        hours: 1,
        max_price: crate::client::parse_amount(ROUND_MAX_PRICE)?,
        split: false,
        start_hours: 0,
    };
    crate::client::submit_and_wait(buyer, bid, node)?;
    let clears_at = auctions()?["clears_at_height"].as_u64().unwrap_or(0);
    say(format!(
        "  buyer bids: 1 {class} for 1 h at no more than {ROUND_MAX_PRICE} AGR/GPU-hour; auction {auction} clears at height {clears_at}"
    ));
    while node.get("/v1/status")?["height"].as_u64().unwrap_or(0) <= clears_at {
        anyhow::ensure!(Instant::now() < until, "auction {auction} did not clear within {ROUND_DEADLINE:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let prices = node.get(&format!("/v1/market/prices?class={class}"))?;
    let result = prices
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["kind"] == "auction" && r["auction"] == auction)
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("auction {auction} has no result"))?;
    let price = micros(&result["price"]);
    let me = buyer.address().to_string();
    let leases = node.get(&format!("/v1/leases?buyer={me}"))?;
    let lease = leases
        .as_array()
        .into_iter()
        .flatten()
        .find(|l| l["status"] == "Open" && l["gpu_model"] == ROUND_CLASS)
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("the bid did not become a lease"))?;
    let lease_id: LeaseId = lease["id"].as_str().unwrap_or_default().parse()?;
    say(format!(
        "  cleared at {price}/GPU-hour: lease {lease_id} with {}; running a job on it (agora lease run):
",
        lease["provider"].as_str().unwrap_or("?")
    ));
    let chain = crate::client::chain_id(node)?;
    let spec =
        JobSpec { command: ROUND_JOB.iter().map(|s| s.to_string()).collect(), env: vec![], image: None, egress: false };
    let started = crate::lease::start_run(buyer, &chain, lease_id, spec, node)?;
    let (state, output) = crate::lease::follow_logs(buyer, &chain, lease_id, node, true, !json)?;
    say(format!(
        "
{}; the lease stays open for the buyer's next job until its hour is up",
        describe(&state)
    ));
    let supply_conserved = node.get("/v1/supply")?["conserved"].as_bool() == Some(true);
    Ok(AuctionRound {
        class: class.to_string(),
        auction,
        clearing_price: price,
        lease_id: lease_id.to_string(),
        provider: lease["provider"].as_str().unwrap_or_default().to_string(),
        gpu_ids: started["gpu_ids"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|g| g.as_str().map(str::to_string))
            .collect(),
        job_output: String::from_utf8_lossy(&output).into_owned(),
        job_exit_code: crate::lease::exit_code(&state),
        buyer_balance_after: micros(&node.get(&format!("/v1/accounts/{me}"))?["balance"]),
        supply_conserved,
    })
}
