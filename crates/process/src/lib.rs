//! `fleetgate-process`: run an external program to completion with a hard timeout.
//!
//! Every child fleetgate starts (`nix`, `git`, `ssh`, `sh`) goes through here:
//!
//! - the child runs in **its own process group**, with standard input either fed from a
//!   byte buffer or `/dev/null`, and standard output and error captured — **bounded**:
//!   standard output up to [`MAX_STDOUT`] (past it the group is killed and the run is
//!   [`ProcessError::OutputTooLarge`]), standard error's last [`STDERR_KEEP`] bytes;
//! - it is waited for with a hard **timeout**; when that expires the **whole group** gets
//!   SIGKILL;
//! - errors keep the **tail of standard error** ([`STDERR_TAIL_LINES`] lines) and the
//!   command line, and a program that could not be started ([`ProcessError::Spawn`]) is a
//!   different error from one that ran and failed ([`ProcessError::Failed`]).
//!
//! # Why process groups
//!
//! Killing only the direct child is not enough: a grandchild (`ssh` under `nix copy`,
//! `git-remote-http` under `git push`, `sleep` under `sh`) inherits the output pipes and
//! keeps them open, so reading them to the end would block long after the timeout.
//! Because the child leads a group of its own, one `kill(-pgid, SIGKILL)` reaches every
//! descendant that has not deliberately left it. The same applies when the direct child
//! exits normally but leaves a grandchild holding the pipes: it gets a short grace period,
//! then its group is killed.
//!
//! # Never the environment
//!
//! Error messages show the program and its arguments (shell-quoted), never the
//! environment: pass secrets through [`Run::env`] (or [`std::process::Command::env`]),
//! not through arguments.
//!
//! # Two ways in
//!
//! [`Run`] is a builder that owns its program, arguments, environment and input, for
//! callers that describe a command from scratch; [`run_command`] takes a ready
//! [`std::process::Command`] for callers that already build one.
//!
//! # Progress on stderr
//!
//! [`Run::run_streaming_unchecked`] and [`run_command_streaming`] hand each line of
//! standard error to a callback as the child writes it (`nix --log-format
//! internal-json` reports progress there), on the calling thread, under the same hard
//! deadline and group kill; the output still holds all of stderr.
//!
//! ```
//! use std::time::Duration;
//! use fleetgate_process::Run;
//!
//! let out = Run::new("cat").stdin(b"hello".to_vec()).timeout(Duration::from_secs(5)).run()?;
//! assert_eq!(out.stdout_text(), "hello");
//! # Ok::<(), fleetgate_process::ProcessError>(())
//! ```

mod capture;
mod child;
mod error;
mod live;
mod run;

pub use capture::{MAX_LINE, MAX_STDOUT, STDERR_KEEP};
pub use child::{STDERR_TAIL_LINES, command_line, run_command, run_command_streaming, shell_quote, tail};
pub use error::ProcessError;
pub use live::{kill_running_children, running_children};
pub use run::{Output, Run};
