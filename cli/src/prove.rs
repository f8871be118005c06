//! `--prove`: a value of the ledger checked without trusting the node that
//! served it. The node's `/v1/proof/...` bundle is verified here by the
//! ledger's light-client rules (`agora_ledger::light`) against the
//! validators of a genesis the user trusts (`--genesis FILE`, default the
//! home's `genesis.json`, as `agora node init` wrote it).

use std::path::{Path, PathBuf};

use agora_ledger::light::{self, ProofBundle, Verified};
use agora_ledger::tree::{StateKey, decode_canonical};
use agora_protocol::ChainId;
use anyhow::{Context, bail};

use crate::client::NodeArgs;

#[derive(clap::Args, Debug, Clone)]
pub struct ProveArgs {
    /// Check the answer against a Merkle proof and the block's commit
    /// certificate instead of trusting the node
    #[arg(long)]
    pub prove: bool,
    /// The chain's genesis to trust (its validators) [default: HOME/genesis.json]
    #[arg(long, requires = "prove")]
    pub genesis: Option<PathBuf>,
}

/// Fetches and verifies the value of `key` (`kind`/`id` in the node's API).
pub fn fetch(
    home: &Path,
    args: &ProveArgs,
    node: &NodeArgs,
    kind: &str,
    id: &str,
    key: &StateKey,
) -> anyhow::Result<Verified> {
    let path = args.genesis.clone().unwrap_or_else(|| agora_node::config::genesis_path(home));
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "no trusted genesis at {} (pass --genesis FILE: the chain's genesis, from its operators)",
            path.display()
        )
    })?;
    let genesis: agora_ledger::Genesis =
        serde_json::from_str(&text).with_context(|| format!("{} is not a genesis file", path.display()))?;
    let trusted = light::trusted_from_genesis(&genesis)?;
    let reply = node.get(&format!("/v1/proof/{kind}/{id}"))?;
    let Some(hex) = reply["bundle"].as_str() else { bail!("the node sent no proof bundle") };
    let bytes = hex::decode(hex).context("the proof bundle is not hex")?;
    let bundle: ProofBundle = decode_canonical(&bytes)?;
    let chain: &ChainId = &genesis.chain_id;
    Ok(light::verify(&bundle, key, chain, &trusted)?)
}

/// The line that says what was checked.
pub fn verified_line(v: &Verified) -> String {
    format!(
        "verified at height {} (Merkle proof under the certified state root; validators you trust with {} of {} power signed)",
        v.height.0, v.trusted_power.0, v.trusted_power.1
    )
}
