//! HTTP handlers.
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use fleetgate_status::AgentReport;
use serde::Deserialize;
use serde_json::json;

use crate::auth;
use crate::connections::read_body;
use crate::github;
use crate::jobs::{self, Job, Submitted};
use crate::state::{AppState, MAX_PENDING_JOBS, now};
use crate::status_routes;
use fleetgate_channel::error::ChannelError;
use fleetgate_channel::host::HostName;
use fleetgate_channel::promote::PromoteRequest;

/// The service's routes; every request body is read by [`read_body`] first (deadline,
/// size cap).
pub fn router(state: Arc<AppState>) -> Router {
    let limits = Arc::new(state.limits.clone());
    Router::new()
        .route("/hooks/github", post(github_hook))
        .route("/v1/jobs/{id}", get(job_status))
        .route("/v1/hosts/{host}/manifest", get(manifest))
        .route("/v1/hosts/{host}/report", post(report))
        .merge(status_routes::routes())
        .with_state(state)
        .layer(axum::middleware::from_fn_with_state(limits, read_body))
        // The limit is read_body's; axum's own default (2 MiB) would only be in the way.
        .layer(axum::extract::DefaultBodyLimit::disable())
}

pub(crate) fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({ "error": message.into() }))).into_response()
}

fn channel_error(e: &ChannelError) -> Response {
    error(error_status(e), e.chain())
}

/// The HTTP status an error maps to (also recorded in failed jobs).
pub(crate) fn error_status(e: &ChannelError) -> StatusCode {
    match e {
        e if e.is_bad_input() => StatusCode::BAD_REQUEST,
        ChannelError::Diverged { .. } => StatusCode::CONFLICT,
        ChannelError::CommitNotFound { .. } | ChannelError::SystemMissing { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        _ => StatusCode::BAD_GATEWAY,
    }
}

/// The body a CI step sends to `/hooks/github`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HookBody {
    /// Host name.
    pub host: String,
    /// Full commit id.
    pub commit: String,
    /// System store path (already in the cache, or in this machine's store).
    pub system: String,
    /// CI build reference (run URL).
    pub build: Option<String>,
}

async fn github_hook(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(secret) = &state.hook_secret else {
        return error(StatusCode::NOT_FOUND, "the hook is disabled (no secret configured)");
    };
    let sig = headers.get("x-hub-signature-256").and_then(|v| v.to_str().ok());
    if !github::verify(secret.expose().as_bytes(), &body, sig) {
        let line = "hook: rejected a request with a missing or bad X-Hub-Signature-256";
        if let Some(line) = state.bad_signatures.admit(std::time::Instant::now(), line) {
            (state.log)(&line);
        }
        return error(StatusCode::UNAUTHORIZED, "bad or missing X-Hub-Signature-256");
    }
    if headers.get("x-github-event").and_then(|v| v.to_str().ok()) == Some("ping") {
        return (StatusCode::OK, axum::Json(json!({ "pong": true }))).into_response();
    }
    let parsed: HookBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("malformed JSON body: {e}")),
    };
    let req = match PromoteRequest::parse(&parsed.host, &parsed.commit, &parsed.system, parsed.build.as_deref(), false)
    {
        Ok(r) => r,
        Err(e) => return channel_error(&e),
    };
    let Some((nix, cfg)) = state.channel.clone() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "promotion is not configured (start serve with --repo, --cache, --signing-key)",
        );
    };
    let delivery = match headers.get("x-github-delivery").map(|v| v.to_str()) {
        None => None,
        Some(Ok(d)) if jobs::valid_delivery(d) => Some(d.to_owned()),
        Some(_) => {
            return error(StatusCode::BAD_REQUEST, "X-GitHub-Delivery must be 1-128 letters, digits, '-', '_' or '.'");
        }
    };
    let submitted = match state.jobs.lock() {
        Ok(mut jobs) => jobs.submit(delivery.as_deref(), req.host.as_str(), req.commit.as_str(), now()),
        Err(_) => return error(StatusCode::INTERNAL_SERVER_ERROR, "job table lock poisoned"),
    };
    let job = match submitted {
        Submitted::New(job) => job,
        Submitted::Duplicate(job) => {
            (state.log)(&format!(
                "hook: delivery {} is job {} already, not started again",
                job.delivery.as_deref().unwrap_or(""),
                job.id
            ));
            return accepted(&job, true);
        }
        Submitted::Full => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::RETRY_AFTER, HeaderValue::from_static("60"))],
                axum::Json(json!({
                    "error": format!(
                        "{} promotions are queued or running already; retry later",
                        MAX_PENDING_JOBS
                    )
                })),
            )
                .into_response();
        }
    };
    let response = accepted(&job, false);
    crate::promotions::spawn(state, job.id, nix, cfg, req);
    response
}

/// `202 Accepted` for a (possibly already known) job, with where to ask about it.
fn accepted(job: &Job, duplicate: bool) -> Response {
    let location = format!("/v1/jobs/{}", job.id);
    let mut body = json!(job);
    if let Some(map) = body.as_object_mut() {
        map.insert("duplicate".into(), duplicate.into());
        map.insert("status_url".into(), location.clone().into());
    }
    let location = HeaderValue::from_str(&location).unwrap_or(HeaderValue::from_static("/v1/jobs"));
    (StatusCode::ACCEPTED, [(header::LOCATION, location)], axum::Json(body)).into_response()
}

async fn job_status(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    let job = match state.jobs.lock() {
        Ok(jobs) => jobs.get(&id).cloned(),
        Err(_) => return error(StatusCode::INTERNAL_SERVER_ERROR, "job table lock poisoned"),
    };
    match job {
        Some(job) => (StatusCode::OK, axum::Json(json!(job))).into_response(),
        None => error(StatusCode::NOT_FOUND, "no such job (job ids are forgotten on restart)"),
    }
}

pub(crate) fn etag_matches(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == etag || t == "*")
}

async fn manifest(State(state): State<Arc<AppState>>, Path(host): Path<String>, headers: HeaderMap) -> Response {
    if HostName::parse(&host).is_err() {
        return error(StatusCode::BAD_REQUEST, "invalid host name");
    }
    let Some(m) = state.manifest(&host) else {
        return error(StatusCode::NOT_FOUND, "no manifest for this host yet");
    };
    let etag = HeaderValue::from_str(&m.etag).unwrap_or(HeaderValue::from_static("\"\""));
    if etag_matches(&headers, &m.etag) {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response();
    }
    (
        StatusCode::OK,
        [
            (header::ETAG, etag),
            (header::CONTENT_TYPE, HeaderValue::from_static("application/json")),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        m.body.clone(),
    )
        .into_response()
}

/// `POST /v1/hosts/<host>/report`: a host's agent reports (schema in
/// `fleetgate_status::report`; version 1 and 2), authenticated with that host's token.
async fn report(
    State(state): State<Arc<AppState>>,
    Path(host): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if HostName::parse(&host).is_err() {
        return error(StatusCode::BAD_REQUEST, "invalid host name");
    }
    let token =
        headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(auth::bearer_token).unwrap_or("");
    if !state.host_tokens.check(&host, token) {
        return error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token for this host");
    }
    let report = match AgentReport::parse(&body) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let document = String::from_utf8_lossy(&body).into_owned();
    let stored = crate::state::blocking(state, move |state| {
        let row = state.store.add_report(&host, &report, &document, now())?;
        state.fleet.apply_local(row, now(), state.thresholds)
    });
    match stored.await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "could not store the report"),
    }
}
