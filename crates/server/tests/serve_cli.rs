//! `fleetgate channel serve` started as a real process, talked to over real TCP
//! connections: its options, its limits on slow and idle clients, and its shutdown.
#![allow(clippy::unwrap_used)]
mod common;

use std::time::Duration;

use common::ServeProcess;
use sha2::Digest as _;

const WEB1_TOKEN: &str = "web1-report-token-0123456789";
const WEB2_TOKEN: &str = "web2-report-token-abcdefghij";

fn report(addr: std::net::SocketAddr, host: &str, authorization: &str) -> u16 {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();
    agent
        .post(&format!("http://{addr}/v1/hosts/{host}/report"))
        .header("Authorization", authorization)
        .header("Content-Type", "application/json")
        .send(r#"{"status":"ok"}"#)
        .unwrap()
        .status()
        .as_u16()
}

#[test]
fn the_documented_host_tokens_file_works_through_the_command_line() {
    let tmp = tempfile::tempdir().unwrap();
    let hashed = hex::encode(sha2::Sha256::digest(WEB2_TOKEN.as_bytes()));
    let tokens = format!("# host tokens\nweb1 {WEB1_TOKEN}\n\nweb2 sha256:{hashed}\n");
    std::fs::write(tmp.path().join("tokens"), tokens).unwrap();
    let server = ServeProcess::start(tmp.path(), &["--db", "serve.sqlite", "--host-tokens-file", "tokens"]).unwrap();
    assert_eq!(report(server.addr, "web1", &format!("Bearer {WEB1_TOKEN}")), 204);
    assert_eq!(report(server.addr, "web2", &format!("Bearer {WEB2_TOKEN}")), 204);
    // Lower-case scheme (RFC 7235: case-insensitive).
    assert_eq!(report(server.addr, "web2", &format!("bearer {WEB2_TOKEN}")), 204);
    assert_eq!(report(server.addr, "web1", &format!("Bearer {WEB2_TOKEN}")), 401);
    assert_eq!(report(server.addr, "web3", &format!("Bearer {WEB1_TOKEN}")), 401);
    assert!(!server.log().contains(WEB1_TOKEN) && !server.log().contains(WEB2_TOKEN));
}

#[test]
fn a_hook_secret_needs_as_many_characters_as_a_host_token() {
    let tmp = tempfile::tempdir().unwrap();
    for (secret, starts) in [("x", false), (&"s".repeat(15)[..], false), (&"s".repeat(16)[..], true)] {
        std::fs::write(tmp.path().join("secret"), format!("{secret}\n")).unwrap();
        let started = ServeProcess::start(tmp.path(), &["--db", "serve.sqlite", "--hook-secret-file", "secret"]);
        match started {
            Ok(_) => assert!(starts, "a {}-character secret was accepted", secret.len()),
            Err(failed) => {
                assert!(!starts, "{failed:?}");
                assert_eq!(failed.code, Some(2), "{failed:?}");
                assert!(failed.stderr.contains("at least 16 are needed"), "{}", failed.stderr);
                assert!(!failed.stderr.contains(&format!(" {secret}\n")), "the secret is not shown");
            }
        }
    }
}

/// What a raw client saw until the server closed the connection: the bytes, or `None`
/// if the server kept it open past `deadline`.
fn until_closed(stream: &mut std::net::TcpStream, deadline: Duration) -> Option<Vec<u8>> {
    use std::io::Read as _;
    stream.set_read_timeout(Some(deadline)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0_u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return Some(got),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Some(got),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => return None,
            Err(e) => panic!("{e}"),
        }
    }
}

/// One whole response on a kept-alive connection (headers and `Content-Length` body).
fn read_response(stream: &mut std::net::TcpStream) -> String {
    use std::io::Read as _;
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut got = Vec::new();
    let mut buf = [0_u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length: ").map(str::to_owned))
                .and_then(|n| n.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if got.len() >= end + 4 + length {
                return text;
            }
        }
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "closed before a whole response: {text}");
        got.extend_from_slice(&buf[..n]);
    }
}

fn connect(server: &ServeProcess) -> std::net::TcpStream {
    std::net::TcpStream::connect(server.addr).unwrap()
}

fn send(stream: &mut std::net::TcpStream, bytes: &str) {
    use std::io::Write as _;
    stream.write_all(bytes.as_bytes()).unwrap();
}

/// A served request on a fresh connection: the status line.
fn get_status_line(server: &ServeProcess, path: &str) -> String {
    let mut c = connect(server);
    send(&mut c, &format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"));
    let answer = until_closed(&mut c, Duration::from_secs(30)).expect("an answer");
    String::from_utf8_lossy(&answer).lines().next().unwrap_or("").to_owned()
}

/// A plain service (no promotions) with `extra` options.
fn plain_service(dir: &std::path::Path, extra: &[&str]) -> ServeProcess {
    let args: Vec<&str> = ["--db", "serve.sqlite"].iter().copied().chain(extra.iter().copied()).collect();
    ServeProcess::start(dir, &args).unwrap()
}

#[test]
fn silent_connections_and_trickled_headers_are_cut_after_the_header_timeout() {
    let tmp = tempfile::tempdir().unwrap();
    let server = plain_service(tmp.path(), &["--header-timeout", "1"]);
    // Connects and says nothing.
    let mut silent = connect(&server);
    // Sends a header line every 100 ms, forever: never a whole request.
    let mut trickle = connect(&server);
    send(&mut trickle, "GET /v1/hosts HTTP/1.1\r\n");
    let mut writer = trickle.try_clone().unwrap();
    let pacer = std::thread::spawn(move || {
        use std::io::Write as _;
        for i in 0..600 {
            if writer.write_all(format!("X-Slow-{i}: a\r\n").as_bytes()).is_err() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100)); // the attack's pace, not a wait
        }
        false
    });
    assert!(until_closed(&mut silent, Duration::from_secs(30)).is_some(), "a silent connection stayed open");
    assert!(until_closed(&mut trickle, Duration::from_secs(30)).is_some(), "a trickling client stayed connected");
    assert!(pacer.join().unwrap(), "the server kept reading the trickle");
    // A kept-alive connection idle after a request is closed too.
    let mut idle = connect(&server);
    send(&mut idle, "GET /login HTTP/1.1\r\nHost: x\r\n\r\n");
    let answer = until_closed(&mut idle, Duration::from_secs(30)).expect("closed once idle");
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"), "{}", String::from_utf8_lossy(&answer));
    // The service itself is fine.
    assert_eq!(get_status_line(&server, "/login"), "HTTP/1.1 200 OK");
}

#[test]
fn a_stalled_body_is_answered_408_and_cut_and_a_huge_one_413() {
    let tmp = tempfile::tempdir().unwrap();
    let server = plain_service(tmp.path(), &["--body-timeout", "1"]);
    let mut c = connect(&server);
    send(&mut c, "POST /v1/hosts/web1/report HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"status\":");
    let answer = until_closed(&mut c, Duration::from_secs(30)).expect("a stalled body is cut");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("did not arrive within 1 s"), "{text}");

    let mut c = connect(&server);
    send(&mut c, "POST /v1/hosts/web1/report HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n");
    let answer = until_closed(&mut c, Duration::from_secs(30)).expect("a huge body is refused");
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 413"), "{}", String::from_utf8_lossy(&answer));
}

#[test]
fn connections_beyond_the_cap_are_answered_503_and_closed() {
    let tmp = tempfile::tempdir().unwrap();
    let server = plain_service(tmp.path(), &["--max-connections", "2", "--header-timeout", "600"]);
    let held: Vec<_> = (0..2).map(|_| connect(&server)).collect();
    let mut third = connect(&server);
    let answer = until_closed(&mut third, Duration::from_secs(30)).expect("refused at once");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 503 Service Unavailable\r\n"), "{text}");
    assert!(text.ends_with(r#"{"error":"too many connections, retry"}"#), "{text}");
    // A slot frees when a client leaves: served again (the server notices the close
    // asynchronously, so the request is repeated until then, within a deadline).
    drop(held);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let status = get_status_line(&server, "/login");
        if status == "HTTP/1.1 200 OK" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "still refused: {status}");
        assert!(status.starts_with("HTTP/1.1 503"), "{status}");
        std::thread::sleep(Duration::from_millis(20)); // pace the retries
    }
    // The refusal is logged after the 503 is written: wait for the line, within a deadline.
    let logged = server.wait_line(Duration::from_secs(10), |l| l.contains("refused a connection: 2 are open already"));
    assert!(logged.is_some(), "{}", server.log());
}

#[test]
fn sigterm_ends_the_service_at_once_even_with_idle_and_half_sent_requests() {
    let tmp = tempfile::tempdir().unwrap();
    // Timeouts far beyond the test's deadline: only shutdown can end these connections.
    let mut server = plain_service(tmp.path(), &["--header-timeout", "600", "--body-timeout", "600"]);
    let mut half_headers = connect(&server);
    send(&mut half_headers, "GET /v1/hosts HTTP/1.1\r\nHost: x\r\nX-Half: ");
    let mut half_body = connect(&server);
    send(&mut half_body, "POST /v1/hosts/web1/report HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n{");
    let mut idle = connect(&server);
    send(&mut idle, "GET /login HTTP/1.1\r\nHost: x\r\n\r\n");
    // Answered: so the server accepted the two connections made before this one too
    // (it accepts in order).
    assert!(read_response(&mut idle).starts_with("HTTP/1.1 200"));
    server.signal(rustix::process::Signal::TERM);
    let status = server.wait_exit(Duration::from_secs(30)).expect("serve exits after SIGTERM");
    assert!(status.success(), "{status}: {}", server.log());
    for c in [&mut half_headers, &mut half_body, &mut idle] {
        assert!(until_closed(c, Duration::from_secs(5)).is_some());
    }
    let log = server.log();
    assert!(log.contains("SIGTERM: shutting down"), "{log}");
    assert!(log.contains("2 still busy after 2s were cut"), "the half-sent requests: {log}");
    assert!(std::net::TcpStream::connect(server.addr).is_err(), "still listening");
}

#[test]
fn bad_signatures_are_logged_once_a_minute_with_a_count() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("secret"), "a-hook-secret-of-enough-length").unwrap();
    let mut server = plain_service(tmp.path(), &["--hook-secret-file", "secret"]);
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    for _ in 0..50 {
        let resp = agent
            .post(&format!("http://{}/hooks/github", server.addr))
            .header("X-Hub-Signature-256", "sha256=00")
            .send("{}")
            .unwrap();
        assert_eq!(resp.status().as_u16(), 401);
    }
    server.signal(rustix::process::Signal::TERM);
    assert!(server.wait_exit(Duration::from_secs(30)).unwrap().success());
    let log = server.log();
    assert_eq!(log.matches("rejected a request with a missing or bad X-Hub-Signature-256").count(), 1, "{log}");
    assert!(log.contains("hook: 49 more such line(s) were not logged (requests with a missing or bad"), "{log}");
}
