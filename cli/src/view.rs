//! Reading the node API's JSON for human output: strings and micro-AGR
//! amounts out of JSON values, a GPU list on one line, an account's lines.

use agora_protocol::Amount;

/// A JSON string as is, anything else as JSON text.
pub fn text(v: &serde_json::Value) -> String {
    v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string())
}

/// An amount the API sends as a string of micro-AGR (zero if absent).
pub fn micros(v: &serde_json::Value) -> Amount {
    text(v).parse().map(Amount).unwrap_or_default()
}

/// `[{model, vram_mib, count, simulated}]` as `2x H100 80GB<label>, …`,
/// `simulated_label` marking simulated kinds.
pub fn gpu_kinds(gpus: &serde_json::Value, simulated_label: &str) -> String {
    let kinds: Vec<String> = gpus
        .as_array()
        .into_iter()
        .flatten()
        .map(|g| {
            let sim = if g["simulated"] == true { simulated_label } else { "" };
            format!("{}x {} {}GB{sim}", g["count"], text(&g["model"]), g["vram_mib"].as_u64().unwrap_or(0) / 1024)
        })
        .collect();
    kinds.join(", ")
}

/// The lines `agora ledger account` prints.
pub fn print_account(balance: Amount, stake: Amount, unbonding: Amount, nonce: u64) {
    println!("balance   {balance}");
    println!("stake     {stake}");
    println!("unbonding {unbonding}");
    println!("nonce     {nonce}");
}

/// Seconds as `1h 05m`, `3m 07s` or `42s`.
pub fn humantime_secs(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m {:02}s", secs / 60, secs % 60),
        _ => format!("{}h {:02}m", secs / 3600, secs % 3600 / 60),
    }
}
