//! The lab's systemd-boot: which Type #1 entry on the ESP boots next.
//!
//! Follows systemd's `src/boot/boot.c` and the Boot Loader Specification:
//! - entries are `/loader/entries/*.conf`; a name ending `+LEFT[-DONE].conf`
//!   carries boot counters (`docs/AUTOMATIC_BOOT_ASSESSMENT.md`), and the entry
//!   id is the file name with the counter removed;
//! - sorting (`boot_entry_compare`): entries with no tries left go last; entries
//!   with a `sort-key` before those without, then by sort-key, machine-id and
//!   *descending* version; then descending id; then more tries left first,
//!   fewer tries done first;
//! - choice (`config_default_entry_select`): `LoaderEntryOneShot` (consumed on
//!   use), else `LoaderEntryDefault`, else `default` of `loader.conf` (a glob
//!   matched against ids in sorted order), else the first entry;
//! - before booting an entry with counters, LEFT is decremented and DONE
//!   incremented by renaming the file (only while LEFT > 0).

use std::cmp::Ordering;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::efivar;
use super::{BootChoice, FirmwareError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// File name as found on the ESP, with counters.
    pub file_name: String,
    /// The entry id: the file name without boot counters.
    pub id: String,
    pub tries_left: Option<u32>,
    pub tries_done: u32,
    pub title: Option<String>,
    pub version: Option<String>,
    pub sort_key: Option<String>,
    pub machine_id: Option<String>,
    pub linux: Option<String>,
    pub initrd: Vec<String>,
    pub options: String,
}

/// Splits `nixos-generation-5+2-1.conf` into id `nixos-generation-5.conf`,
/// tries left 2 and tries done 1.
pub fn parse_counters(file_name: &str) -> (String, Option<u32>, u32) {
    let Some(stem) = file_name.strip_suffix(".conf") else {
        return (file_name.to_owned(), None, 0);
    };
    if let Some((base, counters)) = stem.rsplit_once('+') {
        let (left, done) = counters.split_once('-').unwrap_or((counters, "0"));
        let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if all_digits(left) && all_digits(done) {
            if let (Ok(left), Ok(done)) = (left.parse(), done.parse()) {
                return (format!("{base}.conf"), Some(left), done);
            }
        }
    }
    (file_name.to_owned(), None, 0)
}

pub fn parse_entry(file_name: &str, text: &str) -> Entry {
    let (id, tries_left, tries_done) = parse_counters(file_name);
    let mut entry = Entry {
        file_name: file_name.to_owned(),
        id,
        tries_left,
        tries_done,
        title: None,
        version: None,
        sort_key: None,
        machine_id: None,
        linux: None,
        initrd: Vec::new(),
        options: String::new(),
    };
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let value = value.trim().to_owned();
        match key {
            "title" => entry.title = Some(value),
            "version" => entry.version = Some(value),
            "sort-key" => entry.sort_key = Some(value),
            "machine-id" => entry.machine_id = Some(value),
            "linux" => entry.linux = Some(value),
            "initrd" => entry.initrd.push(value),
            "options" => {
                if !entry.options.is_empty() {
                    entry.options.push(' ');
                }
                entry.options.push_str(&value);
            }
            _ => {}
        }
    }
    entry
}

/// `boot_entry_compare` of systemd-boot.
pub fn compare(a: &Entry, b: &Entry) -> Ordering {
    let bad = |e: &Entry| e.tries_left == Some(0);
    bad(a)
        .cmp(&bad(b))
        .then_with(|| a.sort_key.is_none().cmp(&b.sort_key.is_none()))
        .then_with(|| match (&a.sort_key, &b.sort_key) {
            (Some(ka), Some(kb)) => ka
                .cmp(kb)
                .then_with(|| a.machine_id.cmp(&b.machine_id))
                .then_with(|| version_compare(b.version.as_deref().unwrap_or(""), a.version.as_deref().unwrap_or(""))),
            _ => Ordering::Equal,
        })
        .then_with(|| version_compare(&b.id, &a.id))
        .then_with(|| match (a.tries_left, b.tries_left) {
            (Some(la), Some(lb)) => lb.cmp(&la).then_with(|| a.tries_done.cmp(&b.tries_done)),
            _ => Ordering::Equal,
        })
}

/// Version comparison in the spirit of systemd's `strverscmp_improved`: runs of
/// digits compare numerically, everything else bytewise.
pub fn version_compare(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    loop {
        match (a.first(), b.first()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let da = a.iter().take_while(|c| c.is_ascii_digit()).count();
                let db = b.iter().take_while(|c| c.is_ascii_digit()).count();
                let (na, nb) = (trim_zeros(&a[..da]), trim_zeros(&b[..db]));
                let ord = na.len().cmp(&nb.len()).then_with(|| na.cmp(nb));
                if ord != Ordering::Equal {
                    return ord;
                }
                a = &a[da..];
                b = &b[db..];
            }
            (Some(x), Some(y)) => {
                if x != y {
                    return x.cmp(y);
                }
                a = &a[1..];
                b = &b[1..];
            }
        }
    }
}

fn trim_zeros(digits: &[u8]) -> &[u8] {
    let zeros = digits.iter().take_while(|d| **d == b'0').count();
    &digits[zeros..]
}

/// Case-insensitive glob with `*` and `?`, as systemd-boot's `efi_fnmatch`
/// applies `default` patterns.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    fn go(p: &[char], t: &[char]) -> bool {
        match p.first() {
            None => t.is_empty(),
            Some('*') => (0..=t.len()).any(|i| go(&p[1..], &t[i..])),
            Some('?') => !t.is_empty() && go(&p[1..], &t[1..]),
            Some(c) => t.first().is_some_and(|x| x.eq_ignore_ascii_case(c)) && go(&p[1..], &t[1..]),
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    go(&p, &t)
}

/// Every entry on the ESP, in systemd-boot's menu order.
pub fn entries(esp: &Path) -> io::Result<Vec<Entry>> {
    let dir = esp.join("loader/entries");
    let mut entries = Vec::new();
    let listing = match fs::read_dir(&dir) {
        Ok(listing) => listing,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(entries),
        Err(err) => return Err(err),
    };
    for item in listing {
        let item = item?;
        let name = item.file_name().to_string_lossy().into_owned();
        if !name.ends_with(".conf") || !item.file_type()?.is_file() {
            continue;
        }
        entries.push(parse_entry(&name, &fs::read_to_string(item.path())?));
    }
    entries.sort_by(compare);
    Ok(entries)
}

fn loader_conf_default(esp: &Path) -> io::Result<Option<String>> {
    let text = match fs::read_to_string(esp.join("loader/loader.conf")) {
        Ok(text) => text,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(err),
    };
    Ok(text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("default"))
        .map(|v| v.trim().to_owned())
        .rfind(|v| !v.is_empty()))
}

/// Picks the entry to boot, consuming `LoaderEntryOneShot`, and bumps its boot
/// counters on the ESP as systemd-boot does before starting it.
pub fn choose(esp: &Path, efivars: &Path) -> Result<BootChoice, FirmwareError> {
    let io_err = |what: &str| {
        let what = what.to_owned();
        move |source: io::Error| FirmwareError::Io { what: what.clone(), source }
    };
    let list = entries(esp).map_err(io_err("reading loader entries"))?;
    if list.is_empty() {
        return Err(FirmwareError::NoEntries("systemd-boot found no entries in /loader/entries".into()));
    }
    let oneshot = efivar::read_string(efivars, "LoaderEntryOneShot").map_err(io_err("reading LoaderEntryOneShot"))?;
    efivar::remove(efivars, "LoaderEntryOneShot").map_err(io_err("clearing LoaderEntryOneShot"))?;
    let default_var =
        efivar::read_string(efivars, "LoaderEntryDefault").map_err(io_err("reading LoaderEntryDefault"))?;
    let config_default = loader_conf_default(esp).map_err(io_err("reading loader.conf"))?;
    let find = |pattern: &str| list.iter().position(|e| glob_match(pattern, &e.id));
    let (index, how) = if let Some(i) = oneshot.as_deref().and_then(find) {
        (i, "LoaderEntryOneShot")
    } else if let Some(i) = default_var.as_deref().and_then(find) {
        (i, "LoaderEntryDefault")
    } else if let Some(i) = config_default.as_deref().and_then(find) {
        (i, "loader.conf default")
    } else {
        (0, "first entry")
    };
    let entry = &list[index];
    let booted_file = bump_counters(esp, entry).map_err(io_err("renaming the entry's boot counters"))?;
    let linux = entry
        .linux
        .as_deref()
        .ok_or_else(|| FirmwareError::BadEntry(format!("{} has no `linux` line", entry.file_name)))?;
    Ok(BootChoice {
        entry_id: entry.id.clone(),
        title: entry.title.clone().unwrap_or_else(|| entry.id.clone()),
        reason: format!("{how} ({booted_file})"),
        kernel: esp_path(esp, linux),
        initrds: entry.initrd.iter().map(|i| esp_path(esp, i)).collect(),
        options: entry.options.clone(),
    })
}

fn bump_counters(esp: &Path, entry: &Entry) -> io::Result<String> {
    match entry.tries_left {
        Some(left) if left > 0 => {
            let base = entry.id.trim_end_matches(".conf");
            let renamed = format!("{base}+{}-{}.conf", left - 1, entry.tries_done + 1);
            let dir = esp.join("loader/entries");
            fs::rename(dir.join(&entry.file_name), dir.join(&renamed))?;
            Ok(renamed)
        }
        _ => Ok(entry.file_name.clone()),
    }
}

fn esp_path(esp: &Path, path: &str) -> PathBuf {
    esp.join(path.trim_start_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, version: &str) -> Entry {
        parse_entry(
            name,
            &format!("title NixOS\nversion {version}\nsort-key nixos\nlinux /k\ninitrd /i\noptions init=/x/init\n"),
        )
    }

    #[test]
    fn counters_are_parsed_from_file_names() {
        assert_eq!(parse_counters("nixos-generation-5+3-0.conf"), ("nixos-generation-5.conf".into(), Some(3), 0));
        assert_eq!(parse_counters("nixos-generation-5+2.conf"), ("nixos-generation-5.conf".into(), Some(2), 0));
        assert_eq!(parse_counters("nixos-generation-5.conf"), ("nixos-generation-5.conf".into(), None, 0));
        assert_eq!(parse_counters("a+b.conf"), ("a+b.conf".into(), None, 0));
    }

    #[test]
    fn newest_version_sorts_first_and_exhausted_entries_last() {
        let mut list = [
            entry("nixos-generation-2.conf", "Generation 2"),
            entry("nixos-generation-10+0-3.conf", "Generation 10"),
            entry("nixos-generation-9.conf", "Generation 9"),
        ];
        list.sort_by(compare);
        let ids: Vec<_> = list.iter().map(|e| e.file_name.as_str()).collect();
        assert_eq!(ids, ["nixos-generation-9.conf", "nixos-generation-2.conf", "nixos-generation-10+0-3.conf"]);
    }

    #[test]
    fn globs_match_case_insensitively() {
        assert!(glob_match("nixos-*", "NixOS-generation-3.conf"));
        assert!(glob_match("nixos-generation-?.conf", "nixos-generation-3.conf"));
        assert!(!glob_match("nixos-generation-?.conf", "nixos-generation-31.conf"));
    }

    #[test]
    fn versions_compare_numerically() {
        assert_eq!(version_compare("Generation 10", "Generation 9"), Ordering::Greater);
        assert_eq!(version_compare("a01", "a1"), Ordering::Equal);
    }

    fn esp_with(entries: &[(&str, &str)], default: &str) -> tempfile::TempDir {
        let esp = tempfile::tempdir().unwrap();
        fs::create_dir_all(esp.path().join("loader/entries")).unwrap();
        fs::write(esp.path().join("loader/loader.conf"), format!("timeout 5\ndefault {default}\n")).unwrap();
        for (name, version) in entries {
            fs::write(
                esp.path().join("loader/entries").join(name),
                format!("title NixOS\nversion {version}\nsort-key nixos\nlinux /EFI/nixos/k.efi\ninitrd /EFI/nixos/i.efi\noptions init=/nix/store/x/init\n"),
            )
            .unwrap();
        }
        esp
    }

    #[test]
    fn oneshot_wins_once_then_default_returns() {
        let esp = esp_with(
            &[("nixos-generation-1.conf", "Generation 1"), ("nixos-generation-2.conf", "Generation 2")],
            "nixos-generation-1.conf",
        );
        let vars = tempfile::tempdir().unwrap();
        efivar::write_string(vars.path(), "LoaderEntryOneShot", "nixos-generation-2.conf").unwrap();
        assert_eq!(choose(esp.path(), vars.path()).unwrap().entry_id, "nixos-generation-2.conf");
        assert_eq!(choose(esp.path(), vars.path()).unwrap().entry_id, "nixos-generation-1.conf");
    }

    #[test]
    fn efi_default_variable_overrides_loader_conf() {
        let esp = esp_with(
            &[("nixos-generation-1.conf", "Generation 1"), ("nixos-generation-2.conf", "Generation 2")],
            "nixos-generation-2.conf",
        );
        let vars = tempfile::tempdir().unwrap();
        efivar::write_string(vars.path(), "LoaderEntryDefault", "nixos-generation-1.conf").unwrap();
        assert_eq!(choose(esp.path(), vars.path()).unwrap().entry_id, "nixos-generation-1.conf");
    }

    #[test]
    fn boot_counting_decrements_until_the_entry_falls_back() {
        let esp = esp_with(
            &[("nixos-generation-1.conf", "Generation 1"), ("nixos-generation-2+2-0.conf", "Generation 2")],
            "nixos-*",
        );
        let vars = tempfile::tempdir().unwrap();
        let first = choose(esp.path(), vars.path()).unwrap();
        assert_eq!(first.entry_id, "nixos-generation-2.conf");
        assert!(esp.path().join("loader/entries/nixos-generation-2+1-1.conf").exists());
        assert_eq!(choose(esp.path(), vars.path()).unwrap().entry_id, "nixos-generation-2.conf");
        assert!(esp.path().join("loader/entries/nixos-generation-2+0-2.conf").exists());
        // No tries left: the entry sorts last and the pattern picks generation 1.
        assert_eq!(choose(esp.path(), vars.path()).unwrap().entry_id, "nixos-generation-1.conf");
    }
}
