//! A client of QEMU's Machine Protocol (QMP): JSON objects, one per line, over
//! the VM's unix socket. After the greeting and `qmp_capabilities`, a thread
//! reads every message QEMU sends (command returns, errors and asynchronous
//! events such as `RESET` or `SHUTDOWN`) and hands it to the supervisor's
//! event loop; commands are written without waiting, their outcome arrives
//! as a message like any other.
//!
//! Reference: QEMU's `docs/interop/qmp-spec.rst` (greeting `{"QMP": …}`,
//! `{"execute": …, "arguments": …, "id": …}`, `{"return": …}`,
//! `{"error": {"class", "desc"}}`, `{"event", "data", "timestamp"}`).

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::thread;
use std::time::Duration;

use serde_json::{Value, json};

use crate::process::poll_until;

/// The longest line read from QEMU; QMP messages of interest are far smaller.
const MAX_LINE: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    #[error("QEMU's QMP socket {path} did not accept a connection within {timeout:?}")]
    Connect { path: String, timeout: Duration },
    #[error("talking to QEMU over QMP")]
    Io(#[from] std::io::Error),
    #[error("QEMU's QMP {0}")]
    Protocol(String),
}

/// What QEMU said.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// An asynchronous event (`RESET`, `SHUTDOWN`, `POWERDOWN`…) and its data.
    Event { name: String, data: Value },
    /// A command succeeded.
    Return { id: Option<String> },
    /// A command failed.
    Error { id: Option<String>, description: String },
    /// The connection ended (QEMU exited).
    Closed,
}

impl Message {
    /// Parses one line QEMU sent; `None` for lines that are none of the above.
    pub fn parse(line: &str) -> Option<Message> {
        let value: Value = serde_json::from_str(line).ok()?;
        let id = value.get("id").and_then(Value::as_str).map(str::to_owned);
        if let Some(name) = value.get("event").and_then(Value::as_str) {
            let data = value.get("data").cloned().unwrap_or(Value::Null);
            return Some(Message::Event { name: name.to_owned(), data });
        }
        if value.get("return").is_some() {
            return Some(Message::Return { id });
        }
        let error = value.get("error")?;
        let class = error.get("class").and_then(Value::as_str).unwrap_or("Error");
        let desc = error.get("desc").and_then(Value::as_str).unwrap_or("");
        Some(Message::Error { id, description: format!("{class}: {desc}") })
    }
}

/// A QMP connection ready for commands.
pub struct Qmp {
    stream: UnixStream,
}

impl Qmp {
    /// Connects to `socket` (waiting up to `timeout` for QEMU to create it),
    /// negotiates capabilities, then forwards every further message to `sink`
    /// from a thread of its own, ending with [`Message::Closed`].
    pub fn connect(socket: &Path, timeout: Duration, sink: impl Fn(Message) + Send + 'static) -> Result<Qmp, QmpError> {
        let stream = poll_until(timeout, Duration::from_millis(100), || UnixStream::connect(socket).ok())
            .ok_or_else(|| QmpError::Connect { path: socket.display().to_string(), timeout })?;
        stream.set_read_timeout(Some(timeout))?;
        let mut reader = BufReader::new(stream.try_clone()?);
        let greeting = read_line(&mut reader)?;
        if !greeting.contains("\"QMP\"") {
            return Err(QmpError::Protocol(format!("greeting was {greeting:?}")));
        }
        let mut qmp = Qmp { stream };
        qmp.execute("qmp_capabilities", None, "capabilities")?;
        loop {
            match Message::parse(&read_line(&mut reader)?) {
                Some(Message::Return { .. }) => break,
                Some(Message::Error { description, .. }) => return Err(QmpError::Protocol(description)),
                _ => continue,
            }
        }
        qmp.stream.set_read_timeout(None)?;
        reader.get_ref().set_read_timeout(None)?;
        thread::spawn(move || {
            while let Ok(line) = read_line(&mut reader) {
                if let Some(message) = Message::parse(&line) {
                    sink(message);
                }
            }
            sink(Message::Closed);
        });
        Ok(qmp)
    }

    /// Sends a command; its outcome arrives at the sink with `id`.
    pub fn execute(&mut self, command: &str, arguments: Option<Value>, id: &str) -> Result<(), QmpError> {
        let mut request = json!({ "execute": command, "id": id });
        if let Some(arguments) = arguments {
            request["arguments"] = arguments;
        }
        let mut line = request.to_string();
        line.push('\n');
        self.stream.write_all(line.as_bytes())?;
        Ok(())
    }
}

/// One line, at most [`MAX_LINE`] bytes; an error at end of stream.
fn read_line(reader: &mut impl BufRead) -> Result<String, QmpError> {
    let mut line = String::new();
    let read = reader.by_ref().take(MAX_LINE as u64).read_line(&mut line)?;
    if read == 0 {
        return Err(QmpError::Io(std::io::ErrorKind::UnexpectedEof.into()));
    }
    Ok(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_returns_and_errors_are_told_apart() {
        let reset = r#"{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "RESET", "data": {"guest": false, "reason": "host-qmp-system-reset"}}"#;
        assert_eq!(
            Message::parse(reset),
            Some(Message::Event {
                name: "RESET".into(),
                data: json!({"guest": false, "reason": "host-qmp-system-reset"})
            })
        );
        assert_eq!(
            Message::parse(r#"{"return": {}, "id": "reset"}"#),
            Some(Message::Return { id: Some("reset".into()) })
        );
        assert_eq!(
            Message::parse(r#"{"error": {"class": "GenericError", "desc": "no"}, "id": "x"}"#),
            Some(Message::Error { id: Some("x".into()), description: "GenericError: no".into() })
        );
        assert_eq!(Message::parse("not json"), None);
        assert_eq!(Message::parse(r#"{"QMP": {}}"#), None);
    }
}
