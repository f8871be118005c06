//! Light-client verification: a value of the state (an account, a provider,
//! a lease) proven at a height without trusting the node that served it.
//! The node sends the value with its Merkle proof, the block header, the
//! header's commit certificate, and the state's `Meta` leaf (with the set of
//! validators that decided the block) with its own proof. The client checks,
//! against a validator set it trusts (the chain's genesis, or a checkpoint):
//!
//! 1. the `Meta` leaf is in the header's state root, and names the chain;
//! 2. the certificate is for this header and carries valid precommits of
//!    more than 2/3 of the power of the validators that decided it;
//! 3. those signers hold more than 1/3 of the trusted set's power, so at
//!    least one validator the client trusts vouches for the header (while
//!    fewer than 1/3 of the trusted power is faulty — `docs/design/light-client.md`);
//! 4. the value (or its absence) is in the header's state root.
//!
//! Pure: no I/O, so the CLI, tests and the simulation run the same checks.

use agora_protocol::{Address, ChainId, CommitCertificate, Header, Height};
use serde::{Deserialize, Serialize};

use crate::consensus::certificate::verify_commit;
use crate::consensus::context::ConsensusValidatorSet;
use crate::error::Error;
use crate::state::Validator;
use crate::tree::{Meta, StateKey};

/// What a node returns for `GET /v1/proof/...`; its byte fields are
/// canonical encodings.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ProofBundle {
    pub header: Header,
    pub certificate: CommitCertificate,
    /// The proven key's bytes (`StateKey::bytes`).
    pub key: Vec<u8>,
    /// Its value, canonically encoded; None: absent.
    pub value: Option<Vec<u8>>,
    pub proof: Vec<u8>,
    pub meta: Vec<u8>,
    pub meta_proof: Vec<u8>,
}

/// A verified answer.
#[derive(Debug)]
pub struct Verified {
    pub height: Height,
    pub value: Option<Vec<u8>>,
    /// Power of the trusted validators among the certificate's signers, of their total.
    pub trusted_power: (u64, u64),
}

fn bad(reason: impl Into<String>) -> Error {
    Error::BadProof(reason.into())
}

/// Checks `bundle` for `key` on `chain` against the `trusted` validators.
pub fn verify(bundle: &ProofBundle, key: &StateKey, chain: &ChainId, trusted: &[Validator]) -> Result<Verified, Error> {
    let header = &bundle.header;
    if header.chain_id != *chain {
        return Err(bad(format!("the header is for chain {}, not {chain}", header.chain_id)));
    }
    if bundle.key != key.bytes() {
        return Err(bad("the proof is for another key"));
    }
    // 1. The validators that decided the block, from the state it committed to.
    let meta_proof = crate::tree::decode_proof(&bundle.meta_proof)?;
    crate::tree::verify_proof(header.state_root, &StateKey::Meta, Some(&bundle.meta), &meta_proof)?;
    let meta: Meta = crate::tree::decode_canonical(&bundle.meta)?;
    if meta.chain_id != *chain || meta.height != header.height {
        return Err(bad("the state's meta leaf names another chain or height"));
    }
    // 2. More than 2/3 of them signed this header.
    let set = ConsensusValidatorSet::new(meta.last_validators.iter().map(|v| (v.address, v.power)));
    verify_commit(chain, &set, &bundle.certificate, header.height, header.hash())
        .map_err(|e| bad(format!("certificate: {e}")))?;
    // 3. Enough of them are validators the client trusts.
    let signers: std::collections::BTreeSet<Address> =
        bundle.certificate.signatures.iter().map(|s| s.validator).collect();
    let total: u64 = trusted.iter().map(|v| v.power).fold(0, u64::saturating_add);
    let vouching: u64 =
        trusted.iter().filter(|v| signers.contains(&v.address)).map(|v| v.power).fold(0, u64::saturating_add);
    if total == 0 || u128::from(vouching) * 3 <= u128::from(total) {
        return Err(Error::TooFewTrustedSigners { vouching, total });
    }
    // 4. The value is in the committed state.
    let proof = crate::tree::decode_proof(&bundle.proof)?;
    crate::tree::verify_proof(header.state_root, key, bundle.value.as_deref(), &proof)?;
    Ok(Verified { height: header.height, value: bundle.value.clone(), trusted_power: (vouching, total) })
}

/// The light-client transition of a block that changed the validator set:
/// its header and certificate, and the state's meta leaf (the new set) as
/// the proven value.
pub fn transition(
    header: Header,
    certificate: CommitCertificate,
    meta: Vec<u8>,
    proof: &crate::tree::Proof,
) -> ProofBundle {
    let proof = crate::tree::encode_proof(proof);
    ProofBundle {
        header,
        certificate,
        key: StateKey::Meta.bytes(),
        value: Some(meta.clone()),
        proof: proof.clone(),
        meta,
        meta_proof: proof,
    }
}

/// Where following the validator set left the client.
#[derive(Debug)]
pub struct Followed {
    /// The validators trusted now: the set named by the last transition taken.
    pub validators: Vec<Validator>,
    /// The height that set was learned at (0: the trusted set was kept).
    pub height: Height,
    /// Transitions taken.
    pub taken: usize,
}

/// Follows the validator set from `trusted` (learned at `from`) through
/// `transitions` — meta-leaf bundles of the blocks that changed the set,
/// in ascending height — by skipping verification with bisection: the
/// newest transition is tried first; one the trusted validators do not
/// vouch for (more than 1/3 of their power among its signers) is set aside
/// for the one halfway to it, until a check passes; its set becomes the
/// trusted one, and the search goes on from there. Every transition taken
/// is fully checked (`verify`), and heights must rise, so an old
/// transition cannot walk the client back to a set it has left. Fails when
/// a transition next in line cannot be checked at all.
pub fn follow(
    transitions: &[ProofBundle],
    chain: &ChainId,
    trusted: Vec<Validator>,
    from: Height,
) -> Result<Followed, Error> {
    if transitions.windows(2).any(|w| w[0].header.height >= w[1].header.height) {
        return Err(bad("the validator-set transitions are not in ascending height"));
    }
    let mut at = Followed { validators: trusted, height: from, taken: 0 };
    let mut next = 0;
    while next < transitions.len() {
        let mut candidate = transitions.len() - 1;
        loop {
            let t = &transitions[candidate];
            let checked = if t.header.height <= at.height {
                Err(bad(format!("transition at height {} is not above {}", t.header.height, at.height)))
            } else {
                verify(t, &StateKey::Meta, chain, &at.validators)
            };
            match checked {
                Ok(v) => {
                    let meta: Meta = crate::tree::decode_canonical(v.value.as_deref().unwrap_or_default())?;
                    at.validators = meta.validators;
                    at.height = v.height;
                    at.taken += 1;
                    next = candidate + 1;
                    break;
                }
                Err(e) if candidate == next => return Err(e),
                Err(_) => candidate = next + (candidate - next) / 2,
            }
        }
    }
    Ok(at)
}

/// The trusted validator set a genesis defines (its contents only: no tree is built).
pub fn trusted_from_genesis(genesis: &crate::genesis::Genesis) -> Result<Vec<Validator>, Error> {
    Ok(genesis.data()?.validators)
}

/// Reads the ledger value `T` from a verified answer.
pub fn decode_value<T: serde::de::DeserializeOwned>(value: &[u8]) -> Result<T, Error> {
    crate::tree::decode_canonical(value)
}
