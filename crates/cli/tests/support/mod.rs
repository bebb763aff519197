//! What the CLI tests share: running the real binary and keeping what it said.

// Each test crate that includes this module uses a part of it.
#![allow(dead_code)]

use std::process::Command;

use serde_json::Value;

/// How a run of `fleetgate` ended.
pub struct Run {
    /// Its exit code (-1 if killed by a signal).
    pub code: i32,
    /// Its stdout, as text.
    pub stdout: String,
    /// Its stderr, as text.
    pub stderr: String,
}

impl Run {
    /// Its stdout as the one JSON document `--json` prints.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}\nstderr:\n{}", self.stdout, self.stderr))
    }
}

/// Runs `command` to its end.
pub fn run(command: &mut Command) -> Run {
    let out = command.output().expect("fleetgate runs");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A `fleetgate` command.
pub fn fleetgate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_fleetgate"))
}

/// Runs `fleetgate ARGS…` without substituters: the lab is offline, and a
/// substituter lookup would hang or fail.
pub fn offline(args: &[&str]) -> Run {
    run(fleetgate().args(args).env("NIX_CONFIG", "substituters ="))
}
