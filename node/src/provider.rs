//! What a provider node owes the network, decided without I/O: register its
//! GPUs on the ledger (once staked), then announce a signed offer at start,
//! whenever its terms change and before the previous one expires; and, with
//! an automatic ask policy, offer its idle GPUs in each auction at a floor
//! price. The daemon (and the simulation's providers) sign and send what
//! this returns.

use std::collections::BTreeMap;

use agora_ledger::{AuctionPhase, Side, State};
use agora_protocol::{Address, Amount, GpuClass, GpuSpec, Height, JobResources, Offer, TimestampMs, TxKind};

use crate::gpu::Gpu;
use crate::offers::{OFFER_REANNOUNCE_MS, OFFER_TTL_MS};

/// Blocks to wait for a registration to commit before sending it again.
pub const REGISTRATION_RETRY_BLOCKS: u64 = 20;
/// After a failed announcement (no peer yet), try again this soon.
pub const ANNOUNCE_RETRY_MS: u64 = 1_000;

/// Something the daemon should do for the provider now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Duty {
    /// Sign and submit a RegisterProvider transaction.
    Register { region: String, gpus: Vec<GpuSpec> },
    /// Sign and gossip this offer.
    Announce(Offer),
    /// Tell the operator once that the stake is too low to provide.
    NeedStake { have: Amount, need: Amount },
}

/// The provider's terms and where its duties stand.
#[derive(Clone, Debug)]
pub struct Provider {
    pub gpus: Vec<Gpu>,
    pub specs: Vec<GpuSpec>,
    pub price: Amount,
    pub region: String,
    pub max_lease_secs: u64,
    /// What each leased GPU comes with (CPU, memory, scratch, network), as offered.
    pub resources: JobResources,
    /// Idle GPUs offered in each auction, if the operator configured it.
    pub ask_policy: Option<AskPolicy>,
    next_offer_at_ms: u64,
    last_seq: u64,
    registration_sent: Option<Height>,
    warned_stake: bool,
}

impl Provider {
    pub fn new(
        gpus: Vec<Gpu>,
        price: Amount,
        region: String,
        max_lease_secs: u64,
        resources: JobResources,
    ) -> Provider {
        let specs = crate::gpu::specs(&gpus);
        Provider {
            gpus,
            specs,
            price,
            region,
            max_lease_secs,
            resources,
            ask_policy: None,
            next_offer_at_ms: 0,
            last_seq: 0,
            registration_sent: None,
            warned_stake: false,
        }
    }

    /// Whether the ledger holds this provider's current GPUs and region.
    pub fn registered(&self, state: &State, me: &Address) -> bool {
        state.provider(me).is_some_and(|p| p.gpus == self.specs && p.region == self.region)
    }

    /// The duty due at `now_ms` given the committed ledger, if any.
    pub fn next(&mut self, state: &State, me: &Address, now_ms: u64) -> Option<Duty> {
        if !self.registered(state, me) {
            let need = state.params().min_provider_stake;
            let have = state.account(me).stake;
            if have < need {
                if self.warned_stake {
                    return None;
                }
                self.warned_stake = true;
                return Some(Duty::NeedStake { have, need });
            }
            if self.registration_sent.is_some_and(|h| state.height().0 < h.0 + REGISTRATION_RETRY_BLOCKS) {
                return None;
            }
            self.registration_sent = Some(state.height());
            // A fresh registration gets a fresh offer at once.
            self.next_offer_at_ms = 0;
            return Some(Duty::Register { region: self.region.clone(), gpus: self.specs.clone() });
        }
        // Jailed or unstaked providers do not advertise.
        if !state.is_active_provider(me) || now_ms < self.next_offer_at_ms {
            return None;
        }
        // Offers replace older ones by sequence; the clock keeps it rising across restarts.
        let seq = (self.last_seq + 1).max(now_ms);
        self.last_seq = seq;
        self.next_offer_at_ms = now_ms + OFFER_REANNOUNCE_MS;
        Some(Duty::Announce(Offer {
            seq,
            gpus: self.specs.clone(),
            price_per_gpu_hour: self.price,
            max_duration_secs: self.max_lease_secs,
            region: self.region.clone(),
            expires_at_ms: TimestampMs(now_ms + OFFER_TTL_MS),
            resources: self.resources,
        }))
    }

    /// The announcement reached no peer: try again soon.
    pub fn announce_failed(&mut self, now_ms: u64) {
        self.next_offer_at_ms = now_ms + ANNOUNCE_RETRY_MS;
    }

    /// Makes the next call announce (if registered and active).
    pub fn announce_now(&mut self) {
        self.next_offer_at_ms = 0;
    }

    /// Terms changed (e.g. a new price): announce again at once.
    pub fn set_price(&mut self, price: Amount) {
        self.price = price;
        self.next_offer_at_ms = 0;
    }
}

/// The automatic ask policy (`[auto_ask]` in config.toml): in each
/// auction's open phase, every class of GPUs this provider registered that
/// has GPUs free (not asked for, not leased, not promised to a spot request
/// waiting to commit) is asked for at the floor price.
#[derive(Clone, Debug)]
pub struct AskPolicy {
    pub min_price: Amount,
    /// The longest contract offered.
    pub hours: u32,
    /// The auction each class was last asked for in (one ask per class per auction).
    asked_in: BTreeMap<GpuClass, u64>,
}

impl AskPolicy {
    pub fn new(min_price: Amount, hours: u32) -> AskPolicy {
        AskPolicy { min_price, hours, asked_in: BTreeMap::new() }
    }

    /// The ask to send now, if any. `pending` counts a class's GPUs this
    /// node has promised to spot requests not yet on the ledger.
    pub fn next(&mut self, state: &State, me: &Address, pending: impl Fn(&GpuClass) -> u64) -> Option<TxKind> {
        let market = &state.params().market;
        let (auction, phase) = market.phase(state.height().0 + 1);
        // The ask must commit before the binding phase: not in the open phase's last block.
        let (_, after) = market.phase(state.height().0 + 2);
        if phase != AuctionPhase::Open || after != AuctionPhase::Open || !state.is_active_provider(me) {
            return None;
        }
        let mut classes: Vec<GpuClass> = state.provider(me)?.gpus.iter().filter_map(GpuClass::of).collect();
        classes.sort();
        classes.dedup();
        for class in classes {
            if self.asked_in.get(&class) == Some(&auction) {
                continue;
            }
            self.asked_in.insert(class.clone(), auction);
            if state.orders_of(me).any(|o| o.side == Side::Ask && o.class == class) {
                continue;
            }
            let free = agora_ledger::capacity::capacity(state, me, &class).free().saturating_sub(pending(&class));
            let gpus = free.min(u64::from(agora_protocol::limits::MAX_GPUS_PER_ORDER)) as u32;
            if gpus > 0 {
                return Some(TxKind::PlaceAsk { class, gpus, hours: self.hours, min_price: self.min_price });
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use agora_ledger::testkit::{TestChain, sign_tx};
    use agora_ledger::{SigCheck, apply_block};
    use agora_protocol::TxKind;

    use super::*;
    use crate::gpu::{GpuSource, detect};

    fn provider() -> Provider {
        let gpus = detect(&"simulated:2xH100-80GB".parse::<GpuSource>().unwrap()).gpus;
        let resources = JobResources {
            cpu_millicores_per_gpu: 1000,
            memory_mib_per_gpu: 1024,
            scratch_mib_per_gpu: 64,
            egress: false,
        };
        Provider::new(gpus, Amount::agr(2), "eu".into(), 3600, resources)
    }

    #[test]
    fn registers_once_staked_then_announces_and_re_announces() {
        // Account 0 is a staked validator, account 1 has no stake.
        let chain = TestChain::new(2, 1, Amount::agr(10_000));
        let mut state = chain.state();
        let mut unstaked = provider();
        let need = state.params().min_provider_stake;
        assert_eq!(
            unstaked.next(&state, &chain.address(1), 0),
            Some(Duty::NeedStake { have: Amount::ZERO, need }),
            "an unstaked node says so"
        );
        assert_eq!(unstaked.next(&state, &chain.address(1), 0), None, "once");

        let mut p = provider();
        let me = chain.address(0);
        let Some(Duty::Register { region, gpus }) = p.next(&state, &me, 0) else { panic!("should register first") };
        assert!(gpus[0].simulated);
        assert_eq!(p.next(&state, &me, 0), None, "no second registration while the first may still commit");
        let tx = sign_tx(&chain.keys[0], 0, TxKind::RegisterProvider { region, gpus });
        let block = chain.next_block(&mut state.clone(), vec![tx]).unwrap();
        apply_block(&mut state, &block, SigCheck::Verify).unwrap();

        let Some(Duty::Announce(first)) = p.next(&state, &me, 5_000) else { panic!("should announce once registered") };
        assert_eq!((first.price_per_gpu_hour, first.gpus[0].count), (Amount::agr(2), 2));
        assert_eq!(first.expires_at_ms.0, 5_000 + OFFER_TTL_MS);
        assert_eq!(p.next(&state, &me, 5_001), None);
        let Some(Duty::Announce(again)) = p.next(&state, &me, 5_000 + OFFER_REANNOUNCE_MS) else {
            panic!("re-announces before expiry")
        };
        assert!(again.seq > first.seq && again.expires_at_ms > first.expires_at_ms);
        assert!(again.expires_at_ms.0 - OFFER_TTL_MS < first.expires_at_ms.0, "before the first one expired");
        p.set_price(Amount::agr(3));
        let Some(Duty::Announce(repriced)) = p.next(&state, &me, 5_000 + OFFER_REANNOUNCE_MS + 1) else {
            panic!("a new price is announced at once")
        };
        assert!(repriced.seq > again.seq);
        assert_eq!(repriced.price_per_gpu_hour, Amount::agr(3));
    }

    #[test]
    fn the_ask_policy_offers_each_classes_free_gpus_once_per_auction() {
        let chain = TestChain::new(2, 1, Amount::agr(10_000));
        let mut state = chain.state();
        let me = chain.address(0);
        let commit = |state: &mut State, txs| {
            let block = chain.next_block(&mut state.clone(), txs).unwrap();
            apply_block(state, &block, SigCheck::Verify).unwrap();
        };
        let gpus = vec![
            GpuSpec { model: "H100".into(), vram_mib: 81_920, count: 2, simulated: true },
            GpuSpec { model: "A100".into(), vram_mib: 40_960, count: 3, simulated: true },
        ];
        commit(&mut state, vec![sign_tx(&chain.keys[0], 0, TxKind::RegisterProvider { region: "eu".into(), gpus })]);
        let mut policy = AskPolicy::new(Amount::agr(1), 24);
        let open = |state: &State| state.params().market.phase(state.height().0 + 2).1 == AuctionPhase::Open;
        while !open(&state) || state.params().market.phase(state.height().0 + 1).1 != AuctionPhase::Open {
            commit(&mut state, vec![]);
        }
        // A100s first (class order), one spot request pending: 2 of 3.
        let pending = |c: &GpuClass| u64::from(c.as_str().starts_with("A100"));
        let Some(TxKind::PlaceAsk { class, gpus: 2, hours: 24, .. }) = policy.next(&state, &me, pending) else {
            panic!("asks for the free A100s")
        };
        assert_eq!(class.as_str(), "A100-40GB-SIM");
        let Some(h100 @ TxKind::PlaceAsk { gpus: 2, .. }) = policy.next(&state, &me, pending) else {
            panic!("then the H100s")
        };
        assert_eq!(policy.next(&state, &me, pending), None, "once per class per auction");
        commit(&mut state, vec![sign_tx(&chain.keys[0], 1, h100)]);
        // The next auction (every order leaves the book at clearing): both again.
        let auction = state.params().market.phase(state.height().0 + 1).0;
        while state.params().market.phase(state.height().0 + 1).0 == auction || !open(&state) {
            assert_eq!(policy.next(&state, &me, |_| 0), None, "nothing outside an open phase or twice");
            commit(&mut state, vec![]);
        }
        let Some(a100 @ TxKind::PlaceAsk { gpus: 3, .. }) = policy.next(&state, &me, |_| 0) else {
            panic!("all three A100s")
        };
        commit(&mut state, vec![sign_tx(&chain.keys[0], 2, a100)]);
        // After a restart the policy remembers nothing, but sees its open ask on the ledger.
        let mut restarted = AskPolicy::new(Amount::agr(1), 24);
        let only = restarted.next(&state, &me, |_| 0);
        assert!(matches!(&only, Some(TxKind::PlaceAsk { class, .. }) if class.as_str() == "H100-80GB-SIM"), "{only:?}");
        assert_eq!(restarted.next(&state, &me, |_| 0), None);
    }
}
