//! The undo journal: every write to the state records what it replaced, so a
//! rejected transaction or block is rolled back exactly, without cloning the
//! state. All state writes in the crate go through the setters here.

use agora_protocol::{Address, Amount, Height, LeaseId, TimestampMs};

use crate::state::{Account, Lease, Map, Order, Provider, Set, State, Validator};

/// One recorded write, holding the value it replaced.
#[derive(Clone, Debug)]
pub(crate) enum Undo {
    Account(Address, Option<Account>),
    Provider(Address, Option<Provider>),
    Lease(LeaseId, Option<Lease>),
    Expiry((TimestampMs, LeaseId), bool),
    Settled((TimestampMs, LeaseId), bool),
    Unbonding((Height, Address), Option<Amount>),
    SlashedWindow((Address, Height, Height), bool),
    SlashedEquivocation((Address, u64), bool),
    Operator(Address, Option<Address>),
    OperatorOf(Address, Option<Address>),
    Burned(Amount),
    Head(Height, TimestampMs, Address),
    Validators(Vec<Validator>),
    LastValidators(Vec<Validator>),
    /// An order's previous value (None: it did not exist), and the next id before.
    Order(u64, Option<Order>, u64),
    Auction((u64, agora_protocol::GpuClass), Option<crate::clearing::AuctionResult>),
    OpenByProvider((Address, LeaseId), bool),
    Listing(LeaseId, Option<(Address, Amount)>),
    Spot((u64, agora_protocol::GpuClass), Option<crate::clearing::SpotTrades>),
}

/// A position in the journal to roll back to.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Mark(usize);

fn put<K: Ord + Clone, V: Clone>(map: &mut Map<K, V>, key: K, value: Option<V>) -> Option<V> {
    match value {
        Some(v) => map.insert(key, v),
        None => map.remove(&key),
    }
}

fn put_flag<K: Ord + Clone>(set: &mut Set<K>, key: K, present: bool) -> bool {
    if present { set.insert(key).is_some() } else { set.remove(&key).is_some() }
}

impl State {
    /// The current journal position.
    pub fn checkpoint(&self) -> Mark {
        Mark(self.journal.len())
    }

    /// Undoes every write made since `mark`, newest first.
    pub fn rollback(&mut self, mark: Mark) {
        while self.journal.len() > mark.0 {
            // The loop condition guarantees an entry.
            let Some(undo) = self.journal.pop() else {
                break;
            };
            let d = &mut self.data;
            match undo {
                Undo::Account(k, v) => _ = put(&mut d.accounts, k, v),
                Undo::Provider(k, v) => _ = put(&mut d.providers, k, v),
                Undo::Lease(k, v) => _ = put(&mut d.leases, k, v),
                Undo::Expiry(k, was) => _ = put_flag(&mut d.lease_expiry, k, was),
                Undo::Settled(k, was) => _ = put_flag(&mut d.lease_settled, k, was),
                Undo::OpenByProvider(k, was) => _ = put_flag(&mut d.open_by_provider, k, was),
                Undo::Unbonding(k, v) => _ = put(&mut d.unbonding, k, v),
                Undo::SlashedWindow(k, was) => _ = put_flag(&mut d.slashed_windows, k, was),
                Undo::SlashedEquivocation(k, was) => _ = put_flag(&mut d.slashed_equivocations, k, was),
                Undo::Operator(k, v) => _ = put(&mut d.operators, k, v),
                Undo::OperatorOf(k, v) => _ = put(&mut d.operator_of, k, v),
                Undo::Burned(v) => d.burned = v,
                Undo::Head(h, t, p) => (d.height, d.time_ms, d.proposer) = (h, t, p),
                Undo::Validators(v) => d.validators = v,
                Undo::LastValidators(v) => d.last_validators = v,
                Undo::Auction(k, v) => _ = put(&mut d.book.results, k, v),
                Undo::Listing(k, v) => _ = put(&mut d.book.listings, k, v),
                Undo::Spot(k, v) => _ = put(&mut d.book.spot, k, v),
                Undo::Order(id, old, next_id) => {
                    put_order(&mut d.book, id, old);
                    d.book.next_id = next_id;
                }
            }
        }
    }

    /// Forgets the journal: what was written is now final (a block committed).
    pub(crate) fn commit_journal(&mut self) {
        self.journal.clear();
    }

    fn record(&mut self, undo: Undo) {
        self.writes += 1;
        self.journal.push(undo);
    }

    pub(crate) fn set_account(&mut self, address: Address, account: Account) {
        let value = (!account.is_empty()).then_some(account);
        let old = put(&mut self.data.accounts, address, value);
        self.record(Undo::Account(address, old));
    }

    pub(crate) fn set_provider(&mut self, address: Address, provider: Provider) {
        let old = put(&mut self.data.providers, address, Some(provider));
        self.record(Undo::Provider(address, old));
    }

    pub(crate) fn set_lease(&mut self, lease: Lease) {
        let (id, key) = (lease.id, (lease.provider, lease.id));
        let open = lease.status == crate::state::LeaseStatus::Open;
        let old = put(&mut self.data.leases, id, Some(lease));
        let was_open = old.as_ref().is_some_and(|l| l.status == crate::state::LeaseStatus::Open);
        self.record(Undo::Lease(id, old));
        if open != was_open {
            let was = put_flag(&mut self.data.open_by_provider, key, open);
            self.record(Undo::OpenByProvider(key, was));
        }
    }

    pub(crate) fn set_settled(&mut self, key: (TimestampMs, LeaseId), present: bool) {
        let was = put_flag(&mut self.data.lease_settled, key, present);
        self.record(Undo::Settled(key, was));
    }

    /// Removes a settled lease from the state (pruning).
    pub(crate) fn remove_lease(&mut self, id: LeaseId) {
        let old = put(&mut self.data.leases, id, None);
        self.record(Undo::Lease(id, old));
    }

    pub(crate) fn set_expiry(&mut self, key: (TimestampMs, LeaseId), present: bool) {
        let was = put_flag(&mut self.data.lease_expiry, key, present);
        self.record(Undo::Expiry(key, was));
    }

    pub(crate) fn set_unbonding(&mut self, key: (Height, Address), amount: Amount) {
        let value = (!amount.is_zero()).then_some(amount);
        let old = put(&mut self.data.unbonding, key, value);
        self.record(Undo::Unbonding(key, old));
    }

    pub(crate) fn mark_window_slashed(&mut self, key: (Address, Height, Height)) {
        let was = put_flag(&mut self.data.slashed_windows, key, true);
        self.record(Undo::SlashedWindow(key, was));
    }

    pub(crate) fn mark_equivocation_slashed(&mut self, key: (Address, u64)) {
        let was = put_flag(&mut self.data.slashed_equivocations, key, true);
        self.record(Undo::SlashedEquivocation(key, was));
    }

    /// Records (or with `None` removes) `account`'s operator, in both directions.
    pub(crate) fn set_operator(&mut self, account: Address, operator: Option<Address>) {
        let old = put(&mut self.data.operator_of, account, operator);
        self.record(Undo::OperatorOf(account, old));
        if let Some(old_op) = old {
            let was = put(&mut self.data.operators, old_op, None);
            self.record(Undo::Operator(old_op, was));
        }
        if let Some(op) = operator {
            let was = put(&mut self.data.operators, op, Some(account));
            self.record(Undo::Operator(op, was));
        }
    }

    pub(crate) fn set_burned(&mut self, burned: Amount) {
        self.record(Undo::Burned(self.data.burned));
        self.data.burned = burned;
    }

    pub(crate) fn set_head(&mut self, height: Height, time_ms: TimestampMs, proposer: Address) {
        self.record(Undo::Head(self.data.height, self.data.time_ms, self.data.proposer));
        (self.data.height, self.data.time_ms, self.data.proposer) = (height, time_ms, proposer);
    }
}

/// Replaces (or with `None` removes) an order, keeping the indexes in step.
fn put_order(book: &mut crate::state::OrderBook, id: u64, order: Option<Order>) -> Option<Order> {
    if let Some(new) = &order {
        book.by_owner.insert((new.owner, id));
        *book.per_class.entry(new.class.clone()).or_default() += 1;
    }
    let old = put(&mut book.orders, id, order);
    if let Some(old) = &old {
        book.by_owner.remove(&(old.owner, id));
        if let Some(n) = book.per_class.get_mut(&old.class) {
            *n -= 1;
            if *n == 0 {
                book.per_class.remove(&old.class);
            }
        }
    }
    // An owner's entry stays if the new value is its own (same owner).
    if let Some(new) = book.orders.get(&id) {
        book.by_owner.insert((new.owner, id));
    }
    old
}

impl State {
    /// Writes (or with `None` removes) order `id`; a new id moves the next id past it.
    pub(crate) fn set_order(&mut self, id: u64, order: Option<Order>) {
        let next_id = self.data.book.next_id;
        if order.is_some() && id >= next_id {
            self.data.book.next_id = id + 1;
        }
        let old = put_order(&mut self.data.book, id, order);
        self.record(Undo::Order(id, old, next_id));
    }

    pub(crate) fn set_listing(&mut self, lease: LeaseId, listing: Option<(Address, Amount)>) {
        let old = put(&mut self.data.book.listings, lease, listing);
        self.record(Undo::Listing(lease, old));
    }

    pub(crate) fn record_auction(&mut self, result: crate::clearing::AuctionResult) {
        let key = (result.auction, result.class.clone());
        let old = put(&mut self.data.book.results, key.clone(), Some(result));
        self.record(Undo::Auction(key, old));
    }

    pub(crate) fn set_spot_trades(&mut self, trades: crate::clearing::SpotTrades) {
        let key = (trades.auction, trades.class.clone());
        let old = put(&mut self.data.book.spot, key.clone(), Some(trades));
        self.record(Undo::Spot(key, old));
    }

    /// Removes auction `auction`'s result and spot trades in `class` (pruning).
    pub(crate) fn forget_auction(&mut self, auction: u64, class: &agora_protocol::GpuClass) {
        let key = (auction, class.clone());
        if let Some(old) = self.data.book.results.remove(&key) {
            self.record(Undo::Auction(key.clone(), Some(old)));
        }
        if let Some(old) = self.data.book.spot.remove(&key) {
            self.record(Undo::Spot(key, Some(old)));
        }
    }

    /// The id the next order gets.
    pub(crate) fn next_order_id(&self) -> u64 {
        self.data.book.next_id
    }
}

impl State {
    pub(crate) fn set_validators(&mut self, validators: Vec<Validator>) {
        let old = std::mem::replace(&mut self.data.validators, validators);
        self.record(Undo::Validators(old));
    }

    /// Records that the current validators are deciding the block being applied.
    pub(crate) fn note_deciding_validators(&mut self) {
        if self.data.last_validators != self.data.validators {
            let old = std::mem::replace(&mut self.data.last_validators, self.data.validators.clone());
            self.record(Undo::LastValidators(old));
        }
    }
}
