//! Reading the fleet: `GET /v1/status` (a page of hosts and the fleet summary),
//! `GET /v1/status/<host>` (one host, its last reports), `GET /v1/hosts` (the version-1
//! list), `GET /metrics` (Prometheus). Every one needs a reader ([`crate::auth`]); JSON
//! answers carry a strong `ETag` (of the body) and answer `If-None-Match` with `304`, so a
//! dashboard polling every few seconds costs a few hundred bytes when nothing changed.
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use fleetgate_channel::host::HostName;
use fleetgate_status::State as HostState;
use serde::Deserialize;
use serde_json::json;

use crate::auth::{self, Viewer};
use crate::fleet_cache::Filter;
use crate::routes::{error, etag_matches};
use crate::state::{AppState, blocking, etag_of};
use crate::{dashboard, metrics};

/// Reports shown per host.
pub const HOST_REPORTS: u32 = 20;

/// The routes of this module and the dashboard's.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/status", get(fleet))
        .route("/v1/status/{host}", get(host))
        .route("/v1/hosts", get(hosts_v1))
        .route("/metrics", get(metrics::metrics))
        .merge(dashboard::routes())
}

/// The reader of a request, from its bearer token or dashboard cookie.
pub(crate) fn viewer(state: &AppState, headers: &HeaderMap) -> Option<Viewer> {
    let bearer = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(auth::bearer_token);
    let token = match bearer {
        Some(t) => t.to_owned(),
        None => headers.get(header::COOKIE).and_then(|v| v.to_str().ok()).and_then(auth::cookie_token)?,
    };
    state.read_tokens.viewer(&state.host_tokens, &token)
}

pub(crate) fn unauthorized() -> Response {
    let mut r = error(StatusCode::UNAUTHORIZED, "a read token is needed (Authorization: Bearer <token>)");
    r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"fleetgate\""));
    r
}

/// A JSON document ready to send, with its strong ETag.
#[derive(Debug)]
pub(crate) struct Rendered {
    body: axum::body::Bytes,
    etag: String,
}

impl Rendered {
    fn of(value: &impl serde::Serialize) -> Result<Rendered, fleetgate_channel::ChannelError> {
        let body = serde_json::to_vec(value)
            .map_err(|e| fleetgate_channel::ChannelError::Internal(format!("cannot write JSON: {e}")))?;
        Ok(Rendered { etag: etag_of(&body), body: body.into() })
    }
}

/// Answers of `/v1/status` kept for the fleet version they were made for (a dashboard
/// polling every two seconds, and its neighbours, cost one rendering per change or second).
#[derive(Debug, Default)]
pub(crate) struct PageMemo(std::sync::Mutex<std::collections::HashMap<String, (u64, Arc<Rendered>)>>);

/// Answers memoised at most (the memo is emptied when full).
const MEMO_ENTRIES: usize = 256;

impl PageMemo {
    fn get(&self, key: &str, version: u64) -> Option<Arc<Rendered>> {
        let memo = self.0.lock().ok()?;
        memo.get(key).filter(|(v, _)| *v == version).map(|(_, r)| r.clone())
    }

    fn put(&self, key: String, version: u64, rendered: Arc<Rendered>) {
        if let Ok(mut memo) = self.0.lock() {
            if memo.len() >= MEMO_ENTRIES {
                memo.clear();
            }
            memo.insert(key, (version, rendered));
        }
    }
}

/// A JSON answer with a strong ETag of its body, or `304` if the client has it.
pub(crate) fn json_with_etag(headers: &HeaderMap, value: &impl serde::Serialize) -> Response {
    match Rendered::of(value) {
        Ok(r) => send(headers, &r),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.chain()),
    }
}

/// Sends a rendered document, or `304` if the client has it.
fn send(headers: &HeaderMap, rendered: &Rendered) -> Response {
    let (body, etag) = (rendered.body.clone(), &rendered.etag);
    let tag = HeaderValue::from_str(etag).unwrap_or(HeaderValue::from_static("\"\""));
    if etag_matches(headers, etag) {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, tag)]).into_response();
    }
    (
        StatusCode::OK,
        [
            (header::ETAG, tag),
            (header::CONTENT_TYPE, HeaderValue::from_static("application/json")),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response()
}

/// Query of `/v1/status`.
#[derive(Debug, Deserialize)]
pub struct StatusQuery {
    /// Comma-separated state words.
    state: Option<String>,
    /// Host name glob or substring.
    q: Option<String>,
    /// Page size.
    limit: Option<usize>,
    /// Page start.
    offset: Option<usize>,
    /// `full`: hosts with their generations and findings.
    detail: Option<String>,
}

impl StatusQuery {
    fn filter(&self) -> Result<Filter, String> {
        let mut states = Vec::new();
        for word in self.state.as_deref().unwrap_or("").split(',').filter(|w| !w.is_empty()) {
            states.push(HostState::parse(word).ok_or_else(|| format!("unknown state {word:?}"))?);
        }
        let query = self.q.clone().filter(|q| !q.is_empty());
        if query
            .as_ref()
            .is_some_and(|q| q.len() > 64 || !q.chars().all(|c| c.is_ascii_alphanumeric() || "-_*?".contains(c)))
        {
            return Err("q: at most 64 host-name characters, * and ?".into());
        }
        let full = match self.detail.as_deref() {
            None | Some("summary") => false,
            Some("full") => true,
            Some(other) => return Err(format!("detail: `summary` or `full`, not {other:?}")),
        };
        Ok(Filter { states, query, offset: self.offset.unwrap_or(0), limit: self.limit.unwrap_or(0), full })
    }
}

async fn fleet(State(state): State<Arc<AppState>>, headers: HeaderMap, Query(q): Query<StatusQuery>) -> Response {
    let Some(viewer) = viewer(&state, &headers) else { return unauthorized() };
    let filter = match q.filter() {
        Ok(f) => f,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let key = format!("{:?}|{filter:?}", viewer.scope);
    let rendered = blocking(state, move |s| {
        s.refresh(false)?;
        let version = s.fleet.version()?;
        if let Some(hit) = s.pages.get(&key, version) {
            return Ok(hit);
        }
        let rendered = Arc::new(Rendered::of(&s.fleet.page(&viewer, &filter)?)?);
        s.pages.put(key, version, rendered.clone());
        Ok(rendered)
    })
    .await;
    match rendered {
        Ok(r) => send(&headers, &r),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.chain()),
    }
}

async fn host(State(state): State<Arc<AppState>>, headers: HeaderMap, Path(host): Path<String>) -> Response {
    if HostName::parse(&host).is_err() {
        return error(StatusCode::BAD_REQUEST, "invalid host name");
    }
    let Some(viewer) = viewer(&state, &headers) else { return unauthorized() };
    if !viewer.can_read(&host) {
        // The same answer as for an unknown host: a scoped token learns nothing of others.
        return error(StatusCode::NOT_FOUND, "no such host");
    }
    let found = blocking(state, move |s| {
        s.refresh(false)?;
        match s.fleet.host(&host)? {
            Some(status) => Ok(Some((status, s.store.reports(&host, HOST_REPORTS)?))),
            None => Ok(None),
        }
    })
    .await;
    match found {
        Ok(Some((status, reports))) => json_with_etag(&headers, &json!({ "host": status, "reports": reports })),
        Ok(None) => error(StatusCode::NOT_FOUND, "no such host"),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.chain()),
    }
}

/// `GET /v1/hosts`, as version 1 had it: `{"hosts":[{"host","manifest","report","in_sync"}]}`.
async fn hosts_v1(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let Some(viewer) = viewer(&state, &headers) else { return unauthorized() };
    let listed = blocking(state.clone(), move |s| {
        s.refresh(false)?;
        s.fleet
            .names(&viewer)?
            .into_iter()
            .map(|h| {
                let manifest = s
                    .manifest(&h)
                    .and_then(|m| fleetgate_channel::manifest::SignedManifest::parse(&m.body).ok()?.unverified().ok());
                let report = s.store.reports(&h, 1)?.into_iter().next();
                let in_sync = match (&manifest, &report) {
                    (Some(m), Some(r)) => r.commit.as_deref() == Some(m.commit.as_str()),
                    _ => false,
                };
                Ok(json!({ "host": h, "manifest": manifest, "report": report, "in_sync": in_sync }))
            })
            .collect::<Result<Vec<_>, _>>()
    })
    .await;
    match listed {
        Ok(list) => json_with_etag(&headers, &json!({ "hosts": list })),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.chain()),
    }
}
