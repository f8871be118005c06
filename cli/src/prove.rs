//! `--prove`: a value of the ledger checked without trusting the node that
//! served it. The node's `/v1/proof/...` bundle is verified here by the
//! ledger's light-client rules (`agora_ledger::light`) against the
//! validators of a genesis the user trusts (`--genesis FILE`, default the
//! home's `genesis.json`, as `agora node init` wrote it), or against the
//! validator set this client last learned by following the set's changes
//! from that genesis: its checkpoint, `HOME/light/checkpoint-GENESIS.json`.
//! A checkpoint spares the next check the changes already followed, and
//! lets it ask a node that holds only the later ones (one that joined by
//! state sync from a checkpoint of its own).

use std::path::{Path, PathBuf};

use agora_ledger::Validator;
use agora_ledger::light::{self, ProofBundle, Verified};
use agora_ledger::tree::{StateKey, decode_canonical};
use agora_protocol::{ChainId, Hash, Height};
use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

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
    /// Follow the validator set from the genesis, not from this client's
    /// checkpoint (HOME/light/)
    #[arg(long, requires = "prove")]
    pub from_genesis: bool,
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
    let text = std::fs::read(&path).with_context(|| {
        format!(
            "no trusted genesis at {} (pass --genesis FILE: the chain's genesis, from its operators)",
            path.display()
        )
    })?;
    let genesis: agora_ledger::Genesis =
        serde_json::from_slice(&text).with_context(|| format!("{} is not a genesis file", path.display()))?;
    let chain: &ChainId = &genesis.chain_id;
    let genesis_hash = Hash::tagged(GENESIS_FILE_TAG, &text);
    let reply = node.get(&format!("/v1/proof/{kind}/{id}"))?;
    let Some(hex) = reply["bundle"].as_str() else { bail!("the node sent no proof bundle") };
    let bytes = hex::decode(hex).context("the proof bundle is not hex")?;
    let bundle: ProofBundle = decode_canonical(&bytes)?;
    let file = checkpoint_path(home, &genesis_hash);
    // A checkpoint above the answer's height cannot vouch for it (a node
    // behind this client): that check starts from the genesis.
    let saved = Checkpoint::load(&file, chain, &genesis_hash);
    let saved_height = saved.as_ref().map_or(0, |c| c.height);
    let checkpoint = saved.filter(|c| !args.from_genesis && c.height <= bundle.header.height.0);
    let from = checkpoint.as_ref().map_or(Height(0), |c| Height(c.height));
    let trusted = match checkpoint {
        Some(c) => c.validators,
        None => light::trusted_from_genesis(&genesis)?,
    };
    let (v, changes_followed) = match light::verify(&bundle, key, chain, &trusted) {
        // The set has moved on: follow its changes up to the proof's height.
        Err(e @ agora_ledger::Error::TooFewTrustedSigners { .. }) => {
            let transitions = transitions_between(node, from, bundle.header.height)?;
            if transitions.is_empty() {
                bail!(
                    "{e}, and this node lists no change after height {}: if your genesis is this chain's, ask a \
                     node that holds the changes (not one that joined by state sync later, or an archive node)",
                    from.0
                );
            }
            let followed = light::follow(&transitions, chain, trusted, from)?;
            let v = light::verify(&bundle, key, chain, &followed.validators)?;
            let learned = Checkpoint {
                chain_id: chain.clone(),
                genesis_hash,
                height: followed.height.0,
                validators: followed.validators,
            };
            if let Err(e) = learned.save_if_newer(&file, saved_height) {
                eprintln!("warning: the light-client checkpoint was not saved to {}: {e:#}", file.display());
            }
            (v, followed.taken)
        }
        other => (other?, 0),
    };
    Ok(Proven { v, changes_followed, from })
}

/// Domain tag of the hash that names a genesis file's checkpoint.
const GENESIS_FILE_TAG: &[u8] = b"agora/light/genesis-file";

/// The validator set this client learned, and the height it was learned
/// at, by following the set's changes from one genesis.
#[derive(Serialize, Deserialize)]
struct Checkpoint {
    chain_id: ChainId,
    /// The genesis file it was followed from (a hash of its bytes).
    genesis_hash: Hash,
    height: u64,
    validators: Vec<Validator>,
}

/// Where the checkpoint followed from a genesis file lives.
fn checkpoint_path(home: &Path, genesis_hash: &Hash) -> PathBuf {
    home.join("light").join(format!("checkpoint-{}.json", &genesis_hash.to_string()[..16]))
}

impl Checkpoint {
    /// The checkpoint in `file` if it is one for this genesis; an unreadable
    /// one is set aside with a warning (the genesis is trusted anyway).
    fn load(file: &Path, chain: &ChainId, genesis_hash: &Hash) -> Option<Checkpoint> {
        let text = match std::fs::read(file) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                eprintln!("warning: ignoring the light-client checkpoint {}: {e}", file.display());
                return None;
            }
        };
        match serde_json::from_slice::<Checkpoint>(&text) {
            Ok(c) if &c.chain_id == chain && &c.genesis_hash == genesis_hash && !c.validators.is_empty() => Some(c),
            Ok(_) => {
                eprintln!("warning: ignoring the light-client checkpoint {}: another chain's", file.display());
                None
            }
            Err(e) => {
                eprintln!("warning: ignoring the light-client checkpoint {}: {e}", file.display());
                None
            }
        }
    }

    /// Saves the checkpoint unless the one saved (at `saved_height`) is
    /// newer: a check from the genesis (--from-genesis, or a node behind
    /// the checkpoint) may learn an older set, and a checkpoint never moves
    /// back. Whether it was written.
    fn save_if_newer(&self, file: &Path, saved_height: u64) -> anyhow::Result<bool> {
        if self.height <= saved_height {
            return Ok(false);
        }
        self.save(file)?;
        Ok(true)
    }

    /// Writes the checkpoint whole or not at all (a temporary file renamed).
    fn save(&self, file: &Path) -> anyhow::Result<()> {
        let dir = file.parent().context("a checkpoint path has a directory")?;
        std::fs::create_dir_all(dir)?;
        let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
        serde_json::to_writer_pretty(&mut tmp, self)?;
        tmp.as_file().sync_all()?;
        tmp.persist(file)?;
        Ok(())
    }
}

/// Pages of validator-set transitions the node holds, most `MAX_TRANSITION_PAGES`.
const MAX_TRANSITION_PAGES: usize = 1_000;

/// The node's validator-set transitions above `from` and up to `height`, ascending.
fn transitions_between(node: &NodeArgs, from: Height, height: Height) -> anyhow::Result<Vec<ProofBundle>> {
    let mut out: Vec<ProofBundle> = Vec::new();
    let mut after = from.0;
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

/// A verified value, and how its signers came to be trusted: the height
/// of the checkpoint the check started from (0: the genesis) and how many
/// validator-set changes it followed from there.
pub struct Proven {
    pub v: Verified,
    pub changes_followed: usize,
    pub from: Height,
}

impl Proven {
    /// How the signers came to be trusted, for `--json`.
    pub fn trust_json(&self) -> serde_json::Value {
        serde_json::json!({ "trusted_from_height": self.from.0, "changes_followed": self.changes_followed })
    }
}

/// The line that says what was checked.
pub fn verified_line(p: &Proven) -> String {
    let origin = match p.from.0 {
        0 => "the genesis".to_string(),
        h => format!("your checkpoint at height {h}"),
    };
    let followed = match p.changes_followed {
        0 if p.from.0 == 0 => String::new(),
        0 => format!(", trusted from {origin}"),
        1 => format!(", after following 1 validator-set change from {origin}"),
        n => format!(", after following {n} validator-set changes from {origin}"),
    };
    format!(
        "verified at height {} (Merkle proof under the certified state root; validators you trust with {} of {} power signed{followed})",
        p.v.height.0, p.v.trusted_power.0, p.v.trusted_power.1
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checkpoint(chain: &str, genesis: &Hash) -> Checkpoint {
        let validators = vec![Validator { address: agora_protocol::Address([7; 32]), power: 10 }];
        Checkpoint { chain_id: ChainId::new(chain).unwrap(), genesis_hash: *genesis, height: 42, validators }
    }

    #[test]
    fn a_checkpoint_is_used_only_for_its_own_genesis_and_only_when_whole() {
        let home = tempfile::tempdir().unwrap();
        let genesis = Hash::tagged(GENESIS_FILE_TAG, b"{}");
        let chain = ChainId::new("agora-test").unwrap();
        let file = checkpoint_path(home.path(), &genesis);
        assert!(Checkpoint::load(&file, &chain, &genesis).is_none(), "none yet");
        checkpoint("agora-test", &genesis).save(&file).unwrap();
        let loaded = Checkpoint::load(&file, &chain, &genesis).expect("its own");
        assert_eq!((loaded.height, loaded.validators.len()), (42, 1));
        // Another chain's, or another genesis file's, is not trusted.
        assert!(Checkpoint::load(&file, &ChainId::new("other").unwrap(), &genesis).is_none());
        assert!(Checkpoint::load(&file, &chain, &Hash::tagged(GENESIS_FILE_TAG, b"[]")).is_none());
        checkpoint("other", &genesis).save(&file).unwrap();
        assert!(Checkpoint::load(&file, &chain, &genesis).is_none(), "the file names another chain");
        // Damaged: cut short, or an empty set (which would trust no one).
        std::fs::write(&file, &std::fs::read(&file).unwrap()[..20]).unwrap();
        assert!(Checkpoint::load(&file, &chain, &genesis).is_none());
        let mut empty = checkpoint("agora-test", &genesis);
        empty.validators.clear();
        empty.save(&file).unwrap();
        assert!(Checkpoint::load(&file, &chain, &genesis).is_none());
        // It never moves back.
        let mut newer = checkpoint("agora-test", &genesis);
        newer.height = 50;
        assert!(newer.save_if_newer(&file, 0).unwrap());
        assert!(!checkpoint("agora-test", &genesis).save_if_newer(&file, 50).unwrap(), "42 is older than 50");
        assert_eq!(Checkpoint::load(&file, &chain, &genesis).unwrap().height, 50);
        // Files for two genesis files live side by side.
        assert_ne!(file, checkpoint_path(home.path(), &Hash::tagged(GENESIS_FILE_TAG, b"[]")));
    }
}
