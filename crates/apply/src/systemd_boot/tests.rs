//! Tests of [`super`]: systemd's own version-comparison series, every
//! listing line, the menu order, the default's resolution, and the listing
//! script against an ESP on this machine.

use super::*;

fn system(sd: &SdBoot, efi: Option<&str>) -> Option<String> {
    sd.default_entry(efi).and_then(|e| e.system.clone())
}

#[test]
fn classic_names_exact_default_efi_variable_and_glob() {
    let listing = "entry\tnixos-generation-9.conf\t/nix/store/a-nine/init\n\
                   entry\tnixos-generation-10+3.conf\t/nix/store/b-ten/init\n\
                   entry\tnixos-generation-2.conf\t/nix/store/c-two/init\n";
    let exact = SdBoot::parse(&format!("{listing}default\tnixos-generation-9.conf\n"));
    assert_eq!(system(&exact, None).as_deref(), Some("/nix/store/a-nine"));
    // The EFI variable wins over loader.conf; an unknown id falls back to loader.conf.
    assert_eq!(system(&exact, Some("nixos-generation-2.conf")).as_deref(), Some("/nix/store/c-two"));
    assert_eq!(system(&exact, Some("gone.conf")).as_deref(), Some("/nix/store/a-nine"));
    // Ids are compared in lower case, as systemd-boot folds them.
    assert_eq!(system(&exact, Some("NixOS-Generation-2.conf")).as_deref(), Some("/nix/store/c-two"));
    // A glob: the first in menu order; without sort-keys that is the id, newest first (10 > 9 > 2).
    let glob = SdBoot::parse(&format!("{listing}default\tnixos-generation-*\n"));
    assert_eq!(system(&glob, None).as_deref(), Some("/nix/store/b-ten"));
    // Nothing says: cannot tell.
    let none = SdBoot::parse(listing).default_resolution(None).expect_err("nothing names one");
    assert!(none.contains("first of its menu"), "{none}");
}

/// Current nixpkgs names entries by content hash, so `default nixos-*`
/// picks by `version` (sort-key `nixos` on all), not by name; and an
/// entry whose tries are exhausted goes last.
#[test]
fn content_hashed_entries_follow_their_version_not_their_name() {
    let entry = |file: &str, system: &str, generation: u32| {
        format!(
            "entry\t{file}\nkey\tinit\t/nix/store/{system}/init\nkey\tversion\tGeneration {generation} NixOS 25.11, built on 2026-01-0{generation}\n\
             key\tsort-key\tnixos\nkey\tmachine-id\t0123456789abcdef0123456789abcdef\n"
        )
    };
    let listing = format!(
        "{}{}{}default\tnixos-*\n",
        entry("nixos-ffff0000.conf", "old", 8),
        entry("nixos-0000aaaa.conf", "new", 9),
        entry("nixos-8888bbbb.conf", "mid", 3),
    );
    let sd = SdBoot::parse(&listing);
    let ids: Vec<String> = sd.menu().iter().map(|e| e.id()).collect();
    assert_eq!(ids, ["nixos-0000aaaa.conf", "nixos-ffff0000.conf", "nixos-8888bbbb.conf"]);
    assert_eq!(system(&sd, None).as_deref(), Some("/nix/store/new"));
    // The newest, its tries used up: it goes last, the next newest boots.
    let bad = SdBoot::parse(&listing.replace("nixos-0000aaaa.conf", "nixos-0000aaaa+0-3.conf"));
    assert_eq!(system(&bad, None).as_deref(), Some("/nix/store/old"));
    // An entry without sort-key goes after those with one.
    let mixed = SdBoot::parse(&format!("entry\tnixos-zzzz.conf\t/nix/store/x/init\n{listing}"));
    assert_eq!(system(&mixed, None).as_deref(), Some("/nix/store/new"));
}

fn preferred_listing(loader: &str, preferred: &str) -> String {
    format!(
        "entry\tnixos-aaaa+3.conf\nkey\tinit\t/nix/store/new/init\nkey\tversion\tGeneration 2\nkey\tsort-key\tnixos\n\
         entry\tnixos-bbbb.conf\nkey\tinit\t/nix/store/old/init\nkey\tversion\tGeneration 1\nkey\tsort-key\tnixos\n\
         default\tnixos-*\npreferred\t{preferred}\n{loader}"
    )
}

/// nixpkgs with boot counting writes `preferred nixos-<hash>.conf` and
/// `default nixos-*`. systemd-boot ≥ 260 boots the preferred one unless
/// its tries are used up; an older one ignores the key; an unknown
/// version is "cannot tell" where the two differ.
#[test]
fn preferred_counts_only_where_the_systemd_boot_on_the_esp_knows_it() {
    let v = |n: &str| format!("loader\t#### LoaderInfo: systemd-boot {n} ####\n");
    let new_loader = SdBoot::parse(&preferred_listing(&v("260.1"), "nixos-bbbb.conf"));
    assert_eq!(new_loader.loader_versions, ["260.1"]);
    assert_eq!(system(&new_loader, None).as_deref(), Some("/nix/store/old"));
    let old_loader = SdBoot::parse(&preferred_listing(&v("257.9"), "nixos-bbbb.conf"));
    assert_eq!(system(&old_loader, None).as_deref(), Some("/nix/store/new"));
    let unknown = SdBoot::parse(&preferred_listing("", "nixos-bbbb.conf"));
    let why = unknown.default_resolution(None).expect_err("cannot tell");
    assert!(why.contains("preferred nixos-bbbb.conf") && why.contains("version on the ESP is not known"), "{why}");
    let mixed = SdBoot::parse(&preferred_listing(&format!("{}{}", v("260"), v("255.4")), "nixos-bbbb.conf"));
    assert!(mixed.default_resolution(None).expect_err("mixed").contains("260, 255.4"));
    // Where preferred and default agree, the version does not matter.
    let agree = SdBoot::parse(&preferred_listing("", "nixos-aaaa.conf"));
    assert_eq!(system(&agree, None).as_deref(), Some("/nix/store/new"));
    // A preferred entry whose tries are used up falls through to default.
    let used_up = SdBoot::parse(
        &preferred_listing(&v("261"), "nixos-aaaa.conf").replace("nixos-aaaa+3.conf", "nixos-aaaa+0-3.conf"),
    );
    assert_eq!(system(&used_up, None).as_deref(), Some("/nix/store/old"));
    // The EFI variable against a preferred that names another entry: not known which wins.
    let why = new_loader.default_resolution(Some("nixos-aaaa.conf")).expect_err("unknown precedence");
    assert!(why.contains("LoaderEntryDefault") && why.contains("names nixos-bbbb.conf"), "{why}");
    assert_eq!(system(&new_loader, Some("nixos-bbbb.conf")).as_deref(), Some("/nix/store/old"));
    assert_eq!(system(&old_loader, Some("nixos-bbbb.conf")).as_deref(), Some("/nix/store/old"));
}

#[test]
fn a_failed_trial_falls_back_only_to_a_default_that_is_the_fallback() {
    let v260 = "loader\t#### LoaderInfo: systemd-boot 260 ####\n";
    let sd = SdBoot::parse(&preferred_listing(v260, "nixos-bbbb.conf"));
    assert_eq!(sd.falls_back_to("/nix/store/old", None), Ok(()));
    assert_eq!(sd.falls_back_to("/nix/store/old", Some("nixos-bbbb.conf")), Ok(()));
    let other = sd.falls_back_to("/nix/store/new", None).expect_err("preferred boots old");
    assert!(other.contains("would boot nixos-bbbb.conf (/nix/store/old)"), "{other}");
    let unknown = sd.falls_back_to("/nix/store/new", Some("nixos-aaaa.conf")).expect_err("cannot tell");
    assert!(unknown.starts_with("the default after a failed trial cannot be told"), "{unknown}");
}

#[test]
fn entry_ids_drop_only_a_well_formed_counter() {
    let id = |f: &str| SdEntry { file: f.into(), ..SdEntry::default() };
    assert_eq!(id("nixos-generation-2+3.conf").id(), "nixos-generation-2.conf");
    assert_eq!(id("nixos-5f3a+2-1.conf").id(), "nixos-5f3a.conf");
    assert_eq!(id("nixos-5f3a+2-1.conf").tries_left(), Some(2));
    assert_eq!(id("nixos-5f3a+0-3.CONF").tries_left(), Some(0));
    for plain in ["a+.conf", "a+x.conf", "a+1-.conf", "a+1.efi", "memtest86.conf", "a+-1.conf"] {
        assert_eq!(id(plain).id(), plain, "{plain}");
        assert!(!id(plain).counting(), "{plain}");
    }
}

#[test]
fn listing_parses_every_line_kind() {
    let listing = "entry\tnixos-generation-1.conf\t/nix/store/aaa-old/init\n\
                   entry\tnixos-generation-2+3.conf\t/nix/store/bbb-mid/init\n\
                   entry\tnixos-5f3a9c0e1b2d+2-1.conf\nkey\tinit\t/nix/store/ccc-new/init\nkey\tversion\tGeneration 3\twith tab\n\
                   entry\tmemtest86.conf\t\n\
                   key\tbogus\tx\n\
                   default\tnixos-*\npreferred\t\nloader\tnot a magic\nefivars\npinned\n";
    let sd = SdBoot::parse(listing);
    assert_eq!(sd.entry_for("/nix/store/aaa-old").map(SdEntry::id).as_deref(), Some("nixos-generation-1.conf"));
    assert_eq!(sd.entry_for("/nix/store/bbb-mid").map(SdEntry::id).as_deref(), Some("nixos-generation-2.conf"));
    let new = sd.entry_for("/nix/store/ccc-new").expect("found by its key line");
    assert_eq!(new.id(), "nixos-5f3a9c0e1b2d.conf");
    assert!(new.counting());
    assert_eq!(new.version.as_deref(), Some("Generation 3\twith tab"));
    assert_eq!(sd.entries[3].system, None);
    assert_eq!(sd.conf_default.as_deref(), Some("nixos-*"));
    assert_eq!(sd.conf_preferred, None);
    assert_eq!(sd.loader_versions, [""]);
    assert!(sd.efivars && sd.pinned_before.as_deref() == Some(""));
}

/// The script itself, on this machine's `sh`/`awk`/`grep`: every line
/// kind, and exit 0 when the last binary on the ESP is not systemd-boot
/// (a shim as `BOOTX64.EFI`) — the installer runs it alone.
#[test]
fn listing_script_reads_an_esp() {
    let esp = tempfile::tempdir().expect("tmp");
    let p = |rel: &str| esp.path().join(rel);
    for d in ["loader/entries", "EFI/systemd", "EFI/BOOT"] {
        std::fs::create_dir_all(p(d)).expect("mkdir");
    }
    std::fs::write(p("loader/loader.conf"), "timeout 5\ndefault a\ndefault nixos-*\npreferred nixos-x.conf\n")
        .expect("w");
    std::fs::write(
        p("loader/entries/nixos-x+2-1.conf"),
        "title NixOS\nversion Generation 7 x\noptions rdinit=/r init=/nix/store/first/init init=/nix/store/last/init q\n\
         options init=/nix/store/second-line/init\nsort-key nixos",
    )
    .expect("w");
    std::fs::write(p("loader/entries/memtest.conf"), "title memtest\nefi /memtest.efi\n").expect("w");
    let mut sd_boot = b"MZ\0\0".to_vec();
    sd_boot.extend_from_slice(b"#### LoaderInfo: systemd-boot 257.9 ####\0more");
    std::fs::write(p("EFI/systemd/systemd-bootx64.efi"), sd_boot).expect("w");
    std::fs::write(p("EFI/BOOT/BOOTX64.EFI"), b"MZ shim, no magic").expect("w");
    let script = format!("esp='{}'\n{}", esp.path().display(), listing_script());
    let out = std::process::Command::new("sh").args(["-c", &script]).output().expect("sh");
    assert!(out.status.success(), "{out:?}");
    let sd = SdBoot::parse(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(sd.entries.len(), 2, "{sd:?}");
    let x = sd.entries.iter().find(|e| e.file == "nixos-x+2-1.conf").expect("x");
    // The last init= of the first options line (what the kernel takes), never rdinit=.
    assert_eq!(x.system.as_deref(), Some("/nix/store/last"));
    assert_eq!((x.version.as_deref(), x.sort_key.as_deref()), (Some("Generation 7 x"), Some("nixos")));
    assert_eq!(sd.conf_default.as_deref(), Some("nixos-*"));
    assert_eq!(sd.conf_preferred.as_deref(), Some("nixos-x.conf"));
    assert_eq!(sd.loader_versions, ["257.9"]);
    assert_eq!(sd.entries.iter().find(|e| e.file == "memtest.conf").map(|e| e.system.clone()), Some(None));
}

/// `strverscmp_improved`'s own examples, oldest to newest (the comment
/// above it in systemd's source), and what NixOS entries need.
#[test]
fn version_order_is_systemds() {
    let series = [
        "122.1",
        "123~rc1-1",
        "123",
        "123-a",
        "123-a.1",
        "123-1",
        "123-1.1",
        "123^post1",
        "123.a-1",
        "123.1-1",
        "123a-1",
        "124-1",
    ];
    for (i, a) in series.iter().enumerate() {
        assert_eq!(version_order(a, a), Ordering::Equal, "{a}");
        for b in &series[i + 1..] {
            assert_eq!(version_order(a, b), Ordering::Less, "{a} < {b}");
            assert_eq!(version_order(b, a), Ordering::Greater, "{b} > {a}");
        }
    }
    assert_eq!(version_order("Generation 10 x", "Generation 9 x"), Ordering::Greater);
    assert_eq!(version_order("a-010", "a-9"), Ordering::Greater);
    assert_eq!(version_order("00123", "123"), Ordering::Equal);
    assert_eq!(version_order("123_a", "123a"), Ordering::Equal);
    assert_eq!(version_order("", "1"), Ordering::Less);
    assert!(glob_match(b"nixos-?-*.conf", b"nixos-a-1.conf") && !glob_match(b"x*", b"y"));
}
