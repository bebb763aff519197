//! Boot a generation once while the previous one stays the default — the
//! heart of the verified reboot — for the two boot loaders NixOS installs:
//!
//! - **systemd-boot**: `bootctl set-oneshot nixos-generation-N.conf`
//!   (the `LoaderEntryOneShot` EFI variable, consumed by the boot that uses
//!   it). When `loader.conf` does not name the previous generation's entry
//!   exactly (boot counting makes it a glob) or `LoaderEntryDefault` is set,
//!   the default is pinned to the previous entry with `bootctl set-default`
//!   for the trial and restored afterwards.
//! - **GRUB** (NixOS's `grub.cfg`, `default=0` plus the `next_entry`
//!   header): `grub-reboot 'NixOS - All configurations>NixOS - Configuration
//!   N (…)'`, the title read from `grub.cfg`; the first entry, the default,
//!   must be the previous system.
//!
//! Everything here is a shell script run on the target; the functions
//! only write them.

use fleetgate_facts::{BootInfo, Loader};

use crate::remote::q;

/// The EFI variable that pins the default entry.
pub const DEFAULT_VAR: &str = "LoaderEntryDefault";

/// How to boot a generation once on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootOnce {
    /// systemd-boot on the ESP mounted at `esp`.
    SystemdBoot {
        /// The ESP mount point.
        esp: String,
        /// `LoaderEntryDefault` before the deploy.
        previous_default: Option<String>,
    },
    /// GRUB with `grub.cfg` at `cfg`.
    Grub {
        /// `grub.cfg`.
        cfg: String,
    },
}

/// Exit status of an arm script that found the boot loader unable to boot
/// once (as opposed to a failing command).
pub const CANNOT: i32 = 3;

impl BootOnce {
    /// The way to boot once on a host with this boot loader, if there is one.
    #[must_use]
    pub fn for_host(boot: &BootInfo) -> Option<BootOnce> {
        match boot.loader? {
            Loader::SystemdBoot => Some(BootOnce::SystemdBoot {
                esp: boot.location.clone().unwrap_or_else(|| "/boot".to_owned()),
                previous_default: boot.efi_vars.get(DEFAULT_VAR).cloned().filter(|v| !v.is_empty()),
            }),
            Loader::Grub => {
                Some(BootOnce::Grub { cfg: boot.location.clone().unwrap_or_else(|| "/boot/grub/grub.cfg".to_owned()) })
            }
        }
    }

    /// The boot loader's name.
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            BootOnce::SystemdBoot { .. } => "systemd-boot",
            BootOnce::Grub { .. } => "GRUB",
        }
    }

    /// Run after the *previous* system's `switch-to-configuration boot`
    /// put generation `new_gen` in the menu: makes it boot once while the
    /// previous generation stays the default. Exits [`CANNOT`] with a
    /// message when that cannot be done.
    #[must_use]
    pub fn arm(&self, new_gen: u64, old_gen: Option<u64>, old_system: &str) -> String {
        match self {
            BootOnce::SystemdBoot { esp, previous_default } => {
                let old_id = old_gen.map(|n| format!("nixos-generation-{n}.conf")).unwrap_or_default();
                format!(
                    r#"esp={esp}
entries="$esp/loader/entries"
has() {{ ls "$entries" 2>/dev/null | grep -Eq "^nixos-generation-$1(\+[0-9]+(-[0-9]+)?)?\.conf$"; }}
has {new_gen} || {{ echo "no boot entry for generation {new_gen} in $entries" >&2; exit {CANNOT}; }}
[ -d /sys/firmware/efi/efivars ] || {{ echo "EFI variables are not available: cannot boot an entry once" >&2; exit {CANNOT}; }}
old_id={old_id}
conf_default=$(sed -n 's/^default[[:space:]][[:space:]]*//p' "$esp/loader/loader.conf" 2>/dev/null | tail -n 1)
if [ "$conf_default" != "$old_id" ] || [ -n {prev} ]; then
  [ -n "$old_id" ] && has {old_gen_n} || {{ echo "the previous generation has no boot entry to keep as the default" >&2; exit {CANNOT}; }}
  bootctl set-default "$old_id" >&2 || exit {CANNOT}
  echo pinned
fi
bootctl set-oneshot nixos-generation-{new_gen}.conf >&2 || exit {CANNOT}
echo armed
"#,
                    esp = q(esp),
                    old_id = q(&old_id),
                    prev = q(previous_default.as_deref().unwrap_or("")),
                    old_gen_n = old_gen.unwrap_or(0),
                )
            }
            BootOnce::Grub { cfg } => format!(
                r#"cfg={cfg}
[ -f "$cfg" ] || {{ echo "$cfg does not exist" >&2; exit {CANNOT}; }}
grep -q 'next_entry' "$cfg" || {{ echo "$cfg does not honour grub-reboot (no next_entry)" >&2; exit {CANNOT}; }}
first=$(grep -m 1 -o 'init=[^ ]*' "$cfg")
[ "$first" = {want} ] || {{ echo "the default GRUB entry is not the previous system ($first)" >&2; exit {CANNOT}; }}
title=$(sed -n 's/^[[:space:]]*menuentry "\(NixOS - Configuration {new_gen} ([^"]*)\)".*/\1/p' "$cfg" | head -n 1)
[ -n "$title" ] || {{ echo "no GRUB entry for generation {new_gen} in $cfg" >&2; exit {CANNOT}; }}
command -v grub-reboot >/dev/null 2>&1 || {{ echo "grub-reboot is not installed" >&2; exit {CANNOT}; }}
grub-reboot "NixOS - All configurations>$title" >&2 || exit {CANNOT}
echo armed
"#,
                cfg = q(cfg),
                want = q(&format!("init={old_system}/init")),
            ),
        }
    }

    /// Run after the new generation proved itself and before its own
    /// `switch-to-configuration boot`: marks its entry good (boot counting)
    /// and undoes the pin.
    #[must_use]
    pub fn bless(&self, new_gen: u64) -> String {
        match self {
            BootOnce::SystemdBoot { esp, previous_default } => format!(
                r#"entries={esp}/loader/entries
for f in "$entries"/nixos-generation-{new_gen}+*.conf; do
  [ -e "$f" ] && mv -f "$f" "$entries/nixos-generation-{new_gen}.conf"
done
{restore}
"#,
                esp = q(esp),
                restore = match previous_default {
                    None => "bootctl set-default '' >&2 || true".to_owned(),
                    Some(_) => format!("bootctl set-default nixos-generation-{new_gen}.conf >&2 || true"),
                }
            ),
            BootOnce::Grub { .. } => String::new(),
        }
    }

    /// Run when going back: no one-shot left, the default as before.
    #[must_use]
    pub fn disarm(&self) -> String {
        match self {
            BootOnce::SystemdBoot { previous_default, .. } => format!(
                "bootctl set-oneshot '' >&2 || true\nbootctl set-default {} >&2 || true\n",
                q(previous_default.as_deref().unwrap_or(""))
            ),
            BootOnce::Grub { cfg } => {
                format!("grub-editenv \"$(dirname {})/grubenv\" unset next_entry >&2 || true\n", q(cfg))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::PermissionsExt;
    use std::process::Command;

    use super::*;

    #[test]
    fn grub_title_is_read_from_grub_cfg() {
        let tmp = tempfile::tempdir().expect("tmp");
        let cfg = tmp.path().join("grub.cfg");
        fs::write(
            &cfg,
            "if [ \"${next_entry}\" ]; then\n  set default=\"${next_entry}\"\nfi\n\
             menuentry \"NixOS\" --class nixos --unrestricted {\n  linux ($drive1)/nix/store/k/bzImage init=/nix/store/old/init loglevel=4\n}\n\
             submenu \"NixOS - All configurations\" --class submenu {\n\
             \x20 menuentry \"NixOS - Configuration 2 (2025-01-02 - 25.05.lab-r2)\" --class nixos {\n  }\n\
             \x20 menuentry \"NixOS - Configuration 1 (2025-01-01 - 25.05.lab-r1)\" --class nixos {\n  }\n}\n",
        )
        .expect("write");
        let bin = tmp.path().join("bin");
        fs::create_dir_all(&bin).expect("mkdir");
        let tool = bin.join("grub-reboot");
        fs::write(&tool, format!("#!/bin/sh\necho \"$1\" > {}/chosen\n", tmp.path().display())).expect("write");
        fs::set_permissions(&tool, fs::Permissions::from_mode(0o755)).expect("chmod");
        let once = BootOnce::Grub { cfg: cfg.display().to_string() };
        let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
        let out = Command::new("sh")
            .arg("-c")
            .arg(once.arm(2, Some(1), "/nix/store/old"))
            .env("PATH", &path)
            .output()
            .expect("sh");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "armed\n", "{}", String::from_utf8_lossy(&out.stderr));
        let chosen = fs::read_to_string(tmp.path().join("chosen")).expect("chosen");
        assert_eq!(chosen, "NixOS - All configurations>NixOS - Configuration 2 (2025-01-02 - 25.05.lab-r2)\n");
        // The default entry is not the previous system: refuse.
        let out = Command::new("sh")
            .arg("-c")
            .arg(once.arm(2, Some(1), "/nix/store/other"))
            .env("PATH", &path)
            .output()
            .expect("sh");
        assert_eq!(out.status.code(), Some(CANNOT));
    }
}
