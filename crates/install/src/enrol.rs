//! Enrolling the installed host for the pull agent (`fleetgate agent`,
//! docs/agent.md): the agent's files — its configuration
//! (`/etc/fleetgate/agent.toml`), its report token (the file `token_file` or
//! the NixOS module's `tokenFile` names), trusted keys given as files — are
//! written into the new system's root during the install phase and read back
//! before the first boot.
//!
//! The files come from a directory laid out as the new root, as
//! nixos-anywhere's `--extra-files DIR` (`src/nixos-anywhere.sh`: `tar -C DIR
//! -cpf- . | ssh … tar -C /mnt -xf- --no-same-owner`, before
//! `nixos-install`). Unlike it: only regular files (no links, devices,
//! sockets), at most [`MAX_FILES`] of [`MAX_FILE_BYTES`] each, read at
//! argument time (a missing, unreadable or too big file is refused before
//! anything runs); each written owned by root with its owner's permission
//! bits only — `0400` or `0600`, never readable by others, as a secret should
//! be; and the install phase proves it: every file read back under `/mnt`
//! with its size, mode, owner and SHA-256, compared with what was sent.

use std::fmt::Write as _;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use fleetgate_transport::{Transport, shell_quote as q};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::remote_scripts::transport_error;
use crate::target::TargetError;

/// At most this many files.
pub const MAX_FILES: usize = 64;
/// At most this many bytes in one file (a configuration, a token, a key).
pub const MAX_FILE_BYTES: u64 = 256 << 10;
/// At most this many directories deep below the enrolment's directory.
const MAX_DEPTH: usize = 8;

/// Why an enrolment directory cannot be taken.
#[derive(Debug, thiserror::Error)]
pub enum EnrolError {
    /// It is not a directory.
    #[error("{0} is not a directory (it holds the files as they go under the new root: etc/fleetgate/agent.toml …)")]
    NotADirectory(PathBuf),
    /// Something in it cannot be read.
    #[error("cannot read {path}: {source}")]
    Unreadable {
        /// What.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file bigger than [`MAX_FILE_BYTES`].
    #[error("{path} has more than {max} bytes: an agent's file is a configuration, a token or a key", max = MAX_FILE_BYTES)]
    TooBig {
        /// The file.
        path: PathBuf,
    },
    /// More than [`MAX_FILES`] files, or nesting deeper than a root's.
    #[error("{0} holds more than {MAX_FILES} files or is nested too deep")]
    TooMany(PathBuf),
    /// A symbolic link, a device, a socket …
    #[error("{0} is not a regular file (links and special files are not copied)")]
    NotRegular(PathBuf),
    /// A name that is not UTF-8 or has a character a path on the target must not have.
    #[error("{0:?}: names must be UTF-8 without control characters")]
    BadName(PathBuf),
    /// No file at all.
    #[error("{0} holds no file")]
    Empty(PathBuf),
    /// The system's agent reads its token from a file the enrolment lacks.
    #[error(
        "the system's fleetgate-agent.service reads its token from {0} (LoadCredential), and the enrolment has no such file"
    )]
    NoToken(String),
    /// The system's agent reads its token from a file under `/run`, which
    /// is empty at every boot.
    #[error(
        "the system's fleetgate-agent.service reads its token from {0}: /run is a tmpfs, a file written there at install is gone at the first boot"
    )]
    TokenOnTmpfs(String),
}

/// One file to write into the new system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrolFile {
    /// Where it goes on the installed system (`/etc/fleetgate/agent.toml`).
    pub path: String,
    /// `0o400` or `0o600`.
    pub mode: u32,
    /// Its bytes.
    pub contents: Vec<u8>,
}

impl EnrolFile {
    /// The SHA-256 of its contents, hex.
    #[must_use]
    pub fn sha256(&self) -> String {
        hex(&Sha256::digest(&self.contents))
    }
}

/// The files of an enrolment, read and checked once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Enrolment {
    files: Vec<EnrolFile>,
}

impl Enrolment {
    /// Reads `dir`, laid out as the new root (`dir/etc/fleetgate/agent.toml`
    /// goes to `/etc/fleetgate/agent.toml`).
    ///
    /// # Errors
    /// [`EnrolError`]: nothing is taken from a directory with one bad file.
    pub fn from_dir(dir: &Path) -> Result<Enrolment, EnrolError> {
        let meta = std::fs::metadata(dir).map_err(|source| EnrolError::Unreadable { path: dir.to_owned(), source })?;
        if !meta.is_dir() {
            return Err(EnrolError::NotADirectory(dir.to_owned()));
        }
        let mut files = Vec::new();
        walk(dir, dir, 0, &mut files)?;
        if files.is_empty() {
            return Err(EnrolError::Empty(dir.to_owned()));
        }
        files.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(Enrolment { files })
    }

    /// An enrolment of these files (as [`Enrolment::from_dir`] reads them).
    ///
    /// # Errors
    /// [`EnrolError`]: a path that is not absolute and plain
    /// (`/etc/fleetgate/agent.toml`, no `..`), a mode other than `0400` or
    /// `0600`, a file too big, too many files.
    pub fn new(mut files: Vec<EnrolFile>) -> Result<Enrolment, EnrolError> {
        if files.len() > MAX_FILES {
            return Err(EnrolError::TooMany(PathBuf::from("/")));
        }
        for f in &files {
            let plain = f.path.starts_with('/')
                && f.path.len() > 1
                && !f.path.chars().any(char::is_control)
                && f.path[1..].split('/').all(|c| !c.is_empty() && c != "." && c != "..");
            if !plain || !matches!(f.mode, 0o400 | 0o600) {
                return Err(EnrolError::BadName(PathBuf::from(&f.path)));
            }
            if f.contents.len() as u64 > MAX_FILE_BYTES {
                return Err(EnrolError::TooBig { path: PathBuf::from(&f.path) });
            }
        }
        files.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(Enrolment { files })
    }

    /// The files, by path.
    #[must_use]
    pub fn files(&self) -> &[EnrolFile] {
        &self.files
    }

    /// Whether there is nothing to enrol.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }
}

/// The agent's unit in a NixOS system toplevel (`nix/module.nix`).
pub const AGENT_UNIT: &str = "etc/systemd/system/fleetgate-agent.service";

/// The file the agent's unit reads its token from: `LoadCredential=token:PATH`
/// (`nix/module.nix` sets it from `tokenFile`).
#[must_use]
pub fn token_path(unit: &str) -> Option<String> {
    unit.lines()
        .filter_map(|l| l.trim().strip_prefix("LoadCredential="))
        .find_map(|v| v.trim().trim_matches('"').strip_prefix("token:").map(str::to_owned))
}

/// Checks an enrolment against the system it is installed with: when the
/// system runs the agent from the NixOS module with a `tokenFile`, that file
/// must be among the enrolment's and not under `/run`. Returns what it found,
/// as lines for the operator.
///
/// # Errors
/// [`EnrolError::NoToken`], [`EnrolError::TokenOnTmpfs`].
pub fn check_against_system(enrolment: &Enrolment, system: &Path) -> Result<Vec<String>, EnrolError> {
    let unit = system.join(AGENT_UNIT);
    let Ok(bytes) = fleetgate_nix::read_small_file(&unit, 1 << 20) else {
        return Ok(vec![format!(
            "the system has no {AGENT_UNIT} (not the NixOS module's agent): the files are copied as they are"
        )]);
    };
    let Some(token) = token_path(&String::from_utf8_lossy(&bytes)) else {
        return Ok(vec!["the system's fleetgate-agent.service reads no token file".into()]);
    };
    if token == "/run" || token.starts_with("/run/") {
        return Err(EnrolError::TokenOnTmpfs(token));
    }
    if !enrolment.files.iter().any(|f| f.path == token) {
        return Err(EnrolError::NoToken(token));
    }
    Ok(vec![format!("the system's fleetgate-agent.service reads its token from {token}: enrolled")])
}

fn walk(root: &Path, dir: &Path, depth: usize, files: &mut Vec<EnrolFile>) -> Result<(), EnrolError> {
    if depth > MAX_DEPTH {
        return Err(EnrolError::TooMany(root.to_owned()));
    }
    let unreadable = |path: &Path| {
        let path = path.to_owned();
        move |source| EnrolError::Unreadable { path, source }
    };
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(unreadable(dir))?
        .take(MAX_FILES + 1)
        .collect::<Result<_, _>>()
        .map_err(unreadable(dir))?;
    entries.sort_by_key(std::fs::DirEntry::file_name);
    for entry in entries {
        let path = entry.path();
        let kind = entry.file_type().map_err(unreadable(&path))?;
        if kind.is_dir() {
            walk(root, &path, depth + 1, files)?;
        } else if kind.is_file() {
            if files.len() == MAX_FILES {
                return Err(EnrolError::TooMany(root.to_owned()));
            }
            files.push(read_one(root, &path)?);
        } else {
            return Err(EnrolError::NotRegular(path));
        }
    }
    Ok(())
}

fn read_one(root: &Path, path: &Path) -> Result<EnrolFile, EnrolError> {
    use std::os::unix::fs::PermissionsExt as _;
    let relative = path.strip_prefix(root).map_err(|_| EnrolError::BadName(path.to_owned()))?;
    let name = relative
        .to_str()
        .filter(|n| !n.chars().any(char::is_control))
        .ok_or_else(|| EnrolError::BadName(path.to_owned()))?;
    let file = std::fs::File::open(path).map_err(|source| EnrolError::Unreadable { path: path.to_owned(), source })?;
    let mode = file
        .metadata()
        .map_err(|source| EnrolError::Unreadable { path: path.to_owned(), source })?
        .permissions()
        .mode();
    let mut contents = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut contents)
        .map_err(|source| EnrolError::Unreadable { path: path.to_owned(), source })?;
    if contents.len() as u64 > MAX_FILE_BYTES {
        return Err(EnrolError::TooBig { path: path.to_owned() });
    }
    Ok(EnrolFile { path: format!("/{name}"), mode: if mode & 0o200 == 0 { 0o400 } else { 0o600 }, contents })
}

/// What a file written into the new root is, read back on the target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadBack {
    /// Its path on the installed system.
    pub path: String,
    /// `None`: it is not there (or not a regular file).
    pub found: Option<Found>,
}

/// A file found on the target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Found {
    /// Bytes.
    pub size: u64,
    /// Permission bits.
    pub mode: u32,
    /// Owner's uid.
    pub uid: u32,
    /// SHA-256, hex.
    pub sha256: String,
}

/// Writes `files` under `root` (`/mnt`) on `transport`: parent directories
/// `0755`, each file through a temporary file and a rename, with its mode.
///
/// # Errors
/// [`TargetError`]: `Lost` when the target did not answer.
pub fn write(transport: &dyn Transport, root: &str, files: &[EnrolFile], timeout: Duration) -> Result<(), TargetError> {
    for file in files {
        let path = format!("{root}{}", file.path);
        let parent = path.rsplit_once('/').map_or(root, |(d, _)| d);
        let mkdir = format!("umask 022; mkdir -p -- {}", q(parent));
        let made = transport.run(&["sh", "-c", &mkdir], None, timeout).map_err(|e| transport_error(&e))?;
        if !made.success() {
            return Err(TargetError::Failed(format!(
                "creating {parent}: {}",
                String::from_utf8_lossy(&made.stderr).trim()
            )));
        }
        transport.upload(&file.contents, Path::new(&path), file.mode, timeout).map_err(|e| {
            match transport_error(&e) {
                TargetError::Failed(why) => TargetError::Failed(format!("writing {path}: {why}")),
                lost => lost,
            }
        })?;
    }
    Ok(())
}

/// Reads back what `files` are under `root` on `transport`.
///
/// # Errors
/// [`TargetError`].
pub fn read_back(
    transport: &dyn Transport,
    root: &str,
    files: &[EnrolFile],
    timeout: Duration,
) -> Result<Vec<ReadBack>, TargetError> {
    let script = "PATH=\"$PATH:/run/current-system/sw/bin\"\nr=$1; shift\nfor f in \"$@\"; do\n  \
        if [ -f \"$r$f\" ] && [ ! -L \"$r$f\" ]; then\n    \
        printf 'file\\t%s\\t%s\\t%s\\n' \"$f\" \"$(stat -c '%s %a %u' -- \"$r$f\")\" \"$(sha256sum < \"$r$f\" | cut -d' ' -f1)\"\n  \
        else printf 'missing\\t%s\\n' \"$f\"; fi\ndone\n";
    let mut argv = vec!["sh", "-c", script, "sh", root];
    argv.extend(files.iter().map(|f| f.path.as_str()));
    let o = transport.run(&argv, None, timeout).map_err(|e| transport_error(&e))?;
    if !o.success() {
        return Err(TargetError::Failed(format!(
            "reading back the agent's files: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )));
    }
    Ok(parse_read_back(&o.stdout_text()))
}

/// The lines of [`read_back`]'s script.
#[must_use]
pub fn parse_read_back(text: &str) -> Vec<ReadBack> {
    let mut out = Vec::new();
    for line in text.lines() {
        match line.split('\t').collect::<Vec<_>>().as_slice() {
            ["file", path, stat, sha] => {
                let mut it = stat.split(' ');
                let found = match (it.next(), it.next(), it.next()) {
                    (Some(size), Some(mode), Some(uid)) => {
                        match (size.parse(), u32::from_str_radix(mode, 8), uid.parse()) {
                            (Ok(size), Ok(mode), Ok(uid)) => Some(Found { size, mode, uid, sha256: (*sha).to_owned() }),
                            _ => None,
                        }
                    }
                    _ => None,
                };
                out.push(ReadBack { path: (*path).to_owned(), found });
            }
            ["missing", path] => out.push(ReadBack { path: (*path).to_owned(), found: None }),
            _ => {}
        }
    }
    out
}

/// The proof lines of an enrolment: every file read back with the size,
/// hash, mode and owner it was sent with; else what differs.
///
/// # Errors
/// The first file that is missing or differs, as a sentence.
pub fn prove(files: &[EnrolFile], read: &[ReadBack]) -> Result<Vec<String>, String> {
    let mut lines = Vec::new();
    for file in files {
        let found = read.iter().find(|r| r.path == file.path).and_then(|r| r.found.as_ref());
        let Some(found) = found else {
            return Err(format!("{} is not on the installed system after it was written", file.path));
        };
        let sha = file.sha256();
        let mut wrong = String::new();
        if found.size != file.contents.len() as u64 || found.sha256 != sha {
            let _ = write!(
                wrong,
                "; {} bytes sha256 {} (sent {} bytes sha256 {sha})",
                found.size,
                found.sha256,
                file.contents.len()
            );
        }
        if found.mode != file.mode {
            let _ = write!(wrong, "; mode {:o} (sent {:o})", found.mode, file.mode);
        }
        if found.uid != 0 {
            let _ = write!(wrong, "; owner uid {} (not root)", found.uid);
        }
        if !wrong.is_empty() {
            return Err(format!("{} read back differs{wrong}", file.path));
        }
        lines.push(format!(
            "agent enrolment: {} read back, {} bytes, sha256 {}, mode {:o}, owner root",
            file.path,
            found.size,
            &sha[..16],
            found.mode
        ));
    }
    Ok(lines)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use fleetgate_transport::Local;

    use super::*;

    fn put(dir: &Path, rel: &str, contents: &[u8], mode: u32) {
        let path = dir.join(rel);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(&path, contents).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }

    fn agent_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        put(dir.path(), "etc/fleetgate/agent.toml", b"host = \"web1\"\n", 0o644);
        put(dir.path(), "var/lib/secrets/fleetgate-token", b"s3cret\n", 0o400);
        dir
    }

    #[test]
    fn a_directory_is_read_as_the_new_root_with_owner_only_modes() {
        let dir = agent_dir();
        let e = Enrolment::from_dir(dir.path()).expect("readable");
        let got: Vec<(&str, u32)> = e.files().iter().map(|f| (f.path.as_str(), f.mode)).collect();
        assert_eq!(got, [("/etc/fleetgate/agent.toml", 0o600), ("/var/lib/secrets/fleetgate-token", 0o400)]);
        assert_eq!(e.files()[1].contents, b"s3cret\n");
    }

    #[test]
    fn bad_directories_are_refused_naming_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(matches!(Enrolment::from_dir(dir.path()), Err(EnrolError::Empty(_))));
        assert!(matches!(Enrolment::from_dir(&dir.path().join("nope")), Err(EnrolError::Unreadable { .. })));
        put(dir.path(), "etc/big", &vec![b'x'; (MAX_FILE_BYTES + 1) as usize], 0o600);
        let err = Enrolment::from_dir(dir.path()).expect_err("too big");
        assert!(err.to_string().contains("etc/big has more than 262144 bytes"), "{err}");
        std::fs::remove_file(dir.path().join("etc/big")).expect("rm");
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("etc/link")).expect("symlink");
        assert!(matches!(Enrolment::from_dir(dir.path()), Err(EnrolError::NotRegular(_))));
        std::fs::remove_file(dir.path().join("etc/link")).expect("rm");
        put(dir.path(), "f", b"x", 0o600);
        assert!(matches!(Enrolment::from_dir(&dir.path().join("f")), Err(EnrolError::NotADirectory(_))));
        for i in 0..=MAX_FILES {
            put(dir.path(), &format!("many/{i}"), b"x", 0o600);
        }
        assert!(matches!(Enrolment::from_dir(dir.path()), Err(EnrolError::TooMany(_))));
    }

    #[test]
    fn the_token_file_the_system_s_agent_reads_must_be_enrolled() {
        let unit = "[Service]\nExecStart=/nix/store/x/bin/fleetgate agent --config /etc/fleetgate/agent.json\n\
            LoadCredential=token:/var/lib/secrets/fleetgate-token\n";
        assert_eq!(token_path(unit).as_deref(), Some("/var/lib/secrets/fleetgate-token"));
        let system = tempfile::tempdir().expect("tempdir");
        let e = Enrolment::from_dir(agent_dir().path()).expect("readable");
        let noted = check_against_system(&e, system.path()).expect("no agent unit: copied as they are");
        assert!(noted[0].contains("not the NixOS module's agent"), "{noted:?}");
        put(system.path(), AGENT_UNIT, unit.as_bytes(), 0o444);
        let noted = check_against_system(&e, system.path()).expect("enrolled");
        assert_eq!(
            noted,
            ["the system's fleetgate-agent.service reads its token from /var/lib/secrets/fleetgate-token: enrolled"]
        );
        put(system.path(), AGENT_UNIT, unit.replace("/var/lib/secrets/", "/etc/").as_bytes(), 0o644);
        let err = check_against_system(&e, system.path()).expect_err("not enrolled");
        assert!(matches!(&err, EnrolError::NoToken(t) if t == "/etc/fleetgate-token"), "{err}");
        put(system.path(), AGENT_UNIT, unit.replace("/var/lib/secrets/", "/run/secrets/").as_bytes(), 0o644);
        assert!(matches!(check_against_system(&e, system.path()), Err(EnrolError::TokenOnTmpfs(_))));
    }

    #[test]
    fn only_plain_absolute_paths_and_owner_modes_are_taken() {
        let file = |path: &str, mode| EnrolFile { path: path.into(), mode, contents: b"x".to_vec() };
        assert!(Enrolment::new(vec![file("/etc/fleetgate/agent.toml", 0o600)]).is_ok());
        for bad in ["etc/x", "/", "/etc/../root/x", "/etc//x", "/etc/./x"] {
            assert!(Enrolment::new(vec![file(bad, 0o600)]).is_err(), "{bad}");
        }
        assert!(Enrolment::new(vec![file("/etc/x", 0o644)]).is_err());
    }

    /// The shell side, run on this machine against a directory standing for
    /// `/mnt` (as root: the owner must read back as root).
    #[test]
    fn written_files_read_back_as_sent() {
        let root = tempfile::tempdir().expect("tempdir");
        let root_str = root.path().to_str().expect("utf-8");
        let e = Enrolment::from_dir(agent_dir().path()).expect("readable");
        let timeout = Duration::from_secs(30);
        write(&Local, root_str, e.files(), timeout).expect("written");
        let read = read_back(&Local, root_str, e.files(), timeout).expect("read back");
        let uid = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(root.path()).expect("stat"));
        if uid != 0 {
            // Not root here: the owner cannot be root; everything else must hold.
            assert!(prove(e.files(), &read).expect_err("owner").contains("not root"));
            return;
        }
        let lines = prove(e.files(), &read).expect("proven");
        assert_eq!(lines.len(), 2);
        assert!(lines[1].starts_with("agent enrolment: /var/lib/secrets/fleetgate-token read back, 7 bytes, sha256 "));
        assert!(lines[1].ends_with(", mode 400, owner root"), "{}", lines[1]);
        let token = root.path().join("var/lib/secrets/fleetgate-token");
        assert_eq!(std::fs::metadata(&token).expect("stat").permissions().mode() & 0o777, 0o400);
        // A file changed on the target after it was written is caught.
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        std::fs::write(&token, b"other\n").expect("write");
        let read = read_back(&Local, root_str, e.files(), timeout).expect("read back");
        let why = prove(e.files(), &read).expect_err("differs");
        assert!(why.starts_with("/var/lib/secrets/fleetgate-token read back differs; 6 bytes sha256 "), "{why}");
        assert!(why.contains("mode 600 (sent 400)"), "{why}");
        std::fs::remove_file(&token).expect("rm");
        let read = read_back(&Local, root_str, e.files(), timeout).expect("read back");
        assert_eq!(read[1].found, None);
        assert!(prove(e.files(), &read).expect_err("missing").contains("is not on the installed system"));
    }
}
