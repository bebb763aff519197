//! The kexec installer, in the tarball format of nix-community/nixos-images
//! (`nix/kexec-installer/module.nix`, `kexecInstallerTarball`): a top
//! directory `kexec/` holding `bzImage`, `initrd`, `run`, a static `kexec`
//! and a static `ip`. `run` (`nix/kexec-installer/kexec-run.sh`) takes
//! `--kexec-extra-flags`, appends to the initrd what the installer needs to
//! be reachable the same way — root's `authorized_keys` (and `SUDO_USER`'s),
//! `/etc/ssh/ssh_host_*`, `ip --json addr`/`route` (restored by the
//! installer's `restore-network` service), `/etc/machine-id` — loads the
//! kernel with `--command-line 'init=$init $kernelParams'`, prints
//! `machine will boot into nixos in 6s...` and runs `kexec -e` in the
//! background six seconds later. nixos-anywhere (`src/nixos-anywhere.sh`,
//! `runKexec`) unpacks it under `$HOME/kexec`, runs it with
//! `setsid --wait`, and takes that printed line as success — printed before
//! `kexec -e` ran (issue 13, seed 001).
//!
//! fleetgate proves the kexec instead: `run`'s one `kernelParams="…"` line
//! (substituted at build time by `module.nix`) gets a marker
//! `fleetgate.install=<nonce>` ([`patch_run`]); after the wait, the marker
//! must be in `/proc/cmdline` of a new boot ([`crate::proof::kexec`]).
//! `kexec_extra_flags` cannot carry it: `run` passes them *before*
//! `--command-line`, and kexec-tools keeps the last command line given.

use std::io::Read as _;

/// The kernel parameter fleetgate adds.
pub const MARKER_PARAM: &str = "fleetgate.install";

/// The directory the tarball is unpacked into, on the target (nixos-anywhere's
/// `$HOME/kexec` for root).
pub const DIR: &str = "/root/kexec";

/// A random value proving that a boot is the one fleetgate started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nonce(String);

/// What is wrong with a `run` script or a nonce.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KexecError {
    /// `run` does not have exactly one `kernelParams="…"` line.
    #[error(
        "the kexec tarball's `run` has {0} `kernelParams=\"…\"` lines, not one: it is not nixos-images' kexec-run.sh, and fleetgate could not prove the kexec"
    )]
    KernelParamsLines(usize),
    /// `run` does not pass `$kernelParams` on the kernel command line.
    #[error("the kexec tarball's `run` does not pass `$kernelParams` on the kernel command line")]
    NoCommandLine,
    /// A nonce that is not 16–64 lowercase hex digits.
    #[error("a nonce is 16 to 64 lowercase hex digits, not {0:?}")]
    BadNonce(String),
    /// No randomness.
    #[error("cannot read /dev/urandom: {0}")]
    Random(String),
}

impl Nonce {
    /// A checked nonce.
    ///
    /// # Errors
    /// [`KexecError::BadNonce`].
    pub fn parse(text: &str) -> Result<Nonce, KexecError> {
        let ok =
            (16..=64).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if ok { Ok(Nonce(text.to_owned())) } else { Err(KexecError::BadNonce(text.to_owned())) }
    }

    /// 128 random bits from `/dev/urandom`.
    ///
    /// # Errors
    /// [`KexecError::Random`].
    pub fn random() -> Result<Nonce, KexecError> {
        let mut bytes = [0u8; 16];
        std::fs::File::open("/dev/urandom")
            .and_then(|f| f.take(16).read_exact(&mut bytes))
            .map_err(|e| KexecError::Random(e.to_string()))?;
        Ok(Nonce(bytes.iter().map(|b| format!("{b:02x}")).collect()))
    }

    /// `fleetgate.install=<nonce>`.
    #[must_use]
    pub fn marker(&self) -> String {
        format!("{MARKER_PARAM}={}", self.0)
    }
}

/// `run` with the marker added to its `kernelParams`.
///
/// # Errors
/// [`KexecError`] when `run` is not shaped like `kexec-run.sh`.
pub fn patch_run(run: &str, marker: &str) -> Result<String, KexecError> {
    if !run.contains("$kernelParams'") {
        return Err(KexecError::NoCommandLine);
    }
    let is_params = |l: &str| l.starts_with("kernelParams=\"") && l.ends_with('"') && l.len() >= 15;
    let count = run.lines().filter(|l| is_params(l)).count();
    if count != 1 {
        return Err(KexecError::KernelParamsLines(count));
    }
    let mut out = String::with_capacity(run.len() + marker.len() + 1);
    for line in run.split_inclusive('\n') {
        let (body, end) = line.strip_suffix('\n').map_or((line, ""), |b| (b, "\n"));
        if is_params(body) {
            let inner = &body["kernelParams=\"".len()..body.len() - 1];
            let sep = if inner.is_empty() { "" } else { " " };
            out.push_str(&format!("kernelParams=\"{inner}{sep}{marker}\"{end}"));
        } else {
            out.push_str(line);
        }
    }
    Ok(out)
}

/// `tar` flags for a tarball's name, as nixos-anywhere chooses them
/// (`runKexec`: `.tar.gz` → `-xzf`, `.tar.xz` → `-xJf`, `.tar.zst` →
/// `--zstd`, `.tar` → none); `None` for another name.
#[must_use]
pub fn tar_flags(name: &str) -> Option<&'static str> {
    [(".tar.gz", "-xz"), (".tgz", "-xz"), (".tar.xz", "-xJ"), (".tar.zst", "--zstd -x"), (".tar", "-x")]
        .into_iter()
        .find(|(ext, _)| name.ends_with(ext))
        .map(|(_, f)| f)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lines of nixos-images' `kexec-run.sh` that matter, as
    /// `module.nix` substitutes them.
    const RUN: &str = "#!/bin/sh\nset -eux\ninit=\"/nix/store/abc-nixos-system/init\"\nkernelParams=\"console=ttyS0 panic=30\"\n\
        if ! sh -c \"'$SCRIPT_DIR/kexec' --load '$SCRIPT_DIR/bzImage' \\\n  --command-line 'init=$init $kernelParams'\"\nthen exit 1\nfi\n";

    #[test]
    fn the_marker_joins_the_kernel_params() {
        let n = Nonce::parse("0123456789abcdef").expect("valid");
        let out = patch_run(RUN, &n.marker()).expect("patched");
        assert!(out.contains("kernelParams=\"console=ttyS0 panic=30 fleetgate.install=0123456789abcdef\"\n"), "{out}");
        assert_eq!(out.len(), RUN.len() + " fleetgate.install=0123456789abcdef".len());
        let empty = RUN.replace("console=ttyS0 panic=30", "");
        assert!(patch_run(&empty, "m=1").expect("patched").contains("kernelParams=\"m=1\"\n"));
    }

    #[test]
    fn a_run_of_another_shape_is_refused() {
        assert_eq!(patch_run("#!/bin/sh\nkexec -e\n", "m"), Err(KexecError::NoCommandLine));
        let twice = RUN.replace("set -eux\n", "set -eux\nkernelParams=\"x\"\n");
        assert_eq!(patch_run(&twice, "m"), Err(KexecError::KernelParamsLines(2)));
        let none = RUN.replace("kernelParams=\"console", "params=\"console");
        assert_eq!(patch_run(&none, "m"), Err(KexecError::KernelParamsLines(0)));
    }

    #[test]
    fn nonces_are_checked_and_random() {
        assert!(Nonce::parse("short").is_err());
        assert!(Nonce::parse("0123456789ABCDEF").is_err());
        let (a, b) = (Nonce::random().expect("urandom"), Nonce::random().expect("urandom"));
        assert_ne!(a, b);
        assert!(Nonce::parse(&a.0).is_ok());
        assert_eq!(tar_flags("nixos-kexec-installer-noninteractive-x86_64-linux.tar.gz"), Some("-xz"));
        assert_eq!(tar_flags("x.tar.zst"), Some("--zstd -x"));
        assert_eq!(tar_flags("x.zip"), None);
    }
}
