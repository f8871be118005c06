//! `agora testnet`: local networks. Today `demo` runs the market path in one
//! process on the real ledger and sled store; multi-node testnets arrive with
//! the node daemon.

use std::path::PathBuf;
use std::process::ExitCode;

use agora_testnet::demo;
use clap::Subcommand;

use crate::print_json;

#[derive(Subcommand)]
pub enum TestnetCommand {
    /// Stake a provider, lease its simulated GPUs as a buyer, run a job and settle the escrow
    Demo {
        /// Keep the demo's keys, ledger and job output here (must be empty or absent) instead of a temporary directory
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// Print the report as JSON
        #[arg(long)]
        json: bool,
        /// The job to run on the leased GPUs [default: a shell one-liner that prints the GPUs it sees]
        #[arg(last = true, value_name = "COMMAND")]
        job: Vec<String>,
    },
}

pub fn run(cmd: TestnetCommand) -> anyhow::Result<ExitCode> {
    let TestnetCommand::Demo { dir, json, job } = cmd;
    let job = if job.is_empty() { demo::DEFAULT_JOB.iter().map(|s| s.to_string()).collect() } else { job };
    let temp;
    let dir = match dir {
        Some(d) => d,
        None => {
            temp = tempfile::Builder::new().prefix("agora-demo-").tempdir()?;
            temp.path().to_path_buf()
        }
    };
    let mut progress = |line: String| {
        if !json {
            println!("{line}");
        }
    };
    progress(
        "agora testnet demo (one process: one validator running real consensus, the sled ledger and a real job \
         process; multi-node networking arrives with the node daemon)"
            .into(),
    );
    let report = demo::run(&dir, &job, &mut progress)?;
    if json {
        print_json(&report)?;
    } else {
        println!();
        println!("buyer    {}: {} -> {}", report.buyer, report.buyer_balance_before, report.buyer_balance_after);
        println!(
            "provider {}: {} -> {}",
            report.provider, report.provider_balance_before, report.provider_balance_after
        );
        println!("supply conserved and ledger durable: {}", if report.supply_conserved { "yes" } else { "NO" });
    }
    if !report.supply_conserved {
        anyhow::bail!("ledger invariant check failed after the demo");
    }
    Ok(ExitCode::SUCCESS)
}
