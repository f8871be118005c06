//! The `agora` binary: one program for GPU providers (the node daemon),
//! buyers (keys, offers, submit, leases) and local testnets. Errors are
//! one line on stderr and a non-zero exit code; every query has `--json`.

mod bench;
mod client;
mod demo;
mod jobs_bench;
mod keys;
mod lease;
mod lease_bench;
mod ledger;
mod liveness_bench;
mod market;
mod market_bench;
mod node;
mod prove;
mod testnet;
mod verify;
mod view;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "agora", version, about = "Peer-to-peer marketplace for GPU compute", propagate_version = true)]
struct Cli {
    /// Home directory for keys, configuration and data [env: AGORA_HOME] [default: ~/.agora]
    #[arg(long, global = true, value_name = "DIR")]
    home: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a node home: node key and config.toml
    Init(node::InitArgs),
    /// Run the node daemon
    #[command(subcommand)]
    Node(node::NodeCommand),
    /// A node's status
    Status(client::NodeArgs),
    /// GPU offers in a node's order book, cheapest first
    Offers(client::OfferArgs),
    /// Lease GPUs for a job: pick an offer, sign, negotiate, open the lease (--wait: follow it to the end)
    Submit(Box<lease::SubmitArgs>),
    /// Your leases: list, status, logs, cancel
    #[command(subcommand)]
    Lease(lease::LeaseCommand),
    /// An account's balance (default: your key's); --prove checks it against the certified state
    #[command(visible_alias = "account")]
    Balance {
        address: Option<String>,
        /// Key under --home to use when no address is given
        #[arg(long, default_value = "default")]
        key: String,
        #[command(flatten)]
        prove: prove::ProveArgs,
        #[command(flatten)]
        node: client::NodeArgs,
    },
    /// Send AGR to an address (signed here, then submitted and awaited)
    Transfer {
        to: String,
        /// Decimal AGR (1.5) or micro-units (1500000uagr)
        amount: String,
        #[arg(long, default_value = "default")]
        key: String,
        #[command(flatten)]
        node: client::NodeArgs,
    },
    /// Stake AGR
    Stake {
        amount: String,
        #[arg(long, default_value = "default")]
        key: String,
        #[command(flatten)]
        node: client::NodeArgs,
    },
    /// Start unbonding staked AGR
    Unstake {
        amount: String,
        #[arg(long, default_value = "default")]
        key: String,
        #[command(flatten)]
        node: client::NodeArgs,
    },
    /// Return a jailed provider to service after its jail period (its node must be heartbeating again)
    Unjail {
        /// The provider's key under --home (a node's own key is `node`)
        #[arg(long, default_value = "node")]
        key: String,
        #[command(flatten)]
        node: client::NodeArgs,
    },
    /// Name the key that runs your provider node (its operator key), so your account key can stay off
    /// the GPU host: the operator signs offers, heartbeats and lease answers and closes leases, never
    /// moves your tokens or stake
    SetOperator {
        /// The operator's address (the GPU node's own key: `agora --home NODE_HOME keys show --name node`)
        operator: String,
        /// Your account's key under --home
        #[arg(long, default_value = "default")]
        key: String,
        #[command(flatten)]
        node: client::NodeArgs,
    },
    /// Withdraw your operator key: it no longer acts for your account
    ClearOperator {
        #[arg(long, default_value = "default")]
        key: String,
        #[command(flatten)]
        node: client::NodeArgs,
    },
    /// Bid in a GPU class's call auction: your maximum price is escrowed; you pay the auction's one price
    Bid(market::BidArgs),
    /// Ask in a GPU class's call auction (a provider: its node key or account key)
    Ask(market::AskArgs),
    /// Your open orders (--all: everyone's)
    Orders {
        #[arg(long)]
        all: bool,
        #[arg(long, default_value = "default")]
        key: String,
        #[command(flatten)]
        node: client::NodeArgs,
    },
    /// Cancel or amend one of your orders
    #[command(subcommand)]
    Order(market::OrderCommand),
    /// The exchange: the current auction and the price history
    #[command(subcommand)]
    Market(market::MarketCommand),
    /// Create, show and list account keys
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// The ledger through a node (or a stopped node's store): height, providers, validators, blocks, accounts
    #[command(subcommand)]
    Ledger(ledger::LedgerCommand),
    /// Check, offline, every signed object in a JSON file a node served (slash evidence, offers, …)
    Verify {
        /// The JSON file, e.g. saved from /v1/providers/ADDR/slashes or /v1/offers
        file: std::path::PathBuf,
        /// The chain the signatures are for (default: the file's chain_id)
        #[arg(long)]
        chain_id: Option<String>,
    },
    /// Benchmarks that print JSON figures
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Run local agora networks
    #[command(subcommand)]
    Testnet(testnet::TestnetCommand),
}

/// `--home`, else `$AGORA_HOME`, else `~/.agora`.
fn home_dir(flag: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(dir) = flag.or_else(|| std::env::var_os("AGORA_HOME").map(PathBuf::from)) {
        return Ok(dir);
    }
    let home = std::env::var_os("HOME").ok_or_else(|| anyhow::anyhow!("HOME is not set; pass --home DIR"))?;
    Ok(PathBuf::from(home).join(".agora"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = home_dir(cli.home).and_then(|home| match cli.command {
        Command::Keys(cmd) => keys::run(&home, cmd),
        Command::Status(node) => client::status(node),
        Command::Offers(args) => client::offers(args),
        Command::Submit(args) => lease::submit(&home, *args),
        Command::Lease(cmd) => lease::run(&home, cmd),
        Command::Balance { address, key, prove, node } => client::balance(&home, address, &key, &prove, node),
        Command::Transfer { to, amount, key, node } => {
            let to: agora_protocol::Address = to.parse()?;
            let amount = client::parse_amount(&amount)?;
            client::send(&home, &key, agora_protocol::TxKind::Transfer { to, amount }, node)
        }
        Command::Stake { amount, key, node } => {
            let amount = client::parse_amount(&amount)?;
            client::send(&home, &key, agora_protocol::TxKind::Stake { amount }, node)
        }
        Command::Unstake { amount, key, node } => {
            let amount = client::parse_amount(&amount)?;
            client::send(&home, &key, agora_protocol::TxKind::Unstake { amount }, node)
        }
        Command::Unjail { key, node } => client::unjail(&home, &key, node),
        Command::SetOperator { operator, key, node } => {
            let address = operator.parse::<agora_protocol::Address>()?;
            let unfunded = node.get(&format!("/v1/accounts/{address}"))?["balance"].as_str() == Some("0");
            let json = node.json;
            let code =
                client::send(&home, &key, agora_protocol::TxKind::SetOperator { operator: Some(address) }, node)?;
            if unfunded && !json {
                eprintln!(
                    "note: {address} has no balance; it pays the fees of what its node sends (registration, \
                     lease opens and closes): give it a little, e.g. `agora transfer {address} 1`"
                );
            }
            Ok(code)
        }
        Command::ClearOperator { key, node } => {
            client::send(&home, &key, agora_protocol::TxKind::SetOperator { operator: None }, node)
        }
        Command::Bid(args) => market::bid(&home, args),
        Command::Ask(args) => market::ask(&home, args),
        Command::Orders { all, key, node } => market::orders(&home, &key, all, node),
        Command::Order(cmd) => market::order(&home, cmd),
        Command::Market(cmd) => market::market(cmd),
        Command::Init(args) => node::init(&home, args),
        Command::Node(cmd) => node::run(&home, cmd),
        Command::Ledger(cmd) => ledger::run(&home, cmd),
        Command::Verify { file, chain_id } => verify::run(&file, chain_id),
        Command::Bench(cmd) => bench::run(cmd),
        Command::Testnet(cmd) => testnet::run(cmd),
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Prints a value as pretty JSON on stdout.
fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}
