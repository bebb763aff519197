//! A bare mirror of the channel repository, driven with the real `git` binary.
//!
//! The mirror lives under the state directory, one per remote URL. Git runs with no
//! user or system configuration (`GIT_CONFIG_GLOBAL=/dev/null`, `GIT_CONFIG_NOSYSTEM`),
//! never prompts, may only use the `file`, `git`, `http(s)` and `ssh` transports (no
//! `ext::`), and gets the token — if any — as an `http.extraHeader` through
//! `GIT_CONFIG_*` environment variables: never in argv, never in the mirror's config,
//! never in an error message.
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use fleetgate_nix::ProcessError;
use fleetgate_nix::process::Run;
use sha2::Digest as _;

use crate::error::ChannelError;
use crate::lock::RepoLock;
use crate::secret::Secret;

/// How git is run.
#[derive(Clone, Debug)]
pub struct GitSettings {
    /// Timeout of each git invocation.
    pub timeout: Duration,
    /// HTTP token (GitHub: a fine-grained PAT or app token with contents:write).
    pub token: Option<Secret>,
    /// Committer name for note commits.
    pub name: String,
    /// Committer e-mail for note commits.
    pub email: String,
}

impl Default for GitSettings {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(300),
            token: None,
            name: "fleetgate".into(),
            email: "fleetgate@localhost".into(),
        }
    }
}

/// Checks a remote URL or path: no option injection, no command-running transports, no
/// credentials embedded (they would end up in logs and `.git/config`).
pub fn validate_remote(url: &str) -> Result<(), ChannelError> {
    let bad = |m: &str| Err(ChannelError::Config(format!("repository {url:?}: {m}")));
    if url.is_empty() {
        return bad("empty");
    }
    if url.starts_with('-') {
        return bad("must not start with '-'");
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return bad("contains whitespace or control characters");
    }
    if url.contains("::") {
        return bad("transport helpers (`helper::address`) are not allowed");
    }
    if let Some((scheme, rest)) = url.split_once("://") {
        if !matches!(scheme, "file" | "git" | "http" | "https" | "ssh") {
            return bad("scheme must be file, git, http, https or ssh");
        }
        let authority = rest.split('/').next().unwrap_or("");
        if let Some((userinfo, _)) = authority.rsplit_once('@')
            && (userinfo.contains(':') || matches!(scheme, "http" | "https"))
        {
            return bad("credentials in the URL are not allowed; use --token-file or --token-credential");
        }
    }
    Ok(())
}

/// True for what git treats as a local path rather than a URL or `host:path` (git's
/// `url_is_local_not_ssh`: no `:`, or a `/` before the first one).
fn is_local_path(url: &str) -> bool {
    !url.contains("://") && url.find(':').is_none_or(|colon| url.find('/').is_some_and(|slash| slash < colon))
}

/// The one spelling of a repository: local paths (plain or `file://`) resolved to their
/// canonical absolute path, so that `/srv/r.git`, `/srv/r.git/../r.git` and `r.git` from
/// `/srv` share one mirror and one lock; other URLs are kept as given. A local path that
/// does not exist is a configuration error.
pub fn canonical_remote(url: &str) -> Result<String, ChannelError> {
    validate_remote(url)?;
    let (prefix, path) = match url.strip_prefix("file://") {
        Some(path) => ("file://", path),
        None if is_local_path(url) => ("", url),
        None => return Ok(url.to_owned()),
    };
    let canonical =
        std::fs::canonicalize(path).map_err(|e| ChannelError::Config(format!("repository {url:?}: {path}: {e}")))?;
    let canonical =
        canonical.to_str().ok_or_else(|| ChannelError::Config(format!("repository {url:?}: its path is not UTF-8")))?;
    let canonical = format!("{prefix}{canonical}");
    validate_remote(&canonical)?;
    Ok(canonical)
}

/// A bare mirror of one remote.
#[derive(Clone, Debug)]
pub struct Mirror {
    dir: PathBuf,
    lock: PathBuf,
    url: String,
    settings: GitSettings,
}

/// One ref update of an atomic push, protected by a lease.
#[derive(Clone, Debug)]
pub struct RefUpdate {
    /// The remote ref (`refs/heads/…`, `refs/notes/…`).
    pub remote_ref: String,
    /// What the remote ref must currently be (`None`: must not exist).
    pub expect: Option<String>,
    /// The object to set it to.
    pub new: String,
}

impl Mirror {
    /// The mirror of `url` ([`canonical_remote`]) under `state_dir` (not created yet).
    pub fn new(state_dir: &Path, url: &str, settings: GitSettings) -> Result<Self, ChannelError> {
        let url = canonical_remote(url)?;
        let digest = sha2::Sha256::digest(url.as_bytes());
        let key = hex::encode(&digest[..12]);
        let base = state_dir.join("repos").join(key);
        Ok(Self { dir: base.join("repo.git"), lock: base.join("lock"), url, settings })
    }

    /// True once [`Mirror::ensure`] created it.
    pub fn exists(&self) -> bool {
        self.dir.join("HEAD").exists()
    }

    /// Removes the mirror and its lock file, and their directory. The caller holds the
    /// lock (given here so that it is released only once the file is gone; another
    /// process waiting for it then notices the file was replaced, see [`RepoLock`]).
    pub fn remove(&self, lock: RepoLock) -> Result<(), ChannelError> {
        if self.dir.exists() {
            std::fs::remove_dir_all(&self.dir).map_err(|e| ChannelError::io("removing mirror", &self.dir, e))?;
        }
        lock.remove()?;
        if let Some(base) = self.dir.parent() {
            // Not empty if something else lives there: then it stays.
            let _ = std::fs::remove_dir(base);
        }
        Ok(())
    }

    /// The lock file serialising work on this repository.
    pub fn lock_path(&self) -> &Path {
        &self.lock
    }

    /// The remote URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn git(&self) -> Run {
        let mut run = Run::new("git")
            .timeout(self.settings.timeout)
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_ASKPASS", "/bin/false")
            .env("SSH_ASKPASS", "/bin/false")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_ALLOW_PROTOCOL", "file:git:http:https:ssh")
            .env("GIT_AUTHOR_NAME", &self.settings.name)
            .env("GIT_AUTHOR_EMAIL", &self.settings.email)
            .env("GIT_COMMITTER_NAME", &self.settings.name)
            .env("GIT_COMMITTER_EMAIL", &self.settings.email)
            .env("LC_ALL", "C");
        for var in ["GIT_TRACE", "GIT_TRACE_CURL", "GIT_TRACE_PACKET", "GIT_CURL_VERBOSE", "GIT_DIR", "GIT_WORK_TREE"] {
            run = run.env_remove(var);
        }
        if let Some(token) = &self.settings.token {
            let basic = base64::engine::general_purpose::STANDARD.encode(format!("x-access-token:{}", token.expose()));
            run = run
                .env("GIT_CONFIG_COUNT", "1")
                .env("GIT_CONFIG_KEY_0", "http.extraHeader")
                .env("GIT_CONFIG_VALUE_0", format!("Authorization: Basic {basic}"));
        }
        run.arg("-C").arg(&self.dir)
    }

    fn run(&self, run: Run) -> Result<String, ChannelError> {
        run.run().map(|o| o.stdout_text()).map_err(ChannelError::Git)
    }

    /// Creates the bare mirror if needed and points `origin` at the URL.
    pub fn ensure(&self) -> Result<(), ChannelError> {
        if !self.dir.join("HEAD").exists() {
            std::fs::create_dir_all(&self.dir).map_err(|e| ChannelError::io("creating mirror", &self.dir, e))?;
            self.run(self.git().args(["init", "--bare", "--quiet"]))?;
            self.run(self.git().args(["remote", "add", "origin", "--"]).arg(&self.url))?;
        }
        Ok(())
    }

    /// Fetches all branches and all fleetgate notes refs into remote-tracking refs
    /// (wildcards that match nothing are not an error).
    pub fn fetch(&self) -> Result<(), ChannelError> {
        self.run(self.git().args([
            "fetch",
            "--quiet",
            "--prune",
            "--no-tags",
            "origin",
            "+refs/heads/*:refs/remotes/origin/*",
            "+refs/notes/fleetgate/*:refs/remotes/origin-notes/fleetgate/*",
        ]))
        .map(|_| ())
    }

    /// True if the commit object is present in the mirror.
    pub fn has_commit(&self, commit: &str) -> bool {
        self.git().args(["cat-file", "-e", &format!("{commit}^{{commit}}")]).run().is_ok()
    }

    /// Fetches one commit by id (servers that allow it: GitHub, `uploadpack.allowAnySHA1InWant`).
    pub fn fetch_commit(&self, commit: &str) -> Result<(), ChannelError> {
        self.run(self.git().args(["fetch", "--quiet", "--no-tags", "origin", commit])).map(|_| ())
    }

    /// The commit a ref points to, if it exists.
    pub fn rev(&self, refname: &str) -> Result<Option<String>, ChannelError> {
        let (status, out) = self
            .git()
            .args(["rev-parse", "--verify", "--quiet", &format!("{refname}^{{object}}")])
            .run_unchecked()
            .map_err(ChannelError::Git)?;
        Ok(status.success().then(|| out.stdout_text()))
    }

    /// True if `a` is an ancestor of (or equal to) `b`.
    pub fn is_ancestor(&self, a: &str, b: &str) -> Result<bool, ChannelError> {
        let (status, out) =
            self.git().args(["merge-base", "--is-ancestor", a, b]).run_unchecked().map_err(ChannelError::Git)?;
        match status.code() {
            Some(0) => Ok(true),
            Some(1) => Ok(false),
            _ => Err(ChannelError::Git(ProcessError::Failed {
                command: format!("git merge-base --is-ancestor {a} {b}"),
                status: status.to_string(),
                stderr_tail: fleetgate_nix::process::tail(&out.stderr),
            })),
        }
    }

    /// Creates a notes commit on top of `base` (or a new notes history) attaching
    /// `content` to `commit`; returns the new notes commit id.
    pub fn make_note(
        &self,
        work_ref: &str,
        base: Option<&str>,
        commit: &str,
        content: &[u8],
    ) -> Result<String, ChannelError> {
        match base {
            Some(b) => self.run(self.git().args(["update-ref", work_ref, b]))?,
            None => self.run(self.git().args(["update-ref", "-d", work_ref]))?,
        };
        self.run(
            self.git().args(["notes", "--ref", work_ref, "add", "--force", "--file=-", commit]).stdin(content.to_vec()),
        )?;
        self.rev(work_ref)?.ok_or_else(|| ChannelError::Internal(format!("git notes did not create {work_ref}")))
    }

    /// Pushes all updates atomically, each protected by its lease.
    ///
    /// The refspecs carry no `+`: git lets a forced refspec override
    /// `--force-with-lease`, so with one the lease would protect nothing. Without it,
    /// a ref whose remote value is the expected one is still force-updated (that is how
    /// rewinds and sideways moves go through), and any other value rejects the push.
    pub fn push_atomic(&self, updates: &[RefUpdate]) -> Result<(), PushFailure> {
        let mut run = self.git().args(["push", "--atomic", "--porcelain", "origin"]);
        for u in updates {
            run = run.arg(format!("--force-with-lease={}:{}", u.remote_ref, u.expect.as_deref().unwrap_or("")));
        }
        for u in updates {
            run = run.arg(format!("{}:{}", u.new, u.remote_ref));
        }
        let (status, out) = run.run_unchecked().map_err(PushFailure::NoAnswer)?;
        if status.success() {
            return Ok(());
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        // Rejected refs: `!<TAB><from>:<to><TAB><summary>`.
        let rejections: Vec<String> =
            stdout.lines().filter_map(|l| l.strip_prefix('!')).map(|l| l.trim().replace('\t', " ")).collect();
        let mut stderr_tail = fleetgate_nix::process::tail(&out.stderr);
        for r in &rejections {
            if !stderr_tail.is_empty() {
                stderr_tail.push('\n');
            }
            stderr_tail.push_str(r);
        }
        let error = ProcessError::Failed { command: run.command_line(), status: status.to_string(), stderr_tail };
        Err(classify_push(&rejections, error))
    }

    /// The note attached to `commit` in the notes history `notes_commit` (a notes
    /// commit, e.g. a remote-tracking notes ref), if there is one.
    pub fn note(&self, notes_commit: &str, commit: &str) -> Result<Option<Vec<u8>>, ChannelError> {
        // Notes trees may fan out (`ab/cdef…`): find the entry whose path, without
        // slashes, is the commit id.
        let listing = self.run(self.git().args(["ls-tree", "-r", "--full-tree", notes_commit]))?;
        let blob = listing.lines().find_map(|line| {
            let (meta, path) = line.split_once('\t')?;
            let oid = meta.split_whitespace().nth(2)?;
            (path.replace('/', "") == commit).then(|| oid.to_owned())
        });
        let Some(blob) = blob else {
            return Ok(None);
        };
        self.git().args(["cat-file", "blob", &blob]).run().map(|o| Some(o.stdout)).map_err(ChannelError::Git)
    }
}

/// Why a push did not go through.
#[derive(Debug)]
pub enum PushFailure {
    /// A lease or fast-forward rejection (`stale info`, `non-fast-forward`, `fetch first`,
    /// or the remote failing to lock a ref that moved meanwhile): the remote moved since
    /// the last fetch, so fetching again and retrying can succeed.
    Stale(ProcessError),
    /// The remote answered and refused the update (a hook, a protected branch,
    /// permissions on the ref): retrying gives the same answer.
    Declined(ProcessError),
    /// No per-ref answer at all: the remote was unreachable, refused the credentials or
    /// does not exist, or git timed out. Retrying would not help either.
    NoAnswer(ProcessError),
}

/// Sorts a failed push by the per-ref reasons `git push --porcelain` printed.
fn classify_push<S: AsRef<str>>(rejections: &[S], error: ProcessError) -> PushFailure {
    const STALE: [&str; 8] = [
        "(stale info)",
        "(non-fast-forward)",
        "(fetch first)",
        "cannot lock ref",
        "failed to lock",
        "failed to update ref",
        "incorrect old value",
        "but expected",
    ];
    let reasons: Vec<&str> =
        rejections.iter().map(AsRef::as_ref).filter(|r| !r.contains("(atomic push failed)")).collect();
    if rejections.is_empty() {
        PushFailure::NoAnswer(error)
    } else if !reasons.is_empty() && reasons.iter().all(|r| STALE.iter().any(|s| r.contains(s))) {
        PushFailure::Stale(error)
    } else {
        PushFailure::Declined(error)
    }
}

/// The remote-tracking ref for a remote notes ref.
pub fn tracking_notes(notes_ref: &str) -> String {
    notes_ref.replacen("refs/notes/", "refs/remotes/origin-notes/", 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed() -> ProcessError {
        ProcessError::Failed { command: "git push".into(), status: "exit status: 1".into(), stderr_tail: String::new() }
    }

    #[test]
    fn only_lease_and_fast_forward_rejections_are_worth_a_retry() {
        let stale = |r: &[&str]| matches!(classify_push(r, failed()), PushFailure::Stale(_));
        assert!(stale(&["[rejected] (stale info)"]));
        assert!(stale(&["[rejected] (atomic push failed)", "[rejected] (stale info)"]));
        assert!(stale(&["[rejected] (non-fast-forward)"]));
        assert!(stale(&["[remote rejected] (cannot lock ref 'refs/heads/x': is at 1 but expected 2)"]));
        assert!(matches!(
            classify_push(&["[remote rejected] (pre-receive hook declined)"], failed()),
            PushFailure::Declined(_)
        ));
        assert!(matches!(classify_push(&["[rejected] (atomic push failed)"], failed()), PushFailure::Declined(_)));
        assert!(matches!(classify_push::<&str>(&[], failed()), PushFailure::NoAnswer(_)));
    }

    #[test]
    fn local_paths_are_told_from_urls_as_git_does() {
        for local in ["/srv/r.git", "r.git", "./a:b", "../r.git", "dir/with:colon"] {
            assert!(is_local_path(local), "{local}");
        }
        for remote in ["git@github.com:o/r.git", "host:r.git", "https://h/r.git", "file:///srv/r.git"] {
            assert!(!is_local_path(remote), "{remote}");
        }
    }

    #[test]
    fn one_repository_has_one_spelling() {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("r.git");
        std::fs::create_dir(&repo).unwrap();
        let canonical = std::fs::canonicalize(&repo).unwrap().to_str().unwrap().to_owned();
        let dotted = format!("{}/../r.git/", repo.display());
        assert_eq!(canonical_remote(&dotted).unwrap(), canonical);
        assert_eq!(canonical_remote(&format!("file://{dotted}")).unwrap(), format!("file://{canonical}"));
        assert_eq!(canonical_remote("git@github.com:o/r.git").unwrap(), "git@github.com:o/r.git");
        let e = canonical_remote(&format!("{}/missing.git", dir.path().display())).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("No such file"), "{e}");
        let settings = GitSettings::default();
        let a = Mirror::new(dir.path(), &dotted, settings.clone()).unwrap();
        let b = Mirror::new(dir.path(), &canonical, settings).unwrap();
        assert_eq!((a.lock_path(), a.url()), (b.lock_path(), canonical.as_str()));
    }

    #[test]
    fn remote_urls_are_checked() {
        for ok in [
            "/srv/git/dotfiles.git",
            "https://github.com/o/r.git",
            "git://127.0.0.1:9418/r.git",
            "ssh://git@github.com/o/r.git",
            "git@github.com:o/r.git",
            "file:///srv/r.git",
        ] {
            validate_remote(ok).unwrap();
        }
        for bad in [
            "",
            "--upload-pack=touch /tmp/x",
            "ext::sh -c touch% /tmp/x",
            "fd::17",
            "https://user:tok@github.com/o/r.git",
            "https://tok@github.com/o/r.git",
            "ftp://x/r.git",
            "/srv/a b.git",
        ] {
            assert!(validate_remote(bad).is_err(), "{bad}");
        }
    }
}
