//! The real Debian initrd made by `mkinitramfs` (`/boot/initrd.img-*`):
//! our listing must equal `lsinitramfs`'s, and the modules found must be the
//! `.ko*` files it lists. Without an image or `lsinitramfs` the test fails
//! (CI installs linux-image-amd64 and initramfs-tools).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::collections::BTreeSet;
use std::io::Read;
use std::path::PathBuf;
use std::process::Command;

use fleetgate_initrd::Reader;

fn images() -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/boot")
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("initrd.img-")))
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    assert!(
        !found.is_empty(),
        "no /boot/initrd.img-* found: this test needs a Debian kernel and initrd \
         (apt-get install linux-image-amd64 initramfs-tools cpio zstd)"
    );
    found
}

#[test]
fn listing_equals_lsinitramfs_and_modules_match() {
    for image in images() {
        let out = Command::new("lsinitramfs")
            .arg(&image)
            .output()
            .expect("lsinitramfs is required (apt-get install initramfs-tools)");
        assert!(out.status.success(), "lsinitramfs failed: {}", String::from_utf8_lossy(&out.stderr));
        let theirs: BTreeSet<Vec<u8>> =
            out.stdout.split(|&b| b == b'\n').filter(|l| !l.is_empty()).map(<[u8]>::to_vec).collect();
        assert!(theirs.len() > 100, "{}: lsinitramfs listed only {} paths", image.display(), theirs.len());

        let mut reader = Reader::open(&image).unwrap();
        let mut ours = BTreeSet::new();
        let mut scan = fleetgate_initrd::ModuleScan::new();
        let mut builtin = String::new();
        while let Some(mut e) = reader.next_entry().unwrap() {
            ours.insert(e.entry().path_bytes().to_vec());
            scan.add(e.entry()).unwrap();
            if e.entry().path_bytes().ends_with(b"/modules.builtin") {
                e.read_to_string(&mut builtin).unwrap();
            }
        }
        let only_ours: Vec<_> = ours.difference(&theirs).map(|p| String::from_utf8_lossy(p)).collect();
        let only_theirs: Vec<_> = theirs.difference(&ours).map(|p| String::from_utf8_lossy(p)).collect();
        assert!(
            only_ours.is_empty() && only_theirs.is_empty(),
            "{}: only ours {only_ours:?}, only lsinitramfs {only_theirs:?}",
            image.display()
        );

        let modules = scan.finish();
        // Expected: every .ko* file lsinitramfs lists under <lib>/modules/<ver>/.
        let expected: BTreeSet<String> = theirs
            .iter()
            .filter(|p| p.starts_with(b"usr/lib/modules/") || p.starts_with(b"lib/modules/"))
            .filter_map(|p| fleetgate_initrd::module_name(p.rsplit(|&b| b == b'/').next()?))
            .collect();
        assert!(!expected.is_empty(), "{}: no modules listed", image.display());
        assert_eq!(modules.names, expected, "{}", image.display());

        let version = image.file_name().unwrap().to_string_lossy().trim_start_matches("initrd.img-").to_owned();
        assert!(modules.kernel_versions.contains(&version), "{:?}", modules.kernel_versions);

        // The disk drivers a VPS needs are modules in the image or built in.
        for needed in ["virtio_blk", "virtio_pci", "virtio_scsi"] {
            let builtin_here = builtin.lines().any(|l| {
                fleetgate_initrd::module_name(l.rsplit('/').next().unwrap_or("").as_bytes()).as_deref() == Some(needed)
            });
            assert!(
                modules.contains(needed) || builtin_here,
                "{}: {needed} neither a module in the image nor built in",
                image.display()
            );
        }
    }
}
