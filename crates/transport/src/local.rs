//! This machine.

use std::process::Command;
use std::time::Duration;

use crate::process::{self, Output};
use crate::{Transport, TransportError};

/// This machine: commands run directly as child processes.
#[derive(Debug, Clone, Copy, Default)]
pub struct Local;

impl Transport for Local {
    fn describe(&self) -> String {
        "local".to_owned()
    }

    fn run(&self, argv: &[&str], stdin: Option<&[u8]>, timeout: Duration) -> Result<Output, TransportError> {
        let (program, args) =
            argv.split_first().ok_or_else(|| TransportError::InvalidArgument("empty command".to_owned()))?;
        let mut command = Command::new(program);
        command.args(args);
        process::run(command, stdin, timeout, self.describe(), argv.join(" "))
    }
}
