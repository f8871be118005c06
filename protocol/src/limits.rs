//! Every size and count limit of the protocol, each with the reason for its value.
//! Decoders check these before allocating; the ledger checks them before applying.

/// Longest a signed lease request may stay valid, from the block that opens
/// it: a settled lease is pruned from the state only after its request has
/// expired, so the request cannot open it a second time.
pub const MAX_LEASE_REQUEST_TTL_MS: u64 = 3_600_000;
/// Largest encoded block. 1,000 transfers take ~150 KB; lease-heavy blocks
/// are bigger, and 4 MiB still gossips in well under a second on a LAN.
pub const MAX_BLOCK_BYTES: usize = 4 * 1024 * 1024;
/// Largest encoded transaction. The biggest is a downtime slash carrying one
/// attestation per validator (MAX_VALIDATORS × ~140 bytes).
pub const MAX_TX_BYTES: usize = 64 * 1024;
/// Largest encoded gossip bundle of transactions: four of the largest
/// transactions, or hundreds of transfers (~150 bytes each).
pub const MAX_TX_BUNDLE_BYTES: usize = 4 * MAX_TX_BYTES;
/// Transactions one gossip bundle may carry: one gossipsub signature
/// covers them all, and a receiver checks their signatures as one batch.
pub const MAX_TXS_PER_BUNDLE: usize = 512;
/// Transactions per block: keeps apply time of one block bounded (~50 ms).
pub const MAX_TXS_PER_BLOCK: usize = 5_000;
/// Largest offer: a handful of GPU kinds and short strings.
pub const MAX_OFFER_BYTES: usize = 4 * 1024;
/// Largest lease request or acceptance.
pub const MAX_LEASE_MSG_BYTES: usize = 4 * 1024;
/// Heartbeats and attestations are fixed-size small records.
pub const MAX_LIVENESS_MSG_BYTES: usize = 1024;
/// Votes and proposals are small fixed records (the block travels separately).
pub const MAX_CONSENSUS_MSG_BYTES: usize = 1024;
/// Largest local state snapshot; local storage only, never read from the network.
pub const MAX_STATE_SNAPSHOT_BYTES: usize = 1024 * 1024 * 1024;
/// The bincode allocation limit applied to every decode, on top of the
/// per-type byte limit: no single decode may claim more than this.
pub const MAX_DECODE_BYTES: usize = MAX_STATE_SNAPSHOT_BYTES;

/// Chain ids are short human names such as `agora-testnet-1`.
pub const MAX_CHAIN_ID_LEN: usize = 48;
/// GPU model names such as `H100-80GB-SXM`.
pub const MAX_GPU_MODEL_LEN: usize = 48;
/// Region names such as `eu-west`.
pub const MAX_REGION_LEN: usize = 32;
/// Distinct GPU kinds a provider may list (a host rarely has more than two).
pub const MAX_GPU_KINDS: usize = 8;
/// GPUs of one kind on one host; the largest servers have 16.
pub const MAX_GPUS_PER_KIND: u32 = 64;
/// GPU ids a lease acceptance may name.
pub const MAX_LEASED_GPU_IDS: usize = 64;
/// Longest GPU id (an NVML UUID is 40 characters).
pub const MAX_GPU_ID_LEN: usize = 64;
/// Longest lease: 30 days. Longer rentals renew.
pub const MAX_LEASE_DURATION_SECS: u64 = 30 * 24 * 3600;
/// Largest validator set; also bounds attestations carried by one slash.
pub const MAX_VALIDATORS: usize = 100;
/// Signature commitments carried by one commit certificate.
pub const MAX_COMMIT_SIGS: usize = MAX_VALIDATORS;

/// Largest job specification (command, arguments, environment, image name).
pub const MAX_JOB_SPEC_BYTES: usize = 16 * 1024;
/// Arguments in a job's command line, environment variables.
pub const MAX_JOB_ARGS: usize = 256;
/// Most CPU per GPU an offer may promise (1,024 cores: more than any host has).
pub const MAX_CPU_MILLICORES_PER_GPU: u32 = 1_024_000;
/// Least memory per GPU a job can be given: below this not even a shell starts.
pub const MIN_JOB_MEMORY_MIB: u32 = 16;
/// Most memory (and scratch) per GPU an offer may promise: 16 TiB.
pub const MAX_JOB_MEMORY_MIB_PER_GPU: u32 = 16 * 1024 * 1024;
/// Longest container image reference (the registry grammar's own limit).
pub const MAX_IMAGE_REF_LEN: usize = 255;
/// Most log bytes one logs reply carries.
pub const MAX_LOG_CHUNK_BYTES: usize = 64 * 1024;
/// Largest lease-protocol message: a request with its job spec, or a log chunk.
pub const MAX_LEASE_RPC_BYTES: usize = MAX_JOB_SPEC_BYTES + MAX_LOG_CHUNK_BYTES + 8 * 1024;
/// GPUs one auction order may be for.
pub const MAX_GPUS_PER_ORDER: u32 = MAX_GPUS_PER_KIND;
/// Longest contract one auction order may be for (30 days).
pub const MAX_CONTRACT_HOURS: u32 = 720;
