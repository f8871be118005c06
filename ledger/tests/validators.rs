//! Validator-set rotation at epoch boundaries: the most-staked accounts,
//! capped in number, with power equal to stake; the deciding set is kept
//! for checking the last block's certificate.

use agora_ledger::testkit::{TestChain, sign_tx};
use agora_ledger::{Event, SigCheck, State, apply_block};
use agora_protocol::{Amount, SignedTx, TxKind};

fn commit(chain: &TestChain, state: &mut State, txs: Vec<SignedTx>) -> Vec<Event> {
    let block = chain.next_block(state, txs).unwrap();
    apply_block(state, &block, SigCheck::Verify).unwrap().events
}

#[test]
fn the_set_rotates_to_the_top_stakers_at_epoch_boundaries() {
    let mut chain = TestChain::new(6, 2, Amount::agr(10_000));
    chain.genesis.params.epoch_blocks = 3;
    chain.genesis.params.max_validators = 3;
    let mut state = chain.state();
    let genesis_set = state.validators().to_vec();
    // Accounts 2..=5 stake 2000, 1500, 500, 3000 AGR (validators 0 and 1 hold 1000 each).
    let stakes = [(2, 2_000), (3, 1_500), (4, 500), (5, 3_000)];
    let txs =
        stakes.iter().map(|(i, a)| sign_tx(&chain.keys[*i], 0, TxKind::Stake { amount: Amount::agr(*a) })).collect();
    commit(&chain, &mut state, txs);
    commit(&chain, &mut state, vec![]);
    assert_eq!(state.validators(), genesis_set, "no rotation before the epoch ends");
    let events = commit(&chain, &mut state, vec![]);
    let mut expected: Vec<_> =
        [(5, 3_000), (2, 2_000), (3, 1_500)].iter().map(|(i, a)| (chain.address(*i), Amount::agr(*a).0)).collect();
    expected.sort();
    assert!(events.contains(&Event::ValidatorSetChanged { validators: expected.clone() }), "{events:?}");
    let now: Vec<_> = state.validators().iter().map(|v| (v.address, v.power)).collect();
    assert_eq!(now, expected);
    assert_eq!(state.last_validators(), genesis_set, "block 3 was decided by the old set");
    commit(&chain, &mut state, vec![]);
    assert_eq!(state.last_validators(), state.validators(), "from block 4 on, the new set decides");
}

#[test]
fn an_epoch_with_nobody_staked_keeps_the_old_set() {
    let mut chain = TestChain::new(2, 1, Amount::agr(10_000));
    chain.genesis.params.epoch_blocks = 2;
    let mut state = chain.state();
    let before = state.validators().to_vec();
    commit(&chain, &mut state, vec![sign_tx(&chain.keys[0], 0, TxKind::Unstake { amount: Amount::agr(1_000) })]);
    let events = commit(&chain, &mut state, vec![]);
    assert!(!events.iter().any(|e| matches!(e, Event::ValidatorSetChanged { .. })));
    assert_eq!(state.validators(), before);
}
