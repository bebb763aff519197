//! Reports not delivered yet, on disk (`<agent dir>/reports/`, one file
//! each, written atomically): the server being down changes nothing on the
//! host, and what happened meanwhile arrives, oldest first, once it is back.
//!
//! Delivery of each report (oldest first) ends one of three ways:
//!
//! | answer | then |
//! |---|---|
//! | 2xx | delivered: the file is removed, the next one is sent |
//! | 400 naming an unknown field (a server that reads only version 1) | sent again as version 1, and so is every later one for [`V2_AGAIN_AFTER`] (then version 2 is tried again: the server may have been upgraded) |
//! | 400/404/413/422 otherwise | the server will never take it: removed, logged |
//! | no answer, 401/403, 408/429, 5xx | kept; delivery stops until the next poll |
//!
//! At most [`MAX_QUEUED`] are kept: the oldest go first.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::http::Client;
use crate::report::Report;
use crate::state::{StateError, write_atomically};

/// How long reports go as version 1 after a server refused version 2.
pub const V2_AGAIN_AFTER: Duration = Duration::from_secs(3600);

/// Reports kept while the server is away.
pub const MAX_QUEUED: usize = 256;
/// The largest queued report read back.
const MAX_REPORT: u64 = 1 << 20;

/// How one delivery went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// Taken.
    Delivered,
    /// Never acceptable to this server: drop it.
    Rejected(String),
    /// Try again later.
    Later(String),
}

/// Where reports go.
pub trait Sink {
    /// Sends one report.
    fn send(&mut self, report: &Report) -> Delivery;
}

/// `POST <server>/v1/hosts/<host>/report` with the host's bearer token.
#[derive(Debug, Clone)]
pub struct HttpSink {
    url: String,
    token: Option<String>,
    client: Client,
    /// Version 1 until then (a server refused version 2).
    v1_until: Option<Instant>,
    v2_again_after: Duration,
}

impl HttpSink {
    /// A sink posting to `url`.
    #[must_use]
    pub fn new(url: String, token: Option<String>, client: Client) -> HttpSink {
        HttpSink { url, token, client, v1_until: None, v2_again_after: V2_AGAIN_AFTER }
    }

    /// Tries version 2 again this long after a refusal (default [`V2_AGAIN_AFTER`]).
    #[must_use]
    pub fn with_v2_again_after(mut self, after: Duration) -> HttpSink {
        self.v2_again_after = after;
        self
    }

    fn post(&self, body: &[u8]) -> Result<(u16, String), String> {
        self.client
            .post_json(&self.url, self.token.as_deref(), body, 64 << 10)
            .map(|a| (a.status, String::from_utf8_lossy(&a.body).chars().take(300).collect()))
            .map_err(|e| e.to_string())
    }
}

fn classify(status: u16, body: String) -> Delivery {
    match status {
        200..=299 => Delivery::Delivered,
        400 | 404 | 413 | 422 => Delivery::Rejected(format!("the server refused the report ({status}): {body}")),
        _ => Delivery::Later(format!("the server answered {status}: {body}")),
    }
}

impl Sink for HttpSink {
    fn send(&mut self, report: &Report) -> Delivery {
        if self.v1_until.is_none_or(|until| Instant::now() >= until) {
            let body = serde_json::to_vec(report).unwrap_or_default();
            match self.post(&body) {
                Err(e) => return Delivery::Later(e),
                Ok((400, text)) if text.contains("unknown field") => {
                    self.v1_until = Some(Instant::now() + self.v2_again_after);
                }
                Ok((status, text)) => {
                    self.v1_until = None;
                    return classify(status, text);
                }
            }
        }
        let body = serde_json::to_vec(&crate::report::to_v1(report)).unwrap_or_default();
        match self.post(&body) {
            Err(e) => Delivery::Later(e),
            Ok((status, text)) => classify(status, text),
        }
    }
}

/// The queue directory.
#[derive(Debug, Clone)]
pub struct Queue {
    dir: PathBuf,
}

impl Queue {
    /// The queue under `agent_dir`.
    #[must_use]
    pub fn new(agent_dir: &Path) -> Queue {
        Queue { dir: agent_dir.join("reports") }
    }

    fn files(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = fs::read_dir(&self.dir)
            .map(|d| {
                d.flatten()
                    .map(|e| e.path())
                    .filter(|p| {
                        p.extension().is_some_and(|x| x == "json")
                            && !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.'))
                    })
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        files
    }

    /// Reports waiting.
    #[must_use]
    pub fn len(&self) -> usize {
        self.files().len()
    }

    /// Whether none waits.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds a report (dropping the oldest beyond [`MAX_QUEUED`]).
    ///
    /// # Errors
    /// [`StateError::Io`].
    pub fn push(&self, report: &Report) -> Result<(), StateError> {
        let files = self.files();
        // Named by a sequence number first: the order of arrival, whatever the clock does.
        let seq = files
            .last()
            .and_then(|p| p.file_stem()?.to_str()?.split('-').next()?.parse::<u64>().ok())
            .map_or(0, |n| n + 1);
        let name = format!("{seq:016}-{}.json", report.time.max(0));
        write_atomically(&self.dir.join(name), &serde_json::to_vec(report).unwrap_or_default(), 0o600)?;
        for old in self.files().iter().rev().skip(MAX_QUEUED) {
            let _ = fs::remove_file(old);
        }
        Ok(())
    }

    /// Sends what waits, oldest first, until one must wait; returns the
    /// number delivered and what stopped delivery (or dropped a report).
    pub fn flush(&self, sink: &mut dyn Sink) -> (usize, Vec<String>) {
        let mut delivered = 0;
        let mut notes = Vec::new();
        for file in self.files() {
            let report = fleetgate_nix::read_small_file(&file, MAX_REPORT)
                .ok()
                .and_then(|b| serde_json::from_slice::<Report>(&b).ok());
            let Some(report) = report else {
                notes.push(format!("dropped an unreadable queued report {}", file.display()));
                let _ = fs::remove_file(&file);
                continue;
            };
            match sink.send(&report) {
                Delivery::Delivered => {
                    delivered += 1;
                    let _ = fs::remove_file(&file);
                }
                Delivery::Rejected(why) => {
                    notes.push(why);
                    let _ = fs::remove_file(&file);
                }
                Delivery::Later(why) => {
                    notes.push(why);
                    break;
                }
            }
        }
        (delivered, notes)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;
    use crate::report::VERSION;

    struct Script(VecDeque<Delivery>, Vec<i64>);

    impl Sink for Script {
        fn send(&mut self, r: &Report) -> Delivery {
            let d = self.0.pop_front().unwrap_or(Delivery::Delivered);
            if d == Delivery::Delivered {
                self.1.push(r.time);
            }
            d
        }
    }

    fn report(time: i64) -> Report {
        Report {
            v: VERSION,
            agent_version: "0".into(),
            time,
            desired: None,
            current: None,
            booted: None,
            default: None,
            boot_debt: None,
            pending_reboot: None,
            result: None,
            generations: Vec::new(),
        }
    }

    #[test]
    fn reports_wait_while_the_server_is_away_and_arrive_in_order() {
        let tmp = tempfile::tempdir().expect("tmp");
        let q = Queue::new(tmp.path());
        for t in [1, 2, 3] {
            q.push(&report(t)).expect("push");
        }
        let mut down = Script(VecDeque::from([Delivery::Later("connection refused".into())]), vec![]);
        assert_eq!(q.flush(&mut down).0, 0);
        assert_eq!(q.len(), 3, "nothing lost");
        let mut picky = Script(VecDeque::from([Delivery::Delivered, Delivery::Rejected("bad".into())]), vec![]);
        let (n, notes) = q.flush(&mut picky);
        assert_eq!((n, picky.1, notes), (2, vec![1, 3], vec!["bad".to_owned()]));
        assert!(q.is_empty());
    }

    #[test]
    fn the_queue_is_bounded_oldest_first() {
        let tmp = tempfile::tempdir().expect("tmp");
        let q = Queue::new(tmp.path());
        for t in 0..(MAX_QUEUED as i64 + 10) {
            q.push(&report(t)).expect("push");
        }
        assert_eq!(q.len(), MAX_QUEUED);
        let mut all = Script(VecDeque::new(), vec![]);
        q.flush(&mut all);
        assert_eq!(all.1.first(), Some(&10), "the oldest were dropped");
        assert_eq!(classify(503, String::new()), Delivery::Later("the server answered 503: ".into()));
    }
}
