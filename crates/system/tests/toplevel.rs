//! Fixture toplevels built in temporary directories, laid out like
//! nixpkgs' `top-level.nix` / `kernel.nix` / `bootspec.nix` /
//! `switchable-system.nix` build them: links into a shared fake store, so
//! two systems share a component exactly when they link the same store item.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use fleetgate_system::{
    Component, ComponentValue, DecisionNote, Effect, RootSpec, SwitchReason, SystemError, SystemToplevel,
    compare_for_switch,
};

/// A fake `/nix/store` plus any number of system toplevels in it.
struct Store {
    _tmp: tempfile::TempDir,
    root: PathBuf,
}

/// What one fixture system contains; `None` leaves the entry out.
#[derive(Clone)]
struct Sys {
    nixos_version: Option<&'static str>,
    init_interface_version: Option<&'static str>,
    kernel: Option<&'static str>,
    initrd: Option<&'static str>,
    modules: Option<(&'static str, &'static str)>, // (store item, kernel version)
    firmware: Option<&'static str>,
    systemd: Option<&'static str>,
    kernel_params: Option<&'static str>,
    inhibitors: Option<&'static str>,
    fstab: Option<&'static str>,
    boot_json: bool,
}

impl Default for Sys {
    fn default() -> Self {
        Sys {
            nixos_version: Some("25.05.20250601.abcdef0"),
            init_interface_version: Some("systemd 2"),
            kernel: Some("linux-6.6.30"),
            initrd: Some("initrd-linux-6.6.30"),
            modules: Some(("linux-6.6.30-modules", "6.6.30")),
            firmware: Some("firmware"),
            systemd: Some("systemd-256.8"),
            kernel_params: Some("loglevel=4 root=fstab"),
            inhibitors: Some(r#"{"dbus-implementation":"dbus"}"#),
            fstab: Some(FSTAB),
            boot_json: true,
        }
    }
}

const FSTAB: &str = "# This is a generated file.  Do not edit!\n\
#\n\
# To make changes, edit the fileSystems and swapDevices NixOS options\n\
# in your /etc/nixos/configuration.nix file.\n\
#\n\
# <file system> <mount point>   <type>  <options>       <dump>  <pass>\n\
\n\
# Filesystems.\n\
/dev/disk/by-label/NIXOS_ROOT / ext4 defaults 0 1\n\
/dev/disk/by-label/ESP /boot vfat umask=0077 0 2\n\
\n\
# Swap devices.\n";

impl Store {
    fn new() -> Store {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("nix/store");
        fs::create_dir_all(&root).expect("store");
        Store { _tmp: tmp, root }
    }

    /// A store item (created once) with a file or directory inside.
    fn item(&self, name: &str, inner: &str, dir: bool) -> PathBuf {
        let item = self.root.join(name);
        let path = if inner.is_empty() { item.clone() } else { item.join(inner) };
        if dir {
            fs::create_dir_all(&path).expect("item dir");
        } else if !path.exists() {
            fs::create_dir_all(path.parent().expect("parent")).expect("item parent");
            fs::write(&path, name).expect("item file");
        }
        path
    }

    fn text_item(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.root.join(name);
        fs::write(&path, contents).expect("text item");
        path
    }

    fn system(&self, name: &str, sys: &Sys) -> PathBuf {
        let out = self.root.join(name);
        fs::create_dir_all(&out).expect("toplevel");
        let write = |entry: &str, text: &str| fs::write(out.join(entry), text).expect("write");
        let link = |entry: &str, target: &Path| symlink(target, out.join(entry)).expect("symlink");

        if let Some(v) = sys.nixos_version {
            write("nixos-version", v);
        }
        if let Some(v) = sys.init_interface_version {
            write("init-interface-version", v);
        }
        write("system", "x86_64-linux");
        let kernel = sys.kernel.map(|k| self.item(k, "bzImage", false));
        if let Some(k) = &kernel {
            link("kernel", k);
        }
        let initrd = sys.initrd.map(|i| self.item(i, "initrd", false));
        if let Some(i) = &initrd {
            link("initrd", i);
        }
        if let Some((item, version)) = sys.modules {
            let dir = self.item(item, &format!("lib/modules/{version}"), true);
            fs::write(dir.join("modules.dep"), "").expect("modules.dep");
            link("kernel-modules", &self.root.join(item));
        }
        if let Some(f) = sys.firmware {
            link("firmware", &self.item(f, "lib/firmware", true));
        }
        if let Some(s) = sys.systemd {
            link("systemd", &self.item(s, "lib/systemd", true).join("../.."));
        }
        if let Some(p) = sys.kernel_params {
            write("kernel-params", p);
        }
        if let Some(json) = sys.inhibitors {
            link("switch-inhibitors", &self.text_item(&format!("{name}-switch-inhibitors"), json));
        }
        if let Some(fstab) = sys.fstab {
            let etc = self.item(&format!("{name}-etc"), "etc", true);
            symlink(self.text_item(&format!("{name}-fstab"), fstab), etc.join("fstab")).expect("fstab");
            link("etc", &etc);
        }
        if sys.boot_json {
            let params: Vec<String> =
                sys.kernel_params.unwrap_or("").split_whitespace().map(|p| format!("{p:?}")).collect();
            let doc = format!(
                r#"{{
  "org.nixos.bootspec.v1": {{
    "init": "{out}/init",
    "initrd": "{initrd}",
    "initrdSecrets": "/nix/store/aaaa-append-initrd-secrets/bin/append-initrd-secrets",
    "kernel": "{kernel}",
    "kernelParams": [{params}],
    "label": "NixOS Warbler 25.05.20250601.abcdef0 (Linux 6.6.30)",
    "system": "x86_64-linux",
    "toplevel": "{out}"
  }},
  "org.nixos.specialisation.v1": {{}},
  "org.nixos.systemd-boot": {{ "sortKey": "nixos" }}
}}"#,
                out = out.display(),
                initrd = initrd.as_deref().unwrap_or(Path::new("/missing")).display(),
                kernel = kernel.as_deref().unwrap_or(Path::new("/missing")).display(),
                params = params.join(", "),
            );
            write("boot.json", &doc);
        }
        out
    }
}

fn open(path: &Path) -> SystemToplevel {
    SystemToplevel::open(path).expect("open fixture toplevel")
}

#[test]
fn reads_every_field_of_a_toplevel() {
    let store = Store::new();
    let path = store.system("aaaa-nixos-system-vps-25.05", &Sys::default());
    let sys = open(&path);

    assert_eq!(sys.path(), fs::canonicalize(&path).unwrap());
    assert_eq!(sys.nixos_version(), Some("25.05.20250601.abcdef0"));
    assert_eq!(sys.init_interface_version(), Some("systemd 2"));
    assert_eq!(sys.system(), Some("x86_64-linux"));
    assert_eq!(sys.kernel_path(), Some(store.root.join("linux-6.6.30/bzImage").as_path()));
    assert_eq!(sys.initrd_path(), Some(store.root.join("initrd-linux-6.6.30/initrd").as_path()));
    assert_eq!(sys.kernel_modules_path(), Some(store.root.join("linux-6.6.30-modules").as_path()));
    assert_eq!(sys.kernel_modules_dir().unwrap(), path.join("kernel-modules/lib/modules/6.6.30"));
    assert_eq!(sys.kernel_version().unwrap(), "6.6.30");
    assert_eq!(sys.kernel_params(), ["loglevel=4", "root=fstab"]);
    assert_eq!(sys.firmware_path(), Some(store.root.join("firmware/lib/firmware").as_path()));
    assert_eq!(sys.systemd_path(), Some(store.root.join("systemd-256.8").as_path()));
    assert_eq!(
        sys.switch_inhibitors().unwrap().into_iter().collect::<Vec<_>>(),
        [("dbus-implementation".to_owned(), "dbus".to_owned())]
    );

    let spec = sys.bootspec_v1().expect("bootspec");
    assert_eq!(spec.system, "x86_64-linux");
    assert_eq!(spec.label, "NixOS Warbler 25.05.20250601.abcdef0 (Linux 6.6.30)");
    assert_eq!(spec.init, path.join("init"));
    assert_eq!(spec.kernel_params, ["loglevel=4", "root=fstab"]);
    let doc = sys.bootspec().expect("boot.json");
    assert_eq!(doc.extensions["org.nixos.systemd-boot"]["sortKey"], "nixos");
    let fleetgate_system::bootspec::generation::Generation::V1(generation) = &doc.generation else {
        panic!("not bootspec v1");
    };
    assert!(generation.specialisations.is_empty());

    let root = sys.root_filesystem().unwrap();
    assert_eq!(root.device(), Some(RootSpec::Label("NIXOS_ROOT".into())));
    assert_eq!(root.fs_type(), Some("ext4"));
    assert_eq!(root.kernel_root, None, "root=fstab is no device of its own");
    assert_eq!(sys.fstab().unwrap().len(), 2);
}

#[test]
fn opening_through_a_link_resolves_it() {
    let store = Store::new();
    let path = store.system("aaaa-nixos-system-vps-25.05", &Sys::default());
    let run = store.root.parent().unwrap().join("current-system");
    symlink(&path, &run).unwrap();
    assert_eq!(open(&run).path(), fs::canonicalize(&path).unwrap());
}

#[test]
fn plain_directories_work_too() {
    // No store, no links: regular files where NixOS has symlinks.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    fs::write(dir.join("nixos-version"), "24.11").unwrap();
    fs::write(dir.join("kernel"), "bzImage").unwrap();
    fs::create_dir_all(dir.join("kernel-modules/lib/modules/6.1.0")).unwrap();
    let sys = open(dir);
    assert_eq!(sys.kernel_path(), Some(fs::canonicalize(dir.join("kernel")).unwrap().as_path()));
    assert_eq!(sys.kernel_version().unwrap(), "6.1.0");
    assert_eq!(sys.initrd_path(), None);
    assert!(sys.kernel_params().is_empty());
    assert!(sys.switch_inhibitors().unwrap().is_empty());
    assert!(sys.bootspec().is_none());
    assert!(matches!(sys.fstab(), Err(SystemError::Missing(p)) if p.ends_with("etc/fstab")));
}

#[test]
fn links_into_an_absent_store_keep_their_targets() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    fs::write(dir.join("nixos-version"), "25.05").unwrap();
    let target = "/nix/store/zzzz-fleetgate-test-absent-linux/bzImage";
    symlink(target, dir.join("kernel")).unwrap();
    assert_eq!(open(dir).kernel_path(), Some(Path::new(target)));
}

#[test]
fn kernel_and_initrd_fall_back_to_the_bootspec() {
    let store = Store::new();
    let path = store.system("a-sys", &Sys::default());
    fs::remove_file(path.join("kernel")).unwrap();
    fs::remove_file(path.join("initrd")).unwrap();
    let top = open(&path);
    assert_eq!(top.kernel_path(), Some(store.root.join("linux-6.6.30/bzImage").as_path()));
    assert_eq!(top.initrd_path(), Some(store.root.join("initrd-linux-6.6.30/initrd").as_path()));
}

#[test]
fn open_rejects_what_is_not_a_system() {
    let tmp = tempfile::tempdir().unwrap();
    assert!(matches!(SystemToplevel::open(tmp.path().join("absent")), Err(SystemError::Io { .. })));
    let file = tmp.path().join("file");
    fs::write(&file, "").unwrap();
    assert!(matches!(SystemToplevel::open(&file), Err(SystemError::NotADirectory(_))));
    let empty = tmp.path().join("empty");
    fs::create_dir(&empty).unwrap();
    let err = SystemToplevel::open(&empty).unwrap_err();
    assert!(matches!(err, SystemError::NotASystem(_)), "{err:?}");

    let bad = tmp.path().join("bad-bootspec");
    fs::create_dir(&bad).unwrap();
    fs::write(bad.join("boot.json"), r#"{"org.nixos.bootspec.v1": {"label": 3}}"#).unwrap();
    let err = SystemToplevel::open(&bad).unwrap_err();
    assert!(matches!(&err, SystemError::Bootspec { path, .. } if path.ends_with("boot.json")), "{err:?}");
}

#[test]
fn kernel_params_fall_back_to_the_bootspec() {
    let store = Store::new();
    let sys = Sys { kernel_params: Some("console=ttyS0 root=LABEL=NIXOS_ROOT"), ..Sys::default() };
    let path = store.system("a-sys", &sys);
    fs::remove_file(path.join("kernel-params")).unwrap();
    let top = open(&path);
    assert_eq!(top.kernel_params(), ["console=ttyS0", "root=LABEL=NIXOS_ROOT"]);
    let root = top.root_filesystem().unwrap();
    assert_eq!(root.kernel_root, Some(RootSpec::Label("NIXOS_ROOT".into())));
}

#[test]
fn kernel_modules_dir_needs_exactly_one_version() {
    let store = Store::new();
    let no_modules = Sys { modules: None, ..Sys::default() };
    let top = open(&store.system("a-sys", &no_modules));
    assert!(matches!(top.kernel_modules_dir(), Err(SystemError::Missing(_))));

    let path = store.system("b-sys", &Sys::default());
    fs::create_dir_all(store.root.join("linux-6.6.30-modules/lib/modules/6.6.31")).unwrap();
    let err = open(&path).kernel_version().unwrap_err();
    assert!(err.to_string().contains("several kernel versions: 6.6.30, 6.6.31"), "{err}");
}

#[test]
fn invalid_inhibitor_files_are_errors() {
    let store = Store::new();
    for (i, (json, needle)) in [
        ("not json", "expected"),
        (r#"["dbus"]"#, "not a JSON object"),
        (r#"{"dbus-implementation": 1}"#, "not a string"),
    ]
    .into_iter()
    .enumerate()
    {
        let sys = Sys { inhibitors: Some(json), ..Sys::default() };
        let top = open(&store.system(&format!("sys-{i}"), &sys));
        let err = top.switch_inhibitors().unwrap_err();
        assert!(err.to_string().contains(needle), "{json}: {err}");
    }
}

/// The incident: nixpkgs moved the default D-Bus implementation to broker.
#[test]
fn incident_dbus_inhibitor_refuses_the_switch_like_nixos() {
    let store = Store::new();
    let old = open(&store.system("old", &Sys::default()));
    let new =
        open(&store.system("new", &Sys { inhibitors: Some(r#"{"dbus-implementation": "broker"}"#), ..Sys::default() }));

    let decision = compare_for_switch(&old, &new, false);
    assert_eq!(
        decision.reasons,
        [SwitchReason::Inhibitor {
            key: "dbus-implementation".into(),
            old: "dbus".into(),
            new: "broker".into(),
            check_skipped: false,
        }]
    );
    assert_eq!(decision.reasons[0].to_string(), "dbus-implementation : dbus -> broker");
    assert_eq!(decision.reasons[0].effect(), Effect::SwitchRefused);
    assert!(decision.switch_refused());
    assert!(!decision.can_switch_live());
    assert!(decision.reboot_needed());
    assert_eq!(
        decision.nixos_refusal().as_deref(),
        Some(
            "Checking switch inhibitors...\n\
There are changes to critical components of the system:\n\
\n\
dbus-implementation : dbus -> broker\n\
\n\
Switching into this system is not recommended.\n\
You probably want to run 'nixos-rebuild boot' and reboot your system instead.\n\
\n\
If you really want to switch into this configuration directly, then\n\
you can set NIXOS_NO_CHECK=1 to ignore pre-switch checks.\n\
\n\
WARNING: doing so might cause the switch to fail or your system to become unstable.\n\
\n\
Pre-switch check 'switchInhibitors' failed\n\
Pre-switch checks failed\n"
        )
    );

    // NIXOS_NO_CHECK=1 skips the check: the switch proceeds.
    let forced = compare_for_switch(&old, &new, true);
    assert_eq!(forced.reasons.len(), 1);
    assert_eq!(forced.reasons[0].effect(), Effect::CheckSkipped);
    assert!(forced.can_switch_live());
    assert!(!forced.reboot_needed());
    assert_eq!(forced.nixos_refusal(), None);

    // And the same system again is no reason at all.
    let same = compare_for_switch(&new, &new, false);
    assert!(same.reasons.is_empty() && same.notes.is_empty());
    assert!(same.can_switch_live() && !same.reboot_needed());
}

#[test]
fn only_keys_in_both_systems_with_different_values_block() {
    let store = Store::new();
    let old = open(&store.system(
        "old",
        &Sys {
            inhibitors: Some(r#"{"zfs":"2.2","gone":"x","dbus-implementation":"dbus","same":"1"}"#),
            ..Sys::default()
        },
    ));
    let new = open(&store.system(
        "new",
        &Sys {
            inhibitors: Some(r#"{"same":"1","added":"y","zfs":"2.3","dbus-implementation":"broker"}"#),
            ..Sys::default()
        },
    ));
    let decision = compare_for_switch(&old, &new, false);
    let lines: Vec<String> = decision.reasons.iter().map(ToString::to_string).collect();
    assert_eq!(lines, ["dbus-implementation : dbus -> broker", "zfs : 2.2 -> 2.3"]);
    let text = decision.nixos_refusal().unwrap();
    assert!(text.contains("\n\ndbus-implementation : dbus -> broker\nzfs : 2.2 -> 2.3\n\n"), "{text}");

    // A system without the file (older nixpkgs) inhibits nothing.
    let without = open(&store.system("without", &Sys { inhibitors: None, ..Sys::default() }));
    assert!(compare_for_switch(&without, &new, false).reasons.is_empty());
    assert!(compare_for_switch(&new, &without, false).reasons.is_empty());
}

#[test]
fn unreadable_inhibitors_inhibit_nothing_but_are_noted() {
    let store = Store::new();
    let old = open(&store.system("old", &Sys { inhibitors: Some("{broken"), ..Sys::default() }));
    let new =
        open(&store.system("new", &Sys { inhibitors: Some(r#"{"dbus-implementation":"broker"}"#), ..Sys::default() }));
    let decision = compare_for_switch(&old, &new, false);
    assert!(decision.reasons.is_empty());
    assert!(matches!(
        decision.notes.as_slice(),
        [DecisionNote::UnreadableInhibitors { path, .. }] if path.ends_with("old/switch-inhibitors")
    ));
}

#[test]
fn init_interface_change_refuses_activation_even_without_checks() {
    let store = Store::new();
    let old = open(&store.system("old", &Sys::default()));
    let new = open(&store.system("new", &Sys { init_interface_version: Some("systemd 3"), ..Sys::default() }));
    for no_check in [false, true] {
        let decision = compare_for_switch(&old, &new, no_check);
        assert_eq!(
            decision.reasons,
            [SwitchReason::InitInterfaceVersion { old: Some("systemd 2".into()), new: Some("systemd 3".into()) }]
        );
        assert_eq!(decision.reasons[0].effect(), Effect::ActivationRefused);
        assert!(!decision.can_switch_live() && !decision.switch_refused());
        assert!(decision.reboot_needed());
        assert_eq!(decision.nixos_refusal(), None);
    }

    // A current system without the file reads as "" (as
    // switch-to-configuration's unwrap_or_default does).
    let no_file = Sys { init_interface_version: None, ..Sys::default() };
    let old = open(&store.system("old-without", &no_file));
    let decision = compare_for_switch(&old, &new, false);
    assert_eq!(decision.reasons, [SwitchReason::InitInterfaceVersion { old: None, new: Some("systemd 3".into()) }]);
    // A new system without it makes switch-to-configuration fail.
    let decision = compare_for_switch(&new, &old, false);
    assert_eq!(decision.reasons, [SwitchReason::MissingInitInterfaceVersion]);
    assert_eq!(decision.reasons[0].effect(), Effect::ActivationRefused);
}

#[test]
fn every_boot_component_change_needs_a_reboot() {
    let store = Store::new();
    let base = Sys::default();
    let old = open(&store.system("old", &base));
    let changes: [(Component, Sys); 6] = [
        (Component::Kernel, Sys { kernel: Some("linux-6.6.31"), ..base.clone() }),
        (Component::Initrd, Sys { initrd: Some("initrd-linux-6.6.30-with-virtio"), ..base.clone() }),
        (Component::KernelModules, Sys { modules: Some(("linux-6.6.30-modules-2", "6.6.30")), ..base.clone() }),
        (Component::KernelParams, Sys { kernel_params: Some("loglevel=7 root=fstab"), ..base.clone() }),
        (Component::Firmware, Sys { firmware: Some("firmware-2"), ..base.clone() }),
        (Component::Systemd, Sys { systemd: Some("systemd-257.1"), ..base.clone() }),
    ];
    for (i, (component, sys)) in changes.into_iter().enumerate() {
        let new = open(&store.system(&format!("new-{i}"), &sys));
        let decision = compare_for_switch(&old, &new, false);
        assert_eq!(decision.reasons.len(), 1, "{component:?}: {:?}", decision.reasons);
        let SwitchReason::Changed { component: got, old: was, new: now } = &decision.reasons[0] else {
            panic!("{component:?}: {:?}", decision.reasons);
        };
        assert_eq!(*got, component);
        assert_ne!(was, now);
        assert_eq!(decision.reasons[0].effect(), Effect::RebootToTakeEffect);
        assert!(decision.can_switch_live() && decision.reboot_needed());
    }

    // The messages name the component and both values.
    let new = open(&store.system("params", &Sys { kernel_params: Some("loglevel=7 root=fstab"), ..base.clone() }));
    assert_eq!(
        compare_for_switch(&old, &new, false).reasons[0].to_string(),
        "kernel-params : loglevel=4 root=fstab -> loglevel=7 root=fstab"
    );

    // A container-like system without kernel and initrd against one with.
    let bare = open(&store.system("bare", &Sys { kernel: None, initrd: None, boot_json: false, ..base.clone() }));
    let reasons = compare_for_switch(&old, &bare, false).reasons;
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(matches!(
        &reasons[0],
        SwitchReason::Changed { component: Component::Kernel, new: ComponentValue::Absent, .. }
    ));

    // A rebuilt toplevel that links the same store items changes nothing.
    let rebuilt = open(&store.system("rebuilt", &base));
    assert!(compare_for_switch(&old, &rebuilt, false).reasons.is_empty());
}

#[test]
fn reasons_come_in_a_stable_order() {
    let store = Store::new();
    let old = open(&store.system("old", &Sys::default()));
    let new = open(&store.system(
        "new",
        &Sys {
            kernel: Some("linux-6.12.1"),
            modules: Some(("linux-6.12.1-modules", "6.12.1")),
            init_interface_version: Some("systemd 3"),
            inhibitors: Some(r#"{"dbus-implementation":"broker"}"#),
            ..Sys::default()
        },
    ));
    let decision = compare_for_switch(&old, &new, false);
    let effects: Vec<Effect> = decision.reasons.iter().map(SwitchReason::effect).collect();
    assert_eq!(
        effects,
        [Effect::SwitchRefused, Effect::ActivationRefused, Effect::RebootToTakeEffect, Effect::RebootToTakeEffect]
    );
    assert_eq!(decision.with_effect(Effect::RebootToTakeEffect).count(), 2);
}
