//! A test world: real Nix, real git repositories, real servers on loopback (also used
//! by `fleetgate-server`'s tests).
#![allow(clippy::unwrap_used, dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fleetgate_channel::ChannelConfig;
use fleetgate_nix::{Nix, StoreUri};

/// Runs git with no user configuration and a fixed identity.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .args(["-c", "user.name=Test", "-c", "user.email=test@example.invalid"])
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?} in {}: {}", dir.display(), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Like [`git`], but returns None on failure.
pub fn git_try(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .unwrap();
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// A test world: keys, a bare "remote" repository, a working clone, a cache directory.
pub struct Env {
    pub tmp: tempfile::TempDir,
    pub nix: Nix,
    pub sk: PathBuf,
    pub pk: PathBuf,
    pub remote: PathBuf,
    pub work: PathBuf,
    pub cache: PathBuf,
    pub logs: Arc<Mutex<Vec<String>>>,
}

pub fn nix_for(home: &Path) -> Nix {
    Nix::detect()
        .expect("a real Nix (apt-get install nix-bin) is needed")
        .offline()
        .with_option("narinfo-cache-positive-ttl", "0")
        .with_option("sandbox", "false")
        .with_env("HOME", home)
        .with_env("XDG_CACHE_HOME", home.join(".cache"))
}

impl Env {
    pub fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_owned();
        let nix = nix_for(&root);
        let (sk, pk) = (root.join("cache.sk"), root.join("cache.pk"));
        nix.generate_key_pair("cache.test-1", &sk, &pk).unwrap();
        let remote = root.join("remote.git");
        let work = root.join("work");
        std::fs::create_dir_all(&remote).unwrap();
        git(&remote, &["init", "--bare", "--quiet", "--initial-branch=main"]);
        git(&remote, &["config", "core.logAllRefUpdates", "always"]);
        git(&remote, &["config", "uploadpack.allowAnySHA1InWant", "true"]);
        git(&root, &["init", "--quiet", "--initial-branch=main", "work"]);
        git(&work, &["remote", "add", "origin", remote.to_str().unwrap()]);
        let env =
            Self { cache: root.join("cache"), tmp, nix, sk, pk, remote, work, logs: Arc::new(Mutex::new(Vec::new())) };
        env.commit("initial");
        env
    }

    pub fn root(&self) -> &Path {
        self.tmp.path()
    }

    /// Commits on the work tree's current branch and pushes it; returns the id.
    pub fn commit(&self, msg: &str) -> String {
        std::fs::write(self.work.join("log.txt"), format!("{msg}\n")).unwrap();
        git(&self.work, &["add", "log.txt"]);
        git(&self.work, &["commit", "--quiet", "-m", msg]);
        let branch = git(&self.work, &["rev-parse", "--abbrev-ref", "HEAD"]);
        git(&self.work, &["push", "--quiet", "origin", &format!("HEAD:refs/heads/{branch}")]);
        git(&self.work, &["rev-parse", "HEAD"])
    }

    /// Builds a tiny system with real Nix; `revision` is baked into sw/bin/nixos-version
    /// the way NixOS records system.configurationRevision.
    pub fn system(&self, tag: &str, revision: Option<&str>) -> String {
        let json = match revision {
            Some(r) => {
                format!(r#"{{\"configurationRevision\":\"{r}\",\"nixosVersion\":\"24.05\"}}"#)
            }
            None => r#"{\"nixosVersion\":\"24.05\"}"#.to_owned(),
        };
        let expr = format!(
            r#"let dep = derivation {{ name = "dep-{tag}"; system = "x86_64-linux"; builder = "/bin/sh";
                  args = [ "-c" "echo dep-{tag} > $out" ]; }};
               in derivation {{ name = "nixos-system-{tag}"; system = "x86_64-linux"; builder = "/bin/sh";
                  PATH = "/usr/bin:/bin"; inherit dep;
                  args = [ "-c" "mkdir -p $out/sw/bin; echo $dep > $out/dep; printf '%s\n' '#!/bin/sh' 'cat <<EOF' '{json}' 'EOF' > $out/sw/bin/nixos-version" ]; }}"#
        );
        self.nix.legacy("nix-build").args(["--no-out-link", "-E", &expr]).run().unwrap().stdout_text()
    }

    pub fn cache_uri(&self) -> StoreUri {
        StoreUri::parse(&format!("file://{}", self.cache.display())).unwrap()
    }

    pub fn config(&self) -> ChannelConfig {
        let mut cfg =
            ChannelConfig::new(self.remote.to_str().unwrap(), self.cache_uri(), &self.sk, &self.root().join("state"))
                .unwrap();
        cfg.policy.lock_timeout = Duration::from_secs(120);
        cfg
    }

    /// The remote branch's commit.
    pub fn branch(&self, host: &str) -> Option<String> {
        git_try(&self.remote, &["rev-parse", "--verify", "--quiet", &format!("refs/heads/nixos-tested-{host}")])
    }

    pub fn log(&self) -> impl Fn(&str) + Sync + use<> {
        let logs = self.logs.clone();
        move |line: &str| logs.lock().unwrap().push(line.to_owned())
    }

    pub fn all_logs(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    /// The published manifest file for a host in the cache directory.
    pub fn manifest_file(&self, host: &str) -> PathBuf {
        self.cache.join("fleetgate/hosts").join(format!("{host}.json"))
    }

    /// Every ref of the remote, for "nothing changed" assertions.
    pub fn remote_refs(&self) -> String {
        git(&self.remote, &["for-each-ref", "--format=%(refname) %(objectname)"])
    }

    /// `fleetgate channel` options for this world: its remote, cache, signing key and state
    /// directory (`<root>/state`), and Nix without substituters or sandbox.
    pub fn channel_args(&self) -> Vec<String> {
        let cache = format!("file://{}", self.cache.display());
        [
            "--repo",
            self.remote.to_str().unwrap(),
            "--cache",
            &cache,
            "--signing-key",
            self.sk.to_str().unwrap(),
            "--state-dir",
            self.root().join("state").to_str().unwrap(),
            "--nix-option",
            "substituters=",
            "--nix-option",
            "sandbox=false",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
    }
}

/// A free loopback port (bound then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Waits until something accepts TCP connections on the port (bounded).
pub fn wait_for_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A child process killed (and reaped) on drop.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `python3 -m http.server` serving `dir` on 127.0.0.1 (read-only: PUT gets 501).
pub fn http_server(dir: &Path) -> (KillOnDrop, u16) {
    let port = free_port();
    let child = Command::new("python3")
        .args(["-m", "http.server", "--bind", "127.0.0.1", &port.to_string()])
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let guard = KillOnDrop(child);
    wait_for_port(port);
    (guard, port)
}
