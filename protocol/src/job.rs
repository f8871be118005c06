//! Jobs and the lease protocol (request-response `/agora/lease/1`): a buyer
//! proposes a signed lease request with its job spec to the provider, which
//! answers with a countersignature or a refusal; later the buyer asks for the
//! job's logs with a signed request only the lease's buyer can make.
//! Validators also probe silent providers over it.

use serde::{Deserialize, Serialize};

use crate::codec::{self, Wire};
use crate::error::Error;
use crate::ids::{Hash, LeaseId, TimestampMs};
use crate::limits::*;
use crate::market::{LeaseAccept, LeaseRequest};
use crate::sign::{Domain, Signed};

/// What the provider runs. Its hash is in the signed lease request, so the
/// provider can run nothing else under that lease.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSpec {
    /// Program and arguments; run directly (no shell unless the program is one).
    pub command: Vec<String>,
    /// Environment the job gets on top of a cleared one.
    pub env: Vec<(String, String)>,
    /// A container image to run the command in, where the provider allows it.
    pub image: Option<String>,
}

impl Wire for JobSpec {
    const NAME: &'static str = "job spec";
    const VERSION: u8 = 1;
    const MAX_BYTES: usize = MAX_JOB_SPEC_BYTES;
}

impl JobSpec {
    pub fn validate(&self) -> Result<(), Error> {
        let invalid = |reason: &str| Err(Error::Invalid { what: "job spec", reason: reason.to_string() });
        if self.command.is_empty() || self.command[0].is_empty() {
            return invalid("the command is empty");
        }
        if self.command.len() > MAX_JOB_ARGS || self.env.len() > MAX_JOB_ARGS {
            return invalid("too many arguments or environment variables");
        }
        let bad_name = |k: &str| k.is_empty() || k.contains('=') || k.contains('\0');
        if self.env.iter().any(|(k, v)| bad_name(k) || v.contains('\0')) {
            return invalid("environment names must be non-empty without '=' or NUL");
        }
        if self.command.iter().any(|a| a.contains('\0')) {
            return invalid("arguments must not contain NUL");
        }
        codec::encode(self).map(|_| ())
    }

    /// The hash a lease request commits to.
    pub fn hash(&self) -> Result<Hash, Error> {
        Ok(Hash::tagged(b"agora/job-spec/1", &codec::encode(self)?))
    }
}

/// A request for a lease's logs from `offset`; only the lease's buyer may sign it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogsRequest {
    pub lease_id: LeaseId,
    pub offset: u64,
    /// When it was signed: the provider refuses stale requests (no replays later).
    pub issued_at_ms: TimestampMs,
}

crate::signed_wire_type!(LogsRequest, Domain::LogsRequest, "logs request", 1024);

/// Where a lease's job stands, as its provider sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobState {
    /// Accepted; waiting for the lease to be committed.
    Waiting,
    Running,
    /// Ended by itself with this exit code (None: killed by a signal).
    Exited {
        code: Option<i32>,
    },
    /// Stopped by the provider: cancelled, expired, or the provider restarted.
    Stopped {
        reason: String,
    },
}

/// A piece of a job's combined stdout and stderr.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogChunk {
    pub data: Vec<u8>,
    /// Where the next request should start.
    pub next_offset: u64,
    /// Bytes before this offset were dropped by the provider's log cap.
    pub first_available: u64,
    pub state: JobState,
}

/// A message of the lease protocol.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LeaseRpc {
    Propose {
        request: Signed<LeaseRequest>,
        spec: JobSpec,
    },
    Logs(Signed<LogsRequest>),
    /// A validator checking a silent provider: answer with a fresh heartbeat.
    Probe,
}

/// The provider's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LeaseRpcReply {
    Accepted(Signed<LeaseAccept>),
    /// A plain sentence for the buyer, e.g. "provider has 0 free H100".
    Refused(String),
    Logs(LogChunk),
    /// The provider's answer to a probe, over the connection the probe came on.
    Alive(Signed<crate::liveness::Heartbeat>),
}

impl Wire for LeaseRpc {
    const NAME: &'static str = "lease rpc";
    const VERSION: u8 = 1;
    const MAX_BYTES: usize = MAX_LEASE_RPC_BYTES;
}

impl Wire for LeaseRpcReply {
    const NAME: &'static str = "lease rpc reply";
    const VERSION: u8 = 1;
    const MAX_BYTES: usize = MAX_LEASE_RPC_BYTES;
}
