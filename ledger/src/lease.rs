//! Lease escrow: opening locks price × GPUs × duration from the buyer;
//! closing or cancelling pays the provider pro-rata to elapsed block time and
//! refunds the rest; expiry pays in full.

use agora_protocol::limits::MAX_LEASE_REQUEST_TTL_MS;
use agora_protocol::{Address, Amount, LeaseAccept, LeaseId, LeaseRequest, Signed, TimestampMs};

use crate::accounts::{credit, debit};
use crate::error::Error;
use crate::events::{Event, SettleReason};
use crate::state::{Lease, LeaseStatus, State};

/// Opens a lease from the buyer's signed request and the provider's
/// countersignature. `sender` must be one of the two parties.
pub(crate) fn open(
    state: &mut State,
    sender: Address,
    request: &Signed<LeaseRequest>,
    accept: &Signed<LeaseAccept>,
) -> Result<Vec<Event>, Error> {
    let chain = state.chain_id().clone();
    request.verify(&chain).map_err(|e| Error::BadSignature(e.to_string()))?;
    accept.verify(&chain).map_err(|e| Error::BadSignature(e.to_string()))?;
    let (buyer, terms) = (request.signer, &request.body);
    let id = request.lease_id()?;
    if state.acting_for(&accept.signer) != terms.provider {
        return Err(Error::LeaseTerms("acceptance is not signed by the requested provider".into()));
    }
    if accept.body.lease_id != id {
        return Err(Error::LeaseTerms("acceptance is for another lease".into()));
    }
    if sender != buyer && state.acting_for(&sender) != terms.provider {
        return Err(Error::NotLeaseParty(id));
    }
    if state.acting_for(&buyer) == terms.provider {
        return Err(Error::LeaseTerms("a provider cannot lease from itself".into()));
    }
    if accept.body.gpu_ids.len() != terms.gpus as usize {
        return Err(Error::LeaseTerms(format!("{} GPU ids for {} GPUs", accept.body.gpu_ids.len(), terms.gpus)));
    }
    if state.lease(&id).is_some() {
        return Err(Error::LeaseExists(id));
    }
    let now = state.time_ms();
    if now > terms.expires_at_ms {
        return Err(Error::RequestExpired { expired_at_ms: terms.expires_at_ms, now_ms: now });
    }
    // A request valid for longer could open its lease again once the
    // settled lease is pruned (`prune_settled`).
    if terms.expires_at_ms.0 > now.0.saturating_add(MAX_LEASE_REQUEST_TTL_MS) {
        return Err(Error::LeaseTerms(format!(
            "the request stays valid for more than {} s (at most {} s)",
            (terms.expires_at_ms.0 - now.0) / 1000,
            MAX_LEASE_REQUEST_TTL_MS / 1000
        )));
    }
    if !state.is_active_provider(&terms.provider) {
        return Err(Error::ProviderNotActive);
    }
    let escrow = terms.escrow().ok_or(Error::Overflow("escrow"))?;
    let duration_ms = terms.duration_secs.checked_mul(1000).ok_or(Error::Overflow("duration"))?;
    let end_ms = TimestampMs(now.0.checked_add(duration_ms).ok_or(Error::Overflow("lease end"))?);
    // The GPUs must not be promised elsewhere: in the provider's open asks or
    // in auctioned leases (spot leases count too), class by class.
    let class = crate::capacity::class_of_model(state, &terms.provider, &terms.gpu_model)
        .ok_or_else(|| Error::LeaseTerms(format!("the provider has registered no {} GPUs", terms.gpu_model)))?;
    crate::capacity::reserve(state, &terms.provider, &class, terms.gpus)?;
    debit(state, buyer, escrow)?;
    state.set_lease(Lease {
        id,
        buyer,
        provider: terms.provider,
        gpu_model: terms.gpu_model.clone(),
        gpus: terms.gpus,
        gpu_ids: accept.body.gpu_ids.clone(),
        price_per_gpu_hour: terms.price_per_gpu_hour,
        escrow,
        job_spec_hash: terms.job_spec_hash,
        start_ms: now,
        end_ms,
        status: LeaseStatus::Open,
    });
    state.set_expiry((end_ms, id), true);
    crate::clearing::record_spot(state, class, terms.gpus, terms.duration_secs, terms.price_per_gpu_hour);
    Ok(vec![Event::LeaseOpened { lease_id: id, buyer, provider: terms.provider, escrow }])
}

/// The provider reports the job ended.
pub(crate) fn close(
    state: &mut State,
    sender: Address,
    id: LeaseId,
    exit_code: Option<i32>,
) -> Result<Vec<Event>, Error> {
    let lease = open_lease(state, id)?;
    // The provider's node signs with the operator key where the account named one.
    if state.acting_for(&sender) != lease.provider {
        return Err(Error::NotLeaseParty(id));
    }
    Ok(vec![settle(state, id, SettleReason::Closed, exit_code)?])
}

/// Either party stops the lease early.
pub(crate) fn cancel(state: &mut State, sender: Address, id: LeaseId) -> Result<Vec<Event>, Error> {
    let lease = open_lease(state, id)?;
    if sender != lease.buyer && state.acting_for(&sender) != lease.provider {
        return Err(Error::NotLeaseParty(id));
    }
    Ok(vec![settle(state, id, SettleReason::Cancelled, None)?])
}

fn open_lease(state: &State, id: LeaseId) -> Result<&Lease, Error> {
    let lease = state.lease(&id).ok_or(Error::UnknownLease(id))?;
    if lease.status != LeaseStatus::Open {
        return Err(Error::LeaseNotOpen(id));
    }
    Ok(lease)
}

/// Pays the provider for the time served by the current block time (all of
/// it once the lease has ended), refunds the rest to the buyer, and marks the
/// lease settled.
pub(crate) fn settle(
    state: &mut State,
    id: LeaseId,
    reason: SettleReason,
    exit_code: Option<i32>,
) -> Result<Event, Error> {
    let mut lease = open_lease(state, id)?.clone();
    let now = state.time_ms();
    let duration = lease.end_ms.0.saturating_sub(lease.start_ms.0);
    let elapsed = now.0.saturating_sub(lease.start_ms.0).min(duration);
    let paid = if duration == 0 {
        lease.escrow
    } else {
        lease.escrow.mul_div_floor(elapsed, duration).ok_or(Error::Overflow("settlement"))?
    };
    let refunded = lease.escrow.checked_sub(paid).ok_or(Error::Overflow("settlement"))?;
    credit(state, lease.provider, paid)?;
    credit(state, lease.buyer, refunded)?;
    if let Some(mut p) = state.provider(&lease.provider).cloned() {
        p.earned = p.earned.checked_add(paid).ok_or(Error::Overflow("earnings"))?;
        p.leases_served = p.leases_served.saturating_add(1);
        state.set_provider(lease.provider, p);
    }
    state.set_expiry((lease.end_ms, id), false);
    if state.listing(&id).is_some() {
        state.set_listing(id, None);
    }
    lease.status = LeaseStatus::Settled { reason, paid, refunded, at_ms: now, exit_code };
    state.set_settled((now, id), true);
    state.set_lease(lease);
    Ok(Event::LeaseSettled { lease_id: id, reason, paid, refunded })
}

/// Settles in full every open lease whose paid time ended by the current block time.
pub(crate) fn expire_due(state: &mut State) -> Result<Vec<Event>, Error> {
    let now = state.time_ms();
    let due: Vec<LeaseId> =
        state.data.lease_expiry.range(..=(now, LeaseId(agora_protocol::Hash([0xff; 32])))).map(|(_, id)| *id).collect();
    due.into_iter().map(|id| settle(state, id, SettleReason::Expired, None)).collect()
}

/// Settled leases pruned per block at most: a burst of settlements is
/// pruned over the following blocks, so no block's work depends on how many
/// leases ever settled at once.
pub const MAX_PRUNED_PER_BLOCK: usize = 1_000;

/// Removes from the state the leases settled `settled_lease_retention_ms`
/// or more before the current block time (oldest first, at most
/// `MAX_PRUNED_PER_BLOCK`). Their requests have expired by then (they are
/// valid for at most `MAX_LEASE_REQUEST_TTL_MS`, and the retention is at
/// least that), so none can open its lease again.
pub(crate) fn prune_settled(state: &mut State) -> usize {
    let retention = state.params().market.settled_lease_retention_ms;
    let Some(cutoff) = state.time_ms().0.checked_sub(retention) else {
        return 0;
    };
    let due: Vec<(TimestampMs, LeaseId)> = state
        .data
        .lease_settled
        .range(..=(TimestampMs(cutoff), LeaseId(agora_protocol::Hash([0xff; 32]))))
        .take(MAX_PRUNED_PER_BLOCK)
        .copied()
        .collect();
    for key in &due {
        state.set_settled(*key, false);
        state.remove_lease(key.1);
    }
    due.len()
}

/// Settles every open lease of a provider pro-rata (used when it is slashed).
pub(crate) fn settle_all_of(state: &mut State, provider: Address, reason: SettleReason) -> Result<Vec<Event>, Error> {
    let ids: Vec<LeaseId> = state.open_leases_of(&provider).map(|l| l.id).collect();
    ids.into_iter().map(|id| settle(state, id, reason, None)).collect()
}

/// The open lease `id` if `sender` holds it (is its buyer).
fn held(state: &State, sender: Address, id: LeaseId) -> Result<Lease, Error> {
    let lease = open_lease(state, id)?.clone();
    if lease.buyer != sender {
        return Err(Error::NotLeaseParty(id));
    }
    Ok(lease)
}

/// The holder gives its open lease to `to` (any listing of it ends).
pub(crate) fn transfer(state: &mut State, sender: Address, id: LeaseId, to: Address) -> Result<Vec<Event>, Error> {
    let mut lease = held(state, sender, id)?;
    if to == sender {
        return Err(Error::LeaseTerms("a lease cannot be transferred to its holder".into()));
    }
    if state.listing(&id).is_some() {
        state.set_listing(id, None);
    }
    lease.buyer = to;
    state.set_lease(lease);
    Ok(vec![Event::LeaseTransferred { lease_id: id, from: sender, to, price: None }])
}

/// The holder lists its open lease for sale, or withdraws the listing.
pub(crate) fn list(
    state: &mut State,
    sender: Address,
    id: LeaseId,
    price: Option<Amount>,
) -> Result<Vec<Event>, Error> {
    held(state, sender, id)?;
    state.set_listing(id, price.map(|p| (sender, p)));
    Ok(vec![Event::LeaseListed { lease_id: id, seller: sender, price }])
}

/// Buys a listed lease: the price to the seller, the lease to the buyer, at once.
pub(crate) fn buy(state: &mut State, sender: Address, id: LeaseId, max_price: Amount) -> Result<Vec<Event>, Error> {
    let (seller, price) = state.listing(&id).ok_or_else(|| Error::LeaseTerms(format!("lease {id} is not for sale")))?;
    if seller == sender {
        return Err(Error::LeaseTerms("you hold this lease already".into()));
    }
    if price > max_price {
        return Err(Error::LeaseTerms(format!("lease {id} costs {price}, more than your maximum {max_price}")));
    }
    let mut lease = held(state, seller, id)?;
    debit(state, sender, price)?;
    credit(state, seller, price)?;
    state.set_listing(id, None);
    lease.buyer = sender;
    state.set_lease(lease);
    Ok(vec![Event::LeaseTransferred { lease_id: id, from: seller, to: sender, price: Some(price) }])
}

/// The holder buys `hours` more at the lease's price before its paid time
/// runs out; the escrow grows by the cost and settlement stays pro-rata over
/// the whole. The provider may still end the lease early, paid for the time
/// served, as with any lease.
pub(crate) fn extend(
    state: &mut State,
    sender: Address,
    id: LeaseId,
    hours: u32,
    max_cost: Amount,
) -> Result<Vec<Event>, Error> {
    let mut lease = held(state, sender, id)?;
    if state.time_ms() >= lease.end_ms {
        return Err(Error::LeaseTerms(format!("lease {id} has run out; it settles now")));
    }
    let added_ms = u64::from(hours).checked_mul(3_600_000).ok_or(Error::Overflow("extension"))?;
    let end_ms = TimestampMs(lease.end_ms.0.checked_add(added_ms).ok_or(Error::Overflow("lease end"))?);
    let max_ms = u64::from(agora_protocol::limits::MAX_CONTRACT_HOURS) * 3_600_000;
    if end_ms.0 - lease.start_ms.0 > max_ms {
        return Err(Error::LeaseTerms(format!(
            "a lease lasts at most {} hours in all",
            agora_protocol::limits::MAX_CONTRACT_HOURS
        )));
    }
    let cost =
        crate::auction::cost(lease.price_per_gpu_hour, lease.gpus, hours).ok_or(Error::Overflow("extension cost"))?;
    if cost > max_cost {
        return Err(Error::LeaseTerms(format!("{hours} more hours cost {cost}, more than your maximum {max_cost}")));
    }
    debit(state, sender, cost)?;
    state.set_expiry((lease.end_ms, id), false);
    state.set_expiry((end_ms, id), true);
    lease.escrow = lease.escrow.checked_add(cost).ok_or(Error::Overflow("escrow"))?;
    lease.end_ms = end_ms;
    state.set_lease(lease);
    Ok(vec![Event::LeaseExtended { lease_id: id, hours, cost, end_ms }])
}
