//! The four truths read from a host's live facts (`fleetgate-facts`, one SSH round
//! trip): current, booted, the boot loader's default entry, the profile's generations,
//! boot debt and a pending reboot.
//!
//! - **Default entry.** systemd-boot: the `LoaderEntryDefault` EFI variable (`bootctl
//!   set-default`) if set, else `loader.conf`'s `default` line, which nixpkgs'
//!   `systemd-boot-builder.py` writes as `nixos-generation-N.conf` (or with boot counting,
//!   a glob `nixos-generation-N+*.conf`'s base). GRUB: nixpkgs' `install-grub.pl` writes
//!   `default=0` and puts the profile's current system first, so the default is the
//!   profile's system (a `saved_entry` other than `0` is reported as the entry, with no
//!   system).
//! - **Boot debt.** Generations newer than the booted one, up to the default's: each was
//!   made the default (`switch-to-configuration switch|boot` always installs the boot
//!   loader for the profile's newest generation) and none has booted since. When the
//!   booted system is no generation of the profile, or the default's generation is
//!   unknown, the debt cannot be told (`None`).
//! - **Pending reboot.** The booted system's kernel or initrd differs from the current
//!   system's (`kernel`, `initrd`), or the default entry is a newer generation than the one
//!   that runs (`staged`).
use fleetgate_facts::{Facts, Loader};

use crate::model::{BootDebt, DefaultEntry, GenerationRecord, HostStatus, PendingReboot, RebootReason};

/// Fills `h` from live facts gathered at `at`.
pub fn apply_facts(h: &mut HostStatus, facts: &Facts, at: i64) {
    h.seen(at);
    h.current = facts.current_system.as_ref().map(|s| s.path.clone());
    h.booted = facts.booted_system.as_ref().map(|s| s.path.clone());
    h.default = default_entry(facts);
    let booted_gen = booted_generation(facts);
    let default_gen = h.default.as_ref().and_then(|d| d.generation);
    h.generations = facts
        .generations
        .iter()
        .map(|g| GenerationRecord {
            number: g.number,
            system: g.path.clone(),
            booted: (Some(g.number) == booted_gen).then_some(true),
            default: (Some(g.number) == default_gen).then_some(true),
            failed: false,
            created_at: None,
        })
        .collect();
    h.boot_debt = match (booted_gen, default_gen) {
        (Some(b), Some(d)) => Some(
            facts
                .generations
                .iter()
                .filter(|g| g.number > b && g.number <= d)
                .map(|g| BootDebt { generation: g.number, system: Some(g.path.clone()), made_default_at: None })
                .collect(),
        ),
        _ => None,
    };
    h.pending_reboot = pending_reboot(facts, booted_gen, default_gen, current_generation(facts));
}

/// The boot loader's default entry (see the module documentation).
#[must_use]
pub fn default_entry(facts: &Facts) -> Option<DefaultEntry> {
    match facts.boot.loader? {
        Loader::SystemdBoot => {
            let entry =
                facts.boot.efi_vars.get("LoaderEntryDefault").filter(|v| !v.is_empty()).cloned().or_else(|| {
                    facts.boot.loader_conf.iter().find_map(|l| {
                        let mut words = l.split_whitespace();
                        (words.next() == Some("default")).then(|| words.next().map(str::to_owned)).flatten()
                    })
                })?;
            let generation = generation_of_entry(&entry);
            let system = generation.and_then(|n| system_of(facts, n));
            Some(DefaultEntry { entry, generation, system })
        }
        Loader::Grub => {
            let saved = facts.boot.grubenv.get("saved_entry").filter(|v| !v.is_empty() && *v != "0");
            if let Some(saved) = saved {
                return Some(DefaultEntry { entry: saved.clone(), generation: None, system: None });
            }
            let entry = facts.boot.entries.first().map_or_else(|| "0".to_owned(), |e| e.id.clone());
            let profile = facts.profile.as_ref()?;
            let generation = generation_of_link(&profile.link);
            Some(DefaultEntry { entry, generation, system: Some(profile.path.clone()) })
        }
    }
}

/// `nixos-generation-12.conf`, `nixos-generation-12+3-1.conf`,
/// `nixos-generation-12-specialisation-x.conf` → 12.
fn generation_of_entry(entry: &str) -> Option<u64> {
    let rest = entry.strip_prefix("nixos-generation-")?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// `system-12-link` → 12.
fn generation_of_link(link: &str) -> Option<u64> {
    let name = link.rsplit('/').next()?;
    name.strip_prefix("system-")?.strip_suffix("-link")?.parse().ok()
}

fn system_of(facts: &Facts, generation: u64) -> Option<String> {
    facts.generations.iter().find(|g| g.number == generation).map(|g| g.path.clone())
}

/// The newest generation holding the booted system.
fn booted_generation(facts: &Facts) -> Option<u64> {
    let booted = &facts.booted_system.as_ref()?.path;
    facts.generations.iter().filter(|g| &g.path == booted).map(|g| g.number).max()
}

/// The newest generation holding the current system.
fn current_generation(facts: &Facts) -> Option<u64> {
    let current = &facts.current_system.as_ref()?.path;
    facts.generations.iter().filter(|g| &g.path == current).map(|g| g.number).max()
}

fn pending_reboot(
    facts: &Facts,
    booted_gen: Option<u64>,
    default_gen: Option<u64>,
    current_gen: Option<u64>,
) -> Option<PendingReboot> {
    let (current, booted) = (facts.current_system.as_ref()?, facts.booted_system.as_ref()?);
    let mut reasons = Vec::new();
    for (link, reason) in [("kernel", RebootReason::Kernel), ("initrd", RebootReason::Initrd)] {
        if let (Some(c), Some(b)) = (current.links.get(link), booted.links.get(link))
            && c != b
        {
            reasons.push(reason);
        }
    }
    let newer_default = match (default_gen, current_gen.or(booted_gen)) {
        (Some(d), Some(c)) => d > c,
        _ => false,
    };
    if newer_default {
        reasons.push(RebootReason::Staged);
    }
    (!reasons.is_empty()).then_some(PendingReboot { reasons, detail: None })
}

#[cfg(test)]
mod tests {
    use fleetgate_facts::{BootInfo, Generation, Profile, SystemInfo};

    use super::*;

    fn sys(n: u64, kernel: &str) -> SystemInfo {
        SystemInfo {
            path: path(n),
            links: [("kernel".to_owned(), kernel.to_owned()), ("initrd".to_owned(), format!("initrd-{n}"))].into(),
            files: Default::default(),
        }
    }

    fn path(n: u64) -> String {
        format!("/nix/store/{}-nixos-system-h-{n}", n.to_string().repeat(32).get(..32).unwrap())
    }

    fn facts(booted: u64, current: u64, default: &str) -> Facts {
        Facts {
            booted_system: Some(sys(booted, "k1")),
            current_system: Some(sys(current, "k1")),
            generations: (1..=4).map(|number| Generation { number, path: path(number) }).collect(),
            profile: Some(Profile { link: "system-4-link".into(), path: path(4) }),
            boot: BootInfo {
                loader: Some(Loader::SystemdBoot),
                loader_conf: vec!["timeout 5".into(), format!("default {default}")],
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn a_host_that_booted_its_default_has_no_debt() {
        let mut h = HostStatus::new("h");
        apply_facts(&mut h, &facts(4, 4, "nixos-generation-4.conf"), 10);
        assert_eq!(h.default.as_ref().unwrap().system.as_deref(), Some(path(4).as_str()));
        assert_eq!(h.boot_debt, Some(vec![]));
        assert_eq!(h.pending_reboot, None);
        assert_eq!(h.last_seen, Some(10));
    }

    #[test]
    fn switches_since_the_last_boot_are_boot_debt() {
        let mut h = HostStatus::new("h");
        let mut f = facts(2, 4, "nixos-generation-4+3-0.conf");
        // Same kernel, different initrd: the live switches changed the initrd.
        f.current_system.as_mut().unwrap().links.insert("kernel".into(), "k1".into());
        apply_facts(&mut h, &f, 10);
        let debt: Vec<u64> = h.boot_debt.unwrap().iter().map(|d| d.generation).collect();
        assert_eq!(debt, [3, 4]);
        assert_eq!(h.pending_reboot.unwrap().reasons, [RebootReason::Initrd]);
        let booted: Vec<_> = h.generations.iter().map(|g| g.booted).collect();
        assert_eq!(booted, [None, Some(true), None, None]);
    }

    #[test]
    fn a_staged_default_is_a_pending_reboot_and_efi_default_wins() {
        let mut h = HostStatus::new("h");
        let mut f = facts(3, 3, "nixos-generation-3.conf");
        f.boot.efi_vars.insert("LoaderEntryDefault".into(), "nixos-generation-4.conf".into());
        apply_facts(&mut h, &f, 10);
        assert_eq!(h.default.as_ref().unwrap().generation, Some(4));
        assert_eq!(h.pending_reboot.unwrap().reasons, [RebootReason::Staged]);
    }

    #[test]
    fn debt_cannot_be_told_when_the_booted_system_is_no_generation() {
        let mut h = HostStatus::new("h");
        let mut f = facts(3, 3, "nixos-generation-3.conf");
        f.booted_system.as_mut().unwrap().path = "/nix/store/gone".into();
        apply_facts(&mut h, &f, 10);
        assert_eq!(h.boot_debt, None);
    }

    #[test]
    fn grub_defaults_to_the_profile() {
        let mut h = HostStatus::new("h");
        let mut f = facts(4, 4, "");
        f.boot = BootInfo { loader: Some(Loader::Grub), ..Default::default() };
        apply_facts(&mut h, &f, 10);
        let d = h.default.unwrap();
        assert_eq!((d.generation, d.system), (Some(4), Some(path(4))));
    }
}
