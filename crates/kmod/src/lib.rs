//! Kernel module metadata, read and resolved the way `modprobe` (libkmod)
//! does it.
//!
//! This crate knows nothing about NixOS or fleets. Given a kernel modules
//! directory (`/lib/modules/<kver>`, or a NixOS system's
//! `kernel-modules/lib/modules/<kver>`) — or the contents of its files as
//! strings — it answers:
//!
//! * which modules a device's modalias resolves to
//!   ([`ModuleIndex::resolve_modalias`], like `modprobe --resolve-alias`),
//!   using `modules.alias` with glibc `fnmatch` semantics ([`fnmatch()`]),
//!   `modules.symbols`, `modules.builtin` and the built-in modules' aliases
//!   from `modules.builtin.modinfo`;
//! * what a module needs loaded first ([`ModuleIndex::dependencies`] from
//!   `modules.dep`, [`ModuleIndex::softdeps`] from `modules.softdep`) and the
//!   exact `modprobe --show-depends` plan ([`ModuleIndex::load_plan`]);
//! * whether a device can work given a set of present modules
//!   ([`ModuleIndex::requirement`], [`ModuleIndex::requirement_for_driver`],
//!   [`Requirement::satisfied_by`]) — e.g. whether an initrd contains what
//!   the root disk's controller needs.
//!
//! The lookup order, the alias and name normalisation (`-` → `_`), the
//! literal-prefix-then-`fnmatch` alias matching, the result order and the
//! softdep quirks follow libkmod (`libkmod/libkmod.c`,
//! `libkmod/libkmod-index.c`, `libkmod/libkmod-module.c`,
//! `libkmod/libkmod-config.c`, `shared/util.c`) and depmod
//! (`tools/depmod.c`); the integration tests compare the results with the
//! real `modprobe` on a real Debian kernel.
//!
//! Not modelled: modprobe configuration (`/etc/modprobe.d`: aliases,
//! blacklists, options, install commands, extra softdeps). It belongs to a
//! running system, not to a kernel, and NixOS builds its initrd with
//! `modprobe --config /dev/null` as well.
//!
//! ```
//! use fleetgate_kmod::{IndexSources, ModuleIndex, ModuleName};
//!
//! let index = ModuleIndex::from_parts(IndexSources {
//!     modules_dep: "kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko\n\
//!                   kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko\n\
//!                   kernel/drivers/virtio/virtio_ring.ko:\n",
//!     modules_alias: "alias virtio:d00000002v* virtio_blk\n",
//!     ..IndexSources::default()
//! });
//! let want = index.requirement("virtio:d00000002v00001AF4");
//! let initrd = ["virtio_ring", "virtio"];
//! assert!(!want.satisfied_by(|m| initrd.contains(&m.as_str())));
//! assert_eq!(want.candidates[0].dependencies, [ModuleName::new("virtio_ring"), ModuleName::new("virtio")]);
//! ```

mod error;
pub mod fnmatch;
mod index;
mod name;
mod parse;
mod pattern;
mod plan;
mod requirement;

pub use error::{KmodError, Result};
pub use fnmatch::fnmatch;
pub use index::{Lookup, LookupSource, ModuleIndex, SkippedLine, SoftDep};
pub use name::{MODULE_SUFFIXES, ModuleName, normalize_alias, strip_module_suffix};
pub use parse::{IndexSources, MAX_METADATA_FILE};
pub use plan::LoadStep;
pub use requirement::{Candidate, Provider, Requirement};

#[cfg(test)]
mod tests;
