//! Crash safety: a child process committing blocks is SIGKILLed at random
//! moments, many times; every restart must open cleanly at (or after) the
//! last height it reported as committed, with the state root that a full
//! replay from genesis gives. `AGORA_CRASH_ITERATIONS` raises the count
//! (default 12); `AGORA_CRASH_SEED` replays a failing run.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use agora_ledger::Store;
use agora_ledger::testkit::TestChain;
use agora_protocol::rng::SeededRng;
use agora_protocol::{Amount, Hash, Height};

const DEFAULT_ITERATIONS: u64 = 12;
/// Generous: the machine is shared and slow.
const OPEN_DEADLINE: Duration = Duration::from_secs(60);

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

fn spawn_writer(dir: &std::path::Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_ledger-crash-writer"))
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn crash writer")
}

/// Forwards every `committed HEIGHT ROOT` line of the writer over a channel,
/// draining its stdout until it dies so it never stops on a full or closed pipe.
fn follow(child: &mut Child) -> mpsc::Receiver<(Height, Hash)> {
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let mut parts = line.split_whitespace();
            if parts.next() == Some("committed") {
                let h = Height(parts.next().unwrap().parse().unwrap());
                let root: Hash = parts.next().unwrap().parse().unwrap();
                let _ = tx.send((h, root));
            }
        }
    });
    rx
}

#[test]
fn sigkill_at_random_moments_never_loses_or_corrupts_committed_blocks() {
    let iterations = env_u64("AGORA_CRASH_ITERATIONS").unwrap_or(DEFAULT_ITERATIONS);
    let seed = env_u64("AGORA_CRASH_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1
    });
    eprintln!("crash test: {iterations} iterations, AGORA_CRASH_SEED={seed}");
    let mut rng = SeededRng::new(seed);
    let dir = tempfile::tempdir().unwrap();
    let chain = TestChain::new(20, 1, Amount::agr(1_000_000));
    let mut confirmed = Height(0);
    for i in 0..iterations {
        let mut child = spawn_writer(dir.path());
        let commits = follow(&mut child);
        let mut reported = None;
        for _ in 0..1 + rng.below(6) {
            reported = Some(commits.recv_timeout(OPEN_DEADLINE).expect("writer made no progress in time"));
        }
        // Let it run on into a random point, usually mid-commit.
        std::thread::sleep(Duration::from_micros(rng.below(30_000)));
        child.kill().expect("SIGKILL writer");
        child.wait().expect("reap writer");
        // Every commit it reported before dying was flushed first.
        reported = commits.iter().last().or(reported);
        let store = Store::open(dir.path(), &chain.genesis)
            .unwrap_or_else(|e| panic!("iteration {i}, seed {seed}: reopen failed: {e}"));
        if let Some((h, root)) = reported {
            confirmed = h;
            let block = store.block(h).unwrap().unwrap_or_else(|| panic!("seed {seed}: reported block {h} lost"));
            assert_eq!(block.header.state_root, root, "seed {seed}: block {h} changed after the crash");
        }
        assert!(store.height() >= confirmed, "seed {seed}: height {} < reported {confirmed}", store.height());
        let replayed = store.replay_from_genesis().unwrap();
        assert_eq!(store.state().root(), replayed, "seed {seed}: state root differs from replay at {}", store.height());
        store.state().audit().unwrap();
    }
    assert!(confirmed.0 >= iterations, "the writer should have committed at least one block per run");
}
