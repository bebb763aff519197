//! Module names and the normalisations libkmod applies to names and aliases.

use std::borrow::Borrow;
use std::fmt;

/// File-name endings of loadable kernel modules, uncompressed and compressed.
pub const MODULE_SUFFIXES: [&str; 4] = [".ko", ".ko.xz", ".ko.zst", ".ko.gz"];

/// A kernel module name in canonical form: `-` replaced by `_`, and nothing
/// from the first `.` on (so `crc32c-intel`, `crc32c_intel.ko` and
/// `crc32c-intel.ko.zst` all name `crc32c_intel`).
///
/// This is libkmod's `modname_normalize` (`shared/util.c`), which every name
/// lookup (`kmod_module_new_from_name_lookup`) goes through.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ModuleName(String);

impl ModuleName {
    /// Normalises `name` into a module name. Never fails; an empty or odd
    /// name simply matches no module.
    #[must_use]
    pub fn new(name: &str) -> Self {
        let stem = name.split('.').next().unwrap_or_default();
        ModuleName(stem.replace('-', "_"))
    }

    /// The module name of a module file path such as
    /// `kernel/drivers/block/virtio_blk.ko.zst` (libkmod's `path_to_modname`).
    #[must_use]
    pub fn from_path(path: &str) -> Self {
        let base = path.rsplit('/').next().unwrap_or_default();
        Self::new(base)
    }

    /// The canonical name.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ModuleName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ModuleName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl From<&str> for ModuleName {
    fn from(name: &str) -> Self {
        Self::new(name)
    }
}

impl AsRef<str> for ModuleName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for ModuleName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for ModuleName {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for ModuleName {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

/// If `file_name` ends in one of [`MODULE_SUFFIXES`], the part before it.
#[must_use]
pub fn strip_module_suffix(file_name: &str) -> Option<&str> {
    // Longest suffixes first so `.ko.xz` is not mistaken for a bare name.
    [".ko.zst", ".ko.xz", ".ko.gz", ".ko"]
        .iter()
        .find_map(|suffix| file_name.strip_suffix(suffix))
        .filter(|stem| !stem.is_empty())
}

/// libkmod's `alias_normalize` (`shared/util.c`): `-` becomes `_` except
/// inside `[...]`; a `]` outside brackets or a `[` that never closes makes the
/// alias invalid (`None`).
///
/// depmod applies it to every alias before writing `modules.alias.bin`, and
/// `kmod_module_new_from_lookup` applies it to the string being looked up.
#[must_use]
pub fn normalize_alias(alias: &str) -> Option<String> {
    if !alias.contains(['-', '[', ']']) {
        return Some(alias.to_owned());
    }
    let mut out = String::with_capacity(alias.len());
    let mut chars = alias.chars();
    while let Some(c) = chars.next() {
        match c {
            '-' => out.push('_'),
            ']' => return None,
            '[' => {
                out.push('[');
                loop {
                    match chars.next() {
                        None => return None,
                        Some(']') => {
                            out.push(']');
                            break;
                        }
                        Some(inner) => out.push(inner),
                    }
                }
            }
            other => out.push(other),
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_normalised_like_modname_normalize() {
        assert_eq!(ModuleName::new("crc32c-intel"), "crc32c_intel");
        assert_eq!(ModuleName::new("virtio_blk.ko.xz"), "virtio_blk");
        assert_eq!(ModuleName::new("nvme-core.ko.zst"), "nvme_core");
        assert_eq!(ModuleName::from_path("kernel/drivers/block/virtio_blk.ko.gz"), "virtio_blk");
        assert_eq!(ModuleName::from_path("kernel/lib/crc-t10dif.ko"), "crc_t10dif");
        assert_eq!(ModuleName::new(""), "");
    }

    #[test]
    fn module_suffixes() {
        assert_eq!(strip_module_suffix("virtio_blk.ko"), Some("virtio_blk"));
        assert_eq!(strip_module_suffix("virtio_blk.ko.xz"), Some("virtio_blk"));
        assert_eq!(strip_module_suffix("virtio_blk.ko.zst"), Some("virtio_blk"));
        assert_eq!(strip_module_suffix("virtio_blk.ko.gz"), Some("virtio_blk"));
        assert_eq!(strip_module_suffix("virtio_blk.ko.bz2"), None);
        assert_eq!(strip_module_suffix(".ko"), None);
        assert_eq!(strip_module_suffix("modules.dep"), None);
    }

    #[test]
    fn alias_normalisation_keeps_brackets_verbatim() {
        assert_eq!(normalize_alias("crypto-crc32c").as_deref(), Some("crypto_crc32c"));
        assert_eq!(normalize_alias("usb:v13FDp3940d0[0-2]*dc*").as_deref(), Some("usb:v13FDp3940d0[0-2]*dc*"));
        assert_eq!(normalize_alias("a]b"), None);
        assert_eq!(normalize_alias("a[b"), None);
        assert_eq!(normalize_alias("a[-]-b").as_deref(), Some("a[-]_b"));
    }
}
