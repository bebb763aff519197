//! The real target, over OpenSSH ([`fleetgate_transport::Ssh`]), and the
//! real system check ([`BuiltSystem`]).
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

use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fleetgate_apply::bootloader::{GrubMenu, Grubenv, SdBoot};
use fleetgate_check::Report;
use fleetgate_facts::Facts;
use fleetgate_nix::store_uri::StoreUri;
use fleetgate_nix::{CopyOptions, Nix};
use fleetgate_system::{RootSpec, SystemToplevel};
use fleetgate_transport::{Output, Ssh, SshTarget as Address, Transport, TransportError, shell_quote as q};

use crate::enrol::{self, EnrolFile, ReadBack};
use crate::kexec::{self, DIR as KEXEC_DIR};
use crate::protocol::SystemCheck;
use crate::target::{DiskUse, DiskUser, Health, Look, MountLine, StagedKexec, Target, TargetError, Waited};

/// Where the pre-flight facts are kept on the installer (a tmpfs).
pub const KEPT_FACTS: &str = "/run/fleetgate/install/preflight-facts.json";
/// The largest kexec tarball read from a local file.
pub const MAX_TARBALL: u64 = 2 << 30;

/// Where the kexec tarball comes from (`--kexec PATH|URL`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KexecSource {
    /// A local file, streamed over SSH.
    Path(PathBuf),
    /// Downloaded by the target (`curl`, else `wget`), as nixos-anywhere does.
    Url(String),
}

impl KexecSource {
    /// `http(s)://…` is a URL, anything else a file.
    ///
    /// # Errors
    /// A name that is not a tarball nixos-anywhere would take.
    pub fn parse(text: &str) -> Result<KexecSource, String> {
        if kexec::tar_flags(text).is_none() {
            return Err(format!("{text:?} is not a .tar, .tar.gz, .tar.xz or .tar.zst (nixos-images' kexec tarball)"));
        }
        if text.starts_with("https://") || text.starts_with("http://") {
            Ok(KexecSource::Url(text.to_owned()))
        } else {
            Ok(KexecSource::Path(PathBuf::from(text)))
        }
    }

    fn name(&self) -> String {
        match self {
            KexecSource::Path(p) => p.to_string_lossy().into_owned(),
            KexecSource::Url(u) => u.clone(),
        }
    }
}

/// The least time worth giving a probe of the target: one given less fails
/// on a slow machine for want of time, and would stand as "did not answer"
/// for a machine that answered all along (found on a TCG guest: a seed-001
/// kexec, the old OS answering every probe, reported as unknown).
const MIN_PROBE: Duration = Duration::from_secs(10);

/// How [`poll_for_boot`] paces its probes.
#[derive(Debug, Clone, Copy)]
pub struct Pacing {
    /// No probe starts with less than this left.
    pub min_probe: Duration,
    /// The pause between probes.
    pub pause: Duration,
}

/// Probes (`probe(time left)`) until a boot other than `old_boot_id`
/// answers or `timeout` passes. The verdict at the deadline is the last
/// *complete* probe's: no probe starts with less than
/// [`Pacing::min_probe`] left (one started then fails for want of time).
pub fn poll_for_boot(
    old_boot_id: &str,
    timeout: Duration,
    pacing: Pacing,
    mut probe: impl FnMut(Duration) -> Result<Look, TargetError>,
) -> Waited {
    let until = Instant::now() + timeout;
    let mut last = Waited::Unreachable("not asked yet".into());
    let mut asked = false;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        // The first probe runs whatever is left: a short one beats none.
        if left.is_zero() || (asked && left < pacing.min_probe) {
            return last;
        }
        asked = true;
        last = match probe(left) {
            Ok(look) if look.boot_id != old_boot_id => return Waited::NewBoot(look),
            Ok(look) => Waited::SameBoot(look),
            Err(e) => Waited::Unreachable(e.line()),
        };
        std::thread::sleep(until.saturating_duration_since(Instant::now()).min(pacing.pause));
    }
}

/// A target reached over SSH.
pub struct SshTarget {
    address: Address,
    options: Vec<String>,
    kexec: Option<KexecSource>,
    console_log: Option<PathBuf>,
    kexec_extra_flags: String,
    ssh: Ssh,
    start: Instant,
}

pub(crate) fn transport_error(e: &TransportError) -> TargetError {
    let line = e.to_string().lines().next().unwrap_or_default().to_owned();
    match e {
        TransportError::Unreachable { .. } | TransportError::Timeout { .. } => TargetError::Lost(line),
        _ => TargetError::Failed(line),
    }
}

fn failed(what: &str, o: &Output) -> TargetError {
    let mut text = o.stdout_text();
    text.push_str(&String::from_utf8_lossy(&o.stderr));
    TargetError::Failed(format!(
        "{what} failed ({}):\n{}",
        o.status.map_or_else(|| "killed".to_owned(), |s| format!("exit {s}")),
        fleetgate_process::tail(text.trim().as_bytes())
    ))
}

/// Parses the look script's output.
fn parse_look(text: &str) -> Result<Look, TargetError> {
    let mut look = Look::default();
    for line in text.lines() {
        let f: Vec<&str> = line.splitn(3, '\t').collect();
        match f.as_slice() {
            ["boot_id", v] => v.trim().clone_into(&mut look.boot_id),
            ["cmdline", v] => v.trim().clone_into(&mut look.cmdline),
            ["kernel", v] => v.trim().clone_into(&mut look.kernel_release),
            ["booted", v] => look.booted_system = Some((*v).to_owned()),
            ["mount", s, m] => look.mounts.push(MountLine { source: (*s).to_owned(), mount_point: (*m).to_owned() }),
            _ => {}
        }
    }
    if look.boot_id.is_empty() {
        return Err(TargetError::Failed("the target did not say its boot id".into()));
    }
    Ok(look)
}

const LOOK: &str = "PATH=/run/current-system/sw/bin:/usr/bin:/bin:/usr/sbin:/sbin; export PATH\n\
    printf 'boot_id\\t%s\\n' \"$(cat /proc/sys/kernel/random/boot_id)\"\n\
    printf 'cmdline\\t%s\\n' \"$(cat /proc/cmdline)\"\n\
    printf 'kernel\\t%s\\n' \"$(uname -r)\"\n\
    [ -e /run/booted-system ] && printf 'booted\\t%s\\n' \"$(readlink -f /run/booted-system)\"\n\
    while read -r src mp rest; do printf 'mount\\t%s\\t%s\\n' \"$src\" \"$mp\"; done < /proc/self/mounts\nexit 0\n";

/// What uses each disk given as an argument, or its partitions: holders
/// (`/sys/class/block/X/holders`, dm's `dm/name`), mounts, swaps.
const DISK_USERS: &str = "PATH=/run/current-system/sw/bin:/usr/bin:/bin:/usr/sbin:/sbin; export PATH\n\
    for disk in \"$@\"; do\n  n=$(readlink -f \"$disk\"); n=${n##*/}\n  [ -e \"/sys/class/block/$n\" ] || { printf 'missing\\t%s\\n' \"$disk\"; continue; }\n\
      for s in \"/sys/class/block/$n\" \"/sys/class/block/$n/$n\"*; do\n    [ -e \"$s\" ] || continue\n    d=${s##*/}\n\
        for h in \"$s\"/holders/*; do\n      [ -e \"$h\" ] || continue\n      hn=${h##*/}\n\
          printf 'holder\\t/dev/%s\\t%s\\t%s\\n' \"$d\" \"$hn\" \"$(cat \"/sys/class/block/$hn/dm/name\" 2>/dev/null)\"\n    done\n\
        while read -r src mp rest; do\n      case \"$src\" in /dev/*) [ \"$(readlink -f \"$src\")\" = \"/dev/$d\" ] && printf 'mount\\t/dev/%s\\t%s\\n' \"$d\" \"$mp\" ;; esac\n    done < /proc/self/mounts\n\
        while read -r src rest; do\n      case \"$src\" in /dev/*) [ \"$(readlink -f \"$src\")\" = \"/dev/$d\" ] && printf 'swap\\t/dev/%s\\n' \"$d\" ;; esac\n    done < /proc/swaps\n  done\ndone\nexit 0\n";

/// Parses [`DISK_USERS`]' output.
///
/// # Errors
/// A disk that does not exist.
pub fn parse_disk_users(text: &str) -> Result<Vec<DiskUser>, TargetError> {
    let mut users = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        let user = match f.as_slice() {
            ["missing", disk] => {
                return Err(TargetError::Failed(format!("the disk {disk} does not exist on the target")));
            }
            ["holder", dev, holder, name] => DiskUser {
                device: (*dev).to_owned(),
                user: DiskUse::Holder {
                    holder: (*holder).to_owned(),
                    name: Some((*name).to_owned()).filter(|n| !n.is_empty()),
                },
            },
            ["mount", dev, mp] => {
                DiskUser { device: (*dev).to_owned(), user: DiskUse::Mounted { mount_point: (*mp).to_owned() } }
            }
            ["swap", dev] => DiskUser { device: (*dev).to_owned(), user: DiskUse::Swap },
            _ => continue,
        };
        users.push(user);
    }
    Ok(users)
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
        let ssh = Ssh::new(address.clone(), options.clone());
        SshTarget { address, options, kexec, console_log, kexec_extra_flags: String::new(), ssh, start: Instant::now() }
    }

    /// Extra flags for `kexec --load`, handed to the tarball's `run` as its
    /// `--kexec-extra-flags` (nixos-anywhere's flag of that name; `run` splits
    /// them into words), e.g. `--no-sync` or `--kexec-syscall-auto`.
    #[must_use]
    pub fn with_kexec_extra_flags(mut self, flags: &str) -> SshTarget {
        flags.clone_into(&mut self.kexec_extra_flags);
        self
    }

    fn fresh(&self, connect: Duration) -> Ssh {
        Ssh::new(self.address.clone(), self.options.clone()).with_multiplexing(false).with_connect_timeout(connect)
    }

    fn sh(
        &self,
        what: &str,
        script: &str,
        args: &[&str],
        stdin: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<String, TargetError> {
        let mut argv = vec!["sh", "-c", script, "sh"];
        argv.extend_from_slice(args);
        let o = self.ssh.run(&argv, stdin, timeout).map_err(|e| transport_error(&e))?;
        if o.success() { Ok(o.stdout_text()) } else { Err(failed(what, &o)) }
    }

    fn read(&self, path: &str, max: u64, timeout: Duration) -> Result<Option<Vec<u8>>, TargetError> {
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
        self.sh("the kexec tarball's run", &start_script(&self.kexec_extra_flags), &[], None, timeout).map(|_| ())
    }

    fn wait_for_boot(&mut self, old_boot_id: &str, timeout: Duration) -> Waited {
        let pacing = Pacing { min_probe: MIN_PROBE, pause: Duration::from_secs(3) };
        let waited = poll_for_boot(old_boot_id, timeout, pacing, |left| {
            let probe = self.fresh(left.min(Duration::from_secs(10)));
            let out = probe.run(&["sh", "-c", LOOK], None, left.min(Duration::from_secs(30)));
            out.map_err(|e| transport_error(&e)).and_then(|o| {
                if o.success() { parse_look(&o.stdout_text()) } else { Err(failed("looking at the target", &o)) }
            })
        });
        if matches!(waited, Waited::NewBoot(_)) {
            self.ssh = Ssh::new(self.address.clone(), self.options.clone());
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
        // The ESP where NixOS mounts it (boot.loader.efi.efiSysMountPoint: /boot, /boot/efi or /efi).
        let listing = "esp=\nfor d in /mnt/boot /mnt/boot/efi /mnt/efi; do [ -f \"$d/loader/loader.conf\" ] && { esp=$d; break; }; done\n\
            [ -n \"$esp\" ] || exit 3\nPATH=/run/current-system/sw/bin:$PATH\n\
            for e in \"$esp\"/loader/entries/*.conf; do\n  [ -e \"$e\" ] || continue\n  \
            printf 'entry\\t%s\\t%s\\n' \"${e##*/}\" \"$(sed -n 's/^options.*init=\\([^ ]*\\).*/\\1/p' \"$e\" | head -n 1)\"\ndone\n\
            printf 'default\\t%s\\n' \"$(sed -n 's/^default[[:space:]][[:space:]]*//p' \"$esp/loader/loader.conf\" | tail -n 1)\"\n";
        let o = self.ssh.run(&["sh", "-c", listing], None, timeout).map_err(|e| transport_error(&e))?;
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

/// A built system toplevel, checked with `fleetgate-check`.
pub struct BuiltSystem {
    toplevel: SystemToplevel,
    needed: Vec<(String, RootSpec)>,
}

impl BuiltSystem {
    /// Reads the system and its fstab.
    ///
    /// # Errors
    /// [`fleetgate_system::SystemError`] when it is not a readable system.
    pub fn open(path: &Path) -> Result<BuiltSystem, fleetgate_system::SystemError> {
        let toplevel = SystemToplevel::open(path)?;
        let mut needed: Vec<(String, RootSpec)> = Vec::new();
        for entry in toplevel.fstab()? {
            let spec = entry.device();
            if !matches!(spec, RootSpec::Other(_)) {
                needed.push((entry.mount_point.clone(), spec));
            }
        }
        if let Some(spec) = toplevel.root_filesystem()?.device() {
            if !matches!(spec, RootSpec::Other(_)) && !needed.iter().any(|(m, s)| m == "/" && *s == spec) {
                needed.push(("/".into(), spec));
            }
        }
        Ok(BuiltSystem { toplevel, needed })
    }
}

impl SystemCheck for BuiltSystem {
    fn check(&self, facts: &Facts, deadline: Duration) -> Report {
        let options =
            fleetgate_check::Options { no_closure_diff: true, deadline: Some(deadline), ..Default::default() };
        fleetgate_check::check(&self.toplevel, facts, &options)
    }

    fn needed_devices(&self) -> Vec<(String, RootSpec)> {
        self.needed.clone()
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
    fn looks_and_disk_users_parse() {
        let look =
            parse_look("boot_id\tb1\ncmdline\tinit=/x fleetgate.install=ab\nkernel\t6.12.1\nmount\t/dev/vda1\t/boot\n")
                .expect("look");
        assert_eq!(look.boot_id, "b1");
        assert_eq!(look.mounts, [MountLine { source: "/dev/vda1".into(), mount_point: "/boot".into() }]);
        assert!(parse_look("cmdline\tx\n").is_err(), "no boot id, no look");
        let users = parse_disk_users("holder\t/dev/vda2\tdm-0\tvg-root\nmount\t/dev/vda1\t/mnt/old\nswap\t/dev/vda3\nholder\t/dev/vdb1\tmd127\t\n")
            .expect("users");
        assert_eq!(users[0].describe(), "/dev/vda2 is held by dm-0 (vg-root)");
        assert_eq!(users[1].describe(), "/dev/vda1 is mounted at /mnt/old");
        assert_eq!(users[2].describe(), "/dev/vda3 is in use as swap");
        assert_eq!(users[3].describe(), "/dev/vdb1 is held by md127");
        assert!(parse_disk_users("missing\t/dev/sdz\n").is_err());
    }

    fn look(boot_id: &str) -> Look {
        Look { boot_id: boot_id.into(), ..Look::default() }
    }

    /// Regression (seed 001 on a TCG guest): the old OS answered every
    /// probe, but the last probe started with too little time left failed,
    /// and the wait reported "did not answer" (unknown) instead of "same
    /// boot" (old OS untouched).
    #[test]
    fn a_probe_starved_of_time_does_not_overwrite_the_last_answer() {
        let pacing = Pacing { min_probe: Duration::from_millis(150), pause: Duration::from_millis(20) };
        let mut probes = 0;
        let waited = poll_for_boot("old", Duration::from_millis(400), pacing, |left| {
            probes += 1;
            if left < Duration::from_millis(150) {
                Err(TargetError::Lost("ssh: connect timed out".into()))
            } else {
                std::thread::sleep(Duration::from_millis(30));
                Ok(look("old"))
            }
        });
        assert!(matches!(waited, Waited::SameBoot(ref l) if l.boot_id == "old"), "{waited:?}");
        assert!(probes >= 2, "{probes}");
        let waited = poll_for_boot("old", Duration::from_millis(400), pacing, |_| Ok(look("new")));
        assert!(matches!(waited, Waited::NewBoot(ref l) if l.boot_id == "new"), "{waited:?}");
        let waited =
            poll_for_boot("old", Duration::from_millis(100), pacing, |_| Err(TargetError::Lost("down".into())));
        assert!(matches!(waited, Waited::Unreachable(ref e) if e.contains("down")), "{waited:?}");
    }

    #[test]
    fn kexec_sources() {
        assert_eq!(KexecSource::parse("https://x/k.tar.gz"), Ok(KexecSource::Url("https://x/k.tar.gz".into())));
        assert_eq!(KexecSource::parse("./k.tar"), Ok(KexecSource::Path("./k.tar".into())));
        assert!(KexecSource::parse("./k.img").is_err());
    }

    /// The look script, run on this machine: its boot id and mounts.
    #[test]
    fn the_look_script_reads_this_machine() {
        let out = fleetgate_transport::Local.run(&["sh", "-c", LOOK], None, Duration::from_secs(30)).expect("sh runs");
        let look = parse_look(&out.stdout_text()).expect("a look");
        let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").expect("boot id");
        assert_eq!(look.boot_id, boot_id.trim());
        assert_eq!(look.cmdline, std::fs::read_to_string("/proc/cmdline").expect("cmdline").trim());
        assert!(look.mounts.iter().any(|m| m.mount_point == "/"), "{:?}", look.mounts);
    }

    /// The disk-users script, run on this machine against the disk holding
    /// `/` (when `/` is on a block device): it names that mount.
    #[test]
    fn the_disk_users_script_names_the_mounted_root() {
        let mounts = std::fs::read_to_string("/proc/self/mounts").expect("mounts");
        let root = mounts.lines().rev().filter_map(|l| l.split_once(' ')).find(|(_, rest)| rest.starts_with("/ "));
        let Some((source, _)) = root.filter(|(s, _)| s.starts_with("/dev/") && Path::new(s).exists()) else {
            eprintln!("skipped: / is not on a block device here");
            return;
        };
        let argv = ["sh", "-c", DISK_USERS, "sh", source];
        let out = fleetgate_transport::Local.run(&argv, None, Duration::from_secs(30)).expect("sh runs");
        let users = parse_disk_users(&out.stdout_text()).expect("users");
        let real = std::fs::canonicalize(source).expect("canonical");
        assert!(
            users
                .iter()
                .any(|u| Path::new(&u.device) == real && u.user == DiskUse::Mounted { mount_point: "/".into() }),
            "{users:?}"
        );
        let missing = fleetgate_transport::Local
            .run(&["sh", "-c", DISK_USERS, "sh", "/dev/fleetgate-no-such-disk"], None, Duration::from_secs(30))
            .expect("sh runs");
        assert!(parse_disk_users(&missing.stdout_text()).is_err());
    }

    #[test]
    fn the_mnt_store_uri_survives_parsing() {
        let uri = "ssh://root@192.0.2.10?remote-store=local%3Froot=%2Fmnt";
        let store = StoreUri::parse(uri).expect("valid");
        assert_eq!(store.to_string(), uri, "nixos-anywhere's form, passed to nix copy as is");
    }
}
