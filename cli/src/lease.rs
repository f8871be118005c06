//! The buyer's commands: `agora submit` (find an offer, sign a lease request,
//! get the provider's countersignature, open the lease on chain, and with
//! `--wait` follow the job to its end) and `agora lease list|status|logs|cancel`.
//! Everything is signed here with the key under `--home`.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use agora_protocol::job::{JobSpec, JobState, LogsRequest, RunRequest};
use agora_protocol::{Address, Amount, Keypair, LeaseId, LeaseRequest, Signed, TimestampMs, TxKind, codec};
use agora_testnet::http;
use anyhow::{Context, anyhow, bail};
use clap::{Args, Subcommand};

use crate::client::{NodeArgs, chain_id, parse_amount, submit_and_wait};
use crate::print_json;
use crate::view::{micros, text};

/// How long a signed lease request stays valid: time to negotiate and commit.
const REQUEST_TTL_MS: u64 = 120_000;
/// How often `--wait` and `logs --follow` ask for more output.
const POLL: Duration = Duration::from_millis(300);
/// How long `--wait` waits for the lease to appear on the ledger.
const OPEN_WAIT: Duration = Duration::from_secs(120);

#[derive(Args)]
pub struct SubmitArgs {
    /// GPUs to lease (of one kind)
    #[arg(long)]
    gpus: u32,
    /// GPU model (case-insensitive part of the name, e.g. h100)
    #[arg(long)]
    model: Option<String>,
    /// Minimum VRAM per GPU, in GB
    #[arg(long, value_name = "GB")]
    min_vram: Option<u32>,
    /// Highest price per GPU-hour you accept (AGR)
    #[arg(long)]
    max_price: Option<String>,
    /// Lease from this provider (agora1…) instead of the cheapest match
    #[arg(long)]
    provider: Option<String>,
    /// How long to lease the GPUs: 90s, 30m, 2h, 1h30m
    #[arg(long)]
    duration: String,
    #[command(flatten)]
    job: JobArgs,
    /// Follow the lease to the end, print the job's output and exit with its exit code
    #[arg(long)]
    wait: bool,
    /// Lease nothing: say, offer by offer, whether it would take this lease
    /// and why not (exit 1 if none would)
    #[arg(long)]
    explain: bool,
    /// The key under --home that pays
    #[arg(long, default_value = "default")]
    key: String,
    #[command(flatten)]
    node: NodeArgs,
    /// The job: program and arguments
    #[arg(last = true, required = true, value_name = "COMMAND")]
    command: Vec<String>,
}

#[derive(Subcommand)]
pub enum LeaseCommand {
    /// Your leases (as buyer), newest first
    List(KeyArgs),
    /// A lease's terms, settlement and job state (--prove: its terms checked against the certified state)
    Status {
        id: String,
        #[command(flatten)]
        prove: crate::prove::ProveArgs,
        #[command(flatten)]
        key: KeyArgs,
    },
    /// A lease's job output (from its provider; only its buyer may read it)
    Logs {
        id: String,
        /// Keep printing until the job ends
        #[arg(long)]
        follow: bool,
        #[command(flatten)]
        key: KeyArgs,
    },
    /// Stop a lease early: the provider is paid for the time used, the rest is refunded
    Cancel {
        id: String,
        #[command(flatten)]
        key: KeyArgs,
    },
    /// Give a lease you hold to another account (it then holds the GPU time and any refund)
    Transfer {
        id: String,
        to: String,
        #[command(flatten)]
        key: KeyArgs,
    },
    /// Offer a lease you hold for sale (--withdraw: take the offer back)
    Sell {
        id: String,
        /// The price for the whole remaining lease, in AGR
        #[arg(long, required_unless_present = "withdraw")]
        price: Option<String>,
        #[arg(long)]
        withdraw: bool,
        #[command(flatten)]
        key: KeyArgs,
    },
    /// Run a job on an auctioned lease you hold (one at a time, until its time runs out)
    Run(RunArgs),
    /// Buy more time on a lease you hold, at its price, before it runs out
    Extend {
        id: String,
        /// Hours to add
        #[arg(long)]
        hours: u32,
        #[command(flatten)]
        key: KeyArgs,
    },
    /// Buy a lease offered for sale: the seller is paid and you hold it, in one step
    Buy {
        id: String,
        /// The most you pay, in AGR (the listing's price if it is no more)
        #[arg(long)]
        max_price: String,
        #[command(flatten)]
        key: KeyArgs,
    },
}

/// How a job runs, as `submit` and `lease run` take it.
#[derive(Args)]
pub struct JobArgs {
    /// Environment variable for the job, K=V (repeatable)
    #[arg(long = "env", value_name = "K=V")]
    env: Vec<String>,
    /// Run the command in this container image (providers that allow docker)
    #[arg(long)]
    image: Option<String>,
    /// Ask for outbound network access for the job (container jobs, on providers that allow it)
    #[arg(long)]
    egress: bool,
}

impl JobArgs {
    /// The job spec for `command` with these options.
    fn spec(&self, command: &[String]) -> anyhow::Result<JobSpec> {
        job_spec(command, &self.env, self.image.as_deref(), self.egress)
    }
}

#[derive(Args)]
pub struct RunArgs {
    /// The lease (from an auction, or bought or given to you)
    id: String,
    #[command(flatten)]
    job: JobArgs,
    /// Print the job's output until it ends and exit with its exit code
    #[arg(long)]
    wait: bool,
    #[command(flatten)]
    key: KeyArgs,
    /// The job: program and arguments
    #[arg(last = true, required = true, value_name = "COMMAND")]
    command: Vec<String>,
}

#[derive(Args)]
pub struct KeyArgs {
    /// The buyer's key under --home
    #[arg(long, default_value = "default")]
    key: String,
    #[command(flatten)]
    node: NodeArgs,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Parses 90s, 30m, 2h, 1h30m, 1d (a bare number is seconds).
pub fn parse_duration(text: &str) -> anyhow::Result<u64> {
    let bad = || anyhow!("bad duration {text:?}: use e.g. 90s, 30m, 2h or 1h30m");
    if let Ok(secs) = text.parse::<u64>() {
        return if secs > 0 { Ok(secs) } else { Err(bad()) };
    }
    let mut total: u64 = 0;
    let mut number = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(bad()),
        };
        let n: u64 = number.parse().map_err(|_| bad())?;
        total = n.checked_mul(unit).and_then(|v| total.checked_add(v)).ok_or_else(bad)?;
        number.clear();
    }
    if !number.is_empty() || total == 0 {
        return Err(bad());
    }
    Ok(total)
}

/// Progress lines go to stderr so stdout carries only the job's output (or JSON).
fn progress(json: bool, line: String) {
    if !json {
        eprintln!("{line}");
    }
}

/// What a buyer asks for.
pub struct Ask {
    pub gpus: u32,
    pub model: Option<String>,
    pub min_vram_gb: Option<u32>,
    pub max_price: Option<Amount>,
    pub provider: Option<Address>,
    pub duration_secs: u64,
    pub spec: JobSpec,
}

/// A lease opened on the ledger.
#[derive(serde::Serialize)]
pub struct Opened {
    pub lease_id: LeaseId,
    pub provider: Address,
    pub gpu_model: String,
    pub gpu_ids: Vec<String>,
    pub price_per_gpu_hour: Amount,
    pub escrow: Amount,
    pub height: u64,
}

/// The signed offer behind an order-book entry, if it decodes and its signature verifies.
fn verified_offer(entry: &serde_json::Value, chain: &agora_protocol::ChainId) -> Option<Signed<agora_protocol::Offer>> {
    let bytes = hex::decode(entry["signed"].as_str()?).ok()?;
    let offer: Signed<agora_protocol::Offer> = codec::decode(&bytes).ok()?;
    offer.verify(chain).ok()?;
    offer.body.validate().ok()?;
    Some(offer)
}

/// Picks the cheapest matching offer, signs the request, gets the provider's
/// countersignature through the node, and opens the lease on the ledger.
pub fn open_lease(keypair: &Keypair, ask: &Ask, node: &NodeArgs) -> anyhow::Result<Opened> {
    ask.spec.validate()?;
    let offers = node.get(&format!("/v1/offers?gpus={}", ask.gpus))?;
    let chain = chain_id(node)?;
    let mut candidates = Vec::new();
    for o in offers.as_array().into_iter().flatten() {
        let addr: Address = text(&o["provider"]).parse()?;
        // The terms come from the provider's signed offer, never from the node's JSON about it.
        let Some(offer) = verified_offer(o, &chain) else {
            progress(node.json, format!("the offer of {addr} does not verify; skipped"));
            continue;
        };
        let node_key: Address = o["signed_by"].as_str().map(str::parse).transpose()?.unwrap_or(addr);
        // (Which operator key an account named is the node's word until light-client proofs land.)
        if offer.signer != node_key {
            progress(node.json, format!("the offer of {addr} is signed by another key; skipped"));
            continue;
        }
        let price = offer.body.price_per_gpu_hour;
        if ask.provider.is_some_and(|p| p != addr)
            || ask.max_price.is_some_and(|m| price > m)
            || offer.body.max_duration_secs < ask.duration_secs
            || offer.body.expires_at_ms.0 <= now_ms()
        {
            continue;
        }
        let kind = offer.body.gpus.iter().find(|g| {
            ask.model.as_ref().is_none_or(|m| g.model.to_lowercase().contains(&m.to_lowercase()))
                && ask.min_vram_gb.is_none_or(|v| u64::from(g.vram_mib) >= u64::from(v) * 1024)
                && g.count >= ask.gpus
        });
        if let Some(kind) = kind {
            // The provider's node may sign with an operator key the provider named on the ledger.
            candidates.push((addr, node_key, offer.body.seq, kind.model.clone(), price));
        }
    }
    if candidates.is_empty() {
        bail!(
            "no offer matches: {} GPU(s){}{}{} for {} s; see `agora offers`",
            ask.gpus,
            ask.model.as_ref().map(|m| format!(" of model {m}")).unwrap_or_default(),
            ask.max_price.map(|p| format!(" at most {p}/GPU-hour")).unwrap_or_default(),
            ask.provider.map(|p| format!(" from {p}")).unwrap_or_default(),
            ask.duration_secs,
        );
    }
    // Cheapest first; a provider whose GPUs are all taken sends the request
    // on to the next offer (offers show GPUs, not how many are free now).
    let last = candidates.len() - 1;
    let mut accepted = None;
    for (i, (provider, node_key, offer_seq, gpu_model, price)) in candidates.into_iter().enumerate() {
        let request = LeaseRequest {
            provider,
            offer_seq,
            gpu_model: gpu_model.clone(),
            gpus: ask.gpus,
            price_per_gpu_hour: price,
            duration_secs: ask.duration_secs,
            job_spec_hash: ask.spec.hash()?,
            nonce: SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
                ^ u64::from(std::process::id()),
            expires_at_ms: TimestampMs(now_ms() + REQUEST_TTL_MS),
        };
        let escrow = request.escrow().ok_or_else(|| anyhow!("price × GPUs × duration overflows"))?;
        let request = Signed::sign(request, keypair, &chain)?;
        let lease_id = request.lease_id()?;
        progress(
            node.json,
            format!(
                "asking {provider} for {}x {gpu_model} at {price}/GPU-hour for {} s (escrow {escrow})",
                ask.gpus, ask.duration_secs
            ),
        );
        let body = serde_json::json!({
            "request": hex::encode(codec::encode(&request)?),
            "spec": hex::encode(codec::encode(&ask.spec)?),
        });
        let reply = http::post(&node.url(), "/v1/leases/propose", &body.to_string())?;
        let answer = reply.json()?;
        if reply.status >= 400 {
            let why = answer["error"].as_str().unwrap_or("no reason given").to_string();
            if i < last && answer["code"] == agora_protocol::job::RefusalCode::NoFreeGpus.as_str() {
                progress(node.json, format!("{why}; trying the next offer"));
                continue;
            }
            bail!("the provider refused: {why}");
        }
        let accept_bytes = hex::decode(text(&answer["accept"])).context("acceptance is not hex")?;
        let accept: Signed<agora_protocol::LeaseAccept> = codec::decode(&accept_bytes)?;
        anyhow::ensure!(
            (accept.signer == provider || accept.signer == node_key) && accept.body.lease_id == lease_id,
            "the acceptance is not for this lease"
        );
        accept.verify(&chain).map_err(|_| anyhow!("the provider's countersignature does not verify"))?;
        accepted = Some((request, accept, provider, gpu_model, price, escrow, lease_id));
        break;
    }
    let Some((request, accept, provider, gpu_model, price, escrow, lease_id)) = accepted else {
        bail!("every matching provider is full; try again later");
    };
    let gpu_ids = accept.body.gpu_ids.clone();
    progress(node.json, format!("accepted: GPUs {}; opening lease {lease_id} on the ledger", gpu_ids.join(",")));
    let (_, height) = submit_and_wait(keypair, TxKind::OpenLease { request, accept }, node)?;
    Ok(Opened { lease_id, provider, gpu_model, gpu_ids, price_per_gpu_hour: price, escrow, height })
}

/// How a followed lease ended.
pub struct Finished {
    pub state: agora_protocol::job::JobState,
    pub output: Vec<u8>,
    pub lease: serde_json::Value,
}

impl Finished {
    /// The job's exit code, or 1 when it did not exit by itself.
    pub fn exit_code(&self) -> i32 {
        exit_code(&self.state)
    }
}

/// A job's exit code, or 1 when it did not exit by itself.
pub fn exit_code(state: &JobState) -> i32 {
    match state {
        JobState::Exited { code } => code.unwrap_or(1),
        _ => 1,
    }
}

/// Follows an opened lease: prints the job's output as it comes (if
/// `print`), then waits for the settlement on the ledger.
pub fn follow(keypair: &Keypair, lease_id: LeaseId, node: &NodeArgs, print: bool) -> anyhow::Result<Finished> {
    let chain = chain_id(node)?;
    let (state, output) = follow_logs(keypair, &chain, lease_id, node, true, print)?;
    let lease = wait_settled(node, lease_id)?;
    Ok(Finished { state, output, lease })
}

pub fn submit(home: &Path, args: SubmitArgs) -> anyhow::Result<ExitCode> {
    let keypair = agora_node::keystore::load(home, &args.key)?.keypair;
    let duration_secs = parse_duration(&args.duration)?;
    anyhow::ensure!(args.gpus > 0, "--gpus must be at least 1");
    let spec = args.job.spec(&args.command)?;
    if args.explain {
        return explain_submit(&keypair, &args, duration_secs);
    }
    let ask = Ask {
        gpus: args.gpus,
        model: args.model.clone(),
        min_vram_gb: args.min_vram,
        max_price: args.max_price.as_deref().map(parse_amount).transpose()?,
        provider: args.provider.as_deref().map(str::parse).transpose()?,
        duration_secs,
        spec,
    };
    let node = &args.node;
    let opened = open_lease(&keypair, &ask, node)?;
    let lease_id = opened.lease_id;
    if !args.wait {
        if node.json {
            print_json(&opened)?;
        } else {
            println!("{lease_id}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    progress(node.json, format!("lease {lease_id} opened at height {}; the job starts", opened.height));
    let finished = follow(&keypair, lease_id, node, !node.json)?;
    let code = finished.exit_code();
    if node.json {
        print_json(&serde_json::json!({ "lease_id": lease_id, "job": finished.state, "lease": finished.lease }))?;
    } else {
        let s = &finished.lease["status"]["Settled"];
        eprintln!(
            "lease {lease_id}: {}; paid {} to the provider, refunded {}",
            describe(&finished.state),
            micros(&s["paid"]),
            micros(&s["refunded"])
        );
    }
    Ok(ExitCode::from(u8::try_from(code.clamp(0, 255)).unwrap_or(1)))
}

/// `agora submit --explain`: every offer in the node's book, judged.
fn explain_submit(keypair: &Keypair, args: &SubmitArgs, duration_secs: u64) -> anyhow::Result<ExitCode> {
    let node = &args.node;
    let mut path =
        format!("/v1/market/explain/spot?gpus={}&duration_secs={duration_secs}&buyer={}", args.gpus, keypair.address());
    if let Some(m) = &args.model {
        anyhow::ensure!(m.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'), "--model: letters, digits and '-'");
        path.push_str(&format!("&model={m}"));
    }
    if let Some(v) = args.min_vram {
        path.push_str(&format!("&min_vram_gb={v}"));
    }
    if let Some(p) = &args.max_price {
        path.push_str(&format!("&max_price={}uagr", parse_amount(p)?.0));
    }
    if let Some(p) = &args.provider {
        path.push_str(&format!("&provider={}", p.parse::<Address>()?));
    }
    let e = node.get(&path)?;
    let offers = e["offers"].as_array().cloned().unwrap_or_default();
    let any = offers.iter().any(|o| o["matches"] == true);
    if node.json {
        print_json(&e)?;
    } else {
        println!(
            "{} GPU(s){} for {duration_secs} s, offer by offer (cheapest first):",
            args.gpus,
            args.model.as_ref().map(|m| format!(" of model {m}")).unwrap_or_default()
        );
        if offers.is_empty() {
            println!("  no offers in this node's book (providers announce every few minutes; see `agora offers`)");
        }
        for o in &offers {
            let verdict = if o["matches"] == true {
                format!("would lease {}", text(&o["model"]))
            } else {
                "would not".to_string()
            };
            println!("  {}  {}/GPU-hour: {verdict}", text(&o["provider"]), micros(&o["price_per_gpu_hour"]));
            crate::market::print_reasons(&o["reasons"], "    ");
        }
    }
    Ok(if any { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// The job spec from the command line's command, `--env K=V`s, `--image` and `--egress`.
pub fn job_spec(command: &[String], env: &[String], image: Option<&str>, egress: bool) -> anyhow::Result<JobSpec> {
    let mut pairs = Vec::new();
    for kv in env {
        let (k, v) = kv.split_once('=').ok_or_else(|| anyhow!("--env {kv:?}: expected K=V"))?;
        pairs.push((k.to_string(), v.to_string()));
    }
    if let Some(image) = image {
        agora_protocol::job::validate_image_ref(image).map_err(|e| anyhow!("--image: {e}"))?;
    }
    let spec = JobSpec { command: command.to_vec(), env: pairs, image: image.map(str::to_string), egress };
    spec.validate().map_err(|e| anyhow!("{e}"))?;
    Ok(spec)
}

/// `agora lease run`: the holder's signed run request to the lease's
/// provider; with `--wait`, the job's output and exit code (the lease stays
/// open for the next job).
fn run_job(home: &Path, args: RunArgs) -> anyhow::Result<ExitCode> {
    let id: LeaseId = args.id.parse()?;
    let keypair = agora_node::keystore::load(home, &args.key.key)?.keypair;
    let spec = args.job.spec(&args.command)?;
    run_on_lease(&keypair, id, spec, &args.key.node, args.wait)
}

/// Starts `spec` on the auctioned lease `id` (signed by its holder); with
/// `wait`, prints its output and returns its exit code.
pub fn run_on_lease(
    keypair: &Keypair,
    id: LeaseId,
    spec: JobSpec,
    node: &NodeArgs,
    wait: bool,
) -> anyhow::Result<ExitCode> {
    let chain = chain_id(node)?;
    let answer = start_run(keypair, &chain, id, spec, node)?;
    let gpus =
        answer["gpu_ids"].as_array().map(|a| a.iter().map(text).collect::<Vec<_>>().join(",")).unwrap_or_default();
    if !wait {
        if node.json {
            print_json(&answer)?;
        } else {
            println!("job started on lease {id} (GPUs {gpus}); `agora lease logs {id} --follow` shows its output");
        }
        return Ok(ExitCode::SUCCESS);
    }
    progress(node.json, format!("job started on lease {id} (GPUs {gpus})"));
    let (state, _) = follow_logs(keypair, &chain, id, node, true, !node.json)?;
    let code = exit_code(&state);
    if node.json {
        print_json(&serde_json::json!({ "lease_id": id, "gpu_ids": answer["gpu_ids"], "job": state }))?;
    } else {
        eprintln!("lease {id}: {}; the lease stays open for your next job", describe(&state));
    }
    Ok(ExitCode::from(u8::try_from(code.clamp(0, 255)).unwrap_or(1)))
}

/// Asks the provider of the auctioned lease `id` to start `spec`, signed by
/// its holder; the provider's answer (the GPUs it runs on).
pub fn start_run(
    keypair: &Keypair,
    chain: &agora_protocol::ChainId,
    id: LeaseId,
    spec: JobSpec,
    node: &NodeArgs,
) -> anyhow::Result<serde_json::Value> {
    let request = Signed::sign(RunRequest { lease_id: id, spec, issued_at_ms: TimestampMs(now_ms()) }, keypair, chain)?;
    let body = serde_json::json!({ "request": hex::encode(codec::encode(&request)?) }).to_string();
    let reply = http::post(&node.url(), &format!("/v1/leases/{id}/run"), &body)?;
    let answer = reply.json()?;
    if reply.status >= 400 {
        bail!("{}", answer["error"].as_str().unwrap_or("the provider refused"));
    }
    Ok(answer)
}

/// `agora lease extend`: the cost is the lease's own price for the added
/// hours, and that is the most the transaction may take.
fn extend(home: &Path, id: &str, hours: u32, key: &KeyArgs) -> anyhow::Result<ExitCode> {
    let id: LeaseId = id.parse()?;
    anyhow::ensure!(hours > 0, "--hours must be at least 1");
    let lease = key.node.get(&format!("/v1/leases/{id}"))?;
    if lease["status"] != "Open" {
        bail!("lease {id} has ended ({}); it cannot be extended", settled_word(&lease["status"]));
    }
    let price: u64 = text(&lease["price_per_gpu_hour"]).parse().context("the lease's price")?;
    let gpus = lease["gpus"].as_u64().map_or(0, |g| u32::try_from(g).unwrap_or(u32::MAX));
    let cost = agora_ledger::auction::cost(Amount(price), gpus, hours)
        .ok_or_else(|| anyhow!("{hours} hours of this lease cost more than any balance"))?
        .0;
    let keypair = agora_node::keystore::load(home, &key.key)?.keypair;
    let kind = TxKind::ExtendLease { lease_id: id, hours, max_cost: Amount(cost) };
    let (hash, height) = submit_and_wait(&keypair, kind, &key.node)?;
    let lease = key.node.get(&format!("/v1/leases/{id}"))?;
    if key.node.json {
        print_json(&serde_json::json!({ "hash": hash, "height": height, "cost": cost.to_string(), "lease": lease }))?;
    } else {
        println!(
            "lease {id} extended by {hours}h for {} at height {height}; {} of paid time left",
            Amount(cost),
            runway(&lease)
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// An open lease's paid time left, as `1h 05m` or `42s`.
fn runway(lease: &serde_json::Value) -> String {
    crate::view::humantime_secs(lease["end_ms"].as_u64().unwrap_or(0).saturating_sub(now_ms()) / 1000)
}

pub fn describe(state: &agora_protocol::job::JobState) -> String {
    use agora_protocol::job::JobState::*;
    match state {
        Waiting => "waiting for the lease to start".into(),
        Running => "running".into(),
        Exited { code: Some(c) } => format!("job exited with code {c}"),
        Exited { code: None } => "job was killed by a signal".into(),
        Stopped { reason } => format!("job stopped: {reason}"),
    }
}

fn logs_request(
    keypair: &Keypair,
    chain: &agora_protocol::ChainId,
    id: LeaseId,
    offset: u64,
) -> anyhow::Result<String> {
    let req = Signed::sign(LogsRequest { lease_id: id, offset, issued_at_ms: TimestampMs(now_ms()) }, keypair, chain)?;
    Ok(serde_json::json!({ "request": hex::encode(codec::encode(&req)?) }).to_string())
}

/// Prints the job's output from the start; with `follow`, until the job has
/// ended and all of its output is printed. Returns the job's last state.
pub fn follow_logs(
    keypair: &Keypair,
    chain: &agora_protocol::ChainId,
    id: LeaseId,
    node: &NodeArgs,
    follow: bool,
    print: bool,
) -> anyhow::Result<(agora_protocol::job::JobState, Vec<u8>)> {
    let mut offset = 0u64;
    let mut all = Vec::new();
    let started = Instant::now();
    loop {
        let reply =
            http::post(&node.url(), &format!("/v1/leases/{id}/logs"), &logs_request(keypair, chain, id, offset)?)?;
        let answer = reply.json()?;
        if reply.status == 404 && follow && started.elapsed() < OPEN_WAIT {
            std::thread::sleep(POLL);
            continue;
        }
        if reply.status >= 400 {
            bail!("{}", answer["error"].as_str().unwrap_or("the provider refused"));
        }
        let data = hex::decode(text(&answer["data_hex"])).unwrap_or_default();
        let first = answer["first_available"].as_u64().unwrap_or(0);
        if first > offset && print {
            eprintln!("[{} bytes of earlier output are no longer kept by the provider]", first - offset);
        }
        if print && !data.is_empty() {
            let mut out = std::io::stdout().lock();
            out.write_all(&data)?;
            out.flush()?;
        }
        all.extend_from_slice(&data);
        offset = answer["next_offset"].as_u64().unwrap_or(offset);
        let state: agora_protocol::job::JobState = serde_json::from_value(answer["state"].clone())?;
        let ended = matches!(
            state,
            agora_protocol::job::JobState::Exited { .. } | agora_protocol::job::JobState::Stopped { .. }
        );
        if !follow || (ended && data.is_empty()) {
            return Ok((state, all));
        }
        if data.is_empty() {
            std::thread::sleep(POLL);
        }
    }
}

/// Waits until the lease is settled on the ledger; returns it.
fn wait_settled(node: &NodeArgs, id: LeaseId) -> anyhow::Result<serde_json::Value> {
    let started = Instant::now();
    loop {
        let lease = node.get(&format!("/v1/leases/{id}"))?;
        if lease["status"].get("Settled").is_some() {
            return Ok(lease);
        }
        if started.elapsed() > OPEN_WAIT {
            bail!("lease {id} is not settled after {} s; see `agora lease status {id}`", OPEN_WAIT.as_secs());
        }
        std::thread::sleep(POLL);
    }
}

pub fn run(home: &Path, cmd: LeaseCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        LeaseCommand::List(k) => {
            let me = agora_node::keystore::load(home, &k.key)?.address();
            let list = k.node.get(&format!("/v1/leases?buyer={me}"))?;
            if k.node.json {
                print_json(&list)?;
                return Ok(ExitCode::SUCCESS);
            }
            let list = list.as_array().cloned().unwrap_or_default();
            if list.is_empty() {
                println!("no leases");
                return Ok(ExitCode::SUCCESS);
            }
            println!("{:<64}  {:<12}  {:<16}  {:>14}  PROVIDER", "LEASE", "GPUS", "STATUS", "ESCROW");
            for l in &list {
                let status =
                    if l["status"] == "Open" { format!("open {}", runway(l)) } else { settled_word(&l["status"]) };
                println!(
                    "{:<64}  {:<12}  {:<16}  {:>14}  {}",
                    text(&l["id"]),
                    format!("{}x {}", l["gpus"], text(&l["gpu_model"])),
                    status,
                    micros(&l["escrow"]).to_string(),
                    text(&l["provider"])
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        LeaseCommand::Status { id, prove, key } => {
            let id: LeaseId = id.parse()?;
            if prove.prove {
                return proven_lease(home, &prove, &key.node, id);
            }
            let lease = key.node.get(&format!("/v1/leases/{id}"))?;
            let keypair = agora_node::keystore::load(home, &key.key)?.keypair;
            let chain = chain_id(&key.node)?;
            let job = (lease["buyer"] == keypair.address().to_string())
                .then(|| {
                    let reply = http::post(
                        &key.node.url(),
                        &format!("/v1/leases/{id}/logs"),
                        &logs_request(&keypair, &chain, id, u64::MAX).ok()?,
                    )
                    .ok()?;
                    (reply.status == 200).then(|| reply.json().ok()).flatten().map(|a| a["state"].clone())
                })
                .flatten();
            if key.node.json {
                print_json(&serde_json::json!({ "lease": lease, "job": job }))?;
                return Ok(ExitCode::SUCCESS);
            }
            println!("lease     {id}");
            println!("buyer     {}", text(&lease["buyer"]));
            println!("provider  {}", text(&lease["provider"]));
            println!(
                "gpus      {}x {} ({})",
                lease["gpus"],
                text(&lease["gpu_model"]),
                lease["gpu_ids"]
                    .as_array()
                    .map(|a| a.iter().map(text).collect::<Vec<_>>().join(","))
                    .unwrap_or_default()
            );
            println!(
                "price     {}/GPU-hour, escrow {}",
                micros(&lease["price_per_gpu_hour"]),
                micros(&lease["escrow"])
            );
            let starts_in = lease["start_ms"].as_u64().unwrap_or(0).saturating_sub(now_ms()) / 1000;
            if lease["status"] == "Open" && starts_in > 0 {
                println!(
                    "status    open, starts in {}m{:02}s (bought for a later start)",
                    starts_in / 60,
                    starts_in % 60
                );
            } else if lease["status"] == "Open" {
                println!(
                    "status    open, {} of paid time left (agora lease extend {id} --hours N adds more)",
                    runway(&lease)
                );
            } else {
                let s = &lease["status"]["Settled"];
                println!(
                    "status    {}: paid {} to the provider, refunded {}{}",
                    settled_word(&lease["status"]),
                    micros(&s["paid"]),
                    micros(&s["refunded"]),
                    s["exit_code"].as_i64().map(|c| format!(", exit code {c}")).unwrap_or_default()
                );
            }
            if let Some(job) = job.and_then(|j| serde_json::from_value(j).ok()) {
                println!("job       {}", describe(&job));
            }
            Ok(ExitCode::SUCCESS)
        }
        LeaseCommand::Logs { id, follow, key } => {
            let id: LeaseId = id.parse()?;
            let keypair = agora_node::keystore::load(home, &key.key)?.keypair;
            let chain = chain_id(&key.node)?;
            let (state, _) = follow_logs(&keypair, &chain, id, &key.node, follow, true)?;
            if follow {
                eprintln!("{}", describe(&state));
            }
            Ok(ExitCode::SUCCESS)
        }
        LeaseCommand::Run(args) => run_job(home, args),
        LeaseCommand::Extend { id, hours, key } => extend(home, &id, hours, &key),
        LeaseCommand::Transfer { id, to, key } => {
            let kind = TxKind::TransferLease { lease_id: id.parse()?, to: to.parse()? };
            crate::client::send(home, &key.key, kind, key.node)
        }
        LeaseCommand::Sell { id, price, withdraw, key } => {
            let price = if withdraw { None } else { price.map(|p| crate::client::parse_amount(&p)).transpose()? };
            crate::client::send(home, &key.key, TxKind::ListLease { lease_id: id.parse()?, price }, key.node)
        }
        LeaseCommand::Buy { id, max_price, key } => {
            let kind = TxKind::BuyLease { lease_id: id.parse()?, max_price: crate::client::parse_amount(&max_price)? };
            crate::client::send(home, &key.key, kind, key.node)
        }
        LeaseCommand::Cancel { id, key } => {
            let id: LeaseId = id.parse()?;
            let keypair = agora_node::keystore::load(home, &key.key)?.keypair;
            let (hash, height) = submit_and_wait(&keypair, TxKind::CancelLease { lease_id: id }, &key.node)?;
            let lease = key.node.get(&format!("/v1/leases/{id}"))?;
            let s = &lease["status"]["Settled"];
            if key.node.json {
                print_json(&serde_json::json!({ "hash": hash, "height": height, "lease": lease }))?;
            } else {
                println!(
                    "lease {id} cancelled at height {height}: paid {} to the provider, refunded {}",
                    micros(&s["paid"]),
                    micros(&s["refunded"])
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn settled_word(status: &serde_json::Value) -> String {
    match status["Settled"]["reason"].as_str() {
        Some("Closed") => "finished".into(),
        Some("Cancelled") => "cancelled".into(),
        Some("Expired") => "expired".into(),
        Some("ProviderSlashed") => "slashed".into(),
        _ => text(status),
    }
}

/// `lease status --prove`: the lease as the certified state has it.
fn proven_lease(
    home: &Path,
    prove: &crate::prove::ProveArgs,
    node: &NodeArgs,
    id: LeaseId,
) -> anyhow::Result<ExitCode> {
    let key = agora_ledger::tree::StateKey::Lease(id);
    let proven = crate::prove::fetch(home, prove, node, "lease", &id.to_string(), &key)?;
    let v = &proven.v;
    let Some(bytes) = v.value.as_deref() else {
        anyhow::bail!("lease {id} does not exist (proven absent at height {})", v.height.0);
    };
    let lease: agora_ledger::Lease = agora_ledger::light::decode_value(bytes)?;
    if node.json {
        print_json(
            &serde_json::json!({ "lease": lease, "verified_height": v.height.0, "trust": proven.trust_json() }),
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    let status = match &lease.status {
        agora_ledger::LeaseStatus::Open => "open".to_string(),
        agora_ledger::LeaseStatus::Settled { reason, paid, refunded, .. } => {
            format!("settled ({reason:?}): paid {paid}, refunded {refunded}")
        }
    };
    println!("lease     {id}");
    println!("status    {status}");
    println!("buyer     {}", lease.buyer);
    println!("provider  {}", lease.provider);
    println!("gpus      {}x {}", lease.gpus, lease.gpu_model);
    println!("escrow    {}", lease.escrow);
    println!("{}", crate::prove::verified_line(&proven));
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::parse_duration;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("90s").unwrap(), 90);
        assert_eq!(parse_duration("30m").unwrap(), 1800);
        assert_eq!(parse_duration("1h30m").unwrap(), 5400);
        assert_eq!(parse_duration("2").unwrap(), 2);
        for bad in ["", "0", "5x", "h", "1h30", "-5m"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
