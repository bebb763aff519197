//! The lab's GRUB 2: reads `/boot/grub/grubenv` and the `grub.cfg` NixOS's
//! `install-grub.pl` writes, and boots what GRUB would.
//!
//! - grubenv: exactly 1024 bytes, `# GRUB Environment Block\n`, `key=value`
//!   lines, `#` padding (grub's `grub-core/lib/envblk.c`).
//! - grub.cfg header (NixOS): `load_env`; if `next_entry` is set, `set
//!   default="${next_entry}"`, clear it and `save_env next_entry` (this is what
//!   `grub-reboot` relies on); otherwise `set default=<configured>`, where the
//!   configured default may be `"${saved_entry}"` (`grub-set-default`).
//! - `default` names an entry by index, by title, by `--id`, or by a
//!   `submenu>entry` path (grub's `grub-core/normal/menu.c`).

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::{BootChoice, FirmwareError};

pub const ENVBLK_SIZE: usize = 1024;
const ENVBLK_HEADER: &str = "# GRUB Environment Block\n";

/// Parses a grubenv block; unknown or malformed lines are ignored as GRUB does.
pub fn parse_env(bytes: &[u8]) -> BTreeMap<String, String> {
    let text = String::from_utf8_lossy(bytes);
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// Renders a grubenv block of exactly [`ENVBLK_SIZE`] bytes.
pub fn render_env(vars: &BTreeMap<String, String>) -> Result<Vec<u8>, FirmwareError> {
    let mut text = String::from(ENVBLK_HEADER);
    for (key, value) in vars {
        text.push_str(&format!("{key}={value}\n"));
    }
    if text.len() > ENVBLK_SIZE {
        return Err(FirmwareError::BadEntry("grubenv variables do not fit in 1024 bytes".into()));
    }
    let mut bytes = text.into_bytes();
    bytes.resize(ENVBLK_SIZE, b'#');
    Ok(bytes)
}

pub fn read_env(path: &Path) -> io::Result<BTreeMap<String, String>> {
    match fs::read(path) {
        Ok(bytes) => Ok(parse_env(&bytes)),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(err) => Err(err),
    }
}

pub fn write_env(path: &Path, vars: &BTreeMap<String, String>) -> Result<(), FirmwareError> {
    let bytes = render_env(vars)?;
    fs::write(path, bytes).map_err(|source| FirmwareError::Io { what: "writing grubenv".into(), source })
}

/// A `menuentry` or `submenu` of grub.cfg.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MenuItem {
    pub title: String,
    pub id: Option<String>,
    pub linux: Option<String>,
    pub initrd: Vec<String>,
    pub children: Vec<MenuItem>,
    pub is_submenu: bool,
}

/// The menu of a grub.cfg and its `set default=` statements, in order.
#[derive(Debug, Default)]
pub struct GrubConfig {
    pub menu: Vec<MenuItem>,
    pub defaults: Vec<String>,
}

/// Splits a grub.cfg line into words, honouring single and double quotes.
fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut quote: Option<char> = None;
    let mut in_word = false;
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => current.push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut current));
                    in_word = false;
                }
            }
            (None, c) => {
                current.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        out.push(current);
    }
    out
}

pub fn parse_config(text: &str) -> GrubConfig {
    let mut config = GrubConfig::default();
    // Stack of open blocks; `None` marks a non-menu block (if/function).
    let mut stack: Vec<Option<MenuItem>> = Vec::new();
    for raw in text.lines() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let w = words(line);
        let Some(first) = w.first().map(String::as_str) else { continue };
        match first {
            "menuentry" | "submenu" => {
                let title = w.get(1).cloned().unwrap_or_default();
                let id = w.iter().enumerate().find_map(|(i, word)| {
                    word.strip_prefix("--id=")
                        .map(str::to_owned)
                        .or_else(|| (word == "--id").then(|| w.get(i + 1).cloned()).flatten())
                });
                let item = MenuItem {
                    title,
                    id,
                    linux: None,
                    initrd: Vec::new(),
                    children: Vec::new(),
                    is_submenu: first == "submenu",
                };
                if line.ends_with('}') {
                    attach(&mut config, &mut stack, item);
                } else {
                    stack.push(Some(item));
                }
            }
            // `function name {` opens a brace block that is not a menu item;
            // `if … fi` blocks use no braces.
            "function" if line.ends_with('{') => stack.push(None),
            "}" => {
                if let Some(Some(item)) = stack.pop() {
                    attach(&mut config, &mut stack, item);
                }
            }
            "linux" | "linuxefi" => {
                if let Some(Some(item)) = stack.last_mut() {
                    item.linux = Some(w[1..].join(" "));
                }
            }
            "initrd" | "initrdefi" => {
                if let Some(Some(item)) = stack.last_mut() {
                    item.initrd.extend(w[1..].iter().cloned());
                }
            }
            "set" => {
                if let Some(value) = w.get(1).and_then(|a| a.strip_prefix("default=")) {
                    config.defaults.push(value.to_owned());
                }
            }
            _ => {}
        }
    }
    config
}

fn attach(config: &mut GrubConfig, stack: &mut [Option<MenuItem>], item: MenuItem) {
    match stack.iter_mut().rev().find_map(Option::as_mut) {
        Some(parent) => parent.children.push(item),
        None => config.menu.push(item),
    }
}

/// Resolves a `default` value against the menu as GRUB does.
pub fn resolve<'a>(menu: &'a [MenuItem], spec: &str) -> Option<&'a MenuItem> {
    let (head, rest) = match spec.split_once('>') {
        Some((head, rest)) => (head, Some(rest)),
        None => (spec, None),
    };
    let item = match head.parse::<usize>() {
        Ok(index) => menu.get(index),
        Err(_) => menu.iter().find(|m| m.title == head || m.id.as_deref() == Some(head)),
    }?;
    match rest {
        Some(rest) => resolve(&item.children, rest),
        None if item.is_submenu => None,
        None => Some(item),
    }
}

/// Expands `${name}` and `$name` (a name is `[A-Za-z0-9_]+`), as GRUB's
/// script parser does; unknown variables expand to nothing.
fn expand(value: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (name, tail) = match after.strip_prefix('{') {
            Some(braced) => match braced.find('}') {
                Some(end) => (&braced[..end], &braced[end + 1..]),
                None => ("", after),
            },
            None => {
                let end = after.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(after.len());
                (&after[..end], &after[end..])
            }
        };
        if name.is_empty() {
            out.push('$');
        } else {
            out.push_str(env.get(name).map(String::as_str).unwrap_or(""));
        }
        rest = tail;
    }
    out.push_str(rest);
    out
}

/// Picks the entry GRUB boots from `root` (the filesystem holding `/boot`),
/// consuming `next_entry` as NixOS's grub.cfg does.
pub fn choose(root: &Path) -> Result<BootChoice, FirmwareError> {
    let cfg_path = root.join("boot/grub/grub.cfg");
    let text = fs::read_to_string(&cfg_path)
        .map_err(|source| FirmwareError::Io { what: "reading /boot/grub/grub.cfg".into(), source })?;
    let config = parse_config(&text);
    if config.menu.is_empty() {
        return Err(FirmwareError::NoEntries("GRUB found no menuentry in /boot/grub/grub.cfg".into()));
    }
    let env_path = root.join("boot/grub/grubenv");
    let mut env = read_env(&env_path).map_err(|source| FirmwareError::Io { what: "reading grubenv".into(), source })?;
    let (spec, how) = match env.get("next_entry").filter(|v| !v.is_empty()).cloned() {
        Some(next) => {
            env.insert("next_entry".into(), String::new());
            write_env(&env_path, &env)?;
            (next, "next_entry (grub-reboot)")
        }
        None => {
            let configured =
                config.defaults.iter().rev().find(|d| !d.contains("next_entry")).cloned().unwrap_or_else(|| "0".into());
            (expand(&configured, &env), "default")
        }
    };
    // GRUB falls back to entry 0 when the default names nothing.
    let (item, how) = match resolve(&config.menu, &spec) {
        Some(item) => (item, how),
        None => (
            resolve(&config.menu, "0")
                .ok_or_else(|| FirmwareError::NoEntries("GRUB's first menu item is a submenu".into()))?,
            "fallback to entry 0",
        ),
    };
    let linux = item
        .linux
        .as_deref()
        .ok_or_else(|| FirmwareError::BadEntry(format!("menuentry `{}` has no `linux` line", item.title)))?;
    let mut parts = linux.splitn(2, ' ');
    let kernel = parts.next().unwrap_or_default();
    Ok(BootChoice {
        entry_id: item.id.clone().unwrap_or_else(|| item.title.clone()),
        title: item.title.clone(),
        reason: format!("{how} = {spec}"),
        kernel: fs_path(root, kernel),
        initrds: item.initrd.iter().map(|i| fs_path(root, i)).collect(),
        options: parts.next().unwrap_or_default().to_owned(),
    })
}

/// `($drive1)/nix/store/...` → `<root>/nix/store/...`.
fn fs_path(root: &Path, grub_path: &str) -> PathBuf {
    let path = match grub_path.strip_prefix('(') {
        Some(rest) => rest.split_once(')').map(|(_, p)| p).unwrap_or(rest),
        None => grub_path,
    };
    root.join(path.trim_start_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CFG: &str = r#"
if [ -s $prefix/grubenv ]; then
  load_env
fi
if [ "${next_entry}" ]; then
  set default="${next_entry}"
  set next_entry=
  save_env next_entry
  set timeout=1
else
  set default=0
  set timeout=5
fi
menuentry "NixOS - Default" --id=nixos-default {
  search --set=drive1 --fs-uuid 1234
  linux ($drive1)/nix/store/b-system/kernel init=/nix/store/b-system/init loglevel=4
  initrd ($drive1)/nix/store/b-system/initrd
}
submenu "NixOS - All configurations" --class submenu {
  menuentry "NixOS - Configuration 2 (2026-11-22)" --id=nixos-generation-2 {
    linux ($drive1)/nix/store/b-system/kernel init=/nix/store/b-system/init
    initrd ($drive1)/nix/store/b-system/initrd
  }
  menuentry "NixOS - Configuration 1 (2026-11-21)" --id=nixos-generation-1 {
    linux ($drive1)/nix/store/a-system/kernel init=/nix/store/a-system/init
    initrd ($drive1)/nix/store/a-system/initrd
  }
}
"#;

    #[test]
    fn env_block_is_exactly_1024_bytes_and_round_trips() {
        let mut vars = BTreeMap::new();
        vars.insert("next_entry".to_owned(), "nixos-generation-2".to_owned());
        let bytes = render_env(&vars).unwrap();
        assert_eq!(bytes.len(), 1024);
        assert!(bytes.starts_with(b"# GRUB Environment Block\nnext_entry=nixos-generation-2\n#"));
        assert_eq!(parse_env(&bytes), vars);
    }

    #[test]
    fn menu_is_parsed_with_submenus_and_ids() {
        let config = parse_config(CFG);
        assert_eq!(config.menu.len(), 2);
        assert_eq!(config.menu[1].children.len(), 2);
        assert_eq!(config.menu[1].children[1].id.as_deref(), Some("nixos-generation-1"));
        assert_eq!(config.defaults, ["${next_entry}", "0"]);
        assert_eq!(resolve(&config.menu, "1>1").unwrap().title, "NixOS - Configuration 1 (2026-11-21)");
        assert_eq!(resolve(&config.menu, "nixos-default").unwrap().title, "NixOS - Default");
        assert!(resolve(&config.menu, "1").is_none(), "a submenu is not bootable");
    }

    #[test]
    fn variables_expand_by_whole_name() {
        let env = BTreeMap::from([("next".to_owned(), "X".to_owned()), ("next_entry".to_owned(), "Y".to_owned())]);
        assert_eq!(expand("${next_entry}", &env), "Y");
        assert_eq!(expand("$next_entry and $next", &env), "Y and X");
        assert_eq!(expand("${missing}x", &env), "x");
        assert_eq!(expand("cost $", &env), "cost $");
    }

    #[test]
    fn next_entry_boots_once_and_is_cleared() {
        let root = tempfile::tempdir().unwrap();
        fs::create_dir_all(root.path().join("boot/grub")).unwrap();
        fs::write(root.path().join("boot/grub/grub.cfg"), CFG).unwrap();
        let mut env = BTreeMap::new();
        env.insert("next_entry".to_owned(), "1>nixos-generation-1".to_owned());
        write_env(&root.path().join("boot/grub/grubenv"), &env).unwrap();
        let once = choose(root.path()).unwrap();
        assert!(once.kernel.ends_with("nix/store/a-system/kernel"), "{:?}", once.kernel);
        assert_eq!(once.options, "init=/nix/store/a-system/init");
        let again = choose(root.path()).unwrap();
        assert_eq!(again.title, "NixOS - Default");
    }
}
