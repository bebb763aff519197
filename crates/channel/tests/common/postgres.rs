//! A private PostgreSQL cluster for tests: `initdb` (as the unprivileged `postgres` user
//! when the tests run as root), listening only on a Unix socket in a temporary directory
//! (no TCP), password authentication (scram-sha-256). Used by channel's Hydra-database
//! tests and by `fleetgate-server`'s store tests.
#![allow(clippy::unwrap_used, dead_code)]

use std::io::Write as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::PathBuf;
use std::time::Duration;

use fleetgate_nix::process::Run;

const WAIT: Duration = Duration::from_secs(60);

/// PostgreSQL's server binaries (`initdb`, `pg_ctl`): Debian's `postgresql` package puts
/// them in /usr/lib/postgresql/<major>/bin; the newest major wins.
pub fn server_bin_dir() -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let e = e.ok()?;
            let major = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((major, bin))
        })
        .collect();
    found.sort();
    found
        .pop()
        .map(|(_, bin)| bin)
        .expect("PostgreSQL's server is needed: apt-get install postgresql (scripts/setup installs it)")
}

/// A private PostgreSQL cluster. Dropping it (also while a test panics) stops the server
/// (`pg_ctl stop -m immediate`) and removes the directory with the data and the socket.
pub struct Postgres {
    pub role: String,
    pub password: String,
    pub bin: PathBuf,
    /// `runuser -u postgres --` when running as root (initdb refuses root), else empty.
    pub as_owner: Vec<String>,
    pub data: PathBuf,
    pub socket_dir: PathBuf,
    // Last: removed after `drop` has stopped the server.
    pub tmp: tempfile::TempDir,
}

impl Postgres {
    /// initdb + start; the superuser is `role` with `password`.
    pub fn start(role: &str, password: &str) -> Self {
        let tmp = tempfile::Builder::new().prefix("fleetgate-pg-").tempdir().unwrap();
        let root_owned = tmp.path().metadata().unwrap().uid() == 0;
        let home = tmp.path().join("pg");
        std::fs::create_dir(&home).unwrap();
        let pwfile = home.join("pwfile");
        std::fs::write(&pwfile, format!("{password}\n")).unwrap();
        let mut as_owner = Vec::new();
        if root_owned {
            // The unprivileged user Debian's postgresql package creates.
            let id = |flag: &str| -> u32 {
                Run::new("id").args([flag, "postgres"]).timeout(WAIT).run().unwrap().stdout_text().parse().unwrap()
            };
            let (uid, gid) = (id("-u"), id("-g"));
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
            for p in [&home, &pwfile] {
                std::os::unix::fs::chown(p, Some(uid), Some(gid)).unwrap();
            }
            as_owner = ["runuser", "-u", "postgres", "--"].map(String::from).to_vec();
        }
        let pg = Self {
            role: role.to_owned(),
            password: password.to_owned(),
            bin: server_bin_dir(),
            as_owner,
            data: home.join("data"),
            socket_dir: home.clone(),
            tmp,
        };
        pg.server_tool("initdb")
            .args(["--auth=scram-sha-256", "--username", role, "--encoding=UTF8", "--no-locale"])
            .args(["--no-sync", "--no-instructions", "--pgdata"])
            .arg(&pg.data)
            .arg(format!("--pwfile={}", pwfile.display()))
            .run()
            .unwrap();
        std::fs::remove_file(&pwfile).unwrap();
        // No TCP at all: only the Unix socket in our own directory.
        let mut conf = std::fs::OpenOptions::new().append(true).open(pg.data.join("postgresql.conf")).unwrap();
        writeln!(
            conf,
            "listen_addresses = ''\nunix_socket_directories = '{}'\nfsync = off\nmax_connections = 20",
            pg.socket_dir.display()
        )
        .unwrap();
        drop(conf);
        let log = pg.data.join("server.log");
        let started = pg
            .server_tool("pg_ctl")
            .args(["start", "--wait", "--timeout=30", "--pgdata"])
            .arg(&pg.data)
            .arg(format!("--log={}", log.display()))
            .run();
        if let Err(e) = started {
            panic!("pg_ctl start: {e}\n{}", std::fs::read_to_string(&log).unwrap_or_default());
        }
        pg
    }

    /// A server program, run as the cluster's owner.
    pub fn server_tool(&self, name: &str) -> Run {
        let program = self.bin.join(name);
        match self.as_owner.split_first() {
            Some((runuser, rest)) => Run::new(runuser).args(rest).arg(program),
            None => Run::new(program),
        }
        .timeout(WAIT)
    }

    /// Runs psql as a client (password through the environment); returns stdout.
    pub fn psql(&self, db: &str, args: &[&str]) -> String {
        Run::new("psql")
            .args(["--no-psqlrc", "--no-password", "--set", "ON_ERROR_STOP=1", "--tuples-only", "--no-align"])
            .args(["--dbname", &self.keyword_value(db, None)])
            .args(args)
            .env("PGPASSWORD", &self.password)
            .timeout(WAIT)
            .run()
            .unwrap()
            .stdout_text()
    }

    /// `host='…' dbname='…' user='<role>' [password='…']`, quoted the way libpq reads it.
    pub fn keyword_value(&self, db: &str, password: Option<&str>) -> String {
        let q = |v: &str| format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"));
        let mut s = format!("host={} dbname={} user={}", q(self.socket_dir.to_str().unwrap()), q(db), q(&self.role));
        if let Some(p) = password {
            s.push_str(&format!(" password = {}", q(p)));
        }
        s
    }

    pub fn postmaster_pid(&self) -> Option<u32> {
        let text = std::fs::read_to_string(self.data.join("postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let pid = self.postmaster_pid();
        let stopped = self
            .server_tool("pg_ctl")
            .args(["stop", "--mode=immediate", "--wait", "--timeout=30", "--pgdata"])
            .arg(&self.data)
            .run();
        if let (Err(e), Some(pid)) = (stopped, pid) {
            // Only the postmaster this guard started (its pid from its own data dir).
            eprintln!("pg_ctl stop failed ({e}); killing postmaster {pid}");
            let _ = Run::new("kill").args(["-KILL", &pid.to_string()]).timeout(WAIT).run();
        }
        // `tmp` (data, socket, log) is removed when the fields drop, right after this.
    }
}
