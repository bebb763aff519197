//! The opening round trip on a host: take the deploy lock and, only once it
//! is ours, read everything the deploy decides on before it changes anything
//! — the pending intent, `systemctl is-system-running` (the health baseline)
//! and what a caller's read-only script prints (the facts) — in ONE script
//! over the shared connection, where it took four (issue 15: a round trip
//! costs a mux client here and a shell there, ~17 per host before).
//!
//! What the script prints, in order (the parser relies on nothing else):
//!
//! ```text
//! held <owner line>                      (and nothing more: the lock is not ours)
//! acquired
//! intent absent | intent unreadable | intent elsewhere | intent-hex (then `od -An -v -tx1` lines) … intent-end
//! state=<systemctl is-system-running>
//! @@fleetgate-extra
//! <the caller's script's stdout>
//! @@fleetgate-extra-status <its exit status>
//! @@fleetgate-released                   (only with a `Release` that held)
//! ```
//!
//! With a [`Release`], a host already where the deploy would put it (running
//! and profile on that system, booted too if asked, no pending intent) has
//! its lock released by the same script: an up-to-date host costs one round
//! trip (issue 15). The caller must take the lock again (open again) before
//! it changes anything on a host whose opening says [`Opening::released`].
//!
//! The intent travels hex-encoded, so no byte of it (hostile or truncated) can
//! be taken for a marker (`intent elsewhere`: the running system has no `od`,
//! so [`ScriptMachine::open`] reads the intent with a round trip of its own,
//! as [`crate::machine::Machine::read_intent`] does); the caller's output is framed by the last status
//! line. Each part runs with stdin from `/dev/null` (the script itself comes
//! on stdin). Reading is bounded: at most [`crate::intent::MAX_BYTES`] + 1
//! bytes of the intent.

use std::time::Duration;

use fleetgate_transport::shell_quote as q;

use crate::intent::{self, PendingIntent};
use crate::machine::{LockError, MachineError};
use crate::remote::{Connector, ScriptMachine, failed};
use crate::scripts::{LOCK, Layout};

/// What the opening round trip read, the lock being ours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opening {
    /// The pending intent of a verified reboot (`None`: there is none).
    pub intent: Result<Option<PendingIntent>, MachineError>,
    /// `systemctl is-system-running` (`unknown` when it cannot say).
    pub system_state: String,
    /// The caller's script: what it printed on stdout, and its exit status.
    pub extra: Extra,
    /// The script released the lock again (see [`Release`]).
    pub released: bool,
}

/// When the opening releases the lock it took: the host runs `system`, its
/// profile is on it, it booted it too when `booted`, and no reboot is pending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Release<'a> {
    /// The system the deploy would put the host on.
    pub system: &'a str,
    /// Whether it must also have booted it.
    pub booted: bool,
}

/// What the caller's script gave.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extra {
    /// Its stdout.
    pub stdout: String,
    /// Its exit status (`None`: the script was cut before it ended).
    pub status: Option<i32>,
    /// The stderr of the whole opening script.
    pub stderr: String,
}

const EXTRA_BEGIN: &str = "@@fleetgate-extra";
const EXTRA_STATUS: &str = "@@fleetgate-extra-status ";
const RELEASED: &str = "@@fleetgate-released";
/// What [`parse`] says of an intent the script left to a read of its own.
const ELSEWHERE: &str = "the pending intent is read on its own (no od on the host)";

/// The opening script: lock for `owner` (again if a line starting with
/// `mine` owns it), then the reads, then `extra`, then the [`Release`].
#[must_use]
pub fn script(layout: &Layout, owner: &str, mine: &str, extra: &str, release: Option<Release<'_>>) -> String {
    let release = release.map_or_else(String::new, |r| {
        let resolved =
            |link: &str| format!("\"$(cd -P {} 2>/dev/null && pwd -P)\" = {}", q(&layout.at(link)), q(r.system));
        format!(
            "if [ ! -e \"$f\" ] && [ {cur} ] && [ {profile} ]{booted}; then rm -rf {lock} && echo {RELEASED}; fi\n",
            cur = resolved("/run/current-system"),
            profile = resolved(crate::scripts::PROFILE),
            booted = if r.booted { format!(" && [ {} ]", resolved("/run/booted-system")) } else { String::new() },
            lock = q(&layout.at(LOCK)),
        )
    });
    format!(
        "{lock}f={intent}\n\
         if [ ! -e \"$f\" ]; then echo 'intent absent'\n\
         elif ! command -v od >/dev/null 2>&1; then echo 'intent elsewhere'\n\
         elif x=$(head -c {max} \"$f\" </dev/null | od -An -v -tx1); then printf 'intent-hex\\n%s\\nintent-end\\n' \"$x\"\n\
         else echo 'intent unreadable'; fi\n\
         echo \"state=$(systemctl is-system-running 2>/dev/null </dev/null)\"\n\
         echo {EXTRA_BEGIN}\n\
         (\n:\n{extra}\n) </dev/null\n\
         echo \"{EXTRA_STATUS}$?\"\n{release}",
        lock = layout.lock(owner, mine),
        intent = q(&layout.at(intent::PATH)),
        max = intent::MAX_BYTES + 1,
    )
}

/// Reads what [`script`] printed.
///
/// # Errors
/// [`LockError::Held`] when another run holds the lock;
/// [`LockError::Machine`] when the output is not the script's.
pub fn parse(stdout: &str, stderr: &str) -> Result<Opening, LockError> {
    parse_saying_where(stdout, stderr).map(|(opening, _)| opening)
}

/// Where the pending intent is to be read: in the opening's output, or
/// (`intent elsewhere`: the running system has no `od`) by a read of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IntentIs {
    Here,
    Elsewhere,
}

/// [`parse`], and whether the script left the intent to a read of its own
/// (then [`Opening::intent`] is an error naming that).
fn parse_saying_where(stdout: &str, stderr: &str) -> Result<(Opening, IntentIs), LockError> {
    let mut lines = stdout.split_inclusive('\n');
    match lines.next().map(str::trim_end) {
        Some("acquired") => {}
        Some(held) if held.starts_with("held") => {
            let o = held["held".len()..].trim();
            return Err(LockError::Held {
                owner: if o.is_empty() { "owner unknown".to_owned() } else { o.to_owned() },
            });
        }
        _ => {
            return Err(LockError::Machine(MachineError::Failed(format!(
                "the deploy lock script said {stdout:.200?}"
            ))));
        }
    }
    let intent_line = lines.next().map(str::trim_end);
    let intent_is = if intent_line == Some("intent elsewhere") { IntentIs::Elsewhere } else { IntentIs::Here };
    let intent = match intent_line {
        Some("intent absent") => Ok(None),
        Some("intent elsewhere") => Err(MachineError::Cannot(ELSEWHERE.to_owned())),
        Some("intent-hex") => {
            let mut hex = String::new();
            let mut ended = false;
            for line in lines.by_ref() {
                if line.trim_end() == "intent-end" {
                    ended = true;
                    break;
                }
                hex.push_str(line);
            }
            if ended {
                intent_from_hex(&hex)
            } else {
                Err(MachineError::Failed("the pending intent was cut short".into()))
            }
        }
        _ => Err(MachineError::Failed(format!("{} cannot be read", intent::PATH))),
    };
    let system_state = lines
        .next()
        .and_then(|l| l.trim_end().strip_prefix("state="))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .unwrap_or("unknown")
        .to_owned();
    let rest: String = lines.collect();
    let extra = match rest.strip_prefix(EXTRA_BEGIN).and_then(|r| r.strip_prefix('\n')) {
        None => Extra { stdout: String::new(), status: None, stderr: stderr.to_owned() },
        Some(body) => match body.rfind(&format!("\n{EXTRA_STATUS}")).map(|i| i + 1).or_else(|| {
            // The caller's script printed nothing at all.
            body.starts_with(EXTRA_STATUS).then_some(0)
        }) {
            Some(i) => Extra {
                stdout: body[..i].to_owned(),
                status: body[i + EXTRA_STATUS.len()..].lines().next().unwrap_or_default().trim().parse().ok(),
                stderr: stderr.to_owned(),
            },
            None => Extra { stdout: body.to_owned(), status: None, stderr: stderr.to_owned() },
        },
    };
    let released = stdout.lines().last() == Some(RELEASED);
    Ok((Opening { intent, system_state, extra, released }, intent_is))
}

fn intent_from_hex(hex: &str) -> Result<Option<PendingIntent>, MachineError> {
    let mut bytes = Vec::new();
    for pair in hex.split_whitespace() {
        let b = u8::from_str_radix(pair, 16)
            .map_err(|_| MachineError::Failed(format!("{} came back garbled ({pair:?})", intent::PATH)))?;
        bytes.push(b);
    }
    if bytes.len() as u64 > intent::MAX_BYTES {
        return Err(MachineError::Failed(format!("{} is larger than {} bytes", intent::PATH, intent::MAX_BYTES)));
    }
    crate::remote::intent_from_bytes(&bytes).map(Some)
}

impl<C: Connector> ScriptMachine<C> {
    /// Takes the deploy lock for `owner_run` and reads what the deploy
    /// decides on, running `extra` (read-only, e.g. the facts script) last
    /// — one round trip. The caller releases the lock with
    /// [`crate::machine::Machine::unlock`] as after
    /// [`crate::machine::Machine::lock`].
    ///
    /// # Errors
    /// [`LockError`] as [`crate::machine::Machine::lock`].
    pub fn open(
        &mut self,
        owner_run: &str,
        extra: &str,
        extra_timeout: Duration,
        release: Option<Release<'_>>,
    ) -> Result<Opening, LockError> {
        let owner = crate::scripts::lock_owner(owner_run);
        let script = script(&self.layout, &owner, &format!("run={owner_run} "), extra, release);
        let o = self.run(&script, None, self.timeouts.command + extra_timeout)?;
        if o.status != Some(0) && !o.stdout_text().starts_with("acquired") {
            return Err(LockError::Machine(failed("taking the deploy lock", &o)));
        }
        let (mut opening, intent_is) = parse_saying_where(&o.stdout_text(), &String::from_utf8_lossy(&o.stderr))?;
        if intent_is == IntentIs::Elsewhere {
            opening.intent = crate::machine::Machine::read_intent(self);
        }
        Ok(opening)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> String {
        s.bytes().map(|b| format!(" {b:02x}")).collect::<Vec<_>>().chunks(16).map(|c| c.concat() + "\n").collect()
    }

    #[test]
    fn held_lock_stops_at_the_first_line() {
        let e = parse("held run=other by=ops@box pid=7\n", "").expect_err("held");
        assert_eq!(e, LockError::Held { owner: "run=other by=ops@box pid=7".into() });
        assert_eq!(parse("held\n", "").expect_err("held"), LockError::Held { owner: "owner unknown".into() });
        assert!(matches!(parse("", ""), Err(LockError::Machine(MachineError::Failed(_)))));
    }

    #[test]
    fn every_part_is_read() {
        let out = "acquired\nintent absent\nstate=degraded\n@@fleetgate-extra\nkernel\t6.1\nend\n@@fleetgate-extra-status 0\n";
        let o = parse(out, "warn\n").expect("parsed");
        assert_eq!(o.intent, Ok(None));
        assert_eq!(o.system_state, "degraded");
        assert_eq!(o.extra, Extra { stdout: "kernel\t6.1\nend\n".into(), status: Some(0), stderr: "warn\n".into() });
        assert!(!o.released);
        let o = parse(&format!("{out}@@fleetgate-released\n"), "").expect("parsed");
        assert_eq!((o.extra.status, o.released), (Some(0), true));
        // Nothing printed by the caller's script, and an empty state.
        let o = parse("acquired\nintent absent\nstate=\n@@fleetgate-extra\n@@fleetgate-extra-status 3\n", "")
            .expect("parsed");
        assert_eq!((o.system_state.as_str(), o.extra.stdout.as_str(), o.extra.status), ("unknown", "", Some(3)));
        // Cut before the caller's script ended: no status.
        let o = parse("acquired\nintent absent\nstate=running\n@@fleetgate-extra\nkernel\t6.1\n", "").expect("parsed");
        assert_eq!((o.extra.stdout.as_str(), o.extra.status), ("kernel\t6.1\n", None));
    }

    #[test]
    fn the_intent_travels_in_hex_and_bad_ones_are_errors_not_absence() {
        let i = PendingIntent {
            format: intent::FORMAT,
            run_id: "r1".into(),
            new: "/nix/store/n".into(),
            fallback: "/nix/store/f".into(),
            fallback_generation: Some(4),
            boot_id_before: "b1".into(),
            deadline_unix: 1_700_000_300,
            verified: crate::intent::Verified::default(),
        };
        // Markers inside the intent's bytes cannot frame anything.
        let out = format!(
            "acquired\nintent-hex\n{}intent-end\nstate=running\n@@fleetgate-extra\n@@fleetgate-extra-status 0\n",
            hex(&i.to_json())
        );
        assert_eq!(parse(&out, "").expect("parsed").intent, Ok(Some(i)));
        for bad in [
            format!("acquired\nintent-hex\n{}intent-end\nstate=running\n", hex("{\"format\": 1, \"run")),
            format!("acquired\nintent-hex\n{}intent-end\nstate=running\n", hex(&"x".repeat(70_000))),
            "acquired\nintent-hex\n 7b zz\nintent-end\n".to_owned(),
            "acquired\nintent-hex\n 7b\n".to_owned(),
            "acquired\nintent unreadable\nstate=running\n".to_owned(),
        ] {
            let o = parse(&bad, "").expect("the lock is ours");
            assert!(matches!(o.intent, Err(MachineError::Failed(_))), "{bad:.80}: {:?}", o.intent);
        }
    }
}
