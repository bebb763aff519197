//! Alias patterns (`modules.alias`, `modules.symbols`, built-in aliases)
//! indexed by their literal prefix, as libkmod's trie does.

use std::collections::HashMap;

use crate::fnmatch::fnmatch;
use crate::name::ModuleName;

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
pub(crate) struct PatternIndex {
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
    pub(crate) fn insert(&mut self, pattern: String, module: &str, rank_by_module: bool) {
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
    pub(crate) fn finish(mut self) -> Self {
        self.entries.sort_unstable_by(|a, b| a.prefix().cmp(b.prefix()).then(a.seq.cmp(&b.seq)));
        self.ids = HashMap::new();
        self
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Modules of all patterns matching `key` (already normalised), ordered
    /// by priority like libkmod's `add_value`: one entry per matching
    /// pattern, so a module matched by two patterns is listed twice, as
    /// libkmod lists it.
    pub(crate) fn lookup(&self, key: &str) -> Vec<ModuleName> {
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
