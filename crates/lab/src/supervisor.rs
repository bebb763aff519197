//! The server side of the control protocol ([`crate::control`]), shared by
//! both kinds of host supervisor: the netns host's ([`crate::vmm`]) and the
//! QEMU host's ([`crate::vm::supervisor`]).
//!
//! A supervisor owns its host's [`HostStatus`] in a [`Shared`]; this module
//! binds the control socket, answers `status` and `wait` from that status on
//! its own threads, and hands every other request (the power commands) to
//! the supervisor's single event loop, whose answer it relays.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::control::{HostStatus, Power, Request, Response};

/// How long a command waits for the supervisor's event loop to take it.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

/// How the event loop answers a command: `Ok` once done, or why not.
pub type Reply = Sender<Result<(), String>>;

/// A host's status, shared between the event loop and the socket threads.
pub struct Shared {
    status: Mutex<HostStatus>,
    changed: Condvar,
}

impl Shared {
    /// A host that is off and has not booted yet.
    pub fn new(host: &str) -> Arc<Shared> {
        Arc::new(Shared {
            status: Mutex::new(HostStatus {
                host: host.to_owned(),
                power: Power::Off,
                boots: 0,
                boot_id: None,
                entry: None,
                toplevel: None,
                reason: None,
            }),
            changed: Condvar::new(),
        })
    }

    pub fn update(&self, change: impl FnOnce(&mut HostStatus)) {
        if let Ok(mut status) = self.status.lock() {
            change(&mut status);
        }
        self.changed.notify_all();
    }

    pub fn snapshot(&self) -> Option<HostStatus> {
        self.status.lock().ok().map(|s| s.clone())
    }
}

/// Binds `socket` and serves it on a thread of its own: status and waits are
/// answered there, commands go to `events` wrapped by `wrap`. Writes this
/// process's pid to `pid_file` once the socket accepts connections.
pub fn serve<E: Send + 'static>(
    socket: &Path,
    pid_file: &Path,
    shared: &Arc<Shared>,
    events: Sender<E>,
    wrap: fn(Request, Reply) -> E,
) -> anyhow::Result<()> {
    let _ = fs::remove_file(socket);
    let listener = UnixListener::bind(socket).with_context(|| format!("binding {}", socket.display()))?;
    fs::write(pid_file, std::process::id().to_string())?;
    let shared = Arc::clone(shared);
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let shared = Arc::clone(&shared);
            let events = events.clone();
            thread::spawn(move || {
                let _ = handle(stream, &shared, &events, wrap);
            });
        }
    });
    Ok(())
}

/// Tells whoever started the supervisor that the control socket is up.
pub fn announce_ready() {
    println!("ready");
    let _ = std::io::stdout().flush();
}

fn handle<E>(
    stream: UnixStream,
    shared: &Shared,
    events: &Sender<E>,
    wrap: fn(Request, Reply) -> E,
) -> std::io::Result<()> {
    // A client that connects and says nothing must not hold a thread forever.
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line)?;
    let response = match serde_json::from_str::<Request>(&line) {
        Err(err) => Response { ok: false, error: Some(format!("bad request: {err}")), status: None },
        Ok(Request::Status) => Response { ok: true, error: None, status: shared.snapshot() },
        Ok(Request::Wait { min_boots, states, timeout_ms }) => {
            wait(shared, min_boots, &states, Duration::from_millis(timeout_ms))
        }
        Ok(command) => {
            let (reply, answer) = mpsc::channel();
            let result = events
                .send(wrap(command, reply))
                .map_err(|_| "the supervisor is shutting down".to_owned())
                .and_then(|()| {
                    answer.recv_timeout(COMMAND_TIMEOUT).map_err(|_| "the supervisor did not answer in time".to_owned())
                })
                .and_then(|r| r);
            match result {
                Ok(()) => Response { ok: true, error: None, status: shared.snapshot() },
                Err(error) => Response { ok: false, error: Some(error), status: shared.snapshot() },
            }
        }
    };
    let mut text = serde_json::to_string(&response).unwrap_or_else(|_| "{\"ok\":false}".into());
    text.push('\n');
    (&stream).write_all(text.as_bytes())
}

fn wait(shared: &Shared, min_boots: u64, states: &[Power], timeout: Duration) -> Response {
    let deadline = Instant::now() + timeout;
    let Ok(mut status) = shared.status.lock() else {
        return Response { ok: false, error: Some("status lock poisoned".into()), status: None };
    };
    loop {
        if status.boots >= min_boots && states.contains(&status.power) {
            return Response { ok: true, error: None, status: Some(status.clone()) };
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Response {
                ok: false,
                error: Some(format!(
                    "timed out after {timeout:?} waiting for {states:?} (now {:?}, boot {})",
                    status.power, status.boots
                )),
                status: Some(status.clone()),
            };
        }
        status = match shared.changed.wait_timeout(status, left) {
            Ok((guard, _)) => guard,
            Err(_) => return Response { ok: false, error: Some("status lock poisoned".into()), status: None },
        };
    }
}
