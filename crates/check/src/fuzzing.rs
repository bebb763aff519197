//! Not part of the API: the harness shared by the cargo-fuzz target
//! `fuzz/fuzz_targets/system_files.rs` and the deterministic test
//! `tests/fuzz_system_files.rs`, so that both drive the bounded readers and
//! the parsers behind them the same way.

use std::path::Path;

use fleetgate_facts::Facts;
use fleetgate_files::{Limit, ReadError};
use fleetgate_kmod::ModuleIndex;
use fleetgate_system::SystemToplevel;

use crate::Options;

/// Where each part of the input goes, in order.
const FILES: [&str; 14] = [
    "bounded",
    "boot.json",
    "kernel-params",
    "nixos-version",
    "init-interface-version",
    "switch-inhibitors",
    "etc/fstab",
    "kernel",
    "kernel-modules/lib/modules/6.1.0/modules.dep",
    "kernel-modules/lib/modules/6.1.0/modules.alias",
    "kernel-modules/lib/modules/6.1.0/modules.softdep",
    "kernel-modules/lib/modules/6.1.0/modules.builtin",
    "kernel-modules/lib/modules/6.1.0/modules.builtin.modinfo",
    "facts.json",
];

/// Splits `data` at `0xFF` bytes into the files of a system toplevel, a
/// kernel's module metadata and a facts document (the first byte is the
/// limit of a direct bounded read of the first part), writes them into a
/// temporary directory and reads everything back through the bounded
/// readers: the toplevel, its root file system, inhibitors and kernel image,
/// the module index and some lookups, the facts, and a whole check. Nothing
/// may panic, and a bounded read returns exactly the file or says it is
/// too large.
///
/// # Panics
/// When a bounded read breaks its promise, or the temporary files cannot be
/// written.
pub fn read_system_files(data: &[u8]) {
    let Some((&limit, rest)) = data.split_first() else {
        return;
    };
    let dir = tempfile::tempdir().expect("a temporary directory");
    let root = dir.path();
    let mut parts = rest.split(|&b| b == 0xFF);
    for name in FILES {
        let Some(part) = parts.next() else {
            break;
        };
        let path = root.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(&path, part).expect("write");
    }
    bounded_read_keeps_its_promise(&root.join(FILES[0]), u64::from(limit));

    let index = ModuleIndex::load(root.join("kernel-modules/lib/modules/6.1.0"));
    if let Ok(index) = &index {
        for query in ["virtio:d00000002v00001AF4", "ext4", "fs-ext4", "pci:v00001AF4d00001001sv*"] {
            let requirement = index.requirement(query);
            let _ = requirement.satisfied_by(|m| m.as_str().len() % 2 == 0);
            let _ = index.load_plan(query);
        }
    }
    let facts = Facts::load(&root.join("facts.json")).unwrap_or_default();
    if let Ok(system) = SystemToplevel::open(root) {
        let _ = system.root_filesystem();
        let _ = system.switch_inhibitors();
        let _ = system.kernel_params();
        let _ = system.kernel_image();
        let options = Options { no_closure_diff: true, ..Options::default() };
        let report = crate::check(&system, &facts, &options);
        let _ = report.to_json();
        let _ = crate::human::render(&report);
    }
}

/// The contract of [`fleetgate_files::read`] on a regular file.
fn bounded_read_keeps_its_promise(path: &Path, limit: u64) {
    let written = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    match fleetgate_files::read(path, Limit::new(limit, "a fuzzed file")) {
        Ok(bytes) => {
            assert!(bytes.len() as u64 == written && written <= limit, "{} of {written} ≤ {limit}", bytes.len())
        }
        Err(ReadError::TooLarge { .. }) => assert!(written > limit, "{written} > {limit}"),
        Err(e) => panic!("a regular file must be read or be too large: {e}"),
    }
}
