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
//!   uses drops the boot counter. Which entry it boots by default is
//!   [`crate::systemd_boot`]'s.

pub use crate::systemd_boot::{SdBoot, SdEntry};

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
