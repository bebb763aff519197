//! What the agent remembers across polls and reboots, in its own directory
//! under the state directory (`/var/lib/fleetgate/agent/`, persistent: it
//! must survive the reboots it causes). An API boundary: `fleetgate agent
//! status` and humans read it; `format` changes when a field changes meaning.
//!
//! | file | what | written |
//! |---|---|---|
//! | `state.json` | the newest accepted manifest (never backwards), the fetch validators, bad store paths, the attempt in flight, the last result, a pending reboot | atomically (temp file, fsync, rename, fsync of the directory) after every change |
//! | `suspended` | present while upgrades are held (`fleetgate agent suspend`) | atomically |
//! | `lock` | `flock`ed by the running agent: one agent per host; holds its pid | by the agent holding it |
//! | `reports/` | reports not delivered yet ([`crate::queue`]) | one file each, atomically |
//!
//! A `state.json` that does not parse is moved aside (`state.json.corrupt`)
//! and the agent starts afresh, saying so in its next report.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::accept::Seen;
use crate::report::ResultRecord;

/// The version of `state.json`.
pub const FORMAT: u32 = 1;
/// The largest `state.json` read.
pub const MAX_STATE: u64 = 4 << 20;
/// Bad store paths remembered (the oldest are forgotten first).
pub const MAX_BAD: usize = 64;

/// Why the agent's files cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// An I/O error on a file of the state directory.
    #[error("{what} {}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Another agent holds the lock.
    #[error("another fleetgate agent runs on this host (it holds {})", path.display())]
    Busy {
        /// The lock file.
        path: PathBuf,
    },
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> StateError + 'a {
    move |source| StateError::Io { what, path: path.to_owned(), source }
}

/// A store path that failed on this host: never tried again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BadPath {
    /// The system.
    pub system: String,
    /// Its commit, if known.
    pub commit: Option<String>,
    /// Why.
    pub reason: String,
    /// When (Unix seconds).
    pub at: u64,
}

/// How the attempt in flight applies its system (enough to finish or undo
/// it after the agent was killed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum AttemptKind {
    /// A live switch with magic rollback.
    Switch {
        /// The system it switches from.
        old: String,
        /// Its generation.
        old_generation: Option<u64>,
        /// The boot id then.
        boot_id: String,
        /// The watchdog's confirmation window (seconds).
        window_secs: u64,
        /// Activation's limit (seconds).
        activation_secs: u64,
    },
    /// A verified reboot (prepared: the intent is on the host).
    Reboot {
        /// Where a failure goes back to.
        fallback: String,
        /// The boot id before the reboot.
        boot_id_before: String,
    },
}

/// An attempt in flight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// The engine's run id (names the watchdog, the lock owner, the intent).
    pub run_id: String,
    /// The system being applied.
    pub system: String,
    /// Its commit.
    pub commit: String,
    /// When it started.
    pub started_at: u64,
    /// How.
    #[serde(flatten)]
    pub kind: AttemptKind,
}

/// A reboot the desired system needs and that has not happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingReboot {
    /// The system.
    pub system: String,
    /// Why it waits (outside the window, reboots not allowed).
    pub why: String,
    /// What needs the reboot (the check's findings' words: kernel, initrd, inhibitor…).
    pub reasons: Vec<String>,
    /// Since when.
    pub since: u64,
    /// The boot id and running system it was decided under: while they
    /// hold, the decision holds (no new facts and check each poll).
    #[serde(default)]
    pub under: Option<(String, String)>,
}

/// Conditional-fetch validators of the last document.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Validators {
    /// `ETag`.
    pub etag: Option<String>,
    /// `Last-Modified`.
    pub last_modified: Option<String>,
    /// SHA-256 of the last document fetched (sources without validators).
    pub document: Option<String>,
}

/// The last fetches.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchRecord {
    /// When a fetch last got an answer.
    pub last_ok: Option<u64>,
    /// The last error, while fetches fail.
    pub error: Option<String>,
    /// Failed fetches in a row.
    pub failures: u32,
}

/// Everything the agent remembers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentState {
    /// [`FORMAT`].
    pub format: u32,
    /// The newest manifest accepted: what the host should run.
    pub desired: Option<Seen>,
    /// Validators of the last fetch.
    #[serde(default)]
    pub validators: Validators,
    /// The desired system's closure was verified in a cache (its path).
    pub verified: Option<String>,
    /// Store paths that failed here.
    #[serde(default)]
    pub bad: Vec<BadPath>,
    /// Attempts of a system interrupted by the agent's own death.
    #[serde(default)]
    pub interrupted: BTreeMap<String, u32>,
    /// The attempt in flight.
    pub attempt: Option<Attempt>,
    /// How the last attempt (or manifest) ended.
    pub last_result: Option<ResultRecord>,
    /// A reboot that waits.
    pub pending_reboot: Option<PendingReboot>,
    /// The fetches.
    #[serde(default)]
    pub fetch: FetchRecord,
    /// When the last report was queued, and a digest of what it said.
    pub last_report: Option<(u64, String)>,
    /// Set when the state was reset (a corrupt file moved aside).
    #[serde(default)]
    pub reset: Option<String>,
    /// Why reports last could not be delivered (logged once, while it lasts).
    #[serde(default)]
    pub delivery: Option<String>,
}

impl Default for AgentState {
    fn default() -> AgentState {
        AgentState {
            format: FORMAT,
            desired: None,
            validators: Validators::default(),
            verified: None,
            bad: Vec::new(),
            interrupted: BTreeMap::new(),
            attempt: None,
            last_result: None,
            pending_reboot: None,
            fetch: FetchRecord::default(),
            last_report: None,
            reset: None,
            delivery: None,
        }
    }
}

impl AgentState {
    /// Whether `system` failed here before.
    #[must_use]
    pub fn bad(&self, system: &str) -> Option<&BadPath> {
        self.bad.iter().find(|b| b.system == system)
    }

    /// Remembers `system` as bad (at most [`MAX_BAD`] kept).
    pub fn mark_bad(&mut self, system: &str, commit: Option<&str>, reason: &str, at: u64) {
        self.bad.retain(|b| b.system != system);
        self.bad.push(BadPath {
            system: system.to_owned(),
            commit: commit.map(str::to_owned),
            reason: reason.to_owned(),
            at,
        });
        let excess = self.bad.len().saturating_sub(MAX_BAD);
        self.bad.drain(..excess);
    }
}

/// The agent's directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    dir: PathBuf,
}

/// Writes `bytes` to `path` atomically: a temporary file in the same
/// directory, fsync, rename, fsync of the directory.
///
/// # Errors
/// [`StateError::Io`].
pub fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> Result<(), StateError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(io("creating", dir))?;
    let tmp = dir.join(format!(
        ".{}.tmp.{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file"),
        std::process::id()
    ));
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io("creating", &tmp))?;
    f.write_all(bytes).map_err(io("writing", &tmp))?;
    f.sync_all().map_err(io("syncing", &tmp))?;
    drop(f);
    fs::rename(&tmp, path).map_err(io("renaming into place", path))?;
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

impl StateDir {
    /// The directory (created when needed, mode 0700).
    ///
    /// # Errors
    /// [`StateError::Io`].
    pub fn open(dir: PathBuf) -> Result<StateDir, StateError> {
        fs::create_dir_all(&dir).map_err(io("creating", &dir))?;
        let _ = fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700));
        Ok(StateDir { dir })
    }

    /// The directory.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.dir
    }

    fn state_file(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    /// Reads `state.json` (empty state when absent; a corrupt one is moved aside).
    ///
    /// # Errors
    /// [`StateError::Io`] when it cannot be read or moved aside.
    pub fn load(&self) -> Result<AgentState, StateError> {
        let path = self.state_file();
        let bytes = match fleetgate_nix::read_small_file(&path, MAX_STATE) {
            Ok(b) => b,
            Err(fleetgate_nix::SmallFileError::Open { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                return Ok(AgentState::default());
            }
            Err(e) => {
                return Err(StateError::Io { what: "reading", path, source: std::io::Error::other(e.to_string()) });
            }
        };
        match serde_json::from_slice::<AgentState>(&bytes) {
            Ok(s) if s.format == FORMAT => Ok(s),
            parsed => {
                let why = match parsed {
                    Ok(s) => format!("format {} (this agent reads {FORMAT})", s.format),
                    Err(e) => e.to_string(),
                };
                let aside = self.dir.join("state.json.corrupt");
                fs::rename(&path, &aside).map_err(io("moving aside", &path))?;
                Ok(AgentState {
                    reset: Some(format!(
                        "{} could not be read ({why}); it was moved to {} and the agent started afresh",
                        path.display(),
                        aside.display()
                    )),
                    ..AgentState::default()
                })
            }
        }
    }

    /// Reads `state.json` without changing anything (a corrupt file is an error here).
    ///
    /// # Errors
    /// [`StateError::Io`].
    pub fn peek(&self) -> Result<AgentState, StateError> {
        let path = self.state_file();
        match fleetgate_nix::read_small_file(&path, MAX_STATE) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| StateError::Io {
                what: "parsing",
                path,
                source: std::io::Error::other(e),
            }),
            Err(fleetgate_nix::SmallFileError::Open { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                Ok(AgentState::default())
            }
            Err(e) => Err(StateError::Io { what: "reading", path, source: std::io::Error::other(e.to_string()) }),
        }
    }

    /// Writes `state.json` atomically.
    ///
    /// # Errors
    /// [`StateError::Io`].
    pub fn save(&self, state: &AgentState) -> Result<(), StateError> {
        let mut bytes = serde_json::to_vec_pretty(state).unwrap_or_default();
        bytes.push(b'\n');
        write_atomically(&self.state_file(), &bytes, 0o600)
    }

    /// Whether upgrades are held, and why.
    #[must_use]
    pub fn suspended(&self) -> Option<String> {
        fleetgate_nix::read_small_file(&self.dir.join("suspended"), 64 << 10)
            .ok()
            .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
    }

    /// Holds upgrades (`why` is kept in the file).
    ///
    /// # Errors
    /// [`StateError::Io`].
    pub fn suspend(&self, why: &str) -> Result<(), StateError> {
        write_atomically(&self.dir.join("suspended"), format!("{why}\n").as_bytes(), 0o644)
    }

    /// Releases the hold.
    ///
    /// # Errors
    /// [`StateError::Io`].
    pub fn resume(&self) -> Result<(), StateError> {
        let path = self.dir.join("suspended");
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StateError::Io { what: "removing", path, source: e }),
        }
    }

    /// Takes the one-agent-per-host lock (held until the returned file is dropped).
    ///
    /// # Errors
    /// [`StateError::Busy`] when another agent holds it.
    pub fn lock(&self) -> Result<File, StateError> {
        let path = self.dir.join("lock");
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(io("opening", &path))?;
        match rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {
                // Who holds it, for humans (and `kill`): the pid, written under the lock.
                let _ = f.set_len(0);
                let _ = (&f).write_all(format!("{}\n", std::process::id()).as_bytes());
                Ok(f)
            }
            Err(rustix::io::Errno::WOULDBLOCK) => Err(StateError::Busy { path }),
            Err(e) => Err(StateError::Io { what: "locking", path, source: e.into() }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_atomically_and_a_corrupt_file_is_kept_aside() {
        let tmp = tempfile::tempdir().expect("tmp");
        let d = StateDir::open(tmp.path().join("agent")).expect("dir");
        assert_eq!(d.load().expect("empty"), AgentState::default());
        let mut s = AgentState::default();
        s.mark_bad("/nix/store/x", Some("c"), "rolled back", 7);
        d.save(&s).expect("save");
        assert_eq!(d.load().expect("load"), s);
        assert_eq!(fs::read_dir(d.path()).expect("ls").count(), 1, "no temporary file left");
        fs::write(d.path().join("state.json"), "{ not json").expect("write");
        let fresh = d.load().expect("reset");
        assert!(fresh.reset.as_deref().is_some_and(|r| r.contains("moved")), "{fresh:?}");
        assert_eq!(fs::read_to_string(d.path().join("state.json.corrupt")).expect("kept"), "{ not json");
    }

    #[test]
    fn bad_paths_are_bounded_and_one_agent_holds_the_lock() {
        let mut s = AgentState::default();
        for i in 0..100 {
            s.mark_bad(&format!("/nix/store/{i}"), None, "x", i);
        }
        assert_eq!(s.bad.len(), MAX_BAD);
        assert!(s.bad("/nix/store/99").is_some() && s.bad("/nix/store/0").is_none());
        let tmp = tempfile::tempdir().expect("tmp");
        let d = StateDir::open(tmp.path().to_owned()).expect("dir");
        let held = d.lock().expect("first");
        assert!(matches!(d.lock(), Err(StateError::Busy { .. })));
        drop(held);
        assert!(d.lock().is_ok());
        assert_eq!(d.suspended(), None);
        d.suspend("maintenance").expect("suspend");
        assert_eq!(d.suspended().as_deref(), Some("maintenance"));
        d.resume().expect("resume");
        assert_eq!(d.suspended(), None);
    }
}
