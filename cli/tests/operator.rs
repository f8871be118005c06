//! Keys off the job host, on a real testnet: an account stakes from a
//! machine that runs no node, names a separate GPU node's key its operator
//! (`agora set-operator`), and that node — which never sees the account's
//! key — registers the account's GPUs, advertises, takes a lease, runs the
//! job and closes it; the account is paid. Withdrawn (`agora
//! clear-operator`), the key speaks for nobody and the offer goes.

mod common;
use common::*;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use agora_testnet::http;

/// Kills the extra node process when the test ends, however it ends.
struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn json(api: &str, path: &str) -> serde_json::Value {
    http::get(api, path).ok().and_then(|r| r.json().ok()).unwrap_or_default()
}

fn balance(api: &str, address: &str) -> u64 {
    json(api, &format!("/v1/accounts/{address}"))["balance"].as_str().unwrap_or("0").parse().unwrap()
}

fn key_address(home: &Path, name: &str) -> String {
    let shown = ok(agora(&["--home", home.to_str().unwrap(), "keys", "show", "--name", name, "--json"]));
    let v: serde_json::Value = serde_json::from_str(&shown).unwrap();
    v["address"].as_str().unwrap().to_string()
}

#[test]
fn an_operator_node_provides_for_an_account_whose_key_stays_elsewhere() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("net");
    let base = common::test_ports(10);
    let _down = Down(dir.clone());
    let net = testnet_up(&dir, 1, base, &["--commit-pause-ms", "50"]);
    let api3 = net["nodes"][3]["api_url"].as_str().unwrap().to_string();
    let buyer_home = net["buyer_home"].as_str().unwrap().to_string();

    // The account ("cold" key, on a machine without a node): funded and staked.
    ok(agora(&["--home", &buyer_home, "keys", "new", "--name", "cold"]));
    let cold = key_address(Path::new(&buyer_home), "cold");
    ok(agora(&["--home", &buyer_home, "transfer", &cold, "500", "--node", &api3]));
    ok(agora(&["--home", &buyer_home, "stake", "200", "--key", "cold", "--node", &api3]));

    // The GPU host: a fresh node with its own key and simulated GPUs, not a validator.
    let op_home = tmp.path().join("operator");
    let genesis = dir.join("node0/genesis.json");
    ok(agora(&[
        "--home",
        op_home.to_str().unwrap(),
        "init",
        "--moniker",
        "gpu-host",
        "--genesis",
        genesis.to_str().unwrap(),
    ]));
    let operator = key_address(&op_home, "node");
    let (p2p, api) = (base + 16, base + 17);
    let op_api = format!("http://127.0.0.1:{api}");
    let log = std::fs::File::create(tmp.path().join("operator.log")).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_agora"));
    cmd.args(["--home", op_home.to_str().unwrap(), "node", "run", "--gpus", "simulated:1xA100-40GB"])
        .args(["--listen", &format!("/ip4/127.0.0.1/tcp/{p2p}"), "--api", &format!("127.0.0.1:{api}")])
        .args(["--commit-pause-ms", "50"]);
    for n in net["nodes"].as_array().unwrap() {
        cmd.args(["--bootstrap", n["p2p"].as_str().unwrap()]);
    }
    let child = cmd.stdout(Stdio::null()).stderr(log).spawn().unwrap();
    let _op = Kill(child);
    wait_until("the operator node to sync", Duration::from_secs(120), || height(&op_api) + 2 >= height(&api3));

    // The account names the GPU node's key (given a little for its fees); the
    // node registers and advertises for the account.
    ok(agora(&["--home", &buyer_home, "transfer", &operator, "1", "--node", &api3]));
    ok(agora(&["--home", &buyer_home, "set-operator", &operator, "--key", "cold", "--node", &api3]));
    wait_until("the account's offer, signed by the operator", Duration::from_secs(120), || {
        json(&api3, "/v1/offers")
            .as_array()
            .into_iter()
            .flatten()
            .any(|o| o["provider"] == cold.as_str() && o["signed_by"] == operator.as_str())
    });
    let providers = json(&api3, "/v1/providers");
    let record = providers.as_array().unwrap().iter().find(|p| p["address"] == cold.as_str()).unwrap().clone();
    assert_eq!(record["operator"], operator.as_str());
    assert!(
        !providers.as_array().unwrap().iter().any(|p| p["address"] == operator.as_str()),
        "the operator key is not a provider of its own"
    );

    // A buyer leases from the account; the operator's node runs the job; the account is paid.
    let before = balance(&api3, &cold);
    let out = ok(submit(
        &buyer_home,
        &api3,
        &["--gpus", "1", "--provider", &cold, "--duration", "10m", "--wait", "--", "sh", "-c", "echo operated"],
    ));
    assert_eq!(out, "operated\n");
    wait_until("the account to be paid", Duration::from_secs(60), || balance(&api3, &cold) > before);
    assert!(balance(&api3, &operator) < 1_000_000, "the operator earns nothing of its own, only pays fees");
    let keys: Vec<String> = std::fs::read_dir(op_home.join("keys"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(keys, ["node.json"], "the GPU host holds only its operator key");

    // The operator key cannot move the account's money or change the operator.
    let steal = err(agora(&[
        "--home",
        op_home.to_str().unwrap(),
        "transfer",
        &operator,
        "1",
        "--key",
        "node",
        "--node",
        &op_api,
    ]));
    assert!(steal.contains("insufficient") || steal.contains("balance"), "{steal}");
    let chain =
        err(agora(&["--home", op_home.to_str().unwrap(), "set-operator", &cold, "--key", "node", "--node", &op_api]));
    assert!(chain.contains("operator"), "{chain}");

    // Withdrawn, the key speaks for nobody: its offer leaves every book.
    ok(agora(&["--home", &buyer_home, "clear-operator", "--key", "cold", "--node", &api3]));
    wait_until("the withdrawn operator's offer to go", Duration::from_secs(60), || {
        !json(&api3, "/v1/offers").as_array().into_iter().flatten().any(|o| o["provider"] == cold.as_str())
    });
    let refused =
        err(submit(&buyer_home, &api3, &["--gpus", "1", "--provider", &cold, "--duration", "1m", "--", "true"]));
    assert!(refused.contains("no offer matches"), "{refused}");
}
