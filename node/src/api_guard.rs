//! Guards in front of the HTTP API: the Host header must name the address
//! the API listens on (a web page cannot reach a loopback API through DNS
//! rebinding), and the testnet-only admin endpoints need the token from the
//! node's home (any local user or web page could otherwise partition it).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::Error;

/// The admin token's file in a testnet node's home (mode 0600).
pub const ADMIN_TOKEN_FILE: &str = "admin.token";

/// Host headers the API answers to: its listen address, and `localhost` for
/// a loopback one; `None` (any) when it listens on every interface, where the
/// operator chose to expose it.
pub fn allowed_hosts(api: &str) -> Option<Vec<String>> {
    let addr: SocketAddr = api.parse().ok()?;
    if addr.ip().is_unspecified() {
        return None;
    }
    let port = addr.port();
    let mut hosts = vec![addr.to_string()];
    if addr.ip().is_loopback() {
        hosts.extend([format!("localhost:{port}"), format!("127.0.0.1:{port}"), format!("[::1]:{port}")]);
    }
    Some(hosts)
}

/// Whether a request's Host header is acceptable (a request without one is: browsers always send it).
pub fn host_ok(allowed: &Option<Vec<String>>, host: Option<&str>) -> bool {
    match (allowed, host) {
        (None, _) | (_, None) => true,
        (Some(list), Some(h)) => list.iter().any(|a| a.eq_ignore_ascii_case(h)),
    }
}

fn refuse(status: StatusCode, why: &str) -> Response {
    (status, axum::Json(serde_json::json!({ "error": why }))).into_response()
}

/// Refuses requests whose Host names another server (DNS rebinding).
pub async fn check_host(State(allowed): State<Option<Vec<String>>>, req: Request, next: Next) -> Response {
    let host = req.headers().get(axum::http::header::HOST).and_then(|h| h.to_str().ok());
    if !host_ok(&allowed, host) {
        return refuse(StatusCode::MISDIRECTED_REQUEST, "this API answers only to its own address (Host header)");
    }
    next.run(req).await
}

/// Admits admin requests carrying `Authorization: Bearer TOKEN`.
pub async fn check_admin(State(token): State<String>, req: Request, next: Next) -> Response {
    let given = req.headers().get(axum::http::header::AUTHORIZATION).and_then(|h| h.to_str().ok());
    if given.and_then(|g| g.strip_prefix("Bearer ")) != Some(token.as_str()) {
        return refuse(StatusCode::UNAUTHORIZED, "admin endpoints need the token in the node's admin.token");
    }
    next.run(req).await
}

pub fn token_path(home: &Path) -> PathBuf {
    home.join(ADMIN_TOKEN_FILE)
}

/// The node's admin token: read from its home, or made (random, 0600) if absent.
pub fn admin_token(home: &Path) -> Result<String, Error> {
    let path = token_path(home);
    if let Ok(text) = std::fs::read_to_string(&path) {
        return Ok(text.trim().to_string());
    }
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| Error::Identity(format!("no randomness for the admin token: {e}")))?;
    let token = hex::encode(bytes);
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f =
        std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path).map_err(Error::io(&path))?;
    f.write_all(token.as_bytes()).map_err(Error::io(&path))?;
    Ok(token)
}

/// Admin endpoints exist only on testnet chains.
pub fn admin_allowed(chain_id: &str) -> bool {
    chain_id.contains("testnet")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_must_be_the_apis_own_address() {
        let loopback = allowed_hosts("127.0.0.1:7600");
        assert!(host_ok(&loopback, Some("127.0.0.1:7600")));
        assert!(host_ok(&loopback, Some("LOCALHOST:7600")));
        assert!(host_ok(&loopback, None));
        assert!(!host_ok(&loopback, Some("evil.example:7600")), "DNS rebinding");
        assert!(!host_ok(&loopback, Some("127.0.0.1:7601")));
        assert!(host_ok(&allowed_hosts("0.0.0.0:7600"), Some("node.example:7600")), "exposed on purpose");
        assert!(admin_allowed("agora-testnet-1") && !admin_allowed("agora-mainnet-1"));
    }

    #[test]
    fn the_admin_token_is_made_once_and_private() {
        let tmp = tempfile::tempdir().unwrap();
        let t = admin_token(tmp.path()).unwrap();
        assert_eq!(t.len(), 64);
        assert_eq!(admin_token(tmp.path()).unwrap(), t, "read back, not remade");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(token_path(tmp.path())).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}
