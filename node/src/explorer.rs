//! The web explorer every node serves at `/explorer/` (docs/explorer.md):
//! server-rendered pages of the network, the providers (with what is proven
//! on the ledger and what is only self-reported), one provider's record and
//! the market, from this node's committed ledger and offer book. Templates
//! (`node/templates/`) are compiled into the binary; a little plain
//! JavaScript updates live figures, and every page is whole without it.

use agora_ledger::State;
use agora_protocol::{Address, Amount, GpuClass, Height};
use askama::Template;
use axum::Router;
use axum::extract::{Path, Query, State as AxumState};
use axum::http::{HeaderMap, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;

use crate::api::{ApiError, internal, not_found};
use crate::daemon::Shared;

/// Blocks the network page lists.
pub const RECENT_BLOCKS: u64 = 10;
/// Blocks whose commit certificates a validator's uptime is counted over.
pub const VALIDATOR_UPTIME_BLOCKS: u64 = 100;
/// Rows of the price index the market page shows (the newest).
pub const INDEX_ROWS: usize = 40;

/// The explorer's routes, and `/` sending browsers to it.
pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/", get(root))
        .route("/explorer", get(|| async { Redirect::permanent("/explorer/") }))
        .route("/explorer/", get(network))
        .route("/explorer/providers", get(providers))
        .route("/explorer/providers/{address}", get(provider))
        .route("/explorer/market", get(market))
        .route("/explorer/leases/{id}", get(lease))
        .route("/explorer/blocks/{height}", get(block))
        .route("/explorer/accounts/{address}", get(account))
        .route("/explorer/search", get(search))
        .route("/explorer/verify.js", get(verify_js))
}

/// A browser asking for the API's root gets the explorer; anything else a hint.
async fn root(headers: HeaderMap) -> Response {
    let html = headers.get(header::ACCEPT).and_then(|a| a.to_str().ok()).is_some_and(|a| a.contains("text/html"));
    if html {
        Redirect::to("/explorer/").into_response()
    } else {
        not_found("the API is under /v1 (docs/api.md); the explorer at /explorer/").into_response()
    }
}

/// The in-browser signature check, compiled into the binary.
const VERIFY_JS: &str = include_str!("../assets/verify.js");

async fn verify_js() -> Response {
    (
        [
            (axum::http::header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (axum::http::header::CACHE_CONTROL, "max-age=3600"),
        ],
        VERIFY_JS,
    )
        .into_response()
}

fn render(page: impl Template) -> Result<Html<String>, ApiError> {
    page.render().map(Html).map_err(internal)
}

/// `agora1abcdefgh…uvwxyz`: enough to tell addresses and hashes apart; the whole on hover.
pub fn short(text: &str) -> String {
    if text.len() <= 20 { text.to_string() } else { format!("{}…{}", &text[..12], &text[text.len() - 6..]) }
}

/// Seconds as "12 s ago", "3 min ago", "2 h ago".
fn ago(ms: u64) -> String {
    match ms / 1000 {
        0..60 => format!("{} s ago", ms / 1000),
        s @ 60..3600 => format!("{} min ago", s / 60),
        s => format!("{} h ago", s / 3600),
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

struct ValidatorRow {
    address: String,
    short: String,
    power: u64,
    /// Its signatures in the recent commit certificates, as `97 of 100 (97%)`.
    signed: String,
}

struct BlockRow {
    height: u64,
    hash: String,
    hash_short: String,
    txs: usize,
    proposer: String,
    proposer_short: String,
    time_ms: u64,
    age: String,
}

#[derive(Template)]
#[template(path = "network.html")]
struct NetworkPage {
    chain_id: String,
    height: u64,
    peers: usize,
    mempool: usize,
    validators: Vec<ValidatorRow>,
    providers_total: usize,
    providers_active: usize,
    blocks: Vec<BlockRow>,
    block_interval: String,
}

async fn network(AxumState(s): AxumState<Shared>) -> Result<Html<String>, ApiError> {
    let status = s.status.read().map_err(internal)?.clone();
    let (validators, providers_total, providers_active, height) = {
        let ledger = s.ledger.read().map_err(internal)?;
        let validators = ledger.validators().iter().map(|v| (v.address, v.power)).collect::<Vec<_>>();
        let active = ledger.providers().filter(|(a, _)| ledger.is_active_provider(a)).count();
        (validators, ledger.providers().count(), active, ledger.height().0)
    };
    // Blocks come from the store (decoding them is work): off the async workers.
    let reader = s.blocks.clone();
    let (validators, blocks) = tokio::task::spawn_blocking(move || {
        let now = now_ms();
        // Uptime is what the certificates prove: each signature in one is a
        // validator's signed vote for that block.
        let span = height.saturating_sub(VALIDATOR_UPTIME_BLOCKS - 1).max(1)..=height;
        let mut signed = std::collections::BTreeMap::<Address, u64>::new();
        let mut certified = 0u64;
        for h in span {
            if let Ok(Some(c)) = reader.certificate(Height(h)) {
                certified += 1;
                for sig in &c.signatures {
                    *signed.entry(sig.validator).or_default() += 1;
                }
            }
        }
        let validators = validators
            .into_iter()
            .map(|(address, power)| {
                let n = signed.get(&address).copied().unwrap_or(0);
                ValidatorRow {
                    address: address.to_string(),
                    short: short(&address.to_string()),
                    power,
                    signed: format!("{n} of {certified} ({}%)", (100 * n).checked_div(certified).unwrap_or(0)),
                }
            })
            .collect::<Vec<_>>();
        let blocks = (height.saturating_sub(RECENT_BLOCKS - 1).max(1)..=height)
            .rev()
            .filter_map(|h| reader.block(Height(h)).ok().flatten())
            .map(|b| {
                let (hash, proposer) = (b.hash().to_string(), b.header.proposer.to_string());
                BlockRow {
                    height: b.header.height.0,
                    hash_short: short(&hash),
                    hash,
                    txs: b.txs.len(),
                    proposer_short: short(&proposer),
                    proposer,
                    time_ms: b.header.time_ms.0,
                    age: ago(now.saturating_sub(b.header.time_ms.0)),
                }
            })
            .collect::<Vec<_>>();
        (validators, blocks)
    })
    .await
    .map_err(internal)?;
    let block_interval = match (blocks.first(), blocks.last()) {
        (Some(new), Some(old)) if blocks.len() > 1 => {
            format!("{} ms", (new.time_ms - old.time_ms) / (blocks.len() as u64 - 1))
        }
        _ => "–".into(),
    };
    render(NetworkPage {
        chain_id: status.chain_id,
        height,
        peers: status.peers,
        mempool: status.mempool,
        validators,
        providers_total,
        providers_active,
        blocks,
        block_interval,
    })
}

/// One class of a provider's GPUs, with what is done with them.
struct GpuRow {
    class: String,
    count: u32,
    simulated: bool,
    asked: u64,
    leased: u64,
    free: u64,
}

struct ProviderRow {
    address: String,
    short: String,
    status: String,
    status_class: &'static str,
    gpus: Vec<GpuRow>,
    stake: String,
    stake_micros: u64,
    uptime: String,
    slashes: u32,
    last_heartbeat: String,
    region: String,
    earned: String,
    earned_micros: u64,
    leases_served: u64,
}

fn provider_row(ledger: &State, address: &Address, seen: Option<u64>) -> Option<ProviderRow> {
    let p = ledger.provider(address)?;
    let view = crate::api::provider_view(ledger, address, p);
    let status = view["status"].as_str().unwrap_or("?").to_string();
    let status_class = match status.as_str() {
        "active" => "ok",
        "jailed" | "tombstoned" => "bad",
        _ => "warn",
    };
    let status = match view["jailed_until"].as_u64() {
        Some(until) if until > ledger.height().0 => format!("{status} until height {until}"),
        Some(until) => format!("{status}; may unjail since height {until}"),
        None => status,
    };
    let gpus = p
        .gpus
        .iter()
        .map(|g| {
            let class = GpuClass::of(g);
            let c = class.as_ref().map(|c| agora_ledger::capacity::capacity(ledger, address, c)).unwrap_or_default();
            GpuRow {
                class: class.map_or_else(|| g.model.clone(), |c| c.to_string()),
                count: g.count,
                simulated: g.simulated,
                asked: c.asked,
                leased: c.leased,
                free: c.free(),
            }
        })
        .collect();
    let stake = ledger.account(address).stake;
    Some(ProviderRow {
        address: address.to_string(),
        short: short(&address.to_string()),
        status,
        status_class,
        gpus,
        stake: stake.to_string(),
        stake_micros: stake.0,
        uptime: format!("{}% of {} blocks", view["uptime_pct"], view["uptime_blocks"]),
        slashes: p.slashes,
        last_heartbeat: seen.map_or_else(|| "not seen by this node".into(), |h| format!("height {h}")),
        region: p.region.clone(),
        earned: p.earned.to_string(),
        earned_micros: p.earned.0,
        leases_served: p.leases_served,
    })
}

#[derive(Template)]
#[template(path = "providers.html")]
struct ProvidersPage {
    chain_id: String,
    height: u64,
    providers: Vec<ProviderRow>,
}

/// The providers page for `ledger`; `seen` is this node's last heartbeat height per provider.
pub fn providers_html(
    chain_id: String,
    ledger: &State,
    seen: &std::collections::BTreeMap<Address, u64>,
) -> Result<String, askama::Error> {
    let providers =
        ledger.providers().filter_map(|(a, _)| provider_row(ledger, a, seen.get(a).copied())).collect::<Vec<_>>();
    ProvidersPage { chain_id, height: ledger.height().0, providers }.render()
}

async fn providers(AxumState(s): AxumState<Shared>) -> Result<Html<String>, ApiError> {
    let chain_id = s.status.read().map_err(internal)?.chain_id.clone();
    let seen = s.last_seen.read().map_err(internal)?.clone();
    let ledger = s.ledger.clone();
    // Every provider's capacity is read from the open leases: off the async workers.
    let html = tokio::task::spawn_blocking(move || {
        let ledger = ledger.read().map_err(internal)?;
        providers_html(chain_id, &ledger, &seen).map_err(internal)
    })
    .await
    .map_err(internal)??;
    Ok(Html(html))
}

#[derive(Template)]
#[template(path = "provider.html")]
struct ProviderPage {
    chain_id: String,
    height: u64,
    p: ProviderRow,
    open_leases: usize,
    slashed_windows: Vec<(u64, u64)>,
    offer: String,
    /// Inline SVG: heights since registration, slashed downtime in red.
    uptime_chart: String,
    slashes: Vec<SlashRow>,
    /// Newest first.
    coverage: Vec<CoverageRow>,
    window_blocks: u64,
    /// The offer as signed (hex), and its signer.
    offer_signed: String,
    offer_signer: String,
}

/// A slash and the signed evidence behind it.
struct SlashRow {
    height: u64,
    reason: String,
    window: String,
    attestations: Vec<AttestationRow>,
}

struct AttestationRow {
    validator: String,
    validator_short: String,
    window: String,
    signature: String,
    signature_short: String,
    /// The attestation as signed (hex), for the in-browser check.
    signed: String,
    /// What it must say, in verify.js's words.
    says: String,
}

/// One window of the provider's heartbeat coverage, as this node saw it.
struct CoverageRow {
    start: u64,
    end: u64,
    heartbeats: u32,
    state: &'static str,
    state_class: &'static str,
    proof: Option<ProofRow>,
}

/// A signed heartbeat kept as proof of a window.
struct ProofRow {
    seq: u64,
    names_height: u64,
    signer: String,
    signed: String,
    says: String,
}

fn coverage_rows(coverage: &crate::coverage::Coverage, ledger: &State, address: &Address) -> Vec<CoverageRow> {
    coverage
        .report(ledger, address)
        .into_iter()
        .map(|w| {
            let (state, state_class) = match (w.seen, w.slashed) {
                (_, true) => ("slashed", "bad"),
                (Some(_), false) => ("heard", "ok"),
                (None, false) => ("not heard here", "warn"),
            };
            CoverageRow {
                start: w.start.0,
                end: w.end.0,
                heartbeats: w.seen.map_or(0, |c| c.heartbeats),
                state,
                state_class,
                proof: w.seen.map(|c| {
                    let hb = &c.proof;
                    ProofRow {
                        seq: hb.body.seq,
                        names_height: hb.body.height.0,
                        signer: hb.signer.to_string(),
                        signed: agora_protocol::codec::encode(hb).map(hex::encode).unwrap_or_default(),
                        says: format!(
                            "up after block {} ({}), sequence {}",
                            hb.body.height.0,
                            hex::encode(hb.body.block_hash.0),
                            hb.body.seq
                        ),
                    }
                }),
            }
        })
        .collect()
}

fn slash_row(provider: &Address, r: &serde_json::Value) -> SlashRow {
    let window = |v: &serde_json::Value| match (v["window_start"].as_u64(), v["window_end"].as_u64()) {
        (Some(a), Some(b)) => format!("heights {a} to {b}"),
        _ => "–".into(),
    };
    let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
    SlashRow {
        height: r["height"].as_u64().unwrap_or(0),
        reason: text(&r["reason"]),
        window: window(r),
        attestations: r["attestations"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|a| AttestationRow {
                validator_short: short(&text(&a["validator"])),
                validator: text(&a["validator"]),
                window: window(a),
                signature_short: short(&text(&a["signature"])),
                signature: text(&a["signature"]),
                signed: text(&a["signed"]),
                says: format!(
                    "provider {provider} silent over heights {}-{}",
                    a["window_start"].as_u64().unwrap_or(0),
                    a["window_end"].as_u64().unwrap_or(0)
                ),
            })
            .collect(),
    }
}

async fn provider(AxumState(s): AxumState<Shared>, Path(address): Path<String>) -> Result<Response, ApiError> {
    let Ok(address) = address.parse::<Address>() else {
        return Ok(not_found(format!("{address:?} is not an address")).into_response());
    };
    let chain_id = s.status.read().map_err(internal)?.chain_id.clone();
    let seen = s.last_seen.read().map_err(internal)?.get(&address).copied();
    let (offer, offer_signed, offer_signer) = {
        let book = s.offers.read().map_err(internal)?;
        book.query(&crate::offers::OfferFilter::default())
            .into_iter()
            .find(|e| e.provider == address)
            .map(|e| {
                let o = &e.offer.body;
                let text = format!(
                    "{} at {}/GPU-hour, leases up to {} s, region {} (offer #{}, signed by {})",
                    offered_gpus(o),
                    o.price_per_gpu_hour,
                    o.max_duration_secs,
                    o.region,
                    o.seq,
                    short(&e.offer.signer.to_string())
                );
                let signed = agora_protocol::codec::encode(&e.offer).map(hex::encode).unwrap_or_default();
                (text, signed, e.offer.signer.to_string())
            })
            .unwrap_or_default()
    };
    let (since, chain) = {
        let ledger = s.ledger.read().map_err(internal)?;
        (ledger.provider(&address).map(|p| p.registered_at), ledger.chain_id().clone())
    };
    let Some(since) = since else {
        return Ok(not_found(format!("{address} is not a registered provider")).into_response());
    };
    let blocks = s.blocks.clone();
    let records = tokio::task::spawn_blocking(move || crate::api::slash_records(&blocks, &address, since, &chain))
        .await
        .map_err(internal)??;
    let slashes = records.iter().map(|r| slash_row(&address, r)).collect();
    let ledger = s.ledger.read().map_err(internal)?;
    let Some(p) = provider_row(&ledger, &address, seen) else {
        return Ok(not_found(format!("{address} is not a registered provider")).into_response());
    };
    let open_leases = ledger.open_leases_of(&address).count();
    let slashed_windows: Vec<(u64, u64)> = ledger.slashed_windows(&address).iter().map(|(a, b)| (a.0, b.0)).collect();
    let registered_at = ledger.provider(&address).map_or(0, |r| r.registered_at.0);
    let uptime_chart = crate::charts::uptime_timeline(registered_at, ledger.height().0, &slashed_windows);
    let (coverage, window_blocks) = {
        let c = s.coverage.read().map_err(internal)?;
        (coverage_rows(&c, &ledger, &address), c.window())
    };
    let page = ProviderPage {
        chain_id,
        height: ledger.height().0,
        p,
        open_leases,
        slashed_windows,
        offer,
        uptime_chart,
        slashes,
        coverage,
        window_blocks,
        offer_signed,
        offer_signer,
    };
    Ok(render(page)?.into_response())
}

struct ClassRow {
    class: String,
    bids: usize,
    asks: usize,
    price: String,
    matched: u64,
    bid_depth: u64,
    ask_depth: u64,
}

struct IndexRow {
    auction: u64,
    kind: &'static str,
    class: String,
    price: String,
    gpu_hours: u64,
    leases: u32,
}

#[derive(Template)]
#[template(path = "market.html")]
struct MarketPage {
    chain_id: String,
    height: u64,
    auction: u64,
    phase: String,
    clears_at: u64,
    listings: usize,
    classes: Vec<ClassRow>,
    index: Vec<IndexRow>,
    /// Inline SVG: each class's clearing price over the auctions.
    price_chart: String,
    offers: Vec<OfferRow>,
}

struct OfferRow {
    provider: String,
    short: String,
    gpus: String,
    price: String,
    max_duration: String,
    region: String,
}

/// A signed offer's GPUs as `2× H100-80GB-SIM, 1× A100-40GB`.
fn offered_gpus(o: &agora_protocol::Offer) -> String {
    let kinds: Vec<String> = o
        .gpus
        .iter()
        .map(|g| format!("{}× {}", g.count, GpuClass::of(g).map_or(g.model.clone(), |c| c.to_string())))
        .collect();
    kinds.join(", ")
}

fn price(p: Option<Amount>) -> String {
    p.map_or_else(|| "–".into(), |p| p.to_string())
}

/// The market page for `ledger` and this node's offer book.
pub fn market_html(chain_id: String, ledger: &State, book: &crate::offers::OrderBook) -> Result<String, askama::Error> {
    let offers = book
        .query(&crate::offers::OfferFilter::default())
        .into_iter()
        .map(|e| {
            let o = &e.offer.body;
            OfferRow {
                provider: e.provider.to_string(),
                short: short(&e.provider.to_string()),
                gpus: offered_gpus(o),
                price: o.price_per_gpu_hour.to_string(),
                max_duration: duration(o.max_duration_secs.saturating_mul(1000)),
                region: o.region.clone(),
            }
        })
        .collect();
    let view = crate::api_market::auctions_view(ledger, None);
    let amount = |v: &serde_json::Value| v.as_str().and_then(|t| t.parse().ok()).map(Amount);
    let classes = view["classes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| ClassRow {
            class: c["class"].as_str().unwrap_or_default().to_string(),
            bids: c["bids"].as_u64().unwrap_or(0) as usize,
            asks: c["asks"].as_u64().unwrap_or(0) as usize,
            price: price(amount(&c["indicative_price"])),
            matched: c["matched_gpu_hours"].as_u64().unwrap_or(0),
            bid_depth: c["bid_depth"].as_u64().unwrap_or(0),
            ask_depth: c["ask_depth"].as_u64().unwrap_or(0),
        })
        .collect();
    let auctions = ledger.auction_results(0).map(|r| IndexRow {
        auction: r.auction,
        kind: "auction",
        class: r.class.to_string(),
        price: price(r.price),
        gpu_hours: r.matched_gpu_hours,
        leases: r.leases,
    });
    let spot = ledger.spot_trades(0).map(|t| IndexRow {
        auction: t.auction,
        kind: "spot (average)",
        class: t.class.to_string(),
        price: price(t.average_price()),
        gpu_hours: t.gpu_seconds / 3600,
        leases: t.leases,
    });
    let points: Vec<(String, u64, u64)> =
        ledger.auction_results(0).filter_map(|r| r.price.map(|p| (r.class.to_string(), r.auction, p.0))).collect();
    let price_chart = crate::charts::price_lines(&points);
    let mut index: Vec<IndexRow> = auctions.chain(spot).collect();
    index.sort_by(|a, b| (b.auction, a.kind).cmp(&(a.auction, b.kind)));
    index.truncate(INDEX_ROWS);
    MarketPage {
        chain_id,
        height: ledger.height().0,
        auction: view["auction"].as_u64().unwrap_or(0),
        phase: view["phase"].as_str().unwrap_or_default().to_string(),
        clears_at: view["clears_at_height"].as_u64().unwrap_or(0),
        listings: ledger.listings().count(),
        classes,
        index,
        price_chart,
        offers,
    }
    .render()
}

async fn market(AxumState(s): AxumState<Shared>) -> Result<Html<String>, ApiError> {
    let chain_id = s.status.read().map_err(internal)?.chain_id.clone();
    let (ledger, book) = (s.ledger.clone(), s.offers.clone());
    // The indicative clearing runs over the whole book: off the async workers.
    let html = tokio::task::spawn_blocking(move || {
        let book = book.read().map_err(internal)?;
        let ledger = ledger.read().map_err(internal)?;
        market_html(chain_id, &ledger, &book).map_err(internal)
    })
    .await
    .map_err(internal)??;
    Ok(Html(html))
}

/// Paid time left of an open lease, or when it starts.
fn runway(lease: &agora_ledger::Lease, now_ms: u64) -> String {
    if lease.status != agora_ledger::LeaseStatus::Open {
        return "–".into();
    }
    if lease.start_ms.0 > now_ms {
        return format!("starts in {}", duration(lease.start_ms.0 - now_ms));
    }
    format!("{} left", duration(lease.end_ms.0.saturating_sub(now_ms)))
}

/// Milliseconds as "42 s", "5 min", "3 h 10 min".
fn duration(ms: u64) -> String {
    match ms / 1000 {
        s @ 0..60 => format!("{s} s"),
        s @ 60..3600 => format!("{} min", s / 60),
        s => format!("{} h {} min", s / 3600, s % 3600 / 60),
    }
}

#[derive(Template)]
#[template(path = "lease.html")]
struct LeasePage {
    chain_id: String,
    height: u64,
    id: String,
    short_id: String,
    status: String,
    kind: &'static str,
    gpus: String,
    price: String,
    price_micros: u64,
    escrow: String,
    escrow_micros: u64,
    runway: String,
    holder: String,
    provider: String,
    gpu_ids: String,
    start: String,
    end: String,
    settlement: String,
    listing: String,
}

async fn lease(AxumState(s): AxumState<Shared>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let Ok(lease_id) = id.parse::<agora_protocol::LeaseId>() else {
        return Ok(not_found(format!("{id:?} is not a lease id")).into_response());
    };
    let chain_id = s.status.read().map_err(internal)?.chain_id.clone();
    let ledger = s.ledger.read().map_err(internal)?;
    let Some(l) = ledger.lease(&lease_id) else {
        return Ok(not_found(format!("no lease {lease_id} on the ledger")).into_response());
    };
    let now = now_ms();
    let at = |ms: u64| if ms > now { format!("in {}", duration(ms - now)) } else { ago(now - ms) };
    let (status, settlement) = match &l.status {
        agora_ledger::LeaseStatus::Open => ("open".to_string(), "not yet".to_string()),
        agora_ledger::LeaseStatus::Settled { reason, paid, refunded, at_ms, exit_code } => (
            format!("{reason:?}").to_lowercase(),
            format!(
                "{} · {paid} to the provider, {refunded} refunded{}",
                ago(now.saturating_sub(at_ms.0)),
                exit_code.map(|c| format!(", exit code {c}")).unwrap_or_default()
            ),
        ),
    };
    let page = LeasePage {
        chain_id,
        height: ledger.height().0,
        id: lease_id.to_string(),
        short_id: short(&lease_id.to_string()),
        status,
        kind: if l.is_reservation() { "auctioned (GPU time)" } else { "spot (one job)" },
        gpus: format!("{}× {}", l.gpus, l.gpu_model),
        price: l.price_per_gpu_hour.to_string(),
        price_micros: l.price_per_gpu_hour.0,
        escrow: l.escrow.to_string(),
        escrow_micros: l.escrow.0,
        runway: runway(l, now),
        holder: l.buyer.to_string(),
        provider: l.provider.to_string(),
        gpu_ids: if l.gpu_ids.is_empty() {
            "set aside by the provider when it opened".into()
        } else {
            l.gpu_ids.join(", ")
        },
        start: at(l.start_ms.0),
        end: at(l.end_ms.0),
        settlement,
        listing: ledger.listing(&lease_id).map_or_else(|| "no".into(), |(_, price)| format!("for {price}")),
    };
    Ok(render(page)?.into_response())
}

struct TxRow {
    hash: String,
    hash_short: String,
    kind: &'static str,
    sender: String,
    sender_short: String,
    nonce: u64,
    fee: String,
}

#[derive(Template)]
#[template(path = "block.html")]
struct BlockPage {
    chain_id: String,
    height: u64,
    number: u64,
    hash: String,
    parent: String,
    time_ms: u64,
    age: String,
    proposer: String,
    state_root: String,
    committed_by: String,
    txs: Vec<TxRow>,
}

async fn block(AxumState(s): AxumState<Shared>, Path(height): Path<String>) -> Result<Response, ApiError> {
    let Ok(number) = height.parse::<u64>() else {
        return Ok(not_found(format!("{height:?} is not a block height")).into_response());
    };
    let (chain_id, tip) = {
        let status = s.status.read().map_err(internal)?;
        (status.chain_id.clone(), status.height)
    };
    let reader = s.blocks.clone();
    let found = tokio::task::spawn_blocking(move || {
        let block = reader.block(Height(number)).map_err(internal)?;
        let cert = reader.certificate(Height(number)).map_err(internal)?;
        Ok::<_, ApiError>(block.map(|b| (b, cert)))
    })
    .await
    .map_err(internal)??;
    let Some((b, cert)) = found else {
        return Ok(not_found(format!("no block at height {number}")).into_response());
    };
    let txs = b
        .txs
        .iter()
        .map(|t| {
            let hash = t.hash().map(|h| h.to_string()).unwrap_or_default();
            TxRow {
                hash_short: short(&hash),
                hash,
                kind: t.body.kind.name(),
                sender: t.signer.to_string(),
                sender_short: short(&t.signer.to_string()),
                nonce: t.body.nonce,
                fee: t.body.fee.to_string(),
            }
        })
        .collect();
    let committed_by = cert.map_or_else(
        || "its certificate is not stored yet".into(),
        |c| format!("{} validators' signatures (round {})", c.signatures.len(), c.round),
    );
    let page = BlockPage {
        chain_id,
        height: tip,
        number,
        hash: b.hash().to_string(),
        parent: b.header.parent_hash.to_string(),
        time_ms: b.header.time_ms.0,
        age: ago(now_ms().saturating_sub(b.header.time_ms.0)),
        proposer: b.header.proposer.to_string(),
        state_root: b.header.state_root.to_string(),
        committed_by,
        txs,
    };
    Ok(render(page)?.into_response())
}

struct HeldLease {
    id: String,
    short: String,
    gpus: String,
    provider: String,
    runway: String,
}

struct OrderRow {
    id: u64,
    side: &'static str,
    class: String,
    size: String,
    price: String,
}

#[derive(Template)]
#[template(path = "account.html")]
struct AccountPage {
    chain_id: String,
    height: u64,
    address: String,
    short: String,
    balance: String,
    balance_micros: u64,
    stake: String,
    unbonding: String,
    nonce: u64,
    is_provider: bool,
    leases: Vec<HeldLease>,
    orders: Vec<OrderRow>,
}

async fn account(AxumState(s): AxumState<Shared>, Path(address): Path<String>) -> Result<Response, ApiError> {
    let Ok(address) = address.parse::<Address>() else {
        return Ok(not_found(format!("{address:?} is not an address")).into_response());
    };
    let chain_id = s.status.read().map_err(internal)?.chain_id.clone();
    let ledger = s.ledger.read().map_err(internal)?;
    let a = ledger.account(&address);
    let now = now_ms();
    let leases = ledger
        .open_leases()
        .filter(|l| l.buyer == address)
        .map(|l| HeldLease {
            id: l.id.to_string(),
            short: short(&l.id.to_string()),
            gpus: format!("{}× {}", l.gpus, l.gpu_model),
            provider: short(&l.provider.to_string()),
            runway: runway(l, now),
        })
        .collect();
    let orders = ledger
        .orders_of(&address)
        .map(|o| OrderRow {
            id: o.id,
            side: match o.side {
                agora_ledger::Side::Bid => "bid",
                agora_ledger::Side::Ask => "ask",
            },
            class: o.class.to_string(),
            size: format!("{} × {} h", o.gpus, o.hours),
            price: o.price.to_string(),
        })
        .collect();
    let page = AccountPage {
        chain_id,
        height: ledger.height().0,
        address: address.to_string(),
        short: short(&address.to_string()),
        balance: a.balance.to_string(),
        balance_micros: a.balance.0,
        stake: a.stake.to_string(),
        unbonding: a.unbonding.to_string(),
        nonce: a.nonce,
        is_provider: ledger.provider(&address).is_some(),
        leases,
        orders,
    };
    Ok(render(page)?.into_response())
}

#[derive(serde::Deserialize)]
struct SearchQuery {
    q: String,
}

/// `/explorer/search?q=…`: a height, a lease id or an address goes to its page.
async fn search(AxumState(s): AxumState<Shared>, Query(q): Query<SearchQuery>) -> Result<Response, ApiError> {
    let q = q.q.trim();
    if let Ok(height) = q.parse::<u64>() {
        return Ok(Redirect::to(&format!("/explorer/blocks/{height}")).into_response());
    }
    if let Ok(address) = q.parse::<Address>() {
        let provider = s.ledger.read().map_err(internal)?.provider(&address).is_some();
        let page = if provider { "providers" } else { "accounts" };
        return Ok(Redirect::to(&format!("/explorer/{page}/{address}")).into_response());
    }
    if let Ok(id) = q.parse::<agora_protocol::LeaseId>() {
        return Ok(Redirect::to(&format!("/explorer/leases/{id}")).into_response());
    }
    Ok(not_found("search for a block height, a lease id or an agora1… address").into_response())
}
