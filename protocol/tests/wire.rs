//! The wire format: pinned test vectors (an accidental format change fails
//! here), round trips, and fuzz-style rejection of truncated, oversized,
//! re-versioned and randomly mutated encodings of every wire type, which must
//! never panic, and whose mutated signed objects must never verify.

use agora_protocol::codec::{self, Wire};
use agora_protocol::limits::MAX_TXS_PER_BUNDLE;
use agora_protocol::rng::SeededRng;
use agora_protocol::{
    Address, Amount, Block, ChainId, CommitCertificate, CommitSig, DecidedBlock, DowntimeAttestation, DowntimeEvidence,
    EquivocationEvidence, Error, GpuSpec, Hash, Header, Heartbeat, Height, JobResources, Keypair, LeaseAccept, LeaseId,
    LeaseRequest, Offer, Signable, Signed, SignedTx, TimestampMs, Transaction, TxBundle, TxKind,
};

fn chain() -> ChainId {
    ChainId::new("agora-vectors-1").unwrap()
}

fn key(name: &str) -> Keypair {
    Keypair::from_seed_phrase(name)
}

fn signed<T: Signable>(body: T, signer: &str) -> Signed<T> {
    Signed::sign(body, &key(signer), &chain()).unwrap()
}

fn gpu() -> GpuSpec {
    GpuSpec { model: "H100-80GB".into(), vram_mib: 81_920, count: 2, simulated: true }
}

fn offer() -> Signed<Offer> {
    let body = Offer {
        seq: 3,
        gpus: vec![gpu()],
        price_per_gpu_hour: Amount(2_500_000),
        max_duration_secs: 86_400,
        region: "eu-west".into(),
        expires_at_ms: TimestampMs(1_767_225_900_000),
        resources: JobResources {
            cpu_millicores_per_gpu: 8_000,
            memory_mib_per_gpu: 65_536,
            scratch_mib_per_gpu: 10_240,
            egress: false,
        },
    };
    signed(body, "provider")
}

fn lease_request() -> Signed<LeaseRequest> {
    let body = LeaseRequest {
        provider: key("provider").address(),
        offer_seq: 3,
        gpu_model: "H100-80GB".into(),
        gpus: 1,
        price_per_gpu_hour: Amount(2_500_000),
        duration_secs: 1_800,
        job_spec_hash: Hash([0xab; 32]),
        nonce: 42,
        expires_at_ms: TimestampMs(1_767_225_660_000),
    };
    signed(body, "buyer")
}

fn lease_accept() -> Signed<LeaseAccept> {
    signed(LeaseAccept { lease_id: lease_request().lease_id().unwrap(), gpu_ids: vec!["sim-0".into()] }, "provider")
}

fn heartbeat(seq: u64) -> Signed<Heartbeat> {
    signed(Heartbeat { seq, height: Height(77), block_hash: Hash([seq as u8; 32]) }, "provider")
}

fn attestation(validator: &str) -> Signed<DowntimeAttestation> {
    let body =
        DowntimeAttestation { provider: key("provider").address(), window_start: Height(10), window_end: Height(20) };
    signed(body, validator)
}

fn tx(kind: TxKind) -> SignedTx {
    signed(Transaction { nonce: 7, fee: Amount(1_000), kind }, "buyer")
}

fn transactions() -> Vec<SignedTx> {
    let lease_id = lease_request().lease_id().unwrap();
    vec![
        tx(TxKind::Transfer { to: key("provider").address(), amount: Amount(1_234_567) }),
        tx(TxKind::Stake { amount: Amount::agr(100) }),
        tx(TxKind::Unstake { amount: Amount::agr(1) }),
        tx(TxKind::RegisterProvider { region: "eu-west".into(), gpus: vec![gpu()] }),
        tx(TxKind::OpenLease { request: lease_request(), accept: lease_accept() }),
        tx(TxKind::CloseLease { lease_id, exit_code: Some(0) }),
        tx(TxKind::CancelLease { lease_id }),
        tx(TxKind::SlashDowntime {
            evidence: DowntimeEvidence {
                provider: key("provider").address(),
                window_start: Height(10),
                window_end: Height(20),
                attestations: vec![attestation("v0"), attestation("v1"), attestation("v2")],
            },
        }),
        tx(TxKind::SlashEquivocation {
            evidence: EquivocationEvidence::Heartbeats { first: heartbeat(1), second: heartbeat(2) },
        }),
        tx(TxKind::Unjail),
    ]
}

fn block() -> Block {
    let txs = transactions();
    let last_commit = Some(CommitCertificate {
        height: Height(11),
        round: 0,
        block_hash: Hash([1; 32]),
        signatures: vec![CommitSig { validator: key("v0").address(), signature: agora_protocol::Signature([5; 64]) }],
    });
    let header = Header {
        chain_id: chain(),
        height: Height(12),
        time_ms: TimestampMs(1_767_225_612_000),
        parent_hash: Hash([1; 32]),
        last_commit_hash: agora_protocol::block::last_commit_hash(last_commit.as_ref()),
        tx_root: agora_protocol::block::tx_root(&txs).unwrap(),
        state_root: Hash([2; 32]),
        proposer: key("v0").address(),
    };
    Block { header, txs, last_commit }
}

/// blake3 of the encoding, hex: pins every byte without pasting kilobytes.
fn fingerprint<T: Wire>(value: &T) -> String {
    Hash::tagged(b"test-vector", &codec::encode(value).unwrap()).to_hex()[..32].to_string()
}

#[test]
fn pinned_test_vectors() {
    for tx in transactions() {
        assert_eq!(
            codec::encoded_len(&tx).unwrap(),
            codec::encode(&tx).unwrap().len(),
            "sizing without encoding agrees"
        );
    }
    assert_eq!(codec::encoded_len(&block()).unwrap(), codec::encode(&block()).unwrap().len());
    let transfer = &transactions()[0];
    assert_eq!(
        hex::encode(codec::encode(transfer).unwrap()),
        PINNED_TRANSFER_HEX,
        "the encoding of a transfer changed: this breaks every node and signature on the network"
    );
    // A bundle is its count (u64 LE) and its transactions' encodings without their version bytes.
    let bundle = TxBundle { txs: vec![transfer.clone(), transfer.clone()] };
    assert_eq!(
        hex::encode(codec::encode(&bundle).unwrap()),
        format!("01{}{}{}", "0200000000000000", &PINNED_TRANSFER_HEX[2..], &PINNED_TRANSFER_HEX[2..]),
        "the encoding of a transaction bundle changed"
    );
    let actual = [
        ("block", fingerprint(&block())),
        ("offer", fingerprint(&offer())),
        ("lease request", fingerprint(&lease_request())),
        ("lease accept", fingerprint(&lease_accept())),
        ("heartbeat", fingerprint(&heartbeat(1))),
        ("attestation", fingerprint(&attestation("v0"))),
        ("lease id", lease_request().lease_id().unwrap().to_string()[..32].to_string()),
        ("address", key("provider").address().to_string()),
    ];
    for ((name, got), (pinned_name, want)) in actual.iter().zip(PINNED) {
        assert_eq!(*name, pinned_name);
        assert_eq!(got.as_str(), want, "the encoding of {name} changed");
    }
}

/// version 1 | nonce 7 (u64 LE) | fee 1000 (u64 LE) | variant 0 (u32 LE) | to (32) | amount 1234567 (u64 LE) | signer (32) | signature (64)
const PINNED_TRANSFER_HEX: &str = concat!(
    "01",
    "0700000000000000",
    "e803000000000000",
    "00000000",
    "1f02eeb028cba961abcce026faa0f77914adea8473bd8a24cd08e15f26f1ae52",
    "87d6120000000000",
    "3c94235d13484806fdbfcc654e7b6aa23bebf8604616558e031ad79d8ea462f5",
    "945e32daf8be656a01e20ef9703ee530a1aaabb3b0df8bdf79509e375e129dfa",
    "a6ec0d219412c3a90146eaa2826d1c882967af0211948a6238cf7e35c8739107",
);
const PINNED: [(&str, &str); 8] = [
    ("block", "c096a0a3c361c1676cd2b172ea828410"),
    ("offer", "2198e2b0d6a305764efa82184316b90e"),
    ("lease request", "aeb64644498e3b60735e179feed8e497"),
    ("lease accept", "ac392134b4b4063d3516ae5b06214e95"),
    ("heartbeat", "bcfa8bd99803db12b8aa930bc694f932"),
    ("attestation", "4fe7c331de2f28e18e2223b1b8e05244"),
    ("lease id", "9be5b05431f26713e3b0bbd17a4ed758"),
    ("address", "agora1rupwavpgew5kr27vuqn04g8h0y22m65yww7c5fxdprs47fh34efqa9tkks"),
];

#[test]
fn every_wire_type_round_trips() {
    fn check<T: Wire + PartialEq + std::fmt::Debug>(v: &T) {
        assert_eq!(&codec::decode::<T>(&codec::encode(v).unwrap()).unwrap(), v);
    }
    check(&block());
    check(&offer());
    check(&lease_request());
    check(&lease_accept());
    check(&heartbeat(1));
    check(&attestation("v0"));
    transactions().iter().for_each(check);
    check(&TxBundle { txs: transactions() });
}

#[test]
fn a_bundle_carries_one_to_the_limit_of_transactions() {
    let one = transactions()[0].clone();
    let decode = |n: usize| TxBundle::decode_checked(&codec::encode(&TxBundle { txs: vec![one.clone(); n] }).unwrap());
    assert_eq!(decode(1).unwrap().txs.len(), 1);
    assert_eq!(decode(MAX_TXS_PER_BUNDLE).unwrap().txs.len(), MAX_TXS_PER_BUNDLE);
    assert!(matches!(decode(0), Err(Error::Invalid { .. })), "an empty bundle");
    assert!(matches!(decode(MAX_TXS_PER_BUNDLE + 1), Err(Error::Invalid { .. })), "one too many");
}

/// Seeded: mutations are replayable.
struct Rng(SeededRng);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0.next_u64()
    }
    fn below(&mut self, n: usize) -> usize {
        self.0.below(n.max(1) as u64) as usize
    }
}

fn mutate(rng: &mut Rng, original: &[u8]) -> Vec<u8> {
    let mut v = original.to_vec();
    for _ in 0..1 + rng.below(4) {
        match rng.below(5) {
            0 => {
                let i = rng.below(v.len());
                v[i] ^= 1 << rng.below(8);
            }
            1 => {
                let i = rng.below(v.len());
                v[i] = rng.next() as u8;
            }
            2 => {
                // Overwrite 8 bytes with a huge value: hits length prefixes.
                let i = rng.below(v.len().saturating_sub(8));
                v[i..i + 8].copy_from_slice(&(u64::MAX - rng.below(3) as u64).to_le_bytes());
            }
            3 => {
                let i = rng.below(v.len());
                v.insert(i, rng.next() as u8);
            }
            _ => {
                let i = rng.below(v.len());
                v.remove(i);
            }
        }
        if v.is_empty() {
            v.push(1);
        }
    }
    v
}

/// Truncations, extensions, oversize, wrong version and random mutations of
/// `value`'s encoding: errors, never panics; a changed signed value never verifies.
fn hammer<T, F>(value: &T, verify: F, rng: &mut Rng, mutations: usize)
where
    T: Wire + PartialEq + std::fmt::Debug,
    F: Fn(&T) -> bool,
{
    let bytes = codec::encode(value).unwrap();
    for len in 0..bytes.len() {
        assert!(codec::decode::<T>(&bytes[..len]).is_err(), "{}: truncation to {len} bytes decoded", T::NAME);
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(matches!(codec::decode::<T>(&longer), Err(Error::TrailingBytes { .. })));
    let oversized = vec![T::VERSION; T::MAX_BYTES + 1];
    assert!(matches!(codec::decode::<T>(&oversized), Err(Error::TooLarge { .. })));
    let mut versioned = bytes.clone();
    versioned[0] = T::VERSION.wrapping_add(1);
    assert!(matches!(codec::decode::<T>(&versioned), Err(Error::Version { .. })));
    for _ in 0..mutations {
        let m = mutate(rng, &bytes);
        if let Ok(decoded) = codec::decode::<T>(&m) {
            if decoded != *value {
                assert!(!verify(&decoded), "{}: a mutated value still verifies: {decoded:?}", T::NAME);
            }
        }
    }
}

fn verifies<T: Signable>(s: &Signed<T>) -> bool {
    s.verify(&chain()).is_ok()
}

#[test]
fn mutated_encodings_are_rejected_without_panicking() {
    let mutations: usize = std::env::var("AGORA_FUZZ_MUTATIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(2_000);
    let mut rng = Rng(SeededRng::new(0x005e_ed0f_a60a));
    hammer(&offer(), verifies, &mut rng, mutations);
    hammer(&lease_request(), verifies, &mut rng, mutations);
    hammer(&lease_accept(), verifies, &mut rng, mutations);
    hammer(&heartbeat(1), verifies, &mut rng, mutations);
    hammer(&attestation("v0"), verifies, &mut rng, mutations);
    for t in transactions() {
        hammer(&t, verifies, &mut rng, mutations);
    }
    hammer(&TxBundle { txs: transactions() }, |d: &TxBundle| d.txs.iter().all(verifies), &mut rng, mutations);
    // A block has no signature of its own; its hash must change instead.
    let b = block();
    hammer(
        &b,
        |d: &Block| d.hash() == b.hash() && d.txs == b.txs && d.last_commit == b.last_commit,
        &mut rng,
        mutations / 4,
    );
    // A decided block: what a follower checks is that the certificate is
    // for this block's hash and the block is the one its header commits to.
    let certificate = CommitCertificate {
        height: b.header.height,
        round: 1,
        block_hash: b.hash(),
        signatures: vec![CommitSig { validator: key("v1").address(), signature: agora_protocol::Signature([6; 64]) }],
    };
    let decided = DecidedBlock { block: b.clone(), certificate };
    hammer(
        &decided,
        |d: &DecidedBlock| {
            d.certificate.block_hash == d.block.hash()
                && d.block.hash() == b.hash()
                && d.block.txs == b.txs
                && d.block.last_commit == b.last_commit
                && d.certificate.signatures == decided.certificate.signatures
                && (d.certificate.height, d.certificate.round)
                    == (decided.certificate.height, decided.certificate.round)
        },
        &mut rng,
        mutations / 4,
    );
}

#[test]
fn random_bytes_never_panic_any_decoder() {
    let mut rng = Rng(SeededRng::new(0xdec0de));
    for _ in 0..5_000 {
        let len = rng.below(300);
        let mut v: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        if let Some(first) = v.first_mut() {
            *first = 1; // the current version, to reach the body decoder
        }
        let _ = codec::decode::<Block>(&v);
        let _ = codec::decode::<DecidedBlock>(&v);
        let _ = codec::decode::<agora_protocol::snapshot::SnapshotRequest>(&v);
        let _ = codec::decode::<agora_protocol::snapshot::SnapshotResponse>(&v);
        let _ = codec::decode::<SignedTx>(&v);
        let _ = TxBundle::decode_checked(&v);
        let _ = codec::decode::<Signed<Offer>>(&v);
        let _ = codec::decode::<Signed<LeaseRequest>>(&v);
        let _ = codec::decode::<Signed<LeaseAccept>>(&v);
        let _ = codec::decode::<Signed<Heartbeat>>(&v);
        let _ = codec::decode::<Signed<DowntimeAttestation>>(&v);
    }
}

#[test]
fn signatures_are_bound_to_domain_and_chain() {
    let hb = heartbeat(1);
    assert!(verifies(&hb));
    // The same body bytes signed as another type (an attestation) do not verify as a heartbeat.
    let other_chain = ChainId::new("agora-other-1").unwrap();
    assert!(hb.verify(&other_chain).is_err());
    let as_attestation: Signed<DowntimeAttestation> = Signed {
        body: DowntimeAttestation { provider: Address([0; 32]), window_start: Height(0), window_end: Height(0) },
        signer: hb.signer,
        signature: hb.signature,
    };
    assert!(!verifies(&as_attestation));
    let _ = LeaseId::default();
}
