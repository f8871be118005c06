//! Validator-set rotation. At the end of every block whose height is a
//! multiple of `epoch_blocks`, the set for the following heights becomes the
//! accounts with the most stake (ties broken by address), at most
//! `max_validators`, each with power equal to its stake in micro-AGR. An epoch
//! with nobody staked keeps the old set: the chain must always have validators.

use agora_protocol::Address;

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

/// Whether `address` votes now or may from the next rotation as stakes
/// stand: in the current set, or staked and either the set has room or its
/// stake reaches the weakest member's power. O(validators), unlike
/// `staked_set`: a node asks after every block whether to take the votes.
pub fn may_validate(state: &State, address: &Address) -> bool {
    if state.is_validator(address) {
        return true;
    }
    let stake = state.account(address).stake;
    if stake.is_zero() {
        return false;
    }
    let set = state.validators();
    (set.len() as u64) < state.params().max_validators || set.iter().any(|v| stake.0 >= v.power)
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

#[cfg(test)]
mod tests {
    use agora_protocol::Amount;

    use super::*;
    use crate::testkit::TestChain;

    #[test]
    fn a_node_may_validate_when_in_the_set_or_staked_enough_to_enter_it() {
        let mut chain = TestChain::new(5, 2, Amount::agr(10_000));
        // Accounts 0 and 1 validate with 1,000 AGR; 2 stakes as much, 3 less, 4 nothing.
        chain.genesis.accounts[2].stake = Amount::agr(1_000);
        chain.genesis.accounts[3].stake = Amount::agr(100);
        chain.genesis.params.max_validators = 2;
        let may = |chain: &TestChain| {
            let state = chain.state();
            (0..5).map(|i| may_validate(&state, &chain.address(i))).collect::<Vec<_>>()
        };
        assert_eq!(may(&chain), vec![true, true, true, false, false], "a full set: only a match for the weakest");
        chain.genesis.params.max_validators = 3;
        assert_eq!(may(&chain), vec![true, true, true, true, false], "room in the set: any stake");
    }
}
