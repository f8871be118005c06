//! Fixtures shared by the ledger's tests, benchmarks and crash-test writer:
//! deterministic keys, a genesis, signed transactions and block building.
//! Never used on a real network: the keys derive from public names.

use agora_protocol::consensus::{Vote, VoteKind};
use agora_protocol::{
    Address, Amount, Block, ChainId, CommitCertificate, CommitSig, Keypair, Signed, SignedTx, TimestampMs, Transaction,
    TxKind,
};

use crate::apply::build_block;
use crate::error::Error;
use crate::genesis::{Genesis, GenesisAccount};
use crate::params::Params;
use crate::state::State;

/// Milliseconds between consecutive test blocks.
pub const BLOCK_INTERVAL_MS: u64 = 1_000;
/// Genesis time of test chains: 2026-01-01T00:00:00Z.
pub const GENESIS_TIME_MS: u64 = 1_767_225_600_000;

/// A test network: `n` funded accounts, the first `validators` of them staked validators.
#[derive(Clone, Debug)]
pub struct TestChain {
    pub keys: Vec<Keypair>,
    pub genesis: Genesis,
}

impl TestChain {
    pub fn new(accounts: usize, validators: usize, balance: Amount) -> TestChain {
        let keys: Vec<Keypair> =
            (0..accounts).map(|i| Keypair::from_seed_phrase(&format!("agora-test-account-{i}"))).collect();
        let genesis = Genesis {
            chain_id: chain_id(),
            genesis_time_ms: TimestampMs(GENESIS_TIME_MS),
            params: Params::default(),
            accounts: keys
                .iter()
                .enumerate()
                .map(|(i, k)| GenesisAccount {
                    address: k.address(),
                    balance,
                    stake: if i < validators { Amount::agr(1_000) } else { Amount::ZERO },
                })
                .collect(),
            validators: keys.iter().take(validators).map(Keypair::address).collect(),
        };
        TestChain { keys, genesis }
    }

    pub fn state(&self) -> State {
        // The fixture genesis is valid by construction.
        self.genesis.state().expect("test genesis is valid")
    }

    pub fn address(&self, i: usize) -> Address {
        self.keys[i].address()
    }

    /// Builds the next block on `state` from `txs`, proposed by a current validator,
    /// one block interval after the current block time. Rejected candidates
    /// are left out.
    pub fn next_block(&self, state: &mut State, txs: Vec<SignedTx>) -> Result<Block, Error> {
        let time = TimestampMs(state.time_ms().0 + BLOCK_INTERVAL_MS);
        // Any current validator may propose as far as the ledger is concerned.
        let proposer = state.validators().first().map_or(self.address(0), |v| v.address);
        let (block, _rejected) = build_block(state, txs, time, proposer, None)?;
        Ok(block)
    }

    /// A commit certificate for `block` signed by the first `signers` keys
    /// (the validators, when `signers` is at most their number).
    pub fn certificate(&self, block: &Block, signers: usize) -> CommitCertificate {
        certify(block, &self.keys[..signers])
    }
}

/// The chain id of every test chain.
pub fn chain_id() -> ChainId {
    // A constant valid id.
    ChainId::new("agora-test-1").expect("valid chain id")
}

/// The fee test transactions pay: the default chain minimum.
pub const TEST_FEE: Amount = crate::params::DEFAULT_MIN_TX_FEE;

/// Signs a transaction for the test chain.
pub fn sign_tx(key: &Keypair, nonce: u64, kind: TxKind) -> SignedTx {
    // Signing plain in-memory data cannot fail.
    Signed::sign(Transaction { nonce, fee: TEST_FEE, kind }, key, &chain_id()).expect("signing succeeds")
}

/// A signed transfer.
pub fn transfer(key: &Keypair, nonce: u64, to: Address, amount: Amount) -> SignedTx {
    sign_tx(key, nonce, TxKind::Transfer { to, amount })
}

/// A commit certificate for `block` of a test chain, signed by `signers`.
pub fn certify(block: &Block, signers: &[Keypair]) -> CommitCertificate {
    let vote = Vote { kind: VoteKind::Precommit, height: block.header.height, round: 0, block: Some(block.hash()) };
    let signatures = signers
        .iter()
        .map(|k| {
            // Signing plain in-memory data cannot fail.
            let s = Signed::sign(vote.clone(), k, &chain_id()).expect("signing succeeds");
            CommitSig { validator: s.signer, signature: s.signature }
        })
        .collect();
    CommitCertificate { height: block.header.height, round: 0, block_hash: block.hash(), signatures }
}
