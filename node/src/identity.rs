//! The node's libp2p identity is its account key: the same ed25519 secret
//! gives the PeerId and the agora address, so a peer's messages and its
//! on-chain account cannot be told apart or split.

use agora_protocol::{Address, Keypair};
use libp2p_identity::{PeerId, PublicKey};

use crate::error::Error;

/// The libp2p key pair for an agora key (same secret, same public key).
pub fn libp2p_keypair(key: &Keypair) -> Result<libp2p_identity::Keypair, Error> {
    let mut secret = key.secret_bytes();
    libp2p_identity::Keypair::ed25519_from_bytes(secret.as_mut())
        .map_err(|e| Error::Identity(format!("ed25519 secret rejected by libp2p: {e}")))
}

/// The PeerId of the node that owns `key`.
pub fn peer_id(key: &Keypair) -> Result<PeerId, Error> {
    Ok(libp2p_keypair(key)?.public().to_peer_id())
}

/// The peer id of the node whose account is `address` (the same ed25519 key).
pub fn peer_of(address: &Address) -> Result<PeerId, Error> {
    let ed = libp2p_identity::ed25519::PublicKey::try_from_bytes(&address.0)
        .map_err(|e| Error::Identity(format!("{address} is not an ed25519 key: {e}")))?;
    Ok(PublicKey::from(ed).to_peer_id())
}

/// The agora address of a libp2p peer's public key, if it is ed25519.
pub fn address_of(public: &PublicKey) -> Result<Address, Error> {
    let ed = public.clone().try_into_ed25519().map_err(|_| Error::Identity("peer key is not ed25519".into()))?;
    Ok(Address(ed.to_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_id_and_address_come_from_one_key() {
        let key = Keypair::from_seed_phrase("node-0");
        let lp = libp2p_keypair(&key).unwrap();
        assert_eq!(address_of(&lp.public()).unwrap(), key.address());
        assert_eq!(peer_id(&key).unwrap(), lp.public().to_peer_id());
        assert_eq!(peer_of(&key.address()).unwrap(), lp.public().to_peer_id(), "a provider's address names its peer");
        let other = Keypair::from_seed_phrase("node-1");
        assert_ne!(peer_id(&key).unwrap(), peer_id(&other).unwrap());
    }

    #[test]
    fn libp2p_signatures_verify_as_agora_address_keys() {
        let key = Keypair::from_seed_phrase("node-0");
        let sig = libp2p_keypair(&key).unwrap().sign(b"message").unwrap();
        let vk = key.address().verifying_key().unwrap();
        let sig = ed25519_dalek::Signature::from_slice(&sig).unwrap();
        assert!(vk.verify_strict(b"message", &sig).is_ok());
    }
}
