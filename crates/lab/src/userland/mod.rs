//! The userland a lab host gets in place of systemd and the boot loader tools:
//! `systemctl`, `reboot`, `poweroff`, `bootctl`, `grub-reboot`,
//! `grub-set-default`, `grub-editenv`. They are this binary, dispatched on
//! `argv[0]` (links in `/run/lab/bin`, first in every SSH session's `PATH`), and
//! behave like the real tools for the subset fleetgate and the fixtures use:
//! same arguments, same exit codes, same state files (EFI variables, grubenv).
//!
//! Power requests go to the host's PID 1 (the lab's init) as signals:
//! `SIGINT` reboots (systemd's ctrl-alt-del), `SIGTERM` powers off.

pub mod bootloader_tools;
pub mod systemctl;
pub mod units;

use std::process::ExitCode;

/// Names this binary answers to inside a host.
pub const TOOLS: [&str; 8] =
    ["systemctl", "reboot", "poweroff", "halt", "bootctl", "grub-reboot", "grub-set-default", "grub-editenv"];

/// Runs the tool named by `argv0` if it is one of [`TOOLS`].
pub fn dispatch(argv0: &str, args: &[String]) -> Option<ExitCode> {
    let code = match argv0 {
        "systemctl" => systemctl::main(args),
        "reboot" => systemctl::power(PowerRequest::Reboot),
        "poweroff" | "halt" => systemctl::power(PowerRequest::PowerOff),
        "bootctl" => bootloader_tools::bootctl(args),
        "grub-reboot" => bootloader_tools::grub_reboot(args),
        "grub-set-default" => bootloader_tools::grub_set_default(args),
        "grub-editenv" => bootloader_tools::grub_editenv(args),
        _ => return None,
    };
    Some(code)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerRequest {
    Reboot,
    PowerOff,
}

impl PowerRequest {
    pub fn signal(self) -> rustix::process::Signal {
        match self {
            PowerRequest::Reboot => rustix::process::Signal::INT,
            PowerRequest::PowerOff => rustix::process::Signal::TERM,
        }
    }
}
