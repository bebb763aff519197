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
