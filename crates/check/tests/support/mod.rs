//! Real data shared by the integration tests: Debian's kernel, modules and
//! initrd laid out as a NixOS toplevel, and the facts of a virtio VM.

#![allow(dead_code)] // each test file uses a part

use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use fleetgate_check::{Options, Report, check};
use fleetgate_facts::Facts;
use fleetgate_system::SystemToplevel;

pub fn debian_kernel() -> String {
    let mut versions: Vec<String> = std::fs::read_dir("/lib/modules")
        .expect("/lib/modules")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|v| Path::new(&format!("/boot/initrd.img-{v}")).is_file())
        .collect();
    versions.sort();
    versions.pop().expect("a Debian kernel with an initrd (scripts/setup installs linux-image-amd64)")
}

/// A directory laid out like a NixOS toplevel around Debian's kernel, as
/// nixpkgs' top-level.nix, kernel.nix and bootspec.nix lay one out: the
/// kernel, its modules and the initrd as links, an executable `init`, and a
/// `boot.json` that agrees with them.
pub fn toplevel(dir: &Path, kver: &str, initrd: &Path, fstab: &str) -> PathBuf {
    let top = dir.join("system");
    std::fs::create_dir_all(top.join("kernel-modules/lib/modules")).expect("mkdir");
    std::fs::create_dir_all(top.join("etc")).expect("mkdir");
    symlink(format!("/lib/modules/{kver}"), top.join("kernel-modules/lib/modules").join(kver)).expect("link");
    symlink(format!("/boot/vmlinuz-{kver}"), top.join("kernel")).expect("link");
    symlink(initrd, top.join("initrd")).expect("link");
    std::fs::write(top.join("nixos-version"), "25.05.debian-test").expect("write");
    std::fs::write(top.join("init-interface-version"), "systemd 2").expect("write");
    std::fs::write(top.join("system"), "x86_64-linux").expect("write");
    std::fs::write(top.join("kernel-params"), "root=fstab loglevel=4").expect("write");
    std::fs::write(top.join("etc/fstab"), fstab).expect("write");
    std::fs::write(top.join("init"), "#!/bin/sh\nexec /lib/systemd/systemd\n").expect("write");
    std::fs::set_permissions(top.join("init"), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let boot_json = serde_json::json!({
        "org.nixos.bootspec.v1": {
            "init": top.join("init"),
            "initrd": initrd,
            "kernel": format!("/boot/vmlinuz-{kver}"),
            "kernelParams": ["root=fstab", "loglevel=4"],
            "label": format!("NixOS 25.05.debian-test (Linux {kver})"),
            "system": "x86_64-linux",
            "toplevel": top,
        },
        "org.nixos.specialisation.v1": {},
    });
    std::fs::write(top.join("boot.json"), boot_json.to_string()).expect("write");
    top
}

/// A toplevel of [`toplevel`] in a temporary directory.
pub struct DebianSystem {
    /// Holds the toplevel (and whatever else a test puts there).
    pub dir: tempfile::TempDir,
    /// The toplevel.
    pub top: PathBuf,
    /// Debian's kernel release.
    pub kver: String,
}

/// Debian's kernel, modules and `initrd` (Debian's own for `None`) as a
/// toplevel whose root is the virtio VM's `/dev/vda` (see [`virtio_facts`]).
pub fn debian_system(initrd: Option<&Path>) -> DebianSystem {
    let kver = debian_kernel();
    let dir = tempfile::tempdir().expect("tempdir");
    let own = PathBuf::from(format!("/boot/initrd.img-{kver}"));
    let top = toplevel(dir.path(), &kver, initrd.unwrap_or(&own), "/dev/vda / ext4 defaults 0 1\n");
    DebianSystem { dir, top, kver }
}

pub fn local_facts() -> Facts {
    fleetgate_facts::collect(&fleetgate_transport::Local, Duration::from_secs(60)).expect("local facts")
}

/// The facts of a virtio VM, captured once (see the fixture's test in
/// `crates/facts/tests/local.rs`).
pub fn virtio_facts() -> Facts {
    Facts::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../facts/tests/fixtures/virtio-vm.facts.json"))
        .expect("fixture loads")
}

/// `check` of the toplevel at `top` against `facts`, with the closure diff turned off
/// (as in every test here).
pub fn check_toplevel(top: &Path, facts: &Facts) -> Report {
    check(&SystemToplevel::open(top).expect("opens"), facts, &Options { no_closure_diff: true, ..Options::default() })
}

/// An initrd (newc cpio, gzip) holding empty module files at `paths`.
pub fn small_initrd(dir: &Path, paths: &[String]) -> PathBuf {
    let tree = dir.join("tree");
    for p in paths {
        let file = tree.join(p);
        std::fs::create_dir_all(file.parent().expect("parent")).expect("mkdir");
        std::fs::write(&file, b"").expect("write");
    }
    let out = dir.join("initrd.gz");
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!("cd {} && find . | cpio -o -H newc --quiet | gzip -9 > {}", tree.display(), out.display()))
        .status()
        .expect("cpio runs");
    assert!(status.success());
    out
}
