//! The daemon's part in state sync as a serving peer: every
//! `snapshot_interval_blocks` it takes a snapshot of the committed state on
//! a blocking thread (from a copy of the state, one snapshot at a time, so
//! the consensus loop never waits for it), keeps the newest on its shelf,
//! and answers peers' offer and chunk requests off the loop within a
//! per-peer quota (a request is unauthenticated: over the quota it is
//! refused at once, at the cost of a lookup).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use agora_ledger::store::BlockReader;
use agora_protocol::snapshot::{SnapshotRefusal, SnapshotRequest, SnapshotResponse};
use agora_protocol::{Block, CommitCertificate};
use libp2p::PeerId;
use libp2p::request_response::{self, Message};
use tokio::sync::mpsc;

use super::{Daemon, now_ms};

/// Snapshot requests of one peer being answered at once, at most.
pub const MAX_SNAPSHOT_IN_FLIGHT_PER_PEER: u32 = 2;
/// Snapshot requests one peer may have answered per second (a joining node
/// asks for one chunk at a time, each up to 4 MiB).
pub const MAX_SNAPSHOT_REQUESTS_PER_PEER_PER_SEC: u32 = 20;
/// Snapshot answers built off the loop, queued for sending at most.
pub const SNAPSHOT_SERVED_QUEUE: usize = 16;

type Served = (PeerId, request_response::ResponseChannel<SnapshotResponse>, SnapshotResponse);

/// The serving side of state sync.
pub(super) struct SnapshotServer {
    /// Snapshots kept and served, and the validator-set transitions served with them.
    reader: BlockReader,
    /// Blocks between snapshots (0: none taken).
    interval: u64,
    /// A snapshot is being taken (the next due one is skipped meanwhile).
    taking: Arc<AtomicBool>,
    quota: crate::quota::PeerQuota<PeerId>,
    served_tx: mpsc::Sender<Served>,
    pub(super) served_rx: mpsc::Receiver<Served>,
}

impl SnapshotServer {
    pub(super) fn new(reader: BlockReader, interval: u64) -> SnapshotServer {
        let (served_tx, served_rx) = mpsc::channel(SNAPSHOT_SERVED_QUEUE);
        SnapshotServer {
            reader,
            interval,
            taking: Arc::default(),
            quota: crate::quota::PeerQuota::new(
                MAX_SNAPSHOT_IN_FLIGHT_PER_PEER,
                MAX_SNAPSHOT_REQUESTS_PER_PEER_PER_SEC,
            ),
            served_tx,
            served_rx,
        }
    }
}

impl Daemon {
    /// After committing `block`: takes a snapshot of the state if one is due.
    pub(super) fn take_snapshot_if_due(&self, block: &Block, certificate: &CommitCertificate) {
        let server = &self.sync.snapshots;
        let height = block.header.height.0;
        if server.interval == 0 || height % server.interval != 0 || server.taking.swap(true, Ordering::AcqRel) {
            return;
        }
        let state = self.store.state().clone();
        let (header, certificate) = (block.header.clone(), certificate.clone());
        let (shelf, taking) = (server.reader.snapshots().clone(), server.taking.clone());
        tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            match agora_ledger::snapshot::take(&state, header, certificate).and_then(|s| {
                shelf.keep(&s)?;
                Ok(s.offer)
            }) {
                Ok(offer) => tracing::info!(
                    height,
                    chunks = offer.chunks,
                    leaves = offer.leaves,
                    ms = started.elapsed().as_millis() as u64,
                    "state snapshot taken for peers joining by state sync"
                ),
                Err(e) => tracing::warn!(height, error = %e, "cannot take a state snapshot"),
            }
            taking.store(false, Ordering::Release);
        });
    }

    pub(super) fn on_snapshot_event(&mut self, event: request_response::Event<SnapshotRequest, SnapshotResponse>) {
        // This node only asks for snapshots before it starts (`state_sync`):
        // answers and failures here are for requests it never sent.
        if let request_response::Event::Message { peer, message: Message::Request { request, channel, .. }, .. } = event
        {
            self.serve_snapshot(peer, request, channel);
        }
    }

    fn serve_snapshot(
        &mut self,
        peer: PeerId,
        request: SnapshotRequest,
        channel: request_response::ResponseChannel<SnapshotResponse>,
    ) {
        let server = &mut self.sync.snapshots;
        if !server.quota.admit(peer, now_ms()) {
            self.shared.metrics.sync_refused.inc();
            let busy = SnapshotResponse::Refused(SnapshotRefusal::Busy);
            let _ = self.net.swarm.behaviour_mut().snapshot.send_response(channel, busy);
            return;
        }
        let (reader, done) = (server.reader.clone(), server.served_tx.clone());
        tokio::task::spawn_blocking(move || {
            let response = crate::state_sync::answer(&reader, &request).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "cannot read a snapshot to serve");
                SnapshotResponse::Refused(SnapshotRefusal::NotHeld)
            });
            // A blocking thread may wait for room: dropping the answer would leak the peer's slot.
            let _ = done.blocking_send((peer, channel, response));
        });
    }

    /// An answer built off the loop: send it and free the peer's slot.
    pub(super) fn on_snapshot_served(
        &mut self,
        peer: PeerId,
        channel: request_response::ResponseChannel<SnapshotResponse>,
        response: SnapshotResponse,
    ) {
        self.sync.snapshots.quota.done(&peer);
        let _ = self.net.swarm.behaviour_mut().snapshot.send_response(channel, response);
    }
}
