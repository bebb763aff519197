//! A target reached as a user who is not root: nixos-anywhere's `sudo`/`doas`
//! path.
//!
//! nixos-anywhere (`src/nixos-anywhere.sh`, `importFacts`, with the facts of
//! `src/get-facts.sh`): root runs everything as is; otherwise `sudo` if the
//! target has it, else `doas`, else it aborts ("Could not find `sudo` or
//! `doas`"). Before the kexec it runs the kexec tarball's `run` through it
//! (`TMPDIR=… ${maybeSudo} setsid --wait …/kexec/run`), and nixos-images'
//! `run` (`nix/kexec-installer/kexec-run.sh`) gives the installer's root the
//! keys of `$SUDO_USER` (or `$DOAS_USER`). After the kexec it connects as
//! `root@host` ("After kexec we explicitly set the user to root@"), and a
//! run without the `kexec` phase, or one that finds an installer, goes on as
//! `root@host` too.
//!
//! The same here, with two differences: the escalation is non-interactive
//! (`sudo -n`, `doas -n`: one that asks for a password is refused up front,
//! naming the fix, instead of hanging on a prompt nobody answers), and every
//! command fleetgate runs in the old OS goes through it — facts, staging the
//! tarball under `/root/kexec`, `run` — so the old OS's facts are read as
//! root, as they are for `ssh://root@…`. "An installer" is one fleetgate
//! started: its `fleetgate.install=` marker in `/proc/cmdline`.

use std::time::Duration;

use fleetgate_transport::{Output, Transport, TransportError};

use crate::kexec::MARKER_PARAM;
use crate::remote_scripts::{failed, transport_error};
use crate::target::{Look, TargetError};

/// How commands gain root on the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Escalation {
    /// The login user is root.
    Root,
    /// `sudo -n` (preferred when both exist, as nixos-anywhere).
    Sudo,
    /// `doas -n` (OpenBSD's, Debian's `opendoas`).
    Doas,
}

impl Escalation {
    /// The words put before every command.
    #[must_use]
    pub fn prefix(self) -> &'static [&'static str] {
        match self {
            Escalation::Root => &[],
            Escalation::Sudo => &["sudo", "-n", "--"],
            Escalation::Doas => &["doas", "-n", "--"],
        }
    }
}

/// What the probe found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reached {
    /// Go on as this user, escalating so.
    AsLoginUser(Escalation),
    /// An installer fleetgate started: go on as `root@host` (its `run` gave
    /// root the login user's keys).
    InstallerAsRoot,
}

/// Asked once over the login user's connection (nixos-anywhere's
/// `get-facts.sh`: `isRoot`, `hasSudo`, `hasDoas`), with whether each one
/// works without a password, and whether this is an installer fleetgate
/// started.
pub(crate) fn probe_script() -> String {
    format!(
        "PATH=/run/wrappers/bin:/run/current-system/sw/bin:/usr/bin:/bin:/usr/sbin:/sbin; export PATH\n\
         printf 'uid\\t%s\\n' \"$(id -u)\"\n\
         for tool in sudo doas; do\n  command -v \"$tool\" >/dev/null 2>&1 || continue\n  \
           if \"$tool\" -n true </dev/null >/dev/null 2>&1; then printf '%s\\tworks\\n' \"$tool\"; \
           else printf '%s\\tasks\\n' \"$tool\"; fi\ndone\n\
         case \" $(cat /proc/cmdline) \" in *' {MARKER_PARAM}='*) printf 'installer\\tyes\\n' ;; esac\nexit 0\n"
    )
}

/// Judges the probe's output for the login user `user`.
///
/// # Errors
/// [`TargetError::Cannot`] when the user cannot become root without a
/// password prompt (nothing has been touched), [`TargetError::Failed`] for
/// output that is not the probe's.
pub fn judge(user: &str, text: &str) -> Result<Reached, TargetError> {
    let mut uid = None;
    let (mut sudo, mut doas, mut installer) = (None, None, false);
    for line in text.lines() {
        match line.split_once('\t') {
            Some(("uid", v)) => uid = v.trim().parse::<u32>().ok(),
            Some(("sudo", v)) => sudo = Some(v.trim() == "works"),
            Some(("doas", v)) => doas = Some(v.trim() == "works"),
            Some(("installer", _)) => installer = true,
            _ => {}
        }
    }
    let uid = uid.ok_or_else(|| TargetError::Failed(format!("asking {user}'s uid on the target gave no answer")))?;
    if uid == 0 {
        return Ok(Reached::AsLoginUser(Escalation::Root));
    }
    if installer {
        return Ok(Reached::InstallerAsRoot);
    }
    match (sudo, doas) {
        (Some(true), _) => Ok(Reached::AsLoginUser(Escalation::Sudo)),
        (_, Some(true)) => Ok(Reached::AsLoginUser(Escalation::Doas)),
        (None, None) => Err(TargetError::Cannot(format!(
            "{user} is not root and the target has neither sudo nor doas (nixos-anywhere needs one too): \
             install one, or use ssh://root@…"
        ))),
        _ => Err(TargetError::Cannot(format!(
            "{user} is not root and {} asks for a password; fleetgate runs without a terminal: allow {user} \
             without one (sudoers `{user} ALL=(ALL:ALL) NOPASSWD: ALL`, doas.conf `permit nopass {user}`), \
             or use ssh://root@…",
            if sudo.is_some() { "sudo" } else { "doas" }
        ))),
    }
}

/// A transport whose every command runs as root through [`Escalation`];
/// [`Transport::upload`] and [`Transport::read_file`] are built on `run`, so
/// they escalate too.
pub struct Elevated<T> {
    inner: T,
    how: Escalation,
}

impl<T: Transport> Elevated<T> {
    /// `inner`, escalating with `how`.
    pub fn new(inner: T, how: Escalation) -> Elevated<T> {
        Elevated { inner, how }
    }

    /// The transport underneath, as the login user.
    pub fn inner(&self) -> &T {
        &self.inner
    }

    /// How it escalates.
    pub fn how(&self) -> Escalation {
        self.how
    }
}

impl<T: Transport> Transport for Elevated<T> {
    fn describe(&self) -> String {
        match self.how {
            Escalation::Root => self.inner.describe(),
            Escalation::Sudo => format!("{} (sudo)", self.inner.describe()),
            Escalation::Doas => format!("{} (doas)", self.inner.describe()),
        }
    }

    fn run(&self, argv: &[&str], stdin: Option<&[u8]>, timeout: Duration) -> Result<Output, TransportError> {
        let mut words: Vec<&str> = self.how.prefix().to_vec();
        words.extend_from_slice(argv);
        self.inner.run(&words, stdin, timeout)
    }
}

/// Probes the login user's connection and judges it.
///
/// # Errors
/// As [`judge`]; a connection that fails is [`TargetError::Lost`].
pub fn probe(transport: &dyn Transport, user: &str, timeout: Duration) -> Result<Reached, TargetError> {
    let o = transport.run(&["sh", "-c", &probe_script()], None, timeout).map_err(|e| transport_error(&e))?;
    if !o.success() {
        return Err(failed(&format!("asking how {user} becomes root"), &o));
    }
    judge(user, &o.stdout_text())
}

/// Who answered a probe after the kexec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answerer {
    Root,
    LoginUser,
}

/// One look after a kexec by a login user who is not root: as `root@host`
/// first (the installer, whose root has the user's keys), else as the login
/// user (the old OS, still running: seed 001 must read as "same boot", not
/// as "no answer").
///
/// # Errors
/// The login user's error when neither answers.
pub fn look_as_root_else_user(
    as_root: &mut dyn FnMut() -> Result<Look, TargetError>,
    as_user: &mut dyn FnMut() -> Result<Look, TargetError>,
) -> Result<(Look, Answerer), TargetError> {
    match as_root() {
        Ok(look) => Ok((look, Answerer::Root)),
        Err(_) => as_user().map(|look| (look, Answerer::LoginUser)),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// A scripted transport: records every argv, answers with `reply`.
    struct Scripted {
        calls: Mutex<Vec<Vec<String>>>,
        reply: Result<(i32, String), ()>,
    }

    impl Scripted {
        fn new(reply: Result<(i32, &str), ()>) -> Scripted {
            Scripted { calls: Mutex::new(Vec::new()), reply: reply.map(|(c, t)| (c, t.to_owned())) }
        }

        fn calls(&self) -> Vec<Vec<String>> {
            self.calls.lock().expect("lock").clone()
        }
    }

    impl Transport for Scripted {
        fn describe(&self) -> String {
            "ssh://admin@web1".into()
        }

        fn run(&self, argv: &[&str], _: Option<&[u8]>, _: Duration) -> Result<Output, TransportError> {
            self.calls.lock().expect("lock").push(argv.iter().map(|w| (*w).to_owned()).collect());
            match &self.reply {
                Ok((code, text)) => Ok(Output {
                    target: self.describe(),
                    command: argv.join(" "),
                    status: Some(*code),
                    stdout: text.clone().into_bytes(),
                    stderr: Vec::new(),
                }),
                Err(()) => Err(TransportError::Unreachable { target: self.describe(), detail: "refused".into() }),
            }
        }
    }

    /// nixos-anywhere's choice: root as is, then sudo, then doas; none, or
    /// only ones that ask for a password, refused with the fix named.
    #[test]
    fn the_escalation_is_chosen_as_nixos_anywhere_does() {
        let judged = |text: &str| judge("admin", text);
        assert_eq!(judged("uid\t0\nsudo\tasks\n"), Ok(Reached::AsLoginUser(Escalation::Root)));
        assert_eq!(judged("uid\t1000\nsudo\tworks\ndoas\tworks\n"), Ok(Reached::AsLoginUser(Escalation::Sudo)));
        assert_eq!(judged("uid\t1000\ndoas\tworks\n"), Ok(Reached::AsLoginUser(Escalation::Doas)));
        assert_eq!(judged("uid\t1000\nsudo\tasks\ndoas\tworks\n"), Ok(Reached::AsLoginUser(Escalation::Doas)));
        assert_eq!(judged("uid\t1000\nsudo\tworks\ninstaller\tyes\n"), Ok(Reached::InstallerAsRoot));
        let Err(TargetError::Cannot(none)) = judged("uid\t1000\n") else { panic!("no sudo, no doas must refuse") };
        assert!(none.contains("neither sudo nor doas"), "{none}");
        let Err(TargetError::Cannot(asks)) = judged("uid\t1000\nsudo\tasks\n") else { panic!("a prompt must refuse") };
        assert!(asks.contains("sudo asks for a password") && asks.contains("NOPASSWD"), "{asks}");
        let Err(TargetError::Cannot(asks)) = judged("uid\t1000\ndoas\tasks\n") else { panic!("a prompt must refuse") };
        assert!(asks.contains("doas asks"), "{asks}");
        assert!(matches!(judged("Permission denied\n"), Err(TargetError::Failed(_))));
    }

    /// Every command, uploads included, goes through `sudo -n --` / `doas -n --`.
    #[test]
    fn elevated_commands_and_uploads_go_through_the_escalation() {
        let sudo = Elevated::new(Scripted::new(Ok((0, ""))), Escalation::Sudo);
        sudo.run(&["sh", "-c", "id -u"], None, Duration::from_secs(1)).expect("runs");
        sudo.upload(b"{}", std::path::Path::new("/run/x.json"), 0o600, Duration::from_secs(1)).expect("uploads");
        let calls = sudo.inner().calls();
        assert_eq!(calls[0], ["sudo", "-n", "--", "sh", "-c", "id -u"]);
        assert_eq!(calls[1][..4], ["sudo", "-n", "--", "sh"]);
        assert!(calls[1][5].contains("/run/x.json"), "{calls:?}");
        assert_eq!(sudo.describe(), "ssh://admin@web1 (sudo)");
        let doas = Elevated::new(Scripted::new(Ok((0, ""))), Escalation::Doas);
        doas.run(&["true"], None, Duration::from_secs(1)).expect("runs");
        assert_eq!(doas.inner().calls()[0], ["doas", "-n", "--", "true"]);
        let root = Elevated::new(Scripted::new(Ok((0, ""))), Escalation::Root);
        root.run(&["true"], None, Duration::from_secs(1)).expect("runs");
        assert_eq!(root.inner().calls()[0], ["true"]);
    }

    /// The probe over a connection: judged; a lost connection is `Lost`.
    #[test]
    fn the_probe_asks_once_and_judges() {
        let t = Scripted::new(Ok((0, "uid\t1000\nsudo\tworks\n")));
        assert_eq!(probe(&t, "admin", Duration::from_secs(1)), Ok(Reached::AsLoginUser(Escalation::Sudo)));
        assert_eq!(t.calls().len(), 1);
        assert_eq!(t.calls()[0][..2], ["sh", "-c"]);
        let down = Scripted::new(Err(()));
        assert!(matches!(probe(&down, "admin", Duration::from_secs(1)), Err(TargetError::Lost(_))));
    }

    /// The probe script, run on this machine: its uid, and whatever sudo or
    /// doas it has, parse.
    #[test]
    fn the_probe_script_runs_here() {
        let out = fleetgate_transport::Local
            .run(&["sh", "-c", &probe_script()], None, Duration::from_secs(30))
            .expect("sh runs");
        assert!(out.success(), "{out:?}");
        let uid = out.stdout_text();
        let reached = judge("me", &uid);
        // The tests run as root here (the lab needs it), or as a user.
        let me = std::fs::read_to_string("/proc/self/status").expect("status");
        let root = me.lines().any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"));
        if root {
            assert_eq!(reached, Ok(Reached::AsLoginUser(Escalation::Root)), "{uid}");
        } else {
            assert!(uid.starts_with("uid\t"), "{uid}");
        }
    }

    fn look(boot_id: &str) -> Look {
        Look { boot_id: boot_id.into(), ..Look::default() }
    }

    /// After the kexec: the installer answers as root; the old OS, still up
    /// and refusing root, answers as the login user (seed 001 stays "same
    /// boot"); neither answering is the login user's error.
    #[test]
    fn after_the_kexec_root_is_asked_first_then_the_login_user() {
        let mut root_ok = || Ok(look("new"));
        let mut user_never = || -> Result<Look, TargetError> { panic!("root answered: the user is not asked") };
        let (l, who) = look_as_root_else_user(&mut root_ok, &mut user_never).expect("answers");
        assert_eq!((l.boot_id.as_str(), who), ("new", Answerer::Root));
        let mut root_refused = || Err(TargetError::Lost("Permission denied (publickey)".into()));
        let mut user_old = || Ok(look("old"));
        let (l, who) = look_as_root_else_user(&mut root_refused, &mut user_old).expect("answers");
        assert_eq!((l.boot_id.as_str(), who), ("old", Answerer::LoginUser));
        let mut root_down = || Err(TargetError::Lost("root: timed out".into()));
        let mut user_down = || Err(TargetError::Lost("admin: timed out".into()));
        let err = look_as_root_else_user(&mut root_down, &mut user_down).expect_err("nobody answers");
        assert_eq!(err, TargetError::Lost("admin: timed out".into()));
    }
}
