//! Ed25519 verification by the rules of ZIP-215, one equation for single and
//! batch checks, so every node reaches the same verdict on a signature
//! whether it checked it alone (mempool, gossip) or inside a batch (a
//! block), and whatever else happened to be in that batch.
//!
//! ed25519-dalek's `verify_strict` (cofactorless, canonical R, small-order R
//! and A refused) and its batch verifier (cofactorless with random
//! coefficients) disagree on signatures with a small-order component, and the
//! batch verdict can even depend on the batch's other members. ZIP-215 fixes
//! one set of rules: A and R are decoded even from non-canonical encodings,
//! s must be canonical (< ℓ), k = SHA-512(R ‖ A ‖ M) over the bytes as given,
//! and the check is cofactored: [8]([s]B − R − [k]A) = 0. A batch checks
//! [8](Σ zᵢ([sᵢ]B − Rᵢ − [kᵢ]Aᵢ)) = 0 with 128-bit zᵢ derived from the whole
//! batch; with the cofactor, a batch passes exactly when every member passes
//! (but for a 2⁻¹²⁸ chance no one can steer).
//!
//! One rule on top of ZIP-215: a public key of small order is refused. Anyone
//! can sign for such a key ([8]A = 0 makes k irrelevant), so no account may
//! be one; the rule depends on the key alone and applies to both paths.

use curve25519_dalek::constants::ED25519_BASEPOINT_POINT;
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::{IsIdentity, VartimeMultiscalarMul};
use sha2::{Digest, Sha512};

/// Why a signature does not verify.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Zip215Error {
    /// The public key does not decode to a curve point.
    BadKey,
    /// The public key is a point of small order: anyone could sign for it.
    SmallOrderKey,
    /// R does not decode to a curve point.
    BadR,
    /// s is not below the group order.
    NonCanonicalS,
    /// The verification equation does not hold.
    Mismatch,
}

/// A signature prepared for the equation: decoded points, s, and k.
struct Prepared {
    a: EdwardsPoint,
    r: EdwardsPoint,
    s: Scalar,
    k: Scalar,
}

/// Decoded public keys kept at most. Decoding a point (a square root in
/// the field) is a third of a signature check, and the same few thousand
/// accounts sign most transactions; past the bound the cache starts over.
pub const KEY_CACHE_ENTRIES: usize = 16_384;

type KeyCache = std::collections::HashMap<[u8; 32], Result<EdwardsPoint, Zip215Error>>;

/// A public key decoded, small-order keys refused: remembered, since the
/// verdict depends on the 32 bytes alone.
fn decode_key(key: &[u8; 32]) -> Result<EdwardsPoint, Zip215Error> {
    static CACHE: std::sync::OnceLock<std::sync::Mutex<KeyCache>> = std::sync::OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(hit) = cache.lock().ok().and_then(|c| c.get(key).copied()) {
        return hit;
    }
    let decoded = match CompressedEdwardsY(*key).decompress() {
        None => Err(Zip215Error::BadKey),
        Some(a) if a.is_small_order() => Err(Zip215Error::SmallOrderKey),
        Some(a) => Ok(a),
    };
    if let Ok(mut c) = cache.lock() {
        if c.len() >= KEY_CACHE_ENTRIES {
            c.clear();
        }
        c.insert(*key, decoded);
    }
    decoded
}

fn prepare(key: &[u8; 32], msg: &[u8], sig: &[u8; 64], refuse_small_keys: bool) -> Result<Prepared, Zip215Error> {
    let a = if refuse_small_keys {
        decode_key(key)?
    } else {
        CompressedEdwardsY(*key).decompress().ok_or(Zip215Error::BadKey)?
    };
    let mut r_bytes = [0u8; 32];
    r_bytes.copy_from_slice(&sig[..32]);
    let r = CompressedEdwardsY(r_bytes).decompress().ok_or(Zip215Error::BadR)?;
    let mut s_bytes = [0u8; 32];
    s_bytes.copy_from_slice(&sig[32..]);
    let s = Option::<Scalar>::from(Scalar::from_canonical_bytes(s_bytes)).ok_or(Zip215Error::NonCanonicalS)?;
    let k = Scalar::from_hash(Sha512::new().chain_update(r_bytes).chain_update(key).chain_update(msg));
    Ok(Prepared { a, r, s, k })
}

fn check(p: &Prepared) -> Result<(), Zip215Error> {
    // [s]B − [k]A − R, then times the cofactor.
    let sb_minus_ka = EdwardsPoint::vartime_double_scalar_mul_basepoint(&p.k, &(-p.a), &p.s);
    if (sb_minus_ka - p.r).mul_by_cofactor().is_identity() { Ok(()) } else { Err(Zip215Error::Mismatch) }
}

/// Verifies one signature (small-order keys refused).
pub fn verify(key: &[u8; 32], msg: &[u8], sig: &[u8; 64]) -> Result<(), Zip215Error> {
    check(&prepare(key, msg, sig, true)?)
}

/// ZIP-215 exactly, small-order keys included: for its test vectors only.
pub fn verify_zip215_only(key: &[u8; 32], msg: &[u8], sig: &[u8; 64]) -> Result<(), Zip215Error> {
    check(&prepare(key, msg, sig, false)?)
}

/// Verifies a batch (each item: key, message, signature). `Err(i)` names an
/// item that fails alone: on a failed batch every item is checked singly,
/// and a batch whose items all pass singly is accepted, since under these
/// rules that is the verdict of each.
pub fn verify_batch(items: &[(&[u8; 32], &[u8], &[u8; 64])]) -> Result<(), usize> {
    let mut prepared = Vec::with_capacity(items.len());
    for (i, (key, msg, sig)) in items.iter().enumerate() {
        prepared.push(prepare(key, msg, sig, true).map_err(|_| i)?);
    }
    if prepared.is_empty() {
        return Ok(());
    }
    // Coefficients from every input, so the batch is a deterministic
    // function of its contents and no signer can choose its own.
    let mut transcript = blake3::Hasher::new_derive_key("agora zip215 batch coefficients v1");
    for (key, msg, sig) in items {
        transcript.update(&key[..]);
        transcript.update(&(msg.len() as u64).to_le_bytes());
        transcript.update(msg);
        transcript.update(&sig[..]);
    }
    let mut xof = transcript.finalize_xof();
    let zs: Vec<Scalar> = prepared
        .iter()
        .map(|_| {
            let mut z = [0u8; 16];
            xof.fill(&mut z);
            Scalar::from(u128::from_le_bytes(z))
        })
        .collect();
    let b_coefficient: Scalar = prepared.iter().zip(&zs).map(|(p, z)| z * p.s).sum();
    let scalars =
        std::iter::once(-b_coefficient).chain(zs.iter().copied()).chain(prepared.iter().zip(&zs).map(|(p, z)| z * p.k));
    let points = std::iter::once(ED25519_BASEPOINT_POINT)
        .chain(prepared.iter().map(|p| p.r))
        .chain(prepared.iter().map(|p| p.a));
    // −Σz·s·B + Σz·R + Σz·k·A must vanish up to torsion.
    if EdwardsPoint::vartime_multiscalar_mul(scalars, points).mul_by_cofactor().is_identity() {
        return Ok(());
    }
    match prepared.iter().position(|p| check(p).is_err()) {
        Some(i) => Err(i),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use curve25519_dalek::constants::EIGHT_TORSION;

    use super::*;
    use crate::keys::Keypair;

    /// The 8 canonical encodings of the 8-torsion points, then the 6
    /// non-canonical encodings of low-order points: x = 0 with the sign bit
    /// set (y = 1 and y = −1), and y + p for the small y that fit in 255 bits
    /// (y = 0 and y = 1, either sign).
    fn low_order_encodings() -> Vec<[u8; 32]> {
        let canonical: Vec<[u8; 32]> = EIGHT_TORSION.iter().map(|p| p.compress().to_bytes()).collect();
        let mut candidates: Vec<[u8; 32]> = canonical
            .iter()
            .map(|e| {
                let mut flipped = *e;
                flipped[31] ^= 0x80;
                flipped
            })
            .collect();
        for i in 0..19u8 {
            // p + i, little-endian: 0x7fff…ffed + i, then with the sign bit.
            let mut y = [0xffu8; 32];
            y[0] = 0xed + i;
            y[31] = 0x7f;
            candidates.push(y);
            y[31] = 0xff;
            candidates.push(y);
        }
        let non_canonical: Vec<[u8; 32]> = candidates
            .into_iter()
            .filter(|e| {
                CompressedEdwardsY(*e).decompress().is_some_and(|p| p.is_small_order() && p.compress().to_bytes() != *e)
            })
            .collect();
        assert_eq!(non_canonical.len(), 6, "ZIP-215 lists six low-order non-canonical encodings");
        canonical.into_iter().chain(non_canonical).collect()
    }

    /// The 196 ZIP-215 vectors: every low-order A with every low-order R, s = 0, message "Zcash".
    fn zip215_vectors() -> Vec<([u8; 32], [u8; 64])> {
        let encodings = low_order_encodings();
        let mut out = Vec::new();
        for a in &encodings {
            for r in &encodings {
                let mut sig = [0u8; 64];
                sig[..32].copy_from_slice(r);
                out.push((*a, sig));
            }
        }
        out
    }

    #[test]
    fn the_196_zip215_vectors_verify_by_the_equation_and_single_and_batch_agree() {
        let vectors = zip215_vectors();
        assert_eq!(vectors.len(), 196);
        for (a, sig) in &vectors {
            assert_eq!(verify_zip215_only(a, b"Zcash", sig), Ok(()), "A {} sig {}", hex::encode(a), hex::encode(sig));
            // Our rule on top: every one of these keys is small-order, refused both ways.
            assert_eq!(verify(a, b"Zcash", sig), Err(Zip215Error::SmallOrderKey));
            assert_eq!(verify_batch(&[(a, &b"Zcash"[..], sig)]), Err(0));
        }
    }

    #[test]
    fn ordinary_signatures_pass_and_tampering_fails_alone_and_in_any_batch() {
        let keys: Vec<Keypair> = (0..16).map(|i| Keypair::from_seed_phrase(&format!("zip215-{i}"))).collect();
        let msgs: Vec<[u8; 32]> = (0..16u8).map(|i| [i; 32]).collect();
        let sigs: Vec<[u8; 64]> = keys.iter().zip(&msgs).map(|(k, m)| k.sign_digest(m).0).collect();
        let addrs: Vec<[u8; 32]> = keys.iter().map(|k| k.address().0).collect();
        let items: Vec<(&[u8; 32], &[u8], &[u8; 64])> = (0..16).map(|i| (&addrs[i], &msgs[i][..], &sigs[i])).collect();
        for it in &items {
            assert_eq!(verify(it.0, it.1, it.2), Ok(()));
        }
        assert_eq!(verify_batch(&items), Ok(()));
        // A key with a torsion component (A = [a]B + T, T of order 8) signing
        // honestly: [s]B − R − [k]A = −[k]T, which only the cofactored equation
        // accepts. ZIP-215 accepts it alone and in every batch, whatever else
        // the batch holds (a cofactorless batch would let its other members
        // decide).
        let secret = Scalar::from_bytes_mod_order([7; 32]);
        let mixed_key = (ED25519_BASEPOINT_POINT * secret + EIGHT_TORSION[1]).compress().to_bytes();
        let nonce = Scalar::from_bytes_mod_order([9; 32]);
        let r_point = (ED25519_BASEPOINT_POINT * nonce).compress().to_bytes();
        let msg = [42u8; 32];
        let k = Scalar::from_hash(Sha512::new().chain_update(r_point).chain_update(mixed_key).chain_update(msg));
        let mut residue_sig = [0u8; 64];
        residue_sig[..32].copy_from_slice(&r_point);
        residue_sig[32..].copy_from_slice((nonce + k * secret).as_bytes());
        assert_eq!(verify(&mixed_key, &msg, &residue_sig), Ok(()));
        for n in 0..=16 {
            let mut batch: Vec<_> = items[..n].to_vec();
            batch.push((&mixed_key, &msg[..], &residue_sig));
            assert_eq!(verify_batch(&batch), Ok(()), "batch of {}", n + 1);
        }
        // A changed message, a non-canonical s (s + ℓ), a foreign key: each fails alone and names itself in a batch.
        let mut bad_s = sigs[5];
        let l_plus_s = Scalar::from_canonical_bytes(bad_s[32..].try_into().unwrap()).unwrap();
        let mut wide = l_plus_s.to_bytes();
        add_group_order(&mut wide);
        bad_s[32..].copy_from_slice(&wide);
        assert_eq!(verify(&addrs[5], &msgs[5], &bad_s), Err(Zip215Error::NonCanonicalS));
        assert_eq!(verify(&addrs[6], b"other", &sigs[6]), Err(Zip215Error::Mismatch));
        assert_eq!(verify(&addrs[7], &msgs[8], &sigs[8]), Err(Zip215Error::Mismatch));
        for (pos, bad) in [(2usize, (&addrs[5], &msgs[5][..], &bad_s)), (9, (&addrs[6], &b"other"[..], &sigs[6]))] {
            let mut batch = items.clone();
            batch[pos] = bad;
            assert_eq!(verify_batch(&batch), Err(pos));
        }
    }

    /// Adds the group order ℓ to a little-endian 256-bit number (s < ℓ, so no overflow).
    fn add_group_order(s: &mut [u8; 32]) {
        const L: [u8; 32] = [
            0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14, 0, 0, 0, 0,
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
        ];
        let mut carry = 0u16;
        for i in 0..32 {
            let v = u16::from(s[i]) + u16::from(L[i]) + carry;
            s[i] = v as u8;
            carry = v >> 8;
        }
    }

    #[test]
    fn a_remembered_key_gets_the_same_verdict_as_a_fresh_one() {
        let key = Keypair::from_seed_phrase("zip215 key cache");
        let digest = [5u8; 32];
        let sig = key.sign_digest(&digest).0;
        let a = key.address().0;
        for _ in 0..3 {
            assert_eq!(verify(&a, &digest, &sig), Ok(()));
            let mut forged = sig;
            forged[40] ^= 1;
            assert!(verify(&a, &digest, &forged).is_err());
        }
        for small in low_order_encodings() {
            for _ in 0..2 {
                assert_eq!(verify(&small, &digest, &sig), Err(Zip215Error::SmallOrderKey), "{small:?}");
            }
        }
        let mut not_a_point = [0u8; 32];
        not_a_point[0] = 2;
        assert!(CompressedEdwardsY(not_a_point).decompress().is_none());
        for _ in 0..2 {
            assert_eq!(verify(&not_a_point, &digest, &sig), Err(Zip215Error::BadKey));
        }
    }
}
