//! `fleetgate-transport`: run commands and move files on a host, behind one
//! trait, [`Transport`], with a [`Local`] and an [`Ssh`] implementation.
//!
//! This crate knows nothing about NixOS. It is modelled on colmena's `Host`
//! trait: a host can run a command (optionally fed on stdin), run a shell
//! script, read a file and upload a file — and every call has a timeout.
//!
//! # Errors that say what happened
//!
//! [`TransportError`] keeps apart the cases a caller must treat differently:
//! [`TransportError::Unreachable`] (the host could not be reached or
//! authenticated: nothing ran), [`TransportError::Timeout`] (something may
//! have run; the call was killed), [`TransportError::CommandFailed`] (the
//! command ran and exited non-zero; see [`Output::check`]), and local
//! failures to start a program ([`TransportError::Spawn`]).
//!
//! # Why OpenSSH through `std::process`, and ControlMaster
//!
//! [`Ssh`] runs the system's `ssh` binary rather than an SSH library, so
//! that the user's `~/.ssh/config`, agent, `ProxyJump`, certificates and
//! known hosts behave exactly as with `ssh` itself (deploy-rs and colmena do
//! the same). It uses `std::process::Command` instead of the `openssh`
//! crate: that crate is async (tokio) and fleetgate's commands are
//! synchronous; what it adds — connection reuse — is OpenSSH's own
//! `ControlMaster`, which [`Ssh`] drives directly: the first call starts a
//! master (`ssh -M -N -f`, its log in a private directory, never on a pipe
//! the master would hold open), later calls reuse it through a socket in a
//! private temporary directory, and dropping the [`Ssh`] value stops it
//! (`ssh -O exit`). Connection errors therefore surface once, at the master,
//! as [`TransportError::Unreachable`].
//!
//! Every invocation passes `BatchMode=yes` (never prompt), a
//! `ConnectTimeout`, and the caller's extra options (deploy-rs `sshOpts`
//! style, e.g. `-F <file>`), which come first so that they win over the
//! defaults, as `ssh` keeps the first value it sees for an option. Nothing
//! here writes to `known_hosts` unless the user's configuration says so.
//!
//! ```no_run
//! use std::time::Duration;
//! use fleetgate_transport::{Ssh, SshTarget, Transport};
//!
//! let target = SshTarget::parse("ssh://root@web1:22")?;
//! let ssh = Ssh::new(target, vec!["-F".into(), "/tmp/lab/ssh/config".into()]);
//! let out = ssh.run_script("uname -r\n", Duration::from_secs(30))?.check()?;
//! println!("{}", out.stdout_text());
//! # Ok::<(), fleetgate_transport::TransportError>(())
//! ```

mod error;
mod local;
mod process;
mod ssh;

use std::path::Path;
use std::time::Duration;

pub use error::TransportError;
/// The quoter for the remote shell: `fleetgate-process`'s, the only one.
pub use fleetgate_process::shell_quote;
pub use local::Local;
pub use process::Output;
pub use ssh::{Ssh, SshTarget};

/// A host that can run commands and hold files.
pub trait Transport: Send + Sync {
    /// A short description for messages (`local`, `ssh://root@web1`).
    fn describe(&self) -> String;

    /// Runs `argv` (program and arguments, never interpreted by a shell on
    /// this side; quoted for the remote shell by [`Ssh`]) with `stdin` as its
    /// standard input. A non-zero exit is not an error here: look at
    /// [`Output::status`] or call [`Output::check`].
    ///
    /// # Errors
    /// [`TransportError::Unreachable`], [`TransportError::Timeout`],
    /// [`TransportError::Spawn`], [`TransportError::Io`].
    fn run(&self, argv: &[&str], stdin: Option<&[u8]>, timeout: Duration) -> Result<Output, TransportError>;

    /// Runs a POSIX shell script (`sh -s`, the script on stdin).
    ///
    /// # Errors
    /// As [`Transport::run`].
    fn run_script(&self, script: &str, timeout: Duration) -> Result<Output, TransportError> {
        self.run(&["sh", "-s"], Some(script.as_bytes()), timeout)
    }

    /// Reads a file, at most `max` bytes of it.
    ///
    /// # Errors
    /// As [`Transport::run`], and [`TransportError::CommandFailed`] if the
    /// file cannot be read.
    fn read_file(&self, path: &Path, max: u64, timeout: Duration) -> Result<Vec<u8>, TransportError> {
        let path = path_str(path)?;
        let max = max.to_string();
        let out = self.run(&["head", "-c", &max, "--", path], None, timeout)?.check()?;
        Ok(out.stdout)
    }

    /// Writes `contents` to `path` (through a temporary file next to it and a
    /// rename, so readers never see half a file) with the given mode.
    ///
    /// # Errors
    /// As [`Transport::run`], and [`TransportError::CommandFailed`] if the
    /// file cannot be written.
    fn upload(&self, contents: &[u8], path: &Path, mode: u32, timeout: Duration) -> Result<(), TransportError> {
        let path = path_str(path)?;
        let script = format!(
            "set -e; t={p}.fleetgate-tmp.$$; umask 077; cat > \"$t\"; chmod {mode:o} \"$t\"; mv -f \"$t\" {p}",
            p = shell_quote(path)
        );
        self.run(&["sh", "-c", &script], Some(contents), timeout)?.check()?;
        Ok(())
    }
}

fn path_str(path: &Path) -> Result<&str, TransportError> {
    path.to_str().ok_or_else(|| TransportError::InvalidArgument(format!("path is not UTF-8: {}", path.display())))
}
