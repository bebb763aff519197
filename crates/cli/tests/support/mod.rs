//! What the CLI tests share: running the real binary and keeping what it said.

use std::process::Command;

/// How a run of `fleetgate` ended.
pub struct Run {
    /// Its exit code (-1 if killed by a signal).
    pub code: i32,
    /// Its stdout, as text.
    pub stdout: String,
    /// Its stderr, as text.
    pub stderr: String,
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
