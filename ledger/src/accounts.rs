//! Balances, transfers, staking and unbonding: the transitions that move
//! tokens between an account's balance, its stake and the unbonding queue.

use agora_protocol::{Address, Amount, Height, SignedTx};

use crate::error::Error;
use crate::events::Event;
use crate::state::State;

/// Adds to an account's spendable balance.
pub(crate) fn credit(state: &mut State, to: Address, amount: Amount) -> Result<(), Error> {
    let mut acct = state.account(&to);
    acct.balance = acct.balance.checked_add(amount).ok_or(Error::Overflow("balance"))?;
    state.set_account(to, acct);
    Ok(())
}

/// Takes from an account's spendable balance.
pub(crate) fn debit(state: &mut State, from: Address, amount: Amount) -> Result<(), Error> {
    let mut acct = state.account(&from);
    acct.balance =
        acct.balance.checked_sub(amount).ok_or(Error::InsufficientFunds { need: amount, have: acct.balance })?;
    state.set_account(from, acct);
    Ok(())
}

/// The block's fees, as one event for its proposer (each moved to it as its
/// transaction applied); `None` for a block without transactions.
pub(crate) fn fees_paid(proposer: Address, txs: &[SignedTx]) -> Option<Event> {
    let amount = Amount(txs.iter().map(|tx| tx.body.fee.0).fold(0u64, u64::saturating_add));
    (!amount.is_zero()).then_some(Event::FeesPaid { proposer, amount })
}

pub(crate) fn transfer(state: &mut State, from: Address, to: Address, amount: Amount) -> Result<Vec<Event>, Error> {
    debit(state, from, amount)?;
    credit(state, to, amount)?;
    Ok(vec![Event::Transferred { from, to, amount }])
}

pub(crate) fn stake(state: &mut State, account: Address, amount: Amount) -> Result<Vec<Event>, Error> {
    debit(state, account, amount)?;
    let mut acct = state.account(&account);
    acct.stake = acct.stake.checked_add(amount).ok_or(Error::Overflow("stake"))?;
    state.set_account(account, acct);
    Ok(vec![Event::Staked { account, amount }])
}

/// Moves stake into the unbonding queue; it returns to the balance
/// `unbonding_blocks` after this block.
pub(crate) fn unstake(state: &mut State, account: Address, amount: Amount) -> Result<Vec<Event>, Error> {
    let mut acct = state.account(&account);
    acct.stake = acct.stake.checked_sub(amount).ok_or(Error::InsufficientStake { need: amount, have: acct.stake })?;
    acct.unbonding = acct.unbonding.checked_add(amount).ok_or(Error::Overflow("unbonding"))?;
    let release = state.height().0.checked_add(state.params().unbonding_blocks).ok_or(Error::Overflow("height"))?;
    let key = (Height(release), account);
    let queued = state.data.unbonding.get(&key).copied().unwrap_or_default();
    let queued = queued.checked_add(amount).ok_or(Error::Overflow("unbonding"))?;
    state.set_account(account, acct);
    state.set_unbonding(key, queued);
    Ok(vec![Event::UnbondingStarted { account, amount, release_height: Height(release) }])
}

/// Returns every unbonding entry due at or before the current height to its
/// account's balance. Runs at the start of each block.
pub(crate) fn release_unbonding(state: &mut State) -> Result<Vec<Event>, Error> {
    let now = state.height();
    let due: Vec<_> = state.data.unbonding.range(..=(now, Address([0xff; 32]))).map(|(k, v)| (*k, *v)).collect();
    let mut events = Vec::with_capacity(due.len());
    for (key, amount) in due {
        let account = key.1;
        let mut acct = state.account(&account);
        acct.unbonding = acct.unbonding.checked_sub(amount).ok_or(Error::Invariant("unbonding underflow".into()))?;
        acct.balance = acct.balance.checked_add(amount).ok_or(Error::Overflow("balance"))?;
        state.set_account(account, acct);
        state.set_unbonding(key, Amount::ZERO);
        events.push(Event::UnbondingReleased { account, amount });
    }
    Ok(events)
}

/// Burns `bps` basis points of an account's bonded tokens (stake, then
/// unbonding entries, newest release first so the freshest escape attempts
/// pay first). Returns what was burned.
pub(crate) fn burn_stake_fraction(state: &mut State, account: Address, bps: u64) -> Result<Amount, Error> {
    let mut acct = state.account(&account);
    let bonded = acct.stake.checked_add(acct.unbonding).ok_or(Error::Overflow("stake"))?;
    let target = bonded.mul_div_floor(bps, crate::params::BPS_DENOMINATOR).ok_or(Error::Overflow("slash"))?;
    let from_stake = target.min(acct.stake);
    acct.stake = acct.stake.checked_sub(from_stake).ok_or(Error::Overflow("slash"))?;
    let mut remaining = target.checked_sub(from_stake).ok_or(Error::Overflow("slash"))?;
    let entries: Vec<_> =
        state.data.unbonding.iter().rev().filter(|((_, a), _)| *a == account).map(|(k, v)| (*k, *v)).collect();
    for (key, amount) in entries {
        if remaining.is_zero() {
            break;
        }
        let take = remaining.min(amount);
        remaining = remaining.checked_sub(take).ok_or(Error::Overflow("slash"))?;
        acct.unbonding = acct.unbonding.checked_sub(take).ok_or(Error::Overflow("slash"))?;
        state.set_unbonding(key, amount.checked_sub(take).ok_or(Error::Overflow("slash"))?);
    }
    state.set_account(account, acct);
    let burned = state.burned().checked_add(target).ok_or(Error::Overflow("burned"))?;
    state.set_burned(burned);
    Ok(target)
}
