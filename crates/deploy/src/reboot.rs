//! The verified reboot: the new generation boots once, becomes the default
//! only after it proved healthy, and otherwise the host is brought back to
//! the previous generation — by itself (it is still the default) or after
//! the host's power-cycle command. Step by step in `docs/deploy.md`.

use std::time::{Duration, Instant};

use crate::bootonce::{BootOnce, CANNOT};
use crate::events::{Phase, Timeline};
use crate::health;
use crate::lock;
use crate::remote::{Target, generation_number, paths, poll, q, restore_profile_script, set_profile_script, tail, why};

/// What the verified reboot needs.
#[derive(Debug, Clone)]
pub struct RebootPlan {
    /// The run (for the lock after the reboot).
    pub run_id: String,
    /// The new system.
    pub new: String,
    /// The previous system (running now).
    pub old: String,
    /// Its profile generation.
    pub old_generation: Option<u64>,
    /// The boot id before the reboot.
    pub boot_id: String,
    /// `systemctl is-system-running` before the deploy.
    pub baseline: String,
    /// How to boot once (`None`: the boot loader cannot).
    pub once: Option<BootOnce>,
    /// Reboot even if the boot loader cannot boot once.
    pub allow_unverified: bool,
    /// Times the power-cycle command is tried.
    pub power_cycle_attempts: u32,
}

/// How it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RebootOutcome {
    /// The new generation booted, is healthy, and is the default.
    Blessed,
    /// Refused before changing anything that matters (the host still runs
    /// and boots the previous generation).
    Refused(String),
    /// The host is back on the previous generation, which is the default.
    RolledBack(String),
    /// Where the host is cannot be told.
    Unknown(String),
}

/// Runs the verified reboot.
pub fn verified_reboot(target: &mut Target<'_>, tl: &mut Timeline, p: &RebootPlan) -> RebootOutcome {
    let t = target.timeouts.clone();
    tl.start(Phase::Activate);
    // 1. The new generation goes into the profile; the *previous* system
    //    installs the boot loader, so the menu gains the new generation
    //    while the default stays the previous one.
    let link = match target.sh_ok(&set_profile_script(&p.new), t.command) {
        Ok(link) => link,
        Err(e) => {
            let _ = target.sh(&restore_profile_script(p.old_generation, &p.old), t.command);
            return RebootOutcome::Refused(format!("could not set the system profile (restored): {}", why(&e)));
        }
    };
    let Some(new_gen) = generation_number(link.trim()) else {
        let _ = restore(target, p);
        return RebootOutcome::Refused(format!("the system profile points at {link:?}, not at a generation"));
    };
    let install = format!("{}/bin/switch-to-configuration boot 2>&1", q(&p.old));
    match target.sh(&install, t.activation) {
        Ok(o) if o.success() => {}
        Ok(o) => {
            let _ = restore(target, p);
            return RebootOutcome::Refused(format!(
                "installing the boot loader entries failed; the previous generation stays the default:\n{}",
                tail(&o.stdout_text(), 6)
            ));
        }
        Err(e) => {
            let _ = restore(target, p);
            return RebootOutcome::Refused(format!("installing the boot loader entries failed: {}", why(&e)));
        }
    }
    // 2. Boot the new generation once.
    let armed = match &p.once {
        Some(once) => match target.sh(&once.arm(new_gen, p.old_generation, &p.old), t.command) {
            Ok(o) if o.success() => {
                tl.info(format!(
                    "{} will boot generation {new_gen} once{}",
                    once.name(),
                    if o.stdout_text().contains("pinned") { " (default pinned to the previous one)" } else { "" }
                ));
                true
            }
            Ok(o) if o.status == Some(CANNOT) => {
                tl.info(format!("{} cannot boot once: {}", once.name(), String::from_utf8_lossy(&o.stderr).trim()));
                false
            }
            Ok(o) => {
                let _ = restore(target, p);
                return RebootOutcome::Refused(format!(
                    "arming the one-time boot failed: {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                ));
            }
            Err(e) => {
                let _ = restore(target, p);
                return RebootOutcome::Refused(format!("arming the one-time boot failed: {}", why(&e)));
            }
        },
        None => false,
    };
    if !armed {
        if !p.allow_unverified {
            let _ = restore(target, p);
            return RebootOutcome::Refused(
                "the boot loader cannot boot a generation once, so a failed boot could not fall back by itself; \
                 nothing was changed. Deploy with --allow-unverified-reboot to reboot anyway (with a power-cycle command ready)"
                    .to_owned(),
            );
        }
        let make_default = format!("{}/bin/switch-to-configuration boot 2>&1", q(&p.new));
        if let Err(e) = target.sh_ok(&make_default, t.activation) {
            let _ = restore(target, p);
            return RebootOutcome::Refused(format!("making the new generation the default failed: {}", why(&e)));
        }
        tl.info("unverified reboot: the new generation is the default already");
    }

    // 3. Reboot and wait for a new boot.
    tl.start(Phase::Reboot);
    reboot(target);
    tl.start(Phase::WaitBoot);
    let mut back = wait_boot(target, &p.boot_id, t.reboot);
    let mut cycled = false;
    if back.is_none() {
        back = power_cycle(target, tl, p);
        cycled = true;
        if back.is_none() {
            return RebootOutcome::Unknown(not_back_message(target, armed));
        }
    }
    let _ = lock::acquire(target, &p.run_id, t.command);

    // 4. Which generation did it boot, and is it healthy?
    tl.start(Phase::Health);
    let booted = match target.sh_ok("readlink -f /run/booted-system\n", t.command) {
        Ok(b) => b.trim().to_owned(),
        Err(e) => {
            return RebootOutcome::Unknown(format!(
                "the host came back but cannot be asked what it booted: {}",
                why(&e)
            ));
        }
    };
    let hung = if cycled {
        format!(
            "the host did not come back within {} s from booting the new generation (hung in stage 1?); it was power-cycled",
            t.reboot.as_secs()
        )
    } else {
        String::new()
    };
    if booted == p.old {
        let reason = if cycled {
            format!("{hung} and came back on the previous generation")
        } else {
            "the host booted the previous generation instead of the new one (the one-time boot was not honoured)"
                .to_owned()
        };
        return match restore(target, p) {
            Ok(()) => RebootOutcome::RolledBack(format!("{reason}; the previous generation is the default again")),
            Err(e) => RebootOutcome::Unknown(format!("{reason}; restoring its profile and boot default failed: {e}")),
        };
    }
    if booted != p.new {
        return RebootOutcome::Unknown(format!("the host booted {booted}, neither the new nor the previous system"));
    }
    let host = target.host;
    let connect = || -> Box<dyn fleetgate_transport::Transport> { Box::new(target.fresh()) };
    if let Err(failed) = health::wait_healthy(host, &connect, &p.baseline, t.health, t.command) {
        let reason = format!("the new generation booted but is unhealthy: {}", failed.join("; "));
        return back_to_old(target, tl, p, &reason);
    }

    // 5. Bless: the new generation becomes the default.
    tl.start(Phase::Bless);
    let bless = format!(
        "{}{}/bin/switch-to-configuration boot 2>&1\n",
        p.once.as_ref().map(|o| o.bless(new_gen)).unwrap_or_default(),
        q(&p.new)
    );
    match target.sh(&bless, t.activation) {
        Ok(o) if o.success() => RebootOutcome::Blessed,
        Ok(o) => back_to_old(
            target,
            tl,
            p,
            &format!("making the new generation the default failed:\n{}", tail(&o.stdout_text(), 6)),
        ),
        Err(e) => {
            RebootOutcome::Unknown(format!("lost the host while making the new generation the default: {}", why(&e)))
        }
    }
}

/// Points the profile and the boot default back at the previous system.
fn restore(target: &mut Target<'_>, p: &RebootPlan) -> Result<(), String> {
    let script = format!(
        "set -e\n{}\n{}{}/bin/switch-to-configuration boot 2>&1\n",
        restore_profile_script(p.old_generation, &p.old),
        p.once.as_ref().map(BootOnce::disarm).unwrap_or_default(),
        q(&p.old)
    );
    match target.sh(&script, target.timeouts.activation) {
        Ok(o) if o.success() => Ok(()),
        Ok(o) => Err(tail(&o.stdout_text(), 6)),
        Err(e) => Err(why(&e)),
    }
}

/// The new generation booted but failed: restore, reboot into the
/// previous generation, check it is there.
fn back_to_old(target: &mut Target<'_>, tl: &mut Timeline, p: &RebootPlan, reason: &str) -> RebootOutcome {
    tl.start(Phase::Rollback);
    if let Err(e) = restore(target, p) {
        return RebootOutcome::Unknown(format!(
            "{reason}; restoring the previous generation as the default failed: {e}"
        ));
    }
    let boot_id = match target.sh_ok("cat /proc/sys/kernel/random/boot_id", target.timeouts.command) {
        Ok(b) => b.trim().to_owned(),
        Err(e) => {
            return RebootOutcome::Unknown(format!(
                "{reason}; the previous generation is the default again, but the host stopped answering: {}",
                why(&e)
            ));
        }
    };
    reboot(target);
    let mut back = wait_boot(target, &boot_id, target.timeouts.reboot);
    if back.is_none() {
        back = power_cycle(target, tl, &RebootPlan { boot_id, ..p.clone() });
    }
    if back.is_none() {
        return RebootOutcome::Unknown(format!(
            "{reason}; the previous generation is the default again, but the host did not come back from the reboot into it"
        ));
    }
    match target.sh_ok("readlink -f /run/booted-system\n", target.timeouts.command) {
        Ok(b) if b.trim() == p.old => RebootOutcome::RolledBack(format!(
            "{reason}; rebooted into the previous generation, which is the default again"
        )),
        Ok(b) => RebootOutcome::Unknown(format!(
            "{reason}; after rebooting into the previous generation the host runs {}",
            b.trim()
        )),
        Err(e) => RebootOutcome::Unknown(format!("{reason}; the host cannot be asked what it booted: {}", why(&e))),
    }
}

/// Asks the host to reboot, detached so that the SSH session can end first.
fn reboot(target: &mut Target<'_>) {
    let script = "setsid sh -c 'sleep 1; systemctl reboot || reboot' </dev/null >/dev/null 2>&1 &\necho ok\n";
    let _ = target.sh(script, target.timeouts.command);
    target.disconnect();
}

/// Waits for a boot id other than `old`; `Some(new id)` when the host is back.
fn wait_boot(target: &mut Target<'_>, old: &str, within: std::time::Duration) -> Option<String> {
    let deadline = Instant::now() + within;
    poll(deadline, Duration::from_secs(2), || {
        let out = target.sh_fresh("cat /proc/sys/kernel/random/boot_id\n", Duration::from_secs(15)).ok()?;
        let id = out.stdout_text().trim().to_owned();
        (out.success() && !id.is_empty() && id != old).then_some(id)
    })
    .inspect(|_| target.disconnect())
}

/// Runs the host's power-cycle command (retried) and waits for the host.
fn power_cycle(target: &mut Target<'_>, tl: &mut Timeline, p: &RebootPlan) -> Option<String> {
    let Some(command) = target.host.power_cycle.as_deref().map(|c| target.host.expand(c)) else {
        tl.info("no power-cycle command is configured");
        return None;
    };
    for attempt in 1..=p.power_cycle_attempts.max(1) {
        tl.start(Phase::PowerCycle);
        let run = fleetgate_nix::process::Run::new("sh").args(["-c", &command]).timeout(target.timeouts.power_cycle);
        match run.run() {
            Ok(_) => tl.info(format!("power-cycled ({command})")),
            Err(e) => {
                tl.info(format!(
                    "power-cycle attempt {attempt} failed: {}",
                    e.to_string().lines().next().unwrap_or_default()
                ));
                continue;
            }
        }
        tl.start(Phase::WaitBoot);
        if let Some(id) = wait_boot(target, &p.boot_id, target.timeouts.reboot) {
            return Some(id);
        }
    }
    None
}

fn not_back_message(target: &Target<'_>, armed: bool) -> String {
    let default = if armed {
        "Its boot default is still the previous generation: power-cycling it brings it back, then run `fleetgate deploy --resume`"
    } else {
        "Its boot default is the NEW generation (unverified reboot): boot the previous generation from the boot menu"
    };
    let how = match &target.host.power_cycle {
        Some(c) => format!("the power-cycle command `{c}` failed or the host did not come back after it"),
        None => format!(
            "it has no power-cycle command (set `power_cycle` in fleetgate.toml under [hosts.{}])",
            target.host.name
        ),
    };
    format!(
        "the host did not come back within {} s after rebooting into the new generation and {how}. {default}. {} keeps the last good generation.",
        target.timeouts.reboot.as_secs(),
        paths::LAST_GOOD,
    )
}
