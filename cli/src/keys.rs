//! `agora keys new|show|list`: account keys under `HOME/keys`.

use std::path::Path;
use std::process::ExitCode;

use agora_node::keystore::{self, StoredKey};
use clap::{Args, Subcommand};
use serde::Serialize;

use crate::print_json;

/// The key used when no `--name` is given.
const DEFAULT_KEY_NAME: &str = "default";

#[derive(Subcommand)]
pub enum KeysCommand {
    /// Generate a new key (never overwrites an existing one)
    New(KeyArgs),
    /// Print a key's address
    Show(KeyArgs),
    /// List all keys
    List {
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
pub struct KeyArgs {
    /// Key name
    #[arg(long, default_value = DEFAULT_KEY_NAME)]
    name: String,
    /// Print JSON
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct KeyView {
    name: String,
    address: String,
    path: String,
}

impl From<&StoredKey> for KeyView {
    fn from(k: &StoredKey) -> Self {
        KeyView { name: k.name.clone(), address: k.address().to_string(), path: k.path.display().to_string() }
    }
}

pub fn run(home: &Path, cmd: KeysCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        KeysCommand::New(args) => {
            let key = keystore::create(home, &args.name)?;
            if args.json {
                print_json(&KeyView::from(&key))?;
            } else {
                println!("created key {:?}", key.name);
                println!("address: {}", key.address());
                println!("file:    {} (mode 0600; back it up, it controls the account's funds)", key.path.display());
            }
        }
        KeysCommand::Show(args) => {
            let key = keystore::load(home, &args.name)?;
            if args.json {
                print_json(&KeyView::from(&key))?;
            } else {
                println!("{}", key.address());
            }
        }
        KeysCommand::List { json } => {
            let keys: Vec<KeyView> = keystore::list(home)?.iter().map(KeyView::from).collect();
            if json {
                print_json(&keys)?;
            } else if keys.is_empty() {
                println!("no keys in {} (create one with `agora keys new`)", keystore::keys_dir(home).display());
            } else {
                let width = keys.iter().map(|k| k.name.len()).max().unwrap_or(4).max(4);
                println!("{:width$}  ADDRESS", "NAME");
                for k in keys {
                    println!("{:width$}  {}", k.name, k.address);
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
