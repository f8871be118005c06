//! The HTTP JSON API (axum), versioned under `/v1/`. Reads come from the
//! state the daemon shares after each commit; transactions go to the daemon's
//! loop through a bounded queue. Errors are 4xx/5xx with
//! `{"error": "<detail>", "code": "<stable code>"}` (callers match the code,
//! never the text); amounts are strings of micro-AGR.

use agora_ledger::consensus::mempool::{VerifiedTx, verify_all};
use agora_protocol::codec;
use agora_protocol::{Address, Height, SignedTx};
use axum::extract::{DefaultBodyLimit, Path, Query, State as AxumState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::daemon::{Command, Shared, TxRefusal};

/// Largest request body: a hex-encoded transaction at its size limit, plus JSON.
pub const MAX_BODY_BYTES: usize = 2 * agora_protocol::limits::MAX_TX_BYTES + 1024;
/// Requests to the costly endpoints (transaction submission with its
/// signature checks and dry runs, block reads, lease lists, slash evidence)
/// served at once; more are refused at once with a 503 (load shedding)
/// instead of queueing. Cheap reads (status, accounts, offers) are not
/// limited, so a flood of costly requests cannot hide the node's status.
pub const MAX_CONCURRENT_COSTLY: usize = 32;
/// Longest a costly request may take, its body upload included (a client
/// that trickles its body is cut off): a 504 after.
pub const COSTLY_REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// Longest any request may take (above the 30 s a provider has to answer a
/// lease proposal).
pub const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(35);
/// Most transactions in one `POST /v1/txs`.
pub const MAX_BATCH_TXS: usize = 1_000;
/// Largest `POST /v1/txs` body (a thousand transfers take about 400 KB as hex).
pub const MAX_BATCH_BODY_BYTES: usize = 4 * 1024 * 1024;

pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    detail: String,
    /// Sent as `Retry-After` (whole seconds, rounded up) and `retry_after_ms`.
    retry_after_ms: Option<u64>,
}

impl ApiError {
    /// An error whose code is the generic one for its status.
    fn new(status: StatusCode, detail: impl Into<String>) -> ApiError {
        let code = match status.as_u16() {
            400 => "bad_request",
            401 => "unauthorized",
            403 => "forbidden",
            404 => "not_found",
            409 => "conflict",
            413 => "too_large",
            415 => "unsupported_media_type",
            421 => "misdirected",
            422 => "unprocessable",
            502 => "bad_gateway",
            503 => "unavailable",
            504 => "gateway_timeout",
            _ if status.is_client_error() => "bad_request",
            _ => "internal",
        };
        ApiError { status, code, detail: detail.into(), retry_after_ms: None }
    }
}

impl ApiError {
    /// A provider's typed refusal, passed on with its code.
    fn refused(status: StatusCode, r: agora_protocol::job::LeaseRefusal) -> ApiError {
        ApiError { status, code: r.code.as_str(), detail: r.detail, retry_after_ms: None }
    }
}

impl From<TxRefusal> for ApiError {
    fn from(r: TxRefusal) -> ApiError {
        let status = if r.retryable { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::BAD_REQUEST };
        ApiError { status, code: r.code, detail: r.detail, retry_after_ms: r.retry_after_ms }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = serde_json::json!({ "error": self.detail, "code": self.code });
        let Some(ms) = self.retry_after_ms else {
            return (self.status, Json(body)).into_response();
        };
        body["retry_after_ms"] = ms.into();
        let secs = ms.div_ceil(1000).max(1).to_string();
        (self.status, [(axum::http::header::RETRY_AFTER, secs)], Json(body)).into_response()
    }
}

/// A refusal in a batch's `rejected` list, by the transaction's index.
fn rejection(index: usize, e: &ApiError) -> serde_json::Value {
    let mut r = serde_json::json!({ "index": index, "error": e.detail, "code": e.code });
    if let Some(ms) = e.retry_after_ms {
        r["retry_after_ms"] = ms.into();
    }
    r
}

pub(crate) fn bad_request(msg: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, msg)
}

pub(crate) fn not_found(msg: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, msg)
}

pub(crate) fn internal(msg: impl std::fmt::Display) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, msg.to_string())
}

/// A JSON request body, or the rejection as a 4xx: 413 for an oversized
/// body, 415 for a missing JSON content type, 400/422 for bad JSON.
fn json_body<T>(body: Result<Json<T>, axum::extract::rejection::JsonRejection>) -> Result<T, ApiError> {
    body.map(|Json(b)| b).map_err(|e| ApiError::new(e.status(), format!("malformed request: {}", e.body_text())))
}

/// A request's query parameters, or the rejection as a 400.
pub(crate) fn query_params<T>(
    query: Result<Query<T>, axum::extract::rejection::QueryRejection>,
) -> Result<T, ApiError> {
    query.map(|Query(q)| q).map_err(|e| bad_request(format!("bad query: {}", e.body_text())))
}

/// Hands a command to the daemon's loop; a full queue is a 503.
fn send(s: &Shared, cmd: Command) -> Result<(), ApiError> {
    s.commands.try_send(cmd).map_err(|_| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "node is busy; retry"))
}

/// A wire-encoded value sent as hex (its decoding errors name the type).
fn decode_hex<T: agora_protocol::Wire>(what: &str, text: &str) -> Result<T, ApiError> {
    let bytes = hex::decode(text.trim()).map_err(|e| bad_request(format!("{what} is not hex: {e}")))?;
    codec::decode(&bytes).map_err(|e| bad_request(e.to_string()))
}

pub fn router(shared: Shared) -> Router {
    let admin = shared.admin_token.clone();
    let hosts = shared.allowed_hosts.clone();
    let costly = Router::new()
        // Explorer pages read much of the ledger: limited like the other costly reads.
        .merge(crate::explorer::routes())
        .route("/v1/supply", get(supply))
        .route("/v1/blocks/{height}", get(block))
        .route("/v1/snapshots", get(snapshots))
        .route("/v1/providers/{address}/slashes", get(provider_slashes))
        .route("/v1/providers/{address}/heartbeats", get(provider_heartbeats))
        .route("/v1/proof/{kind}/{id}", get(proof))
        .route("/v1/light/transitions", get(transitions))
        .route("/v1/leases", get(leases))
        .route("/v1/market/auctions", get(crate::api_market::auctions))
        .route("/v1/market/explain/bid", get(crate::api_market::explain_bid))
        .route("/v1/market/explain/spot", get(crate::api_market::explain_spot))
        .route("/v1/tx", post(submit_tx))
        .route("/v1/txs", post(submit_txs).layer(DefaultBodyLimit::max(MAX_BATCH_BODY_BYTES)))
        .route_layer(
            tower::ServiceBuilder::new()
                .layer(axum::error_handling::HandleErrorLayer::new(overloaded))
                .load_shed()
                .concurrency_limit(MAX_CONCURRENT_COSTLY)
                .timeout(COSTLY_REQUEST_TIMEOUT),
        )
        // Outermost: a client over its share is refused before it takes a shared slot.
        .route_layer(axum::middleware::from_fn_with_state(
            crate::api_guard::ClientSlots::default(),
            crate::api_guard::limit_per_client,
        ));
    let router = Router::new()
        .route("/v1/status", get(status))
        .route("/v1/accounts/{address}", get(account))
        .route("/v1/validators", get(validators))
        .route("/v1/providers", get(providers))
        .route("/v1/offers", get(offers))
        .route("/v1/market/orders", get(crate::api_market::orders))
        .route("/v1/market/prices", get(crate::api_market::prices))
        .route("/v1/market/listings", get(crate::api_market::listings))
        .route("/v1/leases/propose", post(propose_lease))
        .route("/v1/leases/{id}", get(lease))
        .route("/v1/leases/{id}/logs", post(lease_logs))
        .route("/v1/leases/{id}/run", post(lease_run))
        .route("/metrics", get(metrics))
        .merge(costly);
    let router = match admin {
        Some(token) => {
            let admin = Router::new()
                .route("/v1/admin/partition", post(partition))
                .route("/v1/admin/heal", post(heal))
                .route("/v1/admin/announce", post(announce))
                .route_layer(axum::middleware::from_fn_with_state(token, crate::api_guard::check_admin));
            router.merge(admin)
        }
        None => router,
    };
    let limits = tower::ServiceBuilder::new()
        .layer(axum::error_handling::HandleErrorLayer::new(overloaded))
        .timeout(REQUEST_TIMEOUT);
    router
        .fallback(|| async { not_found("no such endpoint; see docs/api.md") })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(hosts, crate::api_guard::check_host))
        .layer(limits)
        .with_state(shared)
}

/// What the concurrency limit and the timeout answer.
async fn overloaded(err: tower::BoxError) -> ApiError {
    if err.is::<tower::load_shed::error::Overloaded>() {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "node is busy: too many requests in flight; retry")
    } else if err.is::<tower::timeout::error::Elapsed>() {
        ApiError::new(StatusCode::GATEWAY_TIMEOUT, "the request took too long")
    } else {
        internal(err)
    }
}

/// `POST /v1/admin/partition {"block": [peer id, …]}` (testnet nodes only).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PartitionRequest {
    block: Vec<String>,
}

async fn partition(
    AxumState(s): AxumState<Shared>,
    body: Result<Json<PartitionRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let body = json_body(body)?;
    if body.block.len() > agora_protocol::limits::MAX_VALIDATORS {
        return Err(bad_request("too many peers"));
    }
    let block = body
        .block
        .iter()
        .map(|p| p.parse::<libp2p::PeerId>().map_err(|e| bad_request(format!("peer id {p:?}: {e}"))))
        .collect::<Result<Vec<_>, _>>()?;
    set_partition(&s, block).await
}

async fn announce(AxumState(s): AxumState<Shared>) -> Result<Json<serde_json::Value>, ApiError> {
    let (reply, rx) = oneshot::channel();
    send(&s, Command::Announce { reply })?;
    match rx.await.map_err(internal)? {
        Some(seq) => Ok(Json(serde_json::json!({ "seq": seq }))),
        None => Err(ApiError::new(StatusCode::CONFLICT, "not an active, registered provider")),
    }
}

async fn heal(AxumState(s): AxumState<Shared>) -> Result<Json<serde_json::Value>, ApiError> {
    set_partition(&s, Vec::new()).await
}

async fn set_partition(s: &Shared, block: Vec<libp2p::PeerId>) -> Result<Json<serde_json::Value>, ApiError> {
    let count = block.len();
    let (reply, rx) = oneshot::channel();
    send(s, Command::Partition { block, reply })?;
    rx.await.map_err(internal)?;
    Ok(Json(serde_json::json!({ "blocked": count })))
}

async fn metrics(AxumState(s): AxumState<Shared>) -> Result<impl IntoResponse, ApiError> {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &s.registry).map_err(internal)?;
    Ok(([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], text))
}

async fn status(AxumState(s): AxumState<Shared>) -> Result<Json<crate::daemon::NodeStatus>, ApiError> {
    let status = s.status.read().map_err(internal)?.clone();
    Ok(Json(status))
}

async fn account(
    AxumState(s): AxumState<Shared>,
    Path(address): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let address: Address = address.parse().map_err(|e: agora_protocol::Error| bad_request(e.to_string()))?;
    let ledger = s.ledger.read().map_err(internal)?;
    let account = ledger.account(&address);
    Ok(Json(serde_json::json!({
        "address": address,
        "balance": account.balance,
        "stake": account.stake,
        "unbonding": account.unbonding,
        "nonce": account.nonce,
        "height": ledger.height().0,
    })))
}

async fn providers(AxumState(s): AxumState<Shared>) -> Result<Json<Vec<serde_json::Value>>, ApiError> {
    let ledger = s.ledger.read().map_err(internal)?;
    let seen = s.last_seen.read().map_err(internal)?;
    Ok(Json(
        ledger
            .providers()
            .map(|(address, p)| {
                let mut view = provider_view(&ledger, address, p);
                view["last_heartbeat_height"] = serde_json::json!(seen.get(address));
                view
            })
            .collect(),
    ))
}

/// Blocks over which uptime is reported.
pub const UPTIME_BLOCKS: u64 = 100;

/// A provider's ledger record as JSON (shared with `agora ledger providers --data`).
pub fn provider_view(ledger: &agora_ledger::State, address: &Address, p: &agora_ledger::Provider) -> serde_json::Value {
    use agora_ledger::ProviderStatus;
    let (status, jailed_until) = match p.status {
        ProviderStatus::Active if ledger.is_active_provider(address) => ("active", None),
        ProviderStatus::Active => ("unstaked", None),
        ProviderStatus::Jailed { until } => ("jailed", Some(until.0)),
        ProviderStatus::Tombstoned => ("tombstoned", None),
    };
    let tip = ledger.height().0;
    let from = tip.saturating_sub(UPTIME_BLOCKS - 1).max(p.registered_at.0);
    let span = tip.saturating_sub(from) + 1;
    let windows = ledger.slashed_windows(address);
    let down: u64 = windows.iter().map(|(s, e)| e.0.min(tip).saturating_add(1).saturating_sub(s.0.max(from))).sum();
    let uptime = 100.0 * span.saturating_sub(down.min(span)) as f64 / span as f64;
    serde_json::json!({
        "address": address,
        "operator": ledger.operator_of(address),
        "region": p.region,
        "uptime_pct": (uptime * 10.0).round() / 10.0,
        "uptime_blocks": span,
        "slashed_windows": windows.iter().map(|(s, e)| [s.0, e.0]).collect::<Vec<_>>(),
        "gpus": p.gpus,
        "simulated": p.gpus.iter().any(|g| g.simulated),
        "status": status,
        "jailed_until": jailed_until,
        "active": ledger.is_active_provider(address),
        "stake": ledger.account(address).stake,
        "slashes": p.slashes,
        "earned": p.earned,
        "leases_served": p.leases_served,
        "registered_at": p.registered_at.0,
    })
}

/// Query of `GET /v1/offers`; every field optional.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OfferQuery {
    /// Case-insensitive substring of the GPU model.
    model: Option<String>,
    /// Minimum VRAM per GPU, in GiB.
    min_vram_gb: Option<u32>,
    /// At least this many GPUs of one matching kind.
    gpus: Option<u32>,
    /// Highest price per GPU-hour: decimal AGR ("2.5") or micro-units ("2500000uagr").
    max_price: Option<String>,
    region: Option<String>,
}

async fn offers(
    AxumState(s): AxumState<Shared>,
    query: Result<Query<OfferQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<serde_json::Value>>, ApiError> {
    let q = query_params(query)?;
    let max_price = match q.max_price {
        Some(p) => Some(p.parse::<agora_protocol::Amount>().map_err(|e| bad_request(e.to_string()))?),
        None => None,
    };
    let filter = crate::offers::OfferFilter {
        model: q.model,
        min_vram_mib: q.min_vram_gb.map(|g| g.saturating_mul(1024)),
        gpus: q.gpus,
        max_price,
        region: q.region,
    };
    let book = s.offers.read().map_err(internal)?;
    let list = book
        .query(&filter)
        .into_iter()
        .map(|e| {
            let o = &e.offer.body;
            serde_json::json!({
                "provider": e.provider,
                "signed_by": e.offer.signer,
                // The offer as signed, so a buyer can check it instead of trusting this JSON.
                "signed": agora_protocol::codec::encode(&e.offer).map(hex::encode).unwrap_or_default(),
                "resources": o.resources,
                "seq": o.seq,
                "gpus": o.gpus,
                "simulated": o.gpus.iter().any(|g| g.simulated),
                "price_per_gpu_hour": o.price_per_gpu_hour,
                "max_duration_secs": o.max_duration_secs,
                "region": o.region,
                "expires_at_ms": o.expires_at_ms.0,
                "received_at_ms": e.received_at_ms,
            })
        })
        .collect();
    Ok(Json(list))
}

async fn lease(AxumState(s): AxumState<Shared>, Path(id): Path<String>) -> Result<Json<agora_ledger::Lease>, ApiError> {
    let id: agora_protocol::LeaseId = id.parse().map_err(|e: agora_protocol::Error| bad_request(e.to_string()))?;
    let ledger = s.ledger.read().map_err(internal)?;
    let retention_h = ledger.params().market.settled_lease_retention_ms / 3_600_000;
    ledger.lease(&id).cloned().map(Json).ok_or_else(|| {
        not_found(format!(
            "no lease {id} on the ledger: never opened, or settled more than {retention_h} h ago and pruned (its blocks remain)"
        ))
    })
}

#[derive(Serialize)]
struct ValidatorView {
    address: Address,
    power: String,
    stake: agora_protocol::Amount,
}

async fn validators(AxumState(s): AxumState<Shared>) -> Result<Json<Vec<ValidatorView>>, ApiError> {
    let ledger = s.ledger.read().map_err(internal)?;
    Ok(Json(
        ledger
            .validators()
            .iter()
            .map(|v| ValidatorView {
                address: v.address,
                power: v.power.to_string(),
                stake: ledger.account(&v.address).stake,
            })
            .collect(),
    ))
}

/// `GET /v1/supply`: the genesis supply, what was burned, and whether every
/// holding (balances, stake, unbonding, escrow) plus the burned add up to it
/// at the tip: anyone can check that no token was created or lost.
async fn supply(AxumState(s): AxumState<Shared>) -> Result<Json<serde_json::Value>, ApiError> {
    let ledger = s.ledger.read().map_err(internal)?;
    let audit = ledger.audit();
    Ok(Json(serde_json::json!({
        "height": ledger.height().0,
        "supply": ledger.supply(),
        "burned": ledger.burned(),
        "conserved": audit.is_ok(),
        "problem": audit.err().map(|e| e.to_string()),
    })))
}

/// The state snapshots this node serves to peers joining by state sync,
/// newest first: what `agora node run --state-sync --trust-hash` can pin.
async fn snapshots(AxumState(s): AxumState<Shared>) -> Result<Json<serde_json::Value>, ApiError> {
    let offers = s.blocks.snapshots().offers().map_err(internal)?;
    let list: Vec<serde_json::Value> = offers
        .iter()
        .map(|o| {
            serde_json::json!({
                "height": o.header.height.0,
                "block_hash": o.header.hash().to_hex(),
                "state_root": o.header.state_root.to_hex(),
                "chunks": o.chunks,
                "leaves": o.leaves,
            })
        })
        .collect();
    Ok(Json(serde_json::json!({ "snapshots": list })))
}

async fn block(
    AxumState(s): AxumState<Shared>,
    Path(height): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let h: u64 = height.parse().map_err(|_| bad_request(format!("height {height:?} is not a number")))?;
    let earliest = s.status.read().map(|st| st.earliest_height).unwrap_or(1);
    let block = s.blocks.block(Height(h)).map_err(internal)?.ok_or_else(|| {
        not_found(if h < earliest {
            format!(
                "block {h} is not kept here: this node holds blocks from {earliest} on (older ones were pruned, or it \
                 joined by state sync); ask an archive node"
            )
        } else {
            format!("no block at height {h}")
        })
    })?;
    let cert = s.blocks.certificate(Height(h)).map_err(internal)?;
    Ok(Json(serde_json::json!({
        "height": h,
        "hash": block.hash(),
        "header": block.header,
        "txs": block.txs.iter().map(|t| serde_json::json!({
            "hash": t.hash().ok(),
            "kind": t.body.kind.name(),
            "sender": t.signer,
            "nonce": t.body.nonce,
            "fee": t.body.fee,
        })).collect::<Vec<_>>(),
        "committed_by": cert.map(|c| c.signatures.iter().map(|s| s.validator).collect::<Vec<_>>()),
    })))
}

/// Refuses transactions that cannot apply on the current state (bad
/// signature, other chain, replayed nonce, insufficient funds, …), so the
/// sender hears why at once. A nonce ahead of the account's is accepted: it
/// waits in the mempool for the ones before it. Runs on a blocking thread:
/// the signatures are checked as one batch, and the dry runs run on a
/// private copy of the committed state.
async fn check_against_ledger(s: &Shared, txs: Vec<SignedTx>) -> Result<Vec<Result<VerifiedTx, ApiError>>, ApiError> {
    let ledger = s.ledger.clone();
    tokio::task::spawn_blocking(move || {
        let chain = ledger.read().map_err(internal)?.chain_id().clone();
        // The only signature check these get on this node: the daemon and
        // the mempool take them as verified.
        let checked: Vec<Result<VerifiedTx, ApiError>> = verify_all(&chain, txs)
            .into_iter()
            .map(|r| {
                r.ok_or_else(|| {
                    ApiError::from(TxRefusal::invalid("bad_signature", "signature does not match the sender"))
                })
            })
            .collect();
        // A private copy of the committed version (a pointer per map): the
        // dry runs write to it and roll back, never blocking a commit.
        let committed = ledger.read().map_err(internal)?;
        let mut ledger = agora_ledger::State::clone(&committed);
        Ok(checked
            .into_iter()
            .map(|r| {
                let tx = r?;
                let mark = ledger.checkpoint();
                let result = agora_ledger::apply_tx(&mut ledger, tx.tx(), agora_ledger::SigCheck::Skip);
                ledger.rollback(mark);
                match result {
                    Ok(_) => Ok(tx),
                    Err(agora_ledger::Error::WrongNonce { expected, found }) if found > expected => Ok(tx),
                    Err(e) => Err(TxRefusal::from_ledger(&e).into()),
                }
            })
            .collect())
    })
    .await
    .map_err(internal)?
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SubmitTx {
    /// The transaction's wire encoding, hex.
    tx: String,
}

async fn submit_tx(
    AxumState(s): AxumState<Shared>,
    body: Result<Json<SubmitTx>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let body = json_body(body)?;
    let tx: SignedTx = decode_hex("tx", &body.tx)?;
    s.edge.view().admit(0, tx.body.fee).map_err(|b| ApiError::from(TxRefusal::busy(b)))?;
    let tx = check_against_ledger(&s, vec![tx]).await?.pop().ok_or_else(|| internal("no verdict"))??;
    let (reply, rx) = oneshot::channel();
    send(&s, Command::SubmitTx { tx: Box::new(tx), reply })?;
    let hash = rx.await.map_err(internal)?.map_err(ApiError::from)?;
    Ok(Json(serde_json::json!({ "hash": hash })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SubmitTxs {
    /// Wire encodings, hex; at most `MAX_BATCH_TXS`.
    txs: Vec<String>,
}

/// `POST /v1/txs`: many transactions in one request, for wallets and load
/// generators. Each is checked like `POST /v1/tx`; the valid ones are
/// submitted together and the invalid ones reported by index.
async fn submit_txs(
    AxumState(s): AxumState<Shared>,
    body: Result<Json<SubmitTxs>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let body = json_body(body)?;
    if body.txs.len() > MAX_BATCH_TXS {
        return Err(bad_request(format!("{} transactions; at most {MAX_BATCH_TXS} per request", body.txs.len())));
    }
    let mut valid = Vec::with_capacity(body.txs.len());
    let mut valid_index = Vec::with_capacity(body.txs.len());
    let mut rejected = Vec::new();
    let mut decoded = Vec::with_capacity(body.txs.len());
    let mut decoded_index = Vec::with_capacity(body.txs.len());
    // What the edge will not take is refused before any signature is
    // checked; the daemon decides again, exactly, for the rest.
    let mut busy = None;
    let edge = s.edge.view();
    for (index, hex_tx) in body.txs.iter().enumerate() {
        match decode_hex::<SignedTx>("tx", hex_tx) {
            Ok(tx) => match edge.admit(decoded.len(), tx.body.fee) {
                Ok(()) => {
                    decoded.push(tx);
                    decoded_index.push(index);
                }
                Err(b) => {
                    let e = ApiError::from(TxRefusal::busy(b));
                    rejected.push(rejection(index, &e));
                    busy = Some(e);
                }
            },
            Err(e) => rejected.push(rejection(index, &e)),
        }
    }
    if decoded.is_empty() {
        if let Some(e) = busy.filter(|_| rejected.len() == body.txs.len()) {
            // Nothing taken, all for load: the whole request is a 503.
            return Err(e);
        }
    }
    for (index, verdict) in decoded_index.into_iter().zip(check_against_ledger(&s, decoded).await?) {
        match verdict {
            Ok(tx) => {
                valid.push(tx);
                valid_index.push(index);
            }
            Err(e) => rejected.push(rejection(index, &e)),
        }
    }
    let (reply, rx) = oneshot::channel();
    send(&s, Command::SubmitTxs { txs: valid, reply })?;
    let mut hashes = Vec::new();
    for (index, outcome) in valid_index.into_iter().zip(rx.await.map_err(internal)?) {
        match outcome {
            Ok(hash) => hashes.push(hash),
            Err(r) => rejected.push(rejection(index, &ApiError::from(r))),
        }
    }
    Ok(Json(serde_json::json!({ "accepted": hashes.len(), "hashes": hashes, "rejected": rejected })))
}

/// How long the API waits for a provider's answer (the protocol's own timeout is shorter).
const LEASE_RPC_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

async fn lease_rpc(
    s: &Shared,
    provider: Address,
    rpc: agora_protocol::job::LeaseRpc,
) -> Result<agora_protocol::job::LeaseRpcReply, ApiError> {
    let (reply, rx) = oneshot::channel();
    send(s, Command::LeaseRpc { provider, rpc: Box::new(rpc), reply })?;
    match tokio::time::timeout(LEASE_RPC_WAIT, rx).await {
        Ok(Ok(Ok(answer))) => Ok(answer),
        Ok(Ok(Err(why))) => Err(ApiError::new(StatusCode::BAD_GATEWAY, why)),
        Ok(Err(_)) => Err(internal("the node dropped the request")),
        Err(_) => Err(ApiError::new(StatusCode::GATEWAY_TIMEOUT, "the provider did not answer in time")),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProposeBody {
    /// The buyer's signed lease request, wire-encoded, hex.
    request: String,
    /// The job spec, wire-encoded, hex.
    spec: String,
}

/// `POST /v1/leases/propose`: forwards a buyer's signed request and job spec
/// to the provider it names; answers with the countersigned acceptance
/// (which the buyer then submits in an OpenLease transaction) or the
/// provider's refusal (409).
async fn propose_lease(
    AxumState(s): AxumState<Shared>,
    body: Result<Json<ProposeBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    use agora_protocol::job::{JobSpec, LeaseRpc, LeaseRpcReply};
    let body = json_body(body)?;
    let request: agora_protocol::Signed<agora_protocol::LeaseRequest> = decode_hex("request", &body.request)?;
    let spec: JobSpec = decode_hex("spec", &body.spec)?;
    let chain = s.ledger.read().map_err(internal)?.chain_id().clone();
    request.verify(&chain).map_err(|_| bad_request("the request's signature is not valid for this chain"))?;
    let provider = request.body.provider;
    match lease_rpc(&s, provider, LeaseRpc::Propose { request, spec }).await? {
        LeaseRpcReply::Accepted(accept) => Ok(Json(serde_json::json!({
            "lease_id": accept.body.lease_id,
            "gpu_ids": accept.body.gpu_ids,
            "accept": hex::encode(codec::encode(&accept).map_err(internal)?),
        }))),
        LeaseRpcReply::Refused(why) => Err(ApiError::refused(StatusCode::CONFLICT, why)),
        _ => Err(ApiError::new(StatusCode::BAD_GATEWAY, "the provider answered nonsense")),
    }
}

/// The body of a request the lease's holder signs for its provider.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignedBody {
    /// A `Signed<LogsRequest>` or `Signed<RunRequest>` by the lease's holder, wire-encoded, hex.
    request: String,
}

/// The lease in the path and the holder's signed request for it (which must
/// name the same lease), with the lease's provider on this node's ledger.
fn holder_request<T>(
    s: &Shared,
    id: &str,
    body: Result<Json<SignedBody>, axum::extract::rejection::JsonRejection>,
    lease_of: impl Fn(&agora_protocol::Signed<T>) -> agora_protocol::LeaseId,
) -> Result<(agora_protocol::Signed<T>, Address), ApiError>
where
    agora_protocol::Signed<T>: agora_protocol::Wire,
{
    let id: agora_protocol::LeaseId = id.parse().map_err(|e: agora_protocol::Error| bad_request(e.to_string()))?;
    let body = json_body(body)?;
    let request: agora_protocol::Signed<T> = decode_hex("request", &body.request)?;
    if lease_of(&request) != id {
        return Err(bad_request("the signed request is for another lease"));
    }
    let provider = s.ledger.read().map_err(internal)?.lease(&id).map(|l| l.provider);
    let provider = provider.ok_or_else(|| not_found(format!("no lease {id} on the ledger (yet)")))?;
    Ok((request, provider))
}

/// `POST /v1/leases/{id}/logs`: fetches a piece of a lease's job output from
/// its provider; only a request signed by the lease's buyer is served.
async fn lease_logs(
    AxumState(s): AxumState<Shared>,
    Path(id): Path<String>,
    body: Result<Json<SignedBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    use agora_protocol::job::{LeaseRpc, LeaseRpcReply, LogsRequest};
    let (request, provider) = holder_request::<LogsRequest>(&s, &id, body, |r| r.body.lease_id)?;
    match lease_rpc(&s, provider, LeaseRpc::Logs(request)).await? {
        LeaseRpcReply::Logs(chunk) => Ok(Json(serde_json::json!({
            "data_hex": hex::encode(&chunk.data),
            "next_offset": chunk.next_offset,
            "first_available": chunk.first_available,
            "state": chunk.state,
        }))),
        LeaseRpcReply::Refused(why) => Err(ApiError::refused(StatusCode::FORBIDDEN, why)),
        _ => Err(ApiError::new(StatusCode::BAD_GATEWAY, "the provider answered nonsense")),
    }
}

/// `POST /v1/leases/{id}/run`: asks the provider of an auctioned lease to
/// start its holder's job on it; answers with the GPUs it runs on, or the
/// provider's refusal (409 with its code).
async fn lease_run(
    AxumState(s): AxumState<Shared>,
    Path(id): Path<String>,
    body: Result<Json<SignedBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    use agora_protocol::job::{LeaseRpc, LeaseRpcReply, RunRequest};
    let (request, provider) = holder_request::<RunRequest>(&s, &id, body, |r| r.body.lease_id)?;
    let lease_id = request.body.lease_id;
    let chain = s.ledger.read().map_err(internal)?.chain_id().clone();
    request.verify(&chain).map_err(|_| bad_request("the request's signature is not valid for this chain"))?;
    match lease_rpc(&s, provider, LeaseRpc::Run(request)).await? {
        LeaseRpcReply::Started { gpu_ids } => Ok(Json(serde_json::json!({ "lease_id": lease_id, "gpu_ids": gpu_ids }))),
        LeaseRpcReply::Refused(why) => Err(ApiError::refused(StatusCode::CONFLICT, why)),
        _ => Err(ApiError::new(StatusCode::BAD_GATEWAY, "the provider answered nonsense")),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LeaseQuery {
    buyer: Option<String>,
    provider: Option<String>,
    /// At most this many (default and cap `MAX_LISTED_LEASES`).
    limit: Option<usize>,
    /// The last lease id of the previous page: continue after it.
    before: Option<String>,
}

/// Most leases one `GET /v1/leases` lists (newest first).
const MAX_LISTED_LEASES: usize = 500;

/// `GET /v1/leases?buyer=&provider=&limit=&before=`: newest first (by start
/// time, then id), one page at a time; the next page starts `before` the
/// last id of this one. The scan runs on a blocking thread and keeps only
/// one page in memory.
async fn leases(
    AxumState(s): AxumState<Shared>,
    query: Result<Query<LeaseQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<agora_ledger::Lease>>, ApiError> {
    let q = query_params(query)?;
    let parse = |a: Option<String>| -> Result<Option<Address>, ApiError> {
        a.map(|a| a.parse::<Address>().map_err(|e| bad_request(e.to_string()))).transpose()
    };
    let (buyer, provider) = (parse(q.buyer)?, parse(q.provider)?);
    let limit = q.limit.unwrap_or(MAX_LISTED_LEASES).clamp(1, MAX_LISTED_LEASES);
    let before = q
        .before
        .map(|b| b.parse::<agora_protocol::LeaseId>().map_err(|e| bad_request(format!("before: {e}"))))
        .transpose()?;
    let ledger = s.ledger.clone();
    let page = tokio::task::spawn_blocking(move || -> Result<Vec<agora_ledger::Lease>, ApiError> {
        let ledger = ledger.read().map_err(internal)?;
        let cursor = match before {
            None => None,
            Some(id) => {
                let l = ledger.lease(&id).ok_or_else(|| bad_request(format!("before: no lease {id}")))?;
                Some((l.start_ms, l.id))
            }
        };
        // The page is the `limit` newest (start, id) below the cursor: a
        // bounded heap, so a long lease history costs time, not memory.
        let mut heap = std::collections::BinaryHeap::new();
        for l in ledger.leases() {
            let key = (l.start_ms, l.id);
            let wanted = buyer.is_none_or(|b| l.buyer == b)
                && provider.is_none_or(|p| l.provider == p)
                && cursor.is_none_or(|c| key < c);
            if wanted {
                heap.push(std::cmp::Reverse(key));
                if heap.len() > limit {
                    heap.pop();
                }
            }
        }
        let mut keys: Vec<_> = heap.into_iter().map(|std::cmp::Reverse(k)| k).collect();
        keys.sort_by(|a, b| b.cmp(a));
        Ok(keys.into_iter().filter_map(|(_, id)| ledger.lease(&id).cloned()).collect())
    })
    .await
    .map_err(internal)??;
    Ok(Json(page))
}

/// Most slashes `GET /v1/providers/{address}/slashes` returns.
pub const MAX_SLASHES_LISTED: usize = 100;

/// A provider's slashes, newest first (at most `MAX_SLASHES_LISTED`), each
/// with the evidence behind it, found through the store's slash index (no
/// block scan) and read off the async runtime.
async fn provider_slashes(
    AxumState(s): AxumState<Shared>,
    Path(address): Path<String>,
) -> Result<Json<Vec<serde_json::Value>>, ApiError> {
    let address: Address = address.parse().map_err(|e: agora_protocol::Error| bad_request(e.to_string()))?;
    let (since, chain) = {
        let ledger = s.ledger.read().map_err(internal)?;
        let p = ledger.provider(&address).ok_or_else(|| not_found(format!("{address} is not a provider")))?;
        (p.registered_at, ledger.chain_id().clone())
    };
    let blocks = s.blocks.clone();
    let found = tokio::task::spawn_blocking(move || slash_records(&blocks, &address, since, &chain))
        .await
        .map_err(internal)??;
    Ok(Json(found))
}

/// Validator-set transitions one `GET /v1/light/transitions` returns at most.
const MAX_TRANSITIONS_PER_PAGE: usize = 64;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TransitionQuery {
    /// Only transitions above this height (default 0: from the genesis).
    after: Option<u64>,
}

/// `GET /v1/light/transitions?after=H`: the blocks above H that changed the
/// validator set, each with its certificate and the state's meta leaf (the
/// new set) with its proof — what a light client follows from its genesis
/// to today's validators (`agora_ledger::light::follow`). One page of at
/// most `MAX_TRANSITIONS_PER_PAGE`, ascending; `more` says whether to ask
/// again after the last. A node that joined by state sync holds those since
/// its snapshot only.
async fn transitions(
    AxumState(s): AxumState<Shared>,
    query: Result<Query<TransitionQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let q = query_params(query)?;
    let after = Height(q.after.unwrap_or(0));
    let blocks = s.blocks.clone();
    let mut page = tokio::task::spawn_blocking(move || blocks.transitions(after, MAX_TRANSITIONS_PER_PAGE + 1))
        .await
        .map_err(internal)?
        .map_err(internal)?;
    let more = page.len() > MAX_TRANSITIONS_PER_PAGE;
    page.truncate(MAX_TRANSITIONS_PER_PAGE);
    let listed: Vec<serde_json::Value> =
        page.iter().map(|(h, bytes)| serde_json::json!({ "height": h.0, "bundle": hex::encode(bytes) })).collect();
    Ok(Json(serde_json::json!({ "transitions": listed, "more": more })))
}

/// A value of the committed state with everything a light client needs to
/// check it without trusting this node (`agora_ledger::light`): its Merkle
/// proof, the header, the header's commit certificate and the state's meta
/// leaf (the validators that decided the block) with its proof.
async fn proof(
    AxumState(s): AxumState<Shared>,
    Path((kind, id)): Path<(String, String)>,
) -> Result<Json<serde_json::Value>, ApiError> {
    use agora_ledger::tree::{self, StateKey};
    let address = |id: &str| id.parse::<Address>().map_err(|e| bad_request(e.to_string()));
    let key = match kind.as_str() {
        "account" => StateKey::Account(address(&id)?),
        "provider" => StateKey::Provider(address(&id)?),
        "lease" => StateKey::Lease(id.parse().map_err(|e: agora_protocol::Error| bad_request(e.to_string()))?),
        other => return Err(bad_request(format!("no proofs of {other:?}: account, provider or lease"))),
    };
    // Proofs are a few tree reads (cached): under the read lock of the
    // API's committed state, whose values they prove.
    let (height, chain, (value, proof), (meta, meta_proof)) = {
        let ledger = s.ledger.read().map_err(internal)?;
        let height = ledger.height();
        if height.0 == 0 {
            return Err(not_found("no block yet: nothing is certified".to_string()));
        }
        (
            height,
            ledger.chain_id().clone(),
            ledger.prove(&key).map_err(internal)?,
            ledger.prove(&StateKey::Meta).map_err(internal)?,
        )
    };
    let blocks = s.blocks.clone();
    let bundle = tokio::task::spawn_blocking(move || -> Result<agora_ledger::light::ProofBundle, ApiError> {
        let header = blocks.block(height).map_err(internal)?.ok_or_else(|| internal("tip block missing"))?.header;
        let certificate = blocks
            .certificate(height)
            .map_err(internal)?
            .ok_or_else(|| not_found(format!("no commit certificate stored for height {height}")))?;
        Ok(agora_ledger::light::ProofBundle {
            header,
            certificate,
            key: key.bytes(),
            value,
            proof: tree::encode_proof(&proof),
            meta: meta.ok_or_else(|| internal("the state has no meta leaf"))?,
            meta_proof: tree::encode_proof(&meta_proof),
        })
    })
    .await
    .map_err(internal)??;
    let encoded = codec::canonical_bytes(&bundle).map_err(internal)?;
    Ok(Json(serde_json::json!({
        "chain_id": chain.as_str(),
        "height": height.0,
        "kind": kind,
        "present": bundle.value.is_some(),
        "bundle": hex::encode(encoded),
    })))
}

/// A provider's heartbeat coverage over the recent windows, as this node
/// saw it, with the first signed heartbeat of each window as proof.
async fn provider_heartbeats(
    AxumState(s): AxumState<Shared>,
    Path(address): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let address: Address = address.parse().map_err(|e: agora_protocol::Error| bad_request(e.to_string()))?;
    let ledger = s.ledger.read().map_err(internal)?;
    if ledger.provider(&address).is_none() {
        return Err(not_found(format!("{address} is not a provider")));
    }
    let coverage = s.coverage.read().map_err(internal)?;
    Ok(Json(heartbeat_coverage(&coverage, &ledger, &address)))
}

/// `address`'s recent windows as JSON (see `Coverage::report`), each proof
/// with its `"signed"` bytes for `agora verify`.
pub(crate) fn heartbeat_coverage(
    coverage: &crate::coverage::Coverage,
    ledger: &agora_ledger::State,
    address: &Address,
) -> serde_json::Value {
    let windows: Vec<serde_json::Value> = coverage
        .report(ledger, address)
        .into_iter()
        .map(|w| {
            serde_json::json!({
                "start": w.start.0,
                "end": w.end.0,
                "heartbeats": w.seen.map_or(0, |c| c.heartbeats),
                "slashed": w.slashed,
                "proof": w.seen.map(|c| serde_json::json!({
                    "seq": c.proof.body.seq,
                    "names_height": c.proof.body.height.0,
                    "names_block": c.proof.body.block_hash,
                    "signer": c.proof.signer,
                    "signed": codec::encode(&c.proof).map(hex::encode).unwrap_or_default(),
                })),
            })
        })
        .collect();
    serde_json::json!({
        "chain_id": ledger.chain_id().as_str(),
        "provider": address,
        "window_blocks": coverage.window(),
        "watching_since": coverage.since().0,
        "observed_by": "this node (heartbeats are gossip, not consensus; each proof is signed by the provider)",
        "windows": windows,
    })
}

/// A provider's slashes since `since` with the evidence behind each, from
/// the store's slash index (blocking: it reads blocks).
pub(crate) fn slash_records(
    blocks: &agora_ledger::store::BlockReader,
    address: &Address,
    since: Height,
    chain: &agora_protocol::ChainId,
) -> Result<Vec<serde_json::Value>, ApiError> {
    let mut found = Vec::new();
    let mut current: Option<(Height, agora_protocol::Block)> = None;
    for (h, index) in blocks.slashes_of(address, since, MAX_SLASHES_LISTED).map_err(internal)? {
        if current.as_ref().is_none_or(|(at, _)| *at != h) {
            let Some(block) = blocks.block(h).map_err(internal)? else { continue };
            current = Some((h, block));
        }
        let Some(tx) = current.as_ref().and_then(|(_, b)| b.txs.get(index)) else { continue };
        let mut record = slash_record(h.0, tx);
        record["chain_id"] = serde_json::json!(chain.as_str());
        found.push(record);
    }
    Ok(found)
}

fn slash_record(h: u64, tx: &SignedTx) -> serde_json::Value {
    match &tx.body.kind {
        agora_protocol::TxKind::SlashDowntime { evidence } => serde_json::json!({
            "height": h,
            "tx": tx.hash().ok(),
            "reason": "downtime",
            "submitted_by": tx.signer,
            "window_start": evidence.window_start.0,
            "window_end": evidence.window_end.0,
            "attestations": evidence.attestations.iter().map(|a| serde_json::json!({
                "validator": a.signer,
                "window_start": a.body.window_start.0,
                "window_end": a.body.window_end.0,
                "signature": hex::encode(a.signature.0),
                // The attestation as signed, for `agora verify`.
                "signed": codec::encode(a).map(hex::encode).unwrap_or_default(),
            })).collect::<Vec<_>>(),
        }),
        agora_protocol::TxKind::SlashEquivocation { evidence } => serde_json::json!({
            "height": h,
            "tx": tx.hash().ok(),
            "reason": "equivocation",
            "submitted_by": tx.signer,
            "evidence": evidence,
            // The two conflicting heartbeats as signed, for `agora verify`.
            "signed_heartbeats": match evidence {
                agora_protocol::EquivocationEvidence::Heartbeats { first, second } => [first, second]
                    .iter()
                    .map(|h| serde_json::json!({ "signed": codec::encode(*h).map(hex::encode).unwrap_or_default() }))
                    .collect::<Vec<_>>(),
                agora_protocol::EquivocationEvidence::Votes { .. } => Vec::new(),
            },
        }),
        other => serde_json::json!({ "height": h, "tx": tx.hash().ok(), "reason": other.name() }),
    }
}
