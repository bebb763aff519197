//! Running the real `fleetgate` binary from a test, as a user would.

#![allow(dead_code)]

use std::process::Command;

use serde_json::Value;

/// What a `fleetgate` run printed and how it exited.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Its stdout as the one JSON document `--json` prints.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}\nstderr:\n{}", self.stdout, self.stderr))
    }
}

/// Runs `fleetgate ARGS…` without substituters (the lab is offline).
pub fn fleetgate(args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_fleetgate"))
        .args(args)
        // No network: a substituter lookup would hang or fail offline.
        .env("NIX_CONFIG", "substituters =")
        .output()
        .expect("fleetgate runs");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}
