//! The web dashboard, served at `/`: the fleet table with filters (`/`), one page per
//! host (`/hosts/<host>`: the four truths, the generation timeline as an SVG picture,
//! findings with their fixes, the last reports), a log-in form (`/login`) that sets the
//! read-token cookie, `/logout`.
//!
//! Hand-written HTML, CSS and JavaScript in `src/dashboard/`, embedded in the binary
//! (`include_str!`): nothing is fetched from elsewhere at run time, there is no build
//! step. The pages are static; their script reads `/v1/status` and `/v1/status/<host>`
//! (polled every two seconds with `If-None-Match`, so updates appear without a reload)
//! and writes server data into the page as text only. A strict Content-Security-Policy
//! (`'self'` only, no inline script) backs that up.
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::auth;
use crate::state::AppState;
use crate::status_routes::viewer;

const FLEET_HTML: &str = include_str!("dashboard/fleet.html");
const HOST_HTML: &str = include_str!("dashboard/host.html");
const LOGIN_HTML: &str = include_str!("dashboard/login.html");
const APP_JS: &str = include_str!("dashboard/app.js");
const STYLE_CSS: &str = include_str!("dashboard/style.css");

/// The Content-Security-Policy of every page.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; \
                       form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/", get(fleet_page))
        .route("/hosts/{host}", get(host_page))
        .route("/login", get(login_page).post(login))
        .route("/logout", axum::routing::post(logout))
        .route("/assets/{file}", get(asset))
}

fn page(status: StatusCode, html: String) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8")),
            (header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP)),
            (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
            (header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        html,
    )
        .into_response()
}

fn to_login() -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, HeaderValue::from_static("/login"))]).into_response()
}

async fn fleet_page(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    match viewer(&state, &headers) {
        Some(_) => page(StatusCode::OK, FLEET_HTML.to_owned()),
        None => to_login(),
    }
}

async fn host_page(State(state): State<Arc<AppState>>, headers: HeaderMap, Path(_host): Path<String>) -> Response {
    // Whether the viewer may read this host is the API's to say (same answer as unknown).
    match viewer(&state, &headers) {
        Some(_) => page(StatusCode::OK, HOST_HTML.to_owned()),
        None => to_login(),
    }
}

async fn login_page() -> Response {
    page(StatusCode::OK, LOGIN_HTML.to_owned())
}

/// `POST /login`, form `token=…`: sets the cookie for a token that may read something.
async fn login(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    let token = form_urlencoded_value(&body, "token").unwrap_or_default();
    if state.read_tokens.viewer(&state.host_tokens, &token).is_none() {
        let html =
            LOGIN_HTML.replace("<!--error-->", "<p class=\"login-error\">That token may not read anything here.</p>");
        return page(StatusCode::UNAUTHORIZED, html);
    }
    let cookie = HeaderValue::from_str(&auth::set_cookie(Some(&token)));
    match cookie {
        Ok(cookie) => {
            (StatusCode::SEE_OTHER, [(header::SET_COOKIE, cookie), (header::LOCATION, HeaderValue::from_static("/"))])
                .into_response()
        }
        Err(_) => page(StatusCode::BAD_REQUEST, LOGIN_HTML.to_owned()),
    }
}

async fn logout() -> Response {
    let cookie = HeaderValue::from_str(&auth::set_cookie(None)).unwrap_or(HeaderValue::from_static(""));
    (StatusCode::SEE_OTHER, [(header::SET_COOKIE, cookie), (header::LOCATION, HeaderValue::from_static("/login"))])
        .into_response()
}

async fn asset(Path(file): Path<String>) -> Response {
    let (body, kind) = match file.as_str() {
        "app.js" => (APP_JS, "text/javascript; charset=utf-8"),
        "style.css" => (STYLE_CSS, "text/css; charset=utf-8"),
        _ => return (StatusCode::NOT_FOUND, "no such asset").into_response(),
    };
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(kind)),
            (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response()
}

/// The value of `key` in an `application/x-www-form-urlencoded` body.
fn form_urlencoded_value(body: &[u8], key: &str) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    text.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == key).then(|| percent_decode(v)).flatten()
    })
}

/// `+` and `%XX` decoding (HTML forms' encoding); `None` for malformed escapes or non-UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = s.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_values_are_decoded() {
        assert_eq!(form_urlencoded_value(b"a=1&token=ab%2Bc+d%3D", "token").as_deref(), Some("ab+c d="));
        assert_eq!(form_urlencoded_value(b"token=%zz", "token"), None);
        assert_eq!(form_urlencoded_value(b"token=%e2%82%ac", "token").as_deref(), Some("€"));
        assert_eq!(form_urlencoded_value(b"other=1", "token"), None);
    }

    #[test]
    fn pages_load_nothing_from_elsewhere() {
        for text in [FLEET_HTML, HOST_HTML, LOGIN_HTML, APP_JS, STYLE_CSS] {
            // The SVG namespace is a name, not something fetched.
            let text = text.replace("http://www.w3.org/2000/svg", "");
            assert!(!text.contains("http://") && !text.contains("https://") && !text.contains("//cdn"), "a remote URL");
            assert!(!text.contains("innerHTML"), "data goes in as text");
        }
    }
}
