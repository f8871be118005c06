//! Light-client proofs (`agora_ledger::light`, `tree`): on a chain of real
//! blocks, a value proven at a height with the header's commit certificate
//! verifies against the genesis validators; a present and an absent key both
//! verify; and every lie a hostile node could tell is refused — a changed
//! value, a value for an absent key, a proof for another key, a certificate
//! short of 2/3, signers the client does not trust, another chain. Random
//! chains: the incremental root always equals a root built from scratch, and
//! proofs hold for every account.

use agora_ledger::light::{ProofBundle, Verified, trusted_from_genesis, verify};
use agora_ledger::testkit::{TestChain, chain_id, transfer};
use agora_ledger::tree::{self, StateKey};
use agora_ledger::{Account, Error, SigCheck, State, Validator, apply_block};
use agora_protocol::{Address, Amount, Block, ChainId, CommitCertificate, Keypair};
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
