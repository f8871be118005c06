//! How many of a provider's GPUs of one class are still free to sell: the
//! one rule that asks, spot leases and `--explain` share, so the same GPUs
//! can never be sold twice, once in an auction and once on the spot market
//! (docs/market.md, "Capacity").

use std::collections::BTreeSet;

use agora_protocol::{Address, GpuClass};

use crate::error::Error;
use crate::state::{Lease, Side, State};

/// A provider's GPUs of one class, by what is done with them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Capacity {
    /// Registered on the ledger.
    pub registered: u64,
    /// In the provider's open asks.
    pub asked: u64,
    /// In open leases (spot or auctioned).
    pub leased: u64,
}

impl Capacity {
    /// Neither asked for nor leased out.
    pub fn free(&self) -> u64 {
        self.registered.saturating_sub(self.asked + self.leased)
    }
}

/// The class of the provider's registered GPUs called `model` (a spot
/// lease names the model; the class adds the memory).
pub fn class_of_model(state: &State, provider: &Address, model: &str) -> Option<GpuClass> {
    state.provider(provider)?.gpus.iter().find(|g| g.model == model).and_then(GpuClass::of)
}

/// The class a lease's GPUs are of: an auctioned lease names its class, a
/// spot lease its model.
pub fn lease_class(state: &State, lease: &Lease) -> Option<GpuClass> {
    if lease.is_reservation() {
        GpuClass::parse(&lease.gpu_model).ok()
    } else {
        class_of_model(state, &lease.provider, &lease.gpu_model)
    }
}

/// What `provider` does with its GPUs of `class`.
pub fn capacity(state: &State, provider: &Address, class: &GpuClass) -> Capacity {
    let registered = state.provider(provider).map_or(0, |p| {
        p.gpus.iter().filter(|g| GpuClass::of(g).as_ref() == Some(class)).map(|g| u64::from(g.count)).sum()
    });
    let asked =
        state.orders_of(provider).filter(|o| o.side == Side::Ask && &o.class == class).map(|o| u64::from(o.gpus)).sum();
    let leased = state
        .open_leases_of(provider)
        .filter(|l| lease_class(state, l).as_ref() == Some(class))
        .map(|l| u64::from(l.gpus))
        .sum();
    Capacity { registered, asked, leased }
}

/// Refuses to commit `gpus` more of `provider`'s `class` GPUs than are free.
pub(crate) fn reserve(state: &State, provider: &Address, class: &GpuClass, gpus: u32) -> Result<(), Error> {
    let c = capacity(state, provider, class);
    if c.free() < u64::from(gpus) {
        return Err(Error::NoCapacity(format!(
            "{provider} has {} {class} GPU(s): {} in open asks and {} leased out, so {} free (asked for {gpus})",
            c.registered,
            c.asked,
            c.leased,
            c.free()
        )));
    }
    Ok(())
}

/// Every class `provider` has open asks or leases in is covered by its
/// registered GPUs: what a new registration must keep true (and what every
/// block does keep true, `properties.rs` checks).
pub fn check_commitments(state: &State, provider: &Address) -> Result<(), Error> {
    let asked = state.orders_of(provider).filter(|o| o.side == Side::Ask).map(|o| o.class.clone());
    let mut leased = Vec::new();
    for lease in state.open_leases_of(provider) {
        match lease_class(state, lease) {
            Some(class) => leased.push(class),
            None => {
                return Err(Error::NoCapacity(format!(
                    "{provider} would register no {} GPUs, but lease {} holds some",
                    lease.gpu_model, lease.id
                )));
            }
        }
    }
    let classes: BTreeSet<GpuClass> = asked.chain(leased).collect();
    for class in classes {
        let c = capacity(state, provider, &class);
        if c.asked + c.leased > c.registered {
            return Err(Error::NoCapacity(format!(
                "{provider} would register {} {class} GPU(s), but {} are in open asks and {} leased out",
                c.registered, c.asked, c.leased
            )));
        }
    }
    Ok(())
}
