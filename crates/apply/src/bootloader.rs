//! Boot loader entries found by what they boot, and GRUB's environment
//! block, without GRUB's or systemd's userland.
//!
//! - **GRUB** ([`GrubMenu`]): NixOS's `grub.cfg` (nixpkgs
//!   `nixos/modules/system/boot/loader/grub/install-grub.pl`) has a top-level
//!   `NixOS` entry for the default system, a `NixOS - All configurations`
//!   submenu, and for generations with specialisations a nested submenu
//!   (`NixOS - Configuration N - Default (…)`). Entries are found by the
//!   `init=<system>/init` of their `linux` line, and named by their menu path
//!   (`A>B>C`, what `next_entry` takes). The default is `set default=N` (a
//!   top-level index) or `saved` (`${saved_entry}` of grubenv).
//! - **grubenv** ([`Grubenv`]): GRUB's environment block
//!   (`grub-core/lib/envblk.c`, `util/grub-editenv.c`): exactly 1024 bytes,
//!   starting `# GRUB Environment Block\n`, `key=value\n` lines (`\` and
//!   newline escaped with `\`), padded with `#`. Written here, so UEFI hosts
//!   with `boot.loader.grub.device = "nodev"` (no `grub-reboot` in the system
//!   path, nixpkgs `grub.nix`) can boot an entry once.
//! - **systemd-boot** ([`SdEntry`]): entries are found by the `init=` of
//!   their `options` line, whatever their file name: `nixos-generation-N.conf`
//!   (24.11/25.05), boot counting `…+T[-F].conf`, or master's content-hashed
//!   `nixos-<hash>[+T].conf` (nixpkgs PR #447173). The entry id systemd-boot
//!   uses drops the boot counter.

/// The size of a GRUB environment block.
pub const GRUBENV_SIZE: usize = 1024;
const GRUBENV_HEADER: &str = "# GRUB Environment Block\n";

/// Why a GRUB environment block cannot be read or written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrubenvError {
    /// Not UTF-8 text.
    #[error("grubenv is not text")]
    NotText,
    /// No `# GRUB Environment Block` header.
    #[error("grubenv does not start with the GRUB header")]
    NoHeader,
    /// A line without `=`.
    #[error("grubenv line without '=': {0:?}")]
    Line(String),
    /// The variables do not fit in the block.
    #[error("the GRUB environment would take {0} bytes, more than {GRUBENV_SIZE}")]
    TooLarge(usize),
}

/// A GRUB environment block's variables, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grubenv {
    vars: Vec<(String, String)>,
}

impl Grubenv {
    /// Parses a block (an empty file is an empty block).
    ///
    /// # Errors
    /// [`GrubenvError`] when it is not a GRUB environment block.
    pub fn parse(bytes: &[u8]) -> Result<Grubenv, GrubenvError> {
        if bytes.is_empty() {
            return Ok(Grubenv::default());
        }
        let text = std::str::from_utf8(bytes).map_err(|_| GrubenvError::NotText)?;
        let body = text.strip_prefix(GRUBENV_HEADER).ok_or(GrubenvError::NoHeader)?;
        let mut vars = Vec::new();
        for line in body.split('\n') {
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            let (k, v) = line.split_once('=').ok_or_else(|| GrubenvError::Line(line.to_owned()))?;
            let mut value = String::new();
            let mut chars = v.chars();
            while let Some(c) = chars.next() {
                if c == '\\' {
                    match chars.next() {
                        Some('n') => value.push('\n'),
                        Some(o) => value.push(o),
                        None => {}
                    }
                } else {
                    value.push(c);
                }
            }
            vars.push((k.to_owned(), value));
        }
        Ok(Grubenv { vars })
    }

    /// A variable.
    #[must_use]
    pub fn get(&self, key: &str) -> Option<&str> {
        self.vars.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// Sets a variable (in place, or appended).
    pub fn set(&mut self, key: &str, value: &str) {
        match self.vars.iter_mut().find(|(k, _)| k == key) {
            Some(kv) => value.clone_into(&mut kv.1),
            None => self.vars.push((key.to_owned(), value.to_owned())),
        }
    }

    /// Removes a variable.
    pub fn unset(&mut self, key: &str) {
        self.vars.retain(|(k, _)| k != key);
    }

    /// The 1024-byte block.
    ///
    /// # Errors
    /// [`GrubenvError::TooLarge`] when the variables do not fit.
    pub fn to_block(&self) -> Result<Vec<u8>, GrubenvError> {
        let mut out = String::from(GRUBENV_HEADER);
        for (k, v) in &self.vars {
            out.push_str(k);
            out.push('=');
            for c in v.chars() {
                match c {
                    '\\' => out.push_str("\\\\"),
                    '\n' => out.push_str("\\n"),
                    c => out.push(c),
                }
            }
            out.push('\n');
        }
        if out.len() > GRUBENV_SIZE {
            return Err(GrubenvError::TooLarge(out.len()));
        }
        let mut bytes = out.into_bytes();
        bytes.resize(GRUBENV_SIZE, b'#');
        Ok(bytes)
    }
}

/// One bootable GRUB entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrubEntry {
    /// Its menu path (`NixOS - All configurations>NixOS - Configuration 2 (…)`).
    pub path: String,
    /// The system it boots (`init=<system>/init`), if it says.
    pub system: Option<String>,
    /// Whether booting it saves it as the default (`savedefault`, which
    /// install-grub.pl writes in every entry with `default = "saved"`).
    pub saves_default: bool,
}

/// What `grub.cfg` says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GrubMenu {
    /// Every entry, in menu order.
    pub entries: Vec<GrubEntry>,
    /// Top-level items in order: `Some(index into entries)` for an entry,
    /// `None` for a submenu.
    pub top: Vec<Option<usize>>,
    /// The value of the (non-`next_entry`) `set default=`.
    pub default: Option<String>,
    /// Whether it honours `next_entry`.
    pub next_entry: bool,
}

fn quoted_title(rest: &str) -> Option<String> {
    let rest = rest.trim_start();
    let quote = rest.chars().next()?;
    if quote != '"' && quote != '\'' {
        return rest.split_whitespace().next().map(str::to_owned);
    }
    let inner = &rest[1..];
    let end = inner.find(quote)?;
    Some(inner[..end].to_owned())
}

/// The system of an `init=/nix/store/…/init` word on a kernel line.
fn init_system(line: &str) -> Option<String> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix("init="))
        .and_then(|i| i.strip_suffix("/init"))
        .map(str::to_owned)
}

impl GrubMenu {
    /// Parses `grub.cfg`.
    #[must_use]
    pub fn parse(text: &str) -> GrubMenu {
        #[derive(PartialEq)]
        enum Block {
            Submenu,
            Entry(usize),
            Other,
        }
        let mut menu = GrubMenu::default();
        let mut stack: Vec<Block> = Vec::new();
        let mut titles: Vec<String> = Vec::new();
        for raw in text.lines() {
            let line = raw.trim();
            if line.contains("next_entry") {
                menu.next_entry = true;
            }
            let depth_top = !stack.iter().any(|b| *b != Block::Other);
            if let Some(rest) = line.strip_prefix("menuentry ") {
                let title = quoted_title(rest).unwrap_or_default();
                let path = titles.iter().chain(std::iter::once(&title)).cloned().collect::<Vec<_>>().join(">");
                menu.entries.push(GrubEntry { path, system: None, saves_default: false });
                if depth_top {
                    menu.top.push(Some(menu.entries.len() - 1));
                }
                stack.push(Block::Entry(menu.entries.len() - 1));
                continue;
            }
            if let Some(rest) = line.strip_prefix("submenu ") {
                if depth_top {
                    menu.top.push(None);
                }
                titles.push(quoted_title(rest).unwrap_or_default());
                stack.push(Block::Submenu);
                continue;
            }
            if line == "}" {
                if stack.pop() == Some(Block::Submenu) {
                    titles.pop();
                }
                continue;
            }
            if line.ends_with('{') {
                stack.push(Block::Other);
                continue;
            }
            if let Some(Block::Entry(i)) = stack.iter().rev().find(|b| matches!(b, Block::Entry(_))) {
                if line.starts_with("linux") {
                    menu.entries[*i].system = init_system(line);
                } else if line == "savedefault" {
                    menu.entries[*i].saves_default = true;
                }
                continue;
            }
            let value = line.strip_prefix("set default=").or_else(|| line.strip_prefix("default="));
            if let Some(v) = value {
                if !v.contains("next_entry") {
                    menu.default = Some(v.trim_matches(['"', '\'']).to_owned());
                }
            }
        }
        menu
    }

    /// The entry a spec (`0`, a title, a `>` path) names.
    #[must_use]
    pub fn resolve(&self, spec: &str) -> Option<&GrubEntry> {
        if let Ok(n) = spec.parse::<usize>() {
            return self.top.get(n).copied().flatten().and_then(|i| self.entries.get(i));
        }
        self.entries
            .iter()
            .find(|e| e.path == spec)
            .or_else(|| self.entries.iter().find(|e| e.path.rsplit('>').next() == Some(spec)))
    }

    /// The entry booted when nothing is chosen: `set default=` resolved,
    /// `saved` through grubenv's `saved_entry`.
    #[must_use]
    pub fn default_entry(&self, env: &Grubenv) -> Option<&GrubEntry> {
        let spec = self.default.as_deref().unwrap_or("0");
        if spec == "saved" || spec.contains("saved_entry") {
            return self.resolve(env.get("saved_entry").unwrap_or("0"));
        }
        self.resolve(spec)
    }

    /// The entry that boots `system`, preferring the flat ones.
    #[must_use]
    pub fn entry_for(&self, system: &str) -> Option<&GrubEntry> {
        let mut matching: Vec<&GrubEntry> =
            self.entries.iter().filter(|e| e.system.as_deref() == Some(system)).collect();
        matching.sort_by_key(|e| e.path.matches('>').count());
        matching.into_iter().next()
    }
}

/// A systemd-boot entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdEntry {
    /// The file name (`nixos-generation-3+2-1.conf`).
    pub file: String,
    /// The system it boots (`init=` of its `options`).
    pub system: Option<String>,
}

impl SdEntry {
    /// The entry id systemd-boot and `bootctl` use: the file name without
    /// the boot counter (`+T` or `+T-F` before `.conf`).
    #[must_use]
    pub fn id(&self) -> String {
        let stem = self.file.strip_suffix(".conf").unwrap_or(&self.file);
        let base = match stem.rsplit_once('+') {
            Some((b, counter)) if !counter.is_empty() && counter.split('-').all(|n| n.parse::<u32>().is_ok()) => b,
            _ => stem,
        };
        format!("{base}.conf")
    }

    /// Whether a boot counter is in its name.
    #[must_use]
    pub fn counting(&self) -> bool {
        self.id() != self.file
    }
}

/// What the systemd-boot listing script printed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SdBoot {
    /// The entries.
    pub entries: Vec<SdEntry>,
    /// `loader.conf`'s `default`.
    pub conf_default: Option<String>,
    /// Whether EFI variables can be written.
    pub efivars: bool,
    /// The `LoaderEntryDefault` fleetgate found before it pinned one, when it did.
    pub pinned_before: Option<String>,
}

impl SdBoot {
    /// Parses the listing (`entry<TAB>file<TAB>init`, `default<TAB>…`,
    /// `efivars`, `pinned<TAB>…`).
    #[must_use]
    pub fn parse(text: &str) -> SdBoot {
        let mut s = SdBoot::default();
        for line in text.lines() {
            let f: Vec<&str> = line.split('\t').collect();
            match f.as_slice() {
                ["entry", file, init] => s.entries.push(SdEntry {
                    file: (*file).to_owned(),
                    system: init.strip_suffix("/init").filter(|v| !v.is_empty()).map(str::to_owned),
                }),
                ["entry", file] => s.entries.push(SdEntry { file: (*file).to_owned(), system: None }),
                ["default", d] => s.conf_default = Some((*d).trim().to_owned()),
                ["efivars"] => s.efivars = true,
                ["pinned", p] => s.pinned_before = Some((*p).to_owned()),
                ["pinned"] => s.pinned_before = Some(String::new()),
                _ => {}
            }
        }
        s
    }

    /// The entry systemd-boot boots by default (`src/boot/boot.c`,
    /// `config_select_default_entry`): the `LoaderEntryDefault` EFI variable
    /// (`efi_default`) when it names an entry, else `loader.conf`'s `default`
    /// — an id, or a glob whose last match in version order wins. `None`
    /// when neither names an entry (systemd-boot would then take the first
    /// of its own sort order, which fleetgate does not model: "cannot tell").
    #[must_use]
    pub fn default_entry(&self, efi_default: Option<&str>) -> Option<&SdEntry> {
        if let Some(id) = efi_default.filter(|v| !v.is_empty()) {
            if let Some(e) = self.entries.iter().find(|e| e.id() == id) {
                return Some(e);
            }
        }
        let pattern = self.conf_default.as_deref().filter(|d| !d.is_empty())?;
        let with_conf = |p: &str| if p.ends_with(".conf") { p.to_owned() } else { format!("{p}.conf") };
        if !pattern.contains(['*', '?', '[']) {
            let id = with_conf(pattern);
            return self.entries.iter().find(|e| e.id() == id);
        }
        self.entries
            .iter()
            .filter(|e| {
                glob_match(pattern.as_bytes(), e.id().as_bytes())
                    || glob_match(pattern.as_bytes(), e.id().trim_end_matches(".conf").as_bytes())
            })
            .max_by(|a, b| version_cmp(&a.id(), &b.id()))
    }

    /// The entry that boots `system` (without a boot counter first).
    #[must_use]
    pub fn entry_for(&self, system: &str) -> Option<&SdEntry> {
        let mut m: Vec<&SdEntry> = self.entries.iter().filter(|e| e.system.as_deref() == Some(system)).collect();
        m.sort_by_key(|e| (e.counting(), e.file.clone()));
        m.into_iter().next()
    }
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

/// Version order of entry ids as systemd compares them
/// (`strverscmp_improved`), simplified: runs of digits compare as numbers,
/// everything else byte by byte.
fn version_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    loop {
        match (a.first(), b.first()) {
            (None, None) => return std::cmp::Ordering::Equal,
            (None, Some(_)) => return std::cmp::Ordering::Less,
            (Some(_), None) => return std::cmp::Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let da = a.iter().take_while(|c| c.is_ascii_digit()).count();
                let db = b.iter().take_while(|c| c.is_ascii_digit()).count();
                let (na, nb) = (trim_zeros(&a[..da]), trim_zeros(&b[..db]));
                let o = na.len().cmp(&nb.len()).then_with(|| na.cmp(nb));
                if o != std::cmp::Ordering::Equal {
                    return o;
                }
                (a, b) = (&a[da..], &b[db..]);
            }
            (Some(x), Some(y)) if x != y => return x.cmp(y),
            _ => (a, b) = (&a[1..], &b[1..]),
        }
    }
}

fn trim_zeros(digits: &[u8]) -> &[u8] {
    let zeros = digits.iter().take_while(|c| **c == b'0').count();
    &digits[zeros..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn systemd_boot_default_entry() {
        let listing = "entry\tnixos-generation-9.conf\t/nix/store/a-nine/init\n\
                       entry\tnixos-generation-10+3.conf\t/nix/store/b-ten/init\n\
                       entry\tnixos-generation-2.conf\t/nix/store/c-two/init\n";
        let system = |sd: &SdBoot, efi: Option<&str>| sd.default_entry(efi).and_then(|e| e.system.clone());
        let exact = SdBoot::parse(&format!("{listing}default\tnixos-generation-9.conf\n"));
        assert_eq!(system(&exact, None).as_deref(), Some("/nix/store/a-nine"));
        // The EFI variable wins over loader.conf; an unknown id falls back to loader.conf.
        assert_eq!(system(&exact, Some("nixos-generation-2.conf")).as_deref(), Some("/nix/store/c-two"));
        assert_eq!(system(&exact, Some("gone.conf")).as_deref(), Some("/nix/store/a-nine"));
        // A glob: the highest version matching (10 > 9 > 2), boot counter ignored.
        let glob = SdBoot::parse(&format!("{listing}default\tnixos-generation-*\n"));
        assert_eq!(system(&glob, None).as_deref(), Some("/nix/store/b-ten"));
        // Nothing says: cannot tell.
        assert_eq!(system(&SdBoot::parse(listing), None), None);
        assert_eq!(version_cmp("a-010", "a-9"), std::cmp::Ordering::Greater);
        assert!(glob_match(b"nixos-?-*.conf", b"nixos-a-1.conf") && !glob_match(b"x*", b"y"));
    }

    fn grub_cfg(default: &str) -> String {
        format!(
            "if [ -s $prefix/grubenv ]; then\n  load_env\nfi\n\
             if [ \"${{next_entry}}\" ]; then\n  set default=\"${{next_entry}}\"\n  set next_entry=\n  save_env next_entry\nelse\n  set default={default}\nfi\n\
             menuentry \"NixOS\" --class nixos --unrestricted {{\n  search --set=drive1 --fs-uuid 1234\n  linux ($drive1)/k/bzImage init=/nix/store/aaa-old/init loglevel=4\n  initrd ($drive1)/k/initrd\n}}\n\
             submenu \"NixOS - All configurations\" --class submenu {{\n\
             submenu \"NixOS - Configuration 3 (2025-01-03 - 25.05)\" --class submenu {{\n\
             menuentry \"NixOS - Configuration 3 - Default (2025-01-03 - 25.05)\" --class nixos {{\n  linux /k init=/nix/store/ccc-new/init\n}}\n\
             menuentry \"NixOS - Configuration 3 - gpu (2025-01-03 - 25.05)\" --class nixos {{\n  linux /k init=/nix/store/ddd-gpu/init\n}}\n}}\n\
             menuentry \"NixOS - Configuration 2 (2025-01-02 - 25.05)\" --class nixos {{\n  linux /k init=/nix/store/aaa-old/init\n}}\n}}\n"
        )
    }

    #[test]
    fn entries_that_save_themselves_as_the_default_are_known() {
        let cfg = grub_cfg("\"${saved_entry}\"").replace(
            "  linux /k init=/nix/store/ccc-new/init\n",
            "  savedefault\n  linux /k init=/nix/store/ccc-new/init\n",
        );
        let menu = GrubMenu::parse(&cfg);
        assert_eq!(menu.entry_for("/nix/store/ccc-new").map(|e| e.saves_default), Some(true));
        assert_eq!(menu.entry_for("/nix/store/aaa-old").map(|e| e.saves_default), Some(false));
    }

    #[test]
    fn nested_specialisation_menus_are_found_by_what_they_boot() {
        let menu = GrubMenu::parse(&grub_cfg("0"));
        assert!(menu.next_entry);
        assert_eq!(
            menu.entry_for("/nix/store/ccc-new").map(|e| e.path.as_str()),
            Some(
                "NixOS - All configurations>NixOS - Configuration 3 (2025-01-03 - 25.05)>NixOS - Configuration 3 - Default (2025-01-03 - 25.05)"
            )
        );
        assert_eq!(menu.entry_for("/nix/store/aaa-old").map(|e| e.path.as_str()), Some("NixOS"));
        assert_eq!(
            menu.default_entry(&Grubenv::default()).and_then(|e| e.system.as_deref()),
            Some("/nix/store/aaa-old")
        );
        assert_eq!(menu.top, vec![Some(0), None]);
    }

    #[test]
    fn saved_default_follows_saved_entry() {
        let menu = GrubMenu::parse(&grub_cfg("\"${saved_entry}\""));
        let mut env = Grubenv::default();
        env.set("saved_entry", "NixOS - All configurations>NixOS - Configuration 3 (2025-01-03 - 25.05)>NixOS - Configuration 3 - gpu (2025-01-03 - 25.05)");
        assert_eq!(menu.default_entry(&env).and_then(|e| e.system.as_deref()), Some("/nix/store/ddd-gpu"));
        assert_eq!(
            menu.default_entry(&Grubenv::default()).and_then(|e| e.system.as_deref()),
            Some("/nix/store/aaa-old")
        );
    }

    #[test]
    fn grubenv_is_a_padded_1024_byte_block() {
        let mut env = Grubenv::parse(b"").expect("empty");
        env.set("saved_entry", "0");
        env.set("next_entry", "A>B \\ c");
        let block = env.to_block().expect("fits");
        assert_eq!(block.len(), GRUBENV_SIZE);
        let text = String::from_utf8(block.clone()).expect("utf8");
        assert!(text.starts_with("# GRUB Environment Block\nsaved_entry=0\nnext_entry=A>B \\\\ c\n###"), "{text}");
        let mut back = Grubenv::parse(&block).expect("parses");
        assert_eq!(back.get("next_entry"), Some("A>B \\ c"));
        back.unset("next_entry");
        assert_eq!(back.get("next_entry"), None);
        assert_eq!(back.get("saved_entry"), Some("0"));
        assert!(Grubenv::parse(b"hello").is_err());
        let mut big = Grubenv::default();
        big.set("x", &"y".repeat(2000));
        assert!(big.to_block().is_err());
    }

    #[test]
    fn systemd_boot_entries_of_all_three_layouts() {
        let listing = "entry\tnixos-generation-1.conf\t/nix/store/aaa-old/init\n\
                       entry\tnixos-generation-2+3.conf\t/nix/store/bbb-mid/init\n\
                       entry\tnixos-5f3a9c0e1b2d+2-1.conf\t/nix/store/ccc-new/init\n\
                       entry\tmemtest86.conf\t\n\
                       default\tnixos-*\nefivars\n";
        let sd = SdBoot::parse(listing);
        assert_eq!(sd.entry_for("/nix/store/aaa-old").map(SdEntry::id).as_deref(), Some("nixos-generation-1.conf"));
        assert_eq!(sd.entry_for("/nix/store/bbb-mid").map(SdEntry::id).as_deref(), Some("nixos-generation-2.conf"));
        assert_eq!(sd.entry_for("/nix/store/ccc-new").map(SdEntry::id).as_deref(), Some("nixos-5f3a9c0e1b2d.conf"));
        assert!(sd.entry_for("/nix/store/ccc-new").is_some_and(SdEntry::counting));
        assert_eq!(sd.conf_default.as_deref(), Some("nixos-*"));
        assert!(sd.efivars && sd.pinned_before.is_none());
    }
}
