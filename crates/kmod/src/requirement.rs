//! What a device or module needs in order to work: the answer of
//! [`crate::ModuleIndex::requirement`].

use std::fmt;

use crate::ModuleName;
use crate::index::LookupSource;

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
