// The explorer's "verify in this browser": checks signed objects (downtime
// attestations, heartbeats, offers) with nothing from the node but their
// bytes. For each element with data-signed (an object's wire encoding in
// hex: version byte, body, 32-byte signer, 64-byte signature) it recomputes
// the signed digest, blake3(len(tag) tag len(chain) chain body) with the
// type's domain tag (protocol/src/sign.rs), checks the ed25519 signature
// with WebCrypto, decodes what the object says and compares it with what the
// page claims (data-expect, data-expect-signer). Plain JavaScript, no
// dependencies: blake3 and bech32m are written out below.
(function () {
  'use strict';

  // ---- blake3 (hash mode, 32-byte output) ----
  var IV = [0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19];
  var PERM = [2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8];
  var CHUNK_START = 1, CHUNK_END = 2, PARENT = 4, ROOT = 8;

  function rotr(x, n) { return (x >>> n) | (x << (32 - n)); }
  function g(s, a, b, c, d, x, y) {
    s[a] = (s[a] + s[b] + x) | 0; s[d] = rotr(s[d] ^ s[a], 16);
    s[c] = (s[c] + s[d]) | 0; s[b] = rotr(s[b] ^ s[c], 12);
    s[a] = (s[a] + s[b] + y) | 0; s[d] = rotr(s[d] ^ s[a], 8);
    s[c] = (s[c] + s[d]) | 0; s[b] = rotr(s[b] ^ s[c], 7);
  }
  function compress(cv, m, counter, len, flags) {
    var s = [cv[0], cv[1], cv[2], cv[3], cv[4], cv[5], cv[6], cv[7], IV[0], IV[1], IV[2], IV[3],
      counter >>> 0, Math.floor(counter / 4294967296) >>> 0, len, flags];
    m = m.slice();
    for (var r = 0; r < 7; r++) {
      g(s, 0, 4, 8, 12, m[0], m[1]); g(s, 1, 5, 9, 13, m[2], m[3]);
      g(s, 2, 6, 10, 14, m[4], m[5]); g(s, 3, 7, 11, 15, m[6], m[7]);
      g(s, 0, 5, 10, 15, m[8], m[9]); g(s, 1, 6, 11, 12, m[10], m[11]);
      g(s, 2, 7, 8, 13, m[12], m[13]); g(s, 3, 4, 9, 14, m[14], m[15]);
      var p = new Array(16);
      for (var i = 0; i < 16; i++) { p[i] = m[PERM[i]]; }
      m = p;
    }
    for (var j = 0; j < 8; j++) { s[j] = (s[j] ^ s[j + 8]) >>> 0; }
    return s.slice(0, 8);
  }
  function words(bytes, at, len) {
    var m = new Array(16).fill(0);
    for (var i = 0; i < len; i++) { m[i >> 2] |= bytes[at + i] << (8 * (i & 3)); }
    return m;
  }
  function chunkCv(bytes, index, root) {
    var at = index * 1024, end = Math.min(bytes.length, at + 1024), cv = IV;
    var blocks = Math.max(1, Math.ceil((end - at) / 64));
    for (var b = 0; b < blocks; b++) {
      var start = at + 64 * b, len = Math.min(64, end - start);
      var flags = (b === 0 ? CHUNK_START : 0) | (b === blocks - 1 ? CHUNK_END | (root ? ROOT : 0) : 0);
      cv = compress(cv, words(bytes, start, len), index, len, flags);
    }
    return cv;
  }
  function subtree(bytes, lo, hi, root) {
    if (hi - lo === 1) { return chunkCv(bytes, lo, root); }
    var left = 1;
    while (left * 2 < hi - lo) { left *= 2; }
    var l = subtree(bytes, lo, lo + left, false), r = subtree(bytes, lo + left, hi, false);
    return compress(IV, l.concat(r), 0, 64, PARENT | (root ? ROOT : 0));
  }
  function blake3(bytes) {
    var cv = subtree(bytes, 0, Math.max(1, Math.ceil(bytes.length / 1024)), true);
    var out = new Uint8Array(32);
    for (var i = 0; i < 32; i++) { out[i] = (cv[i >> 2] >>> (8 * (i & 3))) & 0xff; }
    return out;
  }

  // ---- bytes ----
  function fromHex(hex) {
    if (!/^([0-9a-f]{2})*$/i.test(hex)) { return null; }
    var out = new Uint8Array(hex.length / 2);
    for (var i = 0; i < out.length; i++) { out[i] = parseInt(hex.substr(2 * i, 2), 16); }
    return out;
  }
  function toHex(bytes) {
    return Array.prototype.map.call(bytes, function (b) { return ('0' + b.toString(16)).slice(-2); }).join('');
  }
  function u64(bytes, at) {
    var v = 0;
    for (var i = 7; i >= 0; i--) { v = v * 256 + bytes[at + i]; }
    return v;
  }
  function le64(n) {
    var out = new Uint8Array(8);
    for (var i = 0; i < 8; i++) { out[i] = n % 256; n = Math.floor(n / 256); }
    return out;
  }
  function concat(parts) {
    var n = parts.reduce(function (a, p) { return a + p.length; }, 0), out = new Uint8Array(n), at = 0;
    parts.forEach(function (p) { out.set(p, at); at += p.length; });
    return out;
  }
  var utf8 = function (s) { return new TextEncoder().encode(s); };

  // ---- bech32m addresses (`agora1…`) ----
  var CHARSET = 'qpzry9x8gf2tvdw0s3jn54khce6mua7l';
  function polymod(values) {
    var GEN = [0x3b6a57b2, 0x26508e6d, 0x1ea119fa, 0x3d4233dd, 0x2a1462b3], chk = 1;
    values.forEach(function (v) {
      var top = chk >>> 25;
      chk = ((chk & 0x1ffffff) << 5) ^ v;
      for (var i = 0; i < 5; i++) { if ((top >>> i) & 1) { chk ^= GEN[i]; } }
    });
    return chk >>> 0;
  }
  function address(key) {
    var hrp = 'agora', data = [], acc = 0, bits = 0;
    for (var i = 0; i < key.length; i++) {
      acc = (acc << 8) | key[i]; bits += 8;
      while (bits >= 5) { bits -= 5; data.push((acc >>> bits) & 31); }
      acc &= (1 << bits) - 1;
    }
    if (bits > 0) { data.push((acc << (5 - bits)) & 31); }
    var expand = [];
    for (var j = 0; j < hrp.length; j++) { expand.push(hrp.charCodeAt(j) >> 5); }
    expand.push(0);
    for (var k = 0; k < hrp.length; k++) { expand.push(hrp.charCodeAt(k) & 31); }
    var mod = polymod(expand.concat(data, [0, 0, 0, 0, 0, 0])) ^ 0x2bc830a3;
    for (var c = 0; c < 6; c++) { data.push((mod >>> (5 * (5 - c))) & 31); }
    return hrp + '1' + data.map(function (d) { return CHARSET[d]; }).join('');
  }

  // ---- signed objects ----
  // The types the explorer shows, with their domain tags and what they say.
  var TYPES = [
    { name: 'downtime attestation', tag: 'agora/sig/downtime-attestation/1', say: function (b) {
      return b.length === 48 ? 'provider ' + address(b.subarray(0, 32)) + ' silent over heights ' + u64(b, 32) + '-' + u64(b, 40) : null;
    } },
    { name: 'heartbeat', tag: 'agora/sig/heartbeat/1', say: function (b) {
      return b.length === 48 ? 'up after block ' + u64(b, 8) + ' (' + toHex(b.subarray(16, 48)) + '), sequence ' + u64(b, 0) : null;
    } },
    { name: 'offer', tag: 'agora/sig/offer/1', say: function () { return 'an offer'; } },
  ];

  function digest(tag, chain, body) {
    var t = utf8(tag), c = utf8(chain);
    return blake3(concat([le64(t.length), t, le64(c.length), c, body]));
  }

  function verifyOne(hex, chain) {
    var bytes = fromHex(hex || '');
    if (!bytes || bytes.length < 97 || bytes[0] !== 1) { return Promise.resolve({ ok: false, why: 'not a signed object' }); }
    var body = bytes.subarray(1, bytes.length - 96), key = bytes.subarray(bytes.length - 96, bytes.length - 64);
    var sig = bytes.subarray(bytes.length - 64);
    return crypto.subtle.importKey('raw', key, { name: 'Ed25519' }, false, ['verify']).then(function (k) {
      var tries = TYPES.map(function (t) {
        return crypto.subtle.verify({ name: 'Ed25519' }, k, sig, digest(t.tag, chain, body)).then(function (ok) { return ok ? t : null; });
      });
      return Promise.all(tries);
    }).then(function (found) {
      var t = found.filter(Boolean)[0];
      if (!t) { return { ok: false, why: 'the signature does not verify on ' + chain }; }
      return { ok: true, type: t.name, signer: address(key), says: t.say(body) };
    }, function () { return { ok: false, why: 'the signer is not an ed25519 key' }; });
  }

  function check(el, chain) {
    el.textContent = 'checking…';
    return verifyOne(el.getAttribute('data-signed'), chain).then(function (r) {
      var expectSigner = el.getAttribute('data-expect-signer'), expect = el.getAttribute('data-expect');
      var verdict;
      if (!r.ok) {
        verdict = ['bad', '✗ ' + r.why];
      } else if (expectSigner && r.signer !== expectSigner) {
        verdict = ['bad', '✗ signed by ' + r.signer + ', not by ' + expectSigner];
      } else if (expect && r.says !== expect) {
        verdict = ['bad', '✗ signed, but it says: ' + r.says];
      } else {
        verdict = ['ok', '✓ ' + r.type + ' signed by ' + r.signer + (r.says ? ': ' + r.says : '')];
      }
      el.className = 'verdict ' + verdict[0];
      el.textContent = verdict[1];
      el.setAttribute('data-verified', verdict[0]);
    });
  }

  function verifyAll() {
    var chain = document.body.getAttribute('data-chain');
    var els = Array.prototype.slice.call(document.querySelectorAll('[data-signed]'));
    var status = document.getElementById('verify-status');
    if (!(window.crypto && crypto.subtle)) {
      if (status) { status.textContent = 'This browser cannot check ed25519 signatures here (WebCrypto needs HTTPS or localhost): save the evidence and run agora verify FILE.'; }
      return Promise.resolve();
    }
    return Promise.all(els.map(function (el) { return check(el, chain); })).then(function () {
      var bad = document.querySelectorAll('[data-verified="bad"]').length;
      if (status) {
        status.className = bad ? 'bad' : 'ok';
        status.textContent = (els.length - bad) + ' of ' + els.length + ' signatures verified in this browser' + (bad ? '; ' + bad + ' FAILED' : '') + '.';
      }
      document.body.setAttribute('data-verify-done', String(els.length));
    });
  }

  window.agoraVerify = { blake3: blake3, digest: digest, address: address, verifyOne: verifyOne, verifyAll: verifyAll, toHex: toHex, fromHex: fromHex };
  document.querySelectorAll('button.verify').forEach(function (b) { b.addEventListener('click', verifyAll); });
  if (location.hash === '#verify') { verifyAll(); }
})();
