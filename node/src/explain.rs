//! Why an order would not match, decided without I/O (`agora submit
//! --explain`, `agora bid --explain`): provider by provider for a spot
//! lease, ask by ask and for the auction as a whole for a bid. Each reason
//! is a stable code and a sentence, read from the committed ledger and this
//! node's offer book exactly as a provider's node and the clearing block
//! would read them.

use agora_ledger::auction::{BidOrder, clear, cost};
use agora_ledger::capacity::capacity;
use agora_ledger::clearing::auction_book;
use agora_ledger::{Side, State};
use agora_protocol::{Address, Amount, GpuClass, GpuSpec, Offer};
use serde::Serialize;

/// One reason an order would not match.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Reason {
    pub code: &'static str,
    pub detail: String,
}

fn reason(code: &'static str, detail: impl Into<String>) -> Reason {
    Reason { code, detail: detail.into() }
}

/// What a buyer asks of the spot market (`agora submit`).
#[derive(Clone, Debug, Default)]
pub struct SpotWant {
    pub buyer: Option<Address>,
    pub gpus: u32,
    /// A case-insensitive part of the model name.
    pub model: Option<String>,
    pub min_vram_gb: Option<u32>,
    pub max_price: Option<Amount>,
    pub duration_secs: u64,
}

/// One provider's offer, judged against a spot want.
#[derive(Clone, Debug, Serialize)]
pub struct OfferVerdict {
    pub provider: Address,
    pub price_per_gpu_hour: Amount,
    /// The GPU kind that would be leased, when the offer has one that fits.
    pub model: Option<String>,
    pub matches: bool,
    pub reasons: Vec<Reason>,
}

/// Judges every offer (cheapest first, as `submit` tries them).
pub fn spot(state: &State, offers: &[(Address, &Offer)], want: &SpotWant, now_ms: u64) -> Vec<OfferVerdict> {
    offers.iter().map(|(provider, offer)| judge_offer(state, provider, offer, want, now_ms)).collect()
}

fn judge_offer(state: &State, provider: &Address, offer: &Offer, want: &SpotWant, now_ms: u64) -> OfferVerdict {
    let mut reasons = Vec::new();
    let fits_kind = |g: &&GpuSpec| {
        want.model.as_ref().is_none_or(|m| g.model.to_lowercase().contains(&m.to_lowercase()))
            && want.min_vram_gb.is_none_or(|v| u64::from(g.vram_mib) >= u64::from(v) * 1024)
    };
    let kinds: Vec<&GpuSpec> = offer.gpus.iter().filter(fits_kind).collect();
    let kind = kinds.iter().max_by_key(|g| g.count).copied();
    let price = offer.price_per_gpu_hour;
    match kind {
        None => {
            let has: Vec<String> = offer
                .gpus
                .iter()
                .map(|g| format!("{}× {}", g.count, GpuClass::of(g).map_or(g.model.clone(), |c| c.to_string())))
                .collect();
            reasons.push(reason("no_such_gpu", format!("has no GPUs of that kind (has {})", has.join(", "))));
        }
        Some(k) if k.count < want.gpus => {
            reasons.push(reason("too_few_gpus", format!("has {} {} GPU(s); you want {}", k.count, k.model, want.gpus)));
        }
        Some(k) => {
            if let Some(class) = GpuClass::of(k) {
                let c = capacity(state, provider, &class);
                if c.free() < u64::from(want.gpus) {
                    reasons.push(reason(
                        "no_free_gpus",
                        format!(
                            "{} of its {} {class} free ({} in open auction asks, {} leased out); you want {}",
                            c.free(),
                            c.registered,
                            c.asked,
                            c.leased,
                            want.gpus
                        ),
                    ));
                }
            }
        }
    }
    if let Some(max) = want.max_price.filter(|m| price > *m) {
        reasons.push(reason("price_above_max", format!("asks {price}/GPU-hour, above your maximum {max}")));
    }
    if offer.max_duration_secs < want.duration_secs {
        reasons.push(reason(
            "duration_too_long",
            format!("leases at most {} s; you want {} s", offer.max_duration_secs, want.duration_secs),
        ));
    }
    if offer.expires_at_ms.0 <= now_ms {
        reasons.push(reason("offer_expired", "its offer has expired (the provider may be down)"));
    }
    if !state.is_active_provider(provider) {
        reasons.push(reason("provider_inactive", provider_state(state, provider)));
    }
    let escrow = agora_protocol::market::spot_escrow(price, want.gpus, want.duration_secs).unwrap_or(Amount(u64::MAX));
    if let Some(buyer) = &want.buyer {
        let balance = state.account(buyer).balance;
        if balance < escrow {
            reasons.push(reason("insufficient_balance", format!("the escrow is {escrow}; your balance is {balance}")));
        }
    }
    OfferVerdict {
        provider: *provider,
        price_per_gpu_hour: price,
        model: kind.map(|k| k.model.clone()),
        matches: reasons.is_empty(),
        reasons,
    }
}

/// Why a provider does not lease: jailed, tombstoned, unregistered or under-staked.
fn provider_state(state: &State, provider: &Address) -> String {
    match state.provider(provider).map(|p| &p.status) {
        None => "is not a registered provider".into(),
        Some(agora_ledger::ProviderStatus::Jailed { until }) => format!("is jailed until height {}", until.0),
        Some(agora_ledger::ProviderStatus::Tombstoned) => "is permanently jailed (tombstoned)".into(),
        Some(_) => "has too little stake to provide".into(),
    }
}

/// What a buyer bids in the next auction (`agora bid`).
#[derive(Clone, Debug)]
pub struct BidWant {
    pub buyer: Option<Address>,
    pub class: GpuClass,
    pub gpus: u32,
    pub hours: u32,
    pub max_price: Amount,
    pub split: bool,
    /// Hours after the clearing the contract starts.
    pub start_hours: u32,
}

/// One open ask of the class, judged against a bid.
#[derive(Clone, Debug, Serialize)]
pub struct AskVerdict {
    pub order: u64,
    pub provider: Address,
    pub gpus: u32,
    pub hours: u32,
    pub min_price: Amount,
    pub fits: bool,
    pub reasons: Vec<Reason>,
}

/// A bid judged against the book as it stands.
#[derive(Clone, Debug, Serialize)]
pub struct BidExplanation {
    /// The auction's clearing price with this bid added, if anything crosses.
    pub indicative_price: Option<Amount>,
    /// Whether this bid would be filled if the auction cleared now.
    pub would_fill: bool,
    /// Reasons that concern the whole bid (balance, class, the auction).
    pub reasons: Vec<Reason>,
    pub asks: Vec<AskVerdict>,
}

/// The id the hypothetical bid gets in the trial clearing: after every real one.
const TRIAL_BID: u64 = u64::MAX;

/// Judges a bid: each open ask of its class, then a trial clearing of the
/// book with the bid added last (it would be placed after every order there).
pub fn bid(state: &State, want: &BidWant) -> BidExplanation {
    let mut reasons = Vec::new();
    let escrow = cost(want.max_price, want.gpus, want.hours).unwrap_or(Amount(u64::MAX));
    if let Some(buyer) = &want.buyer {
        let balance = state.account(buyer).balance;
        if balance < escrow {
            reasons.push(reason(
                "insufficient_balance",
                format!("the bid escrows its maximum cost, {escrow}; your balance is {balance}"),
            ));
        }
    }
    let registered =
        state.providers().any(|(_, p)| p.gpus.iter().any(|g| GpuClass::of(g).as_ref() == Some(&want.class)));
    if !registered {
        reasons.push(reason("class_unknown", format!("no registered provider has {} GPUs", want.class)));
    }
    let orders: Vec<&agora_ledger::Order> = state.orders().filter(|o| o.class == want.class).collect();
    let asks: Vec<AskVerdict> =
        orders.iter().filter(|o| o.side == Side::Ask).map(|o| judge_ask(state, o, want)).collect();
    let (mut bids, book_asks) = auction_book(state, orders.iter().copied());
    bids.push(BidOrder {
        id: TRIAL_BID,
        gpus: want.gpus,
        hours: want.hours,
        max_price: want.max_price,
        split: want.split,
        start_hours: want.start_hours,
        placed: (u64::MAX, 0),
    });
    let trial = clear(&bids, &book_asks);
    let would_fill = trial.fills.iter().any(|f| f.bid == TRIAL_BID);
    if !would_fill {
        let next = state.params().market.clearing_height(state.params().market.phase(state.height().0 + 1).0);
        let why = match trial.price {
            _ if asks.is_empty() => reason(
                "no_asks",
                format!("no provider asks for {} in this auction yet (asks may come until height {next})", want.class),
            ),
            _ if !asks.iter().any(|a| a.fits) => {
                reason("no_ask_fits", "no open ask fits this bid (see each ask's reasons)")
            }
            Some(p) if p > want.max_price => reason(
                "below_clearing_price",
                format!("the indicative clearing price is {p}/GPU-hour, above your maximum {}", want.max_price),
            ),
            Some(p) => reason(
                "outbid",
                format!(
                    "at the indicative price {p}/GPU-hour the asks' GPUs go to higher or earlier bids; raise your \
                     price or allow --split"
                ),
            ),
            None => reason("no_crossing", "no ask is at or below your price"),
        };
        reasons.push(why);
    }
    BidExplanation { indicative_price: trial.price, would_fill, reasons, asks }
}

fn judge_ask(state: &State, ask: &agora_ledger::Order, want: &BidWant) -> AskVerdict {
    let mut reasons = Vec::new();
    if ask.price > want.max_price {
        reasons.push(reason(
            "ask_above_bid",
            format!("asks at least {}/GPU-hour, above your {}", ask.price, want.max_price),
        ));
    }
    if ask.gpus < want.gpus && !want.split {
        reasons.push(reason(
            "too_few_gpus",
            format!("offers {} GPU(s) on one host; you want {} (--split allows several hosts)", ask.gpus, want.gpus),
        ));
    }
    let span = want.start_hours.saturating_add(want.hours);
    if ask.hours < span {
        let yours = if want.start_hours == 0 {
            format!("you want {} h", want.hours)
        } else {
            format!("you want hours {} to {span} after the clearing", want.start_hours)
        };
        reasons.push(reason("window_too_short", format!("sells at most {} h; {yours}", ask.hours)));
    }
    if !state.is_active_provider(&ask.owner) {
        reasons.push(reason("provider_inactive", provider_state(state, &ask.owner)));
    }
    AskVerdict {
        order: ask.id,
        provider: ask.owner,
        gpus: ask.gpus,
        hours: ask.hours,
        min_price: ask.price,
        fits: reasons.is_empty(),
        reasons,
    }
}

#[cfg(test)]
mod tests {
    use agora_ledger::testkit::{TestChain, sign_tx};
    use agora_ledger::{SigCheck, apply_block};
    use agora_protocol::{JobResources, SignedTx, TimestampMs, TxKind};

    use super::*;

    const NOW: u64 = 2_000_000_000_000;

    fn commit(chain: &TestChain, state: &mut State, txs: Vec<SignedTx>) {
        let block = chain.next_block(&mut state.clone(), txs).unwrap();
        apply_block(state, &block, SigCheck::Verify).unwrap();
    }

    fn h100() -> GpuSpec {
        GpuSpec { model: "H100".into(), vram_mib: 81_920, count: 2, simulated: true }
    }

    /// Account 0: a provider (validator stake) with 2 simulated H100s; 1: a funded buyer; 2: a buyer with 1 AGR.
    fn setup() -> (TestChain, State) {
        let chain = TestChain::new(3, 1, Amount::agr(1_000));
        let mut state = chain.state();
        let register = sign_tx(&chain.keys[0], 0, TxKind::RegisterProvider { region: "eu".into(), gpus: vec![h100()] });
        let spend = sign_tx(&chain.keys[2], 0, TxKind::Transfer { to: chain.address(1), amount: Amount::agr(998) });
        commit(&chain, &mut state, vec![register, spend]);
        (chain, state)
    }

    fn offer(price: u64) -> Offer {
        Offer {
            seq: 1,
            gpus: vec![h100()],
            price_per_gpu_hour: Amount::agr(price),
            max_duration_secs: 3600,
            region: "eu".into(),
            expires_at_ms: TimestampMs(NOW + 60_000),
            resources: JobResources {
                cpu_millicores_per_gpu: 1000,
                memory_mib_per_gpu: 1024,
                scratch_mib_per_gpu: 64,
                egress: false,
            },
        }
    }

    fn codes(reasons: &[Reason]) -> Vec<&'static str> {
        reasons.iter().map(|r| r.code).collect()
    }

    fn ask(chain: &TestChain, state: &mut State, gpus: u32, hours: u32, price: u64) {
        let nonce = state.account(&chain.address(0)).nonce;
        let class = GpuClass::of(&h100()).unwrap();
        let kind = TxKind::PlaceAsk { class, gpus, hours, min_price: Amount::agr(price) };
        commit(chain, state, vec![sign_tx(&chain.keys[0], nonce, kind)]);
    }

    #[test]
    fn a_spot_request_is_judged_offer_by_offer_with_every_reason() {
        let (chain, mut state) = setup();
        let me = chain.address(0);
        let o = offer(2);
        let want = SpotWant { buyer: Some(chain.address(1)), gpus: 1, duration_secs: 600, ..SpotWant::default() };
        let ok = spot(&state, &[(me, &o)], &want, NOW);
        assert!(ok[0].matches && ok[0].reasons.is_empty(), "{ok:?}");
        assert_eq!(ok[0].model.as_deref(), Some("H100"));

        let picky = SpotWant {
            buyer: Some(chain.address(2)),
            gpus: 1,
            model: Some("a100".into()),
            max_price: Some(Amount::agr(1)),
            duration_secs: 7200,
            ..SpotWant::default()
        };
        let no = &spot(&state, &[(me, &o)], &picky, NOW + 60_000)[0];
        assert!(!no.matches);
        assert_eq!(
            codes(&no.reasons),
            vec!["no_such_gpu", "price_above_max", "duration_too_long", "offer_expired", "insufficient_balance"]
        );
        assert!(no.reasons[0].detail.contains("2× H100-80GB-SIM"), "{:?}", no.reasons[0]);

        let three = SpotWant { gpus: 3, ..want.clone() };
        assert_eq!(codes(&spot(&state, &[(me, &o)], &three, NOW)[0].reasons), vec!["too_few_gpus"]);
        // GPUs in an open ask are not free for the spot market.
        ask(&chain, &mut state, 2, 2, 1);
        let taken = &spot(&state, &[(me, &o)], &want, NOW)[0];
        assert_eq!(codes(&taken.reasons), vec!["no_free_gpus"]);
        assert!(taken.reasons[0].detail.contains("0 of its 2 H100-80GB-SIM free (2 in open auction asks"), "{taken:?}");
        // An unregistered key's offer says so.
        let stranger = &spot(&state, &[(chain.address(2), &o)], &want, NOW)[0];
        assert!(codes(&stranger.reasons).contains(&"provider_inactive"), "{stranger:?}");
    }

    #[test]
    fn a_bid_is_judged_ask_by_ask_and_by_a_trial_clearing() {
        let (chain, mut state) = setup();
        let class = GpuClass::of(&h100()).unwrap();
        let want = BidWant {
            buyer: Some(chain.address(1)),
            class: class.clone(),
            gpus: 2,
            hours: 2,
            max_price: Amount::agr(2),
            split: false,
            start_hours: 0,
        };
        let empty = bid(&state, &want);
        assert!(!empty.would_fill);
        assert_eq!(codes(&empty.reasons), vec!["no_asks"]);
        let unknown = bid(&state, &BidWant { class: GpuClass::parse("B200-192GB").unwrap(), ..want.clone() });
        assert_eq!(codes(&unknown.reasons), vec!["class_unknown", "no_asks"]);

        ask(&chain, &mut state, 1, 1, 3);
        let e = bid(&state, &want);
        assert!(!e.would_fill && e.indicative_price.is_none());
        assert_eq!(codes(&e.reasons), vec!["no_ask_fits"]);
        assert_eq!(codes(&e.asks[0].reasons), vec!["ask_above_bid", "too_few_gpus", "window_too_short"]);

        // Cancel it and ask again on terms that fit: the bid would fill at the midpoint.
        let nonce = state.account(&chain.address(0)).nonce;
        commit(&chain, &mut state, vec![sign_tx(&chain.keys[0], nonce, TxKind::CancelOrder { order: 0 })]);
        ask(&chain, &mut state, 2, 4, 1);
        let fills = bid(&state, &want);
        assert!(fills.would_fill && fills.reasons.is_empty(), "{fills:?}");
        assert_eq!(fills.indicative_price, Some(Amount(1_500_000)));
        let poor = bid(&state, &BidWant { buyer: Some(chain.address(2)), ..want.clone() });
        assert_eq!(codes(&poor.reasons), vec!["insufficient_balance"], "the escrow of 8 AGR > 1 AGR");
        let low = bid(&state, &BidWant { max_price: Amount(500_000), ..want.clone() });
        assert!(!low.would_fill);
        assert_eq!(codes(&low.asks[0].reasons), vec!["ask_above_bid"]);
        // The ask sells 4 hours: a 2-hour contract starting 3 hours after the clearing ends too late.
        let late = bid(&state, &BidWant { start_hours: 3, ..want });
        assert!(!late.would_fill);
        assert_eq!(codes(&late.asks[0].reasons), vec!["window_too_short"]);
        assert!(late.asks[0].reasons[0].detail.contains("hours 3 to 5 after the clearing"), "{late:?}");
    }
}
