//! `fleetgate-lab status`'s table: per host, how it is reached, what it
//! booted and what it runs now. After a live switch these differ (the host
//! runs a newer system than it booted, and a reboot boots the default
//! entry); the table says so instead of showing only one of them.

use std::fmt::Write as _;

/// One host's line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub host: String,
    /// `netns` or `vm`.
    pub machine: String,
    pub address: String,
    pub disk: String,
    pub bootloader: String,
    pub power: String,
    /// The system the host booted (`/run/booted-system`).
    pub booted: Option<String>,
    /// The system it runs now (`/run/current-system`), if it could be asked.
    pub current: Option<String>,
    /// Why it is hung, in emergency mode or off.
    pub reason: Option<String>,
}

/// The store path without `/nix/store/` and with the hash cut to 8
/// characters: `x7x3rmkj-nixos-system-vm1-25.05`. Generations of one host
/// share their name, so the hash is what tells them apart.
pub fn short(path: &str) -> String {
    let base = path.strip_prefix("/nix/store/").unwrap_or(path);
    match base.split_once('-') {
        Some((hash, name)) if hash.len() > 8 => format!("{}-{name}", &hash[..8]),
        _ => base.to_owned(),
    }
}

/// The table, with a note under it when a host runs something else than
/// it booted.
pub fn render(rows: &[Row]) -> String {
    let mut lines = vec![[
        "HOST".to_owned(),
        "MACHINE".to_owned(),
        "ADDRESS".to_owned(),
        "DISK".to_owned(),
        "BOOTLOADER".to_owned(),
        "POWER".to_owned(),
        "BOOTED".to_owned(),
        "CURRENT".to_owned(),
    ]];
    let mut switched = false;
    for row in rows {
        let booted = match (&row.booted, &row.reason) {
            (Some(booted), _) => short(booted),
            (None, Some(reason)) => reason.clone(),
            (None, None) => "-".to_owned(),
        };
        let current = match (&row.current, &row.booted) {
            (Some(current), Some(booted)) if current == booted => "= booted".to_owned(),
            (Some(current), _) => {
                switched = true;
                format!("{} *", short(current))
            }
            (None, _) => "-".to_owned(),
        };
        lines.push([
            row.host.clone(),
            row.machine.clone(),
            row.address.clone(),
            row.disk.clone(),
            row.bootloader.clone(),
            row.power.clone(),
            booted,
            current,
        ]);
    }
    let mut widths = [0usize; 8];
    for line in &lines {
        for (width, cell) in widths.iter_mut().zip(line) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for line in &lines {
        let mut text = String::new();
        for (i, (cell, width)) in line.iter().zip(widths).enumerate() {
            if i + 1 == line.len() {
                text.push_str(cell);
            } else {
                let _ = write!(text, "{cell:<width$}  ");
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    }
    if switched {
        out.push_str("* switched live since it booted: it runs CURRENT, a reboot boots its default entry\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(host: &str, booted: Option<&str>, current: Option<&str>) -> Row {
        Row {
            host: host.into(),
            machine: "netns".into(),
            address: "10.203.1.11".into(),
            disk: "virtio".into(),
            bootloader: "systemd-boot".into(),
            power: "running".into(),
            booted: booted.map(str::to_owned),
            current: current.map(str::to_owned),
            reason: None,
        }
    }

    #[test]
    fn booted_and_current_are_both_shown_and_a_live_switch_is_flagged() {
        let one = "/nix/store/x7x3rmkjlx4zid41idc82bcm08yz8sgq-nixos-system-host1-25.05";
        let two = "/nix/store/wy8jn2hnsr2vwhcbis6i4j8bhc89lbnw-nixos-system-host1-25.05";
        let mut hung = row("host3", None, None);
        hung.power = "hung".into();
        hung.reason = Some("stage 1 waits for /dev/disk/by-label/NIXOS_ROOT".into());
        let table = render(&[row("host1", Some(one), Some(one)), row("host2", Some(one), Some(two)), hung]);
        assert_eq!(
            table,
            "HOST   MACHINE  ADDRESS      DISK    BOOTLOADER    POWER    BOOTED                                           CURRENT\n\
             host1  netns    10.203.1.11  virtio  systemd-boot  running  x7x3rmkj-nixos-system-host1-25.05                = booted\n\
             host2  netns    10.203.1.11  virtio  systemd-boot  running  x7x3rmkj-nixos-system-host1-25.05                wy8jn2hn-nixos-system-host1-25.05 *\n\
             host3  netns    10.203.1.11  virtio  systemd-boot  hung     stage 1 waits for /dev/disk/by-label/NIXOS_ROOT  -\n\
             * switched live since it booted: it runs CURRENT, a reboot boots its default entry\n"
        );
    }

    #[test]
    fn without_a_live_switch_there_is_no_note() {
        let one = "/nix/store/x7x3rmkjlx4zid41idc82bcm08yz8sgq-nixos-system-host1-25.05";
        assert!(!render(&[row("host1", Some(one), Some(one))]).contains('*'));
        assert_eq!(short("/nix/store/abc-x"), "abc-x");
    }
}
