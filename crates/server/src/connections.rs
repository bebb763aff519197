//! The service's own accept loop: what a client may cost it, and how it lets go of them
//! at shutdown.
//!
//! - **Headers** must arrive within [`Limits::header_timeout`] of the connection being
//!   ready for a request (hyper's `header_read_timeout`: it covers a silent new
//!   connection, headers trickled byte by byte, and a kept-alive connection idle between
//!   requests). The connection is then closed.
//! - **Bodies** must arrive within [`Limits::body_timeout`] of the headers and be at most
//!   [`Limits::max_body`] bytes ([`read_body`]: 408 or 413, and the connection closes).
//! - **Connections** are served at most [`Limits::max_connections`] at once; one more is
//!   answered `503` and closed at once.
//! - **Shutdown** ([`serve`]'s `shutdown` future resolves): the listener closes; idle
//!   connections are closed at once, requests in progress get [`REQUEST_GRACE`], then
//!   every connection still open (a client holding a half-sent request) is cut.
//!   What happens to running promotions is the caller's business (`crate::lifecycle`).
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use crate::log_limit::RateLimitedLine;
use crate::state::Log;

/// How long requests in progress may take once shutdown began.
pub const REQUEST_GRACE: Duration = Duration::from_secs(2);

/// What one client may cost the service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Time to send a request's headers (10 s).
    pub header_timeout: Duration,
    /// Time to send a request's body, from the end of its headers (30 s).
    pub body_timeout: Duration,
    /// Largest request body (64 KiB: hook bodies and reports are well under 8 KiB).
    pub max_body: usize,
    /// Connections served at once (256).
    pub max_connections: usize,
    /// At shutdown, how long running promotions may take before the process exits anyway
    /// (80 s: within systemd's default `TimeoutStopSec=90s`).
    pub job_deadline: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            max_body: 64 << 10,
            max_connections: 256,
            job_deadline: Duration::from_secs(80),
        }
    }
}

/// Buffers a request's body within [`Limits::body_timeout`] and [`Limits::max_body`]
/// (axum middleware for every route), so that no handler ever waits on a client.
pub async fn read_body(State(limits): State<Arc<Limits>>, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let declared = parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limits.max_body as u64) {
        return closing(StatusCode::PAYLOAD_TOO_LARGE, &format!("the body is larger than {} bytes", limits.max_body));
    }
    let bytes = match tokio::time::timeout(limits.body_timeout, axum::body::to_bytes(body, limits.max_body)).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(_)) => {
            return closing(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("the body is larger than {} bytes, or broke off", limits.max_body),
            );
        }
        Err(_) => {
            let secs = limits.body_timeout.as_secs_f64();
            return closing(StatusCode::REQUEST_TIMEOUT, &format!("the body did not arrive within {secs} s"));
        }
    };
    next.run(Request::from_parts(parts, Body::from(bytes))).await
}

/// An error answer after which the connection closes (the rest of the body is unread).
fn closing(status: StatusCode, message: &str) -> Response {
    let mut response = (status, axum::Json(serde_json::json!({ "error": message }))).into_response();
    response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// What an over-the-cap connection is told before it is closed.
const TOO_MANY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n\
Retry-After: 1\r\nConnection: close\r\nContent-Length: 39\r\n\r\n{\"error\":\"too many connections, retry\"}";

/// Serves `app` on `listener` until `shutdown` resolves, then lets go of every client
/// (see the module documentation). Returns once no connection is left.
pub async fn serve(listener: TcpListener, app: Router, limits: &Limits, log: Log, shutdown: impl Future<Output = ()>) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let (stop_tx, stop_rx) = watch::channel(false);
    let refused = RateLimitedLine::new(Duration::from_secs(60));
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Out of file descriptors, most likely: let connections finish.
                        if let Some(line) = refused.admit(Instant::now(), &format!("accepting a connection failed: {e}")) {
                            log(&line);
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    let _ = stream.try_write(TOO_MANY);
                    let line = format!("refused a connection: {} are open already", limits.max_connections);
                    if let Some(line) = refused.admit(Instant::now(), &line) {
                        log(&line);
                    }
                    continue;
                };
                let (app, stop, timeout) = (app.clone(), stop_rx.clone(), limits.header_timeout);
                connections.spawn(async move {
                    serve_connection(stream, app, timeout, stop).await;
                    drop(slot);
                });
            }
        }
    }
    drop(listener);
    let open = connections.len();
    let _ = stop_tx.send(true);
    let all_done = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(REQUEST_GRACE, all_done).await.is_err() {
        let left = connections.len();
        connections.abort_all();
        while connections.join_next().await.is_some() {}
        let grace = humantime::format_duration(REQUEST_GRACE);
        log(&format!("shutdown: {open} connection(s) were open; {left} still busy after {grace} were cut"));
    } else if open > 0 {
        log(&format!("shutdown: {open} connection(s) closed"));
    }
    if let Some(line) = refused.flush() {
        log(&line);
    }
}

/// One HTTP/1.1 connection, closed gracefully when `stop` turns true.
async fn serve_connection(stream: TcpStream, app: Router, header_timeout: Duration, mut stop: watch::Receiver<bool>) {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(header_timeout);
    let connection = builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app));
    tokio::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => return,
        _ = stop.wait_for(|stop| *stop) => {}
    }
    // Idle: closes now. In the middle of a request: after its answer (or when cut).
    connection.as_mut().graceful_shutdown();
    let _ = connection.await;
}
