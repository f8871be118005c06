//! Guards in front of the HTTP API: the Host header must name the address
//! the API listens on (a web page cannot reach a loopback API through DNS
//! rebinding), and the testnet-only admin endpoints need the token from the
//! node's home (any local user or web page could otherwise partition it).
//! Costly endpoints hold a share of their slots per client address, so one
//! client trickling its requests cannot take every slot from everyone else.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

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

/// Costly requests one client address may have in flight at once (a quarter
/// of the endpoint's slots): the rest stay free for other clients.
pub const MAX_COSTLY_PER_CLIENT: usize = crate::api::MAX_CONCURRENT_COSTLY / 4;

/// The client a request is counted against: its IPv4 address, or its IPv6
/// /64 (one host commonly holds a whole /64).
pub fn client_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// Costly requests in flight per client (an entry exists only while its client has one).
#[derive(Clone, Default)]
pub struct ClientSlots(Arc<Mutex<HashMap<IpAddr, usize>>>);

/// A client's slot, given back when the request is done (dropped).
pub struct ClientSlot {
    slots: ClientSlots,
    client: IpAddr,
}

impl ClientSlots {
    /// A slot for `client`, unless it already holds its share.
    pub fn take(&self, client: IpAddr) -> Option<ClientSlot> {
        let mut held = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = held.entry(client).or_insert(0);
        if *n >= MAX_COSTLY_PER_CLIENT {
            return None;
        }
        *n += 1;
        Some(ClientSlot { slots: self.clone(), client })
    }

    /// Clients holding slots now.
    pub fn clients(&self) -> usize {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut held = self.slots.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = held.get_mut(&self.client) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                held.remove(&self.client);
            }
        }
    }
}

/// Admits a costly request if its client holds fewer than its share of the
/// slots (requests made in-process, with no peer address, are not counted).
pub async fn limit_per_client(State(slots): State<ClientSlots>, req: Request, next: Next) -> Response {
    let peer = req.extensions().get::<axum::extract::ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    let _slot = match peer {
        Some(ip) => match slots.take(client_of(ip)) {
            Some(slot) => Some(slot),
            None => {
                let body = serde_json::json!({
                    "error": "too many requests from your address in flight; retry",
                    "code": "unavailable",
                });
                return (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response();
            }
        },
        None => None,
    };
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
    fn one_client_holds_at_most_its_share_of_the_costly_slots() {
        let slots = ClientSlots::default();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let held: Vec<ClientSlot> = (0..MAX_COSTLY_PER_CLIENT).map(|_| slots.take(a).unwrap()).collect();
        assert!(slots.take(a).is_none(), "over its share");
        let b = slots.take("10.0.0.2".parse().unwrap());
        assert!(b.is_some(), "another client is not affected");
        drop(held);
        drop(b);
        assert_eq!(slots.clients(), 0, "entries go with their last slot");
        assert!(slots.take(a).is_some());
        // One IPv6 host is its /64; a v4-mapped address is its v4 address.
        let v6 = |s: &str| client_of(s.parse().unwrap());
        assert_eq!(v6("2001:db8:1:2::5"), v6("2001:db8:1:2:ffff::9"));
        assert_ne!(v6("2001:db8:1:2::5"), v6("2001:db8:1:3::5"));
        assert_eq!(v6("::ffff:10.0.0.1"), a);
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
