//! Validator-set rotation. At the end of every block whose height is a
//! multiple of `epoch_blocks`, the set for the following heights becomes the
//! accounts with the most stake (ties broken by address), at most
//! `max_validators`, each with power equal to its stake in micro-AGR. An epoch
//! with nobody staked keeps the old set: the chain must always have validators.

use crate::events::Event;
use crate::state::{State, Validator};

/// The set the stakes call for now, in canonical order (by address).
pub fn staked_set(state: &State) -> Vec<Validator> {
    let mut staked: Vec<Validator> = state
        .accounts()
        .filter(|(_, a)| !a.stake.is_zero())
        .map(|(address, a)| Validator { address: *address, power: a.stake.0 })
        .collect();
    staked.sort_by(|a, b| b.power.cmp(&a.power).then(a.address.cmp(&b.address)));
    staked.truncate(state.params().max_validators as usize);
    staked.sort_by_key(|v| v.address);
    staked
}

/// End-of-block work: rotates the set at epoch boundaries.
pub(crate) fn end_block(state: &mut State) -> Vec<Event> {
    let epoch = state.params().epoch_blocks.max(1);
    if state.height().0 % epoch != 0 {
        return Vec::new();
    }
    let next = staked_set(state);
    if next.is_empty() || next == state.validators() {
        return Vec::new();
    }
    state.set_validators(next.clone());
    vec![Event::ValidatorSetChanged { validators: next.into_iter().map(|v| (v.address, v.power)).collect() }]
}
