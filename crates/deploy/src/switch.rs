//! Live switch with magic rollback.
//!
//! Before anything changes, a watchdog is started on the target, detached
//! from the SSH session (a transient systemd service when systemd is PID 1,
//! else `setsid sh`), so losing SSH cannot stop it. The watchdog itself
//! activates the new system with `switch-to-configuration test` (live, the
//! boot default untouched), records the exit status, and then waits for a
//! confirmation. fleetgate confirms only after health checks passed over a
//! *new* SSH connection and the new system was made the boot default
//! (`switch-to-configuration boot`). Without a confirmation in time — or
//! when fleetgate asks for it — the watchdog points the profile back at the
//! previous generation and runs the previous system's
//! `switch-to-configuration switch`.
//!
//! Activating with `test` before `boot` (instead of one `switch`) means a
//! host that loses power during the confirmation window boots the previous
//! generation.

use std::time::{Duration, Instant};

use fleetgate_transport::Transport as _;

use crate::events::{Phase, Timeline};
use crate::health;
use crate::remote::{Target, paths, poll, q, restore_profile_script, set_profile_script, tail};

/// What the watchdog needs to know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watchdog {
    /// Its directory on the target (`/run/fleetgate/runs/<run>`).
    pub dir: String,
    /// The system profile.
    pub profile: String,
    /// The new system.
    pub new: String,
    /// The system to go back to.
    pub old: String,
    /// The profile generation to go back to, if known.
    pub old_generation: Option<u64>,
    /// Seconds to wait for the confirmation after activation.
    pub window_secs: u64,
    /// Seconds activation may take.
    pub activation_secs: u64,
}

impl Watchdog {
    /// The watchdog script (POSIX sh). States written to `$d/state`:
    /// `activating`, `waiting`, `confirmed`, `rolling-back`,
    /// `rolled-back <status>`.
    #[must_use]
    pub fn script(&self) -> String {
        let restore = match self.old_generation {
            Some(n) => format!("nix-env -p \"$profile\" --switch-generation {n}"),
            None => "nix-env -p \"$profile\" --set \"$old\"".to_owned(),
        };
        format!(
            r#"# fleetgate magic rollback watchdog
d={dir}
profile={profile}
new={new}
old={old}
rollback() {{
  echo rolling-back > "$d/state.tmp" && mv -f "$d/state.tmp" "$d/state"
  {restore} > "$d/rollback.log" 2>&1
  NIXOS_NO_CHECK=1 "$old/bin/switch-to-configuration" switch >> "$d/rollback.log" 2>&1
  rc=$?
  echo "rolled-back $rc" > "$d/state.tmp" && mv -f "$d/state.tmp" "$d/state"
  exit 0
}}
echo activating > "$d/state"
if command -v timeout >/dev/null 2>&1; then
  timeout {activation} "$new/bin/switch-to-configuration" test > "$d/activate.log" 2>&1
else
  "$new/bin/switch-to-configuration" test > "$d/activate.log" 2>&1
fi
echo $? > "$d/activate.status"
echo waiting > "$d/state.tmp" && mv -f "$d/state.tmp" "$d/state"
i=0
while [ "$i" -lt {window} ]; do
  if [ -e "$d/confirm" ]; then echo confirmed > "$d/state.tmp" && mv -f "$d/state.tmp" "$d/state"; exit 0; fi
  if [ -e "$d/rollback" ]; then rollback; fi
  sleep 1
  i=$((i + 1))
done
rollback
"#,
            dir = q(&self.dir),
            profile = q(&self.profile),
            new = q(&self.new),
            old = q(&self.old),
            activation = self.activation_secs,
            window = self.window_secs,
        )
    }

    /// Starts the watchdog detached from the session; prints how.
    #[must_use]
    pub fn launch_script(&self, unit: &str) -> String {
        format!(
            "d={d}\n\
             if [ -d /run/systemd/system ] && command -v systemd-run >/dev/null 2>&1; then\n\
             \x20 systemd-run --unit={unit} --description='fleetgate magic rollback' --collect --no-block --quiet sh \"$d/watchdog.sh\" && echo systemd-run\n\
             else\n\
             \x20 setsid sh \"$d/watchdog.sh\" </dev/null >/dev/null 2>&1 &\n\
             \x20 echo setsid\n\
             fi\n",
            d = q(&self.dir),
            unit = q(unit),
        )
    }
}

/// How a live switch ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SwitchOutcome {
    /// The new system runs, is healthy, and is the boot default.
    Confirmed,
    /// The host is back on the previous system.
    RolledBack(String),
    /// fleetgate cannot tell where the host is.
    Unknown(String),
}

/// What one look at the watchdog's directory shows.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    state: String,
    status: Option<i32>,
    boot_id: String,
}

fn look(target: &mut Target<'_>, w: &Watchdog) -> Option<Seen> {
    let script = format!(
        "cat {d}/state 2>/dev/null || echo missing\ncat {d}/activate.status 2>/dev/null || echo none\ncat /proc/sys/kernel/random/boot_id\n",
        d = q(&w.dir)
    );
    let out = target.sh(&script, target.timeouts.command).ok()?.stdout_text();
    let mut lines = out.lines();
    Some(Seen {
        state: lines.next()?.trim().to_owned(),
        status: lines.next().and_then(|s| s.trim().parse().ok()),
        boot_id: lines.next().unwrap_or_default().trim().to_owned(),
    })
}

/// Runs a live switch from `w.old` to `w.new` under the watchdog.
pub fn magic_switch(
    target: &mut Target<'_>,
    tl: &mut Timeline,
    w: &Watchdog,
    run_id: &str,
    baseline: &str,
    boot_id: &str,
) -> SwitchOutcome {
    let t = target.timeouts.clone();
    tl.start(Phase::Activate);
    let prepare = format!("mkdir -p {d} && chmod 700 {d}", d = q(&w.dir));
    if let Err(e) = target.sh_ok(&prepare, t.command) {
        return SwitchOutcome::RolledBack(format!(
            "could not prepare the watchdog, nothing was changed: {}",
            crate::remote::why(&e)
        ));
    }
    let script_path = format!("{}/watchdog.sh", w.dir);
    if let Err(e) = target.shared().upload(w.script().as_bytes(), std::path::Path::new(&script_path), 0o700, t.command)
    {
        return SwitchOutcome::RolledBack(format!(
            "could not install the watchdog, nothing was changed: {}",
            crate::remote::why(&e)
        ));
    }
    if let Err(e) = target.sh_ok(&set_profile_script(&w.new), t.command) {
        let _ = target.sh(&restore_profile_script(w.old_generation, &w.old), t.command);
        return SwitchOutcome::RolledBack(format!(
            "could not set the system profile (the previous profile was restored): {}",
            crate::remote::why(&e)
        ));
    }
    let unit = format!("fleetgate-watchdog-{run_id}");
    match target.sh_ok(&w.launch_script(&unit), t.command) {
        Ok(how) => tl.info(format!("watchdog armed ({}), {} s to confirm", how.trim(), w.window_secs)),
        Err(e) => {
            let _ = target.sh(&restore_profile_script(w.old_generation, &w.old), t.command);
            return SwitchOutcome::RolledBack(format!(
                "could not start the watchdog (the previous profile was restored): {}",
                crate::remote::why(&e)
            ));
        }
    }

    // Wait for activation to finish (the watchdog runs it).
    let deadline = Instant::now() + t.activation + Duration::from_secs(30);
    let seen = poll(deadline, Duration::from_millis(500), || look(target, w).filter(|s| s.state != "activating"));
    let Some(seen) = seen else {
        return wait_for_watchdog(target, w, boot_id, "lost contact with the host during activation");
    };
    if seen.boot_id != boot_id || seen.state == "missing" {
        return after_reboot(target, w, "the host rebooted during activation");
    }
    if seen.state != "waiting" {
        return final_state(target, w, &seen.state, "the watchdog acted before fleetgate confirmed");
    }
    if seen.status != Some(0) {
        let log = target
            .sh(&format!("cat {}/activate.log", q(&w.dir)), t.command)
            .map(|o| tail(&o.stdout_text(), 8))
            .unwrap_or_default();
        let why = format!(
            "switch-to-configuration test failed ({}):\n{log}",
            match seen.status {
                Some(1) => "exit 1: pre-switch checks failed".to_owned(),
                Some(2) => "exit 2: activation failed".to_owned(),
                Some(4) => "exit 4: units failed".to_owned(),
                Some(100) =>
                    "exit 100: the init interface changed; it needs a reboot (deploy with --reboot)".to_owned(),
                Some(124) => format!("timed out after {} s", w.activation_secs),
                other => format!("exit {other:?}"),
            }
        );
        return trigger_rollback(target, w, boot_id, &why);
    }

    // Health, over new connections.
    tl.start(Phase::Health);
    let host = target.host;
    let connect = || -> Box<dyn fleetgate_transport::Transport> { Box::new(target.fresh()) };
    let within = t.health.min(Duration::from_secs(w.window_secs.saturating_sub(10).max(5)));
    if let Err(failed) = health::wait_healthy(host, &connect, baseline, within, t.command) {
        let why = format!("health checks failed after the switch: {}", failed.join("; "));
        return trigger_rollback(target, w, boot_id, &why);
    }

    // Make it the boot default, then confirm, over a new connection.
    tl.start(Phase::Confirm);
    let boot = format!("{}/bin/switch-to-configuration boot 2>&1", q(&w.new));
    match target.sh_fresh(&boot, t.activation) {
        Ok(o) if o.success() => {}
        Ok(o) => {
            let why = format!("making the new system the boot default failed: {}", tail(&o.stdout_text(), 5));
            return trigger_rollback(target, w, boot_id, &why);
        }
        Err(e) => {
            return trigger_rollback(
                target,
                w,
                boot_id,
                &format!("could not reach the host to confirm: {}", crate::remote::why(&e)),
            );
        }
    }
    let fresh = target.fresh();
    if let Err(e) =
        fleetgate_transport::Transport::run_script(&fresh, &format!("mkdir -p {}/confirm", q(&w.dir)), t.command)
            .and_then(fleetgate_transport::Output::check)
    {
        return wait_for_watchdog(
            target,
            w,
            boot_id,
            &format!("could not confirm over a new SSH connection ({})", crate::remote::why(&e)),
        );
    }
    let confirmed = poll(Instant::now() + Duration::from_secs(20), Duration::from_millis(300), || {
        look(target, w).filter(|s| s.state != "waiting")
    });
    match confirmed {
        Some(s) if s.state == "confirmed" => SwitchOutcome::Confirmed,
        Some(s) => final_state(target, w, &s.state, "the confirmation came too late"),
        None => wait_for_watchdog(target, w, boot_id, "lost contact while confirming"),
    }
}

fn trigger_rollback(target: &mut Target<'_>, w: &Watchdog, boot_id: &str, why: &str) -> SwitchOutcome {
    let _ = target.sh(&format!("touch {}/rollback", q(&w.dir)), target.timeouts.command);
    wait_for_watchdog(target, w, boot_id, why)
}

/// Waits for the watchdog to finish rolling back (or to have confirmed).
fn wait_for_watchdog(target: &mut Target<'_>, w: &Watchdog, boot_id: &str, why: &str) -> SwitchOutcome {
    let t = target.timeouts.clone();
    let deadline = Instant::now() + Duration::from_secs(w.window_secs) + t.activation + Duration::from_secs(60);
    let seen = poll(deadline, Duration::from_secs(1), || {
        look(target, w).filter(|s| {
            s.state == "missing" || s.state == "confirmed" || s.state.starts_with("rolled-back") || s.boot_id != boot_id
        })
    });
    match seen {
        None => SwitchOutcome::Unknown(format!(
            "{why}; the host did not answer again within {} s. Its watchdog rolls it back by itself unless it was confirmed: check it",
            (deadline - Instant::now()).as_secs()
        )),
        Some(s) if s.boot_id != boot_id || s.state == "missing" => after_reboot(target, w, why),
        Some(s) => final_state(target, w, &s.state, why),
    }
}

fn final_state(target: &mut Target<'_>, w: &Watchdog, state: &str, why: &str) -> SwitchOutcome {
    if state == "confirmed" {
        return SwitchOutcome::Confirmed;
    }
    if state.starts_with("rolling-back") {
        return wait_for_watchdog_done(target, w, why);
    }
    verify_old(target, w, &format!("{why}; the host rolled back to the previous generation ({state})"))
}

fn wait_for_watchdog_done(target: &mut Target<'_>, w: &Watchdog, why: &str) -> SwitchOutcome {
    let deadline = Instant::now() + target.timeouts.activation + Duration::from_secs(30);
    match poll(deadline, Duration::from_secs(1), || look(target, w).filter(|s| s.state.starts_with("rolled-back"))) {
        Some(s) => {
            verify_old(target, w, &format!("{why}; the host rolled back to the previous generation ({})", s.state))
        }
        None => SwitchOutcome::Unknown(format!("{why}; the rollback did not finish in time: check the host")),
    }
}

/// The host must run the old system, with the profile on it.
fn verify_old(target: &mut Target<'_>, w: &Watchdog, why: &str) -> SwitchOutcome {
    let script = format!("readlink -f /run/current-system\nreadlink -f {}\n", paths::PROFILE);
    match target.sh_ok(&script, target.timeouts.command) {
        Ok(out) => {
            let mut lines = out.lines();
            let (current, profile) = (lines.next().unwrap_or_default(), lines.next().unwrap_or_default());
            if current == w.old && profile == w.old {
                SwitchOutcome::RolledBack(why.to_owned())
            } else {
                SwitchOutcome::Unknown(format!("{why}; but it runs {current} with the profile on {profile}: check it"))
            }
        }
        Err(e) => SwitchOutcome::Unknown(format!(
            "{why}; then the host could not be asked where it is: {}",
            crate::remote::why(&e)
        )),
    }
}

/// The host rebooted in the middle (power loss, a watchdog of its own):
/// it boots its default, which is still the previous generation unless
/// the confirmation step had begun.
fn after_reboot(target: &mut Target<'_>, w: &Watchdog, why: &str) -> SwitchOutcome {
    let t = target.timeouts.clone();
    let current = target.sh_ok("readlink -f /run/current-system", t.command).map(|s| s.trim().to_owned());
    match current {
        Ok(c) if c == w.old => {
            let script = format!(
                "{}\n{}/bin/switch-to-configuration boot >&2\n",
                restore_profile_script(w.old_generation, &w.old),
                q(&w.old)
            );
            match target.sh_ok(&script, t.activation) {
                Ok(_) => verify_old(
                    target,
                    w,
                    &format!("{why}; it came back on the previous generation and its profile was restored"),
                ),
                Err(e) => SwitchOutcome::Unknown(format!(
                    "{why}; it came back on the previous generation but restoring its profile failed: {}",
                    crate::remote::why(&e)
                )),
            }
        }
        Ok(c) => SwitchOutcome::Unknown(format!("{why}; it came back running {c}, unconfirmed: check it")),
        Err(e) => SwitchOutcome::Unknown(format!("{why}; it did not answer after that: {}", crate::remote::why(&e))),
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;
    use std::process::Command;

    use super::*;

    /// A fake system whose switch-to-configuration logs its calls and exits
    /// with `code`.
    fn system(dir: &Path, name: &str, code: i32, log: &Path) -> String {
        let bin = dir.join(name).join("bin");
        fs::create_dir_all(&bin).expect("mkdir");
        let stc = bin.join("switch-to-configuration");
        fs::write(&stc, format!("#!/bin/sh\necho \"{name} $1\" >> {}\nexit {code}\n", log.display())).expect("write");
        fs::set_permissions(&stc, fs::Permissions::from_mode(0o755)).expect("chmod");
        dir.join(name).display().to_string()
    }

    fn run_watchdog(code: i32, confirm: bool) -> (String, String) {
        let tmp = tempfile::tempdir().expect("tmp");
        let log = tmp.path().join("calls");
        let fake_bin = tmp.path().join("fakebin");
        fs::create_dir_all(&fake_bin).expect("mkdir");
        let nix_env = fake_bin.join("nix-env");
        fs::write(&nix_env, format!("#!/bin/sh\necho \"nix-env $*\" >> {}\n", log.display())).expect("write");
        fs::set_permissions(&nix_env, fs::Permissions::from_mode(0o755)).expect("chmod");
        let d = tmp.path().join("run");
        fs::create_dir_all(&d).expect("mkdir");
        if confirm {
            fs::create_dir_all(d.join("confirm")).expect("mkdir");
        }
        let w = Watchdog {
            dir: d.display().to_string(),
            profile: "/profile".into(),
            new: system(tmp.path(), "new", code, &log),
            old: system(tmp.path(), "old", 0, &log),
            old_generation: Some(7),
            window_secs: 2,
            activation_secs: 10,
        };
        let path = format!("{}:{}", fake_bin.display(), std::env::var("PATH").unwrap_or_default());
        let status = Command::new("sh").arg("-c").arg(w.script()).env("PATH", path).status().expect("sh");
        assert!(status.success());
        let state = fs::read_to_string(d.join("state")).expect("state");
        (state.trim().to_owned(), fs::read_to_string(&log).unwrap_or_default())
    }

    #[test]
    fn without_confirmation_the_watchdog_restores_the_previous_generation() {
        let (state, calls) = run_watchdog(0, false);
        assert_eq!(state, "rolled-back 0");
        assert_eq!(calls, "new test\nnix-env -p /profile --switch-generation 7\nold switch\n");
    }

    #[test]
    fn a_confirmation_keeps_the_new_generation() {
        let (state, calls) = run_watchdog(0, true);
        assert_eq!(state, "confirmed");
        assert_eq!(calls, "new test\n");
    }

    #[test]
    fn launch_uses_setsid_without_systemd() {
        let w = Watchdog {
            dir: "/run/fleetgate/runs/r".into(),
            profile: paths::PROFILE.into(),
            new: "/nix/store/n".into(),
            old: "/nix/store/o".into(),
            old_generation: None,
            window_secs: 60,
            activation_secs: 600,
        };
        let s = w.launch_script("fleetgate-watchdog-r");
        assert!(s.contains("systemd-run --unit=fleetgate-watchdog-r") && s.contains("setsid sh"), "{s}");
        assert!(w.script().contains("nix-env -p \"$profile\" --set \"$old\""));
    }
}
