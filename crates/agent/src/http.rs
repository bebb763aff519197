//! The agent's HTTP client: blocking (`ureq`, no async runtime to keep idle
//! memory low), every request bounded as a whole (`timeout_global`), every
//! body read bounded, status codes returned rather than raised (a `304` is
//! an answer, not an error). TLS trusts the system's CA bundle
//! (`$SSL_CERT_FILE`, `$NIX_SSL_CERT_FILE`, `/etc/ssl/certs/ca-certificates.crt`
//! — NixOS's `security.pki`, so private CAs work) and Mozilla's roots when
//! there is none.

use std::time::Duration;

use ureq::tls::{PemItem, RootCerts, TlsConfig};

/// The largest CA bundle read.
const MAX_CA_BUNDLE: u64 = 8 << 20;

/// Why a request got no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{url}: {reason}")]
pub struct HttpError {
    /// The URL (never with credentials: the config refuses them).
    pub url: String,
    /// What happened (connection refused, timed out, body too large…).
    pub reason: String,
}

/// An answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// `ETag`.
    pub etag: Option<String>,
    /// `Last-Modified`.
    pub last_modified: Option<String>,
    /// The body (bounded).
    pub body: Vec<u8>,
}

/// A client with one timeout for every request.
#[derive(Debug, Clone)]
pub struct Client {
    agent: ureq::Agent,
}

fn system_roots() -> Option<RootCerts> {
    let candidates = ["SSL_CERT_FILE", "NIX_SSL_CERT_FILE"]
        .iter()
        .filter_map(std::env::var_os)
        .map(std::path::PathBuf::from)
        .chain(std::iter::once(std::path::PathBuf::from("/etc/ssl/certs/ca-certificates.crt")));
    for path in candidates {
        let Ok(pem) = fleetgate_nix::read_small_file(&path, MAX_CA_BUNDLE) else { continue };
        let certs: Vec<_> = ureq::tls::parse_pem(&pem)
            .filter_map(|item| match item {
                Ok(PemItem::Certificate(c)) => Some(c),
                _ => None,
            })
            .collect();
        if !certs.is_empty() {
            return Some(RootCerts::new_with_certs(&certs));
        }
    }
    None
}

impl Client {
    /// A client whose every request ends within `timeout`.
    #[must_use]
    pub fn new(timeout: Duration) -> Client {
        let roots = system_roots().unwrap_or(RootCerts::WebPki);
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .timeout_connect(Some(timeout.min(Duration::from_secs(10))))
            .http_status_as_error(false)
            .max_redirects(5)
            .user_agent(concat!("fleetgate-agent/", env!("CARGO_PKG_VERSION")))
            .tls_config(TlsConfig::builder().root_certs(roots).build())
            .build()
            .into();
        Client { agent }
    }

    fn answer(url: &str, mut r: ureq::http::Response<ureq::Body>, max: u64) -> Result<Answer, HttpError> {
        let header = |name: &str| r.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let (etag, last_modified) = (header("etag"), header("last-modified"));
        let status = r.status().as_u16();
        let body = r
            .body_mut()
            .with_config()
            .limit(max)
            .read_to_vec()
            .map_err(|e| HttpError { url: url.to_owned(), reason: format!("reading the answer: {e}") })?;
        Ok(Answer { status, etag, last_modified, body })
    }

    /// `GET url`, conditional on an `ETag` or a `Last-Modified` seen before.
    ///
    /// # Errors
    /// [`HttpError`] when there is no answer.
    pub fn get(
        &self,
        url: &str,
        etag: Option<&str>,
        last_modified: Option<&str>,
        max: u64,
    ) -> Result<Answer, HttpError> {
        let mut req = self.agent.get(url).header("Accept", "application/json");
        if let Some(e) = etag {
            req = req.header("If-None-Match", e);
        }
        if let Some(m) = last_modified {
            req = req.header("If-Modified-Since", m);
        }
        let r = req.call().map_err(|e| HttpError { url: url.to_owned(), reason: e.to_string() })?;
        Client::answer(url, r, max)
    }

    /// `POST url` with a JSON body and a bearer token.
    ///
    /// # Errors
    /// [`HttpError`] when there is no answer.
    pub fn post_json(&self, url: &str, token: Option<&str>, body: &[u8], max: u64) -> Result<Answer, HttpError> {
        let mut req = self.agent.post(url).header("Content-Type", "application/json");
        if let Some(t) = token {
            req = req.header("Authorization", &format!("Bearer {t}"));
        }
        let r = req.send(body).map_err(|e| HttpError { url: url.to_owned(), reason: e.to_string() })?;
        Client::answer(url, r, max)
    }
}
