//! Market messages: a provider's signed offer, a buyer's signed lease request
//! and the provider's countersigned acceptance. The lease id is the hash of
//! the signed request, so one request can open at most one lease.

use serde::{Deserialize, Serialize};

use crate::address::Address;
use crate::amount::Amount;
use crate::codec;
use crate::error::Error;
use crate::ids::{Hash, LeaseId, TimestampMs};
use crate::limits::*;
use crate::sign::{Domain, Signed};

/// One kind of GPU on a host. `simulated` GPUs exist only in software (testnets)
/// and are labelled so everywhere they appear.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuSpec {
    pub model: String,
    pub vram_mib: u32,
    pub count: u32,
    pub simulated: bool,
}

impl GpuSpec {
    pub fn validate(&self) -> Result<(), Error> {
        let invalid = |reason: &str| Err(Error::Invalid { what: "gpu spec", reason: reason.to_string() });
        if self.model.is_empty() || self.model.len() > MAX_GPU_MODEL_LEN {
            return invalid("model name must be 1 to 48 bytes");
        }
        if self.count == 0 || self.count > MAX_GPUS_PER_KIND {
            return invalid("count must be 1 to 64");
        }
        Ok(())
    }
}

/// Checks a provider's GPU list: 1 to `MAX_GPU_KINDS` valid entries.
pub fn validate_gpus(gpus: &[GpuSpec]) -> Result<(), Error> {
    if gpus.is_empty() || gpus.len() > MAX_GPU_KINDS {
        return Err(Error::Invalid { what: "gpu list", reason: format!("must list 1 to {MAX_GPU_KINDS} GPU kinds") });
    }
    gpus.iter().try_for_each(GpuSpec::validate)
}

/// Checks a region name: 1 to `MAX_REGION_LEN` printable ASCII bytes.
pub fn validate_region(region: &str) -> Result<(), Error> {
    if region.is_empty() || region.len() > MAX_REGION_LEN || !region.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Error::Invalid { what: "region", reason: "must be 1 to 32 printable ASCII characters".into() });
    }
    Ok(())
}

/// What a job gets for each leased GPU on a provider's host: the sandbox's
/// CPU, memory and scratch limits, and whether jobs may reach the network.
/// A lease of N GPUs gets N times the per-GPU figures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobResources {
    /// CPU time per GPU in thousandths of a core (1000 = one core).
    pub cpu_millicores_per_gpu: u32,
    /// Memory per GPU (scratch files count against it: scratch is in memory).
    pub memory_mib_per_gpu: u32,
    /// Writable scratch space per GPU.
    pub scratch_mib_per_gpu: u32,
    /// Whether the provider gives jobs that ask for it outbound network access.
    pub egress: bool,
}

impl JobResources {
    pub fn validate(&self) -> Result<(), Error> {
        let ok = (1..=MAX_CPU_MILLICORES_PER_GPU).contains(&self.cpu_millicores_per_gpu)
            && (MIN_JOB_MEMORY_MIB..=MAX_JOB_MEMORY_MIB_PER_GPU).contains(&self.memory_mib_per_gpu)
            && (1..=MAX_JOB_MEMORY_MIB_PER_GPU).contains(&self.scratch_mib_per_gpu);
        if !ok {
            return Err(Error::Invalid {
                what: "job resources",
                reason: format!(
                    "CPU must be 1 to {MAX_CPU_MILLICORES_PER_GPU} millicores, memory {MIN_JOB_MEMORY_MIB} to \
                     {MAX_JOB_MEMORY_MIB_PER_GPU} MiB and scratch 1 to {MAX_JOB_MEMORY_MIB_PER_GPU} MiB per GPU"
                ),
            });
        }
        Ok(())
    }
}

/// A provider's advertisement; the signer is the provider.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offer {
    /// Increases with every new offer from the same provider; newest wins.
    pub seq: u64,
    pub gpus: Vec<GpuSpec>,
    pub price_per_gpu_hour: Amount,
    pub max_duration_secs: u64,
    pub region: String,
    pub expires_at_ms: TimestampMs,
    /// What each leased GPU comes with.
    pub resources: JobResources,
}

impl Offer {
    pub fn validate(&self) -> Result<(), Error> {
        validate_gpus(&self.gpus)?;
        self.resources.validate()?;
        validate_region(&self.region)?;
        if self.max_duration_secs == 0 || self.max_duration_secs > MAX_LEASE_DURATION_SECS {
            return Err(Error::Invalid { what: "offer", reason: "max duration must be 1 s to 30 days".into() });
        }
        Ok(())
    }
}

crate::signed_wire_type!(Offer, Domain::Offer, "offer", MAX_OFFER_BYTES);

/// A buyer's request for GPU time; the signer is the buyer. Signed locally by
/// the buyer's CLI: nodes never hold buyers' keys.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRequest {
    pub provider: Address,
    /// The offer this request answers.
    pub offer_seq: u64,
    pub gpu_model: String,
    pub gpus: u32,
    pub price_per_gpu_hour: Amount,
    pub duration_secs: u64,
    /// blake3 of the job specification the provider will run.
    pub job_spec_hash: Hash,
    /// Makes otherwise identical requests distinct (and so their lease ids).
    pub nonce: u64,
    /// After this block time the request can no longer open a lease.
    pub expires_at_ms: TimestampMs,
}

impl LeaseRequest {
    pub fn validate(&self) -> Result<(), Error> {
        let invalid = |reason: &str| Err(Error::Invalid { what: "lease request", reason: reason.to_string() });
        if self.gpu_model.is_empty() || self.gpu_model.len() > MAX_GPU_MODEL_LEN {
            return invalid("gpu model must be 1 to 48 bytes");
        }
        if self.gpus == 0 || self.gpus > MAX_GPUS_PER_KIND {
            return invalid("gpu count must be 1 to 64");
        }
        if self.duration_secs == 0 || self.duration_secs > MAX_LEASE_DURATION_SECS {
            return invalid("duration must be 1 s to 30 days");
        }
        Ok(())
    }

    /// The escrow this lease locks (`spot_escrow`).
    pub fn escrow(&self) -> Option<Amount> {
        spot_escrow(self.price_per_gpu_hour, self.gpus, self.duration_secs)
    }
}

/// A spot lease's escrow: price × GPUs × duration, rounded up to the
/// micro-unit so a provider is never underpaid by rounding.
pub fn spot_escrow(price_per_gpu_hour: Amount, gpus: u32, duration_secs: u64) -> Option<Amount> {
    let total =
        u128::from(price_per_gpu_hour.0).checked_mul(u128::from(gpus))?.checked_mul(u128::from(duration_secs))?;
    u64::try_from(total.div_ceil(3600)).ok().map(Amount)
}

crate::signed_wire_type!(LeaseRequest, Domain::LeaseRequest, "lease request", MAX_LEASE_MSG_BYTES);

impl Signed<LeaseRequest> {
    /// The lease id this request opens: a hash of the whole signed request.
    pub fn lease_id(&self) -> Result<LeaseId, Error> {
        Ok(LeaseId(Hash::tagged(b"agora/lease-id/1", &codec::encode(self)?)))
    }
}

/// The provider's countersignature on a request; the signer is the provider.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseAccept {
    pub lease_id: LeaseId,
    /// The GPUs reserved for this lease (indices or UUIDs, as the runner exposes them).
    pub gpu_ids: Vec<String>,
}

impl LeaseAccept {
    pub fn validate(&self) -> Result<(), Error> {
        if self.gpu_ids.len() > MAX_LEASED_GPU_IDS
            || self.gpu_ids.iter().any(|g| g.is_empty() || g.len() > MAX_GPU_ID_LEN)
        {
            return Err(Error::Invalid { what: "lease acceptance", reason: "too many or malformed GPU ids".into() });
        }
        Ok(())
    }
}

crate::signed_wire_type!(LeaseAccept, Domain::LeaseAccept, "lease acceptance", MAX_LEASE_MSG_BYTES);
