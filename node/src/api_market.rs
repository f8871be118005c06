//! The exchange's HTTP API (`/v1/market/...`): open orders, the current
//! auction with each class's indicative clearing (computed on the book as
//! it stands, exactly as the clearing block will), and the price history.
//! Reads of the committed ledger only.

use std::collections::BTreeMap;

use agora_ledger::auction::clear;
use agora_ledger::clearing::auction_book;
use agora_ledger::{AuctionPhase, Order, Side, State};
use agora_protocol::{Address, GpuClass};
use axum::Json;
use axum::extract::{Query, State as AxumState};
use serde::Deserialize;

use crate::api::{ApiError, bad_request, internal};
use crate::daemon::Shared;

/// Orders one `GET /v1/market/orders` returns at most.
pub const MAX_ORDERS_PER_PAGE: usize = 1_000;
/// Auction results one `GET /v1/market/prices` returns at most.
pub const MAX_RESULTS_PER_PAGE: usize = 1_000;
/// Recent results `GET /v1/market/auctions` shows.
pub const RECENT_AUCTIONS: usize = 20;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrdersQuery {
    owner: Option<String>,
    class: Option<String>,
    limit: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassQuery {
    class: Option<String>,
    since: Option<u64>,
    limit: Option<usize>,
}

fn class_filter(class: Option<&str>) -> Result<Option<GpuClass>, ApiError> {
    class.map(|c| GpuClass::parse(c).map_err(|e| bad_request(e.to_string()))).transpose()
}

fn order_view(o: &Order) -> serde_json::Value {
    serde_json::json!({
        "id": o.id,
        "owner": o.owner.to_string(),
        "class": o.class.to_string(),
        "side": match o.side { Side::Bid => "bid", Side::Ask => "ask" },
        "gpus": o.gpus,
        "hours": o.hours,
        "price": o.price.0.to_string(),
        "split": o.split,
        "start_hours": o.start_hours,
        "placed": o.placed.0,
        "escrow": o.escrow.0.to_string(),
    })
}

/// `GET /v1/market/orders[?owner=ADDR][&class=C][&limit=N]`: open orders, oldest first.
pub async fn orders(
    AxumState(s): AxumState<Shared>,
    Query(q): Query<OrdersQuery>,
) -> Result<Json<Vec<serde_json::Value>>, ApiError> {
    let class = class_filter(q.class.as_deref())?;
    let owner = q.owner.as_deref().map(|a| a.parse::<Address>().map_err(|e| bad_request(e.to_string()))).transpose()?;
    let limit = q.limit.unwrap_or(MAX_ORDERS_PER_PAGE).min(MAX_ORDERS_PER_PAGE);
    let ledger = s.ledger.read().map_err(internal)?;
    let keep = |o: &&Order| class.as_ref().is_none_or(|c| &o.class == c);
    let list: Vec<serde_json::Value> = match owner {
        Some(owner) => ledger.orders_of(&owner).filter(keep).take(limit).map(order_view).collect(),
        None => ledger.orders().filter(keep).take(limit).map(order_view).collect(),
    };
    Ok(Json(list))
}

fn phase_name(phase: AuctionPhase) -> &'static str {
    match phase {
        AuctionPhase::Open => "open",
        AuctionPhase::NoCancel => "no-cancel",
        AuctionPhase::Clearing => "clearing",
    }
}

/// What the next block's auction state is, with each class's indicative
/// clearing on the book as it stands.
pub fn auctions_view(ledger: &State, class: Option<&GpuClass>) -> serde_json::Value {
    let market = &ledger.params().market;
    let next = ledger.height().0 + 1;
    let (auction, phase) = market.phase(next);
    let mut books: BTreeMap<&GpuClass, Vec<&Order>> = BTreeMap::new();
    for o in ledger.orders().filter(|o| class.is_none_or(|c| &o.class == c)) {
        books.entry(&o.class).or_default().push(o);
    }
    let classes: Vec<serde_json::Value> = books
        .into_iter()
        .map(|(c, orders)| {
            let (bids, asks) = auction_book(ledger, orders);
            let indicative = clear(&bids, &asks);
            serde_json::json!({
                "class": c.to_string(),
                "bids": bids.len(),
                "asks": asks.len(),
                "indicative_price": indicative.price.map(|p| p.0.to_string()),
                "matched_gpu_hours": indicative.matched_gpu_hours,
                "bid_depth": indicative.bid_depth,
                "ask_depth": indicative.ask_depth,
            })
        })
        .collect();
    let first = auction.saturating_sub(RECENT_AUCTIONS as u64);
    let recent: Vec<serde_json::Value> =
        ledger.auction_results(first).filter(|r| class.is_none_or(|c| &r.class == c)).map(result_view).collect();
    serde_json::json!({
        "height": ledger.height().0,
        "auction": auction,
        "phase": phase_name(phase),
        "clears_at_height": market.clearing_height(auction),
        "auction_blocks": market.auction_blocks,
        "no_cancel_blocks": market.no_cancel_blocks,
        "classes": classes,
        "recent": recent,
    })
}

fn result_view(r: &agora_ledger::clearing::AuctionResult) -> serde_json::Value {
    serde_json::json!({
        "kind": "auction",
        "auction": r.auction,
        "class": r.class.to_string(),
        "height": r.height,
        "price": r.price.map(|p| p.0.to_string()),
        "matched_gpu_hours": r.matched_gpu_hours,
        "bid_depth": r.bid_depth,
        "ask_depth": r.ask_depth,
        "leases": r.leases,
    })
}

fn spot_view(t: &agora_ledger::clearing::SpotTrades) -> serde_json::Value {
    serde_json::json!({
        "kind": "spot",
        "auction": t.auction,
        "class": t.class.to_string(),
        "height": t.height,
        "price": t.average_price().map(|p| p.0.to_string()),
        "low": t.low.0.to_string(),
        "high": t.high.0.to_string(),
        "matched_gpu_hours": t.gpu_seconds / 3600,
        "gpu_seconds": t.gpu_seconds,
        "leases": t.leases,
    })
}

/// `GET /v1/market/auctions[?class=C]`: the current auction, its phase and
/// each class's indicative price; the recent results.
pub async fn auctions(
    AxumState(s): AxumState<Shared>,
    Query(q): Query<ClassQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    if q.since.is_some() || q.limit.is_some() {
        return Err(bad_request("auctions takes only ?class="));
    }
    let class = class_filter(q.class.as_deref())?;
    let ledger = s.ledger.clone();
    let view = tokio::task::spawn_blocking(move || {
        let ledger = ledger.read().map_err(internal)?;
        Ok::<_, ApiError>(auctions_view(&ledger, class.as_ref()))
    })
    .await
    .map_err(internal)??;
    Ok(Json(view))
}

/// `GET /v1/market/listings`: leases their holders offer for sale, with
/// what is left of them.
pub async fn listings(AxumState(s): AxumState<Shared>) -> Result<Json<Vec<serde_json::Value>>, ApiError> {
    let ledger = s.ledger.read().map_err(internal)?;
    Ok(Json(
        ledger
            .listings()
            .take(MAX_ORDERS_PER_PAGE)
            .filter_map(|(id, (seller, price))| {
                let l = ledger.lease(id)?;
                Some(serde_json::json!({
                    "lease_id": id.to_string(),
                    "seller": seller.to_string(),
                    "price": price.0.to_string(),
                    "provider": l.provider.to_string(),
                    "class": l.gpu_model,
                    "gpus": l.gpus,
                    "price_per_gpu_hour": l.price_per_gpu_hour.0.to_string(),
                    "end_ms": l.end_ms.0,
                    "ends_in_secs": l.end_ms.0.saturating_sub(ledger.time_ms().0) / 1000,
                }))
            })
            .collect(),
    ))
}

/// `GET /v1/market/prices[?class=C][&since=HEIGHT][&limit=N]`: the price
/// index per class over time, oldest first: each auction's clearing price
/// (`kind: auction`) and, per auction period, the spot market's
/// volume-weighted average (`kind: spot`).
pub async fn prices(
    AxumState(s): AxumState<Shared>,
    Query(q): Query<ClassQuery>,
) -> Result<Json<Vec<serde_json::Value>>, ApiError> {
    let class = class_filter(q.class.as_deref())?;
    let since = q.since.unwrap_or(0);
    let limit = q.limit.unwrap_or(MAX_RESULTS_PER_PAGE).min(MAX_RESULTS_PER_PAGE);
    let ledger = s.ledger.read().map_err(internal)?;
    let first = since / ledger.params().market.auction_blocks.max(1);
    let keep = |c: &GpuClass, height: u64| height >= since && class.as_ref().is_none_or(|k| k == c);
    let auctions =
        ledger.auction_results(first).filter(|r| keep(&r.class, r.height)).map(|r| ((r.auction, 0), result_view(r)));
    let spot = ledger.spot_trades(first).filter(|t| keep(&t.class, t.height)).map(|t| ((t.auction, 1), spot_view(t)));
    // Both are in (auction, class) order: merged by auction, auctions first.
    let mut rows: Vec<((u64, u8), serde_json::Value)> = auctions.take(limit).chain(spot.take(limit)).collect();
    rows.sort_by_key(|(k, _)| *k);
    Ok(Json(rows.into_iter().take(limit).map(|(_, v)| v).collect()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExplainSpotQuery {
    gpus: u32,
    duration_secs: u64,
    model: Option<String>,
    min_vram_gb: Option<u32>,
    max_price: Option<String>,
    buyer: Option<String>,
    provider: Option<String>,
}

fn address(text: Option<&str>) -> Result<Option<Address>, ApiError> {
    text.map(|a| a.parse::<Address>().map_err(|e| bad_request(e.to_string()))).transpose()
}

fn amount(text: Option<&str>) -> Result<Option<agora_protocol::Amount>, ApiError> {
    text.map(|p| p.parse::<agora_protocol::Amount>().map_err(|e| bad_request(e.to_string()))).transpose()
}

/// `GET /v1/market/explain/spot?gpus=N&duration_secs=S[&model=][&min_vram_gb=][&max_price=][&buyer=][&provider=]`:
/// every offer in this node's book (cheapest first), and why it would or
/// would not take a spot lease like this.
pub async fn explain_spot(
    AxumState(s): AxumState<Shared>,
    query: Result<Query<ExplainSpotQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let q = crate::api::query_params(query)?;
    if q.gpus == 0 || q.duration_secs == 0 {
        return Err(bad_request("gpus and duration_secs must be positive"));
    }
    let want = crate::explain::SpotWant {
        buyer: address(q.buyer.as_deref())?,
        gpus: q.gpus,
        model: q.model,
        min_vram_gb: q.min_vram_gb,
        max_price: amount(q.max_price.as_deref())?,
        duration_secs: q.duration_secs,
    };
    let only = address(q.provider.as_deref())?;
    let (book, ledger) = (s.offers.clone(), s.ledger.clone());
    // Each offer's capacity is read from the open leases: off the async workers.
    let verdicts = tokio::task::spawn_blocking(move || {
        let book = book.read().map_err(internal)?;
        let entries = book.query(&crate::offers::OfferFilter::default());
        let offers: Vec<(Address, &agora_protocol::Offer)> = entries
            .iter()
            .filter(|e| only.is_none_or(|p| p == e.provider))
            .map(|e| (e.provider, &e.offer.body))
            .collect();
        let ledger = ledger.read().map_err(internal)?;
        Ok::<_, ApiError>(crate::explain::spot(&ledger, &offers, &want, crate::daemon::now_ms()))
    })
    .await
    .map_err(internal)??;
    Ok(Json(serde_json::json!({ "offers": verdicts })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExplainBidQuery {
    class: String,
    gpus: u32,
    hours: u32,
    max_price: String,
    #[serde(default)]
    split: bool,
    #[serde(default)]
    start_hours: u32,
    buyer: Option<String>,
}

/// `GET /v1/market/explain/bid?class=C&gpus=N&hours=H&max_price=P[&split=true][&buyer=]`:
/// each open ask of the class, and whether such a bid would fill if the
/// auction cleared on the book as it stands (and why not).
pub async fn explain_bid(
    AxumState(s): AxumState<Shared>,
    query: Result<Query<ExplainBidQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let q = crate::api::query_params(query)?;
    if q.gpus == 0 || q.hours == 0 {
        return Err(bad_request("gpus and hours must be positive"));
    }
    let want = crate::explain::BidWant {
        buyer: address(q.buyer.as_deref())?,
        class: GpuClass::parse(&q.class).map_err(|e| bad_request(e.to_string()))?,
        gpus: q.gpus,
        hours: q.hours,
        max_price: amount(Some(&q.max_price))?.unwrap_or_default(),
        split: q.split,
        start_hours: q.start_hours,
    };
    let ledger = s.ledger.clone();
    // A trial clearing of the class's book: off the async workers, like /auctions.
    let explained = tokio::task::spawn_blocking(move || {
        let ledger = ledger.read().map_err(internal)?;
        Ok::<_, ApiError>(crate::explain::bid(&ledger, &want))
    })
    .await
    .map_err(internal)??;
    Ok(Json(serde_json::to_value(explained).map_err(internal)?))
}
