//! The POSIX sh scripts run on a host ([`crate::remote::ScriptMachine`] runs
//! them with an empty environment, `/usr/bin/env -i /bin/sh -s`). Each sets its own `PATH` from the
//! `sw/bin` of the systems it acts on (on NixOS: coreutils, nix, systemd,
//! util-linux are in the system path), never from what it inherits: a unit
//! started by `systemd-run` has no coreutils on its search path
//! (nixpkgs#261691). Reading state uses shell builtins only.
//!
//! Every absolute path goes through a [`Layout`], so that the unit tests run
//! the real scripts with `sh` and `PATH=/nonexistent` against a host laid out
//! in a temporary directory.

use std::time::Duration;

use fleetgate_transport::shell_quote as q;

use crate::machine::{Awaited, WatchdogSpec};

/// Where things are on the host: `root` is prefixed to every absolute path
/// (empty on a real host).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Layout {
    /// The prefix.
    pub root: String,
}

/// The system profile.
pub const PROFILE: &str = "/nix/var/nix/profiles/system";
/// fleetgate's runtime directory (tmpfs: gone after a reboot).
pub const RUN_DIR: &str = "/run/fleetgate";
/// The deploy lock.
pub const LOCK: &str = "/run/fleetgate/lock";
/// A run's watchdog directory (`{run}` replaced), relative to the layout.
pub const RUN_DIR_REL: &str = "/run/fleetgate/runs/{run}";
/// fleetgate's persistent directory.
pub const STATE_DIR: &str = "/var/lib/fleetgate";
/// GC roots fleetgate keeps.
pub const GCROOTS: &str = "/nix/var/nix/gcroots/fleetgate";
/// The last generation that booted healthy.
pub const LAST_GOOD: &str = "/nix/var/nix/gcroots/fleetgate/last-good";
/// The line [`Layout::install_boot_then_confirm`] prints once the new system
/// is the boot default.
pub const DEFAULT_MADE: &str = "fleetgate-default-made";
/// The line [`Layout::set_profile_then_launch`] prints once the profile is set.
pub const PROFILE_SET: &str = "fleetgate-profile-set";
/// The line after which [`Layout::look_watchdog_when`] prints [`Layout::state`].
pub const STATE_FOLLOWS: &str = "fleetgate-state-follows";

impl Layout {
    /// `path` on the host.
    #[must_use]
    pub fn at(&self, path: &str) -> String {
        format!("{}{path}", self.root)
    }

    /// `PATH=…; export PATH` from the `sw/bin` of `systems`, then the running
    /// system's.
    #[must_use]
    pub fn tools(&self, systems: &[&str]) -> String {
        let mut dirs: Vec<String> = systems.iter().map(|s| format!("{s}/sw/bin")).collect();
        dirs.push(self.at("/run/current-system/sw/bin"));
        format!("PATH={}; export PATH\n", q(&dirs.join(":")))
    }

    /// The watchdog's directory.
    #[must_use]
    pub fn run_dir(&self, run_id: &str) -> String {
        self.at(&RUN_DIR_REL.replace("{run}", run_id))
    }

    /// Prints `current=`, `booted=`, `link=`, `profile=`, `boot_id=` lines.
    /// A system is a directory, so `cd -P` (a builtin) resolves its link as
    /// `readlink -f` would; only the profile's own link needs `readlink`.
    #[must_use]
    pub fn state(&self) -> String {
        format!(
            "{tools}echo \"current=$(cd -P {cur} 2>/dev/null && pwd -P)\"\n\
             echo \"booted=$(cd -P {booted} 2>/dev/null && pwd -P)\"\n\
             echo \"link=$(readlink {profile})\"\necho \"profile=$(cd -P {profile} 2>/dev/null && pwd -P)\"\n\
             b=; read -r b < {boot_id}; echo \"boot_id=$b\"\n",
            tools = self.tools(&[]),
            cur = q(&self.at("/run/current-system")),
            booted = q(&self.at("/run/booted-system")),
            profile = q(&self.at(PROFILE)),
            boot_id = q(&self.at("/proc/sys/kernel/random/boot_id")),
        )
    }

    /// `nix-env -p <profile> --set <system>`, then prints the profile link.
    #[must_use]
    pub fn set_profile(&self, system: &str) -> String {
        format!(
            "set -e\n{tools}nix-env -p {p} --set {s} >&2\nreadlink {p}\n",
            tools = self.tools(&[system]),
            p = q(&self.at(PROFILE)),
            s = q(system)
        )
    }

    /// Points the profile back at `generation` (or at `system`).
    #[must_use]
    pub fn restore_profile(&self, generation: Option<u64>, system: &str) -> String {
        let p = q(&self.at(PROFILE));
        let cmd = match generation {
            Some(n) => format!("nix-env -p {p} --switch-generation {n} >&2"),
            None => format!("nix-env -p {p} --set {} >&2", q(system)),
        };
        format!("set -e\n{}{cmd}\n", self.tools(&[system]))
    }

    /// `<system>/bin/switch-to-configuration boot`.
    #[must_use]
    pub fn install_boot(&self, system: &str) -> String {
        format!("{}{}/bin/switch-to-configuration boot 2>&1\n", self.tools(&[system]), q(system))
    }

    /// [`Layout::set_profile`] to `w.new`, then (only if it succeeded) prints
    /// [`PROFILE_SET`] and [`Layout::launch_watchdog`]: one round trip.
    #[must_use]
    pub fn set_profile_then_launch(&self, w: &WatchdogSpec) -> String {
        format!("(\n{}) || exit $?\necho {PROFILE_SET}\n{}", self.set_profile(&w.new), self.launch_watchdog(w))
    }

    /// [`Layout::install_boot`], then (only if it succeeded) prints
    /// [`DEFAULT_MADE`] and [`Layout::flag_watchdog`] `confirm`: one login.
    #[must_use]
    pub fn install_boot_then_confirm(&self, system: &str, run_id: &str) -> String {
        format!(
            "(\n{}) || exit $?\necho {DEFAULT_MADE}\n{}",
            self.install_boot(system),
            self.flag_watchdog(run_id, "confirm")
        )
    }

    /// The watchdog (see [`crate::switch`]). States in `$d/state`: `armed`
    /// (written by the launcher), `refused <why>`, `activating`, `waiting`
    /// (with `$d/activate.status`), `confirmed`, `rolling-back`,
    /// `rolled-back <status>`, `cancelled`. `mkdir $d/started` is the one
    /// atomic decision between the watchdog beginning and a cancel.
    #[must_use]
    pub fn watchdog(&self, w: &WatchdogSpec) -> String {
        let restore = match w.old_generation {
            Some(n) => format!("nix-env -p \"$profile\" --switch-generation {n}"),
            None => "nix-env -p \"$profile\" --set \"$old\"".to_owned(),
        };
        format!(
            r#"# fleetgate magic rollback watchdog
d={dir}
profile={profile}
new={new}
old={old}
PATH="$old/sw/bin:$new/sw/bin"; export PATH
state() {{ echo "$1" > "$d/state.tmp" && mv -f "$d/state.tmp" "$d/state"; }}
for tool in mkdir mv sleep timeout nix-env; do
  # Written whole, as every state, so that fleetgate never reads a half-written one; without mv, directly.
  command -v "$tool" >/dev/null 2>&1 || {{
    state "refused $tool is not in $PATH" 2>/dev/null || echo "refused $tool is not in $PATH" > "$d/state"
    exit 0
  }}
done
mkdir "$d/started" 2>/dev/null || exit 0
rollback() {{
  state rolling-back
  {restore} > "$d/rollback.log" 2>&1
  NIXOS_NO_CHECK=1 "$old/bin/switch-to-configuration" switch >> "$d/rollback.log" 2>&1
  state "rolled-back $?"
  exit 0
}}
state activating
timeout {activation} "$new/bin/switch-to-configuration" test > "$d/activate.log" 2>&1
echo $? > "$d/activate.status"
# The flag files decide; the FIFO only wakes the watchdog: opened read-write
# it never blocks an opener, and whatever is written to it while fd 3 is open
# waits to be read. A timer writes `timeout` at the deadline. Without mkfifo
# it looks every second.
timer=
if command -v mkfifo >/dev/null 2>&1 && mkfifo "$d/wake" 2>/dev/null && command exec 3<>"$d/wake"; then
  (
    trap 'kill "$s" 2>/dev/null; exit 0' TERM
    sleep {window} & s=$!
    wait "$s" && echo timeout >&3
  ) </dev/null >/dev/null 2>&1 &
  timer=$!
  await() {{ read -r msg <&3 || msg=timeout; }}
else
  i=0
  await() {{ sleep 1; i=$((i + 1)); [ "$i" -lt {window} ] || msg=timeout; }}
fi
stop_timer() {{ [ -z "$timer" ] || kill "$timer" 2>/dev/null || :; }}
msg=
state waiting
while :; do
  if [ -e "$d/confirm" ]; then stop_timer; state confirmed; exit 0; fi
  if [ -e "$d/rollback" ]; then stop_timer; rollback; fi
  if [ "$msg" = timeout ]; then rollback; fi
  await
done
"#,
            dir = q(&self.run_dir(&w.run_id)),
            profile = q(&self.at(PROFILE)),
            new = q(&w.new),
            old = q(&w.old),
            activation = w.activation.as_secs().max(10),
            window = w.window.as_secs().max(5),
        )
    }

    /// Writes the watchdog and its state `armed`, then starts it detached
    /// from the session (a transient unit where systemd is PID 1, else
    /// `setsid`); prints how.
    #[must_use]
    pub fn launch_watchdog(&self, w: &WatchdogSpec) -> String {
        format!(
            "set -e\n{tools}d={d}\nmkdir -p \"$d\"\nchmod 700 \"$d\"\ncat > \"$d/watchdog.sh\" <<'FLEETGATE_WATCHDOG'\n{script}FLEETGATE_WATCHDOG\n\
             echo armed > \"$d/state\"\n\
             if [ -d {systemd} ] && command -v systemd-run >/dev/null 2>&1; then\n\
             \x20 systemd-run --unit={unit} --description='fleetgate magic rollback' --collect --no-block --quiet /bin/sh \"$d/watchdog.sh\"\n\
             \x20 echo systemd-run\n\
             else\n\
             \x20 setsid /bin/sh \"$d/watchdog.sh\" </dev/null >/dev/null 2>&1 &\n\
             \x20 echo setsid\n\
             fi\n",
            tools = self.tools(&[&w.old, &w.new]),
            d = q(&self.run_dir(&w.run_id)),
            script = self.watchdog(w),
            systemd = q(&self.at("/run/systemd/system")),
            unit = q(&format!("fleetgate-watchdog-{}", w.run_id)),
        )
    }

    /// Prints the watchdog's state, its activation status and the boot id
    /// (builtins only).
    #[must_use]
    pub fn look_watchdog(&self, run_id: &str) -> String {
        format!(
            "d={d}\ns=missing; [ -f \"$d/state\" ] && read -r s < \"$d/state\"\necho \"$s\"\n\
             c=none; [ -f \"$d/activate.status\" ] && read -r c < \"$d/activate.status\"\necho \"$c\"\n\
             b=; read -r b < {boot_id}; echo \"$b\"\n",
            d = q(&self.run_dir(run_id)),
            boot_id = q(&self.at("/proc/sys/kernel/random/boot_id")),
        )
    }

    /// Waits on the host while the watchdog is short of what `until` awaits
    /// (a look every 50 ms, at most `wait`; without a `sleep` that takes
    /// fractions it does not wait), then [`Layout::look_watchdog`]; for
    /// [`Awaited::End`], once the watchdog has ended, [`STATE_FOLLOWS`] and
    /// [`Layout::state`] after it.
    #[must_use]
    pub fn look_watchdog_when(&self, run_id: &str, until: Awaited, wait: Duration) -> String {
        let (short_of, then) = match until {
            Awaited::ActivationEnd => ("armed|activating", String::new()),
            Awaited::End => (
                "armed|activating|waiting|rolling-back",
                format!(
                    "case \"$s\" in armed|activating|waiting|rolling-back) ;; *) echo {STATE_FOLLOWS}\n{}esac\n",
                    self.state()
                ),
            ),
        };
        format!(
            "{tools}d={d}\nn={ticks}\nwhile [ \"$n\" -gt 0 ]; do\n\
             \x20 s=missing; [ -f \"$d/state\" ] && read -r s < \"$d/state\"\n\
             \x20 case \"$s\" in {short_of}) ;; *) break ;; esac\n\
             \x20 sleep 0.05 </dev/null 2>/dev/null || break\n\
             \x20 n=$((n - 1))\ndone\n{look}{then}",
            tools = self.tools(&[]),
            d = q(&self.run_dir(run_id)),
            ticks = wait.as_millis() / 50,
            look = self.look_watchdog(run_id),
        )
    }

    /// Cancels a watchdog that has not begun; prints `cancelled` or `running`.
    #[must_use]
    pub fn cancel_watchdog(&self, run_id: &str) -> String {
        format!(
            "{tools}d={d}\nif mkdir \"$d/started\" 2>/dev/null; then echo cancelled > \"$d/state\"; echo cancelled; else echo running; fi\n",
            tools = self.tools(&[]),
            d = q(&self.run_dir(run_id)),
        )
    }

    /// Creates `$d/<flag>` (`confirm`, `rollback`) with a builtin.
    #[must_use]
    pub fn flag_watchdog(&self, run_id: &str, flag: &str) -> String {
        // The flag file first, then a wake-up on the watchdog's FIFO if it
        // has one (`<>` never blocks; `[ -p ]` keeps it from creating a file).
        format!(
            "d={}\n[ -d \"$d\" ] || exit 3\n: > \"$d/{flag}\" || exit 4\n\
             if [ -p \"$d/wake\" ]; then command exec 4<>\"$d/wake\" && echo {flag} >&4; fi\nexit 0\n",
            q(&self.run_dir(run_id))
        )
    }

    /// Reboots, detached, a second later (so the session can end first).
    #[must_use]
    pub fn reboot(&self) -> String {
        format!(
            "{}setsid /bin/sh -c 'sleep 1; systemctl reboot || reboot' </dev/null >/dev/null 2>&1 &\necho ok\n",
            self.tools(&[])
        )
    }

    /// The boot id (builtins only).
    #[must_use]
    pub fn boot_id(&self) -> String {
        format!("b=; read -r b < {}; echo \"$b\"\n", q(&self.at("/proc/sys/kernel/random/boot_id")))
    }

    /// Writes stdin to `path` atomically (same directory, rename).
    #[must_use]
    pub fn write_file(&self, path: &str, mode: &str) -> String {
        format!(
            "set -e\n{tools}f={f}\nmkdir -p \"${{f%/*}}\"\nt=\"$f.tmp.$$\"\numask 077\ncat > \"$t\"\nchmod {mode} \"$t\"\nmv -f \"$t\" \"$f\"\n",
            tools = self.tools(&[]),
            f = q(&self.at(path)),
        )
    }

    /// Prints a file (at most `max` bytes), or exits 3 when it is absent.
    #[must_use]
    pub fn read_file(&self, path: &str, max: u64) -> String {
        format!("{}f={}\n[ -e \"$f\" ] || exit 3\nhead -c {max} \"$f\"\n", self.tools(&[]), q(&self.at(path)))
    }

    /// Removes a file.
    #[must_use]
    pub fn remove_file(&self, path: &str) -> String {
        format!("{}rm -f {}\n", self.tools(&[]), q(&self.at(path)))
    }

    /// Takes the lock for `owner` (again if a line starting with `mine` owns
    /// it) and prints `acquired`; else prints `held <owner line>` and exits 0.
    /// A script may go on after it: what follows runs only with the lock held
    /// ([`crate::opening`] does).
    #[must_use]
    pub fn lock(&self, owner: &str, mine: &str) -> String {
        format!(
            "{tools}mkdir -p {dir} </dev/null\n\
             if mkdir {lock} 2>/dev/null </dev/null; then echo {owner} > {lock}/owner\n\
             else\n\
             \x20 o=; [ -f {lock}/owner ] && read -r o < {lock}/owner\n\
             \x20 case \"$o\" in {mine}*) ;; *) echo \"held $o\"; exit 0 ;; esac\n\
             fi\n\
             echo acquired\n",
            tools = self.tools(&[]),
            dir = q(&self.at(RUN_DIR)),
            lock = q(&self.at(LOCK)),
            owner = q(owner),
            mine = q(mine),
        )
    }

    /// Releases the lock if a line starting with `mine` owns it.
    #[must_use]
    pub fn unlock(&self, mine: &str) -> String {
        format!(
            "{tools}o=; [ -f {lock}/owner ] && read -r o < {lock}/owner\ncase \"$o\" in {mine}*) rm -rf {lock} ;; esac\n",
            tools = self.tools(&[]),
            lock = q(&self.at(LOCK)),
            mine = q(mine),
        )
    }

    /// Keeps `system` from garbage collection as the last good generation.
    #[must_use]
    pub fn record_last_good(&self, system: &str) -> String {
        format!(
            "set -e\n{tools}mkdir -p {dir}\nln -sfn {new} {link}.tmp\nmv -Tf {link}.tmp {link}\n",
            tools = self.tools(&[]),
            dir = q(&self.at(GCROOTS)),
            new = q(system),
            link = q(&self.at(LAST_GOOD)),
        )
    }
}

/// The lock owner line: `run=<id> by=<user>@<machine> pid=<pid>`.
#[must_use]
pub fn lock_owner(run_id: &str) -> String {
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".to_owned());
    let machine = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    format!("run={run_id} by={user}@{} pid={}", machine.trim(), std::process::id())
}

/// A duration in whole seconds, at least 1.
#[must_use]
pub fn secs(d: Duration) -> u64 {
    d.as_secs().max(1)
}
