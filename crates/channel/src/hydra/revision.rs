//! Which commit a Hydra build was made from. In order of preference:
//! 1. the built system itself, when it records `system.configurationRevision` (NixOS
//!    bakes it into `sw/bin/nixos-version`, or into a `nixos-version.json` that script
//!    reads);
//! 2. Hydra's REST API: `GET /build/<id>` → `jobsetevals` → `GET /eval/<id>` → `flake`
//!    (a locked flake URL carrying the revision);
//! 3. Hydra's PostgreSQL database through `psql`: the flake URL of the build's newest
//!    evaluation (the original hook's query took an arbitrary one).
use std::path::Path;
use std::sync::LazyLock;
use std::time::Duration;

use fleetgate_nix::ProcessError;
use fleetgate_nix::process::Run;
use regex::Regex;

use crate::commit::CommitId;

static JSON_REV: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r#""configurationRevision"\s*:\s*"([0-9a-fA-F]{64}|[0-9a-fA-F]{40})""#).ok());
static SCRIPT_REV: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(r#"--configuration-revision\)[^)]{0,400}?echo "([0-9a-fA-F]{64}|[0-9a-fA-F]{40})""#).ok()
});
static VERSION_JSON: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"/nix/store/[0-9a-z]{32}-[0-9A-Za-z+._?=-]*\.json").ok());

fn capture(re: &LazyLock<Option<Regex>>, text: &str) -> Option<CommitId> {
    let re = re.as_ref()?;
    let m = re.captures(text)?.get(1)?;
    CommitId::parse(m.as_str()).ok()
}

/// Largest `nixos-version` script or `nixos-version.json` read (both are well under
/// 4 KiB; a build could make either a link to `/dev/zero`).
const MAX_VERSION_FILE: u64 = 64 << 10;

/// Reads `system.configurationRevision` from a built NixOS system, if it recorded one
/// (regular files of at most [`MAX_VERSION_FILE`] bytes only).
pub fn from_system(system: &Path) -> Option<CommitId> {
    let script = fleetgate_nix::read_small_file(&system.join("sw/bin/nixos-version"), MAX_VERSION_FILE).ok()?;
    let text = String::from_utf8_lossy(&script);
    if let Some(c) = capture(&JSON_REV, &text).or_else(|| capture(&SCRIPT_REV, &text)) {
        return Some(c);
    }
    // Newer NixOS: the script `cat`s a separate nixos-version.json store file.
    let re = VERSION_JSON.as_ref()?;
    re.find_iter(&text).find_map(|m| {
        let json = fleetgate_nix::read_small_file(Path::new(m.as_str()), MAX_VERSION_FILE).ok()?;
        capture(&JSON_REV, &String::from_utf8_lossy(&json))
    })
}

/// Extracts the revision from a locked flake URL: a `rev=` parameter, or a full hex
/// commit as the last path segment (`github:owner/repo/<rev>`).
pub fn from_flake_url(flake: &str) -> Option<CommitId> {
    let (path, query) = flake.split_once('?').unwrap_or((flake, ""));
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix("rev="))
        .and_then(|r| CommitId::parse(r).ok())
        .or_else(|| path.trim_end_matches('/').rsplit('/').next().and_then(|seg| CommitId::parse(seg).ok()))
}

/// Asks Hydra's REST API (`base` like `http://127.0.0.1:3000`).
pub fn from_hydra_api(base: &str, build: u64, timeout: Duration) -> Result<CommitId, String> {
    let agent: ureq::Agent = ureq::Agent::config_builder().timeout_global(Some(timeout)).build().into();
    let base = base.trim_end_matches('/');
    let get = |url: String| -> Result<serde_json::Value, String> {
        agent
            .get(&url)
            .header("Accept", "application/json")
            .call()
            .map_err(|e| format!("GET {url}: {e}"))?
            .body_mut()
            .read_json::<serde_json::Value>()
            .map_err(|e| format!("GET {url}: not JSON: {e}"))
    };
    let b = get(format!("{base}/build/{build}"))?;
    let eval = b
        .get("jobsetevals")
        .and_then(|v| v.as_array())
        .and_then(|a| a.iter().filter_map(serde_json::Value::as_u64).max())
        .ok_or_else(|| format!("build {build} has no jobsetevals"))?;
    let e = get(format!("{base}/eval/{eval}"))?;
    let flake = e
        .get("flake")
        .and_then(|v| v.as_str())
        .ok_or_else(|| format!("eval {eval} has no flake URL (not a flake jobset?)"))?;
    from_flake_url(flake).ok_or_else(|| format!("eval {eval}: no revision in flake URL {flake:?}"))
}

/// Asks Hydra's database with `psql`: the flake URL of the newest evaluation the build
/// belongs to (the API route's choice too). Tables and columns as in Hydra's
/// `src/sql/hydra.sql` (`Builds`, `JobsetEvalMembers(eval, build)`,
/// `JobsetEvals(id, flake)`), checked against a real PostgreSQL in `tests/hydra_db.rs`.
///
/// `db` is anything `psql --dbname` takes: a database name (peer authentication as the
/// hydra user, the rest from libpq's `PG*` variables), `key=value` pairs or a
/// `postgresql://` URI. A password in it is taken out and given to psql through
/// `PGPASSWORD` only: it is never on a command line (visible to every user), and never
/// in an error, even where libpq would echo part of a malformed string. `build` is an
/// integer, so nothing can be injected; psql never prompts for a password.
pub fn from_hydra_db(db: &str, build: u64, timeout: Duration) -> Result<CommitId, String> {
    let conn = ConnInfo::split(db)?;
    // `builds` first, so that a build Hydra does not know is told apart from one in no
    // (or a non-flake) evaluation.
    let query = format!(
        "SELECT e.id, e.flake FROM builds b \
         LEFT JOIN jobsetevalmembers m ON m.build = b.id \
         LEFT JOIN jobsetevals e ON e.id = m.eval \
         WHERE b.id = {build} ORDER BY e.id DESC NULLS LAST LIMIT 1"
    );
    let mut run = Run::new("psql")
        .args(["--no-psqlrc", "--no-password", "--tuples-only", "--no-align"])
        .args(["--dbname", &conn.shown, "--command", &query])
        .env("PGCONNECT_TIMEOUT", timeout.as_secs().max(2).to_string())
        .timeout(timeout);
    if let Some(password) = &conn.password {
        run = run.env("PGPASSWORD", password);
    }
    let out = run.run().map_err(|e| conn.redact(&psql_error(&e)))?;
    let text = out.stdout_text();
    let Some(row) = text.lines().next() else {
        return Err(format!("build {build} is not in Hydra's database"));
    };
    // Unaligned output: `<eval id>|<flake>`, empty for NULL; the URL may contain `|`.
    let (eval, flake) = row.split_once('|').unwrap_or((row, ""));
    if eval.is_empty() {
        return Err(format!("build {build} belongs to no evaluation in Hydra's database"));
    }
    if flake.is_empty() {
        return Err(format!("eval {eval} has no flake URL (not a flake jobset?)"));
    }
    from_flake_url(flake).ok_or_else(|| format!("eval {eval}: no revision in flake URL {flake:?}"))
}

/// One line saying why psql failed, without its command line (the query is noise).
fn psql_error(e: &ProcessError) -> String {
    let tail = |t: &str| t.split_whitespace().collect::<Vec<_>>().join(" ");
    match e {
        ProcessError::Spawn { source, .. } => {
            format!("cannot run psql ({source}): install PostgreSQL's client (postgresql-client)")
        }
        ProcessError::Failed { status, stderr_tail, .. } => {
            format!("psql failed ({status}): {}", tail(stderr_tail))
        }
        ProcessError::Timeout { after, stderr_tail, .. } => format!(
            "psql did not answer within {after:?} and was killed (timeout){}",
            if stderr_tail.trim().is_empty() { String::new() } else { format!(": {}", tail(stderr_tail)) }
        ),
        ProcessError::Io { source, .. } => format!("reading psql's output: {source}"),
        ProcessError::OutputTooLarge { limit, .. } => format!("psql printed more than {limit} bytes and was killed"),
    }
}

/// A libpq connection string, split into what may be shown (command line, errors) and
/// its password. Parsed the way libpq parses `psql --dbname` (`conninfo_parse`,
/// `conninfo_uri_parse`); errors never quote the string, since any word of it may be
/// the password.
struct ConnInfo {
    shown: String,
    password: Option<String>,
}

impl std::fmt::Debug for ConnInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnInfo")
            .field("shown", &self.shown)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .finish()
    }
}

impl ConnInfo {
    fn split(s: &str) -> Result<Self, String> {
        let prefix = ["postgresql://", "postgres://"].into_iter().find(|p| s.starts_with(p));
        if let Some(prefix) = prefix {
            Self::split_uri(prefix, &s[prefix.len()..])
        } else if s.contains('=') {
            Self::split_keywords(s)
        } else {
            // A bare database name.
            Ok(Self { shown: s.to_owned(), password: None })
        }
    }

    /// `postgresql://[user[:password]@][hosts][/dbname][?key=value&…]`.
    fn split_uri(prefix: &str, rest: &str) -> Result<Self, String> {
        let bad = |what: &str| format!("--hydra-db is not a valid connection URI: {what}");
        let mut password = None;
        let mut shown = prefix.to_owned();
        // libpq: credentials end at the first `@`, unless a `/` comes first.
        let rest = match rest.find(['@', '/']) {
            Some(at) if rest.as_bytes()[at] == b'@' => {
                let (user, pw) = rest[..at].split_once(':').unwrap_or((&rest[..at], ""));
                if rest[..at].contains(':') {
                    password = Some(percent_decode(pw).ok_or_else(|| bad("invalid percent-encoding in the password"))?);
                }
                shown.push_str(user);
                shown.push('@');
                &rest[at + 1..]
            }
            _ => rest,
        };
        let (location, query) = match rest.split_once('?') {
            Some((l, q)) => (l, Some(q)),
            None => (rest, None),
        };
        shown.push_str(location);
        let mut kept = Vec::new();
        for param in query.into_iter().flat_map(|q| q.split('&')) {
            let (key, value) = param.split_once('=').unwrap_or((param, ""));
            if percent_decode(key).as_deref() == Some("password") {
                password = Some(percent_decode(value).ok_or_else(|| bad("invalid percent-encoding in the password"))?);
            } else {
                kept.push(param);
            }
        }
        if !kept.is_empty() {
            shown.push('?');
            shown.push_str(&kept.join("&"));
        }
        Ok(Self { shown, password })
    }

    /// `key=value key = 'quoted \' value' …`.
    fn split_keywords(s: &str) -> Result<Self, String> {
        let bad = |what: &str| {
            format!(
                "--hydra-db is not a valid connection string: {what} (values are not shown: one may be the password)"
            )
        };
        let mut chars = s.chars().peekable();
        let mut pairs = Vec::new();
        let mut password = None;
        loop {
            while chars.next_if(|c| c.is_whitespace()).is_some() {}
            if chars.peek().is_none() {
                break;
            }
            let mut key = String::new();
            while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
                key.push(c);
            }
            while chars.next_if(|c| c.is_whitespace()).is_some() {}
            if chars.next() != Some('=') {
                return Err(bad("missing \"=\" after a keyword"));
            }
            while chars.next_if(|c| c.is_whitespace()).is_some() {}
            let mut value = String::new();
            if chars.next_if_eq(&'\'').is_some() {
                loop {
                    match chars.next() {
                        None => return Err(bad("unterminated quoted value")),
                        Some('\'') => break,
                        Some('\\') => value.extend(chars.next()),
                        Some(c) => value.push(c),
                    }
                }
            } else {
                while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                    if c == '\\' {
                        value.extend(chars.next());
                    } else {
                        value.push(c);
                    }
                }
            }
            if key == "password" {
                password = Some(value);
            } else {
                let quoted = value.replace('\\', "\\\\").replace('\'', "\\'");
                pairs.push(format!("{key}='{quoted}'"));
            }
        }
        Ok(Self { shown: pairs.join(" "), password })
    }

    /// `message` with the password, should anything have echoed it, masked.
    fn redact(&self, message: &str) -> String {
        match &self.password {
            Some(p) if !p.is_empty() => message.replace(p.as_str(), "***"),
            _ => message.to_owned(),
        }
    }
}

/// RFC 3986 percent-decoding as libpq does it (`%00` refused); None if malformed.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3).filter(|h| h.bytes().all(|c| c.is_ascii_hexdigit()))?;
            out.push(u8::from_str_radix(hex, 16).ok().filter(|b| *b != 0)?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const REV: &str = "6c8e2b0d3f1a4e5b7c9d0e1f2a3b4c5d6e7f8091";

    #[test]
    fn flake_urls() {
        for url in [
            format!("github:linyinfeng/dotfiles/{REV}"),
            format!("git+https://example.org/r.git?ref=main&rev={REV}"),
            format!("git+file:///srv/r?rev={REV}"),
            format!("gitlab:o/r/{REV}?dir=sub"),
        ] {
            assert_eq!(from_flake_url(&url).unwrap().as_str(), REV, "{url}");
        }
        assert!(from_flake_url("github:o/r/main").is_none());
        assert!(from_flake_url("github:o/r").is_none());
    }

    #[test]
    fn revision_in_a_nixos_version_script() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("sw/bin");
        std::fs::create_dir_all(&bin).unwrap();
        // The shape nixpkgs' nixos-version.sh has after substitution.
        let script = format!(
            "#! /bin/sh\ncase \"$1\" in\n  --configuration-revision)\n    if [[ \"{REV}\" =~ \"@\" ]]; then\n      exit 1\n    fi\n    echo \"{REV}\"\n    ;;\n  --json)\n    cat <<EOF\n{{\"configurationRevision\":\"{REV}\",\"nixosVersion\":\"24.05\"}}\nEOF\n    ;;\nesac\n"
        );
        std::fs::write(bin.join("nixos-version"), &script).unwrap();
        assert_eq!(from_system(dir.path()).unwrap().as_str(), REV);
        std::fs::write(bin.join("nixos-version"), script.replace(REV, "@configurationRevision@")).unwrap();
        assert!(from_system(dir.path()).is_none());
        assert!(from_system(&dir.path().join("absent")).is_none());
    }

    #[test]
    fn a_version_file_that_never_ends_or_never_opens_is_no_revision() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("sw/bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::os::unix::fs::symlink("/dev/zero", bin.join("nixos-version")).unwrap();
        assert!(from_system(dir.path()).is_none());
        std::fs::remove_file(bin.join("nixos-version")).unwrap();
        rustix::fs::mkfifoat(rustix::fs::CWD, bin.join("nixos-version"), rustix::fs::Mode::from_raw_mode(0o600))
            .unwrap();
        assert!(from_system(dir.path()).is_none());
    }

    #[test]
    fn connection_strings_lose_their_password_to_the_environment() {
        let split = |s: &str| ConnInfo::split(s).unwrap();
        let c = split("hydra");
        assert_eq!((c.shown.as_str(), c.password), ("hydra", None));
        let c = split("postgresql://hydra:p%40ss%3Aw%2Fd@db.example:5433/hydra?sslmode=require");
        assert_eq!(c.shown, "postgresql://hydra@db.example:5433/hydra?sslmode=require");
        assert_eq!(c.password.as_deref(), Some("p@ss:w/d"));
        let c = split("postgres://@/hydra?host=/run/postgresql&password=s%20t&user=hydra");
        assert_eq!(c.shown, "postgres://@/hydra?host=/run/postgresql&user=hydra");
        assert_eq!(c.password.as_deref(), Some("s t"));
        let c = split("postgresql:///hydra?host=/run/postgresql");
        assert_eq!((c.shown.as_str(), c.password), ("postgresql:///hydra?host=/run/postgresql", None));
        let c = split(r"host=/run/postgresql  dbname = hydra password='it\'s \\ secret' user=a\ b");
        assert_eq!(c.shown, r"host='/run/postgresql' dbname='hydra' user='a b'");
        assert_eq!(c.password.as_deref(), Some(r"it's \ secret"));
        for bad in
            ["postgresql://u:%zzsecret@/db", "postgresql://u:%00secret@/db", "postgresql:///db?password=%4secret"]
        {
            let e = ConnInfo::split(bad).unwrap_err();
            assert!(e.contains("percent-encoding") && !e.contains("secret"), "{e}");
        }
        for bad in ["host=/x secret", "host=/x password='secret", "host=/x secret password=y"] {
            let e = ConnInfo::split(bad).unwrap_err();
            assert!(e.contains("--hydra-db") && !e.contains("secret"), "{e}");
        }
        let c = split("password=secret host=/x");
        assert_eq!(c.redact("FATAL: secret rejected"), "FATAL: *** rejected");
    }
}
