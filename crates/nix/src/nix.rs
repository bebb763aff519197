//! [`Nix`]: the installed Nix, and typed wrappers over the commands fleetgate needs.
use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::copy_progress::{CopyProgress, CopyTracker};
use crate::error::{NixError, ProcessError};
use crate::path_info::PathInfo;
use crate::process::Run;
use crate::store_uri::StoreUri;
use crate::version::NixVersion;

/// A handle on the installed Nix: where it is, its version, and the per-invocation
/// settings (`--option`s, environment, timeout) every command gets.
#[derive(Clone, Debug)]
pub struct Nix {
    bin_dir: Option<PathBuf>,
    version: NixVersion,
    timeout: Duration,
    options: Vec<(String, String)>,
    env: Vec<(OsString, OsString)>,
}

/// How `nix copy` behaves.
#[derive(Clone, Debug, Default)]
pub struct CopyOptions {
    /// Sign what is written to a binary-cache store with this secret key file
    /// (passed as the store's `secret-key` parameter; Nix reads the file).
    pub secret_key_file: Option<PathBuf>,
    /// Do not require the copied paths to carry trusted signatures (`--no-check-sigs`).
    pub no_check_sigs: bool,
    /// Let the destination substitute paths itself (`--substitute-on-destination`).
    pub substitute_on_destination: bool,
}

/// One entry of `nix build --json`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct BuildResult {
    /// The derivation built.
    pub drv_path: String,
    /// Output name → store path.
    pub outputs: std::collections::BTreeMap<String, String>,
}

impl Nix {
    /// Finds `nix` on `PATH` and checks its version (2.8 or newer).
    pub fn detect() -> Result<Self, NixError> {
        Self::detect_in(None)
    }

    /// Like [`Nix::detect`], with the Nix binaries taken from `bin_dir`.
    pub fn detect_in(bin_dir: Option<PathBuf>) -> Result<Self, NixError> {
        let mut nix = Self {
            bin_dir,
            version: NixVersion::MINIMUM,
            timeout: Duration::from_secs(3600),
            options: Vec::new(),
            env: Vec::new(),
        };
        let run = Run::new(nix.program("nix")).arg("--version").timeout(Duration::from_secs(30));
        let out = run.run()?;
        let text = out.stdout_text();
        let version = NixVersion::parse(&text).ok_or_else(|| NixError::Parse {
            command: run.command_line(),
            message: format!("no version in {text:?}"),
        })?;
        if version < NixVersion::MINIMUM {
            return Err(NixError::UnsupportedVersion { found: version.to_string() });
        }
        nix.version = version;
        Ok(nix)
    }

    /// The detected version.
    pub fn version(&self) -> NixVersion {
        self.version
    }

    /// Adds `--option name value` to every invocation (never edits `nix.conf`).
    pub fn with_option(mut self, name: &str, value: &str) -> Self {
        self.options.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Sets an environment variable for every invocation (`HOME`, `XDG_CACHE_HOME`,
    /// `AWS_PROFILE`, …); never shown in error messages.
    pub fn with_env(mut self, k: impl Into<OsString>, v: impl Into<OsString>) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }

    /// Sets the timeout of every invocation (default one hour).
    pub fn with_timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    /// No substituters at all: nothing is fetched from the network implicitly.
    pub fn offline(self) -> Self {
        self.with_option("substituters", "").with_option("narinfo-cache-negative-ttl", "0")
    }

    fn program(&self, name: &str) -> PathBuf {
        match &self.bin_dir {
            Some(d) => d.join(name),
            None => PathBuf::from(name),
        }
    }

    fn base(&self, name: &str) -> Run {
        let mut run = Run::new(self.program(name)).timeout(self.timeout);
        for (k, v) in &self.env {
            run = run.env(k, v);
        }
        run
    }

    /// A `nix` invocation: experimental features and `--option`s already added.
    pub fn command(&self) -> Run {
        let mut run = self.base("nix");
        if self.version.needs_experimental_flags() {
            run = run.args(["--extra-experimental-features", "nix-command flakes"]);
        }
        for (k, v) in &self.options {
            run = run.args(["--option", k, v]);
        }
        run
    }

    /// A legacy `nix-store` / `nix-build` … invocation with the `--option`s added.
    pub fn legacy(&self, tool: &str) -> Run {
        let mut run = self.base(tool);
        for (k, v) in &self.options {
            run = run.args(["--option", k, v]);
        }
        run
    }

    fn parse_err(run: &Run, message: impl Into<String>) -> NixError {
        NixError::Parse { command: run.command_line(), message: message.into() }
    }

    /// `nix path-info --json [-r] [-S] [--store S] PATHS…`: returns the infos of the
    /// valid paths and the list of paths that are not valid in that store.
    pub fn path_info(
        &self,
        store: Option<&StoreUri>,
        paths: &[String],
        recursive: bool,
        closure_size: bool,
    ) -> Result<(Vec<PathInfo>, Vec<String>), NixError> {
        let mut run = self.command().args(["path-info", "--json"]);
        if recursive {
            run = run.arg("--recursive");
        }
        if closure_size {
            run = run.arg("--closure-size");
        }
        if let Some(s) = store {
            run = run.args(["--store", &s.to_string()]);
        }
        run = run.arg("--").args(paths);
        let out = run.run()?;
        PathInfo::parse_many(&String::from_utf8_lossy(&out.stdout)).map_err(|m| Self::parse_err(&run, m))
    }

    /// Copies `paths` (with their closures) to `store`, signing on the way if asked.
    pub fn copy_to(&self, store: &StoreUri, paths: &[String], opts: &CopyOptions) -> Result<(), NixError> {
        self.copy_to_command(store, opts).arg("--").args(paths).run()?;
        Ok(())
    }

    /// `nix copy --to STORE` and its options, without the paths.
    fn copy_to_command(&self, store: &StoreUri, opts: &CopyOptions) -> Run {
        let mut to = store.clone();
        if let Some(key) = &opts.secret_key_file {
            to = to.with_param("secret-key", &key.to_string_lossy());
        }
        let mut run = self.command().args(["copy", "--to", &to.to_string()]);
        if opts.no_check_sigs {
            run = run.arg("--no-check-sigs");
        }
        if opts.substitute_on_destination {
            run = run.arg("--substitute-on-destination");
        }
        run
    }

    /// Like [`Nix::copy_to`], reporting progress as Nix goes: `on_progress` is called on
    /// this thread each time the [`CopyProgress`] changes (with Nix 2.8, when a copy
    /// starts and each time a path has been sent; see [`crate::copy_progress`]). Returns
    /// the progress at the end: `done_bytes` is then the NAR size of everything sent.
    ///
    /// The NAR sizes come from a `nix path-info --recursive` of `paths` in the local store
    /// first. Nix 2.8 does not say which paths the destination lacks, so `lacking` is asked
    /// with the closure's paths before the copy starts: the caller may know (fleetgate asks
    /// a target in one round trip over its own SSH connection). What it returns (`None`:
    /// unknown) gives the bytes to expect from the start.
    ///
    /// The timeout is the same as every command's: it bounds the whole copy. Errors carry
    /// the messages of Nix, ssh and the remote as plain text, as [`Nix::copy_to`]'s do.
    pub fn copy_to_with_progress(
        &self,
        store: &StoreUri,
        paths: &[String],
        opts: &CopyOptions,
        lacking: &mut dyn FnMut(&[String]) -> Option<BTreeSet<String>>,
        on_progress: &mut dyn FnMut(&CopyProgress),
    ) -> Result<CopyProgress, NixError> {
        let (closure, _) = self.path_info(None, paths, true, false)?;
        self.copy_closure_with_progress(store, paths, closure, opts, lacking, on_progress)
    }

    /// [`Nix::copy_to_with_progress`] with the closure of `paths` already
    /// known (from [`crate::Closures`]): no `nix path-info` of its own.
    ///
    /// # Errors
    /// As [`Nix::copy_to_with_progress`].
    pub fn copy_closure_with_progress(
        &self,
        store: &StoreUri,
        paths: &[String],
        closure: Vec<crate::PathInfo>,
        opts: &CopyOptions,
        lacking: &mut dyn FnMut(&[String]) -> Option<BTreeSet<String>>,
        on_progress: &mut dyn FnMut(&CopyProgress),
    ) -> Result<CopyProgress, NixError> {
        let all: Vec<String> = closure.iter().map(|p| p.path.clone()).collect();
        let expected = lacking(&all).map(|m| closure.iter().filter(|p| m.contains(&p.path)).map(|p| p.nar_size).sum());
        let mut tracker = CopyTracker::new(closure.into_iter().map(|p| (p.path, p.nar_size)), expected);
        on_progress(tracker.progress());
        let run = self.copy_to_command(store, opts).args(["--log-format", "internal-json"]).arg("--").args(paths);
        let result = run.run_streaming_unchecked(&mut |line| {
            if tracker.feed(line) {
                on_progress(tracker.progress());
            }
        });
        let plain = tracker.messages_tail();
        match result {
            Ok((status, _)) if status.success() => Ok(tracker.progress().clone()),
            Ok((status, _)) => Err(ProcessError::Failed {
                command: run.command_line(),
                status: status.to_string(),
                stderr_tail: plain,
            }
            .into()),
            Err(ProcessError::Timeout { command, after, .. }) => {
                Err(ProcessError::Timeout { command, after, stderr_tail: plain }.into())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Copies `paths` from `store` into the local store.
    pub fn copy_from(&self, store: &StoreUri, paths: &[String], opts: &CopyOptions) -> Result<(), NixError> {
        let mut run = self.command().args(["copy", "--from", &store.to_string()]);
        if opts.no_check_sigs {
            run = run.arg("--no-check-sigs");
        }
        run.arg("--").args(paths).run()?;
        Ok(())
    }

    /// `nix store sign --key-file K [-r] [--store S] PATHS…`.
    pub fn sign(
        &self,
        store: Option<&StoreUri>,
        paths: &[String],
        key_file: &Path,
        recursive: bool,
    ) -> Result<(), NixError> {
        let mut run = self.command().args(["store", "sign", "--key-file"]);
        run = run.arg(key_file);
        if recursive {
            run = run.arg("--recursive");
        }
        if let Some(s) = store {
            run = run.args(["--store", &s.to_string()]);
        }
        run.arg("--").args(paths).run()?;
        Ok(())
    }

    /// `nix build --json --no-link INSTALLABLES…` (Nix 2.8 has no `--print-out-paths`).
    pub fn build(&self, installables: &[String]) -> Result<Vec<BuildResult>, NixError> {
        let run = self.command().args(["build", "--json", "--no-link", "--"]).args(installables);
        let out = run.run()?;
        serde_json::from_slice(&out.stdout).map_err(|e| Self::parse_err(&run, e.to_string()))
    }

    /// `nix-store --realise DRVS…`: builds (or substitutes) the outputs of
    /// store derivations already evaluated, with no second evaluation of
    /// the flake (the same in every Nix 2.x; `nix build DRV` changed meaning
    /// in 2.15). Returns the output paths it printed.
    pub fn realise(&self, drvs: &[String]) -> Result<Vec<String>, NixError> {
        let out = self.legacy("nix-store").arg("--realise").args(drvs).run()?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect())
    }

    /// `nix eval --json INSTALLABLE [--apply F]`.
    pub fn eval_json(&self, installable: &str, apply: Option<&str>) -> Result<serde_json::Value, NixError> {
        let mut run = self.command().args(["eval", "--json"]);
        if let Some(f) = apply {
            run = run.args(["--apply", f]);
        }
        let run = run.arg("--").arg(installable);
        let out = run.run()?;
        serde_json::from_slice(&out.stdout).map_err(|e| Self::parse_err(&run, e.to_string()))
    }

    /// `nix-store --generate-binary-cache-key NAME SK PK` (exists in every 2.x).
    pub fn generate_key_pair(
        &self,
        name: &str,
        secret_key_file: &Path,
        public_key_file: &Path,
    ) -> Result<(), NixError> {
        crate::keys::check_key_name(name)?;
        self.legacy("nix-store")
            .arg("--generate-binary-cache-key")
            .arg(name)
            .arg(secret_key_file)
            .arg(public_key_file)
            .run()?;
        Ok(())
    }

    /// `nix-store --add PATH`: adds a file tree to the store, returns its store path.
    pub fn store_add(&self, path: &Path) -> Result<String, NixError> {
        let out = self.legacy("nix-store").arg("--add").arg(path).run()?;
        Ok(out.stdout_text())
    }
}
