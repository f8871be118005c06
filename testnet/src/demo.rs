//! `agora testnet demo`: the market path end to end on one machine, in one
//! process, on the real ledger state machine and a real sled store: a
//! provider stakes and registers simulated GPUs, a buyer signs a lease
//! request, the provider countersigns, escrow locks, the job runs as a real
//! child process with the leased GPU ids, and the lease settles pro-rata.
//! Blocks are produced by the real consensus engine with one validator, and
//! committed with their certificates; networking arrives with the node issue.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use agora_ledger::consensus::{Action, Engine, EngineConfig, Input};
use agora_ledger::{Event, Genesis, GenesisAccount, Params, SigCheck, Store, apply_tx};
use agora_node::keystore;
use agora_protocol::{
    Address, Amount, ChainId, GpuSpec, Hash, Keypair, LeaseAccept, LeaseId, LeaseRequest, Signed, SignedTx,
    TimestampMs, Transaction, TxKind,
};
use serde::Serialize;

use crate::error::Error;

/// The demo network's chain id.
pub const DEMO_CHAIN_ID: &str = "agora-demo-1";
/// The job a buyer runs when none is given.
pub const DEFAULT_JOB: &[&str] =
    &["sh", "-c", "echo 'hello from an agora lease'; echo \"leased GPUs: $CUDA_VISIBLE_DEVICES\"; sleep 2"];
/// Simulated GPUs the demo provider offers.
const DEMO_GPU_MODEL: &str = "H100-80GB";
const DEMO_GPUS: u32 = 2;
/// Price per GPU-hour asked by the demo provider.
const DEMO_PRICE: Amount = Amount(2_500_000);
/// Lease length the buyer pays for up front.
const DEMO_LEASE_SECS: u64 = 3_600;
/// Largest job output the demo keeps in memory.
const MAX_JOB_OUTPUT_BYTES: usize = 64 * 1024;

/// What the demo did, for humans (progress lines) and `--json`.
#[derive(Debug, Serialize)]
pub struct DemoReport {
    pub chain_id: String,
    pub dir: PathBuf,
    pub provider: Address,
    pub buyer: Address,
    pub lease_id: LeaseId,
    pub gpu_ids: Vec<String>,
    pub escrow: Amount,
    pub job_exit_code: Option<i32>,
    pub job_output: String,
    pub provider_paid: Amount,
    pub buyer_refunded: Amount,
    pub buyer_balance_before: Amount,
    pub buyer_balance_after: Amount,
    pub provider_balance_before: Amount,
    pub provider_balance_after: Amount,
    pub height: u64,
    pub state_root: Hash,
    pub supply_conserved: bool,
}

/// The demo's single validator: the real consensus engine (proposal,
/// votes, commit certificate) over the real sled store and WAL.
struct Demo {
    store: Store,
    engine: Engine,
    chain: ChainId,
    /// The engine's next-height timer, fired when the demo wants a block.
    next: Option<Input>,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl Demo {
    /// Has consensus produce and commit one block holding `txs`, all of
    /// which must apply; returns the block's events.
    fn block(&mut self, what: &'static str, txs: Vec<SignedTx>) -> Result<Vec<Event>, Error> {
        // Checked first so a refusal is reported plainly, not silently left out.
        let mut scratch = self.store.state().clone();
        for tx in &txs {
            apply_tx(&mut scratch, tx, SigCheck::Verify)
                .map_err(|e| Error::Rejected { what, reason: e.to_string() })?;
        }
        let wanted = txs.len();
        self.engine.handle(now_ms(), Input::Txs(txs));
        let input = self.next.take().unwrap_or(Input::Start);
        let mut events = None;
        for action in self.engine.handle(now_ms(), input) {
            match action {
                Action::WalAppend { height, entry } => self.store.wal_append(height, &entry)?,
                Action::Commit { block, certificate, .. } => {
                    if block.txs.len() != wanted {
                        return Err(Error::Rejected { what, reason: "left out of the block".into() });
                    }
                    events = Some(self.store.commit_decided(&block, &certificate)?.events);
                }
                Action::ScheduleTimeout { timer, .. } if timer.is_next_height() => {
                    self.next = Some(Input::TimeoutElapsed(timer));
                }
                _ => {}
            }
        }
        events.ok_or(Error::Rejected { what, reason: "consensus did not commit a block".into() })
    }

    fn tx(&self, key: &Keypair, kind: TxKind) -> Result<SignedTx, Error> {
        let nonce = self.store.state().account(&key.address()).nonce;
        Ok(Signed::sign(Transaction { nonce, kind }, key, &self.chain)?)
    }
}

/// Runs the demo in `dir` (created; must be empty if it exists), reporting
/// each step through `progress`.
pub fn run(dir: &Path, job: &[String], progress: &mut dyn FnMut(String)) -> Result<DemoReport, Error> {
    prepare_dir(dir)?;
    let keys = dir.join("home");
    let validator = keystore::create(&keys, "validator")?.keypair;
    let provider = keystore::create(&keys, "provider")?.keypair;
    let buyer = keystore::create(&keys, "buyer")?.keypair;
    let genesis = demo_genesis(&validator, &provider, &buyer, now_ms())?;
    let chain = genesis.chain_id.clone();
    let store = Store::open(&dir.join("ledger"), &genesis)?;
    progress(format!("genesis: chain {chain}, 1 validator, ledger at {}", dir.join("ledger").display()));
    let config = EngineConfig { commit_pause: Duration::ZERO, ..EngineConfig::default() };
    let engine = Engine::new(chain.clone(), validator, store.state().clone(), None, config);
    let mut demo = Demo { store, engine, chain, next: None };

    let gpus = vec![GpuSpec { model: DEMO_GPU_MODEL.into(), vram_mib: 81_920, count: DEMO_GPUS, simulated: true }];
    let stake = demo.tx(&provider, TxKind::Stake { amount: Amount::agr(500) })?;
    demo.block("stake", vec![stake])?;
    let register = demo.tx(&provider, TxKind::RegisterProvider { region: "local".into(), gpus })?;
    demo.block("register", vec![register])?;
    progress(format!(
        "provider {} staked 500 AGR and offers {DEMO_GPUS}x {DEMO_GPU_MODEL} (simulated) at {DEMO_PRICE}/GPU-hour",
        provider.address()
    ));

    let state = demo.store.state();
    let (buyer_before, provider_before) =
        (state.account(&buyer.address()).balance, state.account(&provider.address()).balance);
    let request = LeaseRequest {
        provider: provider.address(),
        offer_seq: 1,
        gpu_model: DEMO_GPU_MODEL.into(),
        gpus: DEMO_GPUS,
        price_per_gpu_hour: DEMO_PRICE,
        duration_secs: DEMO_LEASE_SECS,
        job_spec_hash: Hash(*blake3::hash(job.join("\0").as_bytes()).as_bytes()),
        nonce: now_ms(),
        expires_at_ms: TimestampMs(now_ms() + 60_000),
    };
    // The buyer signs locally; the provider countersigns with the GPUs it reserves.
    let request = Signed::sign(request, &buyer, &demo.chain)?;
    let lease_id = request.lease_id()?;
    let gpu_ids: Vec<String> = (0..DEMO_GPUS).map(|i| format!("SIM-{DEMO_GPU_MODEL}-{i}")).collect();
    let accept = Signed::sign(LeaseAccept { lease_id, gpu_ids: gpu_ids.clone() }, &provider, &demo.chain)?;
    let open = demo.tx(&provider, TxKind::OpenLease { request, accept })?;
    demo.block("open-lease", vec![open])?;
    let escrow = demo.store.state().lease(&lease_id).map(|l| l.escrow).unwrap_or_default();
    progress(format!("lease {lease_id} opened on chain: {escrow} locked in escrow for {DEMO_GPUS} GPUs x 1 hour"));

    let workdir = dir.join("jobs").join(lease_id.to_string());
    progress(format!("running job: {}", job.join(" ")));
    let (exit_code, output) = run_job(job, &workdir, &gpu_ids, lease_id, Duration::from_secs(DEMO_LEASE_SECS))?;
    for line in output.lines() {
        progress(format!("  | {line}"));
    }
    let close = demo.tx(&provider, TxKind::CloseLease { lease_id, exit_code })?;
    let events = demo.block("close-lease", vec![close])?;
    let (paid, refunded) = events
        .iter()
        .find_map(|e| match e {
            Event::LeaseSettled { paid, refunded, .. } => Some((*paid, *refunded)),
            _ => None,
        })
        .unwrap_or_default();
    let ended =
        exit_code.map_or("was killed at the lease's time limit".to_string(), |c| format!("exited with code {c}"));
    progress(format!("job {ended}; lease settled: provider paid {paid}, buyer refunded {refunded}"));

    let height = demo.store.height();
    let root = demo.store.state().root();
    let supply_conserved = demo.store.state().audit().is_ok();
    let (buyer_after, provider_after) =
        (demo.store.state().account(&buyer.address()).balance, demo.store.state().account(&provider.address()).balance);
    drop(demo);
    // Reopen from disk: the same height and root come back.
    let reopened = Store::open(&dir.join("ledger"), &genesis)?;
    progress(format!(
        "reopened the ledger from disk at height {} with state root {}",
        reopened.height(),
        reopened.state().root()
    ));
    Ok(DemoReport {
        chain_id: DEMO_CHAIN_ID.into(),
        dir: dir.to_path_buf(),
        provider: provider.address(),
        buyer: buyer.address(),
        lease_id,
        gpu_ids,
        escrow,
        job_exit_code: exit_code,
        job_output: output,
        provider_paid: paid,
        buyer_refunded: refunded,
        buyer_balance_before: buyer_before,
        buyer_balance_after: buyer_after,
        provider_balance_before: provider_before,
        provider_balance_after: provider_after,
        height: height.0,
        state_root: root,
        supply_conserved: supply_conserved && reopened.state().root() == root && reopened.height() == height,
    })
}

fn prepare_dir(dir: &Path) -> Result<(), Error> {
    let io = |source| Error::Io { path: dir.to_path_buf(), source };
    if dir.exists() && fs::read_dir(dir).map_err(io)?.next().is_some() {
        return Err(Error::DirNotEmpty(dir.to_path_buf()));
    }
    fs::create_dir_all(dir).map_err(|source| Error::Io { path: dir.to_path_buf(), source })
}

fn demo_genesis(validator: &Keypair, provider: &Keypair, buyer: &Keypair, now: u64) -> Result<Genesis, Error> {
    let account = |k: &Keypair, balance, stake| GenesisAccount { address: k.address(), balance, stake };
    Ok(Genesis {
        chain_id: ChainId::new(DEMO_CHAIN_ID)?,
        genesis_time_ms: TimestampMs(now),
        params: Params::default(),
        accounts: vec![
            account(validator, Amount::agr(1_000), Amount::agr(1_000)),
            account(provider, Amount::agr(1_000), Amount::ZERO),
            account(buyer, Amount::agr(100), Amount::ZERO),
        ],
        validators: vec![validator.address()],
    })
}

/// Runs the job as a child process: cleared environment plus the lease's
/// GPU ids, its own working directory, stdout and stderr captured (bounded),
/// killed at the time limit. Returns its exit code (None if killed) and output.
fn run_job(
    job: &[String],
    workdir: &Path,
    gpu_ids: &[String],
    lease_id: LeaseId,
    limit: Duration,
) -> Result<(Option<i32>, String), Error> {
    let (program, args) = job.split_first().ok_or(Error::EmptyJob)?;
    fs::create_dir_all(workdir).map_err(|source| Error::Io { path: workdir.to_path_buf(), source })?;
    let out_path = workdir.join("output.log");
    let out = fs::File::create(&out_path).map_err(|source| Error::Io { path: out_path.clone(), source })?;
    let err = out.try_clone().map_err(|source| Error::Io { path: out_path.clone(), source })?;
    let mut child = Command::new(program)
        .args(args)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("HOME", workdir)
        .env("CUDA_VISIBLE_DEVICES", gpu_ids.join(","))
        .env("AGORA_LEASE_ID", lease_id.to_string())
        .env("AGORA_GPUS_SIMULATED", "1")
        .current_dir(workdir)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(Error::JobStart)?;
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait().map_err(Error::JobStart)? {
            Some(status) => break Some(status),
            None if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    let mut output = fs::read(&out_path).map_err(|source| Error::Io { path: out_path, source })?;
    output.truncate(MAX_JOB_OUTPUT_BYTES);
    Ok((status.and_then(|s| s.code()), String::from_utf8_lossy(&output).into_owned()))
}
