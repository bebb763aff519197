//! The scripts fleetgate runs on the target to look at it (its boot, its
//! mounts, what uses its disks), their parsers, and how a failed call reads.
//! POSIX `sh` only, `PATH` set to what NixOS and other Linuxes have: they
//! run in the old OS, in the installer and on the installed system.

use fleetgate_transport::{Output, TransportError};

use crate::target::{DiskUse, DiskUser, Look, MountLine, TargetError};

pub(crate) fn transport_error(e: &TransportError) -> TargetError {
    let line = e.to_string().lines().next().unwrap_or_default().to_owned();
    match e {
        TransportError::Unreachable { .. } | TransportError::Timeout { .. } => TargetError::Lost(line),
        _ => TargetError::Failed(line),
    }
}

pub(crate) fn failed(what: &str, o: &Output) -> TargetError {
    let mut text = o.stdout_text();
    text.push_str(&String::from_utf8_lossy(&o.stderr));
    TargetError::Failed(format!(
        "{what} failed ({}):\n{}",
        o.status.map_or_else(|| "killed".to_owned(), |s| format!("exit {s}")),
        fleetgate_process::tail(text.trim().as_bytes())
    ))
}

/// Parses the look script's output.
pub(crate) fn parse_look(text: &str) -> Result<Look, TargetError> {
    let mut look = Look::default();
    for line in text.lines() {
        let f: Vec<&str> = line.splitn(3, '\t').collect();
        match f.as_slice() {
            ["boot_id", v] => v.trim().clone_into(&mut look.boot_id),
            ["cmdline", v] => v.trim().clone_into(&mut look.cmdline),
            ["kernel", v] => v.trim().clone_into(&mut look.kernel_release),
            ["booted", v] => look.booted_system = Some((*v).to_owned()),
            ["kexec_loaded", v] => {
                look.kexec_loaded = match v.trim() {
                    "1" => Some(true),
                    "0" => Some(false),
                    _ => None,
                };
            }
            ["mount", s, m] => look.mounts.push(MountLine { source: (*s).to_owned(), mount_point: (*m).to_owned() }),
            _ => {}
        }
    }
    if look.boot_id.is_empty() {
        return Err(TargetError::Failed("the target did not say its boot id".into()));
    }
    Ok(look)
}

pub(crate) const LOOK: &str = "PATH=/run/current-system/sw/bin:/usr/bin:/bin:/usr/sbin:/sbin; export PATH\n\
    printf 'boot_id\\t%s\\n' \"$(cat /proc/sys/kernel/random/boot_id)\"\n\
    printf 'cmdline\\t%s\\n' \"$(cat /proc/cmdline)\"\n\
    printf 'kernel\\t%s\\n' \"$(uname -r)\"\n\
    [ -e /run/booted-system ] && printf 'booted\\t%s\\n' \"$(readlink -f /run/booted-system)\"\n\
    [ -r /sys/kernel/kexec_loaded ] && printf 'kexec_loaded\\t%s\\n' \"$(cat /sys/kernel/kexec_loaded)\"\n\
    while read -r src mp rest; do printf 'mount\\t%s\\t%s\\n' \"$src\" \"$mp\"; done < /proc/self/mounts\nexit 0\n";

/// What uses each disk given as an argument, or its partitions: holders
/// (`/sys/class/block/X/holders`, dm's `dm/name`), mounts, swaps.
pub(crate) const DISK_USERS: &str = "PATH=/run/current-system/sw/bin:/usr/bin:/bin:/usr/sbin:/sbin; export PATH\n\
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

#[cfg(test)]
mod tests {
    use super::*;

    use std::path::Path;
    use std::time::Duration;

    use fleetgate_transport::Transport as _;

    #[test]
    fn looks_and_disk_users_parse() {
        let look =
            parse_look("boot_id\tb1\ncmdline\tinit=/x fleetgate.install=ab\nkernel\t6.12.1\nmount\t/dev/vda1\t/boot\n")
                .expect("look");
        assert_eq!(look.boot_id, "b1");
        assert_eq!(look.mounts, [MountLine { source: "/dev/vda1".into(), mount_point: "/boot".into() }]);
        assert!(parse_look("cmdline\tx\n").is_err(), "no boot id, no look");
        assert_eq!(look.kexec_loaded, None, "not said: not known");
        let loaded = |v: &str| parse_look(&format!("boot_id\tb\nkexec_loaded\t{v}\n")).expect("look").kexec_loaded;
        assert_eq!((loaded("1"), loaded("0"), loaded("yes")), (Some(true), Some(false), None));
        let users = parse_disk_users("holder\t/dev/vda2\tdm-0\tvg-root\nmount\t/dev/vda1\t/mnt/old\nswap\t/dev/vda3\nholder\t/dev/vdb1\tmd127\t\n")
            .expect("users");
        assert_eq!(users[0].describe(), "/dev/vda2 is held by dm-0 (vg-root)");
        assert_eq!(users[1].describe(), "/dev/vda1 is mounted at /mnt/old");
        assert_eq!(users[2].describe(), "/dev/vda3 is in use as swap");
        assert_eq!(users[3].describe(), "/dev/vdb1 is held by md127");
        assert!(parse_disk_users("missing\t/dev/sdz\n").is_err());
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
        let loaded = std::fs::read_to_string("/sys/kernel/kexec_loaded").ok().map(|t| t.trim() == "1");
        assert_eq!(look.kexec_loaded, loaded);
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
}
