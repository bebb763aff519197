//! `modprobe --show-depends`: the load plan of a query, step by step, in
//! libkmod's order and with its repetitions.

use std::collections::HashSet;
use std::fmt;

use crate::index::ModuleIndex;
use crate::name::ModuleName;

/// One line of `modprobe --show-depends`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadStep {
    /// `insmod <dir>/<path>`.
    Insmod {
        /// The module.
        module: ModuleName,
        /// Path relative to the modules directory.
        path: String,
    },
    /// `builtin <module>`.
    Builtin {
        /// The module.
        module: ModuleName,
    },
    /// A module that would have to be loaded but exists neither as a file
    /// nor built in. modprobe prints nothing for it (and fails to load it).
    Unavailable {
        /// The module.
        module: ModuleName,
    },
}

impl LoadStep {
    /// The module of this step.
    #[must_use]
    pub fn module(&self) -> &ModuleName {
        match self {
            LoadStep::Insmod { module, .. } | LoadStep::Builtin { module } | LoadStep::Unavailable { module } => module,
        }
    }
}

impl fmt::Display for LoadStep {
    /// modprobe's wording, with paths relative to the modules directory.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadStep::Insmod { path, .. } => write!(f, "insmod {path}"),
            LoadStep::Builtin { module } => write!(f, "builtin {module}"),
            LoadStep::Unavailable { module } => write!(f, "unavailable {module}"),
        }
    }
}

impl ModuleIndex {
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

    pub(crate) fn step(&self, module: ModuleName) -> LoadStep {
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
    pub(crate) fn probe_list(&self, root: &ModuleName) -> Vec<ModuleName> {
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
}
