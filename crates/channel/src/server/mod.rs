//! `fleetgate channel serve`: the channel's HTTP service.
//!
//! - `POST /hooks/github` — a CI step (GitHub Actions or anything that can compute an
//!   HMAC) asks for a promotion; the body is signed with `X-Hub-Signature-256`. The
//!   answer is `202 Accepted` with a job id, the promotion runs in the background
//!   ([`jobs`]);
//! - `GET /v1/jobs/<id>` — how that promotion went;
//! - `GET /v1/hosts/<host>/manifest` — the host's signed manifest, with a strong `ETag`;
//!   `If-None-Match` gets `304 Not Modified`, so idle agents cost almost nothing;
//! - `POST /v1/hosts/<host>/report` — the host reports what it runs (per-host bearer
//!   token);
//! - `GET /v1/hosts` — fleet status as JSON.
//!
//! State lives in SQLite ([`db`]); manifests are also kept in memory, ready to send.
pub mod db;
pub mod github;
pub mod jobs;
pub mod routes;
pub mod state;
pub mod tokens;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use fleetgate_nix::Nix;

use crate::error::ChannelError;
use crate::promote::ChannelConfig;
use crate::secret::Secret;
pub use state::AppState;
use tokens::HostTokens;

/// Everything `serve` needs.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Where to listen (loopback by default; put a TLS proxy in front for the world).
    pub listen: SocketAddr,
    /// The SQLite database file (`:memory:` for a throwaway one).
    pub db: PathBuf,
    /// The HMAC secret of `POST /hooks/github` (hook disabled without one).
    pub hook_secret: Option<Secret>,
    /// Per-host report tokens.
    pub host_tokens: HostTokens,
    /// Promotion settings and Nix (hook disabled without them).
    pub channel: Option<(Nix, ChannelConfig)>,
    /// Promotions running at once (more wait in the job queue).
    pub max_promotions: usize,
}

/// A server running on its own thread and runtime; stopped and joined on drop.
#[derive(Debug)]
pub struct RunningServer {
    addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RunningServer {
    /// The bound address (useful with port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn runtime(threads: usize) -> Result<tokio::runtime::Runtime, ChannelError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()
        .map_err(|e| ChannelError::Internal(format!("cannot start the async runtime: {e}")))
}

/// Binds and serves on a background thread.
pub fn start(cfg: ServerConfig, log: Arc<dyn Fn(&str) + Send + Sync>) -> Result<RunningServer, ChannelError> {
    let rt = runtime(2)?;
    let state = Arc::new(AppState::open(cfg, log)?);
    let listener = rt
        .block_on(tokio::net::TcpListener::bind(state.listen))
        .map_err(|e| ChannelError::Server(format!("cannot listen on {}: {e}", state.listen)))?;
    let addr = listener.local_addr().map_err(|e| ChannelError::Server(format!("no local address: {e}")))?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let app = routes::router(state);
    let thread = std::thread::spawn(move || {
        rt.block_on(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                })
                .await;
        });
    });
    Ok(RunningServer { addr, shutdown: Some(tx), thread: Some(thread) })
}

/// Serves in the foreground until SIGINT/SIGTERM.
pub fn serve_forever(cfg: ServerConfig, log: Arc<dyn Fn(&str) + Send + Sync>) -> Result<(), ChannelError> {
    let rt = runtime(std::thread::available_parallelism().map_or(2, |n| n.get()))?;
    let state = Arc::new(AppState::open(cfg, log.clone())?);
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(state.listen)
            .await
            .map_err(|e| ChannelError::Server(format!("cannot listen on {}: {e}", state.listen)))?;
        log(&format!("listening on http://{}", listener.local_addr().map_or(state.listen, |a| a)));
        let app = routes::router(state);
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let ctrl_c = tokio::signal::ctrl_c();
                #[cfg(unix)]
                {
                    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                        Ok(t) => t,
                        Err(_) => {
                            let _ = ctrl_c.await;
                            return;
                        }
                    };
                    tokio::select! {
                        _ = ctrl_c => {},
                        _ = term.recv() => {},
                    }
                }
            })
            .await
            .map_err(|e| ChannelError::Server(format!("server error: {e}")))
    })
}
