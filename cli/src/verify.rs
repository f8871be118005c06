//! `agora verify FILE`: checks, offline, every signed object in a JSON file
//! a node served (a provider's slashes with their attestations, the offer
//! book, …): each `"signed"` field holds an object's wire encoding in hex;
//! its type is the one whose signature verifies (signatures are domain
//! separated by type and chain, so no object verifies as another type).
//! Nothing is taken from the node's words around it.

use std::path::Path;
use std::process::ExitCode;

use agora_protocol::codec::{self, Wire};
use agora_protocol::sign::Signable;
use agora_protocol::{ChainId, DowntimeAttestation, Heartbeat, LeaseAccept, LeaseRequest, Offer, Signed, Transaction};
use anyhow::{Context, bail};

/// The largest file `verify` reads.
pub const MAX_VERIFY_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// Every `"signed"` string in `value`, depth first.
fn signed_fields<'a>(value: &'a serde_json::Value, out: &mut Vec<&'a str>) {
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("signed", serde_json::Value::String(hex)) => out.push(hex),
                    _ => signed_fields(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| signed_fields(v, out)),
        _ => {}
    }
}

/// The first `"chain_id"` string in `value`.
fn chain_id_in(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::Object(map) => map
            .get("chain_id")
            .and_then(|c| c.as_str().map(str::to_string))
            .or_else(|| map.values().find_map(chain_id_in)),
        serde_json::Value::Array(items) => items.iter().find_map(chain_id_in),
        _ => None,
    }
}

/// `bytes` as a `Signed<T>` whose signature verifies on `chain`, if it is one.
fn as_signed<T>(bytes: &[u8], chain: &ChainId) -> Option<Signed<T>>
where
    T: Signable + serde::de::DeserializeOwned,
    Signed<T>: Wire,
{
    let signed: Signed<T> = codec::decode(bytes).ok()?;
    signed.verify(chain).ok()?;
    Some(signed)
}

/// What a verified object says, in one line; None when no known type verifies.
fn describe(bytes: &[u8], chain: &ChainId) -> Option<String> {
    if let Some(a) = as_signed::<DowntimeAttestation>(bytes, chain) {
        let b = &a.body;
        return Some(format!(
            "downtime attestation by {}: provider {} silent over heights {}–{}",
            a.signer, b.provider, b.window_start.0, b.window_end.0
        ));
    }
    if let Some(h) = as_signed::<Heartbeat>(bytes, chain) {
        return Some(format!("heartbeat by {}: sequence {}, height {}", h.signer, h.body.seq, h.body.height.0));
    }
    if let Some(o) = as_signed::<Offer>(bytes, chain) {
        let kinds: Vec<String> = o.body.gpus.iter().map(|g| format!("{}× {}", g.count, g.model)).collect();
        return Some(format!(
            "offer by {}: {} at {}/GPU-hour (offer #{})",
            o.signer,
            kinds.join(", "),
            o.body.price_per_gpu_hour,
            o.body.seq
        ));
    }
    if let Some(r) = as_signed::<LeaseRequest>(bytes, chain) {
        return Some(format!("lease request by {} to provider {}", r.signer, r.body.provider));
    }
    if let Some(a) = as_signed::<LeaseAccept>(bytes, chain) {
        return Some(format!("lease acceptance by {} of lease {}", a.signer, a.body.lease_id));
    }
    if let Some(t) = as_signed::<Transaction>(bytes, chain) {
        return Some(format!("transaction by {}: {} (nonce {})", t.signer, t.body.kind.name(), t.body.nonce));
    }
    None
}

pub fn run(file: &Path, chain: Option<String>) -> anyhow::Result<ExitCode> {
    let size = std::fs::metadata(file).with_context(|| format!("{}", file.display()))?.len();
    if size > MAX_VERIFY_FILE_BYTES {
        bail!("{} is {size} bytes; verify reads at most {MAX_VERIFY_FILE_BYTES}", file.display());
    }
    let text = std::fs::read_to_string(file).with_context(|| format!("{}", file.display()))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", file.display()))?;
    let chain = match chain.or_else(|| chain_id_in(&json)) {
        Some(c) => ChainId::new(&c)?,
        None => bail!("no chain_id in {}; give it with --chain-id (signatures are per chain)", file.display()),
    };
    let mut fields = Vec::new();
    signed_fields(&json, &mut fields);
    if fields.is_empty() {
        bail!("no \"signed\" objects in {}", file.display());
    }
    let mut bad = 0;
    for hex in &fields {
        let line = hex::decode(hex).ok().and_then(|bytes| describe(&bytes, &chain));
        match line {
            Some(line) => println!("ok   {line}"),
            None => {
                bad += 1;
                println!("BAD  {}…: not a signed object that verifies on {chain}", &hex[..hex.len().min(16)]);
            }
        }
    }
    println!(
        "{} of {} signed objects verify on {chain}. (Whether their signers were validators, and their power, \
         is on the ledger: check it against a node you trust.)",
        fields.len() - bad,
        fields.len()
    );
    Ok(if bad == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
