//! A kexec installer tarball in the format of nix-community/nixos-images
//! (`nix/kexec-installer/module.nix`, `kexecInstallerTarball`), made from
//! Debian's files: a top directory `kexec/` with `bzImage`, `initrd`, `run`,
//! `kexec` and `ip`.
//!
//! `run` ([`RUN`]) is the lab's own script with the interface and the steps
//! of nixos-images' `nix/kexec-installer/kexec-run.sh`: it takes
//! `--kexec-extra-flags`, has exactly one `init="…"` and one
//! `kernelParams="…"` line (module.nix substitutes `@init@` and
//! `@kernelParams@` there; fleetgate adds its nonce to the second), appends
//! to `initrd` a gzipped `newc` cpio of what the installer needs to be
//! reached the same way (root's `authorized_keys` and, started through
//! `sudo`/`doas`, the calling user's, `/etc/ssh/ssh_host_*`,
//! `ip --json addr` / `route`, `/etc/machine-id`), loads the kernel with
//! `--command-line 'init=$init $kernelParams'`, prints `machine will boot
//! into nixos in 6s...` and runs `kexec -e` in the background six seconds
//! later.
//!
//! nixos-images ships static `kexec` and `ip`; Debian has no static
//! kexec-tools or iproute2, so a [`Tool::Bundled`] binary travels with the
//! shared libraries `ldd` names and the dynamic loader, started by a
//! three-line wrapper: like a static binary it needs nothing from the old OS.

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Context;

use crate::process;

const TOOL_TIMEOUT: Duration = Duration::from_secs(300);

/// The `run` script; `@init@` and `@kernelParams@` are substituted.
pub const RUN: &str = r#"#!/bin/sh
# fleetgate-lab's kexec installer: the interface and steps of nixos-images'
# nix/kexec-installer/kexec-run.sh.
set -eu

kexec_extra_flags=""
while [ $# -gt 0 ]; do
  case "$1" in
    --kexec-extra-flags) kexec_extra_flags="$2"; shift ;;
  esac
  shift
done

init="@init@"
kernelParams="@kernelParams@"

here=$(dirname "$(readlink -f "$0")")
extra=$(TMPDIR=$here mktemp -d)
trap 'rm -rf "$extra"' EXIT
cd "$extra"
mkdir -p ssh

# What the installer needs to be reached as the old OS is: root's keys, the
# host keys, the network, the machine id.
for keys in /root/.ssh/authorized_keys /root/.ssh/authorized_keys2 /etc/ssh/authorized_keys.d/root; do
  if [ -e "$keys" ]; then grep -o '\(\(ssh\|ecdsa\|sk\)-[^ ]* .*\)' "$keys" >> ssh/authorized_keys || true; fi
done
# As kexec-run.sh: started through sudo or doas, the calling user's keys
# are root's in the installer too (nixos-anywhere's non-root path).
if [ -n "${DOAS_USER-}" ]; then SUDO_USER="$DOAS_USER"; fi
if [ -n "${SUDO_USER-}" ]; then
  sudo_home=$(sh -c "echo ~$SUDO_USER")
  for keys in "$sudo_home/.ssh/authorized_keys" "$sudo_home/.ssh/authorized_keys2" "/etc/ssh/authorized_keys.d/$SUDO_USER"; do
    if [ -e "$keys" ]; then grep -o '\(\(ssh\|ecdsa\|sk\)-[^ ]* .*\)' "$keys" >> ssh/authorized_keys || true; fi
  done
fi
for key in /etc/ssh/ssh_host_*; do
  if [ -e "$key" ]; then cp -a "$key" ssh; fi
done
"$here/ip" --json addr > addrs.json
"$here/ip" -4 --json route > routes-v4.json
"$here/ip" -6 --json route > routes-v6.json
if [ -f /etc/machine-id ]; then cp /etc/machine-id machine-id; fi
find . | cpio -o -H newc | gzip -9 >> "$here/initrd"

if ! sh -c "'$here/kexec' --load '$here/bzImage' $kexec_extra_flags --initrd='$here/initrd' --no-checks --command-line 'init=$init $kernelParams'"
then
  echo "kexec failed, dmesg says:"
  dmesg | tail -n 100
  exit 1
fi

echo "machine will boot into nixos in 6s..."
if [ -e /dev/kmsg ]; then exec > /dev/kmsg 2>&1; else exec > /dev/null 2>&1; fi
nohup sh -c "sleep 6 && '$here/kexec' -e $kexec_extra_flags" &
"#;

/// A tool of the tarball (`kexec`, `ip`).
pub enum Tool {
    /// A dynamically linked binary (a path inside the tree `root`: `/` for
    /// this machine), carried with the libraries it has there.
    Bundled { root: PathBuf, binary: PathBuf },
    /// A shell script (a stand-in a test wants, e.g. a `kexec` that
    /// succeeds and does nothing: seed 001).
    Script(String),
}

/// What goes into the tarball.
pub struct Parts<'a> {
    pub bzimage: &'a Path,
    pub initrd: &'a Path,
    pub kexec: Tool,
    pub ip: Tool,
    /// The installer's `init=`.
    pub init: &'a str,
    pub kernel_params: &'a str,
}

/// The `run` script for `init` and `kernel_params`.
pub fn run_script(init: &str, kernel_params: &str) -> String {
    RUN.replace("@init@", init).replace("@kernelParams@", kernel_params)
}

/// Writes `out` (`.tar.gz`) from `parts`, staged in `scratch`.
pub fn write(out: &Path, scratch: &Path, parts: &Parts<'_>) -> anyhow::Result<()> {
    let top = scratch.join("kexec");
    if top.exists() {
        fs::remove_dir_all(&top)?;
    }
    fs::create_dir_all(&top)?;
    fs::copy(parts.bzimage, top.join("bzImage")).context("the kernel")?;
    fs::copy(parts.initrd, top.join("initrd")).context("the initrd")?;
    write_executable(&top.join("run"), &run_script(parts.init, parts.kernel_params))?;
    add_tool(&top, "kexec", &parts.kexec)?;
    add_tool(&top, "ip", &parts.ip)?;
    process::run(Command::new("tar").arg("-czf").arg(out).arg("-C").arg(scratch).arg("kexec"), TOOL_TIMEOUT)
        .context("packing the kexec tarball")?;
    fs::remove_dir_all(&top)?;
    Ok(())
}

fn write_executable(path: &Path, text: &str) -> anyhow::Result<()> {
    fs::write(path, text)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o755))?;
    Ok(())
}

fn add_tool(top: &Path, name: &str, tool: &Tool) -> anyhow::Result<()> {
    match tool {
        Tool::Script(text) => write_executable(&top.join(name), text),
        Tool::Bundled { root, binary } => {
            let lib = top.join("lib");
            let libexec = top.join("libexec");
            fs::create_dir_all(&lib)?;
            fs::create_dir_all(&libexec)?;
            let inside = |p: &Path| root.join(p.strip_prefix("/").unwrap_or(p));
            fs::copy(inside(binary), libexec.join(name)).with_context(|| format!("copying {}", binary.display()))?;
            for library in shared_libraries(root, binary)? {
                let file = library.file_name().map(PathBuf::from).unwrap_or_default();
                if !lib.join(&file).exists() {
                    // fs::copy follows the links the libraries' names are.
                    fs::copy(inside(&library), lib.join(&file))
                        .with_context(|| format!("copying {}", library.display()))?;
                }
            }
            write_executable(
                &top.join(name),
                &format!(
                    "#!/bin/sh\nd=$(dirname \"$(readlink -f \"$0\")\")\n\
                     exec \"$d/lib/ld-linux-x86-64.so.2\" --library-path \"$d/lib\" \"$d/libexec/{name}\" \"$@\"\n"
                ),
            )
        }
    }
}

/// The libraries and the loader `ldd` names for `binary` in `root`.
fn shared_libraries(root: &Path, binary: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut ldd = if root == Path::new("/") {
        Command::new("ldd")
    } else {
        let mut chroot = Command::new("chroot");
        chroot.arg(root).arg("ldd");
        chroot
    };
    let out = process::run(ldd.arg(binary), TOOL_TIMEOUT).context("ldd")?;
    let text = &out.stdout;
    let mut libs = Vec::new();
    for line in text.lines() {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)" or "/lib64/ld-linux-x86-64.so.2 (0x…)"
        let path = line.split("=>").last().unwrap_or_default().split_whitespace().next().unwrap_or_default();
        if path.starts_with('/') {
            libs.push(PathBuf::from(path));
        }
    }
    anyhow::ensure!(
        libs.iter().any(|l| l.to_string_lossy().contains("ld-linux")),
        "ldd named no loader for {}",
        binary.display()
    );
    Ok(libs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_has_the_shape_fleetgate_patches() {
        let run = run_script("/init", "console=ttyS0");
        assert_eq!(run.lines().filter(|l| l.starts_with("kernelParams=\"")).count(), 1);
        assert!(run.contains("kernelParams=\"console=ttyS0\"\n") && run.contains("$kernelParams'"), "{run}");
        assert!(run.contains("init=\"/init\"\n"));
    }

    #[test]
    fn a_bundled_tool_runs_without_the_machine_s_libraries() {
        let tmp = tempfile::tempdir().unwrap();
        let ls = Tool::Bundled { root: "/".into(), binary: "/bin/ls".into() };
        add_tool(tmp.path(), "ls", &ls).unwrap();
        let out = Command::new(tmp.path().join("ls")).arg("/").env("LD_LIBRARY_PATH", "/nonexistent").output().unwrap();
        assert!(out.status.success(), "{out:?}");
        assert!(String::from_utf8_lossy(&out.stdout).contains("proc"));
        assert!(tmp.path().join("lib/ld-linux-x86-64.so.2").exists());
    }
}
