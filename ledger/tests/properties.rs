//! Property tests over random sequences of valid and invalid transactions:
//! supply is conserved after every transaction and block, a rejected
//! transaction changes nothing, replaying the same blocks on fresh states
//! gives the same root, extreme amounts never panic, and no provider's GPUs
//! are ever promised more than once across auction asks, auction leases and
//! spot leases (auctions clear every few blocks here).

use agora_ledger::testkit::{chain_id, sign_tx};
use agora_ledger::{BlockBuilder, Genesis, GenesisAccount, LeaseStatus, Params, SigCheck, State, apply_block};
use agora_protocol::{
    Amount, Block, ChainId, DowntimeAttestation, DowntimeEvidence, GpuSpec, Hash, Height, Keypair, LeaseAccept,
    LeaseRequest, Signed, SignedTx, TimestampMs, TxKind,
};
use proptest::prelude::*;

const ACCOUNTS: usize = 6;
const VALIDATORS: usize = 3;

fn keys() -> Vec<Keypair> {
    (0..ACCOUNTS).map(|i| Keypair::from_seed_phrase(&format!("prop-{i}"))).collect()
}

/// Five ordinary accounts and one holding the rest of `u64::MAX`, so sums
/// sit right at the edge of overflow.
fn genesis(keys: &[Keypair]) -> Genesis {
    let params = Params {
        unbonding_blocks: 3,
        max_evidence_age_blocks: 2,
        jail_blocks: 2,
        min_provider_stake: Amount::agr(100),
        epoch_blocks: 3,
        market: agora_ledger::MarketParams { auction_blocks: 4, no_cancel_blocks: 1, ..Default::default() },
        ..Params::default()
    };
    let normal = Amount::agr(1_000);
    let stake = |i: usize| {
        if i < VALIDATORS { Amount::agr(500) } else { Amount::ZERO }
    };
    let others: u64 = (0..ACCOUNTS - 1).map(|i| normal.0 + stake(i).0).sum();
    let accounts = keys
        .iter()
        .enumerate()
        .map(|(i, k)| GenesisAccount {
            address: k.address(),
            balance: if i == ACCOUNTS - 1 { Amount(u64::MAX - others) } else { normal },
            stake: stake(i),
        })
        .collect();
    Genesis {
        chain_id: chain_id(),
        genesis_time_ms: TimestampMs(1_000_000),
        params,
        accounts,
        validators: keys.iter().take(VALIDATORS).map(Keypair::address).collect(),
    }
}

/// Who sends a lease transaction: one of its parties, or anyone.
#[derive(Clone, Copy, Debug)]
enum Party {
    Buyer,
    Provider,
    Anyone(usize),
}

/// Accounts 3 and 4 stake and register as providers in a prelude block, so
/// lease and slashing paths are exercised often.
const PROVIDERS: [usize; 2] = [3, 4];

#[derive(Clone, Debug)]
enum Op {
    Transfer {
        from: usize,
        to: usize,
        amount: u64,
        nonce_skew: i8,
    },
    Stake {
        from: usize,
        amount: u64,
    },
    Unstake {
        from: usize,
        amount: u64,
    },
    /// (Re-)registers with `count` GPUs: fewer than are promised is refused.
    Register {
        from: usize,
        count: u32,
    },
    OpenLease {
        buyer: usize,
        provider: usize,
        gpus: u32,
        secs: u64,
        price: u64,
    },
    CloseLease {
        sender: Party,
        pick: usize,
    },
    CancelLease {
        sender: Party,
        pick: usize,
    },
    SlashDowntime {
        provider: usize,
        voters: u8,
        start_back: u64,
        len: u64,
    },
    Unjail {
        from: usize,
    },
    ForgedSignature {
        from: usize,
        amount: u64,
    },
    Ask {
        from: usize,
        gpus: u32,
        hours: u32,
        price: u64,
    },
    Bid {
        from: usize,
        gpus: u32,
        hours: u32,
        price: u64,
        split: bool,
        start_hours: u32,
    },
    EndBlock {
        secs: u64,
    },
}

/// The class the providers register (and spot leases name by model).
fn sim_class() -> agora_protocol::GpuClass {
    agora_protocol::GpuClass::of(&registered()[0]).unwrap()
}

fn registered() -> Vec<GpuSpec> {
    vec![GpuSpec { model: "A100-40GB".into(), vram_mib: 40_960, count: 8, simulated: true }]
}

fn amount() -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => 1u64..=Amount::agr(50).0,
        2 => Amount::agr(50).0..=Amount::agr(2_000).0,
        1 => Just(u64::MAX),
        1 => Just(u64::MAX - 1),
        1 => Just(0u64),
        1 => any::<u64>(),
    ]
}

fn account() -> impl Strategy<Value = usize> {
    0..ACCOUNTS
}

fn party() -> impl Strategy<Value = Party> {
    prop_oneof![3 => Just(Party::Buyer), 3 => Just(Party::Provider), 1 => account().prop_map(Party::Anyone)]
}

fn provider() -> impl Strategy<Value = usize> {
    prop_oneof![4 => prop::sample::select(PROVIDERS.to_vec()), 1 => account()]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (account(), account(), amount(), prop_oneof![8 => Just(0i8), 1 => Just(1i8), 1 => Just(-1i8)])
            .prop_map(|(from, to, amount, nonce_skew)| Op::Transfer { from, to, amount, nonce_skew }),
        3 => (account(), amount()).prop_map(|(from, amount)| Op::Stake { from, amount }),
        2 => (account(), amount()).prop_map(|(from, amount)| Op::Unstake { from, amount }),
        2 => (account(), prop_oneof![Just(8u32), 1u32..=4]).prop_map(|(from, count)| Op::Register { from, count }),
        6 => (account(), provider(), 1u32..=4, 1u64..=7_200, prop_oneof![3 => 1u64..=Amount::agr(10).0, 1 => any::<u64>()])
            .prop_map(|(buyer, provider, gpus, secs, price)| Op::OpenLease { buyer, provider, gpus, secs, price }),
        2 => (party(), any::<usize>()).prop_map(|(sender, pick)| Op::CloseLease { sender, pick }),
        2 => (party(), any::<usize>()).prop_map(|(sender, pick)| Op::CancelLease { sender, pick }),
        2 => (provider(), prop_oneof![2 => Just(0b111u8), 1 => Just(0b011u8), 1 => any::<u8>()], 0u64..6, 0u64..4)
            .prop_map(|(provider, voters, start_back, len)| Op::SlashDowntime { provider, voters, start_back, len }),
        1 => provider().prop_map(|from| Op::Unjail { from }),
        1 => (account(), amount()).prop_map(|(from, amount)| Op::ForgedSignature { from, amount }),
        3 => (provider(), 1u32..=6, 1u32..=4, 1u64..=3).prop_map(|(from, gpus, hours, price)| Op::Ask { from, gpus, hours, price }),
        3 => (account(), 1u32..=5, 1u32..=3, 1u64..=4, any::<bool>(), prop_oneof![3 => Just(0u32), 1 => 1u32..=2])
            .prop_map(|(from, gpus, hours, price, split, start_hours)| Op::Bid { from, gpus, hours, price, split, start_hours }),
        3 => prop_oneof![1u64..=5, 1u64..=4_000].prop_map(|secs| Op::EndBlock { secs }),
    ]
}

/// Turns an op into a signed transaction against the current state.
fn materialize(op: &Op, keys: &[Keypair], state: &State, chain: &ChainId) -> SignedTx {
    let nonce = |i: usize| state.account(&keys[i].address()).nonce;
    let leases: Vec<_> = state.leases().filter(|l| l.status == LeaseStatus::Open).collect();
    // The chosen open lease (or an unknown id when there is none) and its sender.
    let pick = |p: usize, who: Party| match leases.get(p % leases.len().max(1)) {
        None => (Default::default(), 0),
        Some(l) => {
            let sender = match who {
                Party::Buyer => l.buyer,
                Party::Provider => l.provider,
                Party::Anyone(i) => keys[i].address(),
            };
            (l.id, keys.iter().position(|k| k.address() == sender).unwrap_or(0))
        }
    };
    match op {
        Op::Transfer { from, to, amount, nonce_skew } => {
            let n = nonce(*from).wrapping_add_signed(i64::from(*nonce_skew));
            sign_tx(&keys[*from], n, TxKind::Transfer { to: keys[*to].address(), amount: Amount(*amount) })
        }
        Op::Stake { from, amount } => sign_tx(&keys[*from], nonce(*from), TxKind::Stake { amount: Amount(*amount) }),
        Op::Unstake { from, amount } => {
            sign_tx(&keys[*from], nonce(*from), TxKind::Unstake { amount: Amount(*amount) })
        }
        Op::Register { from, count } => {
            let gpus = vec![GpuSpec { count: *count, ..registered()[0].clone() }];
            sign_tx(&keys[*from], nonce(*from), TxKind::RegisterProvider { region: "us-east".into(), gpus })
        }
        Op::OpenLease { buyer, provider, gpus, secs, price } => {
            let request = LeaseRequest {
                provider: keys[*provider].address(),
                offer_seq: 0,
                gpu_model: "A100-40GB".into(),
                gpus: *gpus,
                price_per_gpu_hour: Amount(*price),
                duration_secs: *secs,
                job_spec_hash: Hash([3; 32]),
                nonce: state.height().0,
                expires_at_ms: TimestampMs(state.time_ms().0 + 10_000),
            };
            let request = Signed::sign(request, &keys[*buyer], chain).unwrap();
            let gpu_ids = (0..*gpus).map(|g| g.to_string()).collect();
            let accept =
                Signed::sign(LeaseAccept { lease_id: request.lease_id().unwrap(), gpu_ids }, &keys[*provider], chain)
                    .unwrap();
            sign_tx(&keys[*provider], nonce(*provider), TxKind::OpenLease { request, accept })
        }
        Op::CloseLease { sender, pick: p } => {
            let (lease_id, from) = pick(*p, *sender);
            sign_tx(&keys[from], nonce(from), TxKind::CloseLease { lease_id, exit_code: Some(0) })
        }
        Op::CancelLease { sender, pick: p } => {
            let (lease_id, from) = pick(*p, *sender);
            sign_tx(&keys[from], nonce(from), TxKind::CancelLease { lease_id })
        }
        Op::SlashDowntime { provider, voters, start_back, len } => {
            let end = state.height().0.saturating_sub(*start_back);
            let start = end.saturating_sub(*len);
            let body = DowntimeAttestation {
                provider: keys[*provider].address(),
                window_start: Height(start),
                window_end: Height(end),
            };
            let attestations = (0..VALIDATORS)
                .filter(|v| voters & (1 << v) != 0)
                .map(|v| Signed::sign(body.clone(), &keys[v], chain).unwrap())
                .collect();
            let evidence = DowntimeEvidence {
                provider: body.provider,
                window_start: body.window_start,
                window_end: body.window_end,
                attestations,
            };
            sign_tx(&keys[ACCOUNTS - 1], nonce(ACCOUNTS - 1), TxKind::SlashDowntime { evidence })
        }
        Op::Unjail { from } => sign_tx(&keys[*from], nonce(*from), TxKind::Unjail),
        Op::ForgedSignature { from, amount } => {
            let mut tx = sign_tx(
                &keys[*from],
                nonce(*from),
                TxKind::Transfer { to: keys[0].address(), amount: Amount(*amount) },
            );
            tx.signer = keys[(*from + 1) % ACCOUNTS].address();
            tx
        }
        Op::Ask { from, gpus, hours, price } => {
            let kind =
                TxKind::PlaceAsk { class: sim_class(), gpus: *gpus, hours: *hours, min_price: Amount::agr(*price) };
            sign_tx(&keys[*from], nonce(*from), kind)
        }
        Op::Bid { from, gpus, hours, price, split, start_hours } => {
            let kind = TxKind::PlaceBid {
                class: sim_class(),
                gpus: *gpus,
                hours: *hours,
                max_price: Amount::agr(*price),
                split: *split,
                start_hours: *start_hours,
            };
            sign_tx(&keys[*from], nonce(*from), kind)
        }
        Op::EndBlock { .. } => unreachable!("block boundaries are not transactions"),
    }
}

/// Block 1: the provider accounts stake and register.
fn prelude(keys: &[Keypair], state: &mut State) -> Block {
    let gpus = registered();
    let time = TimestampMs(state.time_ms().0 + 1_000);
    let proposer = state.validators()[0].address;
    let mut builder = BlockBuilder::new(state, time, proposer).unwrap();
    for p in PROVIDERS {
        builder.push(sign_tx(&keys[p], 0, TxKind::Stake { amount: Amount::agr(300) })).unwrap();
        let register = TxKind::RegisterProvider { region: "us-east".into(), gpus: gpus.clone() };
        builder.push(sign_tx(&keys[p], 1, register)).unwrap();
    }
    let block = builder.finish(None).unwrap();
    apply_block(state, &block, SigCheck::Verify).unwrap();
    block
}

/// Runs the ops as blocks, checking the properties at every step, and
/// returns the committed blocks and the final root.
fn run(ops: &[Op]) -> Result<(Vec<Block>, Hash), TestCaseError> {
    let keys = keys();
    let genesis = genesis(&keys);
    let chain = genesis.chain_id.clone();
    let mut state = genesis.state().unwrap();
    let mut blocks = vec![prelude(&keys, &mut state)];
    for chunk in ops.split_inclusive(|op| matches!(op, Op::EndBlock { .. })) {
        let secs = match chunk.last() {
            Some(Op::EndBlock { secs }) => *secs,
            _ => 1,
        };
        let time = TimestampMs(state.time_ms().0 + secs * 1_000);
        let proposer = state.validators()[0].address;
        let mut builder = BlockBuilder::new(&mut state, time, proposer).unwrap();
        for op in chunk.iter().filter(|op| !matches!(op, Op::EndBlock { .. })) {
            let tx = materialize(op, &keys, builder.state(), &chain);
            let before = builder.state().clone();
            match builder.push(tx) {
                Ok(_) => prop_assert!(
                    builder.state().audit().is_ok(),
                    "supply broken after {op:?}: {:?}",
                    builder.state().audit()
                ),
                Err(e) => prop_assert!(*builder.state() == before, "rejected {op:?} ({e}) changed the state"),
            }
        }
        let block = builder.finish(None).unwrap();
        let outcome = apply_block(&mut state, &block, SigCheck::Verify);
        prop_assert!(outcome.is_ok(), "built block failed to apply: {:?}", outcome.err());
        prop_assert!(state.audit().is_ok(), "supply broken after block: {:?}", state.audit());
        // No provider's GPUs are promised twice: asks + leases (spot or
        // auctioned) within what it registered, class by class.
        for (address, _) in state.providers() {
            let promised = agora_ledger::capacity::check_commitments(&state, address);
            prop_assert!(promised.is_ok(), "{promised:?}");
        }
        prop_assert_eq!(state.root(), block.header.state_root);
        // The Merkle root, updated from the block's writes only, is the
        // root of the whole state (deleted orders and listings included).
        prop_assert_eq!(state.root(), state.root_from_scratch().unwrap());
        prop_assert!(state.check_leaves().is_ok(), "{:?}", state.check_leaves());
        blocks.push(block);
    }
    Ok((blocks, state.root()))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, max_shrink_iters: 2_000, ..ProptestConfig::default() })]

    #[test]
    fn random_transaction_sequences_keep_every_invariant(ops in prop::collection::vec(op(), 1..80)) {
        let (blocks, root) = run(&ops)?;
        // The same blocks on two fresh states give the same root, with or without signature checks.
        let keys = keys();
        for sig in [SigCheck::Verify, SigCheck::Skip] {
            let mut fresh = genesis(&keys).state().unwrap();
            for block in &blocks {
                apply_block(&mut fresh, block, sig).unwrap();
            }
            prop_assert_eq!(fresh.root(), root);
        }
    }
}
