//! This machine.

use std::process::Command;
use std::time::Duration;

use crate::process::{self, Output, RunError};
use crate::{Transport, TransportError};

/// This machine: commands run directly as child processes.
#[derive(Debug, Clone, Copy, Default)]
pub struct Local;

impl Transport for Local {
    fn describe(&self) -> String {
        "local".to_owned()
    }

    fn run(&self, argv: &[&str], stdin: Option<&[u8]>, timeout: Duration) -> Result<Output, TransportError> {
        let (program, args) = argv
            .split_first()
            .ok_or_else(|| TransportError::InvalidArgument("empty command".to_owned()))?;
        let mut command = Command::new(program);
        command.args(args);
        let line = argv.join(" ");
        match process::run(command, stdin, timeout) {
            Ok(done) => Ok(Output {
                target: self.describe(),
                command: line,
                status: done.status.code(),
                stdout: done.stdout,
                stderr: done.stderr,
            }),
            Err(RunError::Spawn(source)) => Err(TransportError::Spawn {
                program: (*program).to_owned(),
                source,
            }),
            Err(RunError::Io(source)) => Err(TransportError::Io {
                what: format!("waiting for `{line}`"),
                source,
            }),
            Err(RunError::Timeout) => Err(TransportError::Timeout {
                target: self.describe(),
                command: line,
                after: timeout,
            }),
        }
    }
}
