//! A host laid out in a directory, for tests that run the real host
//! scripts with `/bin/sh` and no inherited `PATH`: `run/current-system`,
//! `run/booted-system`, the system profile with its generation links, a boot
//! id, and systems whose `sw/bin` links to this machine's tools, whose
//! `nix-env` flips profile links as Nix does, and whose
//! `bin/switch-to-configuration` logs its calls to `<root>/calls` and repoints
//! `run/current-system` on `test` and `switch`.

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};

/// The tools a system's `sw/bin` links to.
pub const TOOLS: &[&str] = &[
    "mkdir", "mv", "sleep", "timeout", "cat", "readlink", "head", "tail", "rm", "ln", "chmod", "setsid", "sed", "awk",
    "grep", "mkfifo", "od",
];

/// A tool of this machine.
///
/// # Panics
/// When the machine lacks it (a test set-up error).
#[must_use]
#[allow(clippy::panic)]
pub fn tool(name: &str) -> PathBuf {
    ["/usr/bin", "/bin", "/usr/sbin", "/sbin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("{name} on this machine"))
}

/// Writes an executable file.
///
/// # Panics
/// On I/O errors (a test set-up error).
#[allow(clippy::expect_used)]
pub fn exe(path: &Path, text: &str) {
    fs::write(path, text).expect("write");
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).expect("chmod");
}

/// A system whose switch-to-configuration logs and repoints current-system.
/// # Panics
/// On I/O errors (a test set-up error).
#[allow(clippy::expect_used)]
pub fn system(root: &Path, name: &str, test_exit: i32) -> String {
    let dir = root.join("systems").join(name);
    let bin = dir.join("sw/bin");
    fs::create_dir_all(&bin).expect("mkdir");
    fs::create_dir_all(dir.join("bin")).expect("mkdir");
    for t in TOOLS {
        symlink(tool(t), bin.join(t)).expect("symlink");
    }
    // nix-env: the profile flip it does (system-N-link, then the profile link).
    exe(
        &bin.join("nix-env"),
        "#!/bin/sh\nset -e\np=$2\nd=${p%/*}\ncase $3 in\n--set) n=1; while [ -e \"$d/system-$n-link\" ]; do n=$((n+1)); done; ln -s \"$4\" \"$d/system-$n-link\" ;;\n\
             --switch-generation) n=$4 ;;\nesac\nln -sfn \"system-$n-link\" \"$p.tmp\"\nmv -Tf \"$p.tmp\" \"$p\"\n",
    );
    let me = dir.display().to_string();
    exe(
        &dir.join("bin/switch-to-configuration"),
        &format!(
            "#!/bin/sh\necho \"{name} $1\" >> {log}\ncase $1 in test|switch) [ {test_exit} = 0 ] || [ $1 = switch ] || exit {test_exit}; ln -sfn {me} {root}/run/current-system ;; esac\nexit 0\n",
            log = root.join("calls").display(),
            root = root.display(),
        ),
    );
    me
}

/// A host under `root` running, booted from and with its profile on `old`;
/// returns `(old, new)` (`new`'s `switch-to-configuration test` exits `new_exit`).
///
/// # Panics
/// On I/O errors (a test set-up error).
#[allow(clippy::expect_used)]
pub fn host(root: &Path, new_exit: i32) -> (String, String) {
    let old = system(root, "old", 0);
    let new = system(root, "new", new_exit);
    for d in ["run", "nix/var/nix/profiles", "proc/sys/kernel/random"] {
        fs::create_dir_all(root.join(d)).expect("mkdir");
    }
    symlink(&old, root.join("run/current-system")).expect("ln");
    symlink(&old, root.join("run/booted-system")).expect("ln");
    symlink(&old, root.join("nix/var/nix/profiles/system-1-link")).expect("ln");
    symlink("system-1-link", root.join("nix/var/nix/profiles/system")).expect("ln");
    fs::write(root.join("proc/sys/kernel/random/boot_id"), "b1\n").expect("write");
    (old, new)
}

/// A NixOS `grub.cfg` (install-grub.pl's shape) whose default entry boots
/// `old` and whose "All configurations" submenu boots `new` — inside a
/// nested specialisation submenu when `nested`.
#[must_use]
pub fn grub_cfg(old: &str, new: &str, nested: bool) -> String {
    let new_entry = if nested {
        format!(
            "submenu \"NixOS - Configuration 2 (x)\" {{\n  menuentry \"NixOS - Configuration 2 - Default (x)\" {{\n  linux /k init={new}/init\n  }}\n}}\n"
        )
    } else {
        format!("  menuentry \"NixOS - Configuration 2 (x)\" {{\n  linux /k init={new}/init\n  }}\n")
    };
    format!(
        "if [ \"${{next_entry}}\" ]; then\n  set default=\"${{next_entry}}\"\nelse\n  set default=0\nfi\n\
         menuentry \"NixOS\" {{\n  linux /k init={old}/init\n}}\n\
         submenu \"NixOS - All configurations\" {{\n{new_entry}\
         menuentry \"NixOS - Configuration 1 (x)\" {{\n  linux /k init={old}/init\n}}\n}}\n"
    )
}
