//! Commands that talk to a node's HTTP API (`--node URL`, default
//! `$AGORA_NODE` or http://127.0.0.1:7600): status, balance, and transactions
//! signed here with a key under `--home` (the node never sees a private key).

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use agora_protocol::{Address, Amount, ChainId, Signed, Transaction, TxKind, codec};
use agora_testnet::http;
use anyhow::{Context, anyhow, bail};
use clap::Args;

use crate::print_json;
use crate::view::{gpu_kinds, micros, text};

/// The API a command talks to when no --node or AGORA_NODE is given.
const DEFAULT_NODE: &str = "http://127.0.0.1:7600";
/// How long a command waits for its transaction to be committed.
const COMMIT_WAIT: Duration = Duration::from_secs(120);

#[derive(Args, Clone)]
pub struct NodeArgs {
    /// Node API URL [env: AGORA_NODE] [default: http://127.0.0.1:7600]
    #[arg(long, global = true)]
    node: Option<String>,
    /// Print JSON
    #[arg(long, global = true)]
    pub json: bool,
    /// Fee to pay for a transaction, in AGR (default: the chain's minimum);
    /// a higher fee goes first when blocks are full
    #[arg(long, global = true, value_parser = parse_amount)]
    pub fee: Option<Amount>,
}

impl NodeArgs {
    pub fn new(node: Option<String>, json: bool) -> NodeArgs {
        NodeArgs { node, json, fee: None }
    }

    pub fn url(&self) -> String {
        self.node.clone().or_else(|| std::env::var("AGORA_NODE").ok()).unwrap_or_else(|| DEFAULT_NODE.into())
    }

    pub fn get(&self, path: &str) -> anyhow::Result<serde_json::Value> {
        let reply = http::get(&self.url(), path)?;
        let body = reply.json()?;
        if reply.status >= 400 {
            bail!("{}", body["error"].as_str().unwrap_or("request failed"));
        }
        Ok(body)
    }
}

pub fn status(args: NodeArgs) -> anyhow::Result<ExitCode> {
    let s = args.get("/v1/status")?;
    if args.json {
        print_json(&s)?;
    } else {
        for key in [
            "moniker",
            "chain_id",
            "height",
            "latest_block_hash",
            "peers",
            "syncing",
            "validator",
            "role",
            "gpu_detection",
            "offers",
            "mempool",
            "peer_id",
            "address",
        ] {
            println!("{key:<18} {}", s[key].as_str().map(str::to_string).unwrap_or_else(|| s[key].to_string()));
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn key_address(home: &Path, key: &str) -> anyhow::Result<Address> {
    Ok(agora_node::keystore::load(home, key)?.address())
}

pub fn balance(
    home: &Path,
    address: Option<String>,
    key: &str,
    prove: &crate::prove::ProveArgs,
    args: NodeArgs,
) -> anyhow::Result<ExitCode> {
    let address = match address {
        Some(a) => a.parse::<Address>()?,
        None => key_address(home, key)?,
    };
    if prove.prove {
        let key = agora_ledger::tree::StateKey::Account(address);
        let proven = crate::prove::fetch(home, prove, &args, "account", &address.to_string(), &key)?;
        let v = &proven.v;
        // An account never seen is an empty one (the ledger stores none).
        let account: agora_ledger::Account =
            v.value.as_deref().map(agora_ledger::light::decode_value).transpose()?.unwrap_or_default();
        if args.json {
            print_json(&serde_json::json!({
                "address": address, "balance": account.balance, "stake": account.stake,
                "unbonding": account.unbonding, "nonce": account.nonce, "verified_height": v.height.0,
                "trust": proven.trust_json(),
            }))?;
        } else {
            println!("address   {address}");
            println!("balance   {}", account.balance);
            println!("stake     {}", account.stake);
            println!("unbonding {}", account.unbonding);
            println!("{}", crate::prove::verified_line(&proven));
        }
        return Ok(ExitCode::SUCCESS);
    }
    let a = args.get(&format!("/v1/accounts/{address}"))?;
    if args.json {
        print_json(&a)?;
    } else {
        println!("address   {address}");
        println!("balance   {}", micros(&a["balance"]));
        println!("stake     {}", micros(&a["stake"]));
        println!("unbonding {}", micros(&a["unbonding"]));
    }
    Ok(ExitCode::SUCCESS)
}

/// Signs `kind` with the key, submits it, and waits until it is committed.
pub fn send(home: &Path, key: &str, kind: TxKind, args: NodeArgs) -> anyhow::Result<ExitCode> {
    let keypair = agora_node::keystore::load(home, key)?.keypair;
    let (hash, height) = submit_and_wait(&keypair, kind, &args)?;
    if args.json {
        print_json(&serde_json::json!({ "hash": hash, "height": height }))?;
    } else {
        println!("committed at height {height} (tx {hash})");
    }
    Ok(ExitCode::SUCCESS)
}

/// Heartbeats this recent (in blocks) show a provider is back.
const UNJAIL_HEARTBEAT_BLOCKS: u64 = 10;

/// `agora unjail`: only once the node sees the provider's heartbeats again,
/// so a provider that is still down does not walk back into leases.
pub fn unjail(home: &Path, key: &str, args: NodeArgs) -> anyhow::Result<ExitCode> {
    let keypair = agora_node::keystore::load(home, key)?.keypair;
    let me = keypair.address().to_string();
    let providers = args.get("/v1/providers")?;
    let record = providers
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["address"] == me.as_str())
        .ok_or_else(|| anyhow!("{me} is not a registered provider"))?;
    if record["status"] != "jailed" {
        bail!("{me} is not jailed (status: {})", record["status"].as_str().unwrap_or("?"));
    }
    let height = args.get("/v1/status")?["height"].as_u64().unwrap_or(0);
    let until = record["jailed_until"].as_u64().unwrap_or(0);
    if height < until {
        bail!("still jailed until height {until} (now {height}); try again in {} blocks", until - height);
    }
    let fresh =
        record["last_heartbeat_height"].as_u64().is_some_and(|h| height.saturating_sub(h) <= UNJAIL_HEARTBEAT_BLOCKS);
    if !fresh {
        bail!("no recent heartbeat from {me}: start its node and let it catch up before unjailing");
    }
    let (hash, height) = submit_and_wait(&keypair, TxKind::Unjail, &args)?;
    if args.json {
        print_json(&serde_json::json!({ "hash": hash, "height": height }))?;
    } else {
        println!("unjailed at height {height}: {me} advertises and takes leases again");
    }
    Ok(ExitCode::SUCCESS)
}

/// The chain id the node runs.
pub fn chain_id(args: &NodeArgs) -> anyhow::Result<ChainId> {
    let status = args.get("/v1/status")?;
    Ok(ChainId::new(status["chain_id"].as_str().ok_or_else(|| anyhow!("node status lacks a chain id"))?)?)
}

/// Signs `kind` at the account's next nonce, submits it and waits until it
/// is committed; returns the transaction hash and the height.
pub fn submit_and_wait(
    keypair: &agora_protocol::Keypair,
    kind: TxKind,
    args: &NodeArgs,
) -> anyhow::Result<(String, u64)> {
    let address = keypair.address();
    let status = args.get("/v1/status")?;
    let chain = ChainId::new(status["chain_id"].as_str().ok_or_else(|| anyhow!("node status lacks a chain id"))?)?;
    let min_fee: Amount = serde_json::from_value(status["min_tx_fee"].clone())
        .map_err(|_| anyhow!("node status lacks the chain's minimum fee (an older node?)"))?;
    let fee = args.fee.unwrap_or(min_fee);
    if fee < min_fee {
        bail!("--fee {fee} is below the chain's minimum fee of {min_fee}");
    }
    let nonce = args.get(&format!("/v1/accounts/{address}"))?["nonce"].as_u64().unwrap_or(0);
    let tx = Signed::sign(Transaction { nonce, fee, kind }, keypair, &chain)?;
    let body = serde_json::json!({ "tx": hex::encode(codec::encode(&tx)?) }).to_string();
    let answer = post_with_retry(args, &body)?;
    let hash = answer["hash"].as_str().unwrap_or_default().to_string();
    let started = Instant::now();
    let spinner = std::io::IsTerminal::is_terminal(&std::io::stderr()) && !args.json;
    let mut frame = 0usize;
    loop {
        let account = args.get(&format!("/v1/accounts/{address}"))?;
        if spinner {
            const FRAMES: [char; 4] = ['|', '/', '-', '\\'];
            frame += 1;
            let secs = started.elapsed().as_secs();
            eprint!("\r{} waiting for the transaction to be committed ({secs}s)", FRAMES[frame % FRAMES.len()]);
        }
        if account["nonce"].as_u64().unwrap_or(0) > nonce {
            if spinner {
                eprint!("\r\x1b[2K");
            }
            return Ok((hash, account["height"].as_u64().unwrap_or(0)));
        }
        if started.elapsed() > COMMIT_WAIT {
            if spinner {
                eprintln!();
            }
            bail!("transaction {hash} not committed after {}s; it may still be pending", COMMIT_WAIT.as_secs());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Posts a transaction; while the node answers 503 (its mempool is past
/// what it takes from clients, or full, of transactions paying at least as
/// much; or it is busy) tries again after the node's `retry_after_ms` hint,
/// for up to `SUBMIT_RETRY`, saying so, since pools drain block by block.
fn post_with_retry(args: &NodeArgs, body: &str) -> anyhow::Result<serde_json::Value> {
    let started = Instant::now();
    let mut told = false;
    loop {
        let reply = http::post(&args.url(), "/v1/tx", body)?;
        let answer = reply.json()?;
        if reply.status < 400 {
            if told {
                eprintln!();
            }
            return Ok(answer);
        }
        let error = answer["error"].as_str().unwrap_or("the node refused the transaction");
        if reply.status != 503 || started.elapsed() > SUBMIT_RETRY {
            if told {
                eprintln!();
            }
            bail!("{error}");
        }
        if !told && !args.json {
            eprint!("{error}; retrying for up to {}s (a higher --fee goes first)", SUBMIT_RETRY.as_secs());
            told = true;
        }
        // The node says when its pool will have room; without a hint, half a second.
        let hint = answer["retry_after_ms"].as_u64().unwrap_or(500).clamp(100, 5_000);
        std::thread::sleep(Duration::from_millis(hint));
    }
}

/// How long a refused-for-load transaction is offered again.
const SUBMIT_RETRY: Duration = Duration::from_secs(60);

/// What `agora offers` filters on.
#[derive(Args)]
pub struct OfferArgs {
    /// GPU model, matched case-insensitively as a substring (h100 matches "NVIDIA H100 80GB HBM3")
    #[arg(long)]
    model: Option<String>,
    /// Minimum VRAM per GPU, in GB
    #[arg(long, value_name = "GB")]
    min_vram: Option<u32>,
    /// At least this many GPUs of one kind
    #[arg(long)]
    gpus: Option<u32>,
    /// Highest price per GPU-hour, in AGR (2.5) or micro-units (2500000uagr)
    #[arg(long)]
    max_price: Option<String>,
    #[arg(long)]
    region: Option<String>,
    #[command(flatten)]
    node: NodeArgs,
}

/// `agora offers`: the node's order book, cheapest first.
pub fn offers(args: OfferArgs) -> anyhow::Result<ExitCode> {
    let mut query = Vec::new();
    if let Some(m) = &args.model {
        query.push(format!("model={}", http::encode_query(m)));
    }
    if let Some(v) = args.min_vram {
        query.push(format!("min_vram_gb={v}"));
    }
    if let Some(n) = args.gpus {
        query.push(format!("gpus={n}"));
    }
    if let Some(p) = &args.max_price {
        parse_amount(p)?;
        query.push(format!("max_price={}", http::encode_query(p)));
    }
    if let Some(r) = &args.region {
        query.push(format!("region={}", http::encode_query(r)));
    }
    let path = if query.is_empty() { "/v1/offers".to_string() } else { format!("/v1/offers?{}", query.join("&")) };
    let list = args.node.get(&path)?;
    if args.node.json {
        print_json(&list)?;
        return Ok(ExitCode::SUCCESS);
    }
    let list = list.as_array().cloned().unwrap_or_default();
    if list.is_empty() {
        println!("no matching offers");
        return Ok(ExitCode::SUCCESS);
    }
    println!("{:<64}  {:<34}  {:>12}  {:>9}  REGION", "PROVIDER", "GPUS", "AGR/GPU-H", "MAX");
    for o in &list {
        let price = micros(&o["price_per_gpu_hour"]);
        let hours = o["max_duration_secs"].as_u64().unwrap_or(0) as f64 / 3600.0;
        println!(
            "{:<64}  {:<34}  {:>12}  {:>8.1}h  {}",
            text(&o["provider"]),
            gpu_kinds(&o["gpus"], " sim"),
            price.to_string().trim_end_matches(" AGR"),
            hours,
            text(&o["region"])
        );
    }
    if list.iter().any(|o| o["simulated"] == true) {
        println!("(sim = simulated GPUs: software only, for testnets)");
    }
    Ok(ExitCode::SUCCESS)
}

pub fn parse_amount(s: &str) -> anyhow::Result<Amount> {
    s.parse::<Amount>().with_context(|| format!("bad amount {s:?}"))
}
