//! `agora ledger status|validators|account`: read a node's local ledger
//! store directly (the node's HTTP API will serve the same later).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use agora_ledger::Store;
use agora_protocol::Address;
use clap::{Args, Subcommand};
use serde::Serialize;

use crate::print_json;

#[derive(Subcommand)]
pub enum LedgerCommand {
    /// Height, tip, state root and supply of a ledger store
    Status(StoreArgs),
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
    /// Ledger store directory [default: HOME/data/ledger]
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    /// Print JSON
    #[arg(long)]
    json: bool,
}

impl StoreArgs {
    fn open(&self, home: &Path) -> anyhow::Result<Store> {
        let path = self.data.clone().unwrap_or_else(|| home.join("data").join("ledger"));
        Ok(Store::open_existing(&path)?)
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
        LedgerCommand::Account { address, store } => {
            let address: Address = address.parse()?;
            let st = store.open(home)?;
            let acct = st.state().account(&address);
            if store.json {
                print_json(&acct)?;
            } else {
                println!("balance   {}", acct.balance);
                println!("stake     {}", acct.stake);
                println!("unbonding {}", acct.unbonding);
                println!("nonce     {}", acct.nonce);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
