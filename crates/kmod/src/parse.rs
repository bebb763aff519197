//! Reading a kernel's `modules.*` files into a [`ModuleIndex`], the way
//! depmod writes them and libkmod reads them. Every file is read through
//! `fleetgate-files`: a regular file only, at most [`MAX_METADATA_FILE`].

use std::fs;
use std::path::{Component, Path};

use fleetgate_files::{Limit, lossy_text};

use crate::error::{KmodError, Result};
use crate::index::{ModuleEntry, ModuleIndex, SkippedLine, SoftDep, UNMATCHED_BRACKET};
use crate::name::{ModuleName, normalize_alias};
use crate::pattern::PatternIndex;

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

/// The most any one `modules.*` file may hold. Debian's largest
/// (`modules.alias`) is 1.3 MiB, NixOS's a little more; a kernel with every
/// driver as a module stays far below this.
pub const MAX_METADATA_FILE: Limit = Limit::new(64 << 20, "a kernel module metadata file");

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
        let mut texts = optional.into_iter().map(|bytes| bytes.map(lossy_text));
        let alias = texts.next().flatten().unwrap_or_default();
        let softdep = texts.next().flatten().unwrap_or_default();
        let builtin = texts.next().flatten().unwrap_or_default();
        let modinfo = texts.next().flatten().unwrap_or_default();
        let symbols = texts.next().flatten().unwrap_or_default();
        let dep = lossy_text(dep);

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
                self.skip(file, n + 1, line, UNMATCHED_BRACKET);
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
                self.skip("modules.builtin.modinfo", n + 1, &entry, UNMATCHED_BRACKET);
                continue;
            };
            aliases.insert(pattern, module, false);
        }
        self.builtin_aliases = aliases.finish();
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

fn read_optional(dir: &Path, file: &str) -> Result<Option<Vec<u8>>> {
    fleetgate_files::read_optional(&dir.join(file), MAX_METADATA_FILE).map_err(KmodError::from)
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
