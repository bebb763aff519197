//! The process runner every Nix invocation here goes through: [`fleetgate_process`],
//! re-exported so that callers can use it for other tools (git) too.
//!
//! The child runs in its own process group; on timeout the whole group gets SIGKILL, so a
//! grandchild (`ssh` under `nix copy`, `git-remote-http` under `git push`) cannot keep the
//! pipes open. Error messages ([`ProcessError`](crate::ProcessError)) show the command
//! line, never the environment: pass secrets through [`Run::env`], not through arguments.
pub use fleetgate_process::{Output, Run, STDERR_TAIL_LINES, tail};

#[cfg(test)]
mod tests {
    use super::Run;
    use crate::{NixError, ProcessError};

    #[test]
    fn a_failed_run_is_a_nix_error_with_the_stderr_tail() {
        let e: NixError = Run::new("sh").args(["-c", "echo boom >&2; exit 3"]).run().unwrap_err().into();
        assert!(matches!(&e, NixError::Process(ProcessError::Failed { .. })), "{e:?}");
        assert!(e.to_string().ends_with(":\nboom"), "{e}");
    }
}
