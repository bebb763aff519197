//! The `fleetgate-channel` binary run as a real process.
#![allow(clippy::unwrap_used, dead_code)]

use std::path::Path;
use std::time::Duration;

/// What a run of the `fleetgate-channel` binary printed.
#[derive(Debug)]
pub struct BinRun {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl BinRun {
    /// Exit code, stdout and stderr as one text for a snapshot, with `root` replaced by
    /// `[ROOT]`.
    pub fn snapshot(&self, root: &Path) -> String {
        let root = root.to_str().unwrap();
        format!("exit code: {:?}\n--- stdout\n{}--- stderr\n{}", self.code, self.stdout, self.stderr)
            .replace(root, "[ROOT]")
    }

    /// The one JSON document on stdout.
    pub fn json(&self) -> serde_json::Value {
        assert_eq!(self.stdout.lines().count(), 1, "one JSON document: {self:?}");
        serde_json::from_str(&self.stdout).unwrap()
    }
}

/// Runs the `fleetgate-channel` binary in `cwd` with a clean environment (no
/// `FLEETGATE_*`, `HYDRA_JSON`, `STATE_DIRECTORY` or `CREDENTIALS_DIRECTORY` of the
/// caller), killed after 120 s: a run that hangs fails the test instead of stalling it.
pub fn channel_bin(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> BinRun {
    let mut run = fleetgate_nix::process::Run::new(env!("CARGO_BIN_EXE_fleetgate-channel"))
        .args(args)
        .cwd(cwd)
        .timeout(Duration::from_secs(120));
    for var in [
        "FLEETGATE_REPO",
        "FLEETGATE_CACHE",
        "FLEETGATE_SIGNING_KEY",
        "HYDRA_JSON",
        "STATE_DIRECTORY",
        "CREDENTIALS_DIRECTORY",
    ] {
        run = run.env_remove(var);
    }
    for (k, v) in env {
        run = run.env(k, v);
    }
    let (status, out) = run.run_unchecked().unwrap();
    BinRun {
        code: status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}
