//! A fleet with tested channels, for the agent's lab tests: lab hosts whose
//! generations run the product's `fleetgate agent` (the fixture's agent
//! service, installed once with `fleetgate deploy`), a channel on this
//! machine — a local bare repository, a `file://` cache served over HTTP to
//! the lab's bridge, `fleetgate channel serve` for manifests and reports —
//! and promotions through `fleetgate channel promote` or serve's signed hook.
//! On VM hosts ([`Fleet::on_vms`]) the servers listen on this machine's
//! loopback and the guests reach them through the lab's loopback forwards.
//! Every wait polls something observable with a deadline; everything started
//! here is killed (by its pid) on drop, and the lab comes down.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use fleetgate_lab::fixture::{AgentKnob, ResumeBinary};
use fleetgate_lab::testing::LabGuard;
use fleetgate_nix::process::Run;

pub const FLEETGATE: &str = env!("CARGO_BIN_EXE_fleetgate");
/// The read token of `channel serve`'s status API.
pub const READ_TOKEN: &str = "ops-read-token-0123456789";

/// A child killed and reaped on drop.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// How a host's agent gets its manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// `channel serve`'s `/v1/hosts/<host>/manifest` (ETag).
    Server,
    /// The static file next to the cache, over HTTP (Last-Modified).
    Static,
    /// A file on the host itself (`/var/lib/fleetgate-test/manifest.json`).
    HostFile,
}

/// What the agent of one host is configured with, beyond the fleet's.
#[derive(Debug, Clone)]
pub struct AgentSetup {
    pub via: Via,
    /// `[reboot]` table body.
    pub reboot: String,
    /// Extra `[health]` commands.
    pub health_commands: Vec<String>,
    /// Nix binaries that refuse any evaluation or build (and log every call).
    pub nix_guard: bool,
    /// The boot unit of the agent's module (`fleetgate resume-pending`).
    pub resume_unit: bool,
}

impl Default for AgentSetup {
    fn default() -> AgentSetup {
        AgentSetup {
            via: Via::Server,
            reboot: "allow = true\n".into(),
            health_commands: vec![],
            nix_guard: false,
            resume_unit: false,
        }
    }
}

pub struct Fleet {
    pub lab: LabGuard,
    pub tmp: tempfile::TempDir,
    /// Where the servers listen (the lab's bridge, or loopback for VMs).
    pub gateway: String,
    /// The servers' URLs as the hosts reach them: (cache, server).
    pub host_urls: Option<(String, String)>,
    /// VM hosts: everything takes minutes under TCG, not seconds.
    pub slow: bool,
    pub sk: PathBuf,
    pub public: String,
    pub repo: PathBuf,
    pub work: PathBuf,
    pub cache: PathBuf,
    pub cache_port: u16,
    pub serve_port: u16,
    pub hook_secret: String,
    pub tokens: BTreeMap<String, String>,
    cache_server: Option<Killed>,
    serve: Option<Killed>,
    pub serve_log: PathBuf,
}

/// Runs `run` with a deadline (a command that hangs fails the test instead
/// of stalling it); asserts it succeeded; returns its stdout.
pub fn must(run: Run, within: Duration) -> String {
    let line = run.command_line();
    let (status, out) = run.timeout(within).run_unchecked().unwrap_or_else(|e| panic!("{line}: {e}"));
    assert!(status.success(), "{line}: {status}\n{}\n{}", out.stdout_text(), String::from_utf8_lossy(&out.stderr));
    out.stdout_text()
}

/// git without the user's or the system's configuration, as a fixed identity.
fn git(dir: &Path, args: &[&str]) -> String {
    let run = Run::new("git")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "CI")
        .env("GIT_AUTHOR_EMAIL", "ci@example.invalid")
        .env("GIT_COMMITTER_NAME", "CI")
        .env("GIT_COMMITTER_EMAIL", "ci@example.invalid")
        .arg("-C")
        .arg(dir)
        .args(args);
    must(run, Duration::from_secs(60)).trim().to_owned()
}

/// A port free on `ip` now.
fn free_port(ip: &str) -> u16 {
    TcpListener::bind((ip, 0)).unwrap().local_addr().unwrap().port()
}

/// Waits (bounded) until something listens on `ip:port`.
fn wait_port(ip: &str, port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect((ip, port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {ip}:{port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The guard's wrappers: every call logged; evaluation and builds refused.
const NIX_GUARD: &str = r#"set -e
d=/var/lib/fleetgate-test/nix-guard
mkdir -p "$d"
for tool in nix nix-store nix-instantiate nix-build nix-shell; do
cat > "$d/$tool" <<EOF
#!/bin/sh
echo "$tool \$*" >> /var/log/nix-guard.log
case "$tool" in
  nix-instantiate|nix-build|nix-shell) echo "nix-guard: $tool refused" >> /var/log/nix-guard.log; echo "nix-guard: evaluation refused" >&2; exit 1 ;;
esac
for a in "\$@"; do
  case "\$a" in
    eval|build|flake|repl|develop|shell|run|bundle|print-dev-env|edit|*.drv|--expr|-E) echo "nix-guard: $tool \$a refused" >> /var/log/nix-guard.log; echo "nix-guard: evaluation or build refused" >&2; exit 1 ;;
  esac
done
NIX_CONFIG="max-jobs = 0
builders =
allow-import-from-derivation = false" exec /usr/bin/$tool "\$@"
EOF
chmod 755 "$d/$tool"
done
"#;

impl Fleet {
    /// A lab of `hosts`, and a channel for them (nothing promoted yet).
    pub fn up(hosts: &[&str]) -> Fleet {
        let lab = LabGuard::up(hosts).expect("lab");
        let gateway = lab.state().gateway.clone();
        Fleet::on(lab, gateway)
    }

    /// A channel for a lab of VM hosts: the servers on this machine's
    /// loopback, each VM's loopback forwards pointed at them.
    pub fn on_vms(lab: LabGuard) -> Fleet {
        let mut fleet = Fleet::on(lab, "127.0.0.1".to_owned());
        let [cache_port, server_port] = fleetgate_lab::vm::forward::GUEST_PORTS;
        for host in fleet.lab.hosts() {
            let dir = fleet.lab.dir().host(host.name());
            fleetgate_lab::vm::forward::set(&dir, cache_port, fleet.cache_port).expect("forward");
            fleetgate_lab::vm::forward::set(&dir, server_port, fleet.serve_port).expect("forward");
        }
        let at = |port: u16| format!("http://{}:{port}", fleetgate_lab::vm::forward::GUEST_ADDRESS);
        fleet.host_urls = Some((at(cache_port), at(server_port)));
        fleet.slow = true;
        fleet
    }

    fn on(lab: LabGuard, gateway: String) -> Fleet {
        let tmp = tempfile::tempdir().expect("tmp");
        let root = tmp.path().to_owned();
        let (sk, pk) = (root.join("cache.sk"), root.join("cache.pk"));
        must(
            Run::new("nix-store").args(["--generate-binary-cache-key", "agent-test-1"]).arg(&sk).arg(&pk),
            Duration::from_secs(60),
        );
        let public = std::fs::read_to_string(&pk).unwrap().trim().to_owned();
        let repo = root.join("fleet.git");
        std::fs::create_dir_all(&repo).unwrap();
        git(&repo, &["init", "--bare", "--quiet", "--initial-branch=main"]);
        git(&root, &["init", "--quiet", "--initial-branch=main", "work"]);
        let work = root.join("work");
        git(&work, &["remote", "add", "origin", repo.to_str().unwrap()]);
        let cache = root.join("cache");
        std::fs::create_dir_all(cache.join("fleetgate/hosts")).unwrap();
        let tokens: BTreeMap<String, String> =
            lab.hosts().map(|h| (h.name().to_owned(), format!("token-of-{}-0123456789abcdef", h.name()))).collect();
        let text: String = tokens.iter().map(|(h, t)| format!("{h} {t}\n")).collect();
        std::fs::write(root.join("host-tokens"), text).unwrap();
        let hook_secret = "hook-secret-0123456789abcdef".to_owned();
        std::fs::write(root.join("hook-secret"), &hook_secret).unwrap();
        std::fs::write(root.join("read-tokens"), format!("ops {READ_TOKEN}\n")).unwrap();
        let mut fleet = Fleet {
            cache_port: free_port(&gateway),
            serve_port: free_port(&gateway),
            serve_log: root.join("serve.log"),
            lab,
            tmp,
            gateway,
            host_urls: None,
            slow: false,
            sk,
            public,
            repo,
            work,
            cache,
            hook_secret,
            tokens,
            cache_server: None,
            serve: None,
        };
        fleet.start_cache();
        fleet.start_serve();
        fleet
    }

    fn root(&self) -> &Path {
        self.tmp.path()
    }

    /// The `file://` cache, served read-only over HTTP on the lab's bridge
    /// (as a CDN would serve it).
    fn start_cache(&mut self) {
        let child = Command::new("python3")
            .args(["-m", "http.server", "--bind", &self.gateway, &self.cache_port.to_string(), "--directory"])
            .arg(&self.cache)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.cache_server = Some(Killed(child));
        wait_port(&self.gateway, self.cache_port);
    }

    /// The channel's options: this fleet's repository, its cache (without
    /// compression: promotions in tests should not spend minutes in xz), key
    /// and state, and Nix without substituters or sandbox.
    fn channel_args(&self) -> Vec<String> {
        let cache = format!("file://{}?compression=none", self.cache.display());
        let state = self.root().join("channel-state");
        let pairs = [
            ("--repo", self.repo.to_str().unwrap()),
            ("--cache", cache.as_str()),
            ("--signing-key", self.sk.to_str().unwrap()),
            ("--state-dir", state.to_str().unwrap()),
            ("--nix-option", "substituters="),
            ("--nix-option", "sandbox=false"),
        ];
        pairs.iter().flat_map(|(k, v)| [(*k).to_owned(), (*v).to_owned()]).collect()
    }

    /// `fleetgate channel serve` on the bridge (same port and database every time).
    pub fn start_serve(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.serve_log).unwrap();
        let child = Command::new(FLEETGATE)
            .args(["channel", "serve", "--listen", &format!("{}:{}", self.gateway, self.serve_port), "--db"])
            .arg(self.root().join("serve.sqlite"))
            .arg("--host-tokens-file")
            .arg(self.root().join("host-tokens"))
            .arg("--hook-secret-file")
            .arg(self.root().join("hook-secret"))
            .arg("--read-tokens-file")
            .arg(self.root().join("read-tokens"))
            .args(self.channel_args())
            .env("HOME", self.root())
            .env("XDG_CACHE_HOME", self.root().join(".cache"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.serve = Some(Killed(child));
        wait_port(&self.gateway, self.serve_port);
    }

    /// Stops `channel serve` (SIGKILL: the server is just gone).
    pub fn stop_serve(&mut self) {
        self.serve = None;
    }

    pub fn server_url(&self) -> String {
        format!("http://{}:{}", self.gateway, self.serve_port)
    }

    pub fn cache_url(&self) -> String {
        format!("http://{}:{}", self.gateway, self.cache_port)
    }

    /// The cache's and the server's URLs as the hosts reach them.
    fn urls_from_hosts(&self) -> (String, String) {
        self.host_urls.clone().unwrap_or_else(|| (self.cache_url(), self.server_url()))
    }

    /// The agent configuration of `host`.
    pub fn agent_config(&self, host: &str, setup: &AgentSetup) -> String {
        let (cache_url, server_url) = self.urls_from_hosts();
        // Under TCG a switch's activation or a health check takes a minute.
        let (timeout, health) = if self.slow { (300, 180) } else { (60, 60) };
        let manifest = match setup.via {
            Via::Server => String::new(),
            Via::Static => format!("manifest = \"{cache_url}/fleetgate/hosts/{{host}}.json\"\n"),
            Via::HostFile => "manifest = \"file:///var/lib/fleetgate-test/manifest.json\"\n".to_owned(),
        };
        let guard = if setup.nix_guard { "nix_bin_dir = \"/var/lib/fleetgate-test/nix-guard\"\n" } else { "" };
        let commands: Vec<String> = setup.health_commands.iter().map(|c| format!("{c:?}")).collect();
        format!(
            "host = \"{host}\"\nserver = \"{}\"\n{manifest}{guard}trusted_keys = [\"{}\"]\ncaches = [\"{}\"]\n\
             token_file = \"/var/lib/fleetgate/token\"\npoll_interval = 2\nmax_backoff = 8\nreport_every = \"1h\"\n\n\
             [reboot]\n{}\n[health]\nunits = [\"app.service\"]\ncommands = [{}]\ntimeout = {health}\n\n\
             [timeouts]\nhttp = 10\nconfirm = {timeout}\nactivation = {timeout}\n",
            server_url,
            self.public,
            cache_url,
            setup.reboot,
            commands.join(", ")
        )
    }

    /// Installs the agent on `hosts` the way an operator does once: its
    /// token on the host, the agent service in the next generation, pushed
    /// with `fleetgate deploy`. Returns that generation per host.
    pub fn install_agents(&self, setups: &[(&str, AgentSetup)]) -> BTreeMap<String, String> {
        let binary = ResumeBinary::at(Path::new(FLEETGATE)).expect("the binary");
        for (host, setup) in setups {
            let token = &self.tokens[*host];
            let mut script = format!(
                "set -e\nmkdir -p /var/lib/fleetgate /var/lib/fleetgate-test\numask 077\nprintf '%s' '{token}' > /var/lib/fleetgate/token\n"
            );
            if setup.nix_guard {
                script.push_str(NIX_GUARD);
            }
            self.lab.ssh(host, &script).expect("ssh");
            let config = self.agent_config(host, setup);
            let resume = setup.resume_unit.then(|| binary.clone());
            self.lab
                .edit_host(host, |k| {
                    k.revision = 2;
                    k.agent = Some(AgentKnob { binary: binary.clone(), config });
                    k.resume_binary = resume;
                })
                .expect("edit");
        }
        let names: Vec<&str> = setups.iter().map(|(h, _)| *h).collect();
        let systems = self.lab.build(&names).expect("build");
        let history = self.root().join("history.sqlite");
        let deploy = Run::new(FLEETGATE)
            .arg("deploy")
            .arg(format!("path:{}#{}", self.lab.fleet_dir().display(), names.join(",")))
            .arg("--history")
            .arg(history)
            .args(["--strategy", "all", "--confirm-timeout", if self.slow { "300" } else { "30" }])
            .env("NIX_CONFIG", fleetgate_lab::lab::NIX_CONFIG);
        must(deploy, Duration::from_secs(if self.slow { 1800 } else { 900 }));
        systems
    }

    /// A new generation of `hosts`: every host's knobs at `revision` (and
    /// `edit`ed), built, and a commit for it; returns the commit and the
    /// systems.
    pub fn release(
        &self,
        hosts: &[&str],
        revision: u64,
        message: &str,
        edit: impl Fn(&str, &mut fleetgate_lab::fixture::HostKnobs),
    ) -> (String, BTreeMap<String, String>) {
        for h in hosts {
            self.lab
                .edit_host(h, |k| {
                    k.revision = revision;
                    edit(h, k);
                })
                .expect("edit");
        }
        let systems = self.lab.build(hosts).expect("build");
        (self.commit(message), systems)
    }

    /// A commit in the fleet's repository (pushed); returns its id.
    pub fn commit(&self, msg: &str) -> String {
        std::fs::write(self.work.join("log.txt"), format!("{msg}\n")).unwrap();
        git(&self.work, &["add", "log.txt"]);
        git(&self.work, &["commit", "--quiet", "-m", msg]);
        git(&self.work, &["push", "--quiet", "origin", "HEAD:refs/heads/main"]);
        git(&self.work, &["rev-parse", "HEAD"])
    }

    /// CI's promotion from the command line: cache, branch, manifest next to the cache.
    pub fn promote(&self, host: &str, commit: &str, system: &str) {
        let promote = Run::new(FLEETGATE)
            .args(["channel", "promote", "--host", host, "--commit", commit, "--system", system])
            .args(self.channel_args())
            .env("HOME", self.root())
            .env("XDG_CACHE_HOME", self.root().join(".cache"));
        must(promote, Duration::from_secs(600));
    }

    /// CI's promotion through serve's signed hook (GitHub Actions style);
    /// waits (bounded) for the job to finish.
    pub fn promote_via_hook(&self, host: &str, commit: &str, system: &str) {
        let body = format!(
            r#"{{"host":"{host}","commit":"{commit}","system":"{system}","build":"https://ci.example/run/1"}}"#
        );
        let body_file = self.root().join("hook-body.json");
        std::fs::write(&body_file, &body).unwrap();
        let hmac = must(
            Run::new("openssl").args(["dgst", "-sha256", "-hmac", &self.hook_secret]).arg(&body_file),
            Duration::from_secs(30),
        );
        let hex = hmac.rsplit(' ').next().unwrap().trim().to_owned();
        let answer = must(
            Run::new("curl")
                .args(["-sS", "--max-time", "30", "-X", "POST", "-H", "Content-Type: application/json"])
                .args(["-H", &format!("X-Hub-Signature-256: sha256={hex}"), "--data-binary"])
                .arg(format!("@{}", body_file.display()))
                .arg(format!("{}/hooks/github", self.server_url())),
            Duration::from_secs(60),
        );
        let job: serde_json::Value = serde_json::from_str(&answer).unwrap_or_else(|_| panic!("{answer}"));
        let url = format!("{}{}", self.server_url(), job["status_url"].as_str().unwrap_or_else(|| panic!("{job}")));
        let done = poll_until(Duration::from_secs(180), || {
            let (_, out) = Run::new("curl")
                .args(["-sS", "--max-time", "10", &url])
                .timeout(Duration::from_secs(30))
                .run_unchecked()
                .ok()?;
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
            matches!(v["state"].as_str(), Some("succeeded" | "failed")).then_some(v)
        });
        let done = done.expect("the promotion job ends");
        assert_eq!(done["state"], "succeeded", "{done:#}");
    }

    /// The server's fleet status, the status model the agents' reports feed
    /// (`GET /v1/status` with a read token).
    pub fn server_status(&self) -> serde_json::Value {
        let url = format!("{}/v1/status", self.server_url());
        let auth = format!("Authorization: Bearer {READ_TOKEN}");
        let (_, out) = Run::new("curl")
            .args(["-sS", "--max-time", "10", "-H", &auth, &url])
            .timeout(Duration::from_secs(30))
            .run_unchecked()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
    }

    /// `fleetgate agent <args>` on `host`, with the agent and configuration of its running generation.
    pub fn agent_command(&self, host: &str, args: &str) -> anyhow::Result<String> {
        let script = format!(
            "u=/run/current-system/etc/systemd/system/fleetgate-agent.service\n\
             cmd=$(sed -n \"s|^ExecStart=.*\\(/nix/store/[^ ]*/bin/fleetgate\\) agent --config \\([^ ]*\\).*|\\1 agent {args} --config \\2|p\" $u)\n\
             $cmd"
        );
        self.lab.ssh(host, &script)
    }

    /// `fleetgate agent status --json` on `host` (`None` while it does not answer: rebooting).
    pub fn try_agent_status(&self, host: &str) -> Option<serde_json::Value> {
        serde_json::from_str(&self.agent_command(host, "status --json").ok()?).ok()
    }

    /// `fleetgate agent status --json` on `host`.
    pub fn agent_status(&self, host: &str) -> serde_json::Value {
        let text = self.agent_command(host, "status --json").expect("ssh");
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{host}: {e}: {text}"))
    }

    /// SIGKILLs `host`'s agent (its pid from the lock it holds).
    pub fn kill_agent(&self, host: &str) {
        self.lab.ssh(host, "set -e\npid=$(cat /var/lib/fleetgate/agent/lock)\nkill -9 \"$pid\"").expect("kill");
    }

    /// Starts `host`'s agent service again, as its service manager would.
    pub fn restart_agent(&self, host: &str) {
        self.lab.ssh(host, "systemctl restart fleetgate-agent.service").expect("restart");
    }

    /// Writes `text` as the manifest file the host's agent reads (`Via::HostFile`), atomically.
    pub fn put_host_manifest(&self, host: &str, text: &str) {
        let script = format!(
            "set -e\nmkdir -p /var/lib/fleetgate-test\ncat > /var/lib/fleetgate-test/manifest.json.tmp <<'FLEETGATE_EOF'\n{text}\nFLEETGATE_EOF\nmv -f /var/lib/fleetgate-test/manifest.json.tmp /var/lib/fleetgate-test/manifest.json\n"
        );
        self.lab.ssh(host, &script).expect("ssh");
    }

    /// The manifest the last promotion of `host` published next to the cache.
    pub fn published_manifest(&self, host: &str) -> String {
        std::fs::read_to_string(self.cache.join(format!("fleetgate/hosts/{host}.json"))).unwrap()
    }

    /// Polls `host`'s agent status until `want` holds (at most `within`).
    pub fn wait_agent(
        &self,
        host: &str,
        within: Duration,
        what: &str,
        want: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let mut last = serde_json::Value::Null;
        let got = poll_until(within, || {
            last = self.try_agent_status(host)?;
            want(&last).then(|| last.clone())
        });
        got.unwrap_or_else(|| {
            panic!("{host}: {what} within {within:?}; status: {last:#}\nlog:\n{}", self.agent_log(host))
        })
    }

    /// The agent's log: its file on netns hosts, the journal of the
    /// agent's and the resume unit under a real systemd (VMs).
    pub fn agent_log(&self, host: &str) -> String {
        let script = "cat /var/log/fleetgate-agent.log 2>/dev/null\n\
                      if [ -d /run/systemd/system ]; then\n\
                      journalctl --no-pager -o short-monotonic -u fleetgate-resume.service -u fleetgate-agent.service\n\
                      fi\ntrue";
        self.lab.ssh(host, script).unwrap_or_default()
    }

    fn readlink(&self, host: &str, path: &str) -> String {
        self.lab.ssh(host, &format!("readlink -f {path}")).expect("ssh").trim().to_owned()
    }

    /// current, booted, profile — from the host — and the boot loader's
    /// default, as the agent reads it from the boot loader's own files.
    pub fn truths(&self, host: &str) -> (String, String, String, String) {
        let status = self.agent_status(host);
        let default = status["report"]["default"]["system"].as_str().unwrap_or("").to_owned();
        (
            self.readlink(host, "/run/current-system"),
            self.readlink(host, "/run/booted-system"),
            self.readlink(host, "/nix/var/nix/profiles/system"),
            default,
        )
    }

    /// Asserts what `host` runs, booted, has its profile on and boots by default.
    pub fn assert_on(&self, host: &str, current: &str, booted: &str, default_and_profile: &str) {
        let (c, b, p, d) = self.truths(host);
        assert_eq!(
            (c.as_str(), b.as_str(), p.as_str(), d.as_str()),
            (current, booted, default_and_profile, default_and_profile),
            "{host}: (current, booted, profile, default)\nlog:\n{}",
            self.agent_log(host)
        );
    }

    /// Lines the Nix guard logged on `host`.
    pub fn nix_guard_log(&self, host: &str) -> String {
        self.lab.ssh(host, "cat /var/log/nix-guard.log 2>/dev/null; true").unwrap_or_default()
    }
}

impl Fleet {
    /// Stops the servers, brings the lab down and asserts nothing was left behind.
    pub fn down(self) {
        let Fleet { lab, serve, cache_server, .. } = self;
        drop(serve);
        drop(cache_server);
        let left = lab.down().expect("down");
        assert!(left.is_empty(), "left behind: {left:?}");
    }
}

/// Calls `f` about every half second until it returns `Some` or `within` passes.
pub fn poll_until<T>(within: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Follows a log file (bounded) until a line contains `needle`.
pub fn wait_line(rx: &mpsc::Receiver<String>, needle: &str, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(line) if line.contains(needle) => return true,
            Ok(_) => {}
            Err(_) => return false,
        }
    }
    false
}

/// Lines of a child's stderr, on a channel.
pub fn lines_of(child: &mut Child) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    rx
}
