//! A minimal W3C WebDriver client for the dashboard tests: Debian's `chromedriver`
//! driving Debian's `chromium`, headless, over loopback.
//!
//! Written here rather than taken from a crate (fantoccini, thirtyfour): the tests need
//! six endpoints of plain JSON over HTTP on 127.0.0.1, which `ureq` (already a
//! dependency) speaks; those crates bring an async runtime and a TLS stack the tests
//! would never use.
//!
//! The browser's processes end with the [`Browser`]: chromedriver starts in a process
//! group of its own (Chromium's browser, zygotes and renderers inherit it) and drop ends
//! the session, then the group; Chromium's crash handlers (which leave the group with a
//! session of their own) end with the browser. Drop then waits, within [`WAIT`], until no
//! process names the browser's directory — its home, configuration and profile, all in
//! one temporary directory, so nothing is written to the user's `~/.config`.
//! `dashboard_browser_processes_end_with_the_browser` checks it.
#![allow(clippy::unwrap_used, dead_code)]

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

/// The W3C element reference key.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
/// The longest any wait in these tests may take.
pub const WAIT: Duration = Duration::from_secs(60);

/// chromedriver and a Chromium session; both end on drop, with every process they started.
pub struct Browser {
    driver: Child,
    agent: ureq::Agent,
    base: String,
    session: String,
    /// HOME, XDG_CONFIG_HOME, XDG_CACHE_HOME and the profile of the browser.
    dir: tempfile::TempDir,
}

/// The processes (pids) whose command line or environment names `dir`: what a browser
/// started there left running. Zombies (no command line) are not counted.
pub fn processes_naming(dir: &Path) -> Vec<u32> {
    let needle = dir.as_os_str().as_encoded_bytes();
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    let mut pids = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let names = ["cmdline", "environ"].iter().any(|f| {
            std::fs::read(entry.path().join(f)).is_ok_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle))
        });
        if names && pid != std::process::id() {
            pids.push(pid);
        }
    }
    pids
}

/// Sends `signal` (`TERM`, `KILL`) to `target` (a pid, or `-pgid` for a group).
fn signal(signal: &str, target: &str) {
    let _ = Command::new("kill").args([format!("-{signal}"), "--".to_owned(), target.to_owned()]).status();
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Browser {
    /// Starts chromedriver and a headless Chromium with a fresh profile.
    pub fn start() -> Browser {
        for tool in ["/usr/bin/chromium", "/usr/bin/chromedriver"] {
            assert!(
                Path::new(tool).exists(),
                "{tool} is needed: apt-get install chromium chromium-driver (scripts/setup installs them)"
            );
        }
        let dir = tempfile::Builder::new().prefix("fleetgate-chromium-").tempdir().unwrap();
        let port = free_port();
        let driver = Command::new("/usr/bin/chromedriver")
            .args([format!("--port={port}"), "--allowed-ips=127.0.0.1".to_owned()])
            .env("HOME", dir.path())
            .env("XDG_CONFIG_HOME", dir.path().join("config"))
            .env("XDG_CACHE_HOME", dir.path().join("cache"))
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let agent: ureq::Agent =
            ureq::Agent::config_builder().http_status_as_error(false).timeout_global(Some(WAIT)).build().into();
        let base = format!("http://127.0.0.1:{port}");
        let profile = dir.path().join("profile");
        // From here on, a panic drops the browser: its processes end.
        let mut browser = Browser { driver, agent, base, session: String::new(), dir };
        let deadline = Instant::now() + WAIT;
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(50)); // pace the connection attempts
        }
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-crash-reporter",
            "--window-size=1280,900",
            &format!("--user-data-dir={}", profile.display()),
        ];
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": "/usr/bin/chromium", "args": args}
        }}});
        let created = browser.call("POST", "/session", Some(caps));
        browser.session = created["sessionId"].as_str().unwrap_or_else(|| panic!("no session: {created}")).to_owned();
        browser
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{path}", self.base);
        let resp = match (method, body) {
            ("GET", _) => self.agent.get(&url).call(),
            ("DELETE", _) => self.agent.delete(&url).call(),
            (_, b) => self.agent.post(&url).send_json(b.unwrap_or_else(|| json!({}))),
        };
        let mut resp = resp.unwrap();
        let code = resp.status().as_u16();
        let v: Value =
            serde_json::from_str(&resp.body_mut().with_config().limit(64 << 20).read_to_string().unwrap()).unwrap();
        assert_eq!(code, 200, "WebDriver {method} {path}: {v}");
        v["value"].clone()
    }

    fn session_path(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    /// Opens `url`.
    pub fn goto(&self, url: &str) {
        self.call("POST", &self.session_path("/url"), Some(json!({ "url": url })));
    }

    /// The current URL.
    pub fn url(&self) -> String {
        self.call("GET", &self.session_path("/url"), None).as_str().unwrap().to_owned()
    }

    /// Runs `script` (a function body; `arguments` holds `args`) and returns its value.
    pub fn eval(&self, script: &str, args: Value) -> Value {
        self.call("POST", &self.session_path("/execute/sync"), Some(json!({ "script": script, "args": args })))
    }

    /// The first element matching `css` (panics if there is none).
    pub fn find(&self, css: &str) -> String {
        let v = self.call("POST", &self.session_path("/element"), Some(json!({"using": "css selector", "value": css})));
        v[ELEMENT].as_str().unwrap_or_else(|| panic!("no element {css}: {v}")).to_owned()
    }

    /// Types `text` into the element.
    pub fn type_into(&self, css: &str, text: &str) {
        let e = self.find(css);
        self.call("POST", &self.session_path(&format!("/element/{e}/value")), Some(json!({ "text": text })));
    }

    /// Clicks the element.
    pub fn click(&self, css: &str) {
        let e = self.find(css);
        self.call("POST", &self.session_path(&format!("/element/{e}/click")), Some(json!({})));
    }

    /// The element's rendered text.
    pub fn text(&self, css: &str) -> String {
        let e = self.find(css);
        self.call("GET", &self.session_path(&format!("/element/{e}/text")), None).as_str().unwrap().to_owned()
    }

    /// Waits (at most [`WAIT`]) until `script` returns true; panics with `what` otherwise.
    pub fn wait_until(&self, what: &str, script: &str) {
        let deadline = Instant::now() + WAIT;
        while self.eval(script, json!([])) != json!(true) {
            assert!(Instant::now() < deadline, "never: {what}");
            std::thread::sleep(Duration::from_millis(100)); // pace the checks
        }
    }

    /// Resizes the window.
    pub fn resize(&self, width: u32, height: u32) {
        self.call("POST", &self.session_path("/window/rect"), Some(json!({ "width": width, "height": height })));
    }

    /// A PNG of the window, written to `path`.
    pub fn screenshot(&self, path: &Path) {
        let b64 = self.call("GET", &self.session_path("/screenshot"), None);
        let png = base64::engine::general_purpose::STANDARD.decode(b64.as_str().unwrap()).unwrap();
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(path, png).unwrap();
    }

    /// Logs in at `base`/login with `token`.
    pub fn log_in(&self, base: &str, token: &str) {
        self.goto(&format!("{base}/login"));
        self.type_into("input[name=token]", token);
        self.click("button[type=submit]");
        self.wait_until("the fleet page after logging in", "return document.body.dataset.page === 'fleet'");
    }
}

impl Browser {
    /// The directory holding the browser's home and profile.
    pub fn dir(&self) -> PathBuf {
        self.dir.path().to_owned()
    }

    /// chromedriver's process id.
    pub fn driver_pid(&self) -> u32 {
        self.driver.id()
    }
}

impl Drop for Browser {
    /// Ends the session (Chromium closes), then chromedriver's process group, then waits
    /// (within [`WAIT`]) for every process naming the browser's directory to end — killing
    /// those still there after a grace period. Never panics (it may run while unwinding):
    /// `dashboard_browser_processes_end_with_the_browser` asserts the outcome.
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self.agent.delete(&format!("{}/session/{}", self.base, self.session)).call();
        }
        let group = format!("-{}", self.driver.id());
        signal("TERM", &group);
        let deadline = Instant::now() + WAIT;
        let grace = Instant::now() + Duration::from_secs(5);
        let mut killed = false;
        loop {
            let driver_gone = !matches!(self.driver.try_wait(), Ok(None));
            let left = processes_naming(self.dir.path());
            if driver_gone && left.is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                eprintln!("browser processes still running after {WAIT:?}: {left:?}");
                break;
            }
            if !killed && Instant::now() >= grace {
                signal("KILL", &group);
                for pid in left {
                    signal("KILL", &pid.to_string());
                }
                killed = true;
            }
            std::thread::sleep(Duration::from_millis(50)); // pace the checks
        }
        let _ = self.driver.wait();
    }
}
