//! HTTP handlers.
use std::collections::BTreeSet;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;

use crate::connections::read_body;
use crate::db::Report;
use crate::github;
use crate::jobs::{self, Job, Submitted};
use crate::state::{AppState, MAX_PENDING_JOBS, now};
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
        .route("/v1/hosts", get(fleet_status))
        .route("/v1/hosts/{host}/manifest", get(manifest))
        .route("/v1/hosts/{host}/report", post(report))
        .with_state(state)
        .layer(axum::middleware::from_fn_with_state(limits, read_body))
        // The limit is read_body's; axum's own default (2 MiB) would only be in the way.
        .layer(axum::extract::DefaultBodyLimit::disable())
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
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

fn etag_matches(headers: &HeaderMap, etag: &str) -> bool {
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

/// What a host reports.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportBody {
    /// `ok`, `failed`, … (at most 64 characters).
    pub status: String,
    /// The commit it runs.
    pub commit: Option<String>,
    /// The system it runs.
    pub system: Option<String>,
    /// Free text (at most 4096 characters).
    pub message: Option<String>,
}

/// The token of an `Authorization: Bearer <token>` value. The scheme is
/// case-insensitive (RFC 7235 section 2.1: `bearer`, `BEARER` are `Bearer`), separated
/// from the token by one or more spaces.
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim_start_matches(' ');
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

async fn report(
    State(state): State<Arc<AppState>>,
    Path(host): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if HostName::parse(&host).is_err() {
        return error(StatusCode::BAD_REQUEST, "invalid host name");
    }
    let token = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(bearer_token).unwrap_or("");
    if !state.host_tokens.check(&host, token) {
        return error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token for this host");
    }
    let r: ReportBody = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("malformed JSON body: {e}")),
    };
    let too_long = r.status.is_empty()
        || r.status.len() > 64
        || r.message.as_ref().is_some_and(|m| m.len() > 4096)
        || r.commit.as_ref().is_some_and(|c| fleetgate_channel::commit::CommitId::parse(c).is_err())
        || r.system.as_ref().is_some_and(|s| fleetgate_channel::store_path::validate(s).is_err());
    if too_long {
        return error(
            StatusCode::BAD_REQUEST,
            "status must be 1-64 characters, message at most 4096, commit a full id, system a store path",
        );
    }
    let rep = Report { received_at: now(), status: r.status, commit: r.commit, system: r.system, message: r.message };
    let stored = state.db.lock().map_err(|_| ()).and_then(|db| db.add_report(&host, &rep).map_err(|_| ()));
    match stored {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(()) => error(StatusCode::INTERNAL_SERVER_ERROR, "could not store the report"),
    }
}

async fn fleet_status(State(state): State<Arc<AppState>>) -> Response {
    let mut hosts: BTreeSet<String> = state.host_tokens.hosts().cloned().collect();
    if let Ok(m) = state.manifests.read() {
        hosts.extend(m.keys().cloned());
    }
    let db = match state.db.lock() {
        Ok(db) => db,
        Err(_) => return error(StatusCode::INTERNAL_SERVER_ERROR, "database lock poisoned"),
    };
    if let Ok(h) = db.reporting_hosts() {
        hosts.extend(h);
    }
    let list: Vec<serde_json::Value> = hosts
        .iter()
        .map(|h| {
            let manifest = state.manifest(h).and_then(|m| {
                let doc = fleetgate_channel::manifest::SignedManifest::parse(&m.body).ok()?;
                doc.unverified().ok()
            });
            let report = db.last_report(h).ok().flatten();
            let in_sync = match (&manifest, &report) {
                (Some(m), Some(r)) => r.commit.as_deref() == Some(m.commit.as_str()),
                _ => false,
            };
            json!({ "host": h, "manifest": manifest, "report": report, "in_sync": in_sync })
        })
        .collect();
    (StatusCode::OK, axum::Json(json!({ "hosts": list }))).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        for ok in ["Bearer t0k", "bearer t0k", "BEARER t0k", "bEaReR   t0k"] {
            assert_eq!(bearer_token(ok), Some("t0k"), "{ok}");
        }
        for bad in ["Basic t0k", "Bearer", "Bearer ", "Bearert0k", "t0k", "Bearer\tt0k"] {
            assert_eq!(bearer_token(bad), None, "{bad}");
        }
    }
}
