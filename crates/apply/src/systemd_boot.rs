//! systemd-boot's entries and the entry it boots by default, read from the
//! ESP's files the way systemd-boot itself reads them.
//!
//! Sources (systemd `src/boot/boot.c`, `src/fundamental/string-util-fundamental.c`;
//! nixpkgs `nixos/modules/system/boot/loader/systemd-boot/systemd-boot-builder.py`;
//! `docs/reference/nixos-formats.md` §3–4 has the details and versions):
//!
//! - **Entries** are `loader/entries/*.conf`. An entry's id is its file name
//!   without the boot counter (`+T` or `+T-F` before `.conf`), compared
//!   case-insensitively. NixOS names them `nixos-generation-N.conf`
//!   (24.11/25.05), with a counter when boot counting is on, or — current
//!   nixpkgs, PR #447173 — `nixos-<content hash>[+T].conf`.
//! - **Order** (`boot_entry_compare`): entries with no tries left last; entries
//!   with a `sort-key` before those without; then by sort-key, machine-id,
//!   `version` newest first (`strverscmp_improved`); then by id, newest first;
//!   then more tries left, fewer tries done.
//! - **The default** (`config_select_default_entry`): the one-shot entry,
//!   then the `LoaderEntryDefault` EFI variable, then `loader.conf`'s
//!   `default` — each a glob (`efi_fnmatch`) whose *first match in that order*
//!   wins. Content-hashed names make `default nixos-*` pick the newest
//!   generation by `version`, not by name.
//! - **`preferred`** (systemd ≥ 260; nixpkgs writes `preferred
//!   nixos-<hash>.conf` + `default nixos-*` when boot counting is on): "like
//!   `default` but avoids booting known-bad entries" — an entry whose tries
//!   are exhausted is skipped and `default` decides. An older systemd-boot
//!   ignores the key. Its source was not available here, so where its
//!   answer and another's differ and the outcome hangs on rules fleetgate
//!   cannot verify (an unknown systemd-boot version; `preferred` against
//!   the EFI variable), the default is "cannot tell", never a guess.
//!
//! The listing ([`listing_script`]) is one `awk` over every entry file (a
//! NixOS ESP can hold a hundred), the last `default`/`preferred` lines of
//! `loader.conf` (systemd-boot takes the last of each), and the version in
//! the `.sdmagic` string (`#### LoaderInfo: systemd-boot V ####`) of each
//! systemd-boot binary on the ESP.

use std::cmp::Ordering;

/// A systemd-boot entry (one `loader/entries/*.conf`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SdEntry {
    /// Its file name (with the boot counter, if any).
    pub file: String,
    /// The system it boots (`init=` of its `options`).
    pub system: Option<String>,
    /// Its `sort-key`.
    pub sort_key: Option<String>,
    /// Its `version`.
    pub version: Option<String>,
    /// Its `machine-id`.
    pub machine_id: Option<String>,
}

impl SdEntry {
    /// The entry id systemd-boot and `bootctl` use: the file name without
    /// the boot counter (`+T` or `+T-F` before `.conf`).
    #[must_use]
    pub fn id(&self) -> String {
        match self.counter() {
            Some((base, _, _)) => format!("{base}.conf"),
            None => self.file.clone(),
        }
    }

    /// Whether a boot counter is in its name.
    #[must_use]
    pub fn counting(&self) -> bool {
        self.counter().is_some()
    }

    /// The tries left, when the entry counts its boots.
    #[must_use]
    pub fn tries_left(&self) -> Option<u32> {
        self.counter().map(|(_, left, _)| left)
    }

    /// `boot_entry_parse_tries`: the last `+` of the name, then
    /// `LEFT[-DONE]`, then exactly `.conf` (case-insensitive).
    fn counter(&self) -> Option<(&str, u32, u32)> {
        let (base, rest) = self.file.rsplit_once('+')?;
        let suffix_at = rest.len().checked_sub(5)?;
        if !rest.get(suffix_at..)?.eq_ignore_ascii_case(".conf") {
            return None;
        }
        let numbers = &rest[..suffix_at];
        let (left, done) = numbers.split_once('-').unwrap_or((numbers, "0"));
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(left) || !digits(done) {
            return None;
        }
        Some((base, left.parse().ok()?, done.parse().ok()?))
    }

    fn tries(&self) -> (i64, i64) {
        self.counter().map_or((-1, -1), |(_, l, d)| (i64::from(l), i64::from(d)))
    }
}

/// `boot_entry_compare`: the order of systemd-boot's menu.
fn menu_order(a: &SdEntry, b: &SdEntry) -> Ordering {
    let ((a_left, a_done), (b_left, b_done)) = (a.tries(), b.tries());
    (a_left == 0)
        .cmp(&(b_left == 0))
        .then_with(|| a.sort_key.is_none().cmp(&b.sort_key.is_none()))
        .then_with(|| match (&a.sort_key, &b.sort_key) {
            (Some(x), Some(y)) => x
                .cmp(y)
                .then_with(|| a.machine_id.cmp(&b.machine_id))
                .then_with(|| version_order(b.version.as_deref().unwrap_or(""), a.version.as_deref().unwrap_or(""))),
            _ => Ordering::Equal,
        })
        .then_with(|| version_order(&b.id().to_ascii_lowercase(), &a.id().to_ascii_lowercase()))
        .then_with(|| {
            if a_left < 0 || b_left < 0 { Ordering::Equal } else { b_left.cmp(&a_left).then(a_done.cmp(&b_done)) }
        })
}

/// What the systemd-boot listing ([`listing_script`]) printed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SdBoot {
    /// The entries.
    pub entries: Vec<SdEntry>,
    /// `loader.conf`'s `default`.
    pub conf_default: Option<String>,
    /// `loader.conf`'s `preferred`.
    pub conf_preferred: Option<String>,
    /// The versions of the systemd-boot binaries on the ESP
    /// (`EFI/systemd/systemd-boot*.efi`, and `EFI/BOOT/BOOT*.EFI` when it is
    /// systemd-boot), as their `.sdmagic` says.
    pub loader_versions: Vec<String>,
    /// Whether EFI variables can be written.
    pub efivars: bool,
    /// The `LoaderEntryDefault` fleetgate found before it pinned one, when it did.
    pub pinned_before: Option<String>,
}

/// The shell (POSIX `sh`, tools from `PATH`: `awk`, `sed`, `tail`, `grep`)
/// that prints the listing [`SdBoot::parse`] reads, for the ESP in `$esp`.
#[must_use]
pub fn listing_script() -> &'static str {
    "t=$(printf '\\t')\n\
     set -- \"$esp\"/loader/entries/*.conf\n\
     if [ -e \"$1\" ]; then\n  \
       awk -v t=\"$t\" 'FNR == 1 { f = FILENAME; sub(/.*\\//, \"\", f); print \"entry\" t f }\n  \
       /^options[ \\t]/ && !seen[FILENAME]++ { s = \" \" $0; v = \"\"\n    \
         while (match(s, /[ \\t]init=[^ \\t]*/)) { v = substr(s, RSTART, RLENGTH); s = substr(s, RSTART + RLENGTH) }\n    \
         if (v != \"\") { sub(/^[ \\t]*init=/, \"\", v); print \"key\" t \"init\" t v } }\n  \
       /^(sort-key|version|machine-id)[ \\t]/ { v = $0; sub(/^[^ \\t]+[ \\t]+/, \"\", v); print \"key\" t $1 t v }' \"$@\"\n\
     fi\n\
     for k in default preferred; do\n  \
       printf '%s\\t%s\\n' \"$k\" \"$(sed -n \"s/^$k[[:space:]][[:space:]]*//p\" \"$esp/loader/loader.conf\" 2>/dev/null | tail -n 1)\"\n\
     done\n\
     for b in \"$esp\"/EFI/systemd/systemd-boot*.efi \"$esp\"/EFI/BOOT/BOOT*.EFI; do\n  \
       [ -f \"$b\" ] || continue\n  \
       m=$(grep -a -o -m 1 '#### LoaderInfo: systemd-boot [^ ]* ####' \"$b\" 2>/dev/null | tail -n 1)\n  \
       if [ -n \"$m\" ]; then printf 'loader\\t%s\\n' \"$m\"; fi\n\
     done\n"
}

impl SdBoot {
    /// Parses the listing: `entry<TAB>file[<TAB>init]`, then `key<TAB>K<TAB>V`
    /// lines for that entry (`init`, `sort-key`, `version`, `machine-id`),
    /// `default<TAB>…`, `preferred<TAB>…`, `loader<TAB>#### LoaderInfo: …`,
    /// `efivars`, `pinned<TAB>…`.
    #[must_use]
    pub fn parse(text: &str) -> SdBoot {
        let mut s = SdBoot::default();
        let nonempty = |v: &str| Some(v.trim().to_owned()).filter(|v| !v.is_empty());
        for line in text.lines() {
            let f: Vec<&str> = line.splitn(3, '\t').collect();
            match f.as_slice() {
                ["entry", file, rest @ ..] => s.entries.push(SdEntry {
                    file: (*file).to_owned(),
                    system: rest.first().and_then(|init| init.strip_suffix("/init")).and_then(nonempty),
                    ..SdEntry::default()
                }),
                ["key", key, value] => {
                    let Some(e) = s.entries.last_mut() else { continue };
                    let value = value.trim();
                    match *key {
                        "init" => e.system = value.strip_suffix("/init").and_then(nonempty),
                        "sort-key" => e.sort_key = nonempty(value),
                        "version" => e.version = nonempty(value),
                        "machine-id" => e.machine_id = nonempty(value),
                        _ => {}
                    }
                }
                ["default", d] => s.conf_default = nonempty(d),
                ["preferred", p] => s.conf_preferred = nonempty(p),
                ["loader", magic] => {
                    let v = magic
                        .trim()
                        .strip_prefix("#### LoaderInfo: systemd-boot ")
                        .and_then(|m| m.strip_suffix(" ####"));
                    s.loader_versions.push(v.unwrap_or("").to_owned());
                }
                ["efivars"] => s.efivars = true,
                ["pinned", p] => s.pinned_before = Some((*p).to_owned()),
                ["pinned"] => s.pinned_before = Some(String::new()),
                _ => {}
            }
        }
        s
    }

    /// The entries in systemd-boot's menu order.
    #[must_use]
    pub fn menu(&self) -> Vec<&SdEntry> {
        let mut m: Vec<&SdEntry> = self.entries.iter().collect();
        m.sort_by(|a, b| menu_order(a, b));
        m
    }

    /// `config_find_entry`: the first entry in menu order whose id matches
    /// `pattern` (a glob; ids and patterns compared in lower case).
    #[must_use]
    pub fn find(&self, pattern: &str) -> Option<&SdEntry> {
        find_in(&self.menu(), pattern)
    }

    /// Whether the systemd-boot on the ESP honours `preferred` (≥ 260):
    /// `Err` when that cannot be told (no version found, or binaries of both kinds).
    fn honours_preferred(&self) -> Result<bool, String> {
        let majors: Vec<Option<u32>> = self
            .loader_versions
            .iter()
            .map(|v| {
                let digits: String = v.chars().take_while(char::is_ascii_digit).collect();
                digits.parse().ok()
            })
            .collect();
        if majors.is_empty() || majors.iter().any(Option::is_none) {
            return Err("the systemd-boot version on the ESP is not known".to_owned());
        }
        let new = majors.iter().filter(|m| m.is_some_and(|m| m >= 260)).count();
        match new {
            0 => Ok(false),
            n if n == majors.len() => Ok(true),
            _ => Err(format!("the ESP holds systemd-boot binaries of versions {}", self.loader_versions.join(", "))),
        }
    }

    /// The entry systemd-boot boots by default, given the
    /// `LoaderEntryDefault` EFI variable (`efi_default`): see the module
    /// documentation. `Err` says why it cannot be told.
    ///
    /// # Errors
    /// When nothing names an entry (systemd-boot would take the first of its
    /// menu, which fleetgate does not bet on), or the answer hangs on
    /// `preferred` rules that are not known (see the module documentation).
    pub fn default_resolution(&self, efi_default: Option<&str>) -> Result<&SdEntry, String> {
        let menu = self.menu();
        let by_efi = efi_default.and_then(|p| find_in(&menu, p));
        let by_conf = self.conf_default.as_deref().and_then(|p| find_in(&menu, p));
        let preferred = self
            .conf_preferred
            .as_deref()
            .map(|p| (p, find_in(&menu, p).filter(|e| e.tries_left() != Some(0)), self.honours_preferred()));
        let same = |a: &SdEntry, b: Option<&SdEntry>| b.is_some_and(|b| b.id() == a.id());
        let unknown = |what: &str, winner: &SdEntry, pattern: &str, preferred: Option<&SdEntry>, why: &str| {
            Err(format!(
                "{what} names {}, loader.conf's `preferred {pattern}` {}; {why}, so which one systemd-boot boots \
                 cannot be told",
                winner.id(),
                preferred.map_or_else(|| "names no bootable entry".to_owned(), |p| format!("names {}", p.id())),
            ))
        };
        match (by_efi, preferred) {
            (Some(e), None | Some((_, _, Ok(false)))) => Ok(e),
            (Some(e), Some((_, p, _))) if same(e, p) => Ok(e),
            (Some(e), Some((pattern, p, Ok(true)))) => unknown(
                "the LoaderEntryDefault EFI variable",
                e,
                pattern,
                p,
                "whether systemd-boot ≥ 260 puts `preferred` before the EFI variable is not known to fleetgate",
            ),
            (Some(e), Some((pattern, p, Err(why)))) => {
                unknown("the LoaderEntryDefault EFI variable", e, pattern, p, &why)
            }
            (None, Some((_, Some(p), Ok(true)))) => Ok(p),
            (None, Some((pattern, p, Err(why)))) => match by_conf {
                Some(d) if p.is_none() || same(d, p) => Ok(d),
                Some(d) => unknown("loader.conf's `default`", d, pattern, p, &why),
                None => p.ok_or_else(|| "no entry matches loader.conf's `default` or `preferred`".to_owned()),
            },
            (None, _) => by_conf.ok_or_else(|| {
                "neither the LoaderEntryDefault EFI variable nor loader.conf names an entry (systemd-boot would \
                 take the first of its menu)"
                    .to_owned()
            }),
        }
    }

    /// [`SdBoot::default_resolution`], `None` when it cannot be told.
    #[must_use]
    pub fn default_entry(&self, efi_default: Option<&str>) -> Option<&SdEntry> {
        self.default_resolution(efi_default).ok()
    }

    /// Whether systemd-boot boots `fallback` by default, given the
    /// `LoaderEntryDefault` EFI variable: what a failed one-time boot comes
    /// back to.
    ///
    /// # Errors
    /// Why not: another entry, or a default that cannot be told.
    pub fn falls_back_to(&self, fallback: &str, efi_default: Option<&str>) -> Result<(), String> {
        match self.default_resolution(efi_default) {
            Ok(e) if e.system.as_deref() == Some(fallback) => Ok(()),
            Ok(e) => Err(format!(
                "after a failed trial systemd-boot would boot {} ({}), not the fallback",
                e.id(),
                e.system.as_deref().unwrap_or("a system fleetgate cannot tell")
            )),
            Err(why) => Err(format!("the default after a failed trial cannot be told: {why}")),
        }
    }

    /// The entry that boots `system` (without a boot counter first).
    #[must_use]
    pub fn entry_for(&self, system: &str) -> Option<&SdEntry> {
        let mut m: Vec<&SdEntry> = self.entries.iter().filter(|e| e.system.as_deref() == Some(system)).collect();
        m.sort_by_key(|e| (e.counting(), e.file.clone()));
        m.into_iter().next()
    }
}

/// The first entry of `menu` (in menu order) whose id matches `pattern`.
fn find_in<'e>(menu: &[&'e SdEntry], pattern: &str) -> Option<&'e SdEntry> {
    let pattern = pattern.trim().to_ascii_lowercase();
    if pattern.is_empty() {
        return None;
    }
    menu.iter().copied().find(|e| glob_match(pattern.as_bytes(), e.id().to_ascii_lowercase().as_bytes()))
}

/// `fnmatch` with `*` and `?` (systemd-boot's `efi_fnmatch` also has
/// `[…]` classes; an entry id with one is compared literally here).
fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    match (pattern.split_first(), text.split_first()) {
        (None, _) => text.is_empty(),
        (Some((b'*', rest)), _) => (0..=text.len()).any(|i| glob_match(rest, &text[i..])),
        (Some((b'?', rest)), Some((_, t))) => glob_match(rest, t),
        (Some((p, rest)), Some((c, t))) if p == c => glob_match(rest, t),
        _ => false,
    }
}

/// systemd's `strverscmp_improved` (`src/fundamental/string-util-fundamental.c`),
/// rewritten here (no crate has it): segments of digits or letters, each
/// maybe prefixed by `~` (older), `-`, `^` or `.`; other characters only
/// separate; numbers compare by value, a longer string is newer.
#[must_use]
pub fn version_order(a: &str, b: &str) -> Ordering {
    let valid = |c: u8| c.is_ascii_alphanumeric() || matches!(c, b'~' | b'-' | b'^' | b'.');
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    loop {
        while a.first().is_some_and(|c| !valid(*c)) {
            a = &a[1..];
        }
        while b.first().is_some_and(|c| !valid(*c)) {
            b = &b[1..];
        }
        for prefix in [b'~', b'-', b'^', b'.'] {
            if prefix == b'-' && (a.is_empty() || b.is_empty()) {
                return a.len().min(1).cmp(&b.len().min(1));
            }
            let (pa, pb) = (a.first() == Some(&prefix), b.first() == Some(&prefix));
            if pa || pb {
                // The one with the prefix is older ('~' before the end check).
                let o = pb.cmp(&pa);
                if o != Ordering::Equal {
                    return o;
                }
                (a, b) = (&a[1..], &b[1..]);
            }
        }
        let digits = |s: &[u8]| s.iter().take_while(|c| c.is_ascii_digit()).count();
        let letters = |s: &[u8]| s.iter().take_while(|c| c.is_ascii_alphabetic()).count();
        let (la, lb);
        if a.first().is_some_and(u8::is_ascii_digit) || b.first().is_some_and(u8::is_ascii_digit) {
            (la, lb) = (digits(a), digits(b));
            let o = (la != 0).cmp(&(lb != 0));
            if o != Ordering::Equal {
                return o;
            }
            let (za, zb) = (
                a[..la].iter().take_while(|c| **c == b'0').count(),
                b[..lb].iter().take_while(|c| **c == b'0').count(),
            );
            let (na, nb) = (&a[za..la], &b[zb..lb]);
            let o = na.len().cmp(&nb.len()).then_with(|| na.cmp(nb));
            if o != Ordering::Equal {
                return o;
            }
        } else {
            (la, lb) = (letters(a), letters(b));
            let n = la.min(lb);
            let o = a[..n].cmp(&b[..n]).then(la.cmp(&lb));
            if o != Ordering::Equal {
                return o;
            }
        }
        (a, b) = (&a[la..], &b[lb..]);
    }
}

#[cfg(test)]
mod tests;
