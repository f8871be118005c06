//! A minimal blocking HTTP/1.1 client for the node API on loopback (GET and
//! POST of JSON, `Connection: close`), so the CLI and the testnet tooling need
//! no HTTP client library. Responses are capped in size.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// Largest response body read.
pub const MAX_RESPONSE_BYTES: usize = 8 * 1024 * 1024;
/// Connect and read timeout.
pub const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("cannot reach {0}: {1}")]
    Connect(String, std::io::Error),
    #[error("bad response from {0}: {1}")]
    Response(String, String),
}

/// An HTTP response: status code and body.
pub struct Reply {
    pub status: u16,
    pub body: String,
    /// The `Location` header of a redirect.
    pub location: Option<String>,
    /// The `Content-Type` header.
    pub content_type: Option<String>,
    /// The `Retry-After` header (a 503's hint, in seconds).
    pub retry_after: Option<String>,
}

impl Reply {
    pub fn json(&self) -> Result<serde_json::Value, HttpError> {
        serde_json::from_str(&self.body).map_err(|e| HttpError::Response("node".into(), e.to_string()))
    }
}

/// `base` is like `http://127.0.0.1:7600`; `path` starts with `/`.
pub fn request(base: &str, method: &str, path: &str, body: Option<&str>) -> Result<Reply, HttpError> {
    request_with(base, method, path, body, "")
}

/// POST with `Authorization: Bearer TOKEN` (a testnet node's admin endpoints).
pub fn post_authorized(base: &str, path: &str, body: &str, token: &str) -> Result<Reply, HttpError> {
    request_with(base, "POST", path, Some(body), &format!("Authorization: Bearer {token}\r\n"))
}

/// A request with extra header lines (each ending in CRLF).
pub fn request_with(
    base: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
    headers: &str,
) -> Result<Reply, HttpError> {
    let host = base.trim_start_matches("http://").trim_end_matches('/');
    let addr = host
        .parse::<std::net::SocketAddr>()
        .map_err(|e| HttpError::Connect(base.into(), std::io::Error::new(std::io::ErrorKind::InvalidInput, e)))?;
    let mut stream = TcpStream::connect_timeout(&addr, TIMEOUT).map_err(|e| HttpError::Connect(base.into(), e))?;
    stream.set_read_timeout(Some(TIMEOUT)).map_err(|e| HttpError::Connect(base.into(), e))?;
    let body = body.unwrap_or("");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\n{headers}Connection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(req.as_bytes()).map_err(|e| HttpError::Connect(base.into(), e))?;
    let mut raw = Vec::new();
    stream.take(MAX_RESPONSE_BYTES as u64).read_to_end(&mut raw).map_err(|e| HttpError::Connect(base.into(), e))?;
    let text = String::from_utf8_lossy(&raw);
    let (head, rest) =
        text.split_once("\r\n\r\n").ok_or_else(|| HttpError::Response(base.into(), "no header end".into()))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| HttpError::Response(base.into(), "no status".into()))?;
    let chunked = head.to_ascii_lowercase().contains("transfer-encoding: chunked");
    let body = if chunked { dechunk(rest) } else { rest.to_string() };
    let header = |wanted: &str| {
        head.lines().find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case(wanted).then(|| value.trim().to_string())
        })
    };
    Ok(Reply {
        status,
        body,
        location: header("location"),
        content_type: header("content-type"),
        retry_after: header("retry-after"),
    })
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((len, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(len.trim(), 16) else { break };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

pub fn get(base: &str, path: &str) -> Result<Reply, HttpError> {
    request(base, "GET", path, None)
}

/// A JSON list the API returns (empty if the node does not answer or sends something else).
pub fn get_list(base: &str, path: &str) -> Vec<serde_json::Value> {
    get(base, path).ok().and_then(|r| r.json().ok()).and_then(|j| j.as_array().cloned()).unwrap_or_default()
}

pub fn post(base: &str, path: &str, body: &str) -> Result<Reply, HttpError> {
    request(base, "POST", path, Some(body))
}

/// Percent-encodes a query-string value (RFC 3986 unreserved characters kept).
pub fn encode_query(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
