//! `fleetgate-install`: install NixOS on a machine that runs some other
//! Linux — nixos-anywhere's job — where every phase proves it happened
//! before the next one may destroy anything.
//!
//! The phases, named as nixos-anywhere's where they match
//! (`src/nixos-anywhere.sh`, `--phases kexec,disko,install,reboot`):
//!
//! | phase | does | proof before the next phase |
//! | --- | --- | --- |
//! | `pre-flight` (new, read-only) | facts of the running OS; `check` of the built system against that hardware; the root spec against the disko layout | no error finding; every block device the system's fstab needs is created by the layout |
//! | `kexec` | nixos-images' kexec tarball (`kexec/run`), with a nonce fleetgate adds to the kernel command line | new boot id, the nonce in `/proc/cmdline`, the installer's kernel release, no disk mounted |
//! | `disko` | refuses a target disk that is mounted, swapped on or held (dm, md); runs the flake's `diskoScript` | every fstab device exists (partlabels, labels) and is mounted under `/mnt` |
//! | `install` | copies the closure to `/mnt`, `nixos-install --system` | the installed boot loader's default entry boots the new system; `check` passes again |
//! | `reboot` | reboots into the installed system | new boot id, `/run/booted-system` is the installed system, healthy |
//!
//! [`protocol::install`] is the state machine (its table of states and exits
//! is at the top of [`protocol`]); it depends only on the [`target::Target`]
//! trait and on [`protocol::SystemCheck`], so every exit is a unit test
//! against [`fake::FakeTarget`]. [`ssh::SshTarget`] is the real target.
//! A failure ends in a [`report::Standing`] — the state the machine is in —
//! and the `--phases …` command that resumes ([`report::InstallReport`]).
//! A [`protocol::Observer`] hears each phase's start (with its deadline), its
//! steps and its end, for the CLI's progress. [`enrol`] takes the pull
//! agent's files (`--enrol-agent DIR`) and proves them written into the new
//! system before its first boot.

pub mod boot_wait;
pub mod built_system;
pub mod enrol;
pub mod escalation;
pub mod fake;
pub mod hardware;
pub mod kexec;
pub mod kexec_source;
pub mod layout;
pub mod phase;
pub mod proof;
pub mod protocol;
pub mod remote_scripts;
pub mod report;
pub mod ssh;
mod stop;
pub mod target;

pub use phase::{Phase, Phases};
pub use protocol::{Plan, SystemCheck, install};
pub use report::{InstallReport, Outcome, Standing};
pub use target::{Target, TargetError};
