//! What a VM's serial console says about its boot. The supervisor reads the
//! serial port line by line (firmware, boot loader, kernel, stage 1, systemd
//! all write there) and recognises four things:
//!
//! - the lab's own marker, written by the guest's `fleetgate-lab-ready.service`
//!   once sshd runs: `@@fleetgate-lab ready <boot_id> <booted-system> [<entry>]`;
//! - stage 1 waiting for its root device, as systemd prints it (and as the
//!   fixture's stage 1 prints it every second): `A start job is running for
//!   /dev/disk/by-label/NIXOS_ROOT (12s / no limit)`: past [`HUNG_AFTER`]
//!   seconds the host counts as hung;
//! - emergency mode (systemd's and stage 1's own wording);
//! - a kernel panic.

use std::time::Duration;

/// The marker's prefix; the rest of the line is the boot's identity.
pub const READY_PREFIX: &str = "@@fleetgate-lab ready ";

/// How long stage 1 may wait for the root device before the host counts as
/// hung. A VM's disk appears within a second or two even under TCG; the
/// stage 1 of the incident waits forever.
pub const HUNG_AFTER: Duration = Duration::from_secs(10);

/// Something the console said about the boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sign {
    /// The guest is up and sshd serves.
    Ready { boot_id: String, toplevel: String, entry: Option<String> },
    /// Stage 1 has waited `seconds` for `device`.
    WaitingForRoot { device: String, seconds: u64 },
    /// The boot gave up and waits for an operator.
    Emergency(String),
    /// The kernel panicked.
    Panic(String),
}

/// Removes terminal escape sequences (systemd colours its status lines,
/// firmware and GRUB position the cursor) and carriage returns.
pub fn plain(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => match chars.peek() {
                Some('[') => {
                    chars.next();
                    // Parameters and intermediates, then one final byte.
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                }
                Some(_) => {
                    chars.next();
                }
                None => {}
            },
            '\r' => {}
            c => out.push(c),
        }
    }
    out
}

/// What `line` (as read from the serial port) says, if anything.
pub fn sign(line: &str) -> Option<Sign> {
    let line = plain(line);
    // A login prompt may share the line: the marker counts wherever it starts.
    if let Some(rest) = line.find(READY_PREFIX).map(|at| &line[at + READY_PREFIX.len()..]) {
        let mut words = rest.split_whitespace();
        let boot_id = words.next()?.to_owned();
        let toplevel = words.next()?.to_owned();
        let entry = words.next().map(str::to_owned);
        return Some(Sign::Ready { boot_id, toplevel, entry });
    }
    if let Some(at) = line.find("A start job is running for ") {
        let rest = &line[at + "A start job is running for ".len()..];
        let (device, times) = rest.rsplit_once(" (")?;
        let seconds = times.split(['s', ' ']).next()?.parse().ok()?;
        return Some(Sign::WaitingForRoot { device: device.to_owned(), seconds });
    }
    if line.contains("You are in emergency mode") || line.contains("An error occurred in stage 1 of the boot process") {
        return Some(Sign::Emergency(line.trim().to_owned()));
    }
    if line.contains("Kernel panic - not syncing") {
        return Some(Sign::Panic(line.trim().to_owned()));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ready_marker_carries_boot_id_system_and_entry() {
        assert_eq!(
            sign("@@fleetgate-lab ready 1f0e-aa /nix/store/abc-nixos-system-vm1 nixos-generation-1.conf\r"),
            Some(Sign::Ready {
                boot_id: "1f0e-aa".into(),
                toplevel: "/nix/store/abc-nixos-system-vm1".into(),
                entry: Some("nixos-generation-1.conf".into())
            })
        );
        assert_eq!(
            sign("@@fleetgate-lab ready 1f0e-aa /nix/store/abc"),
            Some(Sign::Ready { boot_id: "1f0e-aa".into(), toplevel: "/nix/store/abc".into(), entry: None })
        );
        assert_eq!(sign("@@fleetgate-lab ready"), None);
        assert_eq!(
            sign("vm1 login: @@fleetgate-lab ready b00t /nix/store/x "),
            Some(Sign::Ready { boot_id: "b00t".into(), toplevel: "/nix/store/x".into(), entry: None })
        );
    }

    #[test]
    fn stage_1_waiting_is_read_from_systemd_s_wording_with_or_without_colours() {
        let line = "[ ***  ] A start job is running for /dev/disk/by-label/NIXOS_ROOT (12s / no limit)";
        assert_eq!(
            sign(line),
            Some(Sign::WaitingForRoot { device: "/dev/disk/by-label/NIXOS_ROOT".into(), seconds: 12 })
        );
        let coloured = "\u{1b}[0;31m*\u{1b}[0;1;31m*\u{1b}[0m] A start job is running for /dev/vda2 (3s / 1min 30s)\r";
        assert_eq!(sign(coloured), Some(Sign::WaitingForRoot { device: "/dev/vda2".into(), seconds: 3 }));
    }

    #[test]
    fn emergency_and_panic_are_recognised_and_ordinary_lines_are_not() {
        assert!(matches!(sign("You are in emergency mode. After logging in, type"), Some(Sign::Emergency(_))));
        assert!(matches!(
            sign("An error occurred in stage 1 of the boot process. Waiting forever."),
            Some(Sign::Emergency(_))
        ));
        assert!(matches!(
            sign("[    2.1] Kernel panic - not syncing: VFS: Unable to mount root fs"),
            Some(Sign::Panic(_))
        ));
        assert_eq!(sign("\u{1b}[0;32m  OK  \u{1b}[0m] Reached target multi-user.target"), None);
    }

    #[test]
    fn escapes_are_removed() {
        assert_eq!(plain("\u{1b}[2J\u{1b}[01;01HBdsDxe: loading\r"), "BdsDxe: loading");
        assert_eq!(plain("\u{1b}cSeaBIOS"), "SeaBIOS");
    }
}
