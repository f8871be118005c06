//! Jobs and the lease protocol (request-response `/agora/lease/1`): a buyer
//! proposes a signed lease request with its job spec to the provider, which
//! answers with a countersignature or a refusal; later the buyer asks for the
//! job's logs with a signed request only the lease's buyer can make. The
//! holder of an auctioned lease (GPU time bought ahead, with no job yet)
//! starts jobs on it with a signed run request.
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
    /// Whether the job asks for outbound network access; jobs run with no
    /// network unless they ask and the provider allows it.
    #[serde(default)]
    pub egress: bool,
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
        if let Some(image) = &self.image {
            validate_image_ref(image)?;
        }
        codec::encode(self).map(|_| ())
    }

    /// The hash a lease request commits to.
    pub fn hash(&self) -> Result<Hash, Error> {
        Ok(Hash::tagged(b"agora/job-spec/1", &codec::encode(self)?))
    }
}

/// Checks a container image reference against the registry grammar
/// (`[registry[:port]/]path[:tag][@sha256:digest]`, lower-case path
/// components). Anything else is refused, so an image can never be read as an
/// option (`--privileged`) or carry a second argument.
pub fn validate_image_ref(image: &str) -> Result<(), Error> {
    let invalid = |reason: &str| Err(Error::Invalid { what: "image", reason: format!("{image:?}: {reason}") });
    if image.is_empty() || image.len() > MAX_IMAGE_REF_LEN {
        return invalid("must be 1 to 255 characters");
    }
    let (name_tag, digest) = match image.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (image, None),
    };
    if let Some(d) = digest {
        let hex = d.strip_prefix("sha256:").unwrap_or("");
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return invalid("a digest must be sha256: and 64 lower-case hex digits");
        }
    }
    // A tag follows the last ':' after the last '/' (a ':' before it is a registry port).
    let last_slash = name_tag.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match name_tag[last_slash..].rfind(':') {
        Some(i) => (&name_tag[..last_slash + i], Some(&name_tag[last_slash + i + 1..])),
        None => (name_tag, None),
    };
    if let Some(tag) = tag {
        let ok = (1..=128).contains(&tag.len())
            && tag.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
            && !tag.starts_with(['.', '-']);
        if !ok {
            return invalid("a tag is 1 to 128 of [A-Za-z0-9_.-], not starting with '.' or '-'");
        }
    }
    let mut parts: Vec<&str> = name.split('/').collect();
    // The first part is a registry host when it has a '.' or ':' or is localhost.
    if parts.len() > 1 && (parts[0].contains(['.', ':']) || parts[0] == "localhost") {
        let host = parts.remove(0);
        let (h, port) = host.split_once(':').unwrap_or((host, "1"));
        let host_ok = !h.is_empty()
            && h.split('.').all(|l| {
                !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') && !l.starts_with('-')
            });
        if !host_ok || port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) || port.len() > 5 {
            return invalid("the registry host is not a valid host[:port]");
        }
    }
    let component_ok = |c: &str| {
        let b = c.as_bytes();
        !c.is_empty()
            && b[0].is_ascii_lowercase() | b[0].is_ascii_digit()
            && b[b.len() - 1].is_ascii_lowercase() | b[b.len() - 1].is_ascii_digit()
            && c.bytes().all(|x| x.is_ascii_lowercase() || x.is_ascii_digit() || b"._-".contains(&x))
    };
    if parts.is_empty() || !parts.iter().all(|c| component_ok(c)) {
        return invalid("the name must be lower-case letters, digits and . _ - between / (e.g. ubuntu:24.04)");
    }
    Ok(())
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

/// A job to run on an auctioned lease; only the lease's holder may sign it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRequest {
    pub lease_id: LeaseId,
    pub spec: JobSpec,
    /// When it was signed: the provider refuses stale requests and any not
    /// newer than the last one it ran for this lease (no replays).
    pub issued_at_ms: TimestampMs,
}

crate::signed_wire_type!(RunRequest, Domain::RunRequest, "run request", MAX_JOB_SPEC_BYTES + 1024);

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
    /// Start a job on an auctioned lease.
    Run(Signed<RunRequest>),
}

/// Why a provider refused a lease-protocol request. Callers act on `code`
/// (e.g. try the next offer on `NoFreeGpus`); `detail` is for people.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRefusal {
    pub code: RefusalCode,
    pub detail: String,
}

impl LeaseRefusal {
    pub fn new(code: RefusalCode, detail: impl Into<String>) -> LeaseRefusal {
        LeaseRefusal { code, detail: detail.into() }
    }
}

impl std::fmt::Display for LeaseRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.detail)
    }
}

/// The kinds of refusal. Never reorder: the index is on the wire.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RefusalCode {
    /// The node has no GPUs to lease (or is not this request's provider).
    NotProvider,
    /// The request names another provider.
    WrongProvider,
    /// This request was already accepted once.
    AlreadyAccepted,
    /// The request has expired or expires too far ahead.
    RequestExpired,
    /// Jailed, tombstoned, unregistered or under-staked.
    ProviderInactive,
    /// The spec does not match the request's hash, or is malformed.
    SpecMismatch,
    /// Plain or container jobs, or this image, not run here.
    RunnerUnsupported,
    /// Network access not given.
    EgressRefused,
    DurationTooLong,
    PriceBelowAsk,
    /// No GPUs of that model at all.
    NoSuchGpu,
    /// Not enough of them free now (another offer may have some).
    NoFreeGpus,
    /// The buyer's balance cannot cover this (and its unopened requests).
    InsufficientBalance,
    /// The buyer holds too many accepted, unopened requests.
    TooManyPending,
    /// The provider is busy; retry shortly.
    Busy,
    /// A logs request that is not from the lease's buyer, stale, or badly signed.
    NotBuyer,
    /// No such lease here.
    UnknownLease,
    /// Something failed on the provider's side.
    Internal,
    /// A job already runs on this lease; wait for it to end (or stop it).
    JobRunning,
    /// The lease was opened for one job (spot): it runs no other.
    NotReservation,
    /// The lease's time has not begun yet.
    NotStarted,
}

impl RefusalCode {
    /// The code as the API and CLI show it.
    pub fn as_str(&self) -> &'static str {
        match self {
            RefusalCode::NotProvider => "not_provider",
            RefusalCode::WrongProvider => "wrong_provider",
            RefusalCode::AlreadyAccepted => "already_accepted",
            RefusalCode::RequestExpired => "request_expired",
            RefusalCode::ProviderInactive => "provider_inactive",
            RefusalCode::SpecMismatch => "spec_mismatch",
            RefusalCode::RunnerUnsupported => "runner_unsupported",
            RefusalCode::EgressRefused => "egress_refused",
            RefusalCode::DurationTooLong => "duration_too_long",
            RefusalCode::PriceBelowAsk => "price_below_ask",
            RefusalCode::NoSuchGpu => "no_such_gpu",
            RefusalCode::NoFreeGpus => "no_free_gpus",
            RefusalCode::InsufficientBalance => "insufficient_balance",
            RefusalCode::TooManyPending => "too_many_pending",
            RefusalCode::Busy => "busy",
            RefusalCode::NotBuyer => "not_buyer",
            RefusalCode::UnknownLease => "unknown_lease",
            RefusalCode::Internal => "internal",
            RefusalCode::JobRunning => "job_running",
            RefusalCode::NotReservation => "not_reservation",
            RefusalCode::NotStarted => "not_started",
        }
    }
}

/// The provider's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LeaseRpcReply {
    Accepted(Signed<LeaseAccept>),
    /// Why not: a code to act on and a sentence for the buyer.
    Refused(LeaseRefusal),
    Logs(LogChunk),
    /// The provider's answer to a probe, over the connection the probe came on.
    Alive(Signed<crate::liveness::Heartbeat>),
    /// A run request's job started, on these GPUs.
    Started {
        gpu_ids: Vec<String>,
    },
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_references_follow_the_registry_grammar() {
        let digest = format!("ubuntu@sha256:{}", "a".repeat(64));
        for ok in [
            "ubuntu",
            "ubuntu:24.04",
            "library/ubuntu:latest",
            "ghcr.io/org/app:v1.2",
            "localhost:5000/job",
            "registry.example.com:443/a/b/c:tag_1",
            "agora-test-busybox:1",
            digest.as_str(),
        ] {
            validate_image_ref(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in [
            "",
            "--privileged",
            "-v/:/host",
            "--volume=/:/host",
            "--pid=host",
            "Ubuntu",
            "ubuntu:",
            "ubuntu:-x",
            "ubuntu latest",
            "ubuntu\n",
            "/ubuntu",
            "ubuntu/",
            "a//b",
            "ubuntu@sha256:xyz",
            "ubuntu@md5:aaaa",
            "host:99999999/x",
        ] {
            assert!(validate_image_ref(bad).is_err(), "{bad:?} must be refused");
        }
        assert!(validate_image_ref(&"a".repeat(MAX_IMAGE_REF_LEN + 1)).is_err());
    }

    #[test]
    fn a_spec_with_an_option_as_image_is_invalid() {
        let spec =
            JobSpec { command: vec!["true".into()], env: vec![], image: Some("--privileged".into()), egress: false };
        assert!(spec.validate().unwrap_err().to_string().contains("--privileged"));
    }
}
