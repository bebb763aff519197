//! Unit tests on small, hand-written module trees.

use std::fs;

use crate::*;

fn names(list: &[&str]) -> Vec<ModuleName> {
    list.iter().map(|n| ModuleName::new(n)).collect()
}

fn name(n: &str) -> ModuleName {
    ModuleName::new(n)
}

/// A miniature of Debian's virtio / NVMe / ext4 corner, written the way
/// depmod writes it (flat transitive dependency lists).
const DEP: &str = "\
kernel/drivers/block/virtio_blk.ko.xz: kernel/drivers/virtio/virtio.ko.xz kernel/drivers/virtio/virtio_ring.ko.xz
kernel/drivers/virtio/virtio.ko.xz: kernel/drivers/virtio/virtio_ring.ko.xz
kernel/drivers/virtio/virtio_ring.ko.xz:
kernel/drivers/virtio/virtio_pci.ko.xz: kernel/drivers/virtio/virtio_pci_legacy_dev.ko.xz kernel/drivers/virtio/virtio_pci_modern_dev.ko.xz kernel/drivers/virtio/virtio.ko.xz kernel/drivers/virtio/virtio_ring.ko.xz
kernel/drivers/virtio/virtio_pci_legacy_dev.ko.xz:
kernel/drivers/virtio/virtio_pci_modern_dev.ko.xz:
kernel/drivers/scsi/virtio_scsi.ko.zst: kernel/drivers/scsi/scsi_mod.ko.zst kernel/drivers/scsi/scsi_common.ko.zst kernel/drivers/virtio/virtio.ko.xz kernel/drivers/virtio/virtio_ring.ko.xz
kernel/drivers/scsi/scsi_mod.ko.zst: kernel/drivers/scsi/scsi_common.ko.zst
kernel/drivers/scsi/scsi_common.ko.zst:
kernel/drivers/nvme/host/nvme.ko.gz: kernel/drivers/nvme/host/nvme-core.ko.gz kernel/lib/crc-t10dif.ko kernel/crypto/crct10dif_common.ko
kernel/drivers/nvme/host/nvme-core.ko.gz: kernel/lib/crc-t10dif.ko kernel/crypto/crct10dif_common.ko
kernel/lib/crc-t10dif.ko: kernel/crypto/crct10dif_common.ko
kernel/crypto/crct10dif_common.ko:
kernel/arch/x86/crypto/crct10dif-pclmul.ko: kernel/crypto/crct10dif_common.ko
kernel/crypto/crct10dif_generic.ko: kernel/crypto/crct10dif_common.ko
kernel/fs/ext4/ext4.ko: kernel/fs/jbd2/jbd2.ko kernel/fs/mbcache.ko
kernel/fs/jbd2/jbd2.ko:
kernel/fs/mbcache.ko:
kernel/arch/x86/crypto/crc32c-intel.ko:
kernel/drivers/ata/ahci.ko: kernel/drivers/ata/libahci.ko kernel/drivers/ata/libata.ko
kernel/drivers/ata/libahci.ko: kernel/drivers/ata/libata.ko
kernel/drivers/ata/libata.ko:
kernel/drivers/ata/ata_generic.ko: kernel/drivers/ata/libata.ko
";

const ALIAS: &str = "\
# Aliases extracted from modules themselves.
alias virtio:d00000002v* virtio_blk
alias pci:v00001AF4d*sv*sd*bc*sc*i* virtio_pci
alias virtio:d00000008v* virtio_scsi
alias crypto-crct10dif crct10dif_pclmul
alias crct10dif crct10dif-pclmul
alias pci:v*d*sv*sd*bc01sc08i02* nvme
alias fs-ext4 ext4
alias crypto-crc32c crc32c_intel
alias pci:v*d*sv*sd*bc01sc06i01* ahci
alias pci:v00008086d00002922sv*sd*bc*sc*i* ahci
alias pci:v*d*sv*sd*bc01sc0[1-6]i* ata_generic
alias crypto-crct10dif crct10dif_generic
alias crct10dif crct10dif_generic
";

const SOFTDEP: &str = "\
# Soft dependencies extracted from modules themselves.
softdep crc-t10dif pre: crct10dif
softdep ext4 pre: crypto-crc32c post: fs-nonexistent
";

const BUILTIN: &str = "\
kernel/drivers/block/loop.ko
kernel/crypto/crc32c_generic.ko
";

const MODINFO: &[u8] = b"loop.license=GPL\0loop.alias=block-major-7-*\0loop.alias=devname:loop-control\0\
crc32c_generic.alias=crypto-crc32c\0crc32c_generic.alias=crc32c\0virtio_input.alias=virtio:d00000012v*\0";

fn debianish() -> ModuleIndex {
    ModuleIndex::from_parts(IndexSources {
        kernel_version: Some("6.1.0-test"),
        modules_dep: DEP,
        modules_alias: ALIAS,
        modules_softdep: SOFTDEP,
        modules_builtin: BUILTIN,
        modules_builtin_modinfo: MODINFO,
        modules_symbols: "alias symbol:virtio_check_driver_offered_feature virtio\n",
    })
}

#[test]
fn resolves_modaliases_with_glob_patterns() {
    let index = debianish();
    assert_eq!(index.resolve_modalias("virtio:d00000002v00001AF4"), names(&["virtio_blk"]));
    assert_eq!(index.resolve_modalias("virtio:d00000008v00001AF4"), names(&["virtio_scsi"]));
    assert_eq!(index.resolve_modalias("pci:v00001AF4d00001042sv00001AF4sd00001042bc01sc80i00"), names(&["virtio_pci"]));
    assert_eq!(index.resolve_modalias("pci:v0000144Dd0000A808sv0000144Dsd0000A801bc01sc08i02"), names(&["nvme"]));
    assert!(index.resolve_modalias("virtio:d00000003v00001AF4").is_empty());
    assert!(index.resolve_modalias("").is_empty());
}

#[test]
fn bracket_classes_in_aliases() {
    let index = debianish();
    // sc06 is in [1-6]: ahci (two patterns, listed once) and ata_generic,
    // ordered by the position of each module's first alias.
    assert_eq!(
        index.resolve_modalias("pci:v00008086d00002922sv00001AF4sd00001100bc01sc06i01"),
        names(&["ahci", "ata_generic"])
    );
    assert_eq!(
        index.resolve_modalias("pci:v00001234d00005678sv00000000sd00000000bc01sc01i80"),
        names(&["ata_generic"])
    );
    // sc07 is outside the range.
    assert!(index.resolve_modalias("pci:v00001234d00005678sv00000000sd00000000bc01sc07i80").is_empty());
}

#[test]
fn negated_classes_and_question_marks_in_aliases() {
    let index = ModuleIndex::from_parts(IndexSources {
        modules_dep: "a.ko:\nb.ko:\nc.ko:\n",
        modules_alias: "alias dev:x[!0-4]y a\nalias dev:x[^5-9]y b\nalias dev:?? c\n",
        ..IndexSources::default()
    });
    assert_eq!(index.resolve_modalias("dev:x7y"), names(&["a"]));
    assert_eq!(index.resolve_modalias("dev:x2y"), names(&["b"]));
    assert!(index.resolve_modalias("dev:x[y").is_empty()); // unmatched bracket in the query
    assert_eq!(index.resolve_modalias("dev:zz"), names(&["c"]));
    assert!(index.resolve_modalias("dev:zzz").is_empty());
}

#[test]
fn lookup_chain_order_and_normalisation() {
    let index = debianish();
    // A module name wins over everything and is normalised.
    let l = index.lookup("virtio-blk");
    assert_eq!((l.source, l.modules), (Some(LookupSource::ModulesDep), names(&["virtio_blk"])));
    // `crypto-crc32c` matches a module alias, so the built-in alias of
    // crc32c_generic is never consulted (first step with a hit wins).
    let l = index.lookup("crypto-crc32c");
    assert_eq!((l.source, l.modules), (Some(LookupSource::Aliases), names(&["crc32c_intel"])));
    // Only built-in aliases know `crc32c`.
    let l = index.lookup("crc32c");
    assert_eq!((l.source, l.modules), (Some(LookupSource::BuiltinAliases), names(&["crc32c_generic"])));
    let l = index.lookup("loop");
    assert_eq!((l.source, l.modules), (Some(LookupSource::Builtin), names(&["loop"])));
    let l = index.lookup("symbol:virtio_check_driver_offered_feature");
    assert_eq!((l.source, l.modules), (Some(LookupSource::Symbols), names(&["virtio"])));
    assert_eq!(index.lookup("no-such-thing"), Lookup::default());
    // A name with a module suffix is not a module name to modprobe either.
    assert!(index.resolve_modalias("virtio_blk.ko").is_empty());
}

#[test]
fn builtin_modules_satisfy_modaliases_via_modinfo() {
    let index = debianish();
    assert!(index.is_builtin(&name("loop")));
    assert!(!index.is_builtin(&name("virtio_blk")));
    assert_eq!(index.resolve_modalias("block-major-7-0"), names(&["loop"]));
    assert_eq!(index.resolve_modalias("virtio:d00000012v00001AF4"), names(&["virtio_input"]));

    let want = index.requirement("block-major-7-0");
    assert_eq!(want.source, Some(LookupSource::BuiltinAliases));
    assert!(want.is_builtin());
    assert!(want.satisfied_by(|_| false), "built-in needs nothing present");
    assert_eq!(want.candidates[0].load_plan, [LoadStep::Builtin { module: name("loop") }]);

    // virtio_input is only named in modules.builtin.modinfo, which is
    // extracted from the kernel image: built in as well.
    assert!(index.is_builtin(&name("virtio_input")));
    let want = index.requirement("virtio:d00000012v00001AF4");
    assert_eq!(want.candidates[0].provider, Provider::Builtin);
    assert!(want.satisfied_by(|_| false));
}

#[test]
fn transitive_dependencies_in_load_order() {
    let index = debianish();
    assert_eq!(index.dependencies(&name("virtio_blk")).unwrap(), names(&["virtio_ring", "virtio"]));
    assert_eq!(
        index.dependencies(&name("virtio_scsi")).unwrap(),
        names(&["virtio_ring", "virtio", "scsi_common", "scsi_mod"])
    );
    assert_eq!(index.dependencies(&name("loop")).unwrap(), names(&[]));
    assert!(matches!(
        index.dependencies(&name("nope")),
        Err(KmodError::UnknownModule(m)) if m == "nope"
    ));
}

#[test]
fn dependencies_of_non_flat_files_are_closed_transitively() {
    // Only direct dependencies listed; c depends on e through d.
    let index = ModuleIndex::from_parts(IndexSources {
        modules_dep: "a.ko: b.ko c.ko\nb.ko:\nc.ko: d.ko\nd.ko: e.ko\ne.ko:\n",
        ..IndexSources::default()
    });
    assert_eq!(index.dependencies(&name("a")).unwrap(), names(&["e", "d", "c", "b"]));
}

#[test]
fn dependency_cycles_terminate() {
    let index = ModuleIndex::from_parts(IndexSources {
        modules_dep: "a.ko: b.ko\nb.ko: c.ko\nc.ko: a.ko b.ko\nself.ko: self.ko\n",
        ..IndexSources::default()
    });
    assert_eq!(index.dependencies(&name("a")).unwrap(), names(&["c", "b"]));
    assert_eq!(index.dependencies(&name("c")).unwrap(), names(&["b", "a"]));
    assert_eq!(index.dependencies(&name("self")).unwrap(), names(&[]));
    // And the probe list too.
    let plan: Vec<_> = index.load_plan("a").iter().map(|s| s.module().clone()).collect();
    assert_eq!(plan, names(&["c", "b", "a"]));
}

#[test]
fn softdeps_are_parsed_like_libkmod() {
    let index = ModuleIndex::from_parts(IndexSources {
        modules_softdep: "softdep cifs gcm\n\
                          softdep cifs pre: ccm\n\
                          softdep snd-* pre: soundcore \\\n  post: snd_timer\n\
                          softdep\tbad\n\
                          softdep x pre:a post: b pre: c\n\
                          options foo bar=1\n",
        ..IndexSources::default()
    });
    // The first matching entry wins even though it lists nothing.
    let cifs = index.softdeps(&name("cifs")).unwrap();
    assert!(cifs.pre.is_empty() && cifs.post.is_empty());
    // Patterns are fnmatch'ed against the (normalised) module name, and
    // backslash continuations join lines.
    let snd = index.softdeps(&name("snd-hda-intel")).unwrap();
    assert_eq!(snd.pattern, "snd_*");
    assert_eq!(
        (snd.pre.as_slice(), snd.post.as_slice()),
        (&["soundcore".to_owned()][..], &["snd_timer".to_owned()][..])
    );
    // `pre:a` is not the `pre:` keyword: it is ignored before any mode.
    let x = index.softdeps(&name("x")).unwrap();
    assert_eq!((x.pre.clone(), x.post.clone()), (vec!["c".to_owned()], vec!["b".to_owned()]));
    assert!(index.softdeps(&name("ext4")).is_none());
    let reasons: Vec<_> = index.skipped_lines().iter().map(|s| (s.line, s.reason)).collect();
    assert_eq!(reasons, [(5, "softdep without dependencies"), (7, "only `softdep` lines are used from this file")]);
    // Softdeps only add optional modules: no damage to lookups.
    assert!(index.skipped_lines().iter().all(|s| !s.is_damage()));
}

#[test]
fn softdeps_resolve_through_aliases() {
    let index = debianish();
    let (pre, post) = index.resolved_softdeps(&name("crc_t10dif"));
    assert_eq!(pre, names(&["crct10dif_pclmul", "crct10dif_generic"]));
    assert!(post.is_empty());
    // `fs-nonexistent` resolves to nothing and is dropped.
    let (pre, post) = index.resolved_softdeps(&name("ext4"));
    assert_eq!((pre, post), (names(&["crc32c_intel"]), names(&[])));
}

#[test]
fn load_plan_reproduces_modprobe_show_depends_with_repetitions() {
    let index = debianish();
    let plan: Vec<String> = index.load_plan("nvme").iter().map(ToString::to_string).collect();
    // libkmod revisits crct10dif_common for each softdep'd module, as the
    // real modprobe prints it.
    assert_eq!(
        plan,
        [
            "insmod kernel/crypto/crct10dif_common.ko",
            "insmod kernel/crypto/crct10dif_common.ko",
            "insmod kernel/arch/x86/crypto/crct10dif-pclmul.ko",
            "insmod kernel/crypto/crct10dif_common.ko",
            "insmod kernel/crypto/crct10dif_generic.ko",
            "insmod kernel/lib/crc-t10dif.ko",
            "insmod kernel/drivers/nvme/host/nvme-core.ko.gz",
            "insmod kernel/drivers/nvme/host/nvme.ko.gz",
        ]
    );
    let plan: Vec<String> = index.load_plan("fs-ext4").iter().map(ToString::to_string).collect();
    assert_eq!(
        plan,
        [
            "insmod kernel/fs/mbcache.ko",
            "insmod kernel/fs/jbd2/jbd2.ko",
            // ext4's own softdep comes right before it.
            "insmod kernel/arch/x86/crypto/crc32c-intel.ko",
            "insmod kernel/fs/ext4/ext4.ko",
        ]
    );
    assert_eq!(index.load_plan("loop"), [LoadStep::Builtin { module: name("loop") }]);
    // Two ahci patterns match this device: modprobe acts on each match, so
    // ahci's plan appears twice, then ata_generic's.
    let plan: Vec<String> = index
        .load_plan("pci:v00008086d00002922sv00001AF4sd00001100bc01sc06i01")
        .iter()
        .map(|s| s.module().to_string())
        .collect();
    assert_eq!(plan, ["libata", "libahci", "ahci", "libata", "libahci", "ahci", "libata", "ata_generic"]);
    assert!(index.load_plan("nothing").is_empty());
}

#[test]
fn requirement_for_a_modalias_lists_every_candidate() {
    let index = debianish();
    let want = index.requirement("pci:v00008086d00002922sv00001AF4sd00001100bc01sc06i01");
    assert_eq!(want.source, Some(LookupSource::Aliases));
    let mods: Vec<_> = want.candidates.iter().map(|c| c.module.clone()).collect();
    assert_eq!(mods, names(&["ahci", "ata_generic"]));
    let ahci = &want.candidates[0];
    assert_eq!(ahci.provider, Provider::File { path: "kernel/drivers/ata/ahci.ko".into() });
    assert_eq!(ahci.dependencies, names(&["libata", "libahci"]));
    assert!(ahci.softdep_modules.is_empty());

    // Either complete candidate satisfies the device.
    assert!(want.satisfied_by(|m| ["libata", "ata_generic"].contains(&m.as_str())));
    assert!(!want.satisfied_by(|m| ["ahci", "libahci"].contains(&m.as_str())));
    assert_eq!(ahci.missing_hard(|m| m == "ahci"), names(&["libata", "libahci"]));
}

#[test]
fn requirement_separates_soft_from_hard_modules() {
    let index = debianish();
    let want = index.requirement("nvme");
    assert_eq!(want.source, Some(LookupSource::ModulesDep));
    let nvme = &want.candidates[0];
    assert_eq!(nvme.dependencies, names(&["crct10dif_common", "crc_t10dif", "nvme_core"]));
    assert_eq!(nvme.softdep_modules, names(&["crct10dif_pclmul", "crct10dif_generic"]));
    let hard = |m: &ModuleName| nvme.dependencies.contains(m) || m == "nvme";
    assert!(want.satisfied_by(hard));
    assert_eq!(nvme.missing_soft(hard), names(&["crct10dif_pclmul", "crct10dif_generic"]));
    assert!(nvme.missing_soft(|_| true).is_empty());
}

#[test]
fn requirement_for_bound_driver() {
    let index = debianish();
    let want = index.requirement_for_driver("virtio-blk");
    assert_eq!(want.candidates.len(), 1);
    assert_eq!(want.candidates[0].module, "virtio_blk");
    assert!(want.satisfied_by(|m| ["virtio_blk", "virtio", "virtio_ring"].contains(&m.as_str())));
    assert!(!want.satisfied_by(|m| ["virtio_blk", "virtio"].contains(&m.as_str())));

    // Built-in via modules.builtin and via a built-in alias.
    assert!(index.requirement_for_driver("loop").is_builtin());
    let crc = index.requirement_for_driver("crc32c");
    assert_eq!(crc.source, Some(LookupSource::BuiltinAliases));
    assert_eq!(crc.candidates[0].module, "crc32c_generic");

    // Names only: a modalias is not a driver name.
    let none = index.requirement_for_driver("virtio:d00000002v00001AF4");
    assert!(!none.is_resolvable());
    assert!(!none.satisfied_by(|_| true));
}

/// A kernel whose modules.alias names `ghost`, which modules.dep does not have.
fn ghost_tree() -> ModuleIndex {
    ModuleIndex::from_parts(IndexSources {
        modules_dep: "kernel/a.ko:\n",
        modules_alias: "alias dev:thing ghost\n",
        ..IndexSources::default()
    })
}

#[test]
fn unknown_alias_module_is_reported_missing() {
    let index = ghost_tree();
    let want = index.requirement("dev:thing");
    assert_eq!(want.candidates[0].provider, Provider::Missing);
    assert_eq!(want.candidates[0].missing_hard(|_| true), names(&["ghost"]));
    assert_eq!(index.load_plan("dev:thing"), [LoadStep::Unavailable { module: name("ghost") }]);
}

#[test]
fn malformed_lines_are_skipped_and_reported() {
    let index = ModuleIndex::from_parts(IndexSources {
        modules_dep: "kernel/a.ko:\nno colon here\nkernel/a.ko: kernel/b.ko\n",
        modules_alias: "alias x[ a\nalias y] a\nalias z\nalias ok a\n",
        modules_builtin_modinfo: b"nodot\0a.alias=\0",
        ..IndexSources::default()
    });
    let skipped: Vec<_> = index.skipped_lines().iter().map(|s| (s.file, s.line)).collect();
    assert_eq!(
        skipped,
        [
            ("modules.dep", 2),
            ("modules.dep", 3),
            ("modules.alias", 1),
            ("modules.alias", 2),
            ("modules.alias", 3),
            ("modules.builtin.modinfo", 1),
        ]
    );
    // Damage, or what depmod writes itself.
    let damage: Vec<_> = index.skipped_lines().iter().map(SkippedLine::is_damage).collect();
    assert_eq!(damage, [true, true, false, false, true, true]);
    // The first modules.dep line for `a` is kept.
    assert_eq!(index.dependencies(&name("a")).unwrap(), names(&[]));
    assert_eq!(index.resolve_modalias("ok"), names(&["a"]));
    assert_eq!(index.alias_count(), 1);
}

#[test]
fn load_reads_a_directory_and_names_missing_files() {
    let tmp = tempfile::tempdir().unwrap();
    let tmp = tmp.path();
    let dir = tmp.join("lib/modules/6.6.30");
    fs::create_dir_all(&dir).unwrap();

    let err = ModuleIndex::load(&dir).unwrap_err();
    assert!(matches!(&err, KmodError::MissingFile { file: "modules.dep", .. }), "{err:?}");
    assert!(err.to_string().contains("modules.dep is missing"), "{err}");

    fs::write(dir.join("modules.dep"), DEP).unwrap();
    fs::write(dir.join("modules.alias"), ALIAS).unwrap();
    fs::write(dir.join("modules.builtin.modinfo"), MODINFO).unwrap();
    let index = ModuleIndex::load(&dir).unwrap();
    assert_eq!(index.kernel_version(), Some("6.6.30"));
    assert_eq!(index.dir(), Some(dir.as_path()));
    assert_eq!(index.absent_files(), ["modules.softdep", "modules.builtin", "modules.symbols"]);
    assert_eq!(index.module_count(), 23);
    assert_eq!(index.module_path(&name("virtio_scsi")), Some("kernel/drivers/scsi/virtio_scsi.ko.zst"));
    assert_eq!(index.resolve_modalias("virtio:d00000002v00001AF4"), names(&["virtio_blk"]));
    // Without modules.builtin, only modinfo tells what is built in.
    assert!(!index.is_builtin(&name("zswap")));
    assert!(index.is_builtin(&name("loop")));

    // A trailing slash and `.` components do not hide the version.
    let index = ModuleIndex::load(dir.join(".")).unwrap();
    assert_eq!(index.kernel_version(), Some("6.6.30"));

    let file = dir.join("modules.dep");
    assert!(matches!(ModuleIndex::load(&file), Err(KmodError::NotADirectory(_))));
    assert!(matches!(ModuleIndex::load(tmp.join("absent")), Err(KmodError::Io { .. })));
}

#[test]
fn metadata_files_that_are_devices_fifos_or_huge_are_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("lib/modules/6.6.30");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("modules.dep"), DEP).unwrap();
    for file in ["modules.dep", "modules.alias", "modules.softdep", "modules.builtin", "modules.builtin.modinfo"] {
        let path = dir.join(file);
        // Without O_NONBLOCK the open of a FIFO alone would wait for a writer forever.
        for (hostile, says) in fleetgate_files::testing::hostile_files(tmp.path(), file) {
            let _ = fs::remove_file(&path);
            std::os::unix::fs::symlink(&hostile, &path).unwrap();
            let err = ModuleIndex::load(&dir).expect_err("refused");
            assert!(err.to_string().contains(says), "{file}: {err}");
        }
        fs::remove_file(&path).unwrap();
        let big = fs::File::create(&path).unwrap();
        big.set_len(MAX_METADATA_FILE.bytes + 1).unwrap();
        let err = ModuleIndex::load(&dir).expect_err("too large");
        assert!(err.to_string().contains("more than a kernel module metadata file can be"), "{file}: {err}");
        fs::remove_file(&path).unwrap();
        if file == "modules.dep" {
            fs::write(&path, DEP).unwrap();
        }
    }
    assert!(ModuleIndex::load(&dir).is_ok());
}

#[test]
fn what_a_candidate_lacks_depends_on_where_it_comes_from() {
    let index = debianish();
    // A module file: its dependencies in load order, then itself, each
    // unless present.
    let nvme = &index.requirement("nvme").candidates[0];
    assert!(!nvme.is_builtin());
    assert_eq!(nvme.missing_hard(|_| false), names(&["crct10dif_common", "crc_t10dif", "nvme_core", "nvme"]));
    assert_eq!(nvme.missing_hard(|m| m != "crc_t10dif"), names(&["crc_t10dif"]));
    assert!(nvme.missing_hard(|_| true).is_empty());
    // Built in: nothing is ever missing, present or not.
    let loop_ = &index.requirement_for_driver("loop").candidates[0];
    assert!(loop_.is_builtin());
    assert!(loop_.missing_hard(|_| false).is_empty());
    assert!(loop_.missing_soft(|_| false).is_empty());
    // Named by an alias but nowhere else: always missing, never built in.
    let ghost = ghost_tree().requirement("dev:thing");
    assert!(!ghost.candidates[0].is_builtin());
    assert_eq!(ghost.candidates[0].missing_hard(|_| true), names(&["ghost"]));
    assert!(!ghost.satisfied_by(|_| true));
    assert!(!ghost.is_builtin());
}

#[test]
fn a_requirement_is_built_in_resolvable_and_satisfied_only_when_it_is() {
    let index = debianish();
    let builtin = index.requirement("devname:loop-control");
    assert_eq!(builtin.source, Some(LookupSource::BuiltinAliases));
    assert!(builtin.is_resolvable() && builtin.is_builtin());
    assert!(builtin.satisfied_by(|_| false), "built in needs nothing from the initrd");
    let file = index.requirement("virtio:d00000002v00001AF4");
    assert!(file.is_resolvable() && !file.is_builtin());
    assert!(!file.satisfied_by(|_| false));
    assert!(file.satisfied_by(|_| true));
    let nothing = index.requirement("dev:nothing-at-all");
    assert!(!nothing.is_resolvable() && !nothing.is_builtin());
    assert!(nothing.candidates.is_empty() && nothing.source.is_none());
    assert!(!nothing.satisfied_by(|_| true));
}

#[test]
fn soft_dependencies_count_only_when_they_are_module_files() {
    // ext4's softdep names a module file (crc32c via crc32c_intel) and a
    // built-in one; only the file can be missing from an initrd.
    let index = ModuleIndex::from_parts(IndexSources {
        modules_dep: "kernel/fs/ext4.ko: kernel/fs/jbd2.ko\nkernel/fs/jbd2.ko:\nkernel/crc32c-intel.ko:\n",
        modules_alias: "alias crypto-crc32c crc32c_intel\n",
        modules_softdep: "softdep ext4 pre: crypto-crc32c post: crc16 nowhere\n",
        modules_builtin: "kernel/lib/crc16.ko\n",
        ..IndexSources::default()
    });
    let ext4 = &index.requirement("ext4").candidates[0];
    assert_eq!(ext4.dependencies, names(&["jbd2"]));
    assert_eq!(ext4.softdep_modules, names(&["crc32c_intel", "crc16"]));
    assert_eq!(ext4.missing_soft(|_| false), names(&["crc32c_intel"]));
    assert!(ext4.missing_soft(|m| m == "crc32c_intel").is_empty());
    // Soft dependencies never make a requirement unsatisfied.
    assert!(index.requirement("ext4").satisfied_by(|m| ["ext4", "jbd2"].contains(&m.as_str())));
}
