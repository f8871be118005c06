//! `agora node run`: starts the daemon and the HTTP API on a tokio runtime
//! and stops both cleanly on SIGINT or SIGTERM (the store is flushed, the
//! swarm and the API server are closed).

use std::path::Path;

use tokio::sync::watch;

use crate::config::{NODE_KEY_NAME, NodeConfig};
use crate::daemon::Daemon;
use crate::error::Error;
use crate::{api, keystore};

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term => {},
    }
}

/// How a node joins by state sync (`agora node run --state-sync`).
#[derive(Clone, Copy, Debug, Default)]
pub struct StateSyncOptions {
    /// Take only the snapshot of this block (`--trust-hash`), checked
    /// against the validators that decided it rather than the genesis'.
    pub trust_hash: Option<agora_protocol::Hash>,
}

/// Runs the node in `home` with `config` until a shutdown signal; with
/// `state_sync`, a node whose store holds no block first joins from a
/// certified state snapshot fetched from its bootstrap peers.
pub fn run(home: &Path, config: NodeConfig, state_sync: Option<StateSyncOptions>) -> Result<(), Error> {
    config.net.check().map_err(|e| Error::Config { path: NodeConfig::path(home), reason: format!("[net] {e}") })?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.net.runtime_threads)
        .enable_all()
        .build()
        .map_err(Error::io(home))?;
    runtime.block_on(run_async(home, config, state_sync))
}

async fn run_async(home: &Path, config: NodeConfig, state_sync: Option<StateSyncOptions>) -> Result<(), Error> {
    let key = keystore::load(home, NODE_KEY_NAME)?.keypair;
    let store = match state_sync {
        Some(o) => Some(crate::state_sync::join(home, &config, &key, o.trust_hash).await?),
        None => None,
    };
    let (daemon, shared) = Daemon::start(home, &config, key, store)?;
    let listener = tokio::net::TcpListener::bind(&config.api)
        .await
        .map_err(|e| Error::Network(format!("cannot listen for the API on {}: {e}", config.api)))?;
    tracing::info!(api = %config.api, moniker = %config.moniker, "node started");
    let (stop_tx, mut stop_rx) = watch::channel(false);
    // With each connection's peer address, for the per-client limits.
    let app = api::router(shared).into_make_service_with_connect_info::<std::net::SocketAddr>();
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        let _ = stop_rx.changed().await;
    });
    let api_task = tokio::spawn(async move { server.await });
    let result = daemon.run(shutdown_signal()).await;
    let _ = stop_tx.send(true);
    let _ = api_task.await;
    tracing::info!("stopped");
    result
}
