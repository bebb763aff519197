//! `nix copy --to ssh://…` of a system closure, with the host's ssh options
//! passed the way deploy-rs does (`NIX_SSHOPTS`), and its progress on the
//! event bus.
//!
//! Progress: before the copy, the target is asked which paths of the
//! closure it lacks (one `nix-store --check-validity --print-invalid` over
//! fleetgate's own SSH connection), whose NAR sizes make the bytes to
//! expect; then `nix copy --log-format internal-json` reports each path as
//! Nix sends it ([`fleetgate_nix::copy_progress`]). The bus gets
//! [`EventKind::CopyProgress`] at most every [`PROGRESS_EVERY`], then one
//! [`EventKind::Copied`].

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use fleetgate_nix::{Closures, CopyOptions, Nix, PathInfo, StoreUri};

use crate::events::{Bus, EventKind};
use crate::inventory::Host;
use fleetgate_apply::scripts::Layout;

use crate::remote::Machine;

/// `NIX_SSHOPTS` for a host: its ssh options and port, space-separated
/// (Nix splits the variable on spaces).
#[must_use]
pub fn nix_sshopts(host: &Host) -> String {
    let mut opts = host.ssh_opts.clone();
    if let Some(port) = host.ssh_port {
        opts.extend(["-p".to_owned(), port.to_string()]);
    }
    opts.join(" ")
}

/// [`nix_sshopts`] riding the deploy's shared connection: `nix copy`'s ssh
/// joins the ControlMaster at `control_path` instead of logging in again
/// (issue 15: a login less per host; Nix's `ssh://` store starts no master
/// of its own with the default `max-connections = 1`). A path with a space
/// cannot pass through `NIX_SSHOPTS`: then the copy logs in by itself.
#[must_use]
pub fn nix_sshopts_shared(host: &Host, control_path: Option<&std::path::Path>) -> String {
    let mut opts = nix_sshopts(host);
    if let Some(path) = control_path.and_then(std::path::Path::to_str).filter(|p| !p.contains(char::is_whitespace)) {
        if !opts.is_empty() {
            opts.push(' ');
        }
        opts.push_str(&format!("-o ControlMaster=no -o ControlPath={path}"));
    }
    opts
}

/// The `ssh://` store of a host (an IPv6 address in brackets).
///
/// # Errors
/// A host name `ssh` would misread.
pub fn store_uri(host: &Host) -> Result<String, String> {
    host.ssh_target().map(|t| t.store_uri()).map_err(|e| e.to_string())
}

/// Below this many free bytes on the target's `/nix` after a failed copy,
/// the failure is reported as a full disk (Nix often only says "disk I/O
/// error" from SQLite).
pub const LOW_SPACE: u64 = 16 << 20;

/// The shortest time between two [`EventKind::CopyProgress`] of a host.
pub const PROGRESS_EVERY: Duration = Duration::from_millis(250);

/// What the copy asks the target itself (not through Nix).
pub trait Probe {
    /// Free bytes on the target's `/nix`; asked only when the copy failed.
    fn free_bytes(&mut self) -> Option<u64>;
    /// Which of `paths` the target lacks; `None` when that cannot be told
    /// (the copy then goes on without a total).
    fn lacking(&mut self, paths: &[String]) -> Option<BTreeSet<String>>;
    /// The control socket of a connection to the target the copy may ride.
    fn control_path(&mut self) -> Option<std::path::PathBuf> {
        None
    }
}

/// A [`Probe`] over a target's shared SSH connection.
pub struct TargetProbe<'t> {
    /// The target.
    pub machine: &'t mut Machine,
    /// The timeout of each question.
    pub timeout: Duration,
}

impl Probe for TargetProbe<'_> {
    fn free_bytes(&mut self) -> Option<u64> {
        self.machine
            .sh_ok(
                "asking for free space",
                &format!("{}set -- $(stat -f -c '%a %S' /nix/store); echo $(($1 * $2))", Layout::default().tools(&[])),
                self.timeout,
            )
            .ok()
            .and_then(|s| s.trim().parse().ok())
    }

    fn lacking(&mut self, paths: &[String]) -> Option<BTreeSet<String>> {
        let out = self.machine.sh_ok("asking which paths are lacking", &lacking_script(paths)?, self.timeout).ok()?;
        let asked: BTreeSet<&str> = paths.iter().map(String::as_str).collect();
        Some(out.lines().filter(|l| asked.contains(l)).map(str::to_owned).collect())
    }

    fn control_path(&mut self) -> Option<std::path::PathBuf> {
        self.machine.connector().control_path()
    }
}

/// The script that prints which of `paths` the target lacks: the paths go
/// in a here-document (the script travels on stdin, so a closure of
/// thousands of paths is no argument-length problem). `None` if a path is
/// not a plain store path.
#[must_use]
pub fn lacking_script(paths: &[String]) -> Option<String> {
    let plain = |p: &String| {
        p.starts_with("/nix/store/") && p.bytes().all(|b| b.is_ascii_alphanumeric() || b"/+-._?=".contains(&b))
    };
    if !paths.iter().all(plain) {
        return None;
    }
    let mut script = Layout::default().tools(&[]);
    script.push_str("xargs -r nix-store --check-validity --print-invalid <<'FLEETGATE_PATHS'\n");
    for p in paths {
        let _ = writeln!(script, "{p}");
    }
    script.push_str("FLEETGATE_PATHS\n");
    Some(script)
}

/// The closures of a run's systems, read with one `nix path-info
/// --recursive` by the first host that copies (issue 15: not one per host;
/// a run with nothing to copy reads nothing).
#[derive(Debug, Default)]
pub struct FleetClosures {
    systems: Vec<String>,
    read: OnceLock<Option<Closures>>,
}

impl FleetClosures {
    /// The closures of `systems`, read when first asked.
    #[must_use]
    pub fn new(systems: Vec<String>) -> FleetClosures {
        FleetClosures { systems, read: OnceLock::new() }
    }

    /// The closure of `system`; `None` (Nix is asked per host) when the
    /// fleet's could not be read or does not hold it.
    pub fn closure_of(&self, nix: &Nix, system: &str) -> Option<Vec<PathInfo>> {
        let closures = self.read.get_or_init(|| {
            nix.path_info(None, &self.systems, true, false).ok().map(|(infos, _)| Closures::new(infos))
        });
        closures.as_ref()?.closure(&[system.to_owned()])
    }
}

/// One host's copy.
pub struct CopyJob<'a> {
    /// Nix on this machine.
    pub nix: &'a Nix,
    /// The target.
    pub host: &'a Host,
    /// The system to copy (its closure goes).
    pub system: &'a str,
    /// `--substitute-on-destination`.
    pub substitute_on_destination: bool,
    /// Free bytes on the target's `/nix` before the copy (from its facts).
    pub free_bytes: Option<u64>,
    /// The deadline of the whole copy.
    pub timeout: Duration,
    /// Where progress goes.
    pub bus: &'a Bus,
    /// The run's closures, if it read them for every host.
    pub closures: Option<&'a FleetClosures>,
}

/// What a copy sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Copied {
    /// NAR bytes.
    pub bytes: u64,
    /// Store paths.
    pub paths: u64,
}

/// Copies the system's closure to the host, with progress on the bus.
///
/// # Errors
/// A message saying what failed and what to do; a full disk is recognised
/// (by Nix's message, or the free space [`Probe::free_bytes`] finds after).
pub fn copy(job: &CopyJob<'_>, probe: &mut dyn Probe) -> Result<Copied, String> {
    let host = job.host;
    let uri = store_uri(host)?;
    let store = StoreUri::parse(&uri).map_err(|e| e.to_string())?;
    let sshopts = nix_sshopts_shared(host, probe.control_path().as_deref());
    let nix = job.nix.clone().with_env("NIX_SSHOPTS", sshopts).with_timeout(job.timeout);
    let options = CopyOptions { substitute_on_destination: job.substitute_on_destination, ..CopyOptions::default() };
    let mut throttle = Throttle::default();
    let roots = [job.system.to_owned()];
    let mut lacking = |paths: &[String]| probe.lacking(paths);
    let mut progress = |p: &fleetgate_nix::CopyProgress| {
        if throttle.due() {
            job.bus.send(
                &host.name,
                EventKind::CopyProgress { done_bytes: p.done_bytes, expected_bytes: p.expected_bytes },
            );
        }
    };
    let result = match job.closures.and_then(|c| c.closure_of(job.nix, job.system)) {
        Some(closure) => nix.copy_closure_with_progress(&store, &roots, closure, &options, &mut lacking, &mut progress),
        None => nix.copy_to_with_progress(&store, &roots, &options, &mut lacking, &mut progress),
    };
    match result {
        Ok(end) => {
            let copied = Copied { bytes: end.done_bytes, paths: end.paths_done };
            job.bus.send(&host.name, EventKind::Copied { bytes: copied.bytes, paths: copied.paths });
            Ok(copied)
        }
        Err(e) => {
            let text = e.to_string();
            let after = probe.free_bytes();
            Err(if text.contains("No space left on device") || after.is_some_and(|f| f < LOW_SPACE) {
                format!(
                    "the target ran out of disk space during the copy ({} free on /nix before it, {} after); nothing was activated. \
                     Free space on the host (e.g. `nix-collect-garbage --delete-older-than 30d`) and deploy again:\n{}",
                    job.free_bytes.map_or_else(|| "unknown".to_owned(), human_bytes),
                    after.map_or_else(|| "unknown".to_owned(), human_bytes),
                    tail(&text)
                )
            } else {
                format!("nix copy to {uri} failed; nothing was activated: {}", tail(&text))
            })
        }
    }
}

/// Lets a progress report through at most every [`PROGRESS_EVERY`]; the
/// first one (the total, before any byte) always goes.
#[derive(Default)]
struct Throttle {
    last: Option<Instant>,
}

impl Throttle {
    fn due(&mut self) -> bool {
        let now = Instant::now();
        if self.last.is_some_and(|t| now.duration_since(t) < PROGRESS_EVERY) {
            return false;
        }
        self.last = Some(now);
        true
    }
}

fn tail(text: &str) -> String {
    fleetgate_process::tail(text.trim().as_bytes())
}

/// `1.5 GiB`.
#[must_use]
pub fn human_bytes(n: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    #[allow(clippy::cast_precision_loss)]
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < units.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 { format!("{n} B") } else { format!("{v:.1} {}", units[i]) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sshopts_and_store() {
        let host = Host {
            name: "web1".into(),
            hostname: "10.0.0.1".into(),
            ssh_user: Some("root".into()),
            ssh_port: Some(2222),
            ssh_opts: vec!["-F".into(), "/lab/ssh_config".into()],
            tags: vec![],
            power_cycle: None,
            health: crate::config::HealthSettings::default(),
        };
        assert_eq!(nix_sshopts(&host), "-F /lab/ssh_config -p 2222");
        assert_eq!(
            nix_sshopts_shared(&host, Some(std::path::Path::new("/tmp/fleetgate-ssh-x/m"))),
            "-F /lab/ssh_config -p 2222 -o ControlMaster=no -o ControlPath=/tmp/fleetgate-ssh-x/m"
        );
        assert_eq!(nix_sshopts_shared(&host, None), "-F /lab/ssh_config -p 2222");
        let spaced = std::path::Path::new("/tmp/my dir/m");
        assert_eq!(
            nix_sshopts_shared(&host, Some(spaced)),
            "-F /lab/ssh_config -p 2222",
            "NIX_SSHOPTS splits on spaces"
        );
        assert_eq!(store_uri(&host).as_deref(), Ok("ssh://root@10.0.0.1"));
        let v6 = Host { hostname: "fd00::1".into(), ..host.clone() };
        assert_eq!(store_uri(&v6).as_deref(), Ok("ssh://root@[fd00::1]"));
        let evil = Host { hostname: "-oProxyCommand=touch /tmp/pwned".into(), ..host.clone() };
        assert!(store_uri(&evil).is_err());
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(12_897_485), "12.3 MiB");
        assert_eq!(human_bytes(10), "10 B");
    }

    #[test]
    fn the_lacking_script_takes_paths_in_a_here_document() {
        let paths = vec![
            "/nix/store/gh1w7al1y2nmz17pdfs918nln960ils9-etc".to_owned(),
            "/nix/store/zqmyxhdc1445q25jf2ibvmx3620c8ayz-initrd-linux-6.1.0-56-amd64".to_owned(),
        ];
        assert_eq!(
            lacking_script(&paths).as_deref(),
            Some(
                "PATH=/run/current-system/sw/bin; export PATH\n\
                 xargs -r nix-store --check-validity --print-invalid <<'FLEETGATE_PATHS'\n\
                 /nix/store/gh1w7al1y2nmz17pdfs918nln960ils9-etc\n\
                 /nix/store/zqmyxhdc1445q25jf2ibvmx3620c8ayz-initrd-linux-6.1.0-56-amd64\n\
                 FLEETGATE_PATHS\n"
            )
        );
        // Nothing that could end the here-document or reach the shell.
        assert_eq!(lacking_script(&["/nix/store/x\nFLEETGATE_PATHS\nrm -rf /".to_owned()]), None);
        assert_eq!(lacking_script(&["/tmp/x".to_owned()]), None);
    }

    #[test]
    fn progress_is_throttled_but_the_first_report_goes() {
        let mut t = Throttle::default();
        assert!(t.due());
        assert!(!t.due());
        std::thread::sleep(PROGRESS_EVERY);
        assert!(t.due());
    }
}
