//! `--prove`: a value of the ledger checked without trusting the node that
//! served it. The node's `/v1/proof/...` bundle is verified here by the
//! ledger's light-client rules (`agora_ledger::light`) against the
//! validators of a genesis the user trusts (`--genesis FILE`, default the
//! home's `genesis.json`, as `agora node init` wrote it).

use std::path::{Path, PathBuf};

use agora_ledger::light::{self, ProofBundle, Verified};
use agora_ledger::tree::{StateKey, decode_canonical};
use agora_protocol::{ChainId, Height};
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
) -> anyhow::Result<Proven> {
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
    match light::verify(&bundle, key, chain, &trusted) {
        // The set has moved on since the genesis: follow its changes up to the proof's height.
        Err(agora_ledger::Error::TooFewTrustedSigners { .. }) => {
            let transitions = transitions_up_to(node, bundle.header.height)?;
            let followed = light::follow(&transitions, chain, trusted, Height(0))?;
            let v = light::verify(&bundle, key, chain, &followed.validators)?;
            Ok(Proven { v, changes_followed: followed.taken })
        }
        other => Ok(Proven { v: other?, changes_followed: 0 }),
    }
}

/// Pages of validator-set transitions the node holds, most `MAX_TRANSITION_PAGES`.
const MAX_TRANSITION_PAGES: usize = 1_000;

/// The node's validator-set transitions at heights up to `height`, ascending.
fn transitions_up_to(node: &NodeArgs, height: Height) -> anyhow::Result<Vec<ProofBundle>> {
    let mut out: Vec<ProofBundle> = Vec::new();
    let mut after = 0u64;
    for _ in 0..MAX_TRANSITION_PAGES {
        let reply = node.get(&format!("/v1/light/transitions?after={after}"))?;
        let page = reply["transitions"].as_array().context("the node sent no transitions")?;
        for t in page {
            let h = t["height"].as_u64().context("a transition without a height")?;
            if h > height.0 {
                return Ok(out);
            }
            if h <= after {
                bail!("the node listed transitions out of order (height {h} after {after})");
            }
            let bytes = hex::decode(t["bundle"].as_str().unwrap_or_default()).context("a transition is not hex")?;
            out.push(decode_canonical(&bytes)?);
            after = h;
        }
        if reply["more"].as_bool() != Some(true) || page.is_empty() {
            break;
        }
    }
    Ok(out)
}

/// A verified value, and how many validator-set changes were followed to
/// trust its signers.
pub struct Proven {
    pub v: Verified,
    pub changes_followed: usize,
}

/// The line that says what was checked.
pub fn verified_line(p: &Proven) -> String {
    let followed = match p.changes_followed {
        0 => String::new(),
        1 => ", after following 1 validator-set change from the genesis".to_string(),
        n => format!(", after following {n} validator-set changes from the genesis"),
    };
    format!(
        "verified at height {} (Merkle proof under the certified state root; validators you trust with {} of {} power signed{followed})",
        p.v.height.0, p.v.trusted_power.0, p.v.trusted_power.1
    )
}
