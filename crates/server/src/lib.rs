//! `fleetgate-server`: fleetgate's HTTP service, `fleetgate channel serve`. The
//! promotion logic it runs for hooks is `fleetgate-channel`'s; this crate is the service
//! around it.
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
//! - `GET /v1/status`, `GET /v1/status/<host>` — the fleet's status model
//!   (`fleetgate-status`), a page of hosts with the summary, one host with its last
//!   reports ([`status_routes`]); `GET /v1/hosts` — the version-1 list;
//! - `GET /metrics` — fleet gauges for Prometheus ([`metrics`]);
//! - `GET /` and `/hosts/<host>` — the dashboard ([`dashboard`]).
//!
//! Reading needs a read token or a host's own token ([`auth`]). State lives in SQLite or
//! PostgreSQL ([`store`], versioned migrations); manifests and the fleet are also kept in
//! memory ([`fleet_cache`]), refreshed from the store, so that several processes can share
//! one PostgreSQL database.
//! Connections are served by [`connections`] (timeouts, a connection cap, graceful
//! shutdown); log lines clients can cause are rate-limited ([`log_limit`]).
pub mod auth;
pub mod cli;
pub mod connections;
pub mod dashboard;
pub mod fleet_cache;
pub mod github;
pub mod jobs;
pub mod log_limit;
pub mod metrics;
mod promotions;
pub mod routes;
pub mod state;
pub mod status_routes;
pub mod store;
pub mod tokens;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use fleetgate_nix::Nix;

pub use auth::ReadTokens;
pub use connections::Limits;
use fleetgate_channel::error::ChannelError;
use fleetgate_channel::promote::ChannelConfig;
use fleetgate_channel::secret::Secret;
use fleetgate_status::Thresholds;
pub use state::AppState;
use state::Log;
pub use store::StoreConfig;
use tokens::HostTokens;

/// Everything `serve` needs.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Where to listen (loopback by default; put a TLS proxy in front for the world).
    pub listen: SocketAddr,
    /// Where the state is: a SQLite file (`:memory:` for a throwaway one) or PostgreSQL.
    pub store: StoreConfig,
    /// Who may read the fleet's status (besides each host's own token).
    pub read_tokens: ReadTokens,
    /// When silence makes a host `stale`.
    pub thresholds: Thresholds,
    /// The HMAC secret of `POST /hooks/github` (hook disabled without one).
    pub hook_secret: Option<Secret>,
    /// Per-host report tokens.
    pub host_tokens: HostTokens,
    /// Promotion settings and Nix (hook disabled without them).
    pub channel: Option<(Nix, ChannelConfig)>,
    /// Promotions running at once (more wait in the job queue).
    pub max_promotions: usize,
    /// Timeouts and caps per client, and the shutdown deadline.
    pub limits: Limits,
}

impl ServerConfig {
    /// A service on a free loopback port keeping its state in `store`, with `host_tokens`
    /// and `read_tokens`; no hook, no promotions, default limits and thresholds.
    #[must_use]
    pub fn new(store: StoreConfig, host_tokens: HostTokens, read_tokens: ReadTokens) -> ServerConfig {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            store,
            read_tokens,
            thresholds: Thresholds::default(),
            hook_secret: None,
            host_tokens,
            channel: None,
            max_promotions: 1,
            limits: Limits::default(),
        }
    }
}

/// A server running on its own thread and runtime; on drop it shuts down as on SIGTERM
/// (running promotions get [`Limits::job_deadline`]) and the thread is joined.
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
pub fn start(cfg: ServerConfig, log: Log) -> Result<RunningServer, ChannelError> {
    let rt = runtime(2)?;
    let state = Arc::new(AppState::open(cfg, log)?);
    let listener = rt
        .block_on(tokio::net::TcpListener::bind(state.listen))
        .map_err(|e| ChannelError::Server(format!("cannot listen on {}: {e}", state.listen)))?;
    let addr = listener.local_addr().map_err(|e| ChannelError::Server(format!("no local address: {e}")))?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let log = state.log.clone();
        let result = rt.block_on(run(
            listener,
            state,
            async move {
                let _ = rx.await;
            },
            std::future::pending(),
        ));
        if let Err(e) = result {
            log(&e.chain());
        }
        // Promotions cut off by the deadline are not waited for any longer.
        rt.shutdown_timeout(Duration::from_millis(100));
    });
    Ok(RunningServer { addr, shutdown: Some(tx), thread: Some(thread) })
}

/// Serves in the foreground until SIGINT or SIGTERM, then shuts down: no new
/// connections, idle and half-sent ones cut (requests in progress get
/// [`connections::REQUEST_GRACE`]), queued promotions dropped, running ones given
/// [`Limits::job_deadline`] (a second signal stops waiting for them).
pub fn serve_forever(cfg: ServerConfig, log: Log) -> Result<(), ChannelError> {
    let rt = runtime(std::thread::available_parallelism().map_or(2, |n| n.get()))?;
    let state = Arc::new(AppState::open(cfg, log.clone())?);
    let result = rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(state.listen)
            .await
            .map_err(|e| ChannelError::Server(format!("cannot listen on {}: {e}", state.listen)))?;
        let mut signals = Signals::new()?;
        log(&format!("listening on http://{}", listener.local_addr().map_or(state.listen, |a| a)));
        // Signals counted as they come: the first shuts down, a second stops waiting for
        // running promotions.
        let (count_tx, count) = tokio::sync::watch::channel(0_u32);
        let signal_log = log.clone();
        tokio::spawn(async move {
            loop {
                let name = signals.next().await;
                if *count_tx.borrow() == 0 {
                    signal_log(&format!("{name}: shutting down"));
                } else {
                    signal_log(&format!("{name} again: not waiting for running promotions"));
                }
                count_tx.send_modify(|n| *n += 1);
            }
        });
        let (mut first, mut second) = (count.clone(), count);
        let shutdown = async move {
            let _ = first.wait_for(|n| *n >= 1).await;
        };
        let give_up = async move {
            let _ = second.wait_for(|n| *n >= 2).await;
        };
        run(listener, state, shutdown, give_up).await
    });
    rt.shutdown_timeout(Duration::from_millis(100));
    result
}

/// SIGINT and SIGTERM, as they come.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> Result<Self, ChannelError> {
        use tokio::signal::unix::{SignalKind, signal};
        let err = |e: std::io::Error| ChannelError::Server(format!("cannot handle signals: {e}"));
        Ok(Self {
            term: signal(SignalKind::terminate()).map_err(err)?,
            int: signal(SignalKind::interrupt()).map_err(err)?,
        })
    }

    /// The name of the next signal.
    async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}

/// How often the fleet cache and manifests are brought up to date without a reader.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(1);

async fn refresh_forever(state: Arc<AppState>) {
    let mut tick = tokio::time::interval(REFRESH_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let failures = log_limit::RateLimitedLine::new(Duration::from_secs(60));
    loop {
        tick.tick().await;
        let worker = state.clone();
        let result = tokio::task::spawn_blocking(move || worker.refresh(false)).await;
        if let Ok(Err(e)) = result
            && let Some(line) =
                failures.admit(std::time::Instant::now(), &format!("refreshing the fleet: {}", e.chain()))
        {
            (state.log)(&line);
        }
    }
}

/// Serves until `shutdown`, then lets go of the clients and waits for running
/// promotions: at most [`Limits::job_deadline`], and not after `give_up`.
async fn run(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()>,
    give_up: impl Future<Output = ()>,
) -> Result<(), ChannelError> {
    let limits = state.limits.clone();
    let log = state.log.clone();
    let app = routes::router(state.clone());
    // The fleet and the manifests follow the store (other replicas' writes) even when
    // nobody reads: agents polling manifests must see another replica's promotion.
    let refresher = tokio::spawn(refresh_forever(state.clone()));
    let stopping = state.clone();
    let shutdown = async move {
        shutdown.await;
        // Queued promotions are dropped from now on, none starts.
        stopping.stop_jobs();
    };
    connections::serve(listener, app, &limits, log.clone(), shutdown).await;
    refresher.abort();
    if let Some(line) = state.bad_signatures.flush() {
        log(&format!("hook: {line} (requests with a missing or bad X-Hub-Signature-256)"));
    }
    let running = state.running_jobs();
    if running == 0 {
        return Ok(());
    }
    let deadline = humantime::format_duration(limits.job_deadline);
    log(&format!("waiting up to {deadline} for {running} running promotion(s) to finish"));
    let why = tokio::select! {
        finished = tokio::time::timeout(limits.job_deadline, state.jobs_finished()) => match finished {
            Ok(()) => {
                log("every running promotion finished");
                return Ok(());
            }
            Err(_) => format!("--shutdown-timeout ({deadline}) passed"),
        },
        () = give_up => "a second signal came".to_owned(),
    };
    // Their git and nix children would otherwise outlive the service with nobody to
    // enforce their timeouts (and race the next start's promotions).
    let killed = fleetgate_process::kill_running_children();
    if killed > 0 {
        log(&format!("killed the {killed} git/nix process group(s) of the promotions cut off"));
    }
    Err(ChannelError::PromotionsCutOff { running: state.running_jobs(), why })
}
