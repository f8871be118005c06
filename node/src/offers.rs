//! The order book: the newest valid offer of each active provider. Pure
//! logic without I/O: the daemon feeds it gossiped offers with the ledger
//! state and the wall-clock time, and the API queries it with filters.

use std::collections::BTreeMap;

use agora_ledger::State;
use agora_protocol::{Address, Amount, ChainId, GpuSpec, Offer, Signed};

/// Offers kept at most: one per provider, and providers need stake, so this
/// is far above any real network and bounds memory against a flood.
pub const MAX_OFFERS: usize = 10_000;
/// How long a provider's offer lives; providers re-announce well before.
pub const OFFER_TTL_MS: u64 = 120_000;
/// A provider re-announces its offer this often (a third of its lifetime,
/// so one or two lost announcements do not drop it from order books).
pub const OFFER_REANNOUNCE_MS: u64 = OFFER_TTL_MS / 3;
/// The longest lifetime an incoming offer may claim, clock skew included.
pub const MAX_OFFER_TTL_MS: u64 = 10 * 60 * 1000;
/// Clock difference between nodes tolerated on expiry times.
pub const CLOCK_SKEW_MS: u64 = 30_000;
/// Signed offers held for a retry because this node's ledger may lag the
/// sender's (a provider announces the moment its registration commits, and
/// a node a block behind would otherwise drop that offer until the next
/// announcement, `OFFER_REANNOUNCE_MS` later). Bounded: one per signer.
pub const MAX_HELD_OFFERS: usize = 64;
/// Blocks a held offer waits for the ledger to catch up before it is dropped.
pub const HELD_OFFER_BLOCKS: u64 = 5;

/// Why an offer is not in the book. Only `Invalid` is the sender's fault
/// whatever our view of the ledger; the rest depend on our state or clock,
/// so gossip ignores them without penalising the peer that relayed them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OfferError {
    #[error("invalid offer: {0}")]
    Invalid(String),
    #[error("{0} is not a registered provider")]
    NotProvider(Address),
    #[error("provider {0} is jailed, tombstoned or below the minimum stake")]
    Inactive(Address),
    #[error("offer lists GPUs its provider has not registered")]
    UnregisteredGpus,
    #[error("offer expired")]
    Expired,
    #[error("offer expiry is too far in the future")]
    TooFarAhead,
    #[error("offer sequence {got} is not newer than {have}")]
    Stale { have: u64, got: u64 },
    #[error("order book full")]
    Full,
}

impl OfferError {
    /// Whether the sender of this offer should be penalised.
    pub fn is_invalid(&self) -> bool {
        matches!(self, OfferError::Invalid(_))
    }

    /// Whether a ledger a few blocks newer could accept the offer (its
    /// provider's registration, stake or GPUs not yet committed here).
    pub fn may_become_valid(&self) -> bool {
        matches!(self, OfferError::NotProvider(_) | OfferError::Inactive(_) | OfferError::UnregisteredGpus)
    }
}

/// An offer in the book, with when this node first saw it.
#[derive(Clone, Debug)]
pub struct BookEntry {
    /// The account the offer is for: its signer, or the account that named the signer its operator.
    pub provider: Address,
    pub offer: Signed<Offer>,
    pub received_at_ms: u64,
}

/// What a buyer is looking for; every field is optional.
#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OfferFilter {
    /// Case-insensitive substring of the GPU model ("h100" matches "NVIDIA H100 80GB HBM3").
    pub model: Option<String>,
    pub min_vram_mib: Option<u32>,
    /// At least this many GPUs of one matching kind.
    pub gpus: Option<u32>,
    pub max_price: Option<Amount>,
    /// Case-insensitive exact region.
    pub region: Option<String>,
}

impl OfferFilter {
    fn kind_matches(&self, g: &GpuSpec) -> bool {
        self.model.as_ref().is_none_or(|m| g.model.to_lowercase().contains(&m.to_lowercase()))
            && self.min_vram_mib.is_none_or(|v| g.vram_mib >= v)
            && self.gpus.is_none_or(|n| g.count >= n)
    }

    pub fn matches(&self, offer: &Offer) -> bool {
        self.max_price.is_none_or(|p| offer.price_per_gpu_hour <= p)
            && self.region.as_ref().is_none_or(|r| offer.region.eq_ignore_ascii_case(r))
            && offer.gpus.iter().any(|g| self.kind_matches(g))
    }
}

#[derive(Clone, Debug, Default)]
pub struct OrderBook {
    offers: BTreeMap<Address, BookEntry>,
    held: Held,
}

/// Offers whose signature checked but that the ledger could not place yet,
/// by signer, with the last height at which each is retried.
#[derive(Clone, Debug, Default)]
struct Held {
    offers: BTreeMap<Address, (Signed<Offer>, u64)>,
    retried_at: Option<u64>,
}

/// Every offered GPU kind must be registered by the provider, with at least as many GPUs.
fn gpus_registered(offered: &[GpuSpec], registered: &[GpuSpec]) -> bool {
    offered.iter().all(|o| {
        registered
            .iter()
            .any(|r| r.model == o.model && r.vram_mib == o.vram_mib && r.simulated == o.simulated && o.count <= r.count)
    })
}

impl OrderBook {
    pub fn len(&self) -> usize {
        self.offers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.offers.is_empty()
    }

    pub fn get(&self, provider: &Address) -> Option<&BookEntry> {
        self.offers.get(provider)
    }

    /// Checks an offer against the chain id, the ledger and the clock without
    /// keeping it; returns the provider it is for (its signer, or the account
    /// that named the signer its operator).
    pub fn check(
        &self,
        offer: &Signed<Offer>,
        chain: &ChainId,
        state: &State,
        now_ms: u64,
    ) -> Result<Address, OfferError> {
        offer.verify(chain).map_err(|e| OfferError::Invalid(e.to_string()))?;
        offer.body.validate().map_err(|e| OfferError::Invalid(e.to_string()))?;
        self.place(offer, state, now_ms)
    }

    /// The ledger and clock half of `check`, for an offer already verified.
    fn place(&self, offer: &Signed<Offer>, state: &State, now_ms: u64) -> Result<Address, OfferError> {
        let provider = state.acting_for(&offer.signer);
        let record = state.provider(&provider).ok_or(OfferError::NotProvider(provider))?;
        if !state.is_active_provider(&provider) {
            return Err(OfferError::Inactive(provider));
        }
        if !gpus_registered(&offer.body.gpus, &record.gpus) {
            return Err(OfferError::UnregisteredGpus);
        }
        let expires = offer.body.expires_at_ms.0;
        if expires <= now_ms {
            return Err(OfferError::Expired);
        }
        if expires > now_ms.saturating_add(MAX_OFFER_TTL_MS + CLOCK_SKEW_MS) {
            return Err(OfferError::TooFarAhead);
        }
        if let Some(have) = self.offers.get(&provider) {
            if offer.body.seq <= have.offer.body.seq {
                return Err(OfferError::Stale { have: have.offer.body.seq, got: offer.body.seq });
            }
        } else if self.offers.len() >= MAX_OFFERS {
            return Err(OfferError::Full);
        }
        Ok(provider)
    }

    /// Keeps `offer` as its provider's newest, if it passes `check`.
    pub fn insert(
        &mut self,
        offer: Signed<Offer>,
        chain: &ChainId,
        state: &State,
        now_ms: u64,
    ) -> Result<(), OfferError> {
        let provider = self.check(&offer, chain, state, now_ms)?;
        self.keep(provider, offer, now_ms);
        Ok(())
    }

    fn keep(&mut self, provider: Address, offer: Signed<Offer>, now_ms: u64) {
        self.offers.insert(provider, BookEntry { provider, offer, received_at_ms: now_ms });
    }

    /// Like `insert`, but an offer refused only because this node's ledger
    /// may be behind its sender's is held (signature checked) and retried
    /// by `retry_held` at each of the next `HELD_OFFER_BLOCKS` heights.
    pub fn insert_or_hold(
        &mut self,
        offer: Signed<Offer>,
        chain: &ChainId,
        state: &State,
        now_ms: u64,
    ) -> Result<(), OfferError> {
        match self.check(&offer, chain, state, now_ms) {
            Ok(provider) => {
                self.keep(provider, offer, now_ms);
                Ok(())
            }
            Err(e) if e.may_become_valid() => {
                self.hold(offer, state.height().0 + HELD_OFFER_BLOCKS);
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    fn hold(&mut self, offer: Signed<Offer>, until_height: u64) {
        let held = &mut self.held.offers;
        if held.get(&offer.signer).is_some_and(|(h, _)| h.body.seq >= offer.body.seq) {
            return;
        }
        if !held.contains_key(&offer.signer) && held.len() >= MAX_HELD_OFFERS {
            // The one closest to being dropped anyway makes room.
            let oldest = held.iter().min_by_key(|(_, (_, until))| *until).map(|(signer, _)| *signer);
            if let Some(signer) = oldest {
                held.remove(&signer);
            }
        }
        held.insert(offer.signer, (offer, until_height));
    }

    /// Offers held for a lagging ledger, how many.
    pub fn held(&self) -> usize {
        self.held.offers.len()
    }

    /// Tries the held offers again once per new height: those the ledger
    /// now places enter the book, those it never will (or not within their
    /// heights) are dropped. Returns how many entered.
    pub fn retry_held(&mut self, state: &State, now_ms: u64) -> usize {
        let height = state.height().0;
        if self.held.offers.is_empty() || self.held.retried_at == Some(height) {
            return 0;
        }
        self.held.retried_at = Some(height);
        let mut entered = 0;
        for (signer, (offer, until)) in std::mem::take(&mut self.held.offers) {
            match self.place(&offer, state, now_ms) {
                Ok(provider) => {
                    self.keep(provider, offer, now_ms);
                    entered += 1;
                }
                Err(e) if e.may_become_valid() && height < until => {
                    self.held.offers.insert(signer, (offer, until));
                }
                Err(_) => {}
            }
        }
        entered
    }

    /// Drops expired offers and those of providers no longer active; returns how many.
    pub fn prune(&mut self, state: &State, now_ms: u64) -> usize {
        let before = self.offers.len();
        // An offer signed by an operator the account has since withdrawn goes too.
        self.offers.retain(|provider, e| {
            e.offer.body.expires_at_ms.0 > now_ms
                && state.is_active_provider(provider)
                && state.acting_for(&e.offer.signer) == *provider
        });
        before - self.offers.len()
    }

    /// Matching offers, cheapest first (ties by provider address, so the order is stable).
    pub fn query(&self, filter: &OfferFilter) -> Vec<&BookEntry> {
        let mut found: Vec<&BookEntry> = self.offers.values().filter(|e| filter.matches(&e.offer.body)).collect();
        found.sort_by_key(|e| (e.offer.body.price_per_gpu_hour, e.provider));
        found
    }
}

#[cfg(test)]
mod tests {
    use agora_ledger::apply_block;
    use agora_ledger::testkit::{TestChain, chain_id};
    use agora_protocol::{Keypair, TimestampMs, TxKind};

    use super::*;

    const NOW: u64 = 1_000_000;

    fn h100(count: u32) -> GpuSpec {
        GpuSpec { model: "H100".into(), vram_mib: 81_920, count, simulated: true }
    }

    fn offer(key: &Keypair, seq: u64, price: u64, gpus: Vec<GpuSpec>) -> Signed<Offer> {
        let body = Offer {
            seq,
            gpus,
            price_per_gpu_hour: Amount::agr(price),
            max_duration_secs: 3600,
            region: "eu-west".into(),
            expires_at_ms: TimestampMs(NOW + OFFER_TTL_MS),
            resources: agora_protocol::JobResources {
                cpu_millicores_per_gpu: 1000,
                memory_mib_per_gpu: 1024,
                scratch_mib_per_gpu: 64,
                egress: false,
            },
        };
        Signed::sign(body, key, &chain_id()).unwrap()
    }

    /// A chain where accounts 0 and 1 are staked providers with 2 simulated H100s; 2 is not.
    fn providers() -> (TestChain, State) {
        let chain = TestChain::new(3, 2, Amount::agr(10_000));
        let mut state = chain.state();
        let txs = (0..2)
            .map(|i| {
                let kind = TxKind::RegisterProvider { region: "eu-west".into(), gpus: vec![h100(2)] };
                agora_ledger::testkit::sign_tx(&chain.keys[i], 0, kind)
            })
            .collect();
        let block = chain.next_block(&mut state.clone(), txs).unwrap();
        apply_block(&mut state, &block, agora_ledger::SigCheck::Verify).unwrap();
        assert!(state.is_active_provider(&chain.address(0)));
        (chain, state)
    }

    #[test]
    fn keeps_the_newest_offer_per_active_provider() {
        let (chain, state) = providers();
        let mut book = OrderBook::default();
        let c = chain_id();
        book.insert(offer(&chain.keys[0], 5, 3, vec![h100(2)]), &c, &state, NOW).unwrap();
        assert_eq!(
            book.insert(offer(&chain.keys[0], 5, 2, vec![h100(2)]), &c, &state, NOW),
            Err(OfferError::Stale { have: 5, got: 5 }),
            "a replayed or reordered older offer does not replace the newer one"
        );
        book.insert(offer(&chain.keys[0], 6, 2, vec![h100(1)]), &c, &state, NOW).unwrap();
        assert_eq!(book.len(), 1);
        assert_eq!(book.get(&chain.address(0)).unwrap().offer.body.seq, 6);
        let err = book.insert(offer(&chain.keys[2], 1, 1, vec![h100(1)]), &c, &state, NOW).unwrap_err();
        assert_eq!(err, OfferError::NotProvider(chain.address(2)));
        assert!(!err.is_invalid(), "a node behind on the ledger must not penalise the relayer");
    }

    #[test]
    fn rejects_forged_unregistered_and_badly_timed_offers() {
        let (chain, state) = providers();
        let mut book = OrderBook::default();
        let c = chain_id();
        let mut forged = offer(&chain.keys[0], 1, 1, vec![h100(2)]);
        forged.body.price_per_gpu_hour = Amount::agr(0);
        assert!(book.insert(forged, &c, &state, NOW).unwrap_err().is_invalid());
        let other_chain = ChainId::new("other-chain").unwrap();
        assert!(book.insert(offer(&chain.keys[0], 1, 1, vec![h100(2)]), &other_chain, &state, NOW).is_err());
        assert_eq!(
            book.insert(offer(&chain.keys[0], 1, 1, vec![h100(3)]), &c, &state, NOW),
            Err(OfferError::UnregisteredGpus),
            "more GPUs than registered"
        );
        let real = GpuSpec { simulated: false, ..h100(1) };
        assert_eq!(
            book.insert(offer(&chain.keys[0], 1, 1, vec![real]), &c, &state, NOW),
            Err(OfferError::UnregisteredGpus)
        );
        assert_eq!(
            book.insert(offer(&chain.keys[0], 1, 1, vec![h100(2)]), &c, &state, NOW + OFFER_TTL_MS),
            Err(OfferError::Expired)
        );
        let mut far = offer(&chain.keys[0], 1, 1, vec![h100(2)]).body;
        far.expires_at_ms = TimestampMs(NOW + MAX_OFFER_TTL_MS + CLOCK_SKEW_MS + 1);
        let far = Signed::sign(far, &chain.keys[0], &c).unwrap();
        assert_eq!(book.insert(far, &c, &state, NOW), Err(OfferError::TooFarAhead));
        assert!(book.is_empty());
    }

    #[test]
    fn prune_drops_expired_offers_and_inactive_providers() {
        let (chain, mut state) = providers();
        let mut book = OrderBook::default();
        let c = chain_id();
        book.insert(offer(&chain.keys[0], 1, 1, vec![h100(2)]), &c, &state, NOW).unwrap();
        book.insert(offer(&chain.keys[1], 1, 2, vec![h100(2)]), &c, &state, NOW).unwrap();
        assert_eq!(book.prune(&state, NOW + 1), 0);
        let unstake = agora_ledger::testkit::sign_tx(&chain.keys[1], 1, TxKind::Unstake { amount: Amount::agr(1_000) });
        let block = chain.next_block(&mut state.clone(), vec![unstake]).unwrap();
        apply_block(&mut state, &block, agora_ledger::SigCheck::Verify).unwrap();
        assert!(!state.is_active_provider(&chain.address(1)));
        assert_eq!(book.prune(&state, NOW + 1), 1, "the offer of a provider that unstaked goes");
        assert_eq!(book.prune(&state, NOW + OFFER_TTL_MS), 1, "an expired offer goes");
        assert!(book.is_empty());
    }

    #[test]
    fn an_offer_ahead_of_this_ledger_is_held_until_its_registration_commits() {
        let (chain, before) = providers();
        let c = chain_id();
        let register = |state: &State| {
            let kind = TxKind::RegisterProvider { region: "eu-west".into(), gpus: vec![h100(2)] };
            let stake = TxKind::Stake { amount: state.params().min_provider_stake };
            let txs = vec![
                agora_ledger::testkit::sign_tx(&chain.keys[2], 0, stake),
                agora_ledger::testkit::sign_tx(&chain.keys[2], 1, kind),
            ];
            let mut next = state.clone();
            let block = chain.next_block(&mut state.clone(), txs).unwrap();
            apply_block(&mut next, &block, agora_ledger::SigCheck::Verify).unwrap();
            next
        };
        let empty = |state: &State| {
            let mut next = state.clone();
            let block = chain.next_block(&mut state.clone(), vec![]).unwrap();
            apply_block(&mut next, &block, agora_ledger::SigCheck::Verify).unwrap();
            next
        };
        // The sender committed account 2's registration; this node has not yet.
        let mut book = OrderBook::default();
        let early = offer(&chain.keys[2], 1, 1, vec![h100(2)]);
        let err = book.insert_or_hold(early.clone(), &c, &before, NOW).unwrap_err();
        assert_eq!(err, OfferError::NotProvider(chain.address(2)));
        assert_eq!((book.len(), book.held()), (0, 1));
        assert_eq!(book.retry_held(&before, NOW), 0, "nothing new at the same height");
        let after = register(&before);
        assert_eq!(book.retry_held(&after, NOW + 1), 1, "the registration committed: the offer enters");
        assert_eq!((book.len(), book.held()), (1, 0));
        assert_eq!(book.get(&chain.address(2)).unwrap().offer.body.seq, 1);

        // One that never becomes valid is dropped after its heights.
        let never = offer(&Keypair::generate().unwrap(), 1, 1, vec![h100(2)]);
        book.insert_or_hold(never, &c, &after, NOW).unwrap_err();
        assert_eq!(book.held(), 1);
        let mut state = after.clone();
        for _ in 0..HELD_OFFER_BLOCKS {
            state = empty(&state);
            assert_eq!(book.retry_held(&state, NOW), 0);
        }
        assert_eq!((book.len(), book.held()), (1, 0), "dropped after {HELD_OFFER_BLOCKS} blocks");

        // A forged offer is never held; the holding area stays bounded.
        let mut forged = offer(&chain.keys[2], 1, 1, vec![h100(2)]);
        forged.body.price_per_gpu_hour = Amount::agr(7);
        assert!(book.insert_or_hold(forged, &c, &before, NOW).unwrap_err().is_invalid());
        assert_eq!(book.held(), 0);
        for _ in 0..MAX_HELD_OFFERS + 10 {
            let stranger = Keypair::generate().unwrap();
            book.insert_or_hold(offer(&stranger, 1, 1, vec![h100(1)]), &c, &before, NOW).unwrap_err();
        }
        assert_eq!(book.held(), MAX_HELD_OFFERS);
    }

    #[test]
    fn filters_and_sorts_by_price() {
        let (chain, state) = providers();
        let mut book = OrderBook::default();
        let c = chain_id();
        book.insert(offer(&chain.keys[0], 1, 3, vec![h100(2)]), &c, &state, NOW).unwrap();
        book.insert(offer(&chain.keys[1], 1, 2, vec![h100(1)]), &c, &state, NOW).unwrap();
        let all = book.query(&OfferFilter::default());
        assert_eq!(all.iter().map(|e| e.offer.signer).collect::<Vec<_>>(), vec![chain.address(1), chain.address(0)]);
        let two = OfferFilter { gpus: Some(2), model: Some("h1".into()), ..Default::default() };
        assert_eq!(book.query(&two).len(), 1);
        assert_eq!(book.query(&OfferFilter { max_price: Some(Amount::agr(2)), ..Default::default() }).len(), 1);
        assert_eq!(book.query(&OfferFilter { min_vram_mib: Some(81_921), ..Default::default() }).len(), 0);
        assert_eq!(book.query(&OfferFilter { region: Some("EU-WEST".into()), ..Default::default() }).len(), 2);
        assert_eq!(book.query(&OfferFilter { model: Some("A100".into()), ..Default::default() }).len(), 0);
    }
}
