//! `agora testnet`: local networks. `up` starts real node processes on
//! loopback (with fault injection: kill, pause, resume, restart, partition,
//! heal); `demo` runs the market path in one process on the real ledger.

use std::path::PathBuf;
use std::process::ExitCode;

use agora_node::config::Runner;
use agora_testnet::local;
use clap::Subcommand;

use crate::print_json;

/// Where testnet commands look when no --dir is given.
const DEFAULT_TESTNET_DIR: &str = "agora-testnet";

#[derive(Subcommand)]
pub enum TestnetCommand {
    /// Start N real node processes on loopback with a generated genesis
    Up {
        #[arg(long, default_value_t = 4)]
        nodes: usize,
        /// How many of the nodes are validators (the first ones; the rest are full nodes) [default: all, at most 21]
        #[arg(long)]
        validators: Option<usize>,
        /// How many of the nodes are providers with simulated GPUs [default: 2, or all if fewer nodes]
        #[arg(long)]
        providers: Option<usize>,
        #[arg(long, default_value = DEFAULT_TESTNET_DIR)]
        dir: PathBuf,
        /// First port; node i uses base+2i (P2P) and base+2i+1 (API)
        #[arg(long, default_value_t = 27000)]
        base_port: u16,
        /// Pause after each commit (the block-time floor)
        #[arg(long, default_value_t = local::TESTNET_COMMIT_PAUSE_MS)]
        commit_pause_ms: u64,
        /// How providers run plain jobs: sandbox or process [default: sandbox where this machine can (root), else process]
        #[arg(long, value_parser = parse_runner)]
        runner: Option<Runner>,
        /// What each provider declares: simulated:COUNTxMODEL-VRAMGB[,…] (e.g. simulated:2xH100-80GB,2xA100-40GB)
        #[arg(long, default_value = local::TESTNET_PROVIDER_GPUS, value_parser = parse_simulated)]
        provider_gpus: String,
        #[arg(long)]
        json: bool,
    },
    /// Height and peers of every node
    Status {
        #[arg(long, default_value = DEFAULT_TESTNET_DIR)]
        dir: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Stop every process the testnet started (and nothing else)
    Down {
        #[arg(long, default_value = DEFAULT_TESTNET_DIR)]
        dir: PathBuf,
    },
    /// SIGKILL node I
    Kill {
        index: usize,
        #[arg(long, default_value = DEFAULT_TESTNET_DIR)]
        dir: PathBuf,
    },
    /// SIGSTOP node I
    Pause {
        index: usize,
        #[arg(long, default_value = DEFAULT_TESTNET_DIR)]
        dir: PathBuf,
    },
    /// SIGCONT node I
    Resume {
        index: usize,
        #[arg(long, default_value = DEFAULT_TESTNET_DIR)]
        dir: PathBuf,
    },
    /// Start node I again on its home
    Restart {
        index: usize,
        #[arg(long, default_value = DEFAULT_TESTNET_DIR)]
        dir: PathBuf,
    },
    /// Split the testnet: nodes in different groups ("0,1|2,3") drop each other's traffic
    Partition {
        /// Groups of node indices separated by |, e.g. "0|1,2,3"
        groups: String,
        #[arg(long, default_value = DEFAULT_TESTNET_DIR)]
        dir: PathBuf,
    },
    /// End a partition: every node reconnects to every other
    Heal {
        #[arg(long, default_value = DEFAULT_TESTNET_DIR)]
        dir: PathBuf,
    },
    /// The main job: a 4-node testnet, the offers, a buyer's job on leased GPUs, its output, the settlement
    Demo {
        /// Keep the testnet's homes, ledgers and logs here (must not hold a testnet) instead of a temporary directory
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// First port; node i uses base+2i (P2P) and base+2i+1 (API)
        #[arg(long, default_value_t = 27_200)]
        base_port: u16,
        /// Print the report as JSON
        #[arg(long)]
        json: bool,
        /// The job to run on the leased GPUs [default: a shell one-liner that prints the GPUs it sees]
        #[arg(last = true, value_name = "COMMAND")]
        job: Vec<String>,
    },
}

/// `sandbox` or `process` (docker runs image jobs alongside either).
pub fn parse_runner(s: &str) -> Result<Runner, String> {
    match s {
        "sandbox" => Ok(Runner::Sandbox),
        "process" => Ok(Runner::Process),
        _ => Err(format!("{s:?}: expected sandbox or process")),
    }
}

pub fn run(cmd: TestnetCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        TestnetCommand::Demo { dir, json, job, base_port } => crate::demo::run(dir, json, job, base_port),
        TestnetCommand::Up {
            nodes,
            validators,
            providers,
            dir,
            base_port,
            commit_pause_ms,
            runner,
            provider_gpus,
            json,
        } => {
            let agora = std::env::current_exe()?;
            let mut progress = |line: String| {
                if !json {
                    println!("{line}");
                }
            };
            let providers = providers.unwrap_or(nodes.min(2));
            let options = local::UpOptions {
                validators,
                commit_pause_ms,
                runner,
                provider_gpus,
                ..local::UpOptions::new(nodes, providers, base_port)
            };
            let file = local::up(&agora, &dir, &options, &mut progress)?;
            if json {
                print_json(&file)?;
            } else {
                print_nodes(&file);
                println!("testnet running; described in {}", dir.join(local::TESTNET_FILE).display());
                println!("buyer key: agora --home {} keys show", file.buyer_home.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        TestnetCommand::Status { dir, json } => {
            let file = local::TestnetFile::load(&dir)?;
            let rows: Vec<serde_json::Value> = file
                .nodes
                .iter()
                .map(|n| {
                    let status = agora_testnet::http::get(&n.api_url, "/v1/status").ok().and_then(|r| r.json().ok());
                    serde_json::json!({"index": n.index, "pid": n.pid, "api_url": n.api_url, "status": status})
                })
                .collect();
            if json {
                print_json(&rows)?;
            } else {
                println!("{:<6} {:<8} {:<24} {:>8} {:>6}", "NODE", "PID", "API", "HEIGHT", "PEERS");
                for r in rows {
                    let s = &r["status"];
                    let h = s["height"].as_u64().map_or("down".to_string(), |h| h.to_string());
                    let p = s["peers"].as_u64().map_or("-".to_string(), |p| p.to_string());
                    println!(
                        "{:<6} {:<8} {:<24} {:>8} {:>6}",
                        r["index"],
                        r["pid"],
                        r["api_url"].as_str().unwrap_or(""),
                        h,
                        p
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        TestnetCommand::Down { dir } => {
            for (i, was_running) in local::down(&dir)? {
                println!("node{i}: {}", if was_running { "stopped" } else { "was not running" });
            }
            Ok(ExitCode::SUCCESS)
        }
        TestnetCommand::Kill { index, dir } => signal(&dir, index, "kill"),
        TestnetCommand::Pause { index, dir } => signal(&dir, index, "pause"),
        TestnetCommand::Resume { index, dir } => signal(&dir, index, "resume"),
        TestnetCommand::Partition { groups, dir } => {
            let groups = local::partition(&dir, &groups)?;
            let text: Vec<String> =
                groups.iter().map(|g| g.iter().map(|i| format!("node{i}")).collect::<Vec<_>>().join(" ")).collect();
            println!("partitioned: {}", text.join(" | "));
            Ok(ExitCode::SUCCESS)
        }
        TestnetCommand::Heal { dir } => {
            local::heal(&dir)?;
            println!("healed: every node accepts every peer again");
            Ok(ExitCode::SUCCESS)
        }
        TestnetCommand::Restart { index, dir } => {
            let pid = local::restart(&std::env::current_exe()?, &dir, index)?;
            println!("node{index} restarted (pid {pid})");
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn signal(dir: &std::path::Path, index: usize, what: &str) -> anyhow::Result<ExitCode> {
    local::signal(dir, index, what)?;
    println!("node{index}: {what}");
    Ok(ExitCode::SUCCESS)
}

fn print_nodes(file: &local::TestnetFile) {
    println!("{:<6} {:<8} {:<24} {:<20} {:<64}", "NODE", "PID", "API", "ROLE", "ADDRESS");
    for n in &file.nodes {
        let role = match (n.validator, n.provider) {
            (true, true) => "validator, provider",
            (true, false) => "validator",
            (false, true) => "full node, provider",
            (false, false) => "full node",
        };
        println!("{:<6} {:<8} {:<24} {:<20} {:<64}", n.index, n.pid, n.api_url, role, n.address);
    }
}

/// A testnet's providers declare simulated GPUs only (a testnet runs on one
/// machine, whatever GPUs it has).
fn parse_simulated(text: &str) -> Result<String, String> {
    match text.parse::<agora_node::gpu::GpuSource>() {
        Ok(agora_node::gpu::GpuSource::Simulated(_)) => Ok(text.to_string()),
        Ok(_) => Err("a testnet's providers declare simulated GPUs: simulated:COUNTxMODEL-VRAMGB[,…]".into()),
        Err(e) => Err(e.to_string()),
    }
}
