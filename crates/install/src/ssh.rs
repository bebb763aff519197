//! The real target, over OpenSSH ([`fleetgate_transport::Ssh`]).
//!
//! What runs on the target follows nixos-anywhere (`src/nixos-anywhere.sh`)
//! where it can: the kexec tarball unpacked under `/root/kexec` and run with
//! `setsid --wait` (`runKexec`); the closure copied with `nix copy --to
//! 'ssh://root@host?remote-store=local?root=/mnt'
//! --substitute-on-destination` (`nixosInstall`); `nixos-install
//! --no-root-passwd --no-channel-copy --system` with the installer's tools
//! (`/run/current-system/sw/bin`) and the host keys copied into `/mnt`
//! (its `--copy-host-keys`, on by default here so the installed system
//! answers with the key the operator already trusts); the reboot detached
//! (`nixosReboot`). Every call has a deadline; the waits poll with their
//! own (`wait_for_boot`), unlike nixos-anywhere's `until …; do sleep 5`.
//!
//! A login user who is not root (`ssh://admin@host`) is nixos-anywhere's
//! `sudo`/`doas` path ([`crate::escalation`]): asked once, on the first call,
//! how it becomes root; after the kexec the target is `root@host`.
//!
//! The pieces live beside it: the scripts that look at the target
//! ([`crate::remote_scripts`]), the wait for a boot ([`crate::boot_wait`]),
//! the tarball's source ([`crate::kexec_source`]) and the built system's
//! check ([`crate::built_system`]).

use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fleetgate_apply::bootloader::{GrubMenu, Grubenv, SdBoot};
use fleetgate_facts::Facts;
use fleetgate_nix::store_uri::StoreUri;
use fleetgate_nix::{CopyOptions, Nix};
use fleetgate_transport::{Ssh, SshTarget as Address, Transport, shell_quote as q};

use crate::boot_wait::MIN_PROBE;
pub use crate::boot_wait::{Pacing, poll_for_boot};
pub use crate::built_system::BuiltSystem;
use crate::enrol::{self, EnrolFile, ReadBack};
use crate::escalation::{self, Answerer, Elevated, Escalation, Reached};
use crate::kexec::{self, DIR as KEXEC_DIR};
pub use crate::kexec_source::{KexecSource, MAX_TARBALL};
pub use crate::remote_scripts::parse_disk_users;
use crate::remote_scripts::{DISK_USERS, LOOK, failed, parse_look, transport_error};
use crate::target::{DiskUser, Health, Look, SameBootEnds, StagedKexec, Target, TargetError, Waited};

/// Where the pre-flight facts are kept on the installer (a tmpfs).
pub const KEPT_FACTS: &str = "/run/fleetgate/install/preflight-facts.json";

/// A target reached over SSH.
pub struct SshTarget {
    address: Address,
    options: Vec<String>,
    kexec: Option<KexecSource>,
    console_log: Option<PathBuf>,
    kexec_extra_flags: String,
    /// The login user's connection, escalated as [`Self::reached`] says.
    ssh: Elevated<Ssh>,
    /// Whether the login user has been asked how it becomes root (always
    /// true for `root@`).
    reached: bool,
    /// `run` has been started: the next boot answers as `root@`.
    kexec_started: bool,
    start: Instant,
}

impl SshTarget {
    /// A target at `address` (`ssh://root@192.0.2.10`), with extra `ssh`
    /// options, the kexec tarball, and a file the console is logged to (a
    /// VM's serial log), if fleetgate can read one.
    #[must_use]
    pub fn new(
        address: Address,
        options: Vec<String>,
        kexec: Option<KexecSource>,
        console_log: Option<PathBuf>,
    ) -> SshTarget {
        let ssh = Elevated::new(Ssh::new(address.clone(), options.clone()), Escalation::Root);
        SshTarget {
            reached: address.user() == Some("root"),
            address,
            options,
            kexec,
            console_log,
            kexec_extra_flags: String::new(),
            ssh,
            kexec_started: false,
            start: Instant::now(),
        }
    }

    /// Asks the login user, once, how it becomes root (nixos-anywhere's
    /// `importFacts`); an installer fleetgate started is `root@host`.
    fn reach(&mut self, timeout: Duration) -> Result<(), TargetError> {
        if self.reached {
            return Ok(());
        }
        let user = self.address.user().unwrap_or("the login user").to_owned();
        match escalation::probe(self.ssh.inner(), &user, timeout.min(Duration::from_secs(60)))? {
            Reached::AsLoginUser(how) => {
                let ssh = Ssh::new(self.address.clone(), self.options.clone());
                self.ssh = Elevated::new(ssh, how);
            }
            Reached::InstallerAsRoot => self.become_root()?,
        }
        self.reached = true;
        Ok(())
    }

    /// Goes on as `root@host` (nixos-anywhere: `sshConnection="root@${sshHost}"`).
    fn become_root(&mut self) -> Result<(), TargetError> {
        self.address = self.root_address()?;
        self.ssh = Elevated::new(Ssh::new(self.address.clone(), self.options.clone()), Escalation::Root);
        self.reached = true;
        Ok(())
    }

    fn root_address(&self) -> Result<Address, TargetError> {
        Address::from_parts(Some("root"), self.address.host(), self.address.port())
            .map_err(|e| TargetError::Cannot(e.to_string()))
    }

    /// Extra flags for `kexec --load`, handed to the tarball's `run` as its
    /// `--kexec-extra-flags` (nixos-anywhere's flag of that name; `run` splits
    /// them into words), e.g. `--no-sync` or `--kexec-syscall-auto`.
    #[must_use]
    pub fn with_kexec_extra_flags(mut self, flags: &str) -> SshTarget {
        flags.clone_into(&mut self.kexec_extra_flags);
        self
    }

    fn fresh(&self, address: &Address, connect: Duration) -> Ssh {
        Ssh::new(address.clone(), self.options.clone()).with_multiplexing(false).with_connect_timeout(connect)
    }

    fn sh(
        &mut self,
        what: &str,
        script: &str,
        args: &[&str],
        stdin: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<String, TargetError> {
        self.reach(timeout)?;
        let mut argv = vec!["sh", "-c", script, "sh"];
        argv.extend_from_slice(args);
        let o = self.ssh.run(&argv, stdin, timeout).map_err(|e| transport_error(&e))?;
        if o.success() { Ok(o.stdout_text()) } else { Err(failed(what, &o)) }
    }

    fn read(&mut self, path: &str, max: u64, timeout: Duration) -> Result<Option<Vec<u8>>, TargetError> {
        self.reach(timeout)?;
        let script = format!("[ -f {p} ] || exit 3; head -c {max} -- {p}", p = q(path));
        let o = self.ssh.run(&["sh", "-c", &script], None, timeout).map_err(|e| transport_error(&e))?;
        match o.status {
            Some(0) => Ok(Some(o.stdout)),
            Some(3) => Ok(None),
            _ => Err(failed(&format!("reading {path}"), &o)),
        }
    }

    fn nix_sshopts(&self) -> String {
        let mut opts = self.options.clone();
        if let Some(port) = self.address.port() {
            opts.extend(["-p".to_owned(), port.to_string()]);
        }
        opts.join(" ")
    }
}

impl Target for SshTarget {
    fn describe(&self) -> String {
        self.ssh.describe()
    }

    fn now(&self) -> Duration {
        self.start.elapsed()
    }

    fn look(&mut self, timeout: Duration) -> Result<Look, TargetError> {
        parse_look(&self.sh("looking at the target", LOOK, &[], None, timeout)?)
    }

    fn facts(&mut self, timeout: Duration) -> Result<Facts, TargetError> {
        self.reach(timeout)?;
        fleetgate_facts::collect(&self.ssh, timeout).map_err(|e| TargetError::Failed(e.to_string()))
    }

    fn keep_facts(&mut self, facts: &Facts, timeout: Duration) -> Result<(), TargetError> {
        let dir = KEPT_FACTS.rsplit_once('/').map_or("/run", |(d, _)| d);
        self.sh("creating the directory for the kept facts", &format!("mkdir -p {}", q(dir)), &[], None, timeout)?;
        self.ssh
            .upload(facts.to_json().as_bytes(), Path::new(KEPT_FACTS), 0o600, timeout)
            .map_err(|e| transport_error(&e))
    }

    fn kept_facts(&mut self, timeout: Duration) -> Result<Option<Facts>, TargetError> {
        match self.read(KEPT_FACTS, 8 << 20, timeout)? {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| TargetError::Failed(format!("{KEPT_FACTS} is not a facts document: {e}"))),
        }
    }

    fn stage_kexec(&mut self, marker: &str, timeout: Duration) -> Result<StagedKexec, TargetError> {
        let source = self
            .kexec
            .clone()
            .ok_or_else(|| TargetError::Cannot("no kexec tarball given (--kexec PATH|URL)".into()))?;
        let flags = kexec::tar_flags(&source.name())
            .ok_or_else(|| TargetError::Cannot(format!("{} is not a tarball", source.name())))?;
        let prepare = format!("set -e; mkdir -p {d}; cd {d}", d = q(KEXEC_DIR));
        match &source {
            KexecSource::Path(path) => {
                let file =
                    std::fs::File::open(path).map_err(|e| TargetError::Cannot(format!("{}: {e}", path.display())))?;
                let mut bytes = Vec::new();
                file.take(MAX_TARBALL + 1)
                    .read_to_end(&mut bytes)
                    .map_err(|e| TargetError::Cannot(format!("{}: {e}", path.display())))?;
                if bytes.len() as u64 > MAX_TARBALL {
                    return Err(TargetError::Cannot(format!("{} is larger than {MAX_TARBALL} bytes", path.display())));
                }
                self.sh(
                    "unpacking the kexec tarball",
                    &format!("{prepare}; tar {flags} -f -"),
                    &[],
                    Some(&bytes),
                    timeout,
                )?;
            }
            KexecSource::Url(url) => {
                let script = format!(
                    "{prepare}; if command -v curl >/dev/null; then curl --fail -Ss -L {u}; else wget {u} -O-; fi | tar {flags} -f -",
                    u = q(url)
                );
                self.sh("downloading the kexec tarball", &script, &[], None, timeout)?;
            }
        }
        let run_path = format!("{KEXEC_DIR}/kexec/run");
        let run = self.read(&run_path, 256 << 10, timeout)?.ok_or_else(|| {
            TargetError::Cannot(format!("the tarball has no {run_path} (not nixos-images' kexec installer)"))
        })?;
        let patched =
            kexec::patch_run(&String::from_utf8_lossy(&run), marker).map_err(|e| TargetError::Cannot(e.to_string()))?;
        self.ssh
            .upload(patched.as_bytes(), Path::new(&format!("{KEXEC_DIR}/kexec/run-fleetgate")), 0o755, timeout)
            .map_err(|e| transport_error(&e))?;
        let head = self.read(&format!("{KEXEC_DIR}/kexec/bzImage"), 64 << 10, timeout)?.unwrap_or_default();
        Ok(StagedKexec { kernel_release: fleetgate_system::kernel_image::recognise(&head).and_then(|k| k.release) })
    }

    fn start_kexec(&mut self, timeout: Duration) -> Result<(), TargetError> {
        let script = start_script(&self.kexec_extra_flags);
        // From here the next boot may be the installer's, reached as root@.
        self.kexec_started = true;
        self.sh("the kexec tarball's run", &script, &[], None, timeout).map(|_| ())
    }

    fn wait_for_boot(&mut self, old_boot_id: &str, same_boot_ends: SameBootEnds, timeout: Duration) -> Waited {
        let pacing = Pacing { min_probe: MIN_PROBE, pause: Duration::from_secs(3) };
        // A login user who is not root, after `run`: the installer answers as
        // root@ (nixos-anywhere), the old OS (seed 001) as the login user.
        let as_root = match self.root_address() {
            Ok(root) if self.kexec_started && self.address.user() != Some("root") => Some(root),
            _ => None,
        };
        let mut answerer = Answerer::LoginUser;
        let user_address = self.address.clone();
        let waited = poll_for_boot(old_boot_id, same_boot_ends, timeout, pacing, |left| {
            let look_as = |address: &Address| {
                let probe = self.fresh(address, left.min(Duration::from_secs(10)));
                let out = probe.run(&["sh", "-c", LOOK], None, left.min(Duration::from_secs(30)));
                out.map_err(|e| transport_error(&e)).and_then(|o| {
                    if o.success() { parse_look(&o.stdout_text()) } else { Err(failed("looking at the target", &o)) }
                })
            };
            let (look, who) = match &as_root {
                Some(root) => {
                    escalation::look_as_root_else_user(&mut || look_as(root), &mut || look_as(&user_address))?
                }
                None => (look_as(&user_address)?, Answerer::LoginUser),
            };
            answerer = who;
            Ok(look)
        });
        if matches!(waited, Waited::NewBoot(_)) {
            self.kexec_started = false;
            if answerer == Answerer::Root {
                if let Err(e) = self.become_root() {
                    return Waited::Unreachable(e.line());
                }
            } else {
                // A new connection; a login user who is not root is asked again.
                self.ssh = Elevated::new(Ssh::new(self.address.clone(), self.options.clone()), Escalation::Root);
                self.reached = self.address.user() == Some("root");
            }
        }
        waited
    }

    fn disk_users(&mut self, disks: &[String], timeout: Duration) -> Result<Vec<DiskUser>, TargetError> {
        let args: Vec<&str> = disks.iter().map(String::as_str).collect();
        parse_disk_users(&self.sh("looking at what uses the disks", DISK_USERS, &args, None, timeout)?)
    }

    fn copy_paths(&mut self, paths: &[String], into_mnt: bool, timeout: Duration) -> Result<(), TargetError> {
        let nix = Nix::detect().map_err(|e| TargetError::Cannot(e.to_string()))?;
        let nix = nix.with_env("NIX_SSHOPTS", self.nix_sshopts()).with_timeout(timeout);
        let mut uri = self.address.store_uri();
        if into_mnt {
            uri.push_str("?remote-store=local%3Froot=%2Fmnt");
        }
        let store = StoreUri::parse(&uri).map_err(|e| TargetError::Cannot(e.to_string()))?;
        let opts = CopyOptions { substitute_on_destination: true, ..CopyOptions::default() };
        nix.copy_to(&store, paths, &opts).map_err(|e| TargetError::Failed(format!("nix copy to {uri}: {e}")))
    }

    fn run_disko(&mut self, script: &str, timeout: Duration) -> Result<(), TargetError> {
        self.reach(timeout)?;
        let o = self.ssh.run(&[script], None, timeout).map_err(|e| transport_error(&e))?;
        if o.success() { Ok(()) } else { Err(failed("the disko script", &o)) }
    }

    fn install_system(&mut self, system: &str, timeout: Duration) -> Result<(), TargetError> {
        let script = "set -eu\nexport PATH=\"$PATH:/run/current-system/sw/bin\"\n\
            if [ ! -d /mnt/tmp ]; then mkdir -p /mnt/tmp; chmod 777 /mnt/tmp; fi\n\
            mkdir -m 755 -p /mnt/etc/ssh\n\
            for p in /etc/ssh/ssh_host_*; do [ -e \"$p\" ] && [ ! -e \"/mnt$p\" ] && cp -a \"$p\" \"/mnt$p\"; done\n\
            nixos-install --no-root-passwd --no-channel-copy --system \"$1\"\n";
        self.sh("nixos-install", script, &[system], None, timeout).map(|_| ())
    }

    fn installed_boot_default(&mut self, timeout: Duration) -> Result<Option<String>, TargetError> {
        self.reach(timeout)?;
        // The ESP where NixOS mounts it (boot.loader.efi.efiSysMountPoint: /boot, /boot/efi or /efi).
        let listing = format!(
            "esp=\nfor d in /mnt/boot /mnt/boot/efi /mnt/efi; do [ -f \"$d/loader/loader.conf\" ] && {{ esp=$d; break; }}; done\n\
             [ -n \"$esp\" ] || exit 3\nPATH=/run/current-system/sw/bin:$PATH\n{}",
            fleetgate_apply::systemd_boot::listing_script()
        );
        let o = self.ssh.run(&["sh", "-c", &listing], None, timeout).map_err(|e| transport_error(&e))?;
        match o.status {
            Some(0) => {
                let sd = SdBoot::parse(&o.stdout_text());
                return Ok(sd.default_entry(None).and_then(|e| e.system.clone()));
            }
            Some(3) => {}
            _ => return Err(failed("listing the systemd-boot entries under /mnt/boot", &o)),
        }
        let Some(cfg) = self.read("/mnt/boot/grub/grub.cfg", 8 << 20, timeout)? else {
            return Err(TargetError::Failed(
                "no boot loader under /mnt/boot (neither loader/loader.conf nor grub/grub.cfg)".into(),
            ));
        };
        let env = self.read("/mnt/boot/grub/grubenv", 4096, timeout)?.unwrap_or_default();
        let env = Grubenv::parse(&env).map_err(|e| TargetError::Failed(format!("/mnt/boot/grub/grubenv: {e}")))?;
        let menu = GrubMenu::parse(&String::from_utf8_lossy(&cfg));
        Ok(menu.default_entry(&env).and_then(|e| e.system.clone()))
    }

    fn enrol(&mut self, files: &[EnrolFile], timeout: Duration) -> Result<(), TargetError> {
        enrol::write(&self.ssh, "/mnt", files, timeout)
    }

    fn read_back_enrolled(&mut self, files: &[EnrolFile], timeout: Duration) -> Result<Vec<ReadBack>, TargetError> {
        enrol::read_back(&self.ssh, "/mnt", files, timeout)
    }

    fn reboot(&mut self, timeout: Duration) -> Result<(), TargetError> {
        let script = "export PATH=\"$PATH:/run/current-system/sw/bin\"; sync; umount -R /mnt || true; \
            nohup sh -c 'sleep 3 && reboot' >/dev/null 2>&1 &";
        self.sh("rebooting", script, &[], None, timeout).map(|_| ())
    }

    fn health(&mut self, timeout: Duration) -> Result<Health, TargetError> {
        let secs = timeout.as_secs().max(1).to_string();
        let script = "PATH=/run/current-system/sw/bin; export PATH\n\
            s=$(timeout \"$1\" systemctl is-system-running --wait 2>/dev/null); printf 'state\\t%s\\n' \"${s:-unknown}\"\n\
            systemctl --failed --no-legend --plain 2>/dev/null | while read -r u rest; do printf 'failed\\t%s\\n' \"$u\"; done\nexit 0\n";
        let text = self.sh("asking the installed system's health", script, &[&secs], None, timeout)?;
        let mut health = Health { state: "unknown".into(), failed_units: Vec::new() };
        for line in text.lines() {
            match line.split_once('\t') {
                Some(("state", s)) => s.trim().clone_into(&mut health.state),
                Some(("failed", u)) => health.failed_units.push(u.trim().to_owned()),
                _ => {}
            }
        }
        Ok(health)
    }

    fn console_tail(&mut self) -> Vec<String> {
        let Some(path) = &self.console_log else { return Vec::new() };
        let Ok(mut file) = std::fs::File::open(path) else {
            return vec![format!("(cannot open the console log {})", path.display())];
        };
        let len = file.metadata().map_or(0, |m| m.len());
        let _ = file.seek(SeekFrom::Start(len.saturating_sub(16 << 10)));
        let mut bytes = Vec::new();
        let _ = file.take(16 << 10).read_to_end(&mut bytes);
        let text = String::from_utf8_lossy(&bytes);
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].iter().map(|l| (*l).to_owned()).collect()
    }
}

/// How the tarball's `run` is started: in its directory, in a session of its
/// own (nixos-anywhere's `setsid --wait`), the extra flags as one argument.
fn start_script(kexec_extra_flags: &str) -> String {
    format!(
        "cd {d} && TMPDIR={d} setsid --wait {d}/kexec/run-fleetgate --kexec-extra-flags {f}",
        d = q(KEXEC_DIR),
        f = q(kexec_extra_flags)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// nixos-anywhere's `--kexec-extra-flags`: one argument to `run`, which
    /// splits it into words for `kexec --load`; nothing reaches the shell here.
    #[test]
    fn kexec_extra_flags_reach_run_as_one_quoted_argument() {
        assert!(start_script("").ends_with("/root/kexec/kexec/run-fleetgate --kexec-extra-flags ''"));
        assert!(start_script("--no-sync").ends_with("--kexec-extra-flags --no-sync"));
        assert!(
            start_script("--no-sync; reboot").ends_with("--kexec-extra-flags '--no-sync; reboot'"),
            "{}",
            start_script("--no-sync; reboot")
        );
    }

    #[test]
    fn the_mnt_store_uri_survives_parsing() {
        let uri = "ssh://root@192.0.2.10?remote-store=local%3Froot=%2Fmnt";
        let store = StoreUri::parse(uri).expect("valid");
        assert_eq!(store.to_string(), uri, "nixos-anywhere's form, passed to nix copy as is");
    }
}
