//! Light-client proofs (`agora_ledger::light`, `tree`): on a chain of real
//! blocks, a value proven at a height with the header's commit certificate
//! verifies against the genesis validators; a present and an absent key both
//! verify; and every lie a hostile node could tell is refused — a changed
//! value, a value for an absent key, a proof for another key, a certificate
//! short of 2/3, signers the client does not trust, another chain. Random
//! chains: the incremental root always equals a root built from scratch, and
//! proofs hold for every account.

use agora_ledger::light::{ProofBundle, Verified, follow, trusted_from_genesis, verify};
use agora_ledger::testkit::{TestChain, certify, chain_id, sign_tx, transfer};
use agora_ledger::tree::{self, StateKey};
use agora_ledger::{Account, Error, SigCheck, State, Store, Validator, apply_block};
use agora_protocol::{Address, Amount, Block, ChainId, CommitCertificate, Height, Keypair, TxKind};
use proptest::prelude::*;

fn chain() -> TestChain {
    TestChain::new(8, 4, Amount::agr(1_000))
}

/// `n` blocks of a few transfers each; the state and the last block.
fn run(chain: &TestChain, n: usize) -> (State, Block) {
    let mut state = chain.state();
    let mut last = None;
    for h in 0..n {
        let txs = (4..8)
            .map(|i| {
                let k = &chain.keys[i];
                transfer(k, state.account(&k.address()).nonce, chain.address((i + h) % 8), Amount(1 + h as u64))
            })
            .collect();
        let block = chain.next_block(&mut state.clone(), txs).unwrap();
        apply_block(&mut state, &block, SigCheck::Verify).unwrap();
        last = Some(block);
    }
    (state, last.unwrap())
}

/// Precommits for `block` by the first `signers` validators of the test chain.
fn certificate(chain: &TestChain, block: &Block, signers: usize) -> CommitCertificate {
    chain.certificate(block, signers)
}

fn bundle(state: &State, block: &Block, cert: CommitCertificate, key: &StateKey) -> ProofBundle {
    let (value, proof) = state.prove(key).unwrap();
    let (meta, meta_proof) = state.prove(&StateKey::Meta).unwrap();
    ProofBundle {
        header: block.header.clone(),
        certificate: cert,
        key: key.bytes(),
        value,
        proof: tree::encode_proof(&proof),
        meta: meta.unwrap(),
        meta_proof: tree::encode_proof(&meta_proof),
    }
}

fn trusted(chain: &TestChain) -> Vec<Validator> {
    trusted_from_genesis(&chain.genesis).unwrap()
}

fn check(b: &ProofBundle, key: &StateKey, trusted: &[Validator]) -> Result<Verified, Error> {
    verify(b, key, &chain_id(), trusted)
}

#[test]
fn a_proven_value_verifies_and_every_lie_is_refused() {
    let chain = chain();
    let (state, block) = run(&chain, 5);
    let key = StateKey::Account(chain.address(5));
    let good = bundle(&state, &block, certificate(&chain, &block, 3), &key);
    let v = check(&good, &key, &trusted(&chain)).unwrap();
    let account: Account = agora_ledger::light::decode_value(v.value.as_deref().unwrap()).unwrap();
    assert_eq!((v.height, account), (state.height(), state.account(&chain.address(5))));
    assert_eq!(v.trusted_power.0 * 4, v.trusted_power.1 * 3, "3 of 4 equal validators signed");

    // An absent key: proven absent.
    let nobody = StateKey::Account(Address([7; 32]));
    let absent = bundle(&state, &block, certificate(&chain, &block, 4), &nobody);
    assert_eq!(check(&absent, &nobody, &trusted(&chain)).unwrap().value, None);

    let refused = |b: &ProofBundle, key: &StateKey, why: &str| {
        let e = check(b, key, &trusted(&chain)).expect_err(why);
        assert!(matches!(e, Error::BadProof(_)), "{why}: {e}");
    };
    // A richer balance than the state holds.
    let mut lie = good.clone();
    let mut richer = state.account(&chain.address(5));
    richer.balance = Amount(richer.balance.0 + 1);
    lie.value = Some(agora_protocol::codec::canonical_bytes(&richer).unwrap());
    refused(&lie, &key, "a changed value");
    // A value for the absent key, and an absence for the present one.
    let mut lie = absent.clone();
    lie.value = good.value.clone();
    refused(&lie, &nobody, "a value for an absent key");
    let mut lie = good.clone();
    lie.value = None;
    refused(&lie, &key, "absence of a present key");
    // Another account's proof passed off as this one's.
    let other = StateKey::Account(chain.address(6));
    refused(&bundle(&state, &block, certificate(&chain, &block, 3), &other), &key, "another key's proof");
    // Two of four validators are not more than 2/3.
    refused(&bundle(&state, &block, certificate(&chain, &block, 2), &key), &key, "a certificate short of 2/3");
    // A certificate for another block.
    let mut lie = good.clone();
    lie.header.time_ms.0 += 1;
    refused(&lie, &key, "a header the certificate does not sign");
    // Trusting other validators.
    let strangers: Vec<Validator> =
        (0..4).map(|_| Validator { address: Keypair::generate().unwrap().address(), power: 1_000 }).collect();
    let e = check(&good, &key, &strangers).unwrap_err();
    assert!(e.to_string().contains("validators you trust"), "{e}");
    // Another chain.
    assert!(verify(&good, &key, &ChainId::new("agora-other").unwrap(), &trusted(&chain)).is_err());
}

/// Stakes and unstakes that move the validator set, one step per epoch (2
/// blocks), from the genesis' accounts 0–3 to accounts 8–11: each step's
/// accounts that stake, then those that unstake everything.
const ROTATION: [(&[usize], &[usize]); 4] =
    [(&[4, 5], &[]), (&[6, 7], &[0, 1]), (&[8, 9], &[2, 3, 4]), (&[10, 11], &[5, 6, 7])];

/// A store whose validator set rotated away from the genesis' by
/// `ROTATION`, every block committed with a certificate of the set that
/// decided it; and its last block.
fn rotated(chain: &TestChain, dir: &std::path::Path) -> (Store, Block) {
    let mut store = Store::open(dir, &chain.genesis).unwrap();
    let key_of = |a: &Address| chain.keys.iter().find(|k| k.address() == *a).unwrap().clone();
    let mut last = None;
    let stake = Amount::agr(1_000);
    for (joining, leaving) in ROTATION {
        for txs in [
            joining
                .iter()
                .map(|&i| {
                    sign_tx(
                        &chain.keys[i],
                        store.state().account(&chain.address(i)).nonce,
                        TxKind::Stake { amount: stake },
                    )
                })
                .chain(leaving.iter().map(|&i| {
                    sign_tx(
                        &chain.keys[i],
                        store.state().account(&chain.address(i)).nonce,
                        TxKind::Unstake { amount: stake },
                    )
                }))
                .collect(),
            Vec::new(),
        ] {
            let block = chain.next_block(&mut store.state().clone(), txs).unwrap();
            let deciders: Vec<Keypair> = store.state().validators().iter().map(|v| key_of(&v.address)).collect();
            store.commit_certified(&block, &certify(&block, &deciders)).unwrap();
            last = Some(block);
        }
    }
    (store, last.unwrap())
}

fn transitions(store: &Store) -> Vec<ProofBundle> {
    let held = store.reader().transitions(Height(0), 100).unwrap();
    held.iter().map(|(_, bytes)| tree::decode_canonical(bytes).unwrap()).collect()
}

#[test]
fn a_client_follows_the_validator_set_from_its_genesis_by_bisection() {
    let mut chain = TestChain::new(12, 4, Amount::agr(10_000));
    chain.genesis.params.epoch_blocks = 2;
    let dir = tempfile::tempdir().unwrap();
    let (store, block) = rotated(&chain, dir.path());
    let now: std::collections::BTreeSet<Address> = store.state().validators().iter().map(|v| v.address).collect();
    assert_eq!(now, (8..12).map(|i| chain.address(i)).collect(), "the set rotated away entirely");

    // An account proven at the tip: the genesis validators signed none of it.
    let key = StateKey::Account(chain.address(1));
    let deciders: Vec<Keypair> = store
        .state()
        .last_validators()
        .iter()
        .map(|v| chain.keys.iter().find(|k| k.address() == v.address).unwrap().clone())
        .collect();
    let tip = bundle(store.state(), &block, certify(&block, &deciders), &key);
    let e = check(&tip, &key, &trusted(&chain)).unwrap_err();
    assert!(matches!(e, Error::TooFewTrustedSigners { vouching: 0, .. }), "{e}");

    // One transition per change of the set, each at its epoch's last block.
    let all = transitions(&store);
    assert_eq!(all.len(), ROTATION.len());
    assert!(all.iter().all(|t| t.header.height.0 % 2 == 0));
    let followed = follow(&all, &chain_id(), trusted(&chain), Height(0)).unwrap();
    assert_eq!(followed.validators, store.state().validators());
    assert!(followed.taken < all.len(), "bisection skipped a transition: took {} of {}", followed.taken, all.len());
    let v = check(&tip, &key, &followed.validators).unwrap();
    assert_eq!(v.height, store.state().height());

    // Lies: a transition naming another set, signers the genesis never
    // trusted, transitions out of order, and an old transition after a newer one.
    let mut lie = all[0].clone();
    let mut meta: tree::Meta = tree::decode_canonical(&lie.meta).unwrap();
    meta.validators = vec![Validator { address: Keypair::generate().unwrap().address(), power: 1 }];
    lie.meta = agora_protocol::codec::canonical_bytes(&meta).unwrap();
    lie.value = Some(lie.meta.clone());
    assert!(matches!(follow(&[lie], &chain_id(), trusted(&chain), Height(0)), Err(Error::BadProof(_))));
    let strangers: Vec<Validator> =
        (0..4).map(|_| Validator { address: Keypair::generate().unwrap().address(), power: 1_000 }).collect();
    assert!(matches!(
        follow(&all, &chain_id(), strangers, Height(0)),
        Err(Error::TooFewTrustedSigners { vouching: 0, .. })
    ));
    let reversed: Vec<ProofBundle> = all.iter().rev().cloned().collect();
    assert!(follow(&reversed, &chain_id(), trusted(&chain), Height(0)).is_err(), "out of order");
    let taken_first = follow(&all[..1], &chain_id(), trusted(&chain), Height(0)).unwrap();
    assert!(
        follow(&all[..1], &chain_id(), taken_first.validators, taken_first.height).is_err(),
        "a transition at or below the trusted height walks nowhere"
    );

    // Transitions are kept through a reopen.
    drop(store);
    let reopened = Store::open(dir.path(), &chain.genesis).unwrap();
    assert_eq!(transitions(&reopened).len(), ROTATION.len());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn incremental_roots_equal_roots_from_scratch_and_proofs_hold(
        transfers in prop::collection::vec((4usize..8, 0usize..12, 1u64..1_000_000), 1..60),
        per_block in 1usize..8,
    ) {
        // Accounts 8..12 are not funded: transfers create them, and moving
        // everything out of one (amount too large is refused) varies the tree.
        let chain = TestChain::new(8, 4, Amount::agr(1));
        let mut state = chain.state();
        let extra: Vec<Address> = (0..4).map(|i| Address([i as u8 + 1; 32])).collect();
        let to = |i: usize| if i < 8 { chain.address(i) } else { extra[i - 8] };
        for chunk in transfers.chunks(per_block) {
            let mut nonces = std::collections::BTreeMap::new();
            let txs = chunk
                .iter()
                .map(|(from, dest, amount)| {
                    let k = &chain.keys[*from];
                    let n = nonces.entry(*from).or_insert(state.account(&k.address()).nonce);
                    *n += 1;
                    transfer(k, *n - 1, to(*dest), Amount(*amount))
                })
                .collect();
            let block = chain.next_block(&mut state.clone(), txs).unwrap();
            apply_block(&mut state, &block, SigCheck::Verify).unwrap();
            prop_assert_eq!(state.root(), state.root_from_scratch().unwrap());
            prop_assert_eq!(state.root(), block.header.state_root);
        }
        for i in 0..12 {
            let key = StateKey::Account(to(i));
            let (value, proof) = state.prove(&key).unwrap();
            let expected = state.accounts().find(|(a, _)| **a == to(i)).map(|(_, acct)| agora_protocol::codec::canonical_bytes(acct).unwrap());
            prop_assert_eq!(&value, &expected);
            prop_assert!(tree::verify_proof(state.root(), &key, value.as_deref(), &proof).is_ok());
            let wrong = Some(vec![1, 2, 3]);
            prop_assert!(tree::verify_proof(state.root(), &key, wrong.as_deref(), &proof).is_err());
        }
    }
}
