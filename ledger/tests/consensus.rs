//! The consensus engine without a network: a lone validator commits one
//! block per next-height timer (never in a loop), commit certificates are
//! checked strictly, and a restart from the WAL re-signs exactly the same votes.

use std::time::Duration;

use agora_ledger::consensus::certificate::verify_commit;
use agora_ledger::consensus::context::ConsensusValidatorSet;
use agora_ledger::consensus::{Action, Engine, EngineConfig, Input, LastSigned, Recovered, Relay, WalEntry};
use agora_ledger::testkit::{TestChain, chain_id};
use agora_protocol::consensus::{ConsensusMessage, Vote, VoteKind};
use agora_protocol::{Amount, CommitCertificate, CommitSig, Hash, Height, Signed};

fn config() -> EngineConfig {
    EngineConfig { commit_pause: Duration::ZERO, ..EngineConfig::default() }
}

fn commits(actions: &[Action]) -> Vec<u64> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Commit { block, .. } => Some(block.header.height.0),
            _ => None,
        })
        .collect()
}

fn next_height_timer(actions: &[Action]) -> Option<Input> {
    actions.iter().find_map(|a| match a {
        Action::ScheduleTimeout { timer, .. } if timer.is_next_height() => Some(Input::TimeoutElapsed(*timer)),
        _ => None,
    })
}

#[test]
fn a_lone_validator_commits_one_block_per_next_height_timer() {
    let chain = TestChain::new(2, 1, Amount::agr(1_000));
    let mut engine = Engine::new(chain_id(), chain.keys[0].clone(), chain.state(), None, config());
    let now = chain.genesis.genesis_time_ms.0 + 1_000;
    let actions = engine.handle(now, Input::Start);
    assert_eq!(commits(&actions), vec![1], "exactly one block per call, no runaway loop");
    let timer = next_height_timer(&actions).expect("the next height waits on a timer");
    let actions = engine.handle(now + 1_000, timer);
    assert_eq!(commits(&actions), vec![2]);
    assert_eq!(engine.ledger().height(), Height(2));
}

#[test]
fn commit_certificates_need_two_thirds_of_distinct_valid_signers() {
    let chain = TestChain::new(5, 4, Amount::agr(1_000));
    let state = chain.state();
    let set = ConsensusValidatorSet::from_state(&state);
    let block = Hash([7; 32]);
    let sig = |i: usize, block: Hash| {
        let vote = Vote { kind: VoteKind::Precommit, height: Height(1), round: 0, block: Some(block) };
        let s = Signed::sign(vote, &chain.keys[i], &chain_id()).unwrap();
        CommitSig { validator: s.signer, signature: s.signature }
    };
    let cert =
        |sigs: Vec<CommitSig>| CommitCertificate { height: Height(1), round: 0, block_hash: block, signatures: sigs };
    let check = |c: &CommitCertificate| verify_commit(&chain_id(), &set, c, Height(1), block);
    assert!(check(&cert(vec![sig(0, block), sig(1, block), sig(2, block)])).is_ok());
    assert!(check(&cert(vec![sig(0, block), sig(1, block)])).is_err(), "2 of 4 is not more than 2/3");
    assert!(check(&cert(vec![sig(0, block), sig(1, block), sig(1, block)])).is_err(), "a signer counts once");
    assert!(check(&cert(vec![sig(0, block), sig(1, block), sig(4, block)])).is_err(), "account 4 is no validator");
    let other = Hash([8; 32]);
    assert!(check(&cert(vec![sig(0, block), sig(1, block), sig(2, other)])).is_err(), "a vote for another block");
    let mut forged = sig(2, block);
    forged.signature.0[0] ^= 1;
    assert!(check(&cert(vec![sig(0, block), sig(1, block), forged])).is_err());
    assert!(
        verify_commit(&chain_id(), &set, &cert(vec![sig(0, block), sig(1, block), sig(2, block)]), Height(2), block)
            .is_err()
    );
}

fn own_votes(actions: &[Action]) -> Vec<Signed<Vote>> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Broadcast(ConsensusMessage::Vote(v)) => Some(v.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_restart_from_the_wal_re_signs_the_same_votes() {
    // Four validators; we run validator `me` alone, so it prevotes nil after its
    // propose timeout and can go no further: the state a crash would interrupt.
    let chain = TestChain::new(4, 4, Amount::agr(1_000));
    let now = chain.genesis.genesis_time_ms.0 + 1_000;
    let me = 0;
    let mut engine = Engine::new(chain_id(), chain.keys[me].clone(), chain.state(), None, config());
    let mut actions = engine.handle(now, Input::Start);
    let mut wal: Vec<(Height, WalEntry)> = Vec::new();
    let mut votes = Vec::new();
    let mut timers = std::collections::VecDeque::new();
    for step in 0..20u64 {
        for a in &actions {
            match a {
                Action::WalAppend { height, entry, .. } => wal.push((*height, entry.clone())),
                Action::ScheduleTimeout { timer, .. } => timers.push_back(*timer),
                _ => {}
            }
        }
        votes.extend(own_votes(&actions));
        let Some(timer) = timers.pop_front() else { break };
        actions = engine.handle(now + 1_000 * (step + 1), Input::TimeoutElapsed(timer));
    }
    assert!(!votes.is_empty(), "the validator should have voted");
    assert!(wal.iter().any(|(_, e)| matches!(e, WalEntry::Vote(_))), "its votes are in the WAL");
    let recovered = Recovered { wal: &wal, last_signed: None };
    let (_, replayed) =
        Engine::restart(chain_id(), chain.keys[me].clone(), chain.state(), None, config(), recovered, now);
    let replayed = own_votes(&replayed);
    assert!(!replayed.is_empty(), "the replay re-derives and re-sends its votes");
    for v in replayed {
        let before = votes.iter().find(|b| b.body.round == v.body.round && b.body.kind == v.body.kind);
        let before = before.expect("the replay only re-sends votes it cast before the crash");
        assert_eq!(before.body, v.body, "re-signed a different vote after restart");
        assert_eq!(before.signature, v.signature, "ed25519 is deterministic: the same vote, the same signature");
    }
}

/// Delivers every broadcast among `engines` until nothing is left, holding
/// back next-height timers (returned per engine) so the test decides when
/// each engine starts its next height.
fn settle(engines: &mut [Engine], mut pending: Vec<(usize, Action)>, now: u64) -> Vec<Vec<Input>> {
    let mut timers = vec![Vec::new(); engines.len()];
    let mut steps = 0;
    while let Some((from, action)) = pending.pop() {
        steps += 1;
        assert!(steps < 10_000, "messages never settle");
        match action {
            Action::Broadcast(msg) | Action::Rebroadcast(msg) => {
                for to in (0..engines.len()).filter(|&to| to != from) {
                    let out = engines[to].handle(now, Input::Message(msg.clone()));
                    pending.extend(out.into_iter().map(|a| (to, a)));
                }
            }
            Action::ScheduleTimeout { timer, .. } if timer.is_next_height() => {
                timers[from].push(Input::TimeoutElapsed(timer))
            }
            _ => {}
        }
    }
    timers
}

#[test]
fn a_block_that_arrives_before_its_height_is_kept_and_voted_for() {
    // Two equal validators: every height needs both, so a block the slower
    // one dropped would cost the round.
    let chain = TestChain::new(2, 2, Amount::agr(1_000));
    let now = chain.genesis.genesis_time_ms.0 + 1_000;
    let mut engines: Vec<Engine> =
        (0..2).map(|i| Engine::new(chain_id(), chain.keys[i].clone(), chain.state(), None, config())).collect();
    let mut pending = Vec::new();
    for (i, e) in engines.iter_mut().enumerate() {
        pending.extend(e.handle(now, Input::Start).into_iter().map(|a| (i, a)));
    }
    let timers = settle(&mut engines, pending, now);
    assert!(engines.iter().all(|e| e.ledger().height() == Height(1)), "both commit height 1 in round 0");

    // The proposer of height 2 starts it first; its block reaches the other
    // engine while that one is still pausing after height 1.
    let set = ConsensusValidatorSet::from_state(engines[0].ledger());
    let proposer_address = agora_ledger::consensus::context::select_proposer(&set, 2, 0).public_key;
    let proposer = (0..2).find(|&i| chain.keys[i].address() == proposer_address).unwrap();
    let other = 1 - proposer;
    let out = engines[proposer].handle(now + 10, timers[proposer][0].clone());
    let early: Vec<_> =
        out.iter().filter(|a| matches!(a, Action::Broadcast(ConsensusMessage::Block(_)))).cloned().collect();
    assert_eq!(early.len(), 1, "the proposer broadcasts its block for height 2");
    let mut pending: Vec<(usize, Action)> = out.into_iter().map(|a| (proposer, a)).collect();
    // Deliver height-2 messages to the other engine before it starts height 2.
    for (_, a) in pending.drain(..) {
        if let Action::Broadcast(msg) | Action::Rebroadcast(msg) = a {
            let _ = engines[other].handle(now + 10, Input::Message(msg));
        }
    }
    let out = engines[other].handle(now + 20, timers[other][0].clone());
    let prevote = own_votes(&out).into_iter().find(|v| v.body.height == Height(2) && v.body.kind == VoteKind::Prevote);
    let prevote = prevote.expect("it prevotes as soon as it starts height 2, without waiting for a timeout");
    assert!(prevote.body.block.is_some(), "it prevotes the early block, not nil");
    settle(&mut engines, out.into_iter().map(|a| (other, a)).collect(), now + 20);
    assert!(engines.iter().all(|e| e.ledger().height() == Height(2)), "height 2 commits in round 0");
    // Each block was applied once by the engine that checked it, and its
    // result adopted at commit; its proposer built it and committed what
    // the build left, without applying it at all.
    let first_proposer = agora_ledger::consensus::context::select_proposer(&set, 1, 0).public_key;
    for (i, e) in engines.iter().enumerate() {
        let proposed = [first_proposer, proposer_address].iter().filter(|p| **p == chain.keys[i].address()).count();
        assert_eq!(e.blocks_applied(), 2 - proposed as u64, "engine {i} proposed {proposed} of the 2 heights");
    }
    assert_eq!(engines[0].ledger(), engines[1].ledger(), "the builder's state is the state applying gives");
    assert_eq!(engines[0].ledger().root(), engines[1].ledger().root());
}

#[test]
fn a_proposal_naming_another_proposer_in_its_header_is_not_voted_for() {
    let chain = TestChain::new(2, 2, Amount::agr(1_000));
    let now = chain.genesis.genesis_time_ms.0 + 1_000;
    let mut engines: Vec<Engine> =
        (0..2).map(|i| Engine::new(chain_id(), chain.keys[i].clone(), chain.state(), None, config())).collect();
    let set = ConsensusValidatorSet::from_state(engines[0].ledger());
    let proposer_address = agora_ledger::consensus::context::select_proposer(&set, 1, 0).public_key;
    let proposer = (0..2).find(|&i| chain.keys[i].address() == proposer_address).unwrap();
    let other = 1 - proposer;
    let _ = engines[other].handle(now, Input::Start);
    let out = engines[proposer].handle(now, Input::Start);
    let Some(ConsensusMessage::Block(signed)) = out.iter().find_map(|a| match a {
        Action::Broadcast(m @ ConsensusMessage::Block(_)) => Some(m.clone()),
        _ => None,
    }) else {
        panic!("the proposer broadcasts its block")
    };
    // The round's proposer signs a block whose header names the other
    // validator, and a proposal for it.
    let mut body = signed.body.clone();
    body.block.header.proposer = chain.keys[other].address();
    let forged_hash = body.block.hash();
    let forged = Signed::sign(body, &chain.keys[proposer], &chain_id()).unwrap();
    let proposal_for = |hash| {
        let p = agora_protocol::consensus::Proposal { height: Height(1), round: 0, block: hash, pol_round: None };
        ConsensusMessage::Proposal(Signed::sign(p, &chain.keys[proposer], &chain_id()).unwrap())
    };
    let mut reply = engines[other].handle(now, Input::Message(proposal_for(forged_hash)));
    reply.extend(engines[other].handle(now, Input::Message(ConsensusMessage::Block(Box::new(forged)))));
    assert!(
        !own_votes(&reply).iter().any(|v| v.body.block == Some(forged_hash)),
        "a block whose header names another proposer gets no vote"
    );
    // The same steps with the genuine block get its vote: the check above could have failed.
    let mut engine = Engine::new(chain_id(), chain.keys[other].clone(), chain.state(), None, config());
    let _ = engine.handle(now, Input::Start);
    let genuine = signed.body.block.hash();
    let mut reply = engine.handle(now, Input::Message(proposal_for(genuine)));
    reply.extend(engine.handle(now, Input::Message(ConsensusMessage::Block(signed.clone()))));
    assert!(own_votes(&reply).iter().any(|v| v.body.block == Some(genuine)), "{reply:?}");
}

/// Two different valid blocks for height 1 from the round-0 proposer (an
/// equivocating proposer), each as the Proposal and ProposalBlock messages
/// a validator receives.
fn two_proposals(chain: &TestChain, now: u64) -> (usize, [(Hash, [ConsensusMessage; 2]); 2]) {
    use agora_protocol::consensus::{Proposal, ProposalBlock};
    let set = ConsensusValidatorSet::from_state(&chain.state());
    let proposer_address = agora_ledger::consensus::context::select_proposer(&set, 1, 0).public_key;
    let proposer = (0..chain.keys.len()).find(|&i| chain.keys[i].address() == proposer_address).unwrap();
    let key = &chain.keys[proposer];
    let messages = |time: u64| {
        let mut state = chain.state();
        let builder = agora_ledger::BlockBuilder::new(&mut state, agora_protocol::TimestampMs(time), proposer_address);
        let block = builder.unwrap().finish(None).unwrap();
        let hash = block.hash();
        let proposal = Proposal { height: Height(1), round: 0, block: hash, pol_round: None };
        let body = ProposalBlock { round: 0, pol_round: None, block };
        let proposal = ConsensusMessage::Proposal(Signed::sign(proposal, key, &chain_id()).unwrap());
        (hash, [proposal, ConsensusMessage::Block(Box::new(Signed::sign(body, key, &chain_id()).unwrap()))])
    };
    (proposer, [messages(now), messages(now + 1)])
}

fn feed(engine: &mut Engine, now: u64, messages: &[ConsensusMessage; 2]) -> Vec<Action> {
    messages.iter().flat_map(|m| engine.handle(now, Input::Message(m.clone()))).collect()
}

#[test]
fn the_double_sign_guard_is_persisted_before_a_vote_leaves_and_refuses_a_conflict_after_the_wal_is_lost() {
    let chain = TestChain::new(4, 4, Amount::agr(1_000));
    let now = chain.genesis.genesis_time_ms.0 + 1_000;
    let (proposer, [(a, block_a), (b, block_b)]) = two_proposals(&chain, now);
    let me = (proposer + 1) % 4;
    let mut engine = Engine::new(chain_id(), chain.keys[me].clone(), chain.state(), None, config());
    let _ = engine.handle(now, Input::Start);
    let actions = feed(&mut engine, now, &block_a);
    let vote_at = actions.iter().position(
        |a| matches!(a, Action::Broadcast(ConsensusMessage::Vote(v)) if v.signer == chain.keys[me].address()),
    );
    let vote_at = vote_at.expect("it prevotes block A");
    let persisted: Vec<(usize, LastSigned)> = actions
        .iter()
        .enumerate()
        .filter_map(|(i, a)| match a {
            Action::PersistSigned(l) => Some((i, l.clone())),
            _ => None,
        })
        .collect();
    let (at, last) = persisted.last().cloned().expect("the guard's state is handed out to persist");
    assert!(at < vote_at, "persisted before the vote is broadcast");
    assert_eq!((last.height, last.round, last.value), (Height(1), 0, Some(a)));
    let durable_own = actions.iter().any(|x| matches!(x, Action::WalAppend { entry: WalEntry::Vote(v), durable: true, .. } if v.signer == chain.keys[me].address()));
    assert!(durable_own, "its own vote goes to the WAL with an fdatasync");

    // A power cut takes the whole WAL (say the disk lost it); the guard's file survived.
    let lost = Recovered { wal: &[], last_signed: Some(&last) };
    let (mut engine, _) = Engine::restart(chain_id(), chain.keys[me].clone(), chain.state(), None, config(), lost, now);
    let actions = feed(&mut engine, now, &block_b);
    assert!(
        !own_votes(&actions).iter().any(|v| v.signer == chain.keys[me].address() && v.body.block == Some(b)),
        "no prevote for the equivocating proposer's second block"
    );
    assert!(actions.iter().any(|x| matches!(x, Action::SignRefused(r) if r.contains("already signed Prevote"))));

    // Without the guard's state the same restart signs the conflicting vote: the check above could fail.
    let (mut engine, _) =
        Engine::restart(chain_id(), chain.keys[me].clone(), chain.state(), None, config(), Recovered::default(), now);
    let actions = feed(&mut engine, now, &block_b);
    assert!(own_votes(&actions).iter().any(|v| v.signer == chain.keys[me].address() && v.body.block == Some(b)));
}

#[test]
fn only_current_validators_messages_for_this_height_or_the_next_are_relayed() {
    use agora_protocol::consensus::{CertSig, VoteCertificate};
    let chain = TestChain::new(5, 4, Amount::agr(1_000));
    let engine = Engine::new(chain_id(), chain.keys[0].clone(), chain.state(), None, config());
    assert_eq!(engine.height(), Height(1));
    let vote = |signer: usize, h: u64| {
        let v = Vote { kind: VoteKind::Prevote, height: Height(h), round: 0, block: None };
        ConsensusMessage::Vote(Signed::sign(v, &chain.keys[signer], &chain_id()).unwrap())
    };
    assert_eq!(engine.relay(&vote(1, 1)), Relay::Forward);
    assert_eq!(engine.relay(&vote(1, 2)), Relay::Forward, "the next height too");
    assert_eq!(engine.relay(&vote(1, 9)), Relay::Ahead, "far ahead: fed (sync), not relayed");
    assert_eq!(engine.relay(&vote(1, 0)), Relay::Drop, "an old height");
    assert_eq!(engine.relay(&vote(4, 1)), Relay::Drop, "account 4 holds no validator seat");
    let stranger = agora_protocol::Keypair::from_seed_phrase("consensus-stranger");
    let v = Vote { kind: VoteKind::Prevote, height: Height(1), round: 0, block: None };
    let forged = ConsensusMessage::Vote(Signed::sign(v, &stranger, &chain_id()).unwrap());
    assert_eq!(engine.relay(&forged), Relay::Drop);
    let cert = |voters: &[usize]| {
        let votes = voters
            .iter()
            .map(|&i| {
                let v = Vote { kind: VoteKind::Prevote, height: Height(1), round: 0, block: Some(Hash([1; 32])) };
                let s = Signed::sign(v, &chain.keys[i], &chain_id()).unwrap();
                CertSig {
                    validator: s.signer,
                    kind: VoteKind::Prevote,
                    block: Some(Hash([1; 32])),
                    signature: s.signature,
                }
            })
            .collect();
        ConsensusMessage::Certificate(VoteCertificate { height: Height(1), round: 0, round_kind: None, votes })
    };
    assert_eq!(engine.relay(&cert(&[0, 1, 2])), Relay::Forward);
    assert_eq!(engine.relay(&cert(&[0, 1, 4])), Relay::Drop, "a certificate with a stranger's vote");
    assert_eq!(engine.relay(&cert(&[])), Relay::Drop);
}

/// A lone validator (account 0 of `chain`) commits `n` blocks, a second
/// apart; `between` may feed it after each commit (height, engine). Returns
/// it, each block with its certificate, and the time after the last.
fn lone_validator(
    chain: &TestChain,
    n: usize,
    mut between: impl FnMut(usize, &mut Engine, u64),
) -> (Engine, Vec<(Box<agora_protocol::Block>, CommitCertificate)>, u64) {
    let mut now = chain.genesis.genesis_time_ms.0 + 1_000;
    let mut leader = Engine::new(chain_id(), chain.keys[0].clone(), chain.state(), None, config());
    let mut committed = Vec::new();
    let mut input = Input::Start;
    while committed.len() < n {
        let actions = leader.handle(now, input);
        for a in &actions {
            if let Action::Commit { block, certificate, .. } = a {
                committed.push((block.clone(), certificate.clone()));
            }
        }
        between(committed.len(), &mut leader, now);
        input = next_height_timer(&actions).expect("a next-height timer");
        now += 1_000;
    }
    (leader, committed, now)
}

#[test]
fn a_synced_block_whose_carried_certificate_was_swapped_is_refused() {
    // A lone validator commits three blocks; a follower syncs them.
    let chain = TestChain::new(3, 1, Amount::agr(1_000));
    let (_, committed, now) = lone_validator(&chain, 3, |_, _, _| {});
    let follower_config = EngineConfig { is_validator: false, ..config() };
    let mut follower = Engine::new(chain_id(), chain.keys[1].clone(), chain.state(), None, follower_config);
    let synced = |(b, c): &(Box<agora_protocol::Block>, CommitCertificate)| Input::Synced {
        block: b.clone(),
        certificate: c.clone(),
    };
    let _ = follower.handle(now, synced(&committed[0]));
    assert_eq!(follower.ledger().height(), Height(1));
    // Block 2 carries block 1's certificate; a relayer strips its signatures
    // (the block hash, which the certificate for block 2 signs, is unchanged).
    let (block2, cert2) = committed[1].clone();
    let mut stripped = block2.clone();
    stripped.last_commit.as_mut().unwrap().signatures.clear();
    assert_eq!(stripped.hash(), block2.hash(), "the header alone is hashed");
    let _ = follower.handle(now, Input::Synced { block: stripped, certificate: cert2.clone() });
    assert_eq!(follower.ledger().height(), Height(1), "refused: the header commits to the certificate");
    let mut swapped = block2.clone();
    swapped.last_commit = None;
    let _ = follower.handle(now, Input::Synced { block: swapped, certificate: cert2.clone() });
    assert_eq!(follower.ledger().height(), Height(1));
    let _ = follower.handle(now, Input::Synced { block: block2, certificate: cert2 });
    assert_eq!(follower.ledger().height(), Height(2), "the genuine block applies");
}

#[test]
fn a_follower_commits_gossiped_decided_blocks_checked_against_the_validators() {
    use agora_ledger::consensus::Decided;
    use agora_protocol::DecidedBlock;
    // A lone validator commits three blocks, the second with a transfer.
    let chain = TestChain::new(3, 1, Amount::agr(1_000));
    let (leader, committed, now) = lone_validator(&chain, 3, |height, leader, now| {
        if height == 1 {
            let tx = agora_ledger::testkit::transfer(&chain.keys[0], 0, chain.address(2), Amount::agr(1));
            let _ = leader.handle(now, Input::Tx(Box::new(tx)));
        }
    });
    let decided: Vec<DecidedBlock> =
        committed.into_iter().map(|(block, certificate)| DecidedBlock { block: *block, certificate }).collect();
    assert_eq!(decided[1].block.txs.len(), 1, "block 2 carries the transfer");
    let follower_config = EngineConfig { is_validator: false, ..config() };
    let mut follower = Engine::new(chain_id(), chain.keys[1].clone(), chain.state(), None, follower_config);
    let take = |follower: &mut Engine, d: &DecidedBlock| match follower.check_decided(d.clone()) {
        Decided::Next(checked) => {
            let actions = follower.handle(now, Input::Decided(checked));
            ("next", actions)
        }
        Decided::Ahead => ("ahead", follower.handle(now, Input::PeerAhead)),
        Decided::Drop => ("drop", Vec::new()),
        Decided::Invalid => ("invalid", Vec::new()),
    };
    let (verdict, actions) = take(&mut follower, &decided[0]);
    assert_eq!((verdict, commits(&actions)), ("next", vec![1]));
    assert_eq!(take(&mut follower, &decided[0]).0, "drop", "a copy of a committed block is not forwarded again");
    let mut forged_ahead = decided[2].clone();
    forged_ahead.certificate.signatures[0].signature = decided[1].certificate.signatures[0].signature;
    assert_eq!(take(&mut follower, &forged_ahead).0, "invalid", "a forged signature, whatever the set at its height");
    let (verdict, actions) = take(&mut follower, &decided[2]);
    assert_eq!(verdict, "ahead");
    assert!(
        actions.iter().any(|a| matches!(a, Action::SyncNeeded { have } if *have == Height(1))),
        "a later block asks peers for the gap"
    );

    // Certificates that do not commit block 2 for its validators.
    let mut stranger = decided[1].clone();
    stranger.certificate.signatures[0].validator = chain.address(1);
    assert_eq!(take(&mut follower, &stranger).0, "drop", "signed by a key not in the set: maybe a set not seen yet");
    let mut forged = decided[1].clone();
    forged.certificate.signatures[0].signature = decided[0].certificate.signatures[0].signature;
    assert_eq!(take(&mut follower, &forged).0, "invalid");
    let mut other_block = decided[1].clone();
    other_block.certificate = decided[0].certificate.clone();
    assert_eq!(take(&mut follower, &other_block).0, "invalid", "block 1's certificate for block 2");
    // The header certified, the body swapped: checked, but it does not apply.
    let mut emptied = decided[1].clone();
    emptied.block.txs.clear();
    let (verdict, actions) = take(&mut follower, &emptied);
    assert_eq!((verdict, commits(&actions)), ("next", vec![]));
    assert_eq!(follower.ledger().height(), Height(1), "a body its header does not commit to is refused");

    let (verdict, actions) = take(&mut follower, &decided[1]);
    assert_eq!((verdict, commits(&actions)), ("next", vec![2]));
    let (verdict, actions) = take(&mut follower, &decided[2]);
    assert_eq!((verdict, commits(&actions)), ("next", vec![3]));
    assert_eq!(follower.ledger().root(), leader.ledger().root(), "the follower holds the validator's state");
}
