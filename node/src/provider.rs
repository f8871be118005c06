//! What a provider node owes the network, decided without I/O: register its
//! GPUs on the ledger (once staked), then announce a signed offer at start,
//! whenever its terms change and before the previous one expires. The daemon
//! signs and gossips what this returns.

use agora_ledger::State;
use agora_protocol::{Address, Amount, GpuSpec, Height, JobResources, Offer, TimestampMs};

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
}
