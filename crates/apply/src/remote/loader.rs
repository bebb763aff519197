//! The boot-loader half of [`ScriptMachine`]: reading GRUB's menu and
//! environment or systemd-boot's entries from the host, and arming, pinning
//! and unpinning a one-time boot with them.

use fleetgate_transport::shell_quote as q;

use super::{BootDefault, Connector, Loader, ScriptMachine};
use crate::bootloader::{GrubMenu, Grubenv, SdBoot};
use crate::machine::{Armed, MachineError};
use crate::scripts::STATE_DIR;

impl<C: Connector> ScriptMachine<C> {
    pub(super) fn sd_listing(&mut self, esp: &str) -> Result<SdBoot, MachineError> {
        let script = format!(
            "{tools}esp={esp}\n{listing}[ -d {efi} ] && echo efivars\n\
             p={pinned}\n[ -f \"$p\" ] && printf 'pinned\\t%s\\n' \"$(cat \"$p\")\"\nexit 0\n",
            tools = self.layout.tools(&[]),
            esp = q(&self.layout.at(esp)),
            listing = crate::systemd_boot::listing_script(),
            efi = q(&self.layout.at("/sys/firmware/efi/efivars")),
            pinned = q(&self.layout.at(&format!("{STATE_DIR}/loader-default-before"))),
        );
        Ok(SdBoot::parse(&self.sh_ok("listing the boot entries", &script, self.timeouts.command)?))
    }

    pub(super) fn bootctl(&mut self, args: &str, extra: &str) -> Result<(), MachineError> {
        let script = format!("set -e\n{}{extra}bootctl {args} >&2\n", self.layout.tools(&[]));
        self.sh_ok(&format!("bootctl {args}"), &script, self.timeouts.command).map(|_| ())
    }

    pub(super) fn grub(&mut self, cfg: &str) -> Result<(GrubMenu, Grubenv, String), MachineError> {
        let text = self.read(cfg, 8 << 20)?.ok_or_else(|| MachineError::Cannot(format!("{cfg} does not exist")))?;
        let env_path = format!("{}/grubenv", cfg.rsplit_once('/').map_or(".", |(d, _)| d));
        let env_bytes = self.read(&env_path, 4096)?.unwrap_or_default();
        let env = Grubenv::parse(&env_bytes).map_err(|e| MachineError::Failed(format!("{env_path}: {e}")))?;
        Ok((GrubMenu::parse(&String::from_utf8_lossy(&text)), env, env_path))
    }

    pub(super) fn write_grubenv(&mut self, path: &str, env: &Grubenv) -> Result<(), MachineError> {
        let block = env.to_block().map_err(|e| MachineError::Failed(e.to_string()))?;
        self.write(path, &block, "644")
    }

    pub(super) fn arm_grub(&mut self, cfg: &str, new: &str, fallback: &str) -> Result<Armed, MachineError> {
        let (menu, mut env, env_path) = match self.grub(cfg) {
            Ok(x) => x,
            Err(MachineError::Cannot(why)) => return Ok(Armed::Cannot(why)),
            Err(e) => return Err(e),
        };
        if !menu.next_entry {
            return Ok(Armed::Cannot(format!("{cfg} does not honour next_entry")));
        }
        let default = menu.default_entry(&env).and_then(|e| e.system.clone());
        if default.as_deref() != Some(fallback) {
            return Ok(Armed::Cannot(format!(
                "the default GRUB entry boots {}, not the fallback {fallback}",
                default.as_deref().unwrap_or("nothing fleetgate can tell")
            )));
        }
        let Some(entry) = menu.entry_for(new) else {
            return Ok(Armed::Cannot(format!("no GRUB entry in {cfg} boots {new}")));
        };
        if entry.saves_default {
            // NixOS's grub.cfg with `default = "saved"`: its savedefault
            // means to skip one-time boots but its test (`[ -z
            // "${boot_once}"]`, install-grub.pl) is malformed, and real GRUB
            // 2.06 saves the trial entry (seen on a lab VM): a trial that
            // hangs would be booted again after the power cycle.
            return Ok(Armed::Cannot(format!(
                "{cfg} saves every entry it boots as the default (boot.loader.grub.default = \"saved\"), \
                 so a new generation that hangs would be booted again after a power cycle"
            )));
        }
        let path = entry.path.clone();
        env.set("next_entry", &path);
        self.write_grubenv(&env_path, &env)?;
        Ok(Armed::Once { detail: format!("GRUB boots {path:?} once (grubenv next_entry)") })
    }

    pub(super) fn arm_sd(&mut self, esp: &str, new: &str, fallback: &str) -> Result<Armed, MachineError> {
        let sd = self.sd_listing(esp)?;
        if !sd.efivars {
            return Ok(Armed::Cannot("EFI variables are not available: cannot boot an entry once".to_owned()));
        }
        let Some(new_id) = sd.entry_for(new).map(crate::bootloader::SdEntry::id) else {
            return Ok(Armed::Cannot(format!("no systemd-boot entry boots {new}")));
        };
        let Some(fallback_id) = sd.entry_for(fallback).map(crate::bootloader::SdEntry::id) else {
            return Ok(Armed::Cannot(format!("no systemd-boot entry boots the fallback {fallback}")));
        };
        let mut detail = format!("systemd-boot boots {new_id} once");
        let pin = sd.conf_default.as_deref() != Some(fallback_id.as_str()) || self.efi_default_before.is_some();
        // After a failed trial the default must be the fallback (the EFI
        // variable with the pin, else loader.conf): checked before any write.
        if let Err(why) = sd.falls_back_to(fallback, if pin { Some(fallback_id.as_str()) } else { None }) {
            return Ok(Armed::Cannot(why));
        }
        if pin {
            // Remember what LoaderEntryDefault was, once, then pin the fallback.
            let save = format!(
                "p={p}\nif [ ! -f \"$p\" ]; then mkdir -p \"${{p%/*}}\"; printf '%s' {before} > \"$p\"; fi\n",
                p = q(&self.layout.at(&format!("{STATE_DIR}/loader-default-before"))),
                before = q(self.efi_default_before.clone().as_deref().unwrap_or("")),
            );
            self.bootctl(&format!("set-default {}", q(&fallback_id)), &save)?;
            detail.push_str(&format!(" (default pinned to {fallback_id})"));
        }
        self.bootctl(&format!("set-oneshot {}", q(&new_id)), "")?;
        Ok(Armed::Once { detail })
    }

    /// The entry the boot loader boots by default and the system it boots,
    /// as its own files say (GRUB's default entry with grubenv, systemd-boot's
    /// `LoaderEntryDefault` or `loader.conf`); `None` when that cannot be
    /// told (no boot loader fleetgate knows, or nothing names an entry).
    ///
    /// # Errors
    /// [`MachineError`] when the boot loader's files cannot be read.
    pub fn boot_default(&mut self) -> Result<Option<BootDefault>, MachineError> {
        match self.loader.clone() {
            None => Ok(None),
            Some(Loader::Grub { cfg }) => {
                let (menu, env, _) = self.grub(&cfg)?;
                Ok(menu.default_entry(&env).map(|e| BootDefault { entry: e.path.clone(), system: e.system.clone() }))
            }
            Some(Loader::SystemdBoot { esp }) => {
                let sd = self.sd_listing(&esp)?;
                let efi = self.efi_default_before.clone();
                Ok(sd.default_entry(efi.as_deref()).map(|e| BootDefault { entry: e.id(), system: e.system.clone() }))
            }
        }
    }

    pub(super) fn forget_pin(&mut self) -> Result<(), MachineError> {
        let script = self.layout.remove_file(&format!("{STATE_DIR}/loader-default-before"));
        self.sh_ok("forgetting the pinned default", &script, self.timeouts.command).map(|_| ())
    }
}
