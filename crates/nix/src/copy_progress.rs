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
//! # What Nix 2.8 reports, and how bytes are counted
//!
//! Nix 2.8's `copyPaths` streams the missing paths one after the other and wraps each in
//! an actCopyPath activity, but its progress reporting is compiled out (`#if 0` in
//! `src/libstore/store-api.cc`): a copy logs **no `result` line at all** (see the
//! captured logs in `tests/fixtures/nix-2.8/`). So a path is counted when its activity
//! stops — Nix has then sent the whole NAR — with its NAR size from the local store's
//! `nix path-info`: progress moves one path at a time, by that path's NAR size. Newer
//! Nix reports bytes within a path (resProgress on actCopyPath) and the expected total
//! (resSetExpected on actCopyPaths); when those lines come they are used too.
//!
//! [`CopyProgress::done_bytes`] therefore ends, after a successful copy, at the sum of the
//! NAR sizes (`narSize` of `nix path-info`) of the paths the destination lacked — the
//! uncompressed NAR bytes Nix streamed, not what went over the wire after compression.

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
    /// NAR bytes the copy will send, when known: from Nix (newer versions say it), from
    /// the paths the caller said the destination lacks, or when Nix announces it copies
    /// all or none of the closure.
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
    CopyPath { path: String, sent: u64, size: Option<u64> },
}

/// Follows a `nix copy --log-format internal-json` log, line by line.
pub struct CopyTracker {
    sizes: HashMap<String, u64>,
    closure_bytes: u64,
    expected_from_caller: Option<u64>,
    expected_from_nix: Option<u64>,
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
                    self.activities.insert(id, Activity::CopyPath { path: path.to_owned(), sent: 0, size });
                }
            }
            LogLine::Stop { id } => match self.activities.remove(&id) {
                Some(Activity::CopyPath { path, sent, size }) => {
                    self.finished_bytes += size.unwrap_or(sent);
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
                    (Some(Activity::CopyPath { sent, size, .. }), RES_PROGRESS) => {
                        *sent = int(0).unwrap_or(*sent);
                        if size.is_none() {
                            *size = int(1);
                        }
                    }
                    (Some(Activity::CopyPaths), RES_PROGRESS) => {
                        if let Some(n) = int(1) {
                            self.progress.paths_expected = Some(n);
                        }
                    }
                    (Some(Activity::CopyPaths), RES_SET_EXPECTED) if int(0) == Some(ACT_COPY_PATH) => {
                        self.expected_from_nix = int(1);
                    }
                    _ => {}
                }
            }
            LogLine::Msg { text, .. } | LogLine::Text(text) => self.message(text),
            LogLine::Start { .. } | LogLine::Other => {}
        }
        let in_flight: u64 = self
            .activities
            .values()
            .map(|a| match a {
                Activity::CopyPath { sent, .. } => *sent,
                Activity::CopyPaths => 0,
            })
            .sum();
        self.progress.done_bytes = self.finished_bytes + in_flight;
        self.progress.expected_bytes = self.expected();
        self.progress != before
    }

    fn expected(&self) -> Option<u64> {
        if let Some(n) = self.expected_from_nix {
            return Some(n);
        }
        if let Some(n) = self.expected_from_caller {
            return Some(n);
        }
        match self.progress.paths_expected {
            Some(0) => Some(0),
            Some(n) if usize::try_from(n).is_ok_and(|n| n == self.sizes.len()) => Some(self.closure_bytes),
            _ => None,
        }
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

    #[test]
    fn newer_nix_byte_progress_is_used_when_it_comes() {
        // The shape of newer Nix (2.9+): setExpected on the copy, progress within a path.
        let log = [
            r#"@nix {"action":"start","id":1,"level":3,"text":"copying 2 paths","type":103}"#,
            r#"@nix {"action":"result","fields":[100,3000],"id":1,"type":106}"#,
            r#"@nix {"action":"start","fields":["/nix/store/a-x","local","ssh://h"],"id":2,"level":3,"text":"","type":100}"#,
            r#"@nix {"action":"result","fields":[512,1000],"id":2,"type":105}"#,
            r#"@nix {"action":"stop","id":2}"#,
            r#"@nix {"action":"start","fields":["/nix/store/b-y","local","ssh://h"],"id":3,"level":3,"text":"","type":100}"#,
            r#"@nix {"action":"result","fields":[1500,2000],"id":3,"type":105}"#,
            r#"@nix {"action":"result","fields":[1,2,1,0],"id":1,"type":105}"#,
            r#"@nix {"action":"stop","id":3}"#,
        ]
        .join("\n");
        let mut tracker = CopyTracker::new([("/nix/store/a-x".to_owned(), 1000)], None);
        let seen = replay(&mut tracker, &log);
        let done: Vec<u64> = seen.iter().map(|p| p.done_bytes).collect();
        assert_eq!(done, [0, 0, 0, 512, 1000, 1000, 2500, 3000], "b-y: its size from Nix");
        assert_eq!(seen.last().unwrap().expected_bytes, Some(3000));
    }

    #[test]
    fn ansi_escapes_are_removed() {
        assert_eq!(
            strip_ansi("\u{1b}[31;1merror:\u{1b}[0m x '\u{1b}[35;1mroot@web1\u{1b}[0m'"),
            "error: x 'root@web1'"
        );
    }
}
