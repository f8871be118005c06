//! The explorer's in-browser signature check (`node/assets/verify.js`), run
//! in headless Chromium on a page of signed objects made here: its blake3
//! and digests equal the protocol's at every length around the chunk and
//! block boundaries, its addresses are the protocol's bech32m, honest
//! attestations, heartbeats and offers verify, and every forgery is caught —
//! a flipped signature byte, a changed window, a signature from another
//! key, another chain, and an object that says something else than the page.
//! (The same script on a real slashed provider's page: `liveness`.)

mod common;
use common::*;

use agora_protocol::sign::{Domain, signing_digest};
use agora_protocol::{ChainId, DowntimeAttestation, Hash, Heartbeat, Height, Keypair, Signed, codec};

fn verdict_cell(signed: &[u8], signer: &str, says: &str, id: &str) -> String {
    format!(
        "<p id=\"{id}\" data-signed=\"{}\" data-expect-signer=\"{signer}\" data-expect=\"{says}\">not checked</p>\n",
        hex::encode(signed)
    )
}

#[test]
fn verify_js_checks_signatures_and_claims_in_the_browser() {
    let Some(browser) = chromium() else { return };
    let chain = ChainId::new("agora-verify-test").unwrap();
    let key = || Keypair::generate().unwrap();
    let (validator, provider, stranger) = (key(), key(), key());
    let window =
        |a, b| DowntimeAttestation { provider: provider.address(), window_start: Height(a), window_end: Height(b) };
    let says = |a: u64, b: u64| format!("provider {} silent over heights {a}-{b}", provider.address());
    let honest = Signed::sign(window(40, 60), &validator, &chain).unwrap();
    let honest_bytes = codec::encode(&honest).unwrap();

    let mut cells = String::new();
    cells += &verdict_cell(&honest_bytes, &validator.address().to_string(), &says(40, 60), "honest");
    // One signature byte flipped.
    let mut flipped = honest_bytes.clone();
    *flipped.last_mut().unwrap() ^= 1;
    cells += &verdict_cell(&flipped, &validator.address().to_string(), &says(40, 60), "flipped");
    // The window changed after signing.
    let mut moved = honest.clone();
    moved.body.window_start = Height(41);
    cells += &verdict_cell(&codec::encode(&moved).unwrap(), &validator.address().to_string(), &says(41, 60), "moved");
    // Signed by someone else than the validator the page names.
    let other = Signed::sign(window(40, 60), &stranger, &chain).unwrap();
    cells += &verdict_cell(&codec::encode(&other).unwrap(), &validator.address().to_string(), &says(40, 60), "other");
    // Signed for another chain.
    let elsewhere = Signed::sign(window(40, 60), &validator, &ChainId::new("agora-other").unwrap()).unwrap();
    cells += &verdict_cell(
        &codec::encode(&elsewhere).unwrap(),
        &validator.address().to_string(),
        &says(40, 60),
        "elsewhere",
    );
    // Genuine, but not what the page says it is.
    cells += &verdict_cell(&honest_bytes, &validator.address().to_string(), &says(0, 20), "claims");
    // A heartbeat, checked with what it names.
    let hb = Heartbeat { seq: 7, height: Height(123), block_hash: Hash([9; 32]) };
    let hb = Signed::sign(hb, &provider, &chain).unwrap();
    let hb_says = format!("up after block 123 ({}), sequence 7", hex::encode([9u8; 32]));
    cells += &verdict_cell(&codec::encode(&hb).unwrap(), &provider.address().to_string(), &hb_says, "heartbeat");

    // Digests at the lengths where blake3's chunking changes.
    let lengths = [0usize, 1, 63, 64, 65, 1023, 1024, 1025, 2048, 3073, 5000];
    let expected: Vec<String> = lengths
        .iter()
        .map(|&n| {
            let body: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
            hex::encode(signing_digest(Domain::Heartbeat, &chain, &body).unwrap())
        })
        .collect();
    let lengths_js = lengths.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(",");

    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(concat!(env!("CARGO_MANIFEST_DIR"), "/../node/assets/verify.js"), dir.path().join("verify.js"))
        .unwrap();
    let page = format!(
        r#"<!doctype html><html><body data-chain="{chain}">
<span id="verify-status"></span>
{cells}
<pre id="digests"></pre><pre id="address"></pre>
<script src="verify.js"></script>
<script>
var v = window.agoraVerify;
document.getElementById('digests').textContent = [{lengths_js}].map(function (n) {{
  var body = new Uint8Array(n);
  for (var i = 0; i < n; i++) {{ body[i] = i % 251; }}
  return v.toHex(v.digest('agora/sig/heartbeat/1', '{chain}', body));
}}).join(' ');
document.getElementById('address').textContent = v.address(v.fromHex('{key}'));
v.verifyAll();
</script></body></html>"#,
        key = hex::encode(provider.address().0),
    );
    std::fs::write(dir.path().join("page.html"), page).unwrap();
    let url = format!("file://{}", dir.path().join("page.html").display());

    let dom = rendered_dom(&browser, &url, 3_000);
    let text_of = |id: &str| -> String {
        let at = dom.find(&format!("id=\"{id}\"")).unwrap_or_else(|| panic!("#{id} in {dom}"));
        let rest = &dom[at..];
        let open = rest.find('>').unwrap() + 1;
        rest[open..open + rest[open..].find('<').unwrap()].to_string()
    };
    assert_eq!(text_of("digests"), expected.join(" "), "blake3 digests differ from the protocol's");
    assert_eq!(text_of("address"), provider.address().to_string(), "bech32m address differs");
    let attr_of = |id: &str| -> String {
        let at = dom.find(&format!("id=\"{id}\"")).unwrap();
        let tag = &dom[dom[..at].rfind('<').unwrap()..at + dom[at..].find('>').unwrap()];
        tag.split("data-verified=\"").nth(1).map(|v| v[..v.find('"').unwrap()].to_string()).unwrap_or_default()
    };
    assert_eq!(attr_of("honest"), "ok", "{}", text_of("honest"));
    assert!(text_of("honest").contains(&says(40, 60)), "{}", text_of("honest"));
    assert_eq!(attr_of("heartbeat"), "ok", "{}", text_of("heartbeat"));
    for forged in ["flipped", "moved", "other", "elsewhere", "claims"] {
        assert_eq!(attr_of(forged), "bad", "{forged} passed: {}", text_of(forged));
    }
    assert!(text_of("other").contains("not by"), "{}", text_of("other"));
    assert!(text_of("claims").contains("it says"), "{}", text_of("claims"));
    assert!(text_of("verify-status").contains("2 of 7 signatures verified"), "{}", text_of("verify-status"));
}
