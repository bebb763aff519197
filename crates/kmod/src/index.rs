//! The module index: parsing the `modules.*` files and answering lookups the
//! way libkmod does.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::ErrorKind;
use std::path::{Component, Path, PathBuf};

use crate::error::{KmodError, Result};
use crate::fnmatch::fnmatch;
use crate::name::{ModuleName, normalize_alias};
use crate::requirement::{Candidate, LoadStep, Provider, Requirement};

/// The raw contents of the files [`ModuleIndex`] reads, for building an index
/// from strings (tests, or files fetched from elsewhere).
///
/// Every field defaults to empty; an empty file and an absent one mean the
/// same here. [`ModuleIndex::load`] is the variant that also insists on
/// `modules.dep` and records which optional files were absent.
#[derive(Debug, Clone, Copy, Default)]
pub struct IndexSources<'a> {
    /// The kernel version the files belong to, if known.
    pub kernel_version: Option<&'a str>,
    /// `modules.dep`: `path: dep-path dep-path …`, dependants before their
    /// dependencies (depmod writes the full transitive list on every line).
    pub modules_dep: &'a str,
    /// `modules.alias`: `alias <fnmatch pattern> <module>`.
    pub modules_alias: &'a str,
    /// `modules.softdep`: `softdep <module pattern> pre: a b post: c`.
    pub modules_softdep: &'a str,
    /// `modules.builtin`: one path per module compiled into the kernel.
    pub modules_builtin: &'a str,
    /// `modules.builtin.modinfo`: NUL-separated `module.key=value` strings.
    pub modules_builtin_modinfo: &'a [u8],
    /// `modules.symbols`: `alias symbol:<name> <module>`.
    pub modules_symbols: &'a str,
}

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
struct ModuleEntry {
    path: String,
    /// Dependencies exactly as listed on the module's `modules.dep` line.
    deps: Vec<ModuleName>,
}

#[derive(Debug, Clone)]
struct PatternEntry {
    pattern: Box<str>,
    /// Byte length of the literal prefix (up to the first `*`, `?` or `[`).
    literal: usize,
    /// Index into [`PatternIndex::modules`].
    module: u32,
    priority: u32,
    /// Position in the file, the tie-breaker between equal priorities.
    seq: u32,
}

impl PatternEntry {
    fn prefix(&self) -> &str {
        self.pattern.get(..self.literal).unwrap_or_default()
    }
}

/// Alias patterns sorted by their literal prefix, as libkmod's trie descends
/// literally until the first wildcard and only then calls `fnmatch` on the
/// rest (`index_searchwild__node` / `index_searchwild__all`). A lookup costs
/// one binary search per prefix length of the key plus `fnmatch` on the
/// few patterns whose literal prefix the key starts with.
#[derive(Debug, Clone, Default)]
struct PatternIndex {
    entries: Vec<PatternEntry>,
    /// Interned module names; an id is the order of first appearance.
    modules: Vec<ModuleName>,
    ids: HashMap<String, u32>,
    longest_prefix: usize,
}

impl PatternIndex {
    /// Adds a normalised pattern. With `rank_by_module`, the priority is the
    /// module's order of first appearance (depmod's module index, see
    /// `parse_alias_file`); otherwise every pattern has priority 0.
    fn insert(&mut self, pattern: String, module: &str, rank_by_module: bool) {
        let module = if module.contains(['-', '.']) {
            std::borrow::Cow::Owned(ModuleName::new(module).as_str().to_owned())
        } else {
            std::borrow::Cow::Borrowed(module)
        };
        let id = match self.ids.get(module.as_ref()) {
            Some(&id) => id,
            None => {
                let id = u32::try_from(self.modules.len()).unwrap_or(u32::MAX);
                self.modules.push(ModuleName::new(&module));
                self.ids.insert(module.into_owned(), id);
                id
            }
        };
        let literal = pattern.bytes().position(|b| matches!(b, b'*' | b'?' | b'[')).unwrap_or(pattern.len());
        self.longest_prefix = self.longest_prefix.max(literal);
        let seq = u32::try_from(self.entries.len()).unwrap_or(u32::MAX);
        self.entries.push(PatternEntry {
            pattern: pattern.into_boxed_str(),
            literal,
            module: id,
            priority: if rank_by_module { id } else { 0 },
            seq,
        });
    }

    /// Sorts the entries for lookups; call once after the last insert.
    fn finish(mut self) -> Self {
        self.entries.sort_unstable_by(|a, b| a.prefix().cmp(b.prefix()).then(a.seq.cmp(&b.seq)));
        self.ids = HashMap::new();
        self
    }

    fn len(&self) -> usize {
        self.entries.len()
    }

    /// Modules of all patterns matching `key` (already normalised), ordered
    /// by priority like libkmod's `add_value`: one entry per matching
    /// pattern, so a module matched by two patterns is listed twice, as
    /// libkmod lists it.
    fn lookup(&self, key: &str) -> Vec<ModuleName> {
        let mut hits: Vec<&PatternEntry> = Vec::new();
        for n in 0..=key.len().min(self.longest_prefix) {
            let (Some(prefix), Some(rest_key)) = (key.get(..n), key.get(n..)) else {
                continue;
            };
            let start = self.entries.partition_point(|e| e.prefix() < prefix);
            let group = self.entries.get(start..).unwrap_or_default();
            let len = group.partition_point(|e| e.prefix() == prefix);
            for entry in group.get(..len).unwrap_or_default() {
                let rest_pattern = entry.pattern.get(entry.literal..).unwrap_or_default();
                if fnmatch(rest_pattern, rest_key) {
                    hits.push(entry);
                }
            }
        }
        hits.sort_by_key(|e| (e.priority, e.seq));
        hits.into_iter()
            .filter_map(|e| usize::try_from(e.module).ok())
            .filter_map(|i| self.modules.get(i).cloned())
            .collect()
    }
}

/// Kernel module metadata of one kernel: what `modprobe` knows from
/// `/lib/modules/<kver>`.
#[derive(Debug, Clone, Default)]
pub struct ModuleIndex {
    kernel_version: Option<String>,
    dir: Option<PathBuf>,
    modules: HashMap<ModuleName, ModuleEntry>,
    module_order: Vec<ModuleName>,
    aliases: PatternIndex,
    symbols: PatternIndex,
    builtin: HashMap<ModuleName, String>,
    /// Modules named in `modules.builtin.modinfo`: compiled in as well.
    modinfo_modules: HashSet<ModuleName>,
    builtin_aliases: PatternIndex,
    softdeps: Vec<SoftDep>,
    skipped: Vec<SkippedLine>,
    absent_files: Vec<&'static str>,
}

/// Optional files, in the order they are read.
const OPTIONAL_FILES: [&str; 5] =
    ["modules.alias", "modules.softdep", "modules.builtin", "modules.builtin.modinfo", "modules.symbols"];

impl ModuleIndex {
    /// Reads a kernel modules directory such as `/lib/modules/6.1.0-56-amd64`
    /// or a NixOS system's `kernel-modules/lib/modules/<kver>`.
    ///
    /// `modules.dep` must exist ([`KmodError::MissingFile`] otherwise). The
    /// other files are optional; the ones that were absent are listed by
    /// [`ModuleIndex::absent_files`], because a kernel without
    /// `modules.builtin` makes every built-in driver look missing.
    ///
    /// The kernel version is the directory's name.
    ///
    /// # Errors
    /// [`KmodError::NotADirectory`], [`KmodError::MissingFile`],
    /// [`KmodError::NoKernelVersion`], or [`KmodError::Io`] when a file exists
    /// but cannot be read.
    pub fn load(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let meta = fs::metadata(dir).map_err(|source| KmodError::Io { path: dir.to_path_buf(), source })?;
        if !meta.is_dir() {
            return Err(KmodError::NotADirectory(dir.to_path_buf()));
        }
        let kernel_version = kernel_version_of(dir)?;

        let dep = read_optional(dir, "modules.dep")?
            .ok_or_else(|| KmodError::MissingFile { dir: dir.to_path_buf(), file: "modules.dep" })?;
        let mut optional: Vec<Option<Vec<u8>>> = Vec::with_capacity(OPTIONAL_FILES.len());
        let mut absent_files = Vec::new();
        for file in OPTIONAL_FILES {
            let contents = read_optional(dir, file)?;
            if contents.is_none() {
                absent_files.push(file);
            }
            optional.push(contents);
        }
        let mut texts = optional.into_iter().map(|bytes| bytes.map(into_text));
        let alias = texts.next().flatten().unwrap_or_default();
        let softdep = texts.next().flatten().unwrap_or_default();
        let builtin = texts.next().flatten().unwrap_or_default();
        let modinfo = texts.next().flatten().unwrap_or_default();
        let symbols = texts.next().flatten().unwrap_or_default();
        let dep = into_text(dep);

        let mut index = Self::from_parts(IndexSources {
            kernel_version: Some(&kernel_version),
            modules_dep: &dep,
            modules_alias: &alias,
            modules_softdep: &softdep,
            modules_builtin: &builtin,
            modules_builtin_modinfo: modinfo.as_bytes(),
            modules_symbols: &symbols,
        });
        index.dir = Some(dir.to_path_buf());
        index.absent_files = absent_files;
        Ok(index)
    }

    /// Builds an index from file contents. Never fails: malformed lines are
    /// skipped and listed by [`ModuleIndex::skipped_lines`].
    #[must_use]
    pub fn from_parts(sources: IndexSources<'_>) -> Self {
        let mut index =
            ModuleIndex { kernel_version: sources.kernel_version.map(str::to_owned), ..ModuleIndex::default() };
        index.parse_dep(sources.modules_dep);
        index.aliases = index.parse_alias_file("modules.alias", sources.modules_alias);
        index.symbols = index.parse_alias_file("modules.symbols", sources.modules_symbols);
        index.parse_softdep(sources.modules_softdep);
        index.parse_builtin(sources.modules_builtin);
        index.parse_builtin_modinfo(sources.modules_builtin_modinfo);
        index
    }

    fn skip(&mut self, file: &'static str, line: usize, text: &str, reason: &'static str) {
        self.skipped.push(SkippedLine { file, line, text: text.to_owned(), reason });
    }

    fn parse_dep(&mut self, text: &str) {
        for (n, line) in text.lines().enumerate() {
            let trimmed = line.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let Some((path, deps)) = trimmed.split_once(':') else {
                self.skip("modules.dep", n + 1, line, "no ':' after the module path");
                continue;
            };
            let path = path.trim();
            let name = ModuleName::from_path(path);
            if name.as_str().is_empty() {
                self.skip("modules.dep", n + 1, line, "empty module path");
                continue;
            }
            if self.modules.contains_key(&name) {
                self.skip("modules.dep", n + 1, line, "module listed twice; the first line wins");
                continue;
            }
            let deps = deps.split_whitespace().map(ModuleName::from_path).collect();
            self.module_order.push(name.clone());
            self.modules.insert(name, ModuleEntry { path: path.to_owned(), deps });
        }
    }

    /// `modules.alias` and `modules.symbols`: `alias <pattern> <module>`.
    /// A module's priority is the position of its first alias: depmod writes
    /// the file module by module in its index order, the same order it uses
    /// as priority in `modules.alias.bin`.
    fn parse_alias_file(&mut self, file: &'static str, text: &str) -> PatternIndex {
        let mut index = PatternIndex::default();
        for (n, line) in text.lines().enumerate() {
            let trimmed = line.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let mut fields = trimmed.split_whitespace();
            let (Some("alias"), Some(pattern), Some(module), None) =
                (fields.next(), fields.next(), fields.next(), fields.next())
            else {
                self.skip(file, n + 1, line, "expected `alias <pattern> <module>`");
                continue;
            };
            let Some(pattern) = normalize_alias(pattern) else {
                self.skip(file, n + 1, line, "unmatched bracket in alias (depmod skips it too)");
                continue;
            };
            index.insert(pattern, module, true);
        }
        index.finish()
    }

    /// `modules.softdep` is read by libkmod as a configuration file
    /// (`kmod_config_new` adds it to the list); only `softdep` lines matter
    /// in it. Tokens before a `pre:` or `post:` are ignored, exactly as
    /// `kmod_config_add_softdep` does — so `softdep cifs gcm` is an entry
    /// with no dependencies at all, which shadows later `cifs` entries.
    fn parse_softdep(&mut self, text: &str) {
        for (n, line) in logical_lines(text) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut rest = line.as_str();
            let cmd = next_token(&mut rest);
            match cmd {
                None => continue,
                Some("softdep") => {}
                Some(_) => {
                    self.skip("modules.softdep", n, &line, "only `softdep` lines are used from this file");
                    continue;
                }
            }
            let Some(pattern) = next_token(&mut rest) else {
                self.skip("modules.softdep", n, &line, "softdep without a module");
                continue;
            };
            // libkmod takes the rest after the one delimiter that ended the
            // module name; a line that ends right there is a syntax error.
            if rest.is_empty() {
                self.skip("modules.softdep", n, &line, "softdep without dependencies");
                continue;
            }
            let Some(pattern) = normalize_alias(pattern) else {
                self.skip("modules.softdep", n, &line, "unmatched bracket in module name");
                continue;
            };
            #[derive(PartialEq)]
            enum Mode {
                None,
                Pre,
                Post,
            }
            let mut mode = Mode::None;
            let (mut pre, mut post) = (Vec::new(), Vec::new());
            for token in rest.split(|c: char| c.is_ascii_whitespace() || c == '\x0b') {
                match token {
                    "" => {}
                    "pre:" => mode = Mode::Pre,
                    "post:" => mode = Mode::Post,
                    name => match mode {
                        Mode::Pre => pre.push(name.to_owned()),
                        Mode::Post => post.push(name.to_owned()),
                        Mode::None => {}
                    },
                }
            }
            self.softdeps.push(SoftDep { pattern, pre, post });
        }
    }

    fn parse_builtin(&mut self, text: &str) {
        for line in text.lines() {
            let path = line.trim();
            if path.is_empty() || path.starts_with('#') {
                continue;
            }
            let name = ModuleName::from_path(path);
            if !name.as_str().is_empty() {
                self.builtin.entry(name).or_insert_with(|| path.to_owned());
            }
        }
    }

    /// Aliases of built-in modules, as depmod's `output_builtin_alias_bin`
    /// extracts them into `modules.builtin.alias.bin` (all at priority 0).
    fn parse_builtin_modinfo(&mut self, bytes: &[u8]) {
        let mut aliases = PatternIndex::default();
        for (n, raw) in bytes.split(|&b| b == 0).enumerate() {
            if raw.is_empty() {
                continue;
            }
            let entry = String::from_utf8_lossy(raw);
            let Some((module, key_value)) = entry.split_once('.') else {
                self.skip("modules.builtin.modinfo", n + 1, &entry, "entry without a `module.` prefix");
                continue;
            };
            if !module.is_empty() {
                self.modinfo_modules.insert(ModuleName::new(module));
            }
            let Some(("alias", value)) = key_value.split_once('=') else {
                continue;
            };
            if module.is_empty() || value.is_empty() {
                continue;
            }
            let Some(pattern) = normalize_alias(value) else {
                self.skip("modules.builtin.modinfo", n + 1, &entry, "unmatched bracket in alias (depmod skips it too)");
                continue;
            };
            aliases.insert(pattern, module, false);
        }
        self.builtin_aliases = aliases.finish();
    }

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
    fn lookup_with_repeats(&self, query: &str) -> Lookup {
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

    fn dependency_closure(&self, root: &ModuleName) -> Vec<ModuleName> {
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

    /// What `modprobe --show-depends <query>` prints, step by step: for every
    /// module the query resolves to, its probe list — softdep pre modules
    /// (with their own dependencies), `modules.dep` dependencies, the module,
    /// softdep post modules — in libkmod's order and with its repetitions
    /// (`__kmod_module_get_probe_list` / `__kmod_module_fill_softdep`).
    /// Like modprobe, a module that several alias patterns match gets its
    /// plan once per pattern.
    ///
    /// NixOS builds its initrd module closure from exactly this output
    /// (`makeModulesClosure` runs `modprobe --show-depends` per root module).
    #[must_use]
    pub fn load_plan(&self, query: &str) -> Vec<LoadStep> {
        self.lookup_with_repeats(query).modules.iter().flat_map(|m| self.probe_list(m)).map(|m| self.step(m)).collect()
    }

    fn step(&self, module: ModuleName) -> LoadStep {
        if let Some(entry) = self.modules.get(&module) {
            LoadStep::Insmod { path: entry.path.clone(), module }
        } else if self.is_builtin(&module) {
            LoadStep::Builtin { module }
        } else {
            LoadStep::Unavailable { module }
        }
    }

    /// libkmod's probe list, without recursion (an explicit work stack keeps
    /// hostile inputs from exhausting the call stack).
    fn probe_list(&self, root: &ModuleName) -> Vec<ModuleName> {
        enum Work {
            GetProbe(ModuleName),
            FillSoftdep(ModuleName),
            Emit(ModuleName),
        }
        let mut visited: HashSet<ModuleName> = HashSet::new();
        let mut out = Vec::new();
        let mut stack = vec![Work::GetProbe(root.clone())];
        while let Some(work) = stack.pop() {
            match work {
                Work::GetProbe(m) => {
                    if !visited.insert(m.clone()) {
                        continue;
                    }
                    let deps = self.dependency_closure(&m);
                    stack.push(Work::FillSoftdep(m));
                    stack.extend(deps.into_iter().rev().map(Work::FillSoftdep));
                }
                Work::FillSoftdep(m) => {
                    let (pre, post) = self.resolved_softdeps(&m);
                    stack.extend(post.into_iter().rev().map(Work::GetProbe));
                    stack.push(Work::Emit(m));
                    stack.extend(pre.into_iter().rev().map(Work::GetProbe));
                }
                Work::Emit(m) => out.push(m),
            }
        }
        out
    }

    fn candidate(&self, module: ModuleName) -> Candidate {
        let provider = if let Some(entry) = self.modules.get(&module) {
            Provider::File { path: entry.path.clone() }
        } else if self.is_builtin(&module) {
            Provider::Builtin
        } else {
            Provider::Missing
        };
        let dependencies = self.dependency_closure(&module);
        let load_plan: Vec<LoadStep> = self.probe_list(&module).into_iter().map(|m| self.step(m)).collect();
        let mut seen: HashSet<&ModuleName> = dependencies.iter().collect();
        seen.insert(&module);
        let mut softdep_modules: Vec<ModuleName> = Vec::new();
        for step in &load_plan {
            if !seen.contains(step.module()) && !softdep_modules.contains(step.module()) {
                softdep_modules.push(step.module().clone());
            }
        }
        Candidate { module, provider, dependencies, softdep_modules, load_plan }
    }

    /// What it takes to make a device (given by its modalias) or a named
    /// module work: every module the query resolves to, each a
    /// [`Candidate`] with its dependencies and softdep modules.
    ///
    /// For a modalias, modprobe loads *all* matching modules, but the device
    /// only needs the one that binds it; which one that is only the live
    /// system knows. [`Requirement::satisfied_by`] is therefore met when any
    /// candidate is complete. When the bound driver is known, use
    /// [`ModuleIndex::requirement_for_driver`].
    #[must_use]
    pub fn requirement(&self, query: &str) -> Requirement {
        let lookup = self.lookup(query);
        Requirement {
            query: query.to_owned(),
            source: lookup.source,
            candidates: lookup.modules.into_iter().map(|m| self.candidate(m)).collect(),
        }
    }

    /// The requirement for a driver known to be bound on the live system
    /// (the basename of `/sys/bus/*/drivers/<driver>/module`, or the driver
    /// name when it equals its module's name, as it usually does).
    ///
    /// Only names are looked up, never aliases — libkmod's
    /// `kmod_module_new_from_name_lookup`: a loadable module from
    /// `modules.dep`, a built-in module from `modules.builtin`, or a
    /// built-in module that declares the name as an alias. An unknown name
    /// gives a requirement without candidates, which nothing satisfies.
    #[must_use]
    pub fn requirement_for_driver(&self, driver: &str) -> Requirement {
        let name = ModuleName::new(driver);
        let (source, module) = if self.modules.contains_key(&name) {
            (Some(LookupSource::ModulesDep), Some(name))
        } else if self.is_builtin(&name) {
            (Some(LookupSource::Builtin), Some(name))
        } else {
            match self.builtin_aliases.lookup(name.as_str()).into_iter().next() {
                Some(module) => (Some(LookupSource::BuiltinAliases), Some(module)),
                None => (None, None),
            }
        };
        Requirement {
            query: driver.to_owned(),
            source,
            candidates: module.map(|m| self.candidate(m)).into_iter().collect(),
        }
    }
}

fn kernel_version_of(dir: &Path) -> Result<String> {
    let from = |p: &Path| match p.components().next_back() {
        Some(Component::Normal(name)) => name.to_str().map(str::to_owned),
        _ => None,
    };
    if let Some(v) = from(dir) {
        return Ok(v);
    }
    let canonical = fs::canonicalize(dir).map_err(|source| KmodError::Io { path: dir.to_path_buf(), source })?;
    from(&canonical).ok_or_else(|| KmodError::NoKernelVersion(dir.to_path_buf()))
}

/// The files are ASCII; anything else is replaced, never rejected.
fn into_text(bytes: Vec<u8>) -> String {
    match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }
}

fn read_optional(dir: &Path, file: &str) -> Result<Option<Vec<u8>>> {
    let path = dir.join(file);
    match fs::read(&path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(source) => Err(KmodError::Io { path, source }),
    }
}

/// Lines joined across trailing backslashes (libkmod's
/// `freadline_wrapped`), with the number of the first physical line.
fn logical_lines(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (n, line) in text.lines().enumerate() {
        let (start, mut buf) = current.take().unwrap_or((n + 1, String::new()));
        if let Some(cont) = line.strip_suffix('\\') {
            buf.push_str(cont);
            current = Some((start, buf));
        } else {
            buf.push_str(line);
            out.push((start, buf));
        }
    }
    if let Some(last) = current {
        out.push(last);
    }
    out
}

/// `strtok_r(…, "\t ", …)`: the next token and the rest after the single
/// delimiter that ended it.
fn next_token<'a>(rest: &mut &'a str) -> Option<&'a str> {
    let s = rest.trim_start_matches([' ', '\t']);
    if s.is_empty() {
        *rest = s;
        return None;
    }
    match s.find([' ', '\t']) {
        Some(end) => {
            let token = &s[..end];
            *rest = &s[end + 1..];
            Some(token)
        }
        None => {
            *rest = "";
            Some(s)
        }
    }
}
