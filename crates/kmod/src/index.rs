//! The module index: a kernel's module metadata in memory, and lookups
//! answered the way libkmod answers them. Reading the files is `parse`;
//! load plans are `plan`; what a device needs is `requirement`.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use crate::error::{KmodError, Result};
use crate::fnmatch::fnmatch;
use crate::name::{ModuleName, normalize_alias};
use crate::pattern::PatternIndex;

/// A line that was ignored while parsing, with the reason. depmod and
/// libkmod skip the same lines (with a warning), so nothing is lost that
/// modprobe would have used; the list exists so a caller can say so aloud.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedLine {
    /// The file, e.g. `modules.alias`.
    pub file: &'static str,
    /// 1-based line number (for `modules.builtin.modinfo`: the entry number).
    pub line: usize,
    /// The line as read.
    pub text: String,
    /// Why it was skipped.
    pub reason: &'static str,
}

/// Why an alias with an unmatched bracket is skipped: depmod writes such
/// aliases into the text files and leaves them out of its binary indexes.
pub(crate) const UNMATCHED_BRACKET: &str = "unmatched bracket in alias (depmod skips it too)";

impl SkippedLine {
    /// Whether the line shows the metadata is damaged: a line depmod never
    /// writes, in a file that module lookups depend on (`modules.dep`,
    /// `modules.alias`, `modules.symbols`, `modules.builtin.modinfo`). An
    /// alias with an unmatched bracket is depmod's own output, and
    /// `modules.softdep` only adds optional modules.
    #[must_use]
    pub fn is_damage(&self) -> bool {
        self.reason != UNMATCHED_BRACKET && self.file != "modules.softdep"
    }
}

/// Which step of libkmod's lookup chain answered a query.
///
/// `kmod_module_new_from_lookup` (`libkmod/libkmod-module.c`) tries, in
/// order: aliases from modprobe configuration, `modules.dep` (a module
/// name), `modules.symbols` (`symbol:` queries), install commands from
/// configuration, `modules.alias`, `modules.builtin`, and the built-in
/// aliases from `modules.builtin.modinfo`; the first step that finds anything
/// wins. Configuration (`/etc/modprobe.d`) is a property of a running
/// system, not of a kernel, so the two configuration steps are not modelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LookupSource {
    /// The query is the name of a module in `modules.dep`.
    ModulesDep,
    /// A `symbol:` query answered by `modules.symbols`.
    Symbols,
    /// One or more `modules.alias` patterns matched.
    Aliases,
    /// The query is the name of a built-in module (`modules.builtin`).
    Builtin,
    /// An alias of a built-in module matched (`modules.builtin.modinfo`).
    BuiltinAliases,
}

/// The answer to a lookup: the modules found, and which step found them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Lookup {
    /// The step that answered; `None` when nothing matched.
    pub source: Option<LookupSource>,
    /// Matching modules, in libkmod's order, without duplicates.
    pub modules: Vec<ModuleName>,
}

/// A `softdep` entry: modules to load before (`pre`) and after (`post`) every
/// module whose name matches `pattern`. The names are looked up like any
/// modprobe argument, so they may be aliases (`crypto-crc32c`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SoftDep {
    /// Module-name pattern (fnmatch), normalised with `-` → `_`.
    pub pattern: String,
    /// Names or aliases to load first.
    pub pre: Vec<String>,
    /// Names or aliases to load afterwards.
    pub post: Vec<String>,
}

#[derive(Debug, Clone)]
pub(crate) struct ModuleEntry {
    pub(crate) path: String,
    /// Dependencies exactly as listed on the module's `modules.dep` line.
    pub(crate) deps: Vec<ModuleName>,
}

/// Kernel module metadata of one kernel: what `modprobe` knows from
/// `/lib/modules/<kver>`.
#[derive(Debug, Clone, Default)]
pub struct ModuleIndex {
    pub(crate) kernel_version: Option<String>,
    pub(crate) dir: Option<PathBuf>,
    pub(crate) modules: HashMap<ModuleName, ModuleEntry>,
    pub(crate) module_order: Vec<ModuleName>,
    pub(crate) aliases: PatternIndex,
    pub(crate) symbols: PatternIndex,
    pub(crate) builtin: HashMap<ModuleName, String>,
    /// Modules named in `modules.builtin.modinfo`: compiled in as well.
    pub(crate) modinfo_modules: HashSet<ModuleName>,
    pub(crate) builtin_aliases: PatternIndex,
    pub(crate) softdeps: Vec<SoftDep>,
    pub(crate) skipped: Vec<SkippedLine>,
    pub(crate) absent_files: Vec<&'static str>,
}

impl ModuleIndex {
    /// The kernel version (the directory name for [`ModuleIndex::load`]).
    #[must_use]
    pub fn kernel_version(&self) -> Option<&str> {
        self.kernel_version.as_deref()
    }

    /// The directory the index was loaded from.
    #[must_use]
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// Optional files that did not exist when loading (see
    /// [`ModuleIndex::load`]).
    #[must_use]
    pub fn absent_files(&self) -> &[&'static str] {
        &self.absent_files
    }

    /// Lines that were skipped while parsing.
    #[must_use]
    pub fn skipped_lines(&self) -> &[SkippedLine] {
        &self.skipped
    }

    /// Number of loadable modules (lines of `modules.dep`).
    #[must_use]
    pub fn module_count(&self) -> usize {
        self.module_order.len()
    }

    /// Number of `modules.alias` patterns.
    #[must_use]
    pub fn alias_count(&self) -> usize {
        self.aliases.len()
    }

    /// Loadable modules in `modules.dep` order.
    pub fn modules(&self) -> impl Iterator<Item = &ModuleName> {
        self.module_order.iter()
    }

    /// Modules built into the kernel image (`modules.builtin`).
    pub fn builtin_modules(&self) -> impl Iterator<Item = &ModuleName> {
        self.builtin.keys()
    }

    /// The module file of a loadable module, relative to the modules
    /// directory (as written in `modules.dep`).
    #[must_use]
    pub fn module_path(&self, module: &ModuleName) -> Option<&str> {
        self.modules.get(module).map(|m| m.path.as_str())
    }

    /// Whether `module` is a loadable module (has a `modules.dep` line).
    #[must_use]
    pub fn is_loadable(&self, module: &ModuleName) -> bool {
        self.modules.contains_key(module)
    }

    /// Whether `module` is compiled into the kernel: listed in
    /// `modules.builtin` (libkmod's `kmod_lookup_alias_is_builtin`) or named
    /// in `modules.builtin.modinfo`, which the kernel build extracts from the
    /// kernel image itself (libkmod marks modules found through those
    /// aliases built in, too).
    #[must_use]
    pub fn is_builtin(&self, module: &ModuleName) -> bool {
        self.builtin.contains_key(module) || self.modinfo_modules.contains(module)
    }

    /// Resolves a module name, modalias or `symbol:` name the way
    /// `modprobe --resolve-alias` does, and says which step answered.
    ///
    /// The query is normalised first (`-` → `_` outside brackets); a query
    /// with an unmatched bracket finds nothing, as in libkmod.
    #[must_use]
    pub fn lookup(&self, query: &str) -> Lookup {
        let mut lookup = self.lookup_with_repeats(query);
        let mut seen = HashSet::new();
        lookup.modules.retain(|m| seen.insert(m.clone()));
        lookup
    }

    /// [`ModuleIndex::lookup`] with a module repeated once per matching
    /// pattern, as libkmod returns it (modprobe then acts on each entry).
    pub(crate) fn lookup_with_repeats(&self, query: &str) -> Lookup {
        let Some(key) = normalize_alias(query) else {
            return Lookup::default();
        };
        let found = |source: LookupSource, modules: Vec<ModuleName>| Lookup { source: Some(source), modules };
        if !key.contains(':') {
            let name = ModuleName::new(&key);
            if name.as_str() == key && self.modules.contains_key(&name) {
                return found(LookupSource::ModulesDep, vec![name]);
            }
        }
        if key.starts_with("symbol:") {
            let modules = self.symbols.lookup(&key);
            if !modules.is_empty() {
                return found(LookupSource::Symbols, modules);
            }
        }
        let modules = self.aliases.lookup(&key);
        if !modules.is_empty() {
            return found(LookupSource::Aliases, modules);
        }
        if self.builtin.contains_key(key.as_str()) {
            return found(LookupSource::Builtin, vec![ModuleName::new(&key)]);
        }
        let modules = self.builtin_aliases.lookup(&key);
        if !modules.is_empty() {
            return found(LookupSource::BuiltinAliases, modules);
        }
        Lookup::default()
    }

    /// All modules a modalias (or module name, or `symbol:` name) resolves
    /// to, like `modprobe --resolve-alias`: every module with a matching
    /// alias pattern, ordered as libkmod orders them. modprobe prints a
    /// module once per matching pattern; this list has each module once.
    ///
    /// A modalias that only matches an alias of a built-in module resolves
    /// to that module (see [`ModuleIndex::is_builtin`]).
    #[must_use]
    pub fn resolve_modalias(&self, modalias: &str) -> Vec<ModuleName> {
        self.lookup(modalias).modules
    }

    /// The transitive `modules.dep` dependencies of `module`, in the order
    /// modprobe loads them (dependencies first, `module` itself excluded).
    ///
    /// depmod already writes the whole closure on each line, dependants
    /// first, and libkmod loads it back to front; for such files this is
    /// exactly that reversed line. For hand-written files whose lines list
    /// only direct dependencies, the closure is completed by a depth-first
    /// walk; cycles are cut where they close.
    ///
    /// # Errors
    /// [`KmodError::UnknownModule`] if `module` is neither in `modules.dep`
    /// nor built in. Built-in modules have no dependencies.
    pub fn dependencies(&self, module: &ModuleName) -> Result<Vec<ModuleName>> {
        if !self.modules.contains_key(module) && !self.is_builtin(module) {
            return Err(KmodError::UnknownModule(module.clone()));
        }
        Ok(self.dependency_closure(module))
    }

    pub(crate) fn dependency_closure(&self, root: &ModuleName) -> Vec<ModuleName> {
        let direct = |m: &ModuleName| -> Vec<ModuleName> {
            self.modules.get(m).map(|e| e.deps.iter().rev().cloned().collect()).unwrap_or_default()
        };
        let mut out = Vec::new();
        let mut visited: HashSet<ModuleName> = HashSet::from([root.clone()]);
        // Iterative post-order walk: (module, its deps in load order, next).
        let mut stack: Vec<(ModuleName, Vec<ModuleName>, usize)> = vec![(root.clone(), direct(root), 0)];
        while let Some((_, deps, next)) = stack.last_mut() {
            if let Some(dep) = deps.get(*next).cloned() {
                *next += 1;
                if visited.insert(dep.clone()) {
                    let its = direct(&dep);
                    stack.push((dep, its, 0));
                }
            } else if let Some((done, _, _)) = stack.pop() {
                if stack.is_empty() {
                    break;
                }
                out.push(done);
            }
        }
        out
    }

    /// The first softdep entry whose pattern matches `module` — libkmod
    /// uses only that one ("find only the first command, as modprobe from
    /// module-init-tools does").
    #[must_use]
    pub fn softdeps(&self, module: &ModuleName) -> Option<&SoftDep> {
        self.softdeps.iter().find(|s| fnmatch(&s.pattern, module.as_str()))
    }

    /// The softdep pre and post modules of `module`, each name resolved
    /// through the full lookup chain (names that resolve to nothing are
    /// dropped, as libkmod's `lookup_dep` does).
    #[must_use]
    pub fn resolved_softdeps(&self, module: &ModuleName) -> (Vec<ModuleName>, Vec<ModuleName>) {
        let Some(softdep) = self.softdeps(module) else {
            return (Vec::new(), Vec::new());
        };
        let resolve =
            |names: &[String]| -> Vec<ModuleName> { names.iter().flat_map(|name| self.lookup(name).modules).collect() };
        (resolve(&softdep.pre), resolve(&softdep.post))
    }
}
