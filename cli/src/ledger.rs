//! `agora ledger height|status|validators|providers|block|account`: the
//! ledger as a node sees it, through its HTTP API (`--node URL`), or read
//! from a stopped node's store on disk with `--data DIR`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use agora_ledger::Store;
use agora_protocol::Address;
use clap::{Args, Subcommand};
use serde::Serialize;

use crate::print_json;
use crate::view::{gpu_kinds, micros, print_account, text};

#[derive(Subcommand)]
pub enum LedgerCommand {
    /// The latest committed height
    Height(StoreArgs),
    /// Height, tip, state root and supply of a ledger store
    Status(StoreArgs),
    /// Registered providers: status, stake, GPUs, slashes
    Providers(StoreArgs),
    /// The validator set for the next height, with voting power
    Validators(StoreArgs),
    /// A committed block's header, transactions and commit certificate
    Block {
        height: u64,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// An account's balance, stake, unbonding and nonce
    Account {
        /// agora1… address
        address: String,
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Args)]
pub struct StoreArgs {
    /// Read this ledger store directory (of a stopped node) instead of asking a node
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    /// Node API URL [env: AGORA_NODE] [default: http://127.0.0.1:7600]
    #[arg(long)]
    node: Option<String>,
    /// Print JSON
    #[arg(long)]
    json: bool,
}

impl StoreArgs {
    fn open(&self, home: &Path) -> anyhow::Result<Store> {
        let path = self.data.clone().unwrap_or_else(|| home.join("data").join("ledger"));
        Ok(Store::open_existing(&path)?)
    }

    /// The node's answer to `GET path`, when no store directory was given.
    fn api(&self, path: &str) -> anyhow::Result<Option<serde_json::Value>> {
        if self.data.is_some() {
            return Ok(None);
        }
        let args = crate::client::NodeArgs::new(self.node.clone(), self.json);
        args.get(path).map(Some)
    }
}

fn print_providers(list: &[serde_json::Value]) {
    if list.is_empty() {
        println!("no providers registered");
        return;
    }
    println!(
        "{:<64}  {:<10}  {:>14}  {:>14}  {:>6}  {:<8}  {:>7}  {:>7}  {:>9}  GPUS",
        "ADDRESS", "STATUS", "STAKE", "EARNED", "LEASES", "REGION", "SLASHES", "UPTIME", "HEARTBEAT"
    );
    for p in list {
        let stake = micros(&p["stake"]);
        let heartbeat = p["last_heartbeat_height"].as_u64().map_or("-".to_string(), |h| format!("#{h}"));
        println!(
            "{:<64}  {:<10}  {:>14}  {:>14}  {:>6}  {:<8}  {:>7}  {:>6}%  {:>9}  {}",
            text(&p["address"]),
            text(&p["status"]),
            stake.to_string(),
            micros(&p["earned"]).to_string(),
            p["leases_served"],
            text(&p["region"]),
            p["slashes"],
            p["uptime_pct"],
            heartbeat,
            gpu_kinds(&p["gpus"], " (simulated)")
        );
    }
}

#[derive(Serialize)]
struct StatusView {
    chain_id: String,
    height: u64,
    tip: String,
    state_root: String,
    supply: agora_protocol::Amount,
    burned: agora_protocol::Amount,
}

#[derive(Serialize)]
struct BlockView {
    height: u64,
    hash: String,
    time_ms: u64,
    parent: String,
    state_root: String,
    proposer: Address,
    txs: Vec<String>,
    /// Validators whose precommits committed this block.
    committed_by: Vec<Address>,
    commit_round: Option<u32>,
}

#[derive(Serialize)]
struct ValidatorView {
    address: Address,
    power: u64,
    stake: agora_protocol::Amount,
}

pub fn run(home: &Path, cmd: LedgerCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        LedgerCommand::Height(args) => {
            let height = match args.api("/v1/status")? {
                Some(s) => s["height"].as_u64().unwrap_or(0),
                None => args.open(home)?.height().0,
            };
            if args.json {
                print_json(&serde_json::json!({ "height": height }))?;
            } else {
                println!("{height}");
            }
        }
        LedgerCommand::Providers(args) => {
            let list = match args.api("/v1/providers")? {
                Some(v) => v.as_array().cloned().unwrap_or_default(),
                None => {
                    let store = args.open(home)?;
                    let s = store.state();
                    s.providers().map(|(a, p)| crate::ledger::provider_json(s, a, p)).collect()
                }
            };
            if args.json {
                print_json(&list)?;
            } else {
                print_providers(&list);
            }
        }
        LedgerCommand::Status(args) => {
            let store = args.open(home)?;
            let s = store.state();
            let view = StatusView {
                chain_id: s.chain_id().to_string(),
                height: s.height().0,
                tip: s.last_block_hash().to_hex(),
                state_root: s.root().to_hex(),
                supply: s.supply(),
                burned: s.burned(),
            };
            if args.json {
                print_json(&view)?;
            } else {
                println!("chain      {}", view.chain_id);
                println!("height     {}", view.height);
                println!("tip        {}", view.tip);
                println!("state root {}", view.state_root);
                println!("supply     {} (burned {})", view.supply, view.burned);
            }
        }
        LedgerCommand::Validators(args) if args.data.is_none() => {
            let list = args.api("/v1/validators")?.unwrap_or_default();
            if args.json {
                print_json(&list)?;
            } else {
                println!("{:<64}  {:>14}  POWER", "ADDRESS", "STAKE");
                for v in list.as_array().into_iter().flatten() {
                    let stake = micros(&v["stake"]);
                    println!("{:<64}  {:>14}  {}", text(&v["address"]), stake.to_string(), text(&v["power"]));
                }
            }
        }
        LedgerCommand::Validators(args) => {
            let store = args.open(home)?;
            let s = store.state();
            let views: Vec<ValidatorView> = s
                .validators()
                .iter()
                .map(|v| ValidatorView { address: v.address, power: v.power, stake: s.account(&v.address).stake })
                .collect();
            if args.json {
                print_json(&views)?;
            } else {
                let total: u128 = views.iter().map(|v| u128::from(v.power)).sum();
                println!("{:<64}  {:>8}  STAKE", "ADDRESS", "POWER");
                for v in &views {
                    let share = if total == 0 { 0.0 } else { v.power as f64 * 100.0 / total as f64 };
                    println!("{:<64}  {:>7.2}%  {}", v.address.to_string(), share, v.stake);
                }
            }
        }
        LedgerCommand::Block { height, store } if store.data.is_none() => {
            let b = store.api(&format!("/v1/blocks/{height}"))?.unwrap_or_default();
            if store.json {
                print_json(&b)?;
            } else {
                let kinds: Vec<String> = b["txs"].as_array().into_iter().flatten().map(|t| text(&t["kind"])).collect();
                println!("height     {}", b["height"]);
                println!("hash       {}", text(&b["hash"]));
                println!("proposer   {}", text(&b["header"]["proposer"]));
                println!("txs        {}", if kinds.is_empty() { "-".to_string() } else { kinds.join(", ") });
                let signers = b["committed_by"].as_array().map_or(0, Vec::len);
                println!("committed  by {signers} validator(s)");
            }
        }
        LedgerCommand::Block { height, store } => {
            let st = store.open(home)?;
            let h = agora_protocol::Height(height);
            let block =
                st.block(h)?.ok_or_else(|| anyhow::anyhow!("no block at height {height} (tip is {})", st.height()))?;
            let cert = st.certificate(h)?;
            let view = BlockView {
                height,
                hash: block.hash().to_hex(),
                time_ms: block.header.time_ms.0,
                parent: block.header.parent_hash.to_hex(),
                state_root: block.header.state_root.to_hex(),
                proposer: block.header.proposer,
                txs: block.txs.iter().map(|t| t.body.kind.name().to_string()).collect(),
                committed_by: cert.iter().flat_map(|c| c.signatures.iter().map(|s| s.validator)).collect(),
                commit_round: cert.map(|c| c.round),
            };
            if store.json {
                print_json(&view)?;
            } else {
                println!("height     {}", view.height);
                println!("hash       {}", view.hash);
                println!("proposer   {}", view.proposer);
                println!("txs        {}", if view.txs.is_empty() { "-".to_string() } else { view.txs.join(", ") });
                match view.commit_round {
                    Some(r) => println!("committed  round {r} by {} validator(s)", view.committed_by.len()),
                    None => println!("committed  (no certificate stored)"),
                }
            }
        }
        LedgerCommand::Account { address, store } if store.data.is_none() => {
            let address: Address = address.parse()?;
            let a = store.api(&format!("/v1/accounts/{address}"))?.unwrap_or_default();
            if store.json {
                print_json(&a)?;
            } else {
                let nonce = a["nonce"].as_u64().unwrap_or(0);
                print_account(micros(&a["balance"]), micros(&a["stake"]), micros(&a["unbonding"]), nonce);
            }
        }
        LedgerCommand::Account { address, store } => {
            let address: Address = address.parse()?;
            let st = store.open(home)?;
            let acct = st.state().account(&address);
            if store.json {
                print_json(&acct)?;
            } else {
                print_account(acct.balance, acct.stake, acct.unbonding, acct.nonce);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A provider record as JSON, the same shape as the API's `/v1/providers`.
pub fn provider_json(s: &agora_ledger::State, address: &Address, p: &agora_ledger::Provider) -> serde_json::Value {
    agora_node::api::provider_view(s, address, p)
}
