//! Where the signed manifest comes from: `channel serve`
//! (`GET /v1/hosts/<host>/manifest`, strong `ETag`), any static URL (a CDN,
//! an S3 bucket: `ETag` or `Last-Modified`), or a file on the host. The
//! manifest is signed, so the transport needs no trust; every fetch is
//! conditional when the source allows it and bounded in time and size.

use std::path::PathBuf;

use fleetgate_channel::manifest::MAX_DOCUMENT;

use crate::config::ManifestLocation;
use crate::http::Client;

/// What a fetch brought.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    /// Unchanged since the validators given.
    NotModified,
    /// A document, with the validators to send next time.
    Document {
        /// The bytes (at most [`MAX_DOCUMENT`]).
        bytes: Vec<u8>,
        /// `ETag`.
        etag: Option<String>,
        /// `Last-Modified`.
        last_modified: Option<String>,
    },
}

/// Why nothing was fetched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    /// No answer (network, timeout, body too large).
    #[error("the manifest source did not answer: {0}")]
    Unreachable(String),
    /// The source has no manifest for this host (404, no file).
    #[error("{0} has no manifest for this host yet")]
    Missing(String),
    /// Any other answer.
    #[error("the manifest source answered {status}: {detail}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// The start of its body.
        detail: String,
    },
}

/// A manifest source.
pub trait Source {
    /// For messages.
    fn describe(&self) -> String;
    /// Fetches the manifest, conditionally on the validators of the last fetch.
    ///
    /// # Errors
    /// [`FetchError`].
    fn fetch(&mut self, etag: Option<&str>, last_modified: Option<&str>) -> Result<Fetched, FetchError>;
}

/// An `http(s)://` source.
#[derive(Debug, Clone)]
pub struct HttpSource {
    url: String,
    client: Client,
}

impl HttpSource {
    /// The source at `url`.
    #[must_use]
    pub fn new(url: String, client: Client) -> HttpSource {
        HttpSource { url, client }
    }
}

impl Source for HttpSource {
    fn describe(&self) -> String {
        self.url.clone()
    }

    fn fetch(&mut self, etag: Option<&str>, last_modified: Option<&str>) -> Result<Fetched, FetchError> {
        let a = self
            .client
            .get(&self.url, etag, last_modified, MAX_DOCUMENT)
            .map_err(|e| FetchError::Unreachable(e.to_string()))?;
        match a.status {
            200 => Ok(Fetched::Document { bytes: a.body, etag: a.etag, last_modified: a.last_modified }),
            304 => Ok(Fetched::NotModified),
            404 => Err(FetchError::Missing(self.url.clone())),
            status => Err(FetchError::Refused {
                status,
                detail: String::from_utf8_lossy(&a.body).chars().take(200).collect::<String>().trim().to_owned(),
            }),
        }
    }
}

/// A file on this host (no validators: the caller compares contents).
#[derive(Debug, Clone)]
pub struct FileSource {
    path: PathBuf,
}

impl FileSource {
    /// The file at `path`.
    #[must_use]
    pub fn new(path: PathBuf) -> FileSource {
        FileSource { path }
    }
}

impl Source for FileSource {
    fn describe(&self) -> String {
        format!("file://{}", self.path.display())
    }

    fn fetch(&mut self, _: Option<&str>, _: Option<&str>) -> Result<Fetched, FetchError> {
        match fleetgate_nix::read_small_file(&self.path, MAX_DOCUMENT) {
            Ok(bytes) => Ok(Fetched::Document { bytes, etag: None, last_modified: None }),
            Err(fleetgate_nix::SmallFileError::Open { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                Err(FetchError::Missing(self.describe()))
            }
            Err(e) => {
                let cause = std::error::Error::source(&e).map(|c| format!(": {c}")).unwrap_or_default();
                Err(FetchError::Unreachable(format!("{e}{cause}")))
            }
        }
    }
}

/// The source a configuration names.
#[must_use]
pub fn open(location: &ManifestLocation, client: &Client) -> Box<dyn Source> {
    match location {
        ManifestLocation::Http(url) => Box::new(HttpSource::new(url.clone(), client.clone())),
        ManifestLocation::File(path) => Box::new(FileSource::new(path.clone())),
    }
}
