//! Finding kernel modules in an image, resolving symlinks inside the archive.

use std::collections::{BTreeSet, HashMap, HashSet};

use crate::Error;
use crate::entry::{Entry, FileType};

/// Module file suffixes recognised (in this order of precedence).
const MODULE_SUFFIXES: [&[u8]; 4] = [b".ko", b".ko.xz", b".ko.zst", b".ko.gz"];
/// Symlink hops allowed while resolving one path (the kernel's limit is 40).
const MAX_HOPS: usize = 40;
/// The most paths a [`ModuleScan`] keeps by default (module files, symbolic
/// links, module version directories). Debian's initrd has about 1,100
/// modules and 20 links; NixOS's far fewer.
pub const MAX_KEPT_PATHS: usize = 200_000;
/// The most bytes of paths and link targets a [`ModuleScan`] keeps by
/// default.
pub const MAX_KEPT_BYTES: usize = 32 << 20;

/// Kernel modules and module directories found in an image.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct KernelModules {
    /// Names of the version directories found under a `lib/modules/`
    /// (e.g. `6.1.0-56-amd64`).
    pub kernel_versions: BTreeSet<String>,
    /// Module names: the file name without `.ko[.xz|.zst|.gz]`, with `-`
    /// replaced by `_` (as `modprobe` and `/proc/modules` spell them).
    pub names: BTreeSet<String>,
    /// Every module file found (a module reachable by several paths is
    /// listed once per version directory).
    pub files: Vec<ModuleFile>,
}

/// One module file found by [`ModuleScan`].
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[non_exhaustive]
pub struct ModuleFile {
    /// Normalised module name (`virtio_blk`).
    pub name: String,
    /// The version directory it was found under.
    pub kernel_version: String,
    /// Path inside the archive of the file or symlink, as reached by walking
    /// from the version directory (after symlink resolution of directories).
    pub path: String,
}

impl KernelModules {
    /// True if a module of that name (either spelling, `-` or `_`) exists.
    pub fn contains(&self, name: &str) -> bool {
        self.names.contains(&name.replace('-', "_"))
    }
}

/// If `file_name` is a kernel module file name, its normalised module name.
pub fn module_name(file_name: &[u8]) -> Option<String> {
    MODULE_SUFFIXES.iter().find_map(|suffix| {
        let stem = file_name.strip_suffix(*suffix)?;
        if stem.is_empty() {
            return None;
        }
        Some(String::from_utf8_lossy(stem).replace('-', "_"))
    })
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Node {
    Dir,
    File,
    Symlink(Vec<u8>),
    Other,
}

/// Collects what [`KernelModules`] needs while entries stream by.
///
/// Feed it every entry with [`ModuleScan::add`], then call
/// [`ModuleScan::finish`]. It keeps only what finding modules needs — the
/// paths of module files, symbolic links (with their targets) and module
/// version directories (`…/lib/modules/<ver>`), never file data — so its
/// memory does not grow with the number of other entries (an image of two
/// million empty files costs nothing). What it keeps is capped
/// ([`MAX_KEPT_PATHS`], [`MAX_KEPT_BYTES`]): past that, [`ModuleScan::add`]
/// fails with [`Error::TooManyEntries`] instead of growing further. Modules are found under `lib/modules/<ver>/`,
/// `usr/lib/modules/<ver>/` and `nix/store/*/lib/modules/<ver>/`, following
/// symlinks that exist inside the archive: with NixOS's stage 1, `/lib` or
/// `/lib/modules` is a symlink into a `/nix/store/...-modules` path, and
/// module files can themselves be symlinks. A module symlink whose target
/// is missing from the archive does not count.
#[derive(Clone, Debug)]
pub struct ModuleScan {
    nodes: HashMap<Vec<u8>, Node>,
    /// Bytes of the kept paths and link targets.
    kept_bytes: usize,
    max_paths: usize,
    max_bytes: usize,
}

impl Default for ModuleScan {
    fn default() -> Self {
        ModuleScan::with_limits(MAX_KEPT_PATHS, MAX_KEPT_BYTES)
    }
}

impl ModuleScan {
    /// An empty scan with the default limits.
    pub fn new() -> Self {
        ModuleScan::default()
    }

    /// An empty scan that keeps at most `max_paths` paths and `max_bytes`
    /// bytes of them.
    pub fn with_limits(max_paths: usize, max_bytes: usize) -> Self {
        ModuleScan { nodes: HashMap::new(), kept_bytes: 0, max_paths, max_bytes }
    }

    /// Records one entry, if finding modules needs it.
    ///
    /// # Errors
    /// [`Error::TooManyEntries`] when keeping it would pass the limits.
    pub fn add(&mut self, entry: &Entry) -> Result<(), Error> {
        let Some(key) = clean(entry.path_bytes()) else {
            return Ok(());
        };
        let file_type = entry.file_type();
        let node = match file_type {
            FileType::Directory => Node::Dir,
            FileType::Regular => Node::File,
            FileType::Symlink => match entry.symlink_target() {
                Some(t) => Node::Symlink(t.to_vec()),
                None => Node::Other,
            },
            _ => Node::Other,
        };
        let target_len = |node: &Node| if let Node::Symlink(t) = node { t.len() } else { 0 };
        // A later entry replaces an earlier one at the same path, as the
        // kernel's unpacker replaces it (`clean_path` in init/initramfs.c),
        // whether or not it is worth keeping.
        if let Some(existing) = self.nodes.get_mut(&key) {
            self.kept_bytes = self.kept_bytes - target_len(existing) + target_len(&node);
            *existing = node;
            return self.check_limits();
        }
        let needed = match file_type {
            FileType::Symlink => true,
            FileType::Regular => key.rsplit(|&b| b == b'/').next().and_then(module_name).is_some(),
            FileType::Directory => is_version_dir(&key),
            _ => false,
        };
        if needed {
            self.kept_bytes += key.len() + target_len(&node);
            self.nodes.insert(key, node);
        }
        self.check_limits()
    }

    /// How many paths the scan keeps so far.
    pub fn kept_paths(&self) -> usize {
        self.nodes.len()
    }

    fn check_limits(&self) -> Result<(), Error> {
        if self.nodes.len() > self.max_paths || self.kept_bytes > self.max_bytes {
            return Err(Error::TooManyEntries { max_paths: self.max_paths, max_bytes: self.max_bytes });
        }
        Ok(())
    }

    /// Resolves symlinks and lists the modules.
    pub fn finish(mut self) -> KernelModules {
        // Directories the archive implies without listing them.
        let mut implied = Vec::new();
        for path in self.nodes.keys() {
            let mut p = path.as_slice();
            while let Some(i) = p.iter().rposition(|&b| b == b'/') {
                p = &p[..i];
                if !self.nodes.contains_key(p) {
                    implied.push(p.to_vec());
                }
            }
        }
        for p in implied {
            self.nodes.insert(p, Node::Dir);
        }
        let mut children: HashMap<&[u8], Vec<&[u8]>> = HashMap::new();
        for path in self.nodes.keys() {
            let (parent, name) = match path.iter().rposition(|&b| b == b'/') {
                Some(i) => (&path[..i], &path[i + 1..]),
                None => (&b""[..], path.as_slice()),
            };
            children.entry(parent).or_default().push(name);
        }
        for list in children.values_mut() {
            list.sort_unstable();
        }

        let ns = Namespace { nodes: &self.nodes, children: &children };
        let mut roots: Vec<Vec<u8>> = vec![b"lib/modules".to_vec(), b"usr/lib/modules".to_vec()];
        for store_item in ns.children_of(b"nix/store") {
            roots.push([b"nix/store/", *store_item, b"/lib/modules"].concat());
        }

        let mut out = KernelModules::default();
        let mut walked: HashSet<(Vec<u8>, String)> = HashSet::new();
        for root in roots {
            let Some(root) = ns.resolve(&root) else {
                continue;
            };
            if ns.nodes.get(&root) != Some(&Node::Dir) {
                continue;
            }
            for version in ns.children_of(&root) {
                let Some(dir) = ns.resolve(&join(&root, version)) else {
                    continue;
                };
                if ns.nodes.get(&dir) != Some(&Node::Dir) {
                    continue;
                }
                let version = String::from_utf8_lossy(version).into_owned();
                out.kernel_versions.insert(version.clone());
                ns.walk(dir, &version, &mut walked, &mut out);
            }
        }
        out.files.sort();
        out.files.dedup();
        out
    }
}

struct Namespace<'a> {
    nodes: &'a HashMap<Vec<u8>, Node>,
    children: &'a HashMap<&'a [u8], Vec<&'a [u8]>>,
}

impl Namespace<'_> {
    fn children_of(&self, dir: &[u8]) -> &[&[u8]] {
        self.children.get(dir).map_or(&[], Vec::as_slice)
    }

    /// Resolves every symlink in `path` (including the last component) the
    /// way the kernel would once the archive is unpacked at `/`. Returns the
    /// canonical path, or `None` if a component is missing or there are too
    /// many hops.
    fn resolve(&self, path: &[u8]) -> Option<Vec<u8>> {
        let mut done: Vec<u8> = Vec::new();
        let mut todo: Vec<Vec<u8>> = components(path).rev().map(<[u8]>::to_vec).collect();
        let mut hops = 0;
        while let Some(c) = todo.pop() {
            if c == b".." {
                let cut = done.iter().rposition(|&b| b == b'/').unwrap_or(0);
                done.truncate(cut);
                continue;
            }
            let next = join(&done, &c);
            match self.nodes.get(&next)? {
                Node::Symlink(target) => {
                    hops += 1;
                    if hops > MAX_HOPS {
                        return None;
                    }
                    if target.first() == Some(&b'/') {
                        done.clear();
                    }
                    todo.extend(components(target).rev().map(<[u8]>::to_vec));
                }
                _ => done = next,
            }
        }
        Some(done)
    }

    fn walk(&self, dir: Vec<u8>, version: &str, walked: &mut HashSet<(Vec<u8>, String)>, out: &mut KernelModules) {
        // Iterative depth-first walk; `walked` stops symlink loops.
        let mut stack = vec![dir];
        while let Some(dir) = stack.pop() {
            if !walked.insert((dir.clone(), version.to_owned())) {
                continue;
            }
            for name in self.children_of(&dir) {
                let path = join(&dir, name);
                let target = match self.nodes.get(&path) {
                    Some(Node::Symlink(_)) => match self.resolve(&path) {
                        Some(t) => t,
                        None => continue,
                    },
                    Some(_) => path.clone(),
                    None => continue,
                };
                match self.nodes.get(&target) {
                    Some(Node::Dir) => stack.push(target),
                    Some(Node::File) => {
                        if let Some(module) = module_name(name) {
                            out.names.insert(module.clone());
                            out.files.push(ModuleFile {
                                name: module,
                                kernel_version: version.to_owned(),
                                path: String::from_utf8_lossy(&path).into_owned(),
                            });
                        }
                    }
                    _ => {}
                }
            }
        }
    }
}

/// `…/lib/modules/<ver>`: a directory that may be a kernel version
/// directory even when it holds no module.
fn is_version_dir(path: &[u8]) -> bool {
    let mut parts = path.rsplit(|&b| b == b'/');
    let _version = parts.next();
    parts.next() == Some(b"modules") && parts.next() == Some(b"lib")
}

/// The non-empty, non-`.` components of a path.
fn components(path: &[u8]) -> impl DoubleEndedIterator<Item = &[u8]> {
    path.split(|&b| b == b'/').filter(|c| !c.is_empty() && *c != b".")
}

/// A path in canonical form: components joined by `/`, no leading `/`.
/// `None` for the root itself or paths with `..`.
fn clean(path: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(path.len());
    for c in components(path) {
        if c == b".." {
            return None;
        }
        if !out.is_empty() {
            out.push(b'/');
        }
        out.extend_from_slice(c);
    }
    (!out.is_empty()).then_some(out)
}

fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    if dir.is_empty() { name.to_vec() } else { [dir, b"/", name].concat() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_names_are_stems_with_underscores() {
        assert_eq!(module_name(b"virtio_blk.ko").as_deref(), Some("virtio_blk"));
        assert_eq!(module_name(b"crc32c-intel.ko.zst").as_deref(), Some("crc32c_intel"));
        assert_eq!(module_name(b"ext4.ko.xz").as_deref(), Some("ext4"));
        assert_eq!(module_name(b"dm-mod.ko.gz").as_deref(), Some("dm_mod"));
        assert_eq!(module_name(b".ko"), None);
        assert_eq!(module_name(b"modules.dep"), None);
        assert_eq!(module_name(b"foo.ko.bz2"), None);
    }

    #[test]
    fn version_directories_are_recognised_by_their_parents() {
        assert!(is_version_dir(b"lib/modules/6.1.0"));
        assert!(is_version_dir(b"nix/store/abc-modules/lib/modules/6.6.1"));
        assert!(!is_version_dir(b"lib/modules"));
        assert!(!is_version_dir(b"lib/firmware/6.1.0"));
        assert!(!is_version_dir(b"usr/share/modules/x"));
        assert!(!is_version_dir(b"6.1.0"));
    }

    #[test]
    fn clean_paths() {
        assert_eq!(clean(b"/lib//modules/./x").as_deref(), Some(&b"lib/modules/x"[..]));
        assert_eq!(clean(b"."), None);
        assert_eq!(clean(b"a/../b"), None);
    }
}
