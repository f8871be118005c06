//! Provider registration, jailing and unjailing.

use agora_protocol::{Address, GpuSpec, Height};

use crate::error::Error;
use crate::events::Event;
use crate::state::{Provider, ProviderStatus, State};

/// Registers a provider or updates its metadata. Needs the minimum stake;
/// a tombstoned provider can never register again. Sent by the account or
/// by its operator (whose node has the GPUs); it registers the account.
pub(crate) fn register(
    state: &mut State,
    sender: Address,
    region: &str,
    gpus: &[GpuSpec],
) -> Result<Vec<Event>, Error> {
    let address = state.acting_for(&sender);
    let need = state.params().min_provider_stake;
    let have = state.account(&address).stake;
    if have < need {
        return Err(Error::InsufficientStake { need, have });
    }
    let provider = match state.provider(&address) {
        Some(p) if p.status == ProviderStatus::Tombstoned => return Err(Error::Tombstoned),
        Some(p) => Provider { region: region.to_string(), gpus: gpus.to_vec(), ..p.clone() },
        None => Provider {
            region: region.to_string(),
            gpus: gpus.to_vec(),
            registered_at: state.height(),
            status: ProviderStatus::Active,
            slashes: 0,
            earned: agora_protocol::Amount::ZERO,
            leases_served: 0,
        },
    };
    state.set_provider(address, provider);
    // GPUs in open asks or leases cannot be registered away (the
    // transaction is rolled back, registration included).
    crate::capacity::check_commitments(state, &address)?;
    Ok(vec![Event::ProviderRegistered { provider: address }])
}

/// Jails a provider (until `until`, or forever with `None`) and counts the slash.
pub(crate) fn jail(state: &mut State, address: Address, until: Option<Height>) -> Result<Event, Error> {
    let mut p = state.provider(&address).cloned().ok_or(Error::NotProvider)?;
    p.status = match (until, &p.status) {
        (None, _) | (_, ProviderStatus::Tombstoned) => ProviderStatus::Tombstoned,
        (Some(u), ProviderStatus::Jailed { until: old }) => ProviderStatus::Jailed { until: u.max(*old) },
        (Some(u), ProviderStatus::Active) => ProviderStatus::Jailed { until: u },
    };
    p.slashes = p.slashes.saturating_add(1);
    let until = match p.status {
        ProviderStatus::Jailed { until } => Some(until),
        _ => None,
    };
    state.set_provider(address, p);
    Ok(Event::Jailed { provider: address, until })
}

/// `account` names the key that runs its provider node, or withdraws it.
/// An operator serves one account, is not itself a provider or an account
/// with an operator, and cannot name operators (no chains of delegation).
pub(crate) fn set_operator(
    state: &mut State,
    account: Address,
    operator: Option<Address>,
) -> Result<Vec<Event>, Error> {
    let refuse = |why: &str| Err(Error::Operator(why.to_string()));
    if state.data.operators.contains_key(&account) {
        return refuse("an operator key cannot name operators; sign with the account's own key");
    }
    let Some(op) = operator else {
        if state.operator_of(&account).is_none() {
            return refuse("this account has no operator");
        }
        state.set_operator(account, None);
        return Ok(vec![Event::OperatorSet { account, operator: None }]);
    };
    if op == account {
        return refuse("an account cannot be its own operator");
    }
    if state.data.operators.get(&op).is_some_and(|a| *a != account) {
        return refuse("that key is already the operator of another account");
    }
    if state.provider(&op).is_some() || state.operator_of(&op).is_some() {
        return refuse("that key is a provider or has an operator of its own");
    }
    state.set_operator(account, Some(op));
    Ok(vec![Event::OperatorSet { account, operator: Some(op) }])
}

/// A jailed provider returns once its jail period is over and it is staked again.
pub(crate) fn unjail(state: &mut State, address: Address) -> Result<Vec<Event>, Error> {
    let mut p = state.provider(&address).cloned().ok_or(Error::NotProvider)?;
    match p.status {
        ProviderStatus::Active => return Err(Error::NotJailed),
        ProviderStatus::Tombstoned => return Err(Error::Tombstoned),
        ProviderStatus::Jailed { until } if state.height() < until => {
            return Err(Error::StillJailed { until });
        }
        ProviderStatus::Jailed { .. } => {}
    }
    let need = state.params().min_provider_stake;
    let have = state.account(&address).stake;
    if have < need {
        return Err(Error::InsufficientStake { need, have });
    }
    p.status = ProviderStatus::Active;
    state.set_provider(address, p);
    Ok(vec![Event::Unjailed { provider: address }])
}
