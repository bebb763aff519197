//! A minimal W3C WebDriver client for the dashboard tests: Debian's `chromedriver`
//! driving Debian's `chromium`, headless, over loopback.
//!
//! Written here rather than taken from a crate (fantoccini, thirtyfour): the tests need
//! six endpoints of plain JSON over HTTP on 127.0.0.1, which `ureq` (already a
//! dependency) speaks; those crates bring an async runtime and a TLS stack the tests
//! would never use.
#![allow(clippy::unwrap_used, dead_code)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

/// The W3C element reference key.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
/// The longest any wait in these tests may take.
pub const WAIT: Duration = Duration::from_secs(60);

/// chromedriver and a Chromium session; both end on drop.
pub struct Browser {
    driver: Child,
    agent: ureq::Agent,
    base: String,
    session: String,
    _profile: tempfile::TempDir,
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
        let port = free_port();
        let driver = Command::new("/usr/bin/chromedriver")
            .args([format!("--port={port}"), "--allowed-ips=127.0.0.1".to_owned()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let agent: ureq::Agent =
            ureq::Agent::config_builder().http_status_as_error(false).timeout_global(Some(WAIT)).build().into();
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + WAIT;
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(50)); // pace the connection attempts
        }
        let profile = tempfile::Builder::new().prefix("fleetgate-chromium-").tempdir().unwrap();
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1280,900",
            &format!("--user-data-dir={}", profile.path().display()),
        ];
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": "/usr/bin/chromium", "args": args}
        }}});
        let mut browser = Browser { driver, agent, base, session: String::new(), _profile: profile };
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

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self.agent.delete(&format!("{}/session/{}", self.base, self.session)).call();
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
