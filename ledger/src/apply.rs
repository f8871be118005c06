//! Applying transactions and blocks: the ledger's only entry points that
//! change state. A block is all-or-nothing: any failing check or transaction
//! rolls the state back to where it was and names the culprit.

use agora_protocol::block::{last_commit_hash, tx_root};
use agora_protocol::sign::verify_batch;
use agora_protocol::{Address, Block, CommitCertificate, Hash, Header, SignedTx, TimestampMs, TxKind};

use crate::accounts;
use crate::error::Error;
use crate::events::Event;
use crate::journal::Mark;
use crate::lease;
use crate::orders::{self, NewOrder};
use crate::provider;
use crate::slashing;
use crate::state::Side;
use crate::state::State;

/// Whether to verify transaction signatures. `Skip` is only for blocks this
/// node already verified (replay from its own store) and for benchmarks.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum SigCheck {
    Verify,
    Skip,
}

/// The result of a committed block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockOutcome {
    pub state_root: Hash,
    pub events: Vec<Event>,
}

/// Applies a block: checks the header against the state, verifies every
/// signature, runs start-of-block work (unbonding releases, lease expiry),
/// applies each transaction in order and checks the header's state root.
/// On any error the state is exactly as before.
pub fn apply_block(state: &mut State, block: &Block, sig: SigCheck) -> Result<BlockOutcome, Error> {
    let mark = state.checkpoint();
    match apply_block_pending(state, block, sig).and_then(|outcome| finish_block(state, block).map(|_| outcome)) {
        Ok(outcome) => Ok(outcome),
        Err(e) => {
            state.rollback(mark);
            Err(e)
        }
    }
}

/// Applies a block but keeps its writes in the journal, so the store can
/// persist it first and then `finish_block` or roll back.
pub(crate) fn apply_block_pending(state: &mut State, block: &Block, sig: SigCheck) -> Result<BlockOutcome, Error> {
    apply_block_inner(state, block, sig)
}

/// Makes a pending block final: its tree nodes are written, the block
/// becomes the state's tip. On error (the tree's store failed) nothing of
/// the state changed and the caller rolls the block back.
pub(crate) fn finish_block(state: &mut State, block: &Block) -> Result<(), Error> {
    state.commit_tree()?;
    state.last_block_hash = block.hash();
    state.commit_journal();
    debug_assert!(state.audit().is_ok(), "invariant broken after block {}", block.header.height);
    Ok(())
}

fn apply_block_inner(state: &mut State, block: &Block, sig: SigCheck) -> Result<BlockOutcome, Error> {
    let h = &block.header;
    check_header(state, h, block.txs.len())?;
    if tx_root(&block.txs)? != h.tx_root {
        return Err(Error::TxRootMismatch);
    }
    // Every path (consensus, sync, replay) goes through here: a block whose
    // carried certificate is not the one its header commits to is refused.
    if last_commit_hash(block.last_commit.as_ref()) != h.last_commit_hash {
        return Err(Error::LastCommitMismatch);
    }
    if sig == SigCheck::Verify {
        verify_tx_signatures(state, &block.txs)?;
    }
    let mut events = begin_block(state, h)?;
    for (index, tx) in block.txs.iter().enumerate() {
        let tx_events =
            execute(state, tx).map_err(|e| Error::InBlock { index, kind: tx.body.kind.name(), source: Box::new(e) })?;
        events.extend(tx_events);
    }
    events.extend(accounts::fees_paid(h.proposer, &block.txs));
    events.extend(end_block(state)?);
    let computed = state.root();
    if computed != h.state_root {
        return Err(Error::StateRootMismatch { header: h.state_root, computed });
    }
    Ok(BlockOutcome { state_root: computed, events })
}

fn check_header(state: &State, h: &Header, tx_count: usize) -> Result<(), Error> {
    if h.chain_id != *state.chain_id() {
        return Err(Error::WrongChain { expected: state.chain_id().clone(), found: h.chain_id.clone() });
    }
    if h.height != state.height().next() {
        return Err(Error::WrongHeight { expected: state.height().next(), found: h.height });
    }
    if h.parent_hash != state.last_block_hash() {
        return Err(Error::WrongParent { expected: state.last_block_hash(), found: h.parent_hash });
    }
    if h.time_ms <= state.time_ms() {
        return Err(Error::TimeNotIncreasing { previous: state.time_ms(), found: h.time_ms });
    }
    if tx_count as u64 > state.params().max_txs_per_block {
        return Err(Error::TooManyTxs { count: tx_count, max: state.params().max_txs_per_block });
    }
    if !state.is_validator(&h.proposer) {
        return Err(Error::ProposerNotValidator);
    }
    Ok(())
}

/// Batch-verifies the signatures of all transactions of a block.
fn verify_tx_signatures(state: &State, txs: &[SignedTx]) -> Result<(), Error> {
    verify_tx_signatures_where(state, txs, |_| true)
}

/// Batch-verifies the signatures of the transactions `needs` selects (the
/// consensus engine skips those its mempool already verified).
pub(crate) fn verify_tx_signatures_where(
    state: &State,
    txs: &[SignedTx],
    needs: impl Fn(&SignedTx) -> bool,
) -> Result<(), Error> {
    let mut items = Vec::with_capacity(txs.len());
    let mut indices = Vec::with_capacity(txs.len());
    for (i, tx) in txs.iter().enumerate().filter(|(_, tx)| needs(tx)) {
        items.push(tx.batch_item(state.chain_id())?);
        indices.push(i);
    }
    verify_batch(&items).map_err(|k| {
        let index = indices[k];
        Error::InBlock {
            index,
            kind: txs[index].body.kind.name(),
            source: Box::new(Error::BadSignature("transaction signature does not match its sender".into())),
        }
    })
}

/// Start-of-block work, before any transaction: the block's height and time
/// take effect, due unbonding is released and ended leases settle in full.
fn begin_block(state: &mut State, h: &Header) -> Result<Vec<Event>, Error> {
    state.set_head(h.height, h.time_ms, h.proposer);
    state.note_deciding_validators();
    let mut events = accounts::release_unbonding(state)?;
    events.extend(lease::expire_due(state)?);
    lease::prune_settled(state);
    crate::clearing::prune_old_auctions(state);
    Ok(events)
}

/// End-of-block work, after every transaction: auctions clear (at the end
/// of each auction period), then the validator set rotates (at epochs).
fn end_block(state: &mut State) -> Result<Vec<Event>, Error> {
    let mut events = crate::clearing::end_block(state)?;
    events.extend(crate::validators::end_block(state));
    Ok(events)
}

/// Applies one transaction whose signature is already checked. On error the
/// caller rolls back; handlers may leave partial writes behind.
fn execute(state: &mut State, tx: &SignedTx) -> Result<Vec<Event>, Error> {
    tx.body.validate()?;
    let sender = tx.signer;
    let mut acct = state.account(&sender);
    if tx.body.nonce != acct.nonce {
        return Err(Error::WrongNonce { expected: acct.nonce, found: tx.body.nonce });
    }
    let min = state.params().min_tx_fee;
    if tx.body.fee < min {
        return Err(Error::FeeTooLow { min, found: tx.body.fee });
    }
    acct.nonce = acct.nonce.checked_add(1).ok_or(Error::Overflow("nonce"))?;
    state.set_account(sender, acct);
    // The fee moves to the block's proposer before anything else: tokens
    // change hands, none are minted or burned, and a sender that cannot pay
    // it gets nothing done.
    accounts::transfer(state, sender, state.proposer(), tx.body.fee)?;
    dispatch(state, sender, &tx.body.kind)
}

fn dispatch(state: &mut State, sender: Address, kind: &TxKind) -> Result<Vec<Event>, Error> {
    match kind {
        TxKind::Transfer { to, amount } => accounts::transfer(state, sender, *to, *amount),
        TxKind::Stake { amount } => accounts::stake(state, sender, *amount),
        TxKind::Unstake { amount } => accounts::unstake(state, sender, *amount),
        TxKind::RegisterProvider { region, gpus } => provider::register(state, sender, region, gpus),
        TxKind::OpenLease { request, accept } => lease::open(state, sender, request, accept),
        TxKind::CloseLease { lease_id, exit_code } => lease::close(state, sender, *lease_id, *exit_code),
        TxKind::CancelLease { lease_id } => lease::cancel(state, sender, *lease_id),
        TxKind::SlashDowntime { evidence } => slashing::slash_downtime(state, evidence),
        TxKind::SlashEquivocation { evidence } => slashing::slash_equivocation(state, evidence),
        TxKind::Unjail => provider::unjail(state, sender),
        TxKind::SetOperator { operator } => provider::set_operator(state, sender, *operator),
        TxKind::PlaceBid { class, gpus, hours, max_price, split, start_hours } => {
            let new = NewOrder {
                class,
                side: Side::Bid,
                gpus: *gpus,
                hours: *hours,
                price: *max_price,
                split: *split,
                start_hours: *start_hours,
            };
            orders::place(state, sender, new)
        }
        TxKind::PlaceAsk { class, gpus, hours, min_price } => {
            let new = NewOrder {
                class,
                side: Side::Ask,
                gpus: *gpus,
                hours: *hours,
                price: *min_price,
                split: false,
                start_hours: 0,
            };
            orders::place(state, sender, new)
        }
        TxKind::CancelOrder { order } => orders::cancel(state, sender, *order),
        TxKind::AmendOrder { order, price } => orders::amend(state, sender, *order, *price),
        TxKind::TransferLease { lease_id, to } => lease::transfer(state, sender, *lease_id, *to),
        TxKind::ListLease { lease_id, price } => lease::list(state, sender, *lease_id, *price),
        TxKind::BuyLease { lease_id, max_price } => lease::buy(state, sender, *lease_id, *max_price),
        TxKind::ExtendLease { lease_id, hours, max_cost } => lease::extend(state, sender, *lease_id, *hours, *max_cost),
    }
}

/// Applies one transaction on top of the current state (for the mempool and
/// the block builder): verifies its signature, then executes it. On error
/// nothing changes; on success its writes stay in the journal until the caller
/// commits or rolls back.
pub fn apply_tx(state: &mut State, tx: &SignedTx, sig: SigCheck) -> Result<Vec<Event>, Error> {
    if sig == SigCheck::Verify {
        tx.verify(state.chain_id()).map_err(|e| Error::BadSignature(e.to_string()))?;
    }
    let mark = state.checkpoint();
    execute(state, tx).inspect_err(|_| state.rollback(mark))
}

/// Builds the next block from candidate transactions: applies each in order,
/// leaves out those that fail (returned with their errors), computes the
/// post-state root and returns the block. The state is left unchanged; the
/// block is committed later through `apply_block`.
pub fn build_block(
    state: &mut State,
    candidates: Vec<SignedTx>,
    time_ms: TimestampMs,
    proposer: Address,
    last_commit: Option<CommitCertificate>,
) -> Result<(Block, Vec<(SignedTx, Error)>), Error> {
    let mut builder = BlockBuilder::new(state, time_ms, proposer)?;
    let mut rejected = Vec::new();
    for tx in candidates {
        if builder.is_full() {
            break;
        }
        if let Err(e) = builder.push(tx.clone()) {
            rejected.push((tx, e));
        }
    }
    Ok((builder.finish(last_commit)?, rejected))
}

/// Assembles the next block on top of a state, one transaction at a time.
/// Everything it applies is rolled back when it is finished or dropped: the
/// block is committed later, through `apply_block`, like any other.
pub struct BlockBuilder<'a> {
    state: &'a mut State,
    mark: Mark,
    header: Header,
    txs: Vec<SignedTx>,
    /// Encoded bytes of the transactions so far.
    tx_bytes: usize,
    /// What applying the block so far produced, in `apply_block`'s order.
    events: Vec<Event>,
    /// Most encoded transaction bytes the block may carry.
    tx_bytes_budget: usize,
}

/// Room kept in a block for everything but its transactions: the header, the
/// previous block's certificate (at most 100 signatures), the proposal's
/// signature and framing. The transactions get the rest of `MAX_BLOCK_BYTES`,
/// so a proposer never builds a block it cannot encode.
pub const BLOCK_OVERHEAD_BYTES: usize = 64 * 1024;
/// Transaction bytes a block may carry.
pub const BLOCK_TX_BYTES_BUDGET: usize = agora_protocol::limits::MAX_BLOCK_BYTES - BLOCK_OVERHEAD_BYTES;

impl<'a> BlockBuilder<'a> {
    /// Starts the block after the state's tip at `time_ms`, proposed by `proposer`.
    pub fn new(state: &'a mut State, time_ms: TimestampMs, proposer: Address) -> Result<BlockBuilder<'a>, Error> {
        let header = Header {
            chain_id: state.chain_id().clone(),
            height: state.height().next(),
            time_ms,
            parent_hash: state.last_block_hash(),
            last_commit_hash: Hash::ZERO,
            tx_root: Hash::ZERO,
            state_root: Hash::ZERO,
            proposer,
        };
        check_header(state, &header, 0)?;
        let mark = state.checkpoint();
        let events = begin_block(state, &header).inspect_err(|_| state.rollback(mark))?;
        Ok(BlockBuilder {
            state,
            mark,
            header,
            txs: Vec::new(),
            tx_bytes: 0,
            events,
            tx_bytes_budget: BLOCK_TX_BYTES_BUDGET,
        })
    }

    /// A smaller transaction byte budget (tests of the budget itself).
    pub fn with_tx_bytes_budget(mut self, budget: usize) -> Self {
        self.tx_bytes_budget = budget.min(BLOCK_TX_BYTES_BUDGET);
        self
    }

    /// Whether the block holds the most transactions the parameters allow.
    pub fn is_full(&self) -> bool {
        self.txs.len() as u64 >= self.state.params().max_txs_per_block
    }

    /// Adds a transaction if it applies; on error the state is unchanged.
    pub fn push(&mut self, tx: SignedTx) -> Result<Vec<Event>, Error> {
        self.push_checked(tx, SigCheck::Verify)
    }

    /// Adds a transaction whose signature the caller already verified (the
    /// mempool checks every transaction on entry); on error nothing changes.
    pub fn push_verified(&mut self, tx: SignedTx) -> Result<Vec<Event>, Error> {
        self.push_checked(tx, SigCheck::Skip)
    }

    fn push_checked(&mut self, tx: SignedTx, sig: SigCheck) -> Result<Vec<Event>, Error> {
        if self.is_full() {
            return Err(Error::TooManyTxs { count: self.txs.len() + 1, max: self.state.params().max_txs_per_block });
        }
        // Bytes first: a transaction that does not fit is left for a later block, not applied.
        let size = agora_protocol::codec::encoded_len(&tx)?;
        if self.tx_bytes + size > self.tx_bytes_budget {
            return Err(Error::BlockBytes { size, used: self.tx_bytes, budget: self.tx_bytes_budget });
        }
        let events = apply_tx(self.state, &tx, sig)?;
        self.tx_bytes += size;
        self.txs.push(tx);
        self.events.extend(events.iter().cloned());
        Ok(events)
    }

    /// The state with the block's transactions so far applied.
    pub fn state(&self) -> &State {
        self.state
    }

    /// Seals the block: transaction root, post-state root, certificate.
    pub fn finish(mut self, last_commit: Option<CommitCertificate>) -> Result<Block, Error> {
        self.seal(last_commit)
    }

    /// Seals the block and leaves the state as applying it leaves it (its
    /// writes pending, as `apply_block_pending` would): the proposer keeps
    /// that state and commits it if the block is decided, instead of
    /// applying its own block again. Returns the block's events.
    pub(crate) fn finish_applied(
        mut self,
        last_commit: Option<CommitCertificate>,
    ) -> Result<(Block, Vec<Event>), Error> {
        let block = self.seal(last_commit)?;
        self.mark = self.state.checkpoint();
        Ok((block, std::mem::take(&mut self.events)))
    }

    fn seal(&mut self, last_commit: Option<CommitCertificate>) -> Result<Block, Error> {
        let end = end_block(self.state)?;
        self.events.extend(accounts::fees_paid(self.header.proposer, &self.txs));
        self.events.extend(end);
        self.header.last_commit_hash = last_commit_hash(last_commit.as_ref());
        self.header.tx_root = tx_root(&self.txs)?;
        self.header.state_root = self.state.root();
        let txs = std::mem::take(&mut self.txs);
        Ok(Block { header: self.header.clone(), txs, last_commit })
    }
}

impl Drop for BlockBuilder<'_> {
    fn drop(&mut self) {
        self.state.rollback(self.mark);
    }
}

#[cfg(test)]
mod tests {
    use agora_protocol::{Amount, TxKind};

    use super::*;
    use crate::testkit::{TestChain, sign_tx, transfer};

    #[test]
    fn a_built_block_leaves_the_state_and_events_that_applying_it_gives() {
        let chain = TestChain::new(4, 1, Amount::agr(1_000));
        let state = chain.state();
        let txs = vec![
            transfer(&chain.keys[1], 0, chain.address(2), Amount(5)),
            sign_tx(&chain.keys[2], 0, TxKind::Stake { amount: Amount::agr(10) }),
            // Left out: a replayed nonce.
            transfer(&chain.keys[1], 0, chain.address(3), Amount(5)),
            sign_tx(&chain.keys[0], 0, TxKind::Unstake { amount: Amount::agr(1) }),
        ];
        let mut built = state.clone();
        let time = TimestampMs(state.time_ms().0 + crate::testkit::BLOCK_INTERVAL_MS);
        let mut builder = BlockBuilder::new(&mut built, time, chain.address(0)).unwrap();
        for tx in txs {
            let _ = builder.push(tx);
        }
        let (block, events) = builder.finish_applied(None).unwrap();
        assert_eq!(block.txs.len(), 3);
        let mut applied = state.clone();
        let outcome = apply_block_pending(&mut applied, &block, SigCheck::Verify).unwrap();
        assert!(!events.is_empty());
        assert_eq!(events, outcome.events);
        assert_eq!(built, applied);
        assert_eq!(built.root(), block.header.state_root);
        finish_block(&mut built, &block).unwrap();
        assert_eq!(built.height(), block.header.height);
        assert_eq!(built.last_block_hash(), block.hash());
    }
}
