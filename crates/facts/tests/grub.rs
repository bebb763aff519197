//! The facts script's GRUB menu reader, run by real shells on a grub.cfg
//! shaped like NixOS's: entries inside submenus carry the `Submenu>Entry`
//! path `grub-reboot` takes.

use std::process::Command;

const GRUB_CFG: &str = r#"set default=0
if [ -s $prefix/grubenv ]; then
  load_env
fi
function savedefault {
  set saved_entry="${chosen}"
}
menuentry "NixOS" --class nixos --unrestricted {
  linux ($drive1)/nix/store/k/bzImage init=/nix/store/old/init loglevel=4
}
submenu "NixOS - All configurations" --class submenu {
  menuentry "NixOS - Configuration 2 (2025-01-02 - 25.05.lab-r2)" --class nixos {
  }
  menuentry 'NixOS - Configuration 1 (2025-01-01 - 25.05.lab-r1)' --class nixos {
  }
  submenu "Nested" {
    menuentry "Deep" {
    }
  }
  menuentry "After nested" {
  }
}
menuentry "Firmware" {
  fwsetup
}
"#;

/// `grub_entries` from the script, with a plain record printer.
fn grub_entries_script() -> String {
    let script = fleetgate_facts::SCRIPT;
    let start = script.find("grub_entries() {").expect("grub_entries in the script");
    let end = start + script[start..].find("\n}\n").expect("end of grub_entries") + 3;
    format!(
        "o() {{ printf '%s' \"$1\"; shift; for a in \"$@\"; do printf '\\t%s' \"$a\"; done; printf '\\n'; }}\n{}grub_entries \"$1\"\n",
        &script[start..end]
    )
}

#[test]
fn grub_entries_carry_their_submenu_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("grub.cfg");
    std::fs::write(&cfg, GRUB_CFG).expect("write");
    let shells: Vec<&str> = ["dash", "bash", "busybox"].into_iter().filter(|s| which(s)).collect();
    assert!(!shells.is_empty(), "no shell to run the script");
    for sh in shells {
        let mut cmd = Command::new(sh);
        if sh == "busybox" {
            cmd.arg("sh");
        }
        let out = cmd.arg("-c").arg(grub_entries_script()).arg("sh").arg(&cfg).output().expect("shell runs");
        assert!(out.status.success(), "{sh}: {}", String::from_utf8_lossy(&out.stderr));
        let facts = fleetgate_facts::parse(
            "test",
            &format!("version\t1\ngrub\t{}\n{}end\n", cfg.display(), String::from_utf8_lossy(&out.stdout)),
        );
        let ids: Vec<&str> = facts.boot.entries.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "NixOS",
                "NixOS - All configurations>NixOS - Configuration 2 (2025-01-02 - 25.05.lab-r2)",
                "NixOS - All configurations>NixOS - Configuration 1 (2025-01-01 - 25.05.lab-r1)",
                "NixOS - All configurations>Nested>Deep",
                "NixOS - All configurations>After nested",
                "Firmware",
            ],
            "{sh}"
        );
        assert_eq!(facts.boot.entries[1].title.as_deref(), Some("NixOS - Configuration 2 (2025-01-02 - 25.05.lab-r2)"));
    }
}

fn which(program: &str) -> bool {
    Command::new("sh").arg("-c").arg(format!("command -v {program}")).output().is_ok_and(|o| o.status.success())
}
