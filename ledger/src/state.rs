//! The ledger state: accounts, providers, leases, unbonding and slashing
//! records. Reads are public; writes go through `journal` so a failed
//! transaction or block can be undone exactly.

use std::collections::{BTreeMap, BTreeSet};

use agora_protocol::{Address, Amount, ChainId, GpuClass, GpuSpec, Hash, Height, LeaseId, TimestampMs};
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::events::SettleReason;
use crate::journal::Undo;
use crate::params::Params;

/// The state's maps are persistent (structurally shared): a copy costs a
/// pointer per map, and a copy that writes duplicates only the B-tree nodes
/// on the written paths. The engine's checks, the store and the API each
/// hold "a copy" of the state this way for the price of one
/// (docs/decisions.md).
pub(crate) type Map<K, V> = imbl::OrdMap<K, V>;
/// The set counterpart of `Map`.
pub(crate) type Set<K> = imbl::OrdSet<K>;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// Spendable tokens.
    pub balance: Amount,
    /// Bonded tokens: the security behind a provider or validator.
    pub stake: Amount,
    /// Tokens on their way back from stake; the entries are in the unbonding queue.
    pub unbonding: Amount,
    /// The nonce the next transaction from this account must carry.
    pub nonce: u64,
}

impl Account {
    pub(crate) fn is_empty(&self) -> bool {
        *self == Account::default()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProviderStatus {
    Active,
    /// Slashed for downtime; may send Unjail from this height on.
    Jailed {
        until: Height,
    },
    /// Slashed for equivocation; never comes back.
    Tombstoned,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provider {
    pub region: String,
    pub gpus: Vec<GpuSpec>,
    pub registered_at: Height,
    pub status: ProviderStatus,
    pub slashes: u32,
    /// Paid to it by settled leases (the explorer's earnings, on the ledger).
    pub earned: Amount,
    /// Leases it served to settlement.
    pub leases_served: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LeaseStatus {
    Open,
    Settled { reason: SettleReason, paid: Amount, refunded: Amount, at_ms: TimestampMs, exit_code: Option<i32> },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub id: LeaseId,
    pub buyer: Address,
    pub provider: Address,
    pub gpu_model: String,
    pub gpus: u32,
    pub gpu_ids: Vec<String>,
    pub price_per_gpu_hour: Amount,
    /// Locked from the buyer when the lease opened.
    pub escrow: Amount,
    pub job_spec_hash: Hash,
    pub start_ms: TimestampMs,
    pub end_ms: TimestampMs,
    pub status: LeaseStatus,
}

/// Which side of the exchange an order is on.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Side {
    Bid,
    Ask,
}

/// An open order of the exchange (docs/market.md).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    pub id: u64,
    /// The buyer, or the provider account (an operator's ask is the provider's).
    pub owner: Address,
    pub class: GpuClass,
    pub side: Side,
    pub gpus: u32,
    pub hours: u32,
    /// Per GPU-hour: a bid's maximum, an ask's minimum.
    pub price: Amount,
    /// A bid may be filled from several hosts.
    pub split: bool,
    /// A bid's contract starts this many hours after the clearing (0: at it).
    pub start_hours: u32,
    pub placed: Height,
    /// A bid's escrow (its maximum cost); zero for an ask.
    pub escrow: Amount,
}

/// The exchange's open orders and their indexes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct OrderBook {
    pub orders: Map<u64, Order>,
    /// (owner, order id) of every open order.
    pub by_owner: Set<(Address, u64)>,
    /// Open orders per class, both sides.
    pub per_class: Map<GpuClass, u64>,
    /// The id the next order gets (ids follow placement order).
    pub next_id: u64,
    /// Every auction's result, by (auction, class): the price history.
    pub results: Map<(u64, GpuClass), crate::clearing::AuctionResult>,
    /// Open leases their holders offer for sale: (seller, price).
    pub listings: Map<LeaseId, (Address, Amount)>,
    /// Spot trades per (auction period, class): the index's other half.
    pub spot: Map<(u64, GpuClass), crate::clearing::SpotTrades>,
}

impl Lease {
    /// A lease an auction made: GPU time bought ahead, with no job yet (its
    /// holder runs one later) and no devices named until then.
    pub fn is_reservation(&self) -> bool {
        self.job_spec_hash == Hash::ZERO && self.gpu_ids.is_empty()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Validator {
    pub address: Address,
    pub power: u64,
}

/// Everything the state root commits to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StateData {
    pub chain_id: ChainId,
    pub params: Params,
    pub height: Height,
    pub time_ms: TimestampMs,
    /// The proposer of the block at `height`: it receives the fees of the
    /// block's transactions as each applies (zero before the first block).
    pub proposer: Address,
    /// Tokens created at genesis; never changes.
    pub supply: Amount,
    pub burned: Amount,
    pub accounts: Map<Address, Account>,
    pub providers: Map<Address, Provider>,
    pub leases: Map<LeaseId, Lease>,
    /// Open leases by end time, so expiry is a range scan.
    pub lease_expiry: Set<(TimestampMs, LeaseId)>,
    /// Settled leases by settlement time, so pruning is a range scan.
    pub lease_settled: Set<(TimestampMs, LeaseId)>,
    /// Open leases by provider, so a provider's capacity is read from its own.
    pub open_by_provider: Set<(Address, LeaseId)>,
    /// Unbonding entries by release height.
    pub unbonding: Map<(Height, Address), Amount>,
    /// Downtime windows already slashed, per provider.
    pub slashed_windows: Set<(Address, Height, Height)>,
    /// Heartbeat sequence numbers already slashed for equivocation.
    pub slashed_equivocations: Set<(Address, u64)>,
    /// Operator key → the account it runs a provider node for.
    pub operators: Map<Address, Address>,
    /// Account → its operator key (the reverse of `operators`).
    pub operator_of: Map<Address, Address>,
    /// The validators for the next height.
    pub validators: Vec<Validator>,
    /// The validators that decided the latest block (differs from
    /// `validators` right after an epoch rotation); its certificate is
    /// checked against them.
    pub last_validators: Vec<Validator>,
    /// The exchange's open orders.
    pub book: OrderBook,
}

impl StateData {
    /// A state with nothing in it: height 0, no accounts, no validators.
    pub(crate) fn empty(chain_id: ChainId, params: Params) -> StateData {
        StateData {
            chain_id,
            params,
            height: Height(0),
            time_ms: TimestampMs(0),
            proposer: Address([0; 32]),
            supply: Amount::ZERO,
            burned: Amount::ZERO,
            accounts: Map::new(),
            providers: Map::new(),
            leases: Map::new(),
            lease_expiry: Set::new(),
            lease_settled: Set::new(),
            open_by_provider: Set::new(),
            unbonding: Map::new(),
            slashed_windows: Set::new(),
            slashed_equivocations: Set::new(),
            operators: Map::new(),
            operator_of: Map::new(),
            validators: Vec::new(),
            last_validators: Vec::new(),
            book: OrderBook::default(),
        }
    }
}

/// The ledger state after some height. `last_block_hash` is outside the
/// root (the root is inside that block's header).
#[derive(Clone, Debug)]
pub struct State {
    pub(crate) data: StateData,
    pub(crate) last_block_hash: Hash,
    /// Every write since the last committed block: what to undo, and which
    /// tree keys the next root must update.
    pub(crate) journal: Vec<Undo>,
    /// Writes ever journaled: with the height and the journal's length it
    /// names a state exactly, so a computed root is reused only for it.
    pub(crate) writes: u64,
    pub(crate) tree: crate::tree::TreeHandle,
}

impl PartialEq for State {
    /// Two states are equal when everything committed is equal; the undo
    /// journal is bookkeeping, not state.
    fn eq(&self, other: &State) -> bool {
        self.data == other.data && self.last_block_hash == other.last_block_hash
    }
}

impl State {
    /// The state `data`, whose tree at its height `tree` holds.
    pub(crate) fn from_data(data: StateData, last_block_hash: Hash, tree: crate::tree::TreeHandle) -> State {
        State { data, last_block_hash, journal: Vec::new(), writes: 0, tree }
    }

    /// A copy that may go its own way: blocks it commits write to a
    /// copy-on-write layer over this state's tree, not to the tree itself
    /// (`clone` shares the tree, and is for copies that commit the same
    /// decided blocks, or none).
    pub fn fork(&self) -> State {
        let mut copy = self.clone();
        copy.tree =
            crate::tree::TreeHandle::new(std::sync::Arc::new(crate::tree::Overlay::new(self.tree.store.clone())));
        copy
    }

    /// The store of this state's Merkle tree.
    pub fn tree_store(&self) -> &std::sync::Arc<dyn crate::tree::NodeStore> {
        &self.tree.store
    }

    pub fn chain_id(&self) -> &ChainId {
        &self.data.chain_id
    }
    pub fn params(&self) -> &Params {
        &self.data.params
    }
    pub fn height(&self) -> Height {
        self.data.height
    }
    /// The proposer of the block being applied (or the latest one).
    pub fn proposer(&self) -> Address {
        self.data.proposer
    }
    pub fn time_ms(&self) -> TimestampMs {
        self.data.time_ms
    }
    pub fn last_block_hash(&self) -> Hash {
        self.last_block_hash
    }
    pub fn supply(&self) -> Amount {
        self.data.supply
    }
    pub fn burned(&self) -> Amount {
        self.data.burned
    }
    /// An account; a never-seen address is an empty account with nonce 0.
    pub fn account(&self, address: &Address) -> Account {
        self.data.accounts.get(address).cloned().unwrap_or_default()
    }
    pub fn accounts(&self) -> impl Iterator<Item = (&Address, &Account)> {
        self.data.accounts.iter()
    }
    /// The account `signer` acts for: the account it is the operator of, else itself.
    pub fn acting_for(&self, signer: &Address) -> Address {
        self.data.operators.get(signer).copied().unwrap_or(*signer)
    }

    /// The operator key an account delegated its provider node to, if any.
    pub fn operator_of(&self, account: &Address) -> Option<Address> {
        self.data.operator_of.get(account).copied()
    }

    /// The key that speaks for `account` on the network: its operator, else itself.
    pub fn node_key_of(&self, account: &Address) -> Address {
        self.operator_of(account).unwrap_or(*account)
    }

    pub fn provider(&self, address: &Address) -> Option<&Provider> {
        self.data.providers.get(address)
    }
    pub fn providers(&self) -> impl Iterator<Item = (&Address, &Provider)> {
        self.data.providers.iter()
    }
    pub fn lease(&self, id: &LeaseId) -> Option<&Lease> {
        self.data.leases.get(id)
    }
    pub fn leases(&self) -> impl Iterator<Item = &Lease> {
        self.data.leases.values()
    }
    /// The open leases, by end time: through the expiry index, so settled
    /// leases (most of them, on a chain that has run a while) cost nothing.
    pub fn open_leases(&self) -> impl Iterator<Item = &Lease> {
        self.data.lease_expiry.iter().filter_map(|(_, id)| self.data.leases.get(id))
    }
    /// `provider`'s open leases.
    pub fn open_leases_of(&self, provider: &Address) -> impl Iterator<Item = &Lease> + '_ {
        let (lo, hi) = (LeaseId(Hash([0; 32])), LeaseId(Hash([0xff; 32])));
        self.data
            .open_by_provider
            .range((*provider, lo)..=(*provider, hi))
            .filter_map(|(_, id)| self.data.leases.get(id))
    }
    pub fn order(&self, id: u64) -> Option<&Order> {
        self.data.book.orders.get(&id)
    }
    /// Open orders, oldest first.
    pub fn orders(&self) -> impl Iterator<Item = &Order> {
        self.data.book.orders.values()
    }
    /// `owner`'s open orders, oldest first.
    pub fn orders_of(&self, owner: &Address) -> impl Iterator<Item = &Order> + '_ {
        self.data.book.by_owner.range((*owner, 0)..=(*owner, u64::MAX)).filter_map(|(_, id)| self.order(*id))
    }
    /// Leases for sale: (lease, seller, price), by lease id.
    pub fn listings(&self) -> impl Iterator<Item = (&LeaseId, &(Address, Amount))> {
        self.data.book.listings.iter()
    }
    pub fn listing(&self, lease: &LeaseId) -> Option<(Address, Amount)> {
        self.data.book.listings.get(lease).copied()
    }
    /// Auction results from auction `from` on, oldest first.
    pub fn auction_results(&self, from: u64) -> impl Iterator<Item = &crate::clearing::AuctionResult> + '_ {
        self.data.book.results.range((from, GpuClass::min())..).map(|(_, r)| r)
    }
    /// Spot trades from auction period `from` on, oldest first.
    pub fn spot_trades(&self, from: u64) -> impl Iterator<Item = &crate::clearing::SpotTrades> + '_ {
        self.data.book.spot.range((from, GpuClass::min())..).map(|(_, t)| t)
    }
    /// Open orders in `class`, both sides.
    pub fn open_orders_in(&self, class: &GpuClass) -> u64 {
        self.data.book.per_class.get(class).copied().unwrap_or(0)
    }
    /// The validators for the next height.
    /// The downtime windows of `provider` that were slashed, oldest first.
    pub fn slashed_windows(&self, provider: &Address) -> Vec<(Height, Height)> {
        self.data
            .slashed_windows
            .range((*provider, Height(0), Height(0))..=(*provider, Height(u64::MAX), Height(u64::MAX)))
            .map(|(_, s, e)| (*s, *e))
            .collect()
    }

    pub fn validators(&self) -> &[Validator] {
        &self.data.validators
    }
    /// The validators that decided the latest block.
    pub fn last_validators(&self) -> &[Validator] {
        &self.data.last_validators
    }
    /// Unbonding entries as (release height, account, amount).
    pub fn unbonding_entries(&self) -> impl Iterator<Item = (Height, Address, Amount)> + '_ {
        self.data.unbonding.iter().map(|((h, a), amt)| (*h, *a, *amt))
    }

    /// Whether `address` is in the current validator set.
    pub fn is_validator(&self, address: &Address) -> bool {
        self.data.validators.iter().any(|v| v.address == *address)
    }

    /// A provider may advertise and take leases: registered, not jailed, staked enough.
    pub fn is_active_provider(&self, address: &Address) -> bool {
        self.provider(address).is_some_and(|p| p.status == ProviderStatus::Active)
            && self.account(address).stake >= self.data.params.min_provider_stake
    }

    /// The commitment to the whole state: the root of its Merkle tree
    /// (`tree`), updated from the keys written since the last committed
    /// block. `Hash::ZERO` if the tree cannot be read (it then matches no
    /// header, so nothing built on it is accepted).
    pub fn root(&self) -> Hash {
        self.try_root().unwrap_or(Hash::ZERO)
    }

    fn position(&self) -> (u64, u64, usize) {
        (self.data.height.0, self.writes, self.journal.len())
    }

    /// The root, and the tree nodes it adds, kept for `commit_tree`.
    pub fn try_root(&self) -> Result<Hash, Error> {
        let at = self.position();
        let mut pending = self.tree.pending.lock().map_err(|_| Error::Tree("pending root lock poisoned".into()))?;
        if let Some(p) = pending.as_ref().filter(|p| p.at == at) {
            return Ok(p.computed.root);
        }
        if self.journal.is_empty() {
            if let Some(root) = crate::tree::root_at(&*self.tree.store, at.0)? {
                return Ok(root);
            }
        }
        let keys: BTreeSet<crate::tree::StateKey> =
            self.journal.iter().filter_map(crate::tree::StateKey::of_undo).collect();
        let computed = self.tree.compute(&self.data, keys, at.0)?;
        let root = computed.root;
        *pending = Some(crate::tree::Pending { at, computed });
        Ok(root)
    }

    /// Writes this height's tree nodes to the tree's store (a block is
    /// being committed): the root computed for exactly this state if there
    /// is one, else computed now.
    pub(crate) fn commit_tree(&mut self) -> Result<Hash, Error> {
        let root = self.try_root()?;
        let pending = self.tree.pending.lock().map_err(|_| Error::Tree("pending root lock poisoned".into()))?.take();
        if let Some(p) = pending.filter(|p| p.at == self.position()) {
            self.tree.store.write(p.at.0, &p.computed.batch, &p.computed.keys)?;
        }
        Ok(root)
    }

    /// The root recomputed from every entry, in a throwaway tree: what the
    /// incremental root must equal (tests, and checking a snapshot).
    pub fn root_from_scratch(&self) -> Result<Hash, Error> {
        crate::tree::root_from_scratch(&self.data)
    }

    /// `key`'s value in this (committed) state with its Merkle proof
    /// against this state's root.
    pub fn prove(&self, key: &crate::tree::StateKey) -> Result<(Option<Vec<u8>>, crate::tree::Proof), Error> {
        crate::tree::prove(&*self.tree.store, &self.data, key, self.data.height.0)
    }

    /// Checks that the state rebuilt from its own leaves (as a store
    /// reopens) is this state, derived indexes included.
    pub fn check_leaves(&self) -> Result<(), Error> {
        let leaves = crate::tree::all_keys(&self.data)
            .into_iter()
            .filter_map(|k| crate::tree::value_of(&self.data, &k).map(|v| (k.bytes(), v)));
        if crate::tree::state_from_leaves(leaves)? != self.data {
            return Err(Error::Invariant("the state rebuilt from its leaves differs".into()));
        }
        Ok(())
    }

    /// Checks the invariants every committed state must hold: the genesis
    /// supply equals balances + stake + unbonding + open escrow + burned, and
    /// each account's unbonding total equals its queue entries.
    pub fn audit(&self) -> Result<(), Error> {
        let mut total = u128::from(self.data.burned.0);
        let mut unbonding_per_account: BTreeMap<Address, u128> = BTreeMap::new();
        for ((_, addr), amount) in &self.data.unbonding {
            *unbonding_per_account.entry(*addr).or_default() += u128::from(amount.0);
        }
        for (addr, acct) in &self.data.accounts {
            total += u128::from(acct.balance.0) + u128::from(acct.stake.0) + u128::from(acct.unbonding.0);
            let queued = unbonding_per_account.remove(addr).unwrap_or(0);
            if queued != u128::from(acct.unbonding.0) {
                return Err(Error::Invariant(format!("{addr}: unbonding {} but queue holds {queued}", acct.unbonding)));
            }
        }
        if let Some((addr, _)) = unbonding_per_account.into_iter().next() {
            return Err(Error::Invariant(format!("unbonding entry for unknown account {addr}")));
        }
        for lease in self.data.leases.values() {
            let open = lease.status == LeaseStatus::Open;
            if open {
                total += u128::from(lease.escrow.0);
            }
            let settled_at = match lease.status {
                LeaseStatus::Settled { at_ms, .. } => Some(at_ms),
                LeaseStatus::Open => None,
            };
            if open != self.data.lease_expiry.contains(&(lease.end_ms, lease.id))
                || open != self.data.open_by_provider.contains(&(lease.provider, lease.id))
                || settled_at.is_some_and(|at| !self.data.lease_settled.contains(&(at, lease.id)))
            {
                return Err(Error::Invariant(format!("lease {} index out of sync", lease.id)));
            }
        }
        for (at, id) in &self.data.lease_settled {
            let settled_then = self
                .data
                .leases
                .get(id)
                .is_some_and(|l| matches!(l.status, LeaseStatus::Settled { at_ms, .. } if at_ms == *at));
            if !settled_then {
                return Err(Error::Invariant(format!("settled-lease index names lease {id}, not settled then")));
            }
        }
        let book = &self.data.book;
        let mut per_class: BTreeMap<&GpuClass, u64> = BTreeMap::new();
        for order in book.orders.values() {
            total += u128::from(order.escrow.0);
            *per_class.entry(&order.class).or_default() += 1;
            if !book.by_owner.contains(&(order.owner, order.id)) || order.id >= book.next_id {
                return Err(Error::Invariant(format!("order {} index out of sync", order.id)));
            }
        }
        let counted: BTreeMap<&GpuClass, u64> = book.per_class.iter().map(|(c, n)| (c, *n)).collect();
        for (id, (seller, _)) in &book.listings {
            let held = self.data.leases.get(id).is_some_and(|l| l.status == LeaseStatus::Open && l.buyer == *seller);
            if !held {
                return Err(Error::Invariant(format!("listing of lease {id} by one who does not hold it open")));
            }
        }
        if book.by_owner.len() != book.orders.len() || per_class != counted {
            return Err(Error::Invariant("order book indexes out of sync".into()));
        }
        if total != u128::from(self.data.supply.0) {
            return Err(Error::Invariant(format!("supply {} but holdings sum to {total} micro-AGR", self.data.supply)));
        }
        Ok(())
    }
}
