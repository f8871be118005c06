//! Test helper for the crash-safety test: commits deterministic blocks of
//! transfers to a sled store and prints `committed HEIGHT ROOT` after each
//! flushed commit, until it is killed or reaches the height limit. Every
//! other block goes the way a node's daemon commits it (`commit_applied`).

use std::io::Write;
use std::path::PathBuf;

use agora_ledger::testkit::{TestChain, transfer};
use agora_ledger::{SigCheck, Store, apply_block};
use agora_protocol::Amount;

/// Accounts sending transfers in each block.
const SENDERS: usize = 20;
/// Transfers per block: enough that a commit takes a while, so kills land mid-commit.
const TRANSFERS_PER_BLOCK: usize = 40;

fn main() {
    if let Err(e) = run() {
        eprintln!("ledger-crash-writer: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = PathBuf::from(args.next().ok_or("usage: ledger-crash-writer DB_PATH [MAX_HEIGHT]")?);
    let max_height: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(10_000);
    let chain = TestChain::new(SENDERS, 1, Amount::agr(1_000_000));
    let mut store = Store::open(&path, &chain.genesis)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "opened {} {}", store.height(), store.state().root())?;
    out.flush()?;
    while store.height().0 < max_height {
        let h = store.height().0;
        let txs = (0..TRANSFERS_PER_BLOCK)
            .map(|i| {
                let from = (h as usize + i) % SENDERS;
                let to = chain.address((from + 1 + i) % SENDERS);
                let nonce = store.state().account(&chain.address(from)).nonce + (i / SENDERS) as u64;
                transfer(&chain.keys[from], nonce, to, Amount(1 + h + i as u64))
            })
            .collect();
        let mut state = store.state().clone();
        let block = chain.next_block(&mut state, txs)?;
        let root = if h % 2 == 0 {
            // The daemon's path: the consensus engine's copy applies the
            // decided block first (its tree nodes go to the store's tree),
            // then the store persists the block and adopts that state.
            let mut engine = store.state().clone();
            apply_block(&mut engine, &block, SigCheck::Skip)?;
            store.commit_applied(&block, &chain.certificate(&block, 1), engine)?;
            block.header.state_root
        } else {
            store.commit(&block)?.state_root
        };
        writeln!(out, "committed {} {}", block.header.height, root)?;
        out.flush()?;
    }
    Ok(())
}
