//! Progress of `nix copy`, read from its `--log-format internal-json` log on stderr.
//!
//! # What Nix writes
//!
//! Every line Nix itself writes is `@nix ` and a JSON object (`src/libutil/logging.cc`):
//!
//! - `{"action":"start","id":N,"type":T,"level":L,"text":…,"fields":[…]}` — an activity
//!   begins. The types that matter here (`ActivityType` in `src/libutil/logging.hh`, the
//!   same numbers from 2.8 to today): `100` actCopyPath (one store path; `fields` are
//!   `[path, source store, destination store]`), `103` actCopyPaths (the whole copy; its
//!   `text` is `copying N paths`, N being the paths the destination lacks).
//! - `{"action":"stop","id":N}` — the activity ended.
//! - `{"action":"result","id":N,"type":R,"fields":[…]}` — `105` resProgress
//!   (`[done, expected, running, failed]`), `106` resSetExpected (`[activity type,
//!   expected]`).
//! - `{"action":"msg","level":L,"msg":…}` — a message, with ANSI colours.
//!
//! Lines that do not start with `@nix ` come from elsewhere: `ssh`, and the remote
//! `nix-store --serve`, whose errors (`disk I/O error`) arrive as plain text.
//!
//! # What Nix reports, and how bytes are counted
//!
//! **Nix 2.8**'s `copyPaths` streams the missing paths one after the other and wraps each
//! in an actCopyPath activity, but its progress reporting is compiled out (`#if 0` in
//! `src/libstore/store-api.cc`): a copy logs **no `result` line at all** (see the
//! captured logs in `tests/fixtures/nix-2.8/`). So a path is counted when its activity
//! stops — Nix has then sent the whole NAR — with its NAR size from the local store's
//! `nix path-info`: progress moves one path at a time, by that path's NAR size.
//!
//! **Newer Nix** (2.11 on) says more, but not numbers fleetgate can take as they come
//! (`tests/fixtures/nix-2.24/` holds logs of a real Nix 2.24.15, see its README; sources
//! cited from the 2.24.15 tag):
//!
//! - `resSetExpected` `[100, N]` on the actCopyPaths activity is a **running sum**, not
//!   the total: `Store::addMultipleToStore` (used for `ssh://` and `file://` stores)
//!   adds each path's `narSize` as it walks the graph and sends the sum after every
//!   path (`store-api.cc` lines 262–263, 2.11 to 2.26; the sum is sent once, whole, from
//!   2.27). The recorded 4-path copy announces 296, 992, 3001272, then 3001568 bytes —
//!   the last after the copy began. Paths are sent concurrently (a thread pool). fleetgate's own
//!   count — the NAR sizes of the paths the destination lacks — is exact from the start
//!   and is **never replaced**; Nix's sums are only a lower bound when fleetgate has no
//!   count (the largest one seen is used then).
//! - `resProgress` `[done, expected]` on an actCopyPath activity, sent for every chunk of
//!   a NAR (2.15 on, `copyPaths`' `progressSink`, lines 1128–1131). From 2.15 to 2.24.12
//!   and 2.26 `done` is one counter **shared by every path of the copy** (`std::atomic
//!   total` outside the loop) and `expected` reads `info->narSize` through a reference
//!   to a loop variable that no longer exists (a garbage number); 2.24.13 and 2.27 count
//!   per path. So `expected` is never used, and `done` is read as bytes within the path
//!   in one of two ways, decided from the log itself (a state machine, `Counter`):
//!   - `Undecided` (start): `done − offset`, where `offset` is what the copy had sent
//!     when the path started (the shared counter's value then): exact for a shared
//!     counter, an undercount for a per-path one — never more than was sent;
//!   - → `PerPath` once a report is at most `offset` (a shared counter is always past
//!     it), or a path ends with `done` equal to its own size while `offset` > 0: `done`.
//!
//!   Either way a path's bytes in flight are capped at its NAR size, and a path counts
//!   its exact NAR size when its activity stops; without a known size it counts nothing
//!   in flight (Nix's `expected` cannot be trusted for it).
//!
//! [`CopyProgress::done_bytes`] therefore ends, after a successful copy, at the sum of the
//! NAR sizes (`narSize` of `nix path-info`) of the paths the destination lacked — the
//! uncompressed NAR bytes Nix streamed, not what went over the wire after compression —
//! and never exceeds an exact [`CopyProgress::expected_bytes`].

use std::collections::{HashMap, VecDeque};

use serde_json::Value;

use crate::process::STDERR_TAIL_LINES;

/// `actCopyPath`: one store path being copied.
pub const ACT_COPY_PATH: u64 = 100;
/// `actCopyPaths`: a whole copy (`copying N paths`).
pub const ACT_COPY_PATHS: u64 = 103;
/// `resProgress`: `[done, expected, running, failed]`.
pub const RES_PROGRESS: u64 = 105;
/// `resSetExpected`: `[activity type, expected]`.
pub const RES_SET_EXPECTED: u64 = 106;

/// One field of a `start` or `result` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Field {
    /// A number.
    Int(u64),
    /// A string.
    Str(String),
}

impl Field {
    fn int(&self) -> Option<u64> {
        match self {
            Field::Int(n) => Some(*n),
            Field::Str(_) => None,
        }
    }

    fn str(&self) -> Option<&str> {
        match self {
            Field::Str(s) => Some(s),
            Field::Int(_) => None,
        }
    }
}

/// One line of a `--log-format internal-json` log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogLine {
    /// An activity started.
    Start {
        /// Its id.
        id: u64,
        /// Its type (`ActivityType`).
        activity: u64,
        /// Its verbosity level.
        level: u64,
        /// Its description (may be empty).
        text: String,
        /// Its fields.
        fields: Vec<Field>,
    },
    /// An activity stopped.
    Stop {
        /// Its id.
        id: u64,
    },
    /// A result of an activity.
    Result {
        /// The activity's id.
        id: u64,
        /// The result's type (`ResultType`).
        result: u64,
        /// Its fields.
        fields: Vec<Field>,
    },
    /// A message (ANSI escapes removed).
    Msg {
        /// Its verbosity level (0 is an error).
        level: u64,
        /// The text.
        text: String,
    },
    /// A line that is not Nix's JSON (ssh, the remote `nix-store`), ANSI escapes removed.
    Text(String),
    /// A JSON line of another kind (`setPhase`, …).
    Other,
}

/// Parses one line (without its `\n`).
#[must_use]
pub fn parse_line(line: &[u8]) -> LogLine {
    let text = String::from_utf8_lossy(line);
    let text = text.trim_end_matches('\r');
    let Some(json) = text.strip_prefix("@nix ") else {
        return LogLine::Text(strip_ansi(text));
    };
    let Ok(v) = serde_json::from_str::<Value>(json) else {
        return LogLine::Text(strip_ansi(text));
    };
    let num = |k: &str| v.get(k).and_then(Value::as_u64);
    let string = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or_default().to_owned();
    let fields = || {
        v.get("fields")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .map(|f| match f {
                        Value::Number(n) => Field::Int(n.as_u64().unwrap_or_default()),
                        Value::String(s) => Field::Str(s.clone()),
                        other => Field::Str(other.to_string()),
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    match (v.get("action").and_then(Value::as_str), num("id")) {
        (Some("start"), Some(id)) => LogLine::Start {
            id,
            activity: num("type").unwrap_or_default(),
            level: num("level").unwrap_or_default(),
            text: string("text"),
            fields: fields(),
        },
        (Some("stop"), Some(id)) => LogLine::Stop { id },
        (Some("result"), Some(id)) => LogLine::Result { id, result: num("type").unwrap_or_default(), fields: fields() },
        (Some("msg"), _) => LogLine::Msg { level: num("level").unwrap_or_default(), text: strip_ansi(&string("msg")) },
        _ => LogLine::Other,
    }
}

/// `text` without ANSI escape sequences (`ESC [ … final`).
#[must_use]
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                // Parameters and intermediates, then one final byte in @..~.
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// Where a copy is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CopyProgress {
    /// NAR bytes sent so far: the NAR size of every path Nix finished sending, plus what
    /// Nix reported of the path it is sending (never anything with Nix 2.8).
    pub done_bytes: u64,
    /// NAR bytes the copy will send, when known: exactly from the paths the caller said
    /// the destination lacks, or when Nix announces it copies all or none of the closure;
    /// otherwise the largest running sum newer Nix announced (a lower bound).
    pub expected_bytes: Option<u64>,
    /// Paths Nix finished sending.
    pub paths_done: u64,
    /// Paths Nix said it will send (`copying N paths`), once it said so.
    pub paths_expected: Option<u64>,
    /// The path being sent now.
    pub current: Option<String>,
}

enum Activity {
    CopyPaths,
    CopyPath {
        path: String,
        /// Its NAR size, from the caller's `nix path-info`.
        size: Option<u64>,
        /// Bytes of the copy finished when the path started.
        offset: u64,
        /// The last `done` Nix reported for it.
        reported: u64,
    },
}

/// How Nix's per-path `resProgress` counts (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Counter {
    /// Not known yet: read as a counter shared by the whole copy.
    Undecided,
    /// Each path counts its own bytes (Nix 2.24.13+, 2.27+).
    PerPath,
}

impl Counter {
    /// The bytes of one path in a `done` Nix reported for it.
    fn within(self, reported: u64, offset: u64) -> u64 {
        match self {
            Counter::PerPath => reported,
            Counter::Undecided => reported.saturating_sub(offset),
        }
    }
}

/// Follows a `nix copy --log-format internal-json` log, line by line.
pub struct CopyTracker {
    sizes: HashMap<String, u64>,
    closure_bytes: u64,
    expected_from_caller: Option<u64>,
    /// The largest running sum Nix announced (a lower bound of the total).
    expected_from_nix: Option<u64>,
    counter: Counter,
    activities: HashMap<u64, Activity>,
    finished_bytes: u64,
    progress: CopyProgress,
    messages: VecDeque<String>,
}

impl CopyTracker {
    /// A tracker for the copy of a closure whose paths have these NAR sizes
    /// (`nix path-info --recursive`), with the bytes to send if the caller knows them.
    #[must_use]
    pub fn new(sizes: impl IntoIterator<Item = (String, u64)>, expected_bytes: Option<u64>) -> CopyTracker {
        let sizes: HashMap<String, u64> = sizes.into_iter().collect();
        let closure_bytes = sizes.values().sum();
        CopyTracker {
            sizes,
            closure_bytes,
            expected_from_caller: expected_bytes,
            expected_from_nix: None,
            counter: Counter::Undecided,
            activities: HashMap::new(),
            finished_bytes: 0,
            progress: CopyProgress { expected_bytes, ..CopyProgress::default() },
            messages: VecDeque::new(),
        }
    }

    /// Takes one line of the log; says whether the progress changed.
    pub fn feed(&mut self, line: &[u8]) -> bool {
        let before = self.progress.clone();
        match parse_line(line) {
            LogLine::Start { id, activity: ACT_COPY_PATHS, text, .. } => {
                self.activities.insert(id, Activity::CopyPaths);
                if let Some(n) = copying_n_paths(&text) {
                    self.progress.paths_expected = Some(n);
                }
            }
            LogLine::Start { id, activity: ACT_COPY_PATH, fields, .. } => {
                if let Some(path) = fields.first().and_then(Field::str) {
                    let size = self.sizes.get(path).copied();
                    self.progress.current = Some(path.to_owned());
                    let offset = self.finished_bytes;
                    self.activities.insert(id, Activity::CopyPath { path: path.to_owned(), size, offset, reported: 0 });
                }
            }
            LogLine::Stop { id } => match self.activities.remove(&id) {
                Some(Activity::CopyPath { path, size, offset, reported }) => {
                    if offset > 0 && size == Some(reported) {
                        self.counter = Counter::PerPath;
                    }
                    self.finished_bytes += size.unwrap_or_else(|| self.counter.within(reported, offset));
                    self.progress.paths_done += 1;
                    if self.progress.current.as_deref() == Some(path.as_str()) {
                        self.progress.current = None;
                    }
                }
                Some(Activity::CopyPaths) | None => {}
            },
            LogLine::Result { id, result, fields } => {
                let int = |i: usize| fields.get(i).and_then(Field::int);
                match (self.activities.get_mut(&id), result) {
                    (Some(Activity::CopyPath { reported, offset, .. }), RES_PROGRESS) => {
                        if let Some(done) = int(0) {
                            *reported = done;
                            if *offset > 0 && done <= *offset {
                                self.counter = Counter::PerPath;
                            }
                        }
                    }
                    (Some(Activity::CopyPaths), RES_PROGRESS) => {
                        if let Some(n) = int(1) {
                            self.progress.paths_expected = Some(n);
                        }
                    }
                    (Some(Activity::CopyPaths), RES_SET_EXPECTED) if int(0) == Some(ACT_COPY_PATH) => {
                        self.expected_from_nix = self.expected_from_nix.max(int(1));
                    }
                    _ => {}
                }
            }
            LogLine::Msg { text, .. } | LogLine::Text(text) => self.message(text),
            LogLine::Start { .. } | LogLine::Other => {}
        }
        let in_flight: u64 = self.activities.values().map(|a| self.in_flight(a)).sum();
        let expected = self.expected();
        let done = self.finished_bytes + in_flight;
        self.progress.done_bytes = match self.exact_expected() {
            Some(total) => done.min(total),
            None => done,
        };
        self.progress.expected_bytes = expected;
        self.progress != before
    }

    /// Bytes of a path sent so far, at most its NAR size (module docs).
    fn in_flight(&self, activity: &Activity) -> u64 {
        let Activity::CopyPath { size, offset, reported, .. } = activity else { return 0 };
        let within = self.counter.within(*reported, *offset);
        size.map_or(within, |size| within.min(size))
    }

    /// The bytes to send, when known exactly: the caller's count, or the whole
    /// closure when Nix copies all of it, or nothing when it copies nothing.
    fn exact_expected(&self) -> Option<u64> {
        if let Some(n) = self.expected_from_caller {
            return Some(n);
        }
        match self.progress.paths_expected {
            Some(0) => Some(0),
            Some(n) if usize::try_from(n).is_ok_and(|n| n == self.sizes.len()) => Some(self.closure_bytes),
            _ => None,
        }
    }

    /// The exact count, else the largest running sum Nix announced.
    fn expected(&self) -> Option<u64> {
        self.exact_expected().or(self.expected_from_nix)
    }

    fn message(&mut self, text: String) {
        if text.trim().is_empty() {
            return;
        }
        for line in text.lines() {
            if self.messages.len() == STDERR_TAIL_LINES {
                self.messages.pop_front();
            }
            self.messages.push_back(line.to_owned());
        }
    }

    /// Where the copy is.
    #[must_use]
    pub fn progress(&self) -> &CopyProgress {
        &self.progress
    }

    /// The last messages (Nix's, ssh's, the remote's) as plain text, as Nix would have
    /// printed them without `--log-format`: for error messages.
    #[must_use]
    pub fn messages_tail(&self) -> String {
        self.messages.iter().map(String::as_str).collect::<Vec<_>>().join("\n")
    }
}

fn copying_n_paths(text: &str) -> Option<u64> {
    text.strip_prefix("copying ")?.strip_suffix(" paths")?.parse().ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::PathInfo;

    const SSH_LOG: &str = include_str!("../tests/fixtures/nix-2.8/copy-ssh.log");
    const SSH_INFO: &str = include_str!("../tests/fixtures/nix-2.8/copy-ssh.path-info.json");
    const FILE_LOG: &str = include_str!("../tests/fixtures/nix-2.8/copy-file.log");
    const FILE_INFO: &str = include_str!("../tests/fixtures/nix-2.8/copy-file.path-info.json");
    const FULL_LOG: &str = include_str!("../tests/fixtures/nix-2.8/copy-ssh-disk-full.log");

    fn sizes(info: &str) -> Vec<(String, u64)> {
        let (infos, missing) = PathInfo::parse_many(info).unwrap();
        assert!(missing.is_empty());
        infos.into_iter().map(|p| (p.path, p.nar_size)).collect()
    }

    fn size_of(info: &str, name_end: &str) -> u64 {
        sizes(info).into_iter().find(|(p, _)| p.ends_with(name_end)).unwrap().1
    }

    /// Feeds a log; returns every progress reported.
    fn replay(tracker: &mut CopyTracker, log: &str) -> Vec<CopyProgress> {
        let mut seen = Vec::new();
        for line in log.lines() {
            if tracker.feed(line.as_bytes()) {
                seen.push(tracker.progress().clone());
            }
        }
        seen
    }

    #[test]
    fn lines_of_a_real_nix_2_8_log_parse() {
        let lines: Vec<LogLine> = SSH_LOG.lines().map(|l| parse_line(l.as_bytes())).collect();
        assert_eq!(lines.len(), 16);
        assert!(
            matches!(&lines[8], LogLine::Start { activity: ACT_COPY_PATHS, level: 3, text, .. } if text == "copying 3 paths")
        );
        match &lines[9] {
            LogLine::Start { id, activity: ACT_COPY_PATH, fields, .. } => {
                assert_eq!(*id, 101_391_292_956_677);
                assert_eq!(fields[0], Field::Str("/nix/store/gh1w7al1y2nmz17pdfs918nln960ils9-etc".into()));
                assert_eq!(fields[2], Field::Str("ssh://root@web1".into()));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(lines[10], LogLine::Stop { id: 101_391_292_956_677 });
        // Nix 2.8 reports no progress results during a copy.
        assert!(!lines.iter().any(|l| matches!(l, LogLine::Result { .. })));
        assert_eq!(
            parse_line(b"Warning: Permanently added 'web1'"),
            LogLine::Text("Warning: Permanently added 'web1'".into())
        );
        assert_eq!(parse_line(b"@nix {not json"), LogLine::Text("@nix {not json".into()));
    }

    #[test]
    fn a_real_nix_2_8_ssh_copy_counts_each_path_when_sent() {
        // The lab's web1 lacked 3 of the 9 paths of the new system's closure.
        let sent: u64 = ["-etc", "-initrd-linux-6.1.0-56-amd64", "-nixos-system-web1-25.05"]
            .iter()
            .map(|n| size_of(SSH_INFO, n))
            .sum();
        let mut tracker = CopyTracker::new(sizes(SSH_INFO), None);
        let seen = replay(&mut tracker, SSH_LOG);
        let last = seen.last().unwrap();
        assert_eq!((last.done_bytes, last.paths_done, last.paths_expected), (sent, 3, Some(3)));
        assert_eq!(last.current, None);
        // 3 of 9 paths: which ones, Nix does not say up front; the bytes to expect are unknown.
        assert_eq!(last.expected_bytes, None);
        assert!(seen.windows(2).all(|w| w[0].done_bytes <= w[1].done_bytes));
        // The big initrd was announced, then counted whole when it was sent.
        let initrd = size_of(SSH_INFO, "-initrd-linux-6.1.0-56-amd64");
        let during = seen
            .iter()
            .find(|p| p.current.as_deref().is_some_and(|c| c.ends_with("-initrd-linux-6.1.0-56-amd64")))
            .unwrap();
        assert_eq!(during.done_bytes, size_of(SSH_INFO, "-etc"));
        assert!(seen.iter().any(|p| p.done_bytes == size_of(SSH_INFO, "-etc") + initrd));
        assert!(tracker.messages_tail().is_empty(), "{}", tracker.messages_tail());

        // Told what the destination lacks, the expected bytes are known from the start.
        let mut tracker = CopyTracker::new(sizes(SSH_INFO), Some(sent));
        let seen = replay(&mut tracker, SSH_LOG);
        assert!(seen.iter().all(|p| p.expected_bytes == Some(sent)));
        assert_eq!(seen.last().unwrap().done_bytes, sent);
    }

    #[test]
    fn a_real_nix_2_8_file_copy_of_a_whole_closure_expects_the_closure() {
        // Interleaved `querying info` activities (type 109) are ignored.
        let all: u64 = sizes(FILE_INFO).iter().map(|(_, s)| s).sum();
        let mut tracker = CopyTracker::new(sizes(FILE_INFO), None);
        let seen = replay(&mut tracker, FILE_LOG);
        let last = seen.last().unwrap();
        assert_eq!((last.done_bytes, last.expected_bytes, last.paths_done), (all, Some(all), 3));
        assert_eq!(seen[0].paths_expected, Some(3), "{seen:?}");
        assert_eq!(seen[0].expected_bytes, Some(all), "all 3 closure paths are copied");
    }

    #[test]
    fn a_real_nix_2_8_failure_keeps_plain_messages_for_the_error() {
        let mut tracker = CopyTracker::new(Vec::new(), None);
        replay(&mut tracker, FULL_LOG);
        assert_eq!(
            tracker.messages_tail(),
            "error: executing SQLite statement 'pragma synchronous = normal': disk I/O error (in '/nix/var/nix/db/db.sqlite')\n\
             error: cannot connect to 'root@web1'"
        );
        assert_eq!(tracker.progress().done_bytes, 0);
    }

    const SSH_LOG_224: &str = include_str!("../tests/fixtures/nix-2.24/copy-ssh.log");
    const FILE_LOG_224: &str = include_str!("../tests/fixtures/nix-2.24/copy-file.log");
    const INFO_224: &str = include_str!("../tests/fixtures/nix-2.24/copy.path-info.json");

    #[test]
    fn a_real_nix_2_24_log_announces_running_sums_then_the_total() {
        let total: u64 = sizes(INFO_224).iter().map(|(_, s)| s).sum();
        for log in [SSH_LOG_224, FILE_LOG_224] {
            let announced: Vec<u64> = log
                .lines()
                .filter_map(|l| match parse_line(l.as_bytes()) {
                    LogLine::Result { result: RES_SET_EXPECTED, fields, .. } => fields.get(1).and_then(Field::int),
                    _ => None,
                })
                .collect();
            assert_eq!(announced, [296, 992, 3_001_272, total], "296 + 696 + 3000280 + 296");
            // Paths are sent concurrently: a path starts while another is in flight.
            let lines: Vec<LogLine> = log.lines().map(|l| parse_line(l.as_bytes())).collect();
            let mut open = 0;
            let mut most = 0;
            for line in &lines {
                match line {
                    LogLine::Start { activity: ACT_COPY_PATH, .. } => open += 1,
                    LogLine::Stop { .. } if open > 0 => open -= 1,
                    _ => {}
                }
                most = most.max(open);
            }
            assert!(most >= 2, "two paths in flight at once");
        }
    }

    #[test]
    fn a_real_nix_2_24_copy_keeps_fleetgates_exact_total() {
        let total: u64 = sizes(INFO_224).iter().map(|(_, s)| s).sum();
        for log in [SSH_LOG_224, FILE_LOG_224] {
            // Told what the destination lacks (all 4 paths here): that total stays.
            let mut tracker = CopyTracker::new(sizes(INFO_224), Some(total));
            let seen = replay(&mut tracker, log);
            assert!(
                seen.iter().all(|p| p.expected_bytes == Some(total)),
                "{:?}",
                seen.iter().map(|p| p.expected_bytes).collect::<Vec<_>>()
            );
            assert!(seen.windows(2).all(|w| w[0].done_bytes <= w[1].done_bytes), "monotone");
            assert!(seen.iter().all(|p| p.done_bytes <= total));
            assert!(seen.iter().any(|p| p.done_bytes > 0 && p.done_bytes < 296), "bytes within a path count");
            let last = seen.last().unwrap();
            assert_eq!((last.done_bytes, last.paths_done, last.paths_expected), (total, 4, Some(4)));

            // Not told: `copying 4 paths` of a 4-path closure is the whole closure, exact too.
            let mut tracker = CopyTracker::new(sizes(INFO_224), None);
            let seen = replay(&mut tracker, log);
            let from_start = seen.iter().skip_while(|p| p.paths_expected.is_none());
            assert!(from_start.clone().all(|p| p.expected_bytes == Some(total)));
            assert_eq!(seen.last().unwrap().done_bytes, total);
        }
    }

    /// A log of newer Nix's `copyPaths` into `Store::addMultipleToStore`, line for line
    /// as 2.24's sources write it (module docs): `copying N paths`, a running
    /// `resSetExpected` sum after each path of the graph walk, then per path its
    /// actCopyPath with a `resProgress` per 64 KiB chunk — `done` counted per path, or by
    /// one counter shared by the whole copy (2.15 to 2.24.12) — and the copy's
    /// `[done, total, running, failed]`. `expected` of a path's progress is garbage before
    /// 2.24.13 (a dangling reference): 7 here.
    fn newer_nix_log(sizes: &[(&str, u64)], shared_counter: bool) -> String {
        let line = |json: String| format!("@nix {json}\n");
        let total_paths = sizes.len();
        let mut log = line(format!(
            r#"{{"action":"start","id":1,"level":3,"parent":0,"text":"copying {total_paths} paths","type":103}}"#
        ));
        let mut sum = 0;
        for (_, size) in sizes {
            sum += size;
            log += &line(format!(r#"{{"action":"result","fields":[100,{sum}],"id":1,"type":106}}"#));
        }
        let mut shared = 0;
        for (i, (path, size)) in sizes.iter().enumerate() {
            let id = 10 + i;
            log += &line(format!(r#"{{"action":"result","fields":[{i},{total_paths},1,0],"id":1,"type":105}}"#));
            log += &line(format!(
                r#"{{"action":"start","fields":["{path}","local","ssh://h"],"id":{id},"level":3,"parent":1,"text":"copying path '{path}' to 'ssh://h'","type":100}}"#
            ));
            let mut sent = 0;
            while sent < *size {
                let chunk = (size - sent).min(65_536);
                sent += chunk;
                shared += chunk;
                let done = if shared_counter { shared } else { sent };
                log += &line(format!(r#"{{"action":"result","fields":[{done},7],"id":{id},"type":105}}"#));
            }
            log += &line(format!(r#"{{"action":"stop","id":{id}}}"#));
        }
        log += &line(format!(r#"{{"action":"result","fields":[{total_paths},{total_paths},0,0],"id":1,"type":105}}"#));
        log + &line(r#"{"action":"stop","id":1}"#.to_owned())
    }

    /// The 4-path copy of issue 8: 456, 336 and 56 bytes, then a 3000112-byte path.
    const FOUR: [(&str, u64); 4] = [
        ("/nix/store/a-etc", 456),
        ("/nix/store/b-units", 336),
        ("/nix/store/c-sw", 56),
        ("/nix/store/d-initrd", 3_000_112),
    ];

    fn four_sizes() -> Vec<(String, u64)> {
        FOUR.iter().map(|(p, s)| ((*p).to_owned(), *s)).collect()
    }

    #[test]
    fn newer_nix_running_expected_sums_never_replace_fleetgates_exact_total() {
        for shared_counter in [true, false] {
            let mut sizes = four_sizes();
            // The host already has two more paths of the closure.
            sizes.extend([("/nix/store/e-glibc".to_owned(), 9_000), ("/nix/store/f-bash".to_owned(), 900)]);
            let mut tracker = CopyTracker::new(sizes, Some(3_000_960));
            let seen = replay(&mut tracker, &newer_nix_log(&FOUR, shared_counter));
            assert!(seen.iter().all(|p| p.expected_bytes == Some(3_000_960)), "{seen:?}");
            assert!(seen.windows(2).all(|w| w[0].done_bytes <= w[1].done_bytes), "monotone");
            assert!(seen.iter().all(|p| p.done_bytes <= 3_000_960));
            let last = seen.last().unwrap();
            assert_eq!((last.done_bytes, last.paths_done, last.paths_expected), (3_000_960, 4, Some(4)));
        }
    }

    #[test]
    fn newer_nix_bytes_within_a_path_read_right_with_either_counter() {
        for shared_counter in [true, false] {
            let mut tracker = CopyTracker::new(four_sizes(), Some(3_000_960));
            let seen = replay(&mut tracker, &newer_nix_log(&FOUR, shared_counter));
            // The big path's first chunk: the three small paths plus 64 KiB, whichever way
            // Nix counts (a shared counter is read exactly from the first path that starts
            // after others ended; a per-path one once a path ends at its own size).
            let first_chunk =
                seen.iter().find(|p| p.current.as_deref() == Some("/nix/store/d-initrd") && p.done_bytes > 848);
            assert_eq!(first_chunk.map(|p| p.done_bytes), Some(848 + 65_536), "shared counter: {shared_counter}");
        }
    }

    #[test]
    fn without_a_count_of_its_own_the_largest_running_sum_is_a_lower_bound() {
        let mut sizes = four_sizes();
        sizes.push(("/nix/store/e-glibc".to_owned(), 9_000));
        let mut tracker = CopyTracker::new(sizes, None);
        let seen = replay(&mut tracker, &newer_nix_log(&FOUR, true));
        let expected: Vec<Option<u64>> = seen.iter().map(|p| p.expected_bytes).collect();
        assert!(expected.windows(2).all(|w| w[0] <= w[1]), "never shrinks: {expected:?}");
        assert_eq!(seen.last().unwrap().expected_bytes, Some(3_000_960));
        assert_eq!(seen.last().unwrap().done_bytes, 3_000_960);
        // Out of order (threads of Nix's graph walk): the largest stays.
        let mut tracker = CopyTracker::new(four_sizes(), None);
        tracker.feed(br#"@nix {"action":"start","id":1,"level":3,"text":"copying 3 paths","type":103}"#);
        tracker.feed(br#"@nix {"action":"result","fields":[100,792],"id":1,"type":106}"#);
        tracker.feed(br#"@nix {"action":"result","fields":[100,456],"id":1,"type":106}"#);
        assert_eq!(tracker.progress().expected_bytes, Some(792));
    }

    #[test]
    fn a_path_of_unknown_size_counts_only_what_nix_sent_of_it() {
        // Not in the caller's sizes: Nix's garbage `expected` (7) is not taken as its size.
        let mut tracker = CopyTracker::new([("/nix/store/a-etc".to_owned(), 456)], None);
        let seen =
            replay(&mut tracker, &newer_nix_log(&[("/nix/store/a-etc", 456), ("/nix/store/z-new", 1_000)], true));
        assert_eq!(seen.last().unwrap().done_bytes, 1_456);
    }

    #[test]
    fn ansi_escapes_are_removed() {
        assert_eq!(
            strip_ansi("\u{1b}[31;1merror:\u{1b}[0m x '\u{1b}[35;1mroot@web1\u{1b}[0m'"),
            "error: x 'root@web1'"
        );
    }
}
