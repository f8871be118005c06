//! Leases end to end on a real 4-node testnet (2 providers with simulated
//! GPUs), driven through the `agora` binary as a buyer would: a job runs on
//! the provider and its output and GPU ids come back through `agora lease
//! logs`; settlement moves exactly the pro-rata price; cancel kills the job's
//! process (every process of it, in its cgroup) at once; refusals are plain and lock nothing; two buyers
//! racing for the last GPUs get one lease; a provider restarted mid-job
//! closes the lease for the time served and says so.

mod common;
use common::*;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use agora_protocol::job::JobSpec;
use agora_protocol::{Amount, ChainId, Keypair, LeaseRequest, Signed, TimestampMs, codec};
use agora_testnet::http;

fn balance(api: &str, address: &str) -> u64 {
    balance_at(api, address).0
}

/// An account's balance and the height it was read at.
fn balance_at(api: &str, address: &str) -> (u64, u64) {
    let a: serde_json::Value = http::get(api, &format!("/v1/accounts/{address}")).unwrap().json().unwrap();
    (a["balance"].as_str().unwrap().parse().unwrap(), a["height"].as_u64().unwrap())
}

/// What fees did to an account's balance over blocks `from+1..=to`: the fees
/// of blocks it proposed, less the fees of its own transactions.
fn fee_flow(api: &str, address: &str, from: u64, to: u64) -> i64 {
    let mut flow = 0i64;
    for h in from + 1..=to {
        let b: serde_json::Value = http::get(api, &format!("/v1/blocks/{h}")).unwrap().json().unwrap();
        for tx in b["txs"].as_array().unwrap() {
            let fee: i64 = tx["fee"].as_str().unwrap().parse().unwrap();
            if b["header"]["proposer"] == address {
                flow += fee;
            }
            if tx["sender"] == address {
                flow -= fee;
            }
        }
    }
    flow
}

fn lease(api: &str, id: &str) -> serde_json::Value {
    http::get(api, &format!("/v1/leases/{id}")).unwrap().json().unwrap()
}

fn settled(l: &serde_json::Value) -> Option<(u64, u64)> {
    let s = l["status"].get("Settled")?;
    Some((s["paid"].as_str()?.parse().ok()?, s["refunded"].as_str()?.parse().ok()?))
}

fn propose(api: &str, request: &Signed<LeaseRequest>, spec: &JobSpec) -> (u16, String) {
    let body = serde_json::json!({
        "request": hex::encode(codec::encode(request).unwrap()),
        "spec": hex::encode(codec::encode(spec).unwrap()),
    });
    let r = http::post(api, "/v1/leases/propose", &body.to_string()).unwrap();
    (r.status, r.json().unwrap()["error"].as_str().unwrap_or("").to_string())
}

#[test]
fn leases_run_jobs_settle_refuse_and_survive_restarts() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("net");
    let d = dir.to_str().unwrap();
    let base = common::test_ports(4);
    let _down = Down(dir.clone());
    let net = testnet_up(&dir, 2, base, &["--commit-pause-ms", "50"]);
    let node = |i: usize| net["nodes"][i].clone();
    let api: Vec<String> = (0..4).map(|i| node(i)["api_url"].as_str().unwrap().to_string()).collect();
    let addr: Vec<String> = (0..4).map(|i| node(i)["address"].as_str().unwrap().to_string()).collect();
    let home = |i: usize| PathBuf::from(node(i)["home"].as_str().unwrap());
    let buyer_home = net["buyer_home"].as_str().unwrap().to_string();
    let buyer_key = agora_node::keystore::load(Path::new(&buyer_home), "default").unwrap().keypair;
    let buyer = buyer_key.address().to_string();
    wait_until("both providers' offers on node 3", Duration::from_secs(120), || {
        let offers: serde_json::Value =
            http::get(&api[3], "/v1/offers").ok().and_then(|r| r.json().ok()).unwrap_or_default();
        offers.as_array().is_some_and(|a| a.len() == 2)
    });

    // 1. A job runs on the chosen provider; its output and GPU ids come back.
    let (b0, p0) = (balance(&api[3], &buyer), balance_at(&api[3], &addr[0]));
    let run = submit(
        &buyer_home,
        &api[3],
        &[
            "--gpus",
            "1",
            "--provider",
            &addr[0],
            "--duration",
            "10m",
            "--wait",
            "--",
            "sh",
            "-c",
            "echo hello; echo $CUDA_VISIBLE_DEVICES",
        ],
    );
    let stdout = ok(run);
    assert_eq!(stdout, "hello\nSIM-H100-0\n", "the job's output, exactly");
    let list: serde_json::Value =
        serde_json::from_str(&ok(agora(&["--home", &buyer_home, "lease", "list", "--node", &api[2], "--json"])))
            .unwrap();
    let first = list[0]["id"].as_str().unwrap().to_string();
    let logs = ok(agora(&["--home", &buyer_home, "lease", "logs", &first, "--node", &api[1]]));
    assert_eq!(logs, "hello\nSIM-H100-0\n", "logs fetched from the provider through another node");
    let l = lease(&api[3], &first);
    assert_eq!(l["status"]["Settled"]["reason"], "Closed");
    assert_eq!(l["status"]["Settled"]["exit_code"], 0);
    let (paid, refunded) = settled(&l).unwrap();
    assert_eq!(paid + refunded, l["escrow"].as_str().unwrap().parse::<u64>().unwrap());
    let (b1, p1) = (balance(&api[3], &buyer), balance_at(&api[3], &addr[0]));
    let fees = fee_flow(&api[3], &addr[0], p0.1, p1.1);
    assert_eq!(
        p1.0 as i64 - p0.0 as i64,
        paid as i64 + fees,
        "the provider gains exactly the pro-rata price, fees aside"
    );
    let fee = agora_ledger::params::DEFAULT_MIN_TX_FEE.0;
    assert_eq!(b0 - b1, paid + fee, "the buyer pays exactly that and the fee of opening the lease");
    let supply: serde_json::Value = http::get(&api[3], "/v1/supply").unwrap().json().unwrap();
    assert_eq!(supply["conserved"], true, "supply conserved: {supply}");
    // The explorer shows the lease, its block, the buyer's account, and finds them.
    let page = |path: &str| explorer_page(&api[1], path);
    let shown = page(&format!("/explorer/leases/{first}"));
    assert!(shown.contains("closed") && shown.contains("spot (one job)") && shown.contains(&buyer), "{shown}");
    assert!(page(&format!("/explorer/accounts/{buyer}")).contains("balance"));
    // The provider's earnings and leases served are on the ledger, and shown.
    let providers: serde_json::Value = http::get(&api[1], "/v1/providers").unwrap().json().unwrap();
    let p = providers.as_array().unwrap().iter().find(|p| p["address"] == addr[0].as_str()).unwrap();
    assert_eq!((p["earned"].as_str(), p["leases_served"].as_u64()), (Some(paid.to_string().as_str()), Some(1)), "{p}");
    let listed = page("/explorer/providers");
    assert!(listed.contains(&format!("title=\"{paid} micro-AGR\"")), "the earnings, exact on hover");
    assert!(page("/explorer/blocks/2").contains("Transactions"));
    for (q, to) in
        [(first.as_str(), "leases"), ("2", "blocks"), (buyer.as_str(), "accounts"), (addr[0].as_str(), "providers")]
    {
        let r = http::get(&api[1], &format!("/explorer/search?q={q}")).unwrap();
        assert_eq!((r.status, r.location), (303, Some(format!("/explorer/{to}/{q}"))), "search {q}");
    }
    assert_eq!(http::get(&api[1], "/explorer/search?q=nonsense").unwrap().status, 404);
    assert_eq!(http::get(&api[1], "/explorer/leases/00").unwrap().status, 404);

    // The spot trade is in the price index: 1 GPU for 10 minutes at the offer's price.
    let index: serde_json::Value = http::get(&api[1], "/v1/market/prices").unwrap().json().unwrap();
    let spot = index.as_array().unwrap().iter().find(|r| r["kind"] == "spot").cloned().expect("a spot row");
    assert_eq!((spot["class"].as_str(), spot["gpu_seconds"].as_u64()), (Some("H100-80GB-SIM"), Some(600)), "{spot}");
    assert_eq!(spot["price"], l["price_per_gpu_hour"], "{spot}");

    // Anyone can check the buyer's balance and the lease against the
    // certified state, trusting only the genesis: a Merkle proof under the
    // header's state root, the header's commit certificate.
    let genesis = home(0).join("genesis.json");
    let genesis = genesis.to_str().unwrap();
    let proven = proven_account(&buyer, genesis, &api[2]);
    let served: serde_json::Value = http::get(&api[2], &format!("/v1/accounts/{buyer}")).unwrap().json().unwrap();
    assert_eq!(proven["balance"], served["balance"], "{proven}");
    assert!(proven["verified_height"].as_u64() > Some(0), "{proven}");
    let shown = ok(agora(&["account", &buyer, "--prove", "--genesis", genesis, "--node", &api[1]]));
    assert!(shown.contains("verified at height"), "{shown}");
    let status = ok(agora(&[
        "--home",
        &buyer_home,
        "lease",
        "status",
        &first,
        "--prove",
        "--genesis",
        genesis,
        "--node",
        &api[3],
    ]));
    assert!(status.contains("settled (Closed)") && status.contains("verified at height"), "{status}");
    // An account never seen is proven absent: balance zero.
    let nobody = agora_protocol::Keypair::generate().unwrap().address().to_string();
    let absent = ok(agora(&["account", &nobody, "--prove", "--genesis", genesis, "--node", &api[1]]));
    assert!(absent.contains("balance   0 AGR") && absent.contains("verified"), "{absent}");
    // Trusting another validator set, nothing verifies.
    let mut other: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(home(0).join("genesis.json")).unwrap()).unwrap();
    let stranger = agora_protocol::Keypair::generate().unwrap().address().to_string();
    other["accounts"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({ "address": stranger, "balance": "0", "stake": "1000000000" }));
    other["validators"] = serde_json::json!([stranger]);
    let other_path = tmp.path().join("other-genesis.json");
    std::fs::write(&other_path, other.to_string()).unwrap();
    let refused =
        err(agora(&["account", &buyer, "--prove", "--genesis", other_path.to_str().unwrap(), "--node", &api[1]]));
    assert!(refused.contains("validators you trust"), "{refused}");

    // 2. Cancel mid-run: the process group is gone within a second, settlement is pro-rata.
    let id = ok(submit(
        &buyer_home,
        &api[2],
        &[
            "--gpus",
            "2",
            "--provider",
            &addr[0],
            "--duration",
            "1h",
            "--",
            "sh",
            "-c",
            "echo started; sleep 600 & wait",
        ],
    ))
    .trim()
    .to_string();
    wait_until("the job's first output", Duration::from_secs(60), || {
        agora(&["--home", &buyer_home, "lease", "logs", &id, "--node", &api[2]]).stdout.starts_with(b"started")
    });
    wait_job_running(&id, 2);

    // Refusals while provider 0's GPUs are all leased; none of them locks anything.
    let before = balance(&api[3], &buyer);
    let busy =
        err(submit(&buyer_home, &api[3], &["--gpus", "1", "--provider", &addr[0], "--duration", "1m", "--", "true"]));
    assert!(busy.contains("provider has 0 free H100"), "{busy}");
    let other =
        err(agora(&["--home", &home(2).to_string_lossy(), "lease", "logs", &id, "--key", "node", "--node", &api[2]]));
    assert!(other.contains("only the lease's buyer can read its logs"), "{other}");
    let stranger_cancel =
        err(agora(&["--home", &home(2).to_string_lossy(), "lease", "cancel", &id, "--key", "node", "--node", &api[2]]));
    assert!(stranger_cancel.contains("not a party"), "{stranger_cancel}");
    ok(agora(&["--home", &buyer_home, "keys", "new", "--name", "broke"]));
    let broke = err(submit(
        &buyer_home,
        &api[3],
        &["--key", "broke", "--gpus", "1", "--provider", &addr[1], "--duration", "1h", "--", "true"],
    ));
    assert!(broke.contains("balance 0 AGR < escrow 2 AGR"), "{broke}");
    let huge = "x".repeat(20_000);
    let too_big = err(submit(&buyer_home, &api[3], &["--gpus", "1", "--duration", "1m", "--", "echo", &huge]));
    assert!(too_big.contains("job spec") && too_big.contains("exceeds the limit"), "{too_big}");
    let unknown = Keypair::from_seed_phrase("nobody").address().to_string();
    let nobody =
        err(submit(&buyer_home, &api[3], &["--gpus", "1", "--provider", &unknown, "--duration", "1m", "--", "true"]));
    assert!(nobody.contains("no offer matches"), "{nobody}");
    // Crafted requests straight to the API: below the ask, expired, forged, replayed.
    let chain = ChainId::new(net["chain_id"].as_str().unwrap()).unwrap();
    let spec = JobSpec { command: vec!["true".into()], env: vec![], image: None, egress: false };
    let request = |price: u64, expires: u64, nonce: u64| {
        let body = LeaseRequest {
            provider: addr[1].parse().unwrap(),
            offer_seq: 0,
            gpu_model: "H100".into(),
            gpus: 1,
            price_per_gpu_hour: Amount(price),
            duration_secs: 60,
            job_spec_hash: spec.hash().unwrap(),
            nonce,
            expires_at_ms: TimestampMs(expires),
        };
        Signed::sign(body, &buyer_key, &chain).unwrap()
    };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let (code, why) = propose(&api[3], &request(1_000_000, now + 60_000, 1), &spec);
    assert_eq!((code, why.contains("below this provider's ask of 2 AGR")), (409, true), "{why}");
    let (code, why) = propose(&api[3], &request(2_000_000, now - 1, 2), &spec);
    assert_eq!((code, why.contains("expired")), (409, true), "{why}");
    let mut forged = request(2_000_000, now + 60_000, 3);
    forged.signer = Keypair::from_seed_phrase("someone else").address();
    let (code, why) = propose(&api[3], &forged, &spec);
    assert_eq!((code, why.contains("signature")), (400, true), "{why}");
    let fine = request(2_000_000, now + 60_000, 4);
    assert_eq!(propose(&api[3], &fine, &spec).0, 200);
    let (code, why) = propose(&api[3], &fine, &spec);
    assert_eq!((code, why.contains("already accepted")), (409, true), "a replayed request: {why}");
    assert_eq!(balance(&api[3], &buyer), before, "refusals lock nothing");
    // Without --provider, a full provider passes the request on to the next offer.
    let next = submit(&buyer_home, &api[3], &["--gpus", "1", "--duration", "1m", "--wait", "--", "true"]);
    assert!(next.status.success(), "{}", String::from_utf8_lossy(&next.stderr));
    assert!(String::from_utf8_lossy(&next.stderr).contains(&addr[1]), "leased from provider 1");
    let before = balance(&api[3], &buyer);

    let cancel = ok(agora(&["--home", &buyer_home, "lease", "cancel", &id, "--node", &api[2]]));
    assert!(cancel.contains("cancelled"), "{cancel}");
    // Timed from when the provider's own ledger has the cancel (its node may
    // commit a moment after the buyer's): the job dies within a second.
    wait_until("the provider to commit the cancel", Duration::from_secs(60), || {
        settled(&lease(&api[0], &id)).is_some()
    });
    let cancelled_at = Instant::now();
    wait_until("the job's processes to die", Duration::from_secs(5), || job_pids(&id).is_empty());
    let took = cancelled_at.elapsed();
    assert!(took < Duration::from_secs(1), "the job's processes outlived the cancel by {took:?}");
    let l = lease(&api[3], &id);
    assert_eq!(l["status"]["Settled"]["reason"], "Cancelled");
    let (paid, refunded) = settled(&l).unwrap();
    assert!(paid > 0 && refunded > 0, "pro-rata: paid {paid}, refunded {refunded}");
    let fee = agora_ledger::params::DEFAULT_MIN_TX_FEE.0;
    assert_eq!(
        balance(&api[3], &buyer),
        before + refunded - fee,
        "the refund reaches the buyer (less the cancel's fee)"
    );

    // 3. Two buyers race for provider 0's two GPUs (free again): exactly one lease opens.
    //    (Provider 1 holds one GPU for the crafted request accepted above.)
    let racers: Vec<_> = [(buyer_home.clone(), "default"), (home(3).to_string_lossy().into_owned(), "node")]
        .into_iter()
        .map(|(h, key)| {
            let a = api[3].clone();
            let p = addr[0].clone();
            std::thread::spawn(move || {
                submit(
                    &h,
                    &a,
                    &["--key", key, "--gpus", "2", "--provider", &p, "--duration", "30m", "--", "sleep", "600"],
                )
            })
        })
        .collect();
    let results: Vec<Output> = racers.into_iter().map(|t| t.join().unwrap()).collect();
    let winners: Vec<&Output> = results.iter().filter(|o| o.status.success()).collect();
    assert_eq!(
        winners.len(),
        1,
        "{:?}",
        results.iter().map(|o| String::from_utf8_lossy(&o.stderr)).collect::<Vec<_>>()
    );
    let loser = results.iter().find(|o| !o.status.success()).unwrap();
    assert!(String::from_utf8_lossy(&loser.stderr).contains("provider has 0 free H100"));
    let race_id = String::from_utf8_lossy(&winners[0].stdout).trim().to_string();

    // 4. Provider 0 restarts while that job runs: the lease is closed for the time served,
    //    the old job's processes are killed, and the buyer is told why.
    wait_job_running(&race_id, 1);
    ok(agora(&["testnet", "restart", "0", "--dir", d]));
    wait_until("the lease closed after the restart", Duration::from_secs(120), || {
        settled(&lease(&api[3], &race_id)).is_some()
    });
    let l = lease(&api[3], &race_id);
    assert_eq!(l["status"]["Settled"]["reason"], "Closed");
    let (paid, refunded) = settled(&l).unwrap();
    assert!(paid > 0 && refunded > 0, "settled for the time served: {paid} / {refunded}");
    wait_until("the old job's processes to die", Duration::from_secs(10), || job_pids(&race_id).is_empty());
    let winner_home =
        if results[0].status.success() { buyer_home.clone() } else { home(3).to_string_lossy().into_owned() };
    let winner_key = if results[0].status.success() { "default" } else { "node" };
    wait_until("node 0 to see the lease settled", Duration::from_secs(120), || {
        http::get(&api[0], &format!("/v1/leases/{race_id}"))
            .ok()
            .and_then(|r| r.json().ok())
            .is_some_and(|l| settled(&l).is_some())
    });
    let status =
        ok(agora(&["--home", &winner_home, "lease", "status", &race_id, "--key", winner_key, "--node", &api[3]]));
    assert!(status.contains("the provider restarted while the job ran"), "{status}");

    // The restarted provider advertises and takes leases again.
    let again = ok(submit(
        &buyer_home,
        &api[3],
        &["--gpus", "1", "--provider", &addr[0], "--duration", "5m", "--wait", "--", "echo", "back"],
    ));
    assert_eq!(again, "back\n");
}
