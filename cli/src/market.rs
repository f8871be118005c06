//! The exchange from the command line: place bids (buyers) and asks
//! (providers) in the call auctions, list, cancel and amend your orders, and
//! read the current auction and the price history (docs/market.md).

use std::path::Path;
use std::process::ExitCode;

use agora_protocol::{GpuClass, TxKind};
use anyhow::{anyhow, bail};
use clap::{Args, Subcommand};

use crate::client::{self, NodeArgs, parse_amount};
use crate::print_json;
use crate::view::{micros, text};

#[derive(Args)]
pub struct OrderArgs {
    /// GPU class (H100-80GB; a model alone, like h100, when one class has it)
    #[arg(long, alias = "model")]
    class: String,
    #[arg(long)]
    gpus: u32,
    #[arg(long)]
    hours: u32,
    /// Key under --home that signs
    #[arg(long)]
    key: Option<String>,
    #[command(flatten)]
    node: NodeArgs,
}

#[derive(Args)]
pub struct BidArgs {
    #[command(flatten)]
    order: OrderArgs,
    /// Most you pay per GPU-hour, in AGR (the auction's price may be lower)
    #[arg(long)]
    max_price: String,
    /// The GPUs may come from several hosts
    #[arg(long)]
    split: bool,
    /// When the contract starts: `next` (at the clearing) or hours after it, like +6h
    #[arg(long, default_value = "next", value_parser = parse_start)]
    start: u32,
    /// Place nothing: say whether the bid would fill if the auction cleared
    /// now, and why not, ask by ask (exit 1 if it would not)
    #[arg(long)]
    explain: bool,
    /// Wait for the auction; if the bid fills, run the command after `--` on
    /// the lease won, print its output and exit with its exit code
    #[arg(long, requires = "command", conflicts_with_all = ["split", "explain"])]
    job_after_match: bool,
    /// The job for --job-after-match: program and arguments
    #[arg(last = true, value_name = "COMMAND")]
    command: Vec<String>,
}

#[derive(Args)]
pub struct AskArgs {
    #[command(flatten)]
    order: OrderArgs,
    /// Least you take per GPU-hour, in AGR
    #[arg(long)]
    min_price: String,
}

#[derive(Subcommand)]
pub enum OrderCommand {
    /// Withdraw an order (not in its auction's binding phase)
    Cancel {
        id: u64,
        #[arg(long, default_value = "default")]
        key: String,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Change an order's price (in the binding phase bids only up, asks only down)
    Amend {
        id: u64,
        /// New price per GPU-hour, in AGR
        #[arg(long)]
        price: String,
        #[arg(long, default_value = "default")]
        key: String,
        #[command(flatten)]
        node: NodeArgs,
    },
}

#[derive(Subcommand)]
pub enum MarketCommand {
    /// The current auction: phase, blocks to clearing, each class's indicative price; recent results
    Auctions {
        #[arg(long)]
        class: Option<String>,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Leases offered for sale (buy one with `agora lease buy LEASE --max-price P`)
    Listings {
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Clearing prices per class over time
    Prices {
        #[arg(long)]
        class: Option<String>,
        /// From this height on
        #[arg(long)]
        since: Option<u64>,
        #[command(flatten)]
        node: NodeArgs,
    },
}

/// The class a `--class` names: a full key as given, or a bare model
/// resolved against the classes registered providers have.
fn resolve_class(given: &str, node: &NodeArgs) -> anyhow::Result<GpuClass> {
    let key = GpuClass::parse(given)?;
    if key.as_str().contains("GB") {
        return Ok(key);
    }
    let providers = node.get("/v1/providers")?;
    let mut known: Vec<GpuClass> = providers
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|p| p["gpus"].as_array().cloned().unwrap_or_default())
        .filter_map(|g| serde_json::from_value::<agora_protocol::GpuSpec>(g).ok())
        .filter_map(|g| GpuClass::of(&g))
        .collect();
    known.sort();
    known.dedup();
    let prefix = format!("{}-", key.as_str());
    let matching: Vec<&GpuClass> = known.iter().filter(|c| c.as_str().starts_with(&prefix)).collect();
    match matching.as_slice() {
        [one] => Ok((*one).clone()),
        [] => bail!(
            "no registered provider has {given} GPUs; classes on this network: {}",
            known.iter().map(GpuClass::as_str).collect::<Vec<_>>().join(", ")
        ),
        many => bail!(
            "{given} names several classes; say which: {}",
            many.iter().map(|c| c.as_str()).collect::<Vec<_>>().join(", ")
        ),
    }
}

/// Sends an order and says which id it got.
fn place(home: &Path, key: &str, kind: TxKind, node: &NodeArgs, owner: Option<String>) -> anyhow::Result<ExitCode> {
    let keypair = agora_node::keystore::load(home, key)?.keypair;
    let (hash, height) = client::submit_and_wait(&keypair, kind, node)?;
    let owner = owner.unwrap_or_else(|| keypair.address().to_string());
    let orders = node.get(&format!("/v1/market/orders?owner={owner}"))?;
    let newest = orders.as_array().and_then(|list| list.last().cloned()).unwrap_or_default();
    let status = node.get("/v1/market/auctions")?;
    if node.json {
        print_json(
            &serde_json::json!({ "hash": hash, "height": height, "order": newest, "auction": status["auction"], "clears_at_height": status["clears_at_height"] }),
        )?;
    } else {
        println!(
            "order {} placed at height {height}; auction {} clears at height {}",
            text(&newest["id"]),
            text(&status["auction"]),
            text(&status["clears_at_height"])
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub fn bid(home: &Path, args: BidArgs) -> anyhow::Result<ExitCode> {
    let o = &args.order;
    let class = resolve_class(&o.class, &o.node)?;
    if args.explain {
        return explain_bid(home, &args, &class);
    }
    anyhow::ensure!(args.command.is_empty() || args.job_after_match, "a command after -- needs --job-after-match");
    let key = o.key.as_deref().unwrap_or("default");
    let spec = args.job_after_match.then(|| crate::lease::job_spec(&args.command, &[], None, false)).transpose()?;
    let kind = TxKind::PlaceBid {
        class,
        gpus: o.gpus,
        hours: o.hours,
        max_price: parse_amount(&args.max_price)?,
        split: args.split,
        start_hours: args.start,
    };
    let Some(spec) = spec else { return place(home, key, kind, &o.node, None) };
    let keypair = agora_node::keystore::load(home, key)?.keypair;
    let before = held_leases(&o.node, &keypair.address().to_string())?;
    let (_, height) = client::submit_and_wait(&keypair, kind, &o.node)?;
    let status = o.node.get("/v1/market/auctions")?;
    let clears_at = status["clears_at_height"].as_u64().unwrap_or(0);
    eprintln!("bid placed at height {height}; auction {} clears at height {clears_at}", text(&status["auction"]));
    let deadline = std::time::Instant::now() + AFTER_MATCH_WAIT;
    while o.node.get("/v1/status")?["height"].as_u64().unwrap_or(0) <= clears_at {
        anyhow::ensure!(std::time::Instant::now() < deadline, "the chain did not reach height {clears_at} in time");
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    let won: Vec<String> =
        held_leases(&o.node, &keypair.address().to_string())?.into_iter().filter(|id| !before.contains(id)).collect();
    let Some(lease) = won.first() else {
        eprintln!("the bid did not fill in auction {}; its escrow is refunded in full", text(&status["auction"]));
        return Ok(ExitCode::from(1));
    };
    eprintln!("won lease {lease}; running the job on it");
    crate::lease::run_on_lease(&keypair, lease.parse()?, spec, &o.node, true)
}

/// `--start`: `next` (0), or whole hours after the clearing: `+6h`, `6h`, `6`.
fn parse_start(text: &str) -> Result<u32, String> {
    if text == "next" {
        return Ok(0);
    }
    let hours = text.trim_start_matches('+').trim_end_matches('h');
    let hours: u32 = hours.parse().map_err(|_| format!("{text:?}: use next or hours after the clearing, like +6h"))?;
    if hours > agora_protocol::limits::MAX_CONTRACT_HOURS {
        return Err(format!("{text:?}: a contract starts within 720 hours of its auction"));
    }
    Ok(hours)
}

/// How long `--job-after-match` waits for its auction to clear.
const AFTER_MATCH_WAIT: std::time::Duration = std::time::Duration::from_secs(30 * 60);

/// The ids of the open auctioned leases `holder` holds.
fn held_leases(node: &NodeArgs, holder: &str) -> anyhow::Result<Vec<String>> {
    let list = node.get(&format!("/v1/leases?buyer={holder}"))?;
    Ok(list
        .as_array()
        .into_iter()
        .flatten()
        .filter(|l| l["status"] == "Open" && l["gpu_ids"].as_array().is_some_and(|a| a.is_empty()))
        .map(|l| text(&l["id"]))
        .collect())
}

/// `agora bid --explain`: the node's trial clearing of the book with this bid added.
fn explain_bid(home: &Path, args: &BidArgs, class: &GpuClass) -> anyhow::Result<ExitCode> {
    let o = &args.order;
    let max = parse_amount(&args.max_price)?;
    let buyer = agora_node::keystore::load(home, o.key.as_deref().unwrap_or("default"))?.keypair.address();
    let path = format!(
        "/v1/market/explain/bid?class={class}&gpus={}&hours={}&max_price={}uagr&split={}&start_hours={}&buyer={buyer}",
        o.gpus, o.hours, max.0, args.split, args.start
    );
    let e = o.node.get(&path)?;
    let fills = e["would_fill"] == true;
    if o.node.json {
        print_json(&e)?;
    } else {
        let status = o.node.get("/v1/market/auctions")?;
        println!(
            "a bid for {} {class} GPU(s) × {} h at most {max}/GPU-hour in auction {} (clears at height {}), as the book stands:",
            o.gpus,
            o.hours,
            text(&status["auction"]),
            text(&status["clears_at_height"])
        );
        if fills {
            println!("  would fill at the indicative price {}/GPU-hour", micros(&e["indicative_price"]));
        } else {
            println!("  would not fill:");
        }
        print_reasons(&e["reasons"], "    ");
        let asks = e["asks"].as_array().cloned().unwrap_or_default();
        if !asks.is_empty() {
            println!("  open asks of {class}:");
        }
        for a in asks {
            println!(
                "    order {:>5}  {}  {} GPU(s) × {} h from {}/GPU-hour: {}",
                text(&a["order"]),
                text(&a["provider"]),
                text(&a["gpus"]),
                text(&a["hours"]),
                micros(&a["min_price"]),
                if a["fits"] == true { "fits" } else { "does not fit" }
            );
            print_reasons(&a["reasons"], "      ");
        }
    }
    Ok(if fills { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// `[{code, detail}]`, one per line.
pub fn print_reasons(reasons: &serde_json::Value, indent: &str) {
    for r in reasons.as_array().into_iter().flatten() {
        println!("{indent}{}: {}", text(&r["code"]), text(&r["detail"]));
    }
}

/// An ask is the provider's: sent with its node key (or its account key), it
/// names the provider account the key acts for.
pub fn ask(home: &Path, args: AskArgs) -> anyhow::Result<ExitCode> {
    let o = &args.order;
    let class = resolve_class(&o.class, &o.node)?;
    let key = o.key.as_deref().unwrap_or("node");
    let signer = agora_node::keystore::load(home, key)?.keypair.address();
    // The provider an operator key acts for owns the ask.
    let providers = o.node.get("/v1/providers")?;
    let owner = providers
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["address"] == signer.to_string().as_str() || p["operator"] == signer.to_string().as_str())
        .and_then(|p| p["address"].as_str().map(str::to_string))
        .ok_or_else(|| anyhow!("{signer} is not a registered provider or a provider's operator"))?;
    let kind = TxKind::PlaceAsk { class, gpus: o.gpus, hours: o.hours, min_price: parse_amount(&args.min_price)? };
    place(home, key, kind, &o.node, Some(owner))
}

/// `agora orders`: open orders of a key's account (or everyone's with --all).
pub fn orders(home: &Path, key: &str, all: bool, node: NodeArgs) -> anyhow::Result<ExitCode> {
    let path = if all {
        "/v1/market/orders".to_string()
    } else {
        let me = agora_node::keystore::load(home, key)?.keypair.address();
        format!("/v1/market/orders?owner={me}")
    };
    let list = node.get(&path)?;
    if node.json {
        print_json(&list)?;
        return Ok(ExitCode::SUCCESS);
    }
    let rows = list.as_array().cloned().unwrap_or_default();
    if rows.is_empty() {
        println!("no open orders");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:>6}  {:<4}  {:<16} {:>4} {:>5} {:>6}  {:>14}  {:>14}",
        "ID", "SIDE", "CLASS", "GPUS", "HOURS", "START", "PRICE/GPU-H", "ESCROW"
    );
    for o in rows {
        let start = match o["start_hours"].as_u64() {
            Some(h) if h > 0 => format!("+{h}h"),
            _ => "next".to_string(),
        };
        println!(
            "{:>6}  {:<4}  {:<16} {:>4} {:>5} {:>6}  {:>14}  {:>14}",
            text(&o["id"]),
            text(&o["side"]),
            text(&o["class"]),
            text(&o["gpus"]),
            text(&o["hours"]),
            start,
            micros(&o["price"]).to_string(),
            micros(&o["escrow"]).to_string()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Whether the next block is in its auction's binding phase, and the height it clears at.
fn binding(node: &NodeArgs) -> anyhow::Result<(bool, u64)> {
    let a = node.get("/v1/market/auctions")?;
    Ok((a["phase"] != "open", a["clears_at_height"].as_u64().unwrap_or(0)))
}

/// Cancels and amendments are judged by the phase of the block they land in,
/// which the node's own check (on its last committed state) cannot see: the
/// CLI refuses what the next block would, instead of waiting for it in vain.
pub fn order(home: &Path, cmd: OrderCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        OrderCommand::Cancel { id, key, node } => {
            let (binding, clears_at) = binding(&node)?;
            if binding {
                bail!(
                    "orders are binding until this auction clears at height {clears_at}: no cancels in its last blocks"
                );
            }
            client::send(home, &key, TxKind::CancelOrder { order: id }, node)
        }
        OrderCommand::Amend { id, price, key, node } => {
            let price = parse_amount(&price)?;
            let (binding, clears_at) = binding(&node)?;
            if binding {
                let me = agora_node::keystore::load(home, &key)?.keypair.address();
                let orders = node.get(&format!("/v1/market/orders?owner={me}"))?;
                let order = orders.as_array().into_iter().flatten().find(|o| o["id"] == id);
                if let Some(o) = order {
                    let old = micros(&o["price"]);
                    let worse = if o["side"] == "bid" { price < old } else { price > old };
                    if worse {
                        bail!(
                            "orders are binding until this auction clears at height {clears_at}: bids may only rise and asks only fall"
                        );
                    }
                }
            }
            client::send(home, &key, TxKind::AmendOrder { order: id, price }, node)
        }
    }
}

pub fn market(cmd: MarketCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        MarketCommand::Auctions { class, node } => {
            let path = match &class {
                Some(c) => format!("/v1/market/auctions?class={}", GpuClass::parse(c)?),
                None => "/v1/market/auctions".into(),
            };
            let a = node.get(&path)?;
            if node.json {
                print_json(&a)?;
                return Ok(ExitCode::SUCCESS);
            }
            println!(
                "auction {} ({}), clears at height {} (now {})",
                text(&a["auction"]),
                text(&a["phase"]),
                text(&a["clears_at_height"]),
                text(&a["height"])
            );
            for c in a["classes"].as_array().into_iter().flatten() {
                let price = match c["indicative_price"].as_str() {
                    Some(_) => micros(&c["indicative_price"]).to_string(),
                    None => "no cross".into(),
                };
                println!(
                    "  {:<16} {} bids, {} asks, indicative {price} ({} GPU-hours would match)",
                    text(&c["class"]),
                    text(&c["bids"]),
                    text(&c["asks"]),
                    text(&c["matched_gpu_hours"])
                );
            }
            print_results(&a["recent"]);
        }
        MarketCommand::Listings { node } => {
            let list = node.get("/v1/market/listings")?;
            if node.json {
                print_json(&list)?;
                return Ok(ExitCode::SUCCESS);
            }
            let rows = list.as_array().cloned().unwrap_or_default();
            if rows.is_empty() {
                println!("no leases for sale");
            }
            for l in rows {
                println!(
                    "{}  {}x {}  {} left, for {} (seller {})",
                    text(&l["lease_id"]),
                    text(&l["gpus"]),
                    text(&l["class"]),
                    crate::view::humantime_secs(l["ends_in_secs"].as_u64().unwrap_or(0)),
                    micros(&l["price"]),
                    text(&l["seller"])
                );
            }
        }
        MarketCommand::Prices { class, since, node } => {
            let mut query = Vec::new();
            if let Some(c) = &class {
                query.push(format!("class={}", GpuClass::parse(c)?));
            }
            if let Some(h) = since {
                query.push(format!("since={h}"));
            }
            let path = format!("/v1/market/prices{}{}", if query.is_empty() { "" } else { "?" }, query.join("&"));
            let list = node.get(&path)?;
            if node.json {
                print_json(&list)?;
            } else {
                print_results(&list);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_results(list: &serde_json::Value) {
    let rows = list.as_array().cloned().unwrap_or_default();
    if rows.is_empty() {
        println!("no trades yet");
        return;
    }
    println!(
        "{:>8} {:<8} {:>8}  {:<16} {:>14} {:>10} {:>10} {:>10}",
        "AUCTION", "KIND", "HEIGHT", "CLASS", "PRICE/GPU-H", "GPU-H", "BID GPU-H", "ASK GPU-H"
    );
    for r in rows {
        let price = if r["price"].is_null() { "-".to_string() } else { micros(&r["price"]).to_string() };
        let spot = r["kind"] == "spot";
        // A spot row's price is the period's volume-weighted average; it has no depth.
        let depth = |v: &serde_json::Value| if spot { "-".to_string() } else { text(v) };
        println!(
            "{:>8} {:<8} {:>8}  {:<16} {:>14} {:>10} {:>10} {:>10}",
            text(&r["auction"]),
            text(&r["kind"]),
            text(&r["height"]),
            text(&r["class"]),
            if spot { format!("~{price}") } else { price },
            text(&r["matched_gpu_hours"]),
            depth(&r["bid_depth"]),
            depth(&r["ask_depth"])
        );
    }
}
