//! Every failure exit of every state of the engine, through the scripted
//! fake host: each test asserts the reported outcome AND where the host
//! really stands (current, booted, profile, default entry), also after the
//! watchdog's own deadline has passed.

use std::time::Duration;

use fleetgate_apply::fake::{FakeMachine, Op, sys};
use fleetgate_apply::intent::Verified;
use fleetgate_apply::machine::{HostState, Machine as _, MachineError};
use fleetgate_apply::outcome::Silent;
use fleetgate_apply::reboot::{self, RebootPlan, fallback_for, verified_reboot};
use fleetgate_apply::switch::{SwitchPlan, live_switch};
use fleetgate_apply::{Outcome, Restored, Standing, Step};

fn lost() -> MachineError {
    MachineError::Lost("Connection reset by peer".into())
}

fn switch_plan(m: &FakeMachine) -> SwitchPlan {
    SwitchPlan {
        run_id: "r1".into(),
        new: sys("new"),
        old: m.current.clone(),
        old_generation: Some(m.profile_generation),
        boot_id: m.boot_id.to_string(),
        baseline: "running".into(),
        window: Duration::from_secs(60),
        activation: Duration::from_secs(60),
        health: Duration::from_secs(30),
    }
}

fn switch(m: &mut FakeMachine) -> Outcome {
    let p = switch_plan(m);
    live_switch(m, &mut Silent, &p)
}

/// The host, and after the watchdog's deadline still, is on `system`.
fn stays_on(m: &mut FakeMachine, system: &str) {
    for _ in 0..2 {
        assert_eq!(m.current, system, "current");
        assert_eq!(m.profile(), system, "profile");
        assert_eq!(m.default_entry, system, "default entry");
        m.advance(Duration::from_secs(300));
    }
}

#[test]
fn switch_confirmed() {
    let mut m = FakeMachine::running(&sys("old"));
    assert_eq!(switch(&mut m), Outcome::Switched);
    stays_on(&mut m, &sys("new"));
}

/// Issue 10's race: the watchdog begins late. The engine never reads its
/// absence as a reboot, and the host ends — and stays past the watchdog's
/// deadline — where the report says.
#[test]
fn switch_with_a_watchdog_that_starts_late_is_confirmed_and_stays() {
    let mut m = FakeMachine::running(&sys("old"));
    m.watchdog_delay = Duration::from_secs(20);
    assert_eq!(switch(&mut m), Outcome::Switched);
    stays_on(&mut m, &sys("new"));
}

#[test]
fn switch_with_a_late_watchdog_and_failing_health_rolls_back_and_stays() {
    let mut m = FakeMachine::running(&sys("old"));
    m.watchdog_delay = Duration::from_secs(20);
    m.unhealthy.insert(sys("new"));
    let o = switch(&mut m);
    assert!(matches!(&o, Outcome::RolledBack { why, .. } if why.contains("health checks failed")), "{o:?}");
    stays_on(&mut m, &sys("old"));
}

#[test]
fn switch_activation_exit_codes_roll_back() {
    for (code, text) in [(1, "pre-switch checks"), (2, "activation failed"), (4, "units failed"), (100, "--reboot")] {
        let mut m = FakeMachine::running(&sys("old"));
        m.activation_exit.insert(sys("new"), code);
        let o = switch(&mut m);
        assert!(matches!(&o, Outcome::RolledBack { why, .. } if why.contains(text)), "{code}: {o:?}");
        assert_eq!(o.standing(), Standing::KnownGood);
        stays_on(&mut m, &sys("old"));
    }
}

#[test]
fn switch_lost_while_setting_the_profile_is_refused_with_the_profile_restored() {
    let mut m = FakeMachine::running(&sys("old"));
    m.fail(Op::SetProfile, lost());
    let o = switch(&mut m);
    assert!(matches!(o, Outcome::Refused { at: Step::Activate, .. }), "{o:?}");
    stays_on(&mut m, &sys("old"));
}

#[test]
fn switch_profile_restore_failing_is_unknown() {
    let mut m = FakeMachine::running(&sys("old"));
    m.fail(Op::SetProfile, lost());
    m.fail(Op::RestoreProfile, MachineError::Failed("nix-env: disk full".into()));
    let o = switch(&mut m);
    assert_eq!(o.standing(), Standing::Unknown, "{o:?}");
}

#[test]
fn switch_watchdog_not_started_is_refused() {
    let mut m = FakeMachine::running(&sys("old"));
    m.fail(Op::StartWatchdog, MachineError::Failed("mkdir: read-only file system".into()));
    let o = switch(&mut m);
    assert!(matches!(o, Outcome::Refused { .. }), "{o:?}");
    stays_on(&mut m, &sys("old"));
}

#[test]
fn switch_lost_while_starting_the_watchdog_cancels_it() {
    let mut m = FakeMachine::running(&sys("old"));
    m.fail(Op::StartWatchdog, lost());
    let o = switch(&mut m);
    assert!(matches!(o, Outcome::Refused { .. }), "{o:?}");
    assert!(m.log.contains(&Op::Cancel));
    stays_on(&mut m, &sys("old"));
}

#[test]
fn switch_lost_looks_during_activation_are_waited_out() {
    let mut m = FakeMachine::running(&sys("old"));
    for n in 1..=5 {
        m.fail_nth(Op::Watchdog, n, lost());
    }
    assert_eq!(switch(&mut m), Outcome::Switched);
    stays_on(&mut m, &sys("new"));
}

#[test]
fn switch_lost_while_making_the_default_rolls_back() {
    let mut m = FakeMachine::running(&sys("old"));
    m.fail(Op::MakeDefault, lost());
    let o = switch(&mut m);
    assert!(matches!(&o, Outcome::RolledBack { why, .. } if why.contains("boot default")), "{o:?}");
    stays_on(&mut m, &sys("old"));
}

#[test]
fn switch_confirmation_lost_the_watchdog_rolls_back_by_itself() {
    let mut m = FakeMachine::running(&sys("old"));
    m.fail(Op::Confirm, lost());
    let o = switch(&mut m);
    assert!(matches!(&o, Outcome::RolledBack { why, .. } if why.contains("could not confirm")), "{o:?}");
    stays_on(&mut m, &sys("old"));
}

#[test]
fn switch_host_gone_for_good_is_unknown() {
    let mut m = FakeMachine::running(&sys("old"));
    m.always.insert(Op::Watchdog, lost());
    m.always.insert(Op::Cancel, lost());
    m.always.insert(Op::RequestRollback, lost());
    let o = switch(&mut m);
    assert!(matches!(o, Outcome::Unknown { .. }), "{o:?}");
}

#[test]
fn switch_verification_unanswered_is_unknown() {
    let mut m = FakeMachine::running(&sys("old"));
    m.always.insert(Op::State, lost());
    let o = switch(&mut m);
    assert_eq!(o.standing(), Standing::Unknown, "{o:?}");
}

/// Issue 15: a machine whose look at the watchdog's end also reads where
/// the host stands (the real one does, in one round trip) is verified from
/// that look — confirmed, rolled back, and unanswered alike.
#[test]
fn switch_verified_from_the_look_that_saw_the_watchdog_end() {
    let mut m = FakeMachine::running(&sys("old"));
    m.look_reads_state = true;
    assert_eq!(switch(&mut m), Outcome::Switched);
    stays_on(&mut m, &sys("new"));

    let mut m = FakeMachine::running(&sys("old"));
    m.look_reads_state = true;
    m.unhealthy.insert(sys("new"));
    let o = switch(&mut m);
    assert!(matches!(o, Outcome::RolledBack { .. }), "{o:?}");
    stays_on(&mut m, &sys("old"));

    let mut m = FakeMachine::running(&sys("old"));
    m.look_reads_state = true;
    m.always.insert(Op::State, lost());
    assert_eq!(switch(&mut m).standing(), Standing::Unknown);
}

#[test]
fn switch_reboot_during_activation_back_on_old_is_rolled_back() {
    let mut m = FakeMachine::running(&sys("old"));
    m.activation_time = Duration::from_secs(10);
    m.power_loss_at = Some(Duration::from_secs(3));
    let o = switch(&mut m);
    assert!(matches!(&o, Outcome::RolledBack { why, .. } if why.contains("rebooted during activation")), "{o:?}");
    stays_on(&mut m, &sys("old"));
}

fn reboot_plan(m: &FakeMachine, new: &str) -> RebootPlan {
    let state = HostState {
        current: m.current.clone(),
        booted: m.booted.clone(),
        profile: m.profile(),
        profile_generation: Some(m.profile_generation),
        boot_id: m.boot_id.to_string(),
    };
    let fallback = fallback_for(&state, new).expect("a fallback");
    let fallback_generation = m.generations.iter().rev().find(|(_, s)| **s == fallback).map(|(n, _)| *n);
    RebootPlan {
        run_id: "r1".into(),
        new: new.to_owned(),
        fallback,
        fallback_generation,
        boot_id: m.boot_id.to_string(),
        verified: Verified { booted: new.to_owned(), baseline: "running".into(), ..Verified::default() },
        allow_unverified: false,
        power_cycle_attempts: 2,
        reboot_within: Duration::from_secs(60),
        health_within: Duration::from_secs(30),
        now_unix: 1_700_000_000,
    }
}

fn verified(m: &mut FakeMachine) -> Outcome {
    let p = reboot_plan(m, &sys("new"));
    verified_reboot(m, &mut Silent, &p)
}

fn boots(m: &mut FakeMachine, system: &str) {
    m.reboot();
    m.advance(Duration::from_secs(30));
    assert_eq!(m.booted, system, "the default boots {system}");
}

#[test]
fn reboot_blessed() {
    let mut m = FakeMachine::running(&sys("old"));
    assert_eq!(verified(&mut m), Outcome::Blessed);
    assert_eq!(m.on(), (sys("new"), sys("new"), sys("new"), sys("new")));
    assert!(m.intent.is_none(), "the intent is resolved");
    boots(&mut m, &sys("new"));
}

/// Issue 8: `--reboot` right after a live switch to the same system. The
/// host runs X (switched live), booted W: the fallback is W (it booted),
/// never X, and the one-time boot of X is not misread as "not honoured".
#[test]
fn reboot_right_after_a_live_switch_verifies_the_switched_system() {
    let mut m = FakeMachine::running(&sys("w"));
    assert_eq!(switch(&mut m), Outcome::Switched);
    assert_eq!((m.current.clone(), m.booted.clone()), (sys("new"), sys("w")));
    let p = reboot_plan(&m, &sys("new"));
    assert_eq!(p.fallback, sys("w"), "the generation that booted is the fallback");
    assert_eq!(verified_reboot(&mut m, &mut Silent, &p), Outcome::Blessed);
    assert_eq!(m.on(), (sys("new"), sys("new"), sys("new"), sys("new")));
}

/// Boot debt: the default was switched live to a generation that never
/// booted (and would hang); the fallback is the booted one, and a failing
/// one-shot comes back on it.
#[test]
fn reboot_fallback_is_the_booted_generation_not_the_never_booted_default() {
    let mut m = FakeMachine::running(&sys("booted"));
    assert_eq!(switch(&mut m), Outcome::Switched);
    m.hangs.insert(sys("new"));
    let p = reboot_plan(&m, &sys("newer"));
    assert_eq!(p.fallback, sys("booted"));
    m.hangs.insert(sys("newer"));
    let o = verified_reboot(&mut m, &mut Silent, &p);
    assert!(matches!(&o, Outcome::RolledBack { why, .. } if why.contains("power-cycled")), "{o:?}");
    assert_eq!(m.on(), (sys("booted"), sys("booted"), sys("booted"), sys("booted")));
    boots(&mut m, &sys("booted"));
}

#[test]
fn reboot_one_shot_not_honoured_rolls_back() {
    let mut m = FakeMachine::running(&sys("old"));
    m.ignores_oneshot = true;
    let o = verified(&mut m);
    assert!(matches!(&o, Outcome::RolledBack { why, .. } if why.contains("not honoured")), "{o:?}");
    assert_eq!(m.on(), (sys("old"), sys("old"), sys("old"), sys("old")));
}

#[test]
fn reboot_hang_power_cycle_back_on_the_fallback() {
    let mut m = FakeMachine::running(&sys("old"));
    m.hangs.insert(sys("new"));
    let o = verified(&mut m);
    assert!(matches!(&o, Outcome::RolledBack { why, .. } if why.contains("power-cycled")), "{o:?}");
    assert_eq!(m.on(), (sys("old"), sys("old"), sys("old"), sys("old")));
    assert!(m.intent.is_none());
}

#[test]
fn reboot_hang_without_power_cycle_is_unknown_and_the_default_is_the_fallback() {
    let mut m = FakeMachine::running(&sys("old"));
    m.hangs.insert(sys("new"));
    m.has_power_cycle = false;
    let o = verified(&mut m);
    assert!(
        matches!(&o, Outcome::Unknown { at: Step::WaitBoot, why } if why.contains("still the previous generation")),
        "{o:?}"
    );
    assert_eq!(m.default_entry, sys("old"));
    assert!(m.intent.is_some(), "the intent stays for the host's own resume");
}

#[test]
fn reboot_boot_id_unchanged_without_power_cycle_is_unknown() {
    let mut m = FakeMachine::running(&sys("old"));
    m.ignores_reboot = true;
    m.has_power_cycle = false;
    let o = verified(&mut m);
    assert!(matches!(o, Outcome::Unknown { at: Step::WaitBoot, .. }), "{o:?}");
}

#[test]
fn reboot_unhealthy_new_generation_goes_back_to_the_fallback() {
    let mut m = FakeMachine::running(&sys("old"));
    m.unhealthy.insert(sys("new"));
    let o = verified(&mut m);
    assert!(matches!(&o, Outcome::RolledBack { why, .. } if why.contains("unhealthy")), "{o:?}");
    assert_eq!(m.on(), (sys("old"), sys("old"), sys("old"), sys("old")));
}

#[test]
fn reboot_bless_failing_goes_back_to_the_fallback() {
    let mut m = FakeMachine::running(&sys("old"));
    m.fail(Op::Bless, MachineError::Failed("bootctl: EFI variables not writable".into()));
    let o = verified(&mut m);
    assert!(matches!(o, Outcome::RolledBack { .. }), "{o:?}");
    assert_eq!(m.on(), (sys("old"), sys("old"), sys("old"), sys("old")));
}

#[test]
fn reboot_booted_system_wrong_is_unknown() {
    let mut m = FakeMachine::running(&sys("old"));
    m.generations.insert(7, sys("other"));
    m.boot_override = Some(sys("other"));
    let o = verified(&mut m);
    assert!(matches!(&o, Outcome::Unknown { why, .. } if why.contains("neither")), "{o:?}");
}

#[test]
fn reboot_arming_refuses_a_default_that_is_not_the_fallback() {
    let mut m = FakeMachine::running(&sys("old"));
    m.fail(Op::InstallBoot, MachineError::Failed("x".into()));
    m.fail_nth(Op::InstallBoot, 2, MachineError::Failed("x".into()));
    let o = verified(&mut m);
    assert_eq!(o.standing(), Standing::Unknown, "install failed, then the restore's install failed: {o:?}");
}

#[test]
fn reboot_lost_at_each_step_before_the_reboot_is_refused_and_restored() {
    for op in [Op::SetProfile, Op::InstallBoot, Op::Arm, Op::WriteIntent] {
        let mut m = FakeMachine::running(&sys("old"));
        m.fail(op, lost());
        let o = verified(&mut m);
        assert!(matches!(o, Outcome::Refused { .. }), "{op:?}: {o:?}");
        assert_eq!(m.on(), (sys("old"), sys("old"), sys("old"), sys("old")), "{op:?}");
        assert_eq!(m.oneshot, None, "{op:?}");
    }
}

#[test]
fn reboot_cannot_boot_once_is_refused_unless_allowed() {
    let mut m = FakeMachine::running(&sys("old"));
    m.cannot_arm = Some("no EFI variables".into());
    let o = verified(&mut m);
    assert!(matches!(&o, Outcome::Refused { why, .. } if why.contains("--allow-unverified-reboot")), "{o:?}");
    assert_eq!(m.on(), (sys("old"), sys("old"), sys("old"), sys("old")));
    let mut p = reboot_plan(&m, &sys("new"));
    p.allow_unverified = true;
    assert_eq!(verified_reboot(&mut m, &mut Silent, &p), Outcome::Blessed);
}

/// A failed restore is never reported known-good.
#[test]
fn a_failed_restore_is_never_known_good() {
    for failing in [Op::RestoreProfile, Op::InstallBoot, Op::Disarm, Op::State] {
        let mut m = FakeMachine::running(&sys("old"));
        m.cannot_arm = Some("no EFI variables".into());
        m.always.insert(failing, MachineError::Failed("injected".into()));
        if failing == Op::InstallBoot {
            m.always.remove(&Op::InstallBoot);
            m.fail_nth(Op::InstallBoot, 2, MachineError::Failed("injected".into()));
        }
        let o = verified(&mut m);
        assert_eq!(o.standing(), Standing::Unknown, "{failing:?}: {o:?}");
        assert!(!o.is_applied());
    }
    let mut m = FakeMachine::running(&sys("old"));
    m.fail(Op::RestoreProfile, MachineError::Failed("x".into()));
    assert!(matches!(reboot::restore(&mut m, &sys("old"), Some(1)), Restored::Unknown { .. }));
    // After a bless failed and restoring failed too: Unknown.
    let mut m = FakeMachine::running(&sys("old"));
    m.fail(Op::Bless, MachineError::Failed("x".into()));
    m.fail(Op::RestoreProfile, MachineError::Failed("y".into()));
    let o = verified(&mut m);
    assert_eq!(o.standing(), Standing::Unknown, "{o:?}");
}

#[test]
fn reboot_lock_taken_by_another_deploy_after_the_reboot_is_unknown() {
    let mut m = FakeMachine::running(&sys("old"));
    m.lock_taken_on_boot = Some("other-run".into());
    let o = verified(&mut m);
    assert!(matches!(&o, Outcome::Unknown { why, .. } if why.contains("lock")), "{o:?}");
}

/// The deployer died after the reboot; whoever sees the host next resumes
/// from the intent on the host.
#[test]
fn resume_after_the_deployer_died_blesses_or_goes_back() {
    for hangs in [false, true] {
        let mut m = FakeMachine::running(&sys("old"));
        if hangs {
            m.hangs.insert(sys("new"));
            m.has_power_cycle = false;
        }
        let o = verified(&mut m);
        if !hangs {
            assert_eq!(o, Outcome::Blessed);
            continue;
        }
        assert!(matches!(o, Outcome::Unknown { .. }));
        // Later, someone power-cycles it: it boots its default, the fallback.
        m.up = false;
        m.boots_at = Some(m.now);
        m.hangs.clear();
        m.advance(Duration::from_secs(1));
        let intent = m.intent.clone().expect("intent on the host");
        let o = reboot::resume(&mut m, &mut Silent, &intent, Duration::from_secs(30), true, Duration::from_secs(60));
        assert!(matches!(o, Outcome::RolledBack { .. }), "{o:?}");
        assert_eq!(m.on(), (sys("old"), sys("old"), sys("old"), sys("old")));
        assert!(m.intent.is_none());
    }
    // Came back on the new generation: the resume blesses it.
    let mut m = FakeMachine::running(&sys("old"));
    m.always.insert(Op::FreshBootId, lost());
    m.has_power_cycle = false;
    let o = verified(&mut m);
    assert!(matches!(o, Outcome::Unknown { .. }));
    m.always.clear();
    m.advance(Duration::from_secs(60));
    let intent = m.intent.clone().expect("intent");
    let o = reboot::resume(&mut m, &mut Silent, &intent, Duration::from_secs(30), false, Duration::from_secs(60));
    assert_eq!(o, Outcome::Blessed);
    assert_eq!(m.on(), (sys("new"), sys("new"), sys("new"), sys("new")));
}

/// A run that died before it rebooted the host: the intent is resolved by
/// undoing the one-time boot, so a later reboot cannot boot the new system
/// unverified.
#[test]
fn resume_of_a_run_that_died_before_the_reboot_undoes_the_one_time_boot() {
    let mut m = FakeMachine::running(&sys("old"));
    m.ignores_reboot = true;
    m.has_power_cycle = false;
    let o = verified(&mut m);
    assert!(matches!(o, Outcome::Unknown { .. }), "{o:?}");
    assert_eq!(m.oneshot, Some(sys("new")));
    let intent = m.intent.clone().expect("intent");
    let o = reboot::resume(&mut m, &mut Silent, &intent, Duration::from_secs(30), false, Duration::from_secs(60));
    assert!(matches!(&o, Outcome::Refused { why, .. } if why.contains("died before")), "{o:?}");
    assert_eq!((m.oneshot.clone(), m.intent.is_none()), (None, true));
    assert_eq!(m.on(), (sys("old"), sys("old"), sys("old"), sys("old")));
}

/// The deployer and the host's own boot unit both see the host come back:
/// the host's resume holds the lock and blesses; the deployer waits for it,
/// finds the intent resolved, and reports what the host says.
#[test]
fn the_waiting_deployer_defers_to_the_hosts_own_resume() {
    let mut m = FakeMachine::running(&sys("old"));
    m.host_resume_after = Some(Duration::from_secs(20));
    assert_eq!(verified(&mut m), Outcome::Blessed);
    assert!(m.log.iter().filter(|op| **op == Op::Lock).count() > 1, "the deployer waited for the lock");
    assert!(!m.log.contains(&Op::Bless), "the host blessed it, not the deployer");
    assert_eq!(m.on(), (sys("new"), sys("new"), sys("new"), sys("new")));
}

/// The agent's way: `prepare` on its own host, then the reboot it cannot
/// wait for, then (at its next start) `resume` — blessed, or back on the
/// fallback when the new generation hangs and the host is power-cycled.
#[test]
fn prepare_then_own_reboot_then_resume_blesses_or_falls_back() {
    for hangs in [false, true] {
        let mut m = FakeMachine::running(&sys("old"));
        if hangs {
            m.hangs.insert(sys("new"));
        }
        let p = reboot_plan(&m, &sys("new"));
        let prepared = reboot::prepare(&mut m, &mut Silent, &p).expect("prepared");
        assert!(prepared.armed);
        assert_eq!(m.intent.as_ref(), Some(&prepared.intent), "the intent is on the host");
        assert_eq!(m.default_entry, sys("old"), "the default stays the fallback until the new one proved itself");
        assert_eq!(m.oneshot, Some(sys("new")));
        m.reboot();
        m.advance(Duration::from_secs(30));
        if hangs {
            // Hung in stage 1: power-cycled, the one-shot is spent, the default boots.
            m.up = false;
            m.boots_at = Some(m.now);
            m.hangs.clear();
            m.advance(Duration::from_secs(1));
        }
        let o = reboot::resume(
            &mut m,
            &mut Silent,
            &prepared.intent,
            Duration::from_secs(30),
            hangs,
            Duration::from_secs(60),
        );
        let want = if hangs { sys("old") } else { sys("new") };
        assert_eq!(o.is_applied(), !hangs, "{o:?}");
        assert_eq!(m.on(), (want.clone(), want.clone(), want.clone(), want), "{o:?}");
        assert!(m.intent.is_none());
    }
}

/// A failing step of `prepare` restores the fallback and is the outcome;
/// nothing is left armed and no intent is written.
#[test]
fn prepare_failing_restores_the_fallback() {
    for op in [Op::SetProfile, Op::InstallBoot, Op::Arm, Op::WriteIntent] {
        let mut m = FakeMachine::running(&sys("old"));
        m.script.entry(op).or_default().push_back(Some(MachineError::Failed("boom".into())));
        let p = reboot_plan(&m, &sys("new"));
        let o = reboot::prepare(&mut m, &mut Silent, &p).expect_err("refused");
        assert!(matches!(o, Outcome::Refused { at: Step::Activate, .. }), "{op:?}: {o:?}");
        assert_eq!(m.on(), (sys("old"), sys("old"), sys("old"), sys("old")), "{op:?}");
        assert_eq!((m.oneshot.clone(), m.intent.is_none()), (None, true), "{op:?}");
    }
}

/// Someone else (the boot unit) finished the reboot: the host says how.
#[test]
fn resolved_at_boot_reads_where_the_host_stands() {
    let mut m = FakeMachine::running(&sys("old"));
    let p = reboot_plan(&m, &sys("new"));
    assert!(matches!(reboot::resolved_at_boot(&mut m, &sys("new"), &sys("old")), Outcome::RolledBack { .. }));
    assert_eq!(verified_reboot(&mut m, &mut Silent, &p), Outcome::Blessed);
    assert_eq!(reboot::resolved_at_boot(&mut m, &sys("new"), &sys("old")), Outcome::Blessed);
    let o = reboot::resolved_at_boot(&mut m, &sys("newer"), &sys("other"));
    assert_eq!(o.standing(), Standing::Unknown, "{o:?}");
}

/// The agent was killed mid-switch: whoever finds the run ends it from
/// `Stop` — at every point the switch may have reached — and reads back
/// where the host is.
#[test]
fn abandon_a_switch_at_every_point_it_may_have_reached() {
    // Died right after setting the profile, before the watchdog existed:
    // the profile is restored, nothing was activated.
    let mut m = FakeMachine::running(&sys("old"));
    let p = switch_plan(&m);
    m.set_profile(&p.new).expect("profile");
    let o = fleetgate_apply::switch::abandon(&mut m, &mut Silent, &p);
    assert!(matches!(o, Outcome::RolledBack { .. } | Outcome::Refused { .. }), "{o:?}");
    stays_on(&mut m, &sys("old"));

    // Died while the watchdog waited for the confirmation: it is asked to roll back.
    let mut m = FakeMachine::running(&sys("old"));
    let p = switch_plan(&m);
    m.set_profile(&p.new).expect("profile");
    m.start_watchdog(&p.watchdog_spec()).expect("watchdog");
    m.advance(Duration::from_secs(5));
    assert_eq!(m.current, sys("new"), "activated, unconfirmed");
    let o = fleetgate_apply::switch::abandon(&mut m, &mut Silent, &p);
    assert!(matches!(o, Outcome::RolledBack { .. }), "{o:?}");
    stays_on(&mut m, &sys("old"));

    // Died after the confirmation: the switch stands.
    let mut m = FakeMachine::running(&sys("old"));
    let p = switch_plan(&m);
    assert_eq!(live_switch(&mut m, &mut Silent, &p), Outcome::Switched);
    assert_eq!(fleetgate_apply::switch::abandon(&mut m, &mut Silent, &p), Outcome::Switched);
    stays_on(&mut m, &sys("new"));
}
