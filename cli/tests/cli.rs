//! The `agora` binary as a user runs it: key management, one-line errors
//! with non-zero exits, JSON output, and the demo end to end.

mod common;

use std::path::Path;
use std::process::{Command, Output};

fn agora(home: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_agora"))
        .arg("--home")
        .arg(home)
        .args(args)
        .env_remove("AGORA_HOME")
        .output()
        .expect("run agora")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn json(o: &Output) -> serde_json::Value {
    assert!(o.status.success(), "command failed: {}", stderr(o));
    serde_json::from_slice(&o.stdout).expect("valid JSON on stdout")
}

/// A failure is one line on stderr starting with `error:` and exit code 1.
fn assert_one_line_error(o: &Output, needle: &str) {
    assert_eq!(o.status.code(), Some(1), "stdout: {} stderr: {}", stdout(o), stderr(o));
    let err = stderr(o);
    assert_eq!(err.trim_end().lines().count(), 1, "error is not one line: {err:?}");
    assert!(err.starts_with("error: ") && err.contains(needle), "{err:?} lacks {needle:?}");
}

#[test]
fn keys_new_show_list_round_trip() {
    let home = tempfile::tempdir().unwrap();
    let created = json(&agora(home.path(), &["keys", "new", "--name", "alice", "--json"]));
    let address = created["address"].as_str().unwrap().to_string();
    assert!(address.starts_with("agora1"));
    let shown = agora(home.path(), &["keys", "show", "--name", "alice"]);
    assert_eq!(stdout(&shown).trim(), address);
    agora(home.path(), &["keys", "new", "--name", "bob"]);
    let listed = json(&agora(home.path(), &["keys", "list", "--json"]));
    let names: Vec<&str> = listed.as_array().unwrap().iter().map(|k| k["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["alice", "bob"]);
    let mode = std::fs::metadata(created["path"].as_str().unwrap()).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(mode.permissions().mode() & 0o777, 0o600);
}

#[test]
fn key_errors_are_one_line_and_non_zero() {
    let home = tempfile::tempdir().unwrap();
    agora(home.path(), &["keys", "new", "--name", "alice"]);
    let before = stdout(&agora(home.path(), &["keys", "show", "--name", "alice"]));
    assert_one_line_error(&agora(home.path(), &["keys", "new", "--name", "alice"]), "refusing to overwrite");
    assert_eq!(stdout(&agora(home.path(), &["keys", "show", "--name", "alice"])), before, "the key changed");
    assert_one_line_error(&agora(home.path(), &["keys", "show", "--name", "nobody"]), "no key named");
    assert_one_line_error(&agora(home.path(), &["keys", "new", "--name", "../escape"]), "invalid key name");
    let listed = agora(home.path(), &["keys", "list"]);
    assert!(stdout(&listed).contains("alice"));
}

#[test]
fn usage_errors_exit_non_zero() {
    let home = tempfile::tempdir().unwrap();
    let o = agora(home.path(), &["keys", "frobnicate"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn demo_runs_a_job_on_leased_gpus_over_a_real_testnet_and_settles_escrow() {
    let dir = tempfile::tempdir().unwrap();
    let demo_dir = dir.path().join("demo");
    let base = common::test_ports(3).to_string();
    let o = Command::new(env!("CARGO_BIN_EXE_agora"))
        .args(["testnet", "demo", "--json", "--base-port", &base, "--dir"])
        .arg(&demo_dir)
        .args(["--", "sh", "-c", "echo hello; echo $CUDA_VISIBLE_DEVICES; echo $SECRET_FROM_PARENT"])
        .env("SECRET_FROM_PARENT", "leaked")
        .output()
        .unwrap();
    let report = json(&o);
    let output = report["job_output"].as_str().unwrap();
    let lines: Vec<&str> = output.lines().collect();
    assert_eq!(lines[0], "hello");
    assert_eq!(lines[1], "SIM-H100-0,SIM-H100-1");
    assert_eq!(lines.get(2).copied().unwrap_or(""), "", "the job saw the parent's environment");
    assert_eq!(report["job_exit_code"], 0);
    assert_eq!(report["supply_conserved"], true);
    assert_eq!(report["offers"].as_array().unwrap().len(), 2, "both providers' offers were shown");
    let micros = |k: &str| report[k].as_str().unwrap().parse::<u64>().unwrap();
    let spent = micros("buyer_balance_before") - micros("buyer_balance_after");
    // One transaction (the lease opening) at the minimum fee; the provider's
    // balance also moves by fees it pays and, as a validator, receives.
    assert_eq!(micros("buyer_fees"), agora_ledger::params::DEFAULT_MIN_TX_FEE.0);
    assert_eq!(spent, micros("provider_paid") + micros("buyer_fees"), "the buyer paid exactly price and fee");
    assert_eq!(micros("provider_paid") + micros("buyer_refunded"), micros("escrow"));
    assert!(micros("buyer_refunded") > micros("provider_paid"), "a short job is paid pro-rata, not in full");
    // The auction round: one ask at 1, one bid at 2, cleared at the midpoint;
    // the buyer's job ran on the lease it won.
    let round = &report["auction"];
    assert_eq!(round["clearing_price"], "1500000", "{round}");
    assert_eq!(round["job_exit_code"], 0);
    assert!(
        round["job_output"].as_str().unwrap().starts_with("hello from an auctioned lease on GPUs SIM-H100-"),
        "{round}"
    );
    assert_eq!(round["supply_conserved"], true);
    // The testnet is down and its ledgers can be inspected offline.
    let home = dir.path().join("home");
    let data = demo_dir.join("node3/data/ledger");
    let data = data.to_str().unwrap();
    let status = json(&agora(&home, &["ledger", "status", "--data", data, "--json"]));
    assert!(status["height"].as_u64().unwrap() >= 3);
    assert_eq!(status["chain_id"], "agora-testnet-1");
    let validators = json(&agora(&home, &["ledger", "validators", "--data", data, "--json"]));
    assert_eq!(validators.as_array().unwrap().len(), 4);
    let providers = json(&agora(&home, &["ledger", "providers", "--data", data, "--json"]));
    assert_eq!(providers.as_array().unwrap().len(), 2);
    assert_one_line_error(&agora(&home, &["ledger", "block", "99999", "--data", data]), "no block at height 99999");
    let buyer = report["buyer"].as_str().unwrap();
    let account = json(&agora(&home, &["ledger", "account", buyer, "--data", data, "--json"]));
    assert_eq!(account["balance"], report["auction"]["buyer_balance_after"]);
    assert_one_line_error(&agora(&home, &["ledger", "account", "agora1bogus", "--data", data]), "invalid address");
    assert_one_line_error(&agora(&home, &["ledger", "status", "--data", "/nonexistent/agora"]), "no ledger store");
    // The directory now holds a testnet: a second demo there is refused.
    let again = Command::new(env!("CARGO_BIN_EXE_agora"))
        .args(["testnet", "demo", "--base-port", &base, "--dir"])
        .arg(&demo_dir)
        .output()
        .unwrap();
    assert_one_line_error(&again, "is not empty");
}

#[test]
fn out_of_range_net_settings_are_one_line_errors() {
    let home = tempfile::tempdir().unwrap();
    let init = agora(home.path(), &["init", "--moniker", "n"]);
    assert!(init.status.success(), "{}", stderr(&init));
    assert_one_line_error(
        &agora(home.path(), &["node", "run", "--runtime-threads", "0"]),
        "runtime_threads must be 1 to 64",
    );
    assert_one_line_error(&agora(home.path(), &["node", "run", "--gossip-mesh", "2"]), "gossip_mesh must be 3 to 12");
    let config = home.path().join("config.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains("[net]"), "init writes the [net] table: {text}");
    std::fs::write(&config, text.replace("gossip_mesh = 6", "gossip_mesh = 13")).unwrap();
    assert_one_line_error(&agora(home.path(), &["node", "run"]), "[net] gossip_mesh must be 3 to 12");
}
