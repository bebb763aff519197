//! A toplevel's small files may be anything a hostile or broken build put
//! there: each is refused by what it is (device, FIFO, socket, directory)
//! or by its size, quickly and with the file named — never read forever.

use std::fs;
use std::os::unix::fs::symlink;

use fleetgate_system::{SystemError, SystemToplevel, limits};

/// The small files `SystemToplevel::open` reads, and their limits.
const OPENED: [(&str, fleetgate_files::Limit); 6] = [
    ("nixos-version", limits::NIXOS_VERSION),
    ("init-interface-version", limits::INIT_INTERFACE_VERSION),
    ("system", limits::SYSTEM),
    ("kernel-params", limits::KERNEL_PARAMS),
    ("boot.json", limits::BOOT_JSON),
    ("switch-inhibitors", limits::SWITCH_INHIBITORS),
];

fn toplevel() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    fs::write(dir.path().join("nixos-version"), "25.05").expect("write");
    fs::create_dir(dir.path().join("etc")).expect("mkdir");
    fs::write(dir.path().join("etc/fstab"), "/dev/vda2 / ext4 defaults 0 1\n").expect("write");
    dir
}

fn expect_refused(err: &SystemError, file: &str, what: &str) {
    let text = err.to_string();
    assert!(text.contains(file) && text.contains(what), "{file}: {text}");
}

#[test]
fn devices_fifos_and_directories_in_place_of_small_files_are_refused() {
    let scratch = tempfile::tempdir().expect("tempdir");
    for (file, _) in OPENED {
        for (hostile, says) in fleetgate_files::testing::hostile_files(scratch.path(), file) {
            let dir = toplevel();
            let path = dir.path().join(file);
            let _ = fs::remove_file(&path);
            symlink(&hostile, &path).expect("link");
            let err = SystemToplevel::open(dir.path()).expect_err("refused");
            assert!(matches!(err, SystemError::File(fleetgate_files::ReadError::NotRegular { .. })), "{err:?}");
            expect_refused(&err, file, says);
        }
    }
}

#[test]
fn small_files_larger_than_their_kind_are_refused_at_the_limit() {
    for (file, limit) in OPENED {
        let dir = toplevel();
        let path = dir.path().join(file);
        let size = usize::try_from(limit.bytes).expect("fits");
        fs::write(&path, vec![b' '; size + 1]).expect("write");
        let err = SystemToplevel::open(dir.path()).expect_err("too large");
        expect_refused(&err, file, &format!("is larger than {limit}, more than {}", limit.what));
        // At the limit it is read (and, being blank, means nothing).
        fs::write(&path, vec![b' '; size]).expect("write");
        if file != "boot.json" && file != "switch-inhibitors" {
            SystemToplevel::open(dir.path()).unwrap_or_else(|e| panic!("{file} at the limit: {e}"));
        }
    }
}

#[test]
fn the_fstab_is_bounded_too() {
    let dir = toplevel();
    let fstab = dir.path().join("etc/fstab");
    fs::remove_file(&fstab).expect("rm");
    symlink("/dev/zero", &fstab).expect("link");
    let top = SystemToplevel::open(dir.path()).expect("opens: etc/fstab is read on demand");
    expect_refused(&top.fstab().expect_err("refused"), "etc/fstab", "is a character device");
    expect_refused(&top.root_filesystem().expect_err("refused"), "etc/fstab", "is a character device");
    fs::remove_file(&fstab).expect("rm");
    fs::write(&fstab, vec![b'#'; usize::try_from(limits::FSTAB.bytes).expect("fits") + 1]).expect("write");
    expect_refused(&top.fstab().expect_err("too large"), "etc/fstab", "more than an fstab can be");
}

#[test]
fn a_kernel_that_is_a_device_is_no_image() {
    let dir = toplevel();
    symlink("/dev/zero", dir.path().join("kernel")).expect("link");
    let top = SystemToplevel::open(dir.path()).expect("opens");
    let err = top.kernel_image().expect_err("refused");
    expect_refused(&err, "/dev/zero", "is a character device");
}
