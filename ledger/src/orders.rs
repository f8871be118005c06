//! The exchange's orders (docs/market.md): placing a bid (which escrows its
//! maximum cost) or an ask (a provider's GPUs it has not otherwise
//! committed), cancelling (outside an auction's binding phase; a bid's
//! escrow comes back) and amending the price (in the binding phase, bids
//! only up and asks only down). Clearing turns crossing orders into leases.

use agora_protocol::{Address, Amount, GpuClass};

use crate::accounts::{credit, debit};
use crate::auction::cost;
use crate::error::Error;
use crate::events::Event;
use crate::params::AuctionPhase;
use crate::state::{Order, Side, State};

/// What a new order asks for.
pub(crate) struct NewOrder<'a> {
    pub class: &'a GpuClass,
    pub side: Side,
    pub gpus: u32,
    pub hours: u32,
    pub price: Amount,
    pub split: bool,
    /// A bid's contract starts this many hours after its auction clears.
    pub start_hours: u32,
}

/// Places a bid (for the sender) or an ask (for the provider the sender
/// acts for), within the open-order limits.
pub(crate) fn place(state: &mut State, sender: Address, new: NewOrder<'_>) -> Result<Vec<Event>, Error> {
    let owner = match new.side {
        Side::Bid => sender,
        Side::Ask => state.acting_for(&sender),
    };
    let market = state.params().market.clone();
    if state.orders_of(&owner).count() as u64 >= market.max_open_orders_per_account {
        return Err(Error::Order(format!(
            "an account may hold {} open orders; cancel one first",
            market.max_open_orders_per_account
        )));
    }
    if state.open_orders_in(new.class) >= market.max_open_orders_per_class {
        return Err(Error::Order(format!("the {} book is full; try the next auction", new.class)));
    }
    let escrow = match new.side {
        Side::Bid => {
            let escrow = cost(new.price, new.gpus, new.hours).ok_or(Error::Overflow("bid cost"))?;
            debit(state, owner, escrow)?;
            escrow
        }
        Side::Ask => {
            check_capacity(state, &owner, new.class, new.gpus)?;
            Amount::ZERO
        }
    };
    let id = state.next_order_id();
    let order = Order {
        id,
        owner,
        class: new.class.clone(),
        side: new.side,
        gpus: new.gpus,
        hours: new.hours,
        price: new.price,
        split: new.split && new.side == Side::Bid,
        start_hours: new.start_hours,
        placed: state.height(),
        escrow,
    };
    state.set_order(id, Some(order));
    Ok(vec![Event::OrderPlaced { order: id, owner, class: new.class.clone(), side: new.side, price: new.price }])
}

/// A provider may ask only for GPUs of that class it registered, active,
/// and not already asked for or leased out (`capacity`).
fn check_capacity(state: &State, provider: &Address, class: &GpuClass, gpus: u32) -> Result<(), Error> {
    state.provider(provider).ok_or(Error::NotProvider)?;
    if !state.is_active_provider(provider) {
        return Err(Error::ProviderNotActive);
    }
    crate::capacity::reserve(state, provider, class, gpus)
}

/// The order `id` if `sender` may change it (its owner, or the owner's operator).
fn owned(state: &State, sender: Address, id: u64) -> Result<Order, Error> {
    let order = state.order(id).cloned().ok_or(Error::UnknownOrder(id))?;
    if order.owner != sender && state.acting_for(&sender) != order.owner {
        return Err(Error::NotOrderOwner(id));
    }
    Ok(order)
}

fn binding(state: &State) -> bool {
    state.params().market.phase(state.height().0).1 != AuctionPhase::Open
}

/// Withdraws an open order outside the binding phase; a bid's escrow returns.
pub(crate) fn cancel(state: &mut State, sender: Address, id: u64) -> Result<Vec<Event>, Error> {
    let order = owned(state, sender, id)?;
    if binding(state) {
        return Err(Error::Order("orders are binding until this auction clears: no cancels in its last blocks".into()));
    }
    credit(state, order.owner, order.escrow)?;
    state.set_order(id, None);
    Ok(vec![Event::OrderCancelled { order: id, owner: order.owner, refunded: order.escrow }])
}

/// Sets an open order's price; a bid's escrow follows (more taken or some returned).
pub(crate) fn amend(state: &mut State, sender: Address, id: u64, price: Amount) -> Result<Vec<Event>, Error> {
    let mut order = owned(state, sender, id)?;
    if binding(state) {
        let worse = match order.side {
            Side::Bid => price < order.price,
            Side::Ask => price > order.price,
        };
        if worse {
            return Err(Error::Order(
                "orders are binding until this auction clears: bids may only rise and asks only fall".into(),
            ));
        }
    }
    if order.side == Side::Bid {
        let escrow = cost(price, order.gpus, order.hours).ok_or(Error::Overflow("bid cost"))?;
        match escrow.checked_sub(order.escrow) {
            Some(more) => debit(state, order.owner, more)?,
            None => credit(state, order.owner, Amount(order.escrow.0 - escrow.0))?,
        }
        order.escrow = escrow;
    }
    order.price = price;
    state.set_order(id, Some(order));
    Ok(vec![Event::OrderAmended { order: id, price }])
}
