//! What a device or module needs in order to work: the answer of
//! [`crate::ModuleIndex::requirement`].

use std::collections::HashSet;

use crate::index::{LookupSource, ModuleIndex};
use crate::name::ModuleName;
use crate::plan::LoadStep;

/// Where a module comes from in this kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Provider {
    /// Compiled into the kernel image: always there, nothing to load.
    Builtin,
    /// A module file, relative to the modules directory.
    File {
        /// Path as written in `modules.dep`, e.g.
        /// `kernel/drivers/block/virtio_blk.ko.xz`.
        path: String,
    },
    /// An alias names it, but the kernel has neither a file nor a built-in
    /// module of that name.
    Missing,
}

/// One module that can make the device work, with everything it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The module.
    pub module: ModuleName,
    /// Built in, a file, or missing.
    pub provider: Provider,
    /// Hard dependencies (`modules.dep`, transitive), in load order,
    /// excluding the module itself. Without them the module does not load.
    pub dependencies: Vec<ModuleName>,
    /// Modules modprobe also loads because of `softdep` entries (the
    /// module's own and its dependencies', resolved through aliases, with
    /// their dependencies), in load order. The module loads without them
    /// but may not work fully (ext4 without `crc32c` cannot mount
    /// checksummed file systems), which is why NixOS puts them into the
    /// initrd too.
    pub softdep_modules: Vec<ModuleName>,
    /// The complete `modprobe --show-depends <module>` output.
    pub load_plan: Vec<LoadStep>,
}

impl Candidate {
    /// Whether the module is built into the kernel.
    #[must_use]
    pub fn is_builtin(&self) -> bool {
        self.provider == Provider::Builtin
    }

    /// Hard modules (dependencies, then the module) that are neither built
    /// in nor accepted by `present`. A missing module is always reported.
    pub fn missing_hard(&self, present: impl Fn(&ModuleName) -> bool) -> Vec<ModuleName> {
        match &self.provider {
            Provider::Builtin => Vec::new(),
            Provider::Missing => vec![self.module.clone()],
            Provider::File { .. } => {
                self.dependencies.iter().chain(std::iter::once(&self.module)).filter(|m| !present(m)).cloned().collect()
            }
        }
    }

    /// Softdep modules that are loadable files and not accepted by
    /// `present` (built-in ones are always there; unavailable ones cannot be
    /// had from this kernel at all and are not counted).
    pub fn missing_soft(&self, present: impl Fn(&ModuleName) -> bool) -> Vec<ModuleName> {
        self.softdep_modules
            .iter()
            .filter(|m| self.load_plan.iter().any(|s| matches!(s, LoadStep::Insmod { module, .. } if module == *m)))
            .filter(|m| !present(m))
            .cloned()
            .collect()
    }
}

/// What a modalias or module name requires: one or more candidate modules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    /// The modalias, module name or driver name asked about.
    pub query: String,
    /// Which lookup step found the candidates (`None`: nothing did).
    pub source: Option<LookupSource>,
    /// The modules the query resolves to, in libkmod's order.
    pub candidates: Vec<Candidate>,
}

impl Requirement {
    /// Whether the kernel knows any module for the query at all.
    #[must_use]
    pub fn is_resolvable(&self) -> bool {
        !self.candidates.is_empty()
    }

    /// Whether some candidate is built into the kernel.
    #[must_use]
    pub fn is_builtin(&self) -> bool {
        self.candidates.iter().any(Candidate::is_builtin)
    }

    /// Whether at least one candidate is complete — built in, or the module
    /// and all its hard dependencies accepted by `present` (for example:
    /// found in the initrd). Softdep modules are not required here; see
    /// [`Candidate::missing_soft`].
    ///
    /// For a modalias this assumes the module that binds the device is one
    /// of the complete ones; with
    /// [`crate::ModuleIndex::requirement_for_driver`] there is exactly one
    /// candidate and no assumption.
    pub fn satisfied_by(&self, present: impl Fn(&ModuleName) -> bool) -> bool {
        self.candidates.iter().any(|c| c.missing_hard(&present).is_empty())
    }
}

impl ModuleIndex {
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
