//! Slashing on evidence. Downtime needs attestations from validators holding
//! more than 2/3 of the voting power for one provider and window; equivocation
//! needs two conflicting statements signed by one key. Either burns a share of
//! stake, jails the provider and settles its open leases; the same misbehaviour
//! is never slashed twice.

use std::collections::BTreeSet;

use agora_protocol::{DowntimeEvidence, EquivocationEvidence, Height};

use crate::accounts::burn_stake_fraction;
use crate::error::Error;
use crate::events::{Event, SettleReason, SlashReason};
use crate::lease::settle_all_of;
use crate::provider::jail;
use crate::state::{ProviderStatus, State};

pub(crate) fn slash_downtime(state: &mut State, ev: &DowntimeEvidence) -> Result<Vec<Event>, Error> {
    let provider = state.provider(&ev.provider).ok_or(Error::NotProvider)?;
    if provider.status == ProviderStatus::Tombstoned {
        return Err(Error::Tombstoned);
    }
    if ev.window_end >= state.height() {
        return Err(Error::BadEvidence("downtime window has not ended yet".into()));
    }
    if ev.window_start > ev.window_end {
        return Err(Error::BadEvidence("downtime window is empty".into()));
    }
    // One set of attestations split into short windows must not slash many times.
    let min_len = crate::params::min_evidence_window(state.params().downtime_window_blocks);
    if ev.window_end.0 - ev.window_start.0 + 1 < min_len {
        return Err(Error::BadEvidence(format!("the evidence window is shorter than {min_len} blocks")));
    }
    check_evidence_age(state, ev.window_end)?;
    // At most one downtime slash per jail period.
    if matches!(provider.status, ProviderStatus::Jailed { .. }) {
        return Err(Error::AlreadySlashed);
    }
    let overlapping = state
        .data
        .slashed_windows
        .range((ev.provider, Height(0), Height(0))..=(ev.provider, Height(u64::MAX), Height(u64::MAX)))
        .any(|(_, start, end)| *start <= ev.window_end && *end >= ev.window_start);
    if overlapping {
        return Err(Error::AlreadySlashed);
    }
    check_attestation_power(state, ev)?;
    let burned = burn_stake_fraction(state, ev.provider, state.params().downtime_slash_bps)?;
    let until = Height(state.height().0.saturating_add(state.params().jail_blocks));
    // Everything the attestations cover is marked, not only the shared stretch:
    // the same attestations can never back a second slash.
    let covered_start = ev.attestations.iter().map(|a| a.body.window_start).min().unwrap_or(ev.window_start);
    let covered_end = ev.attestations.iter().map(|a| a.body.window_end).max().unwrap_or(ev.window_end);
    state.mark_window_slashed((ev.provider, covered_start, covered_end));
    let reason = SlashReason::Downtime { window_start: ev.window_start, window_end: ev.window_end };
    let mut events =
        vec![Event::Slashed { account: ev.provider, burned, reason }, jail(state, ev.provider, Some(until))?];
    events.extend(settle_all_of(state, ev.provider, SettleReason::ProviderSlashed)?);
    Ok(events)
}

/// Evidence about `height` must be recent: unbonding outlasts this age, so the stake is still there.
fn check_evidence_age(state: &State, height: Height) -> Result<(), Error> {
    let age = state.params().max_evidence_age_blocks;
    if state.height().0 > height.0.saturating_add(age) {
        return Err(Error::BadEvidence(format!("evidence older than {age} blocks")));
    }
    Ok(())
}

/// Every attestation names this provider, covers at least
/// `downtime_window_blocks` and the whole evidence window (validators see the
/// silence start and end a block or two apart, so their windows overlap
/// rather than match; the evidence window is where they all agree), comes
/// from a distinct current validator, is correctly signed, and together they
/// hold > 2/3 power.
fn check_attestation_power(state: &State, ev: &DowntimeEvidence) -> Result<(), Error> {
    let total: u64 = state.validators().iter().map(|v| v.power).sum();
    let min_len = state.params().downtime_window_blocks;
    let mut seen = BTreeSet::new();
    let mut have: u64 = 0;
    for att in &ev.attestations {
        let body = &att.body;
        if body.provider != ev.provider || body.window_start > ev.window_start || body.window_end < ev.window_end {
            return Err(Error::BadEvidence("attestation is for another provider or does not cover the window".into()));
        }
        if body.window_end.0.saturating_sub(body.window_start.0) + 1 < min_len {
            return Err(Error::BadEvidence(format!("attestation covers fewer than {min_len} blocks")));
        }
        let validator = state.validators().iter().find(|v| v.address == att.signer).ok_or(Error::NotValidator)?;
        if !seen.insert(att.signer) {
            return Err(Error::BadEvidence("two attestations from one validator".into()));
        }
        att.verify(state.chain_id()).map_err(|e| Error::BadSignature(e.to_string()))?;
        have = have.saturating_add(validator.power);
    }
    if u128::from(have) * 3 <= u128::from(total) * 2 {
        return Err(Error::InsufficientPower { have, total });
    }
    Ok(())
}

/// Marks vote equivocations in the set of slashed (offender, key) pairs:
/// heartbeat keys are sequence numbers (a clock in ms, far below 2^63), vote
/// keys are the height with the top bit set, so the two never collide.
const VOTE_KEY_BIT: u64 = 1 << 63;

pub(crate) fn slash_equivocation(state: &mut State, ev: &EquivocationEvidence) -> Result<Vec<Event>, Error> {
    let (offender, key) = match ev {
        EquivocationEvidence::Heartbeats { first, second } => {
            if first.signer != second.signer || first.body.seq != second.body.seq {
                return Err(Error::BadEvidence("heartbeats are from different signers or sequences".into()));
            }
            if first.body == second.body {
                return Err(Error::BadEvidence("heartbeats are identical, not conflicting".into()));
            }
            for hb in [first, second] {
                hb.verify(state.chain_id()).map_err(|e| Error::BadSignature(e.to_string()))?;
                check_evidence_age(state, hb.body.height)?;
            }
            // An operator's double heartbeat is its account's: the account chose the key.
            let provider = state.acting_for(&first.signer);
            if state.provider(&provider).is_none() {
                return Err(Error::NotProvider);
            }
            (provider, first.body.seq)
        }
        EquivocationEvidence::Votes { first, second } => {
            let (a, b) = (&first.body, &second.body);
            if first.signer != second.signer || a.height != b.height || a.round != b.round || a.kind != b.kind {
                return Err(Error::BadEvidence("votes are from different signers, heights, rounds or steps".into()));
            }
            if a.block == b.block {
                return Err(Error::BadEvidence("votes are identical, not conflicting".into()));
            }
            for v in [first, second] {
                v.verify(state.chain_id()).map_err(|e| Error::BadSignature(e.to_string()))?;
            }
            check_evidence_age(state, a.height)?;
            let acct = state.account(&first.signer);
            if acct.stake.is_zero() && acct.unbonding.is_zero() {
                return Err(Error::BadEvidence("the signer has no stake to slash".into()));
            }
            (first.signer, a.height.0 | VOTE_KEY_BIT)
        }
    };
    let tombstoned = state.provider(&offender).is_some_and(|p| p.status == ProviderStatus::Tombstoned);
    if tombstoned || state.data.slashed_equivocations.contains(&(offender, key)) {
        return Err(Error::AlreadySlashed);
    }
    let burned = burn_stake_fraction(state, offender, state.params().equivocation_slash_bps)?;
    state.mark_equivocation_slashed((offender, key));
    let mut events = vec![Event::Slashed { account: offender, burned, reason: SlashReason::Equivocation }];
    // A provider is banned for good and its leases settled; a validator that
    // is not a provider loses the stake, and with it power at the next epoch.
    if state.provider(&offender).is_some() {
        events.push(jail(state, offender, None)?);
        events.extend(settle_all_of(state, offender, SettleReason::ProviderSlashed)?);
    }
    Ok(events)
}
