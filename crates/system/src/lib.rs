//! Reads a NixOS system toplevel — `config.system.build.toplevel`, a store
//! path such as `/run/current-system`, or any directory laid out like one —
//! and decides what a switch between two of them implies.
//!
//! [`SystemToplevel::open`] exposes what a boot or switch decision needs,
//! read the way nixpkgs writes it: the bootspec (`boot.json`, RFC 0125 v1,
//! parsed with the `bootspec` crate), kernel, initrd, kernel modules
//! directory and version, kernel parameters, root file system (from
//! `etc/fstab` and `root=`), switch inhibitors, `init-interface-version`,
//! `nixos-version`, and the systemd and firmware links.
//!
//! [`compare_for_switch`] lists every reason a live `switch` is refused or a
//! reboot is needed, matching nixpkgs' `switchInhibitors` pre-switch check
//! (`nixos/modules/system/activation/switchable-system.nix`, message text
//! included), switch-to-configuration's `NIXOS_NO_CHECK` and
//! `init-interface-version` handling
//! (`pkgs/by-name/sw/switch-to-configuration-ng/src/src/main.rs`), and the
//! boot-time components a switch cannot replace.
//!
//! ```no_run
//! use fleetgate_system::{SystemToplevel, compare_for_switch};
//!
//! let current = SystemToplevel::open("/run/current-system")?;
//! let new = SystemToplevel::open("/nix/store/...-nixos-system-host-25.05")?;
//! let decision = compare_for_switch(&current, &new, false);
//! if let Some(text) = decision.nixos_refusal() {
//!     eprint!("{text}"); // exactly what NixOS would print
//! }
//! # Ok::<(), fleetgate_system::SystemError>(())
//! ```

mod error;
mod fstab;
pub mod kernel_image;
mod switch;
mod toplevel;

pub use bootspec;
pub use error::{Result, SystemError};
pub use fstab::{FstabEntry, FstabError, RootFilesystem, RootSpec, parse_fstab};
pub use kernel_image::{KernelFormat, KernelImage};
pub use switch::{
    Component, ComponentValue, DecisionNote, Effect, INHIBITOR_FOOTER, INHIBITOR_HEADER, INIT_INTERFACE_WARNING,
    SwitchDecision, SwitchReason, compare_for_switch,
};
pub use toplevel::{SystemToplevel, limits};
