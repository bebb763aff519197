//! The local transport and ssh failure modes that need no remote host.

use std::path::Path;
use std::time::{Duration, Instant};

use fleetgate_transport::{Local, Ssh, SshTarget, Transport, TransportError};

const T: Duration = Duration::from_secs(30);

#[test]
fn local_runs_commands_scripts_and_reports_failures() {
    let out = Local.run(&["sh", "-c", "cat; echo err >&2; exit 3"], Some(b"in"), T).expect("runs");
    assert_eq!(out.stdout, b"in");
    assert_eq!(out.stderr, b"err\n");
    assert_eq!(out.status, Some(3));
    match out.check() {
        Err(TransportError::CommandFailed { status, stderr, .. }) => {
            assert_eq!(status, "exit status 3");
            assert_eq!(stderr, "err");
        }
        other => panic!("expected CommandFailed, got {other:?}"),
    }
    let out = Local.run_script("x=$((6*7)); echo $x\n", T).expect("runs").check().expect("succeeds");
    assert_eq!(out.stdout_text(), "42\n");
}

#[test]
fn local_kills_commands_at_the_timeout() {
    let start = Instant::now();
    let err = Local.run(&["sh", "-c", "sleep 30 & wait"], None, Duration::from_millis(300)).expect_err("times out");
    assert!(matches!(err, TransportError::Timeout { .. }), "{err:?}");
    assert!(start.elapsed() < Duration::from_secs(10), "took {:?}", start.elapsed());
}

#[test]
fn local_uploads_and_reads_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("it's here.txt");
    Local.upload(b"hello\nworld\n", &path, 0o640, T).expect("uploads");
    assert_eq!(std::fs::read(&path).expect("written"), b"hello\nworld\n");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777, 0o640);
    assert_eq!(Local.read_file(&path, 5, T).expect("reads"), b"hello");
    let err = Local.read_file(Path::new("/nonexistent/x"), 10, T).expect_err("missing file");
    assert!(matches!(err, TransportError::CommandFailed { .. }), "{err:?}");
    let err = Local.run(&["/nonexistent/program"], None, T).expect_err("cannot spawn");
    assert!(matches!(err, TransportError::Spawn { .. }), "{err:?}");
}

#[test]
fn ssh_to_a_closed_port_is_unreachable_not_a_command_failure() {
    // Port 1 on loopback: connection refused. The options keep ssh away from
    // the user's configuration and known_hosts.
    let target = SshTarget::parse("ssh://nobody@127.0.0.1:1").expect("valid");
    let opts = ["-F", "/dev/null", "-o", "UserKnownHostsFile=/dev/null", "-o", "GlobalKnownHostsFile=/dev/null"];
    for multiplex in [true, false] {
        let ssh = Ssh::new(target.clone(), opts.iter().map(|s| (*s).to_owned()).collect()).with_multiplexing(multiplex);
        let err = ssh.run(&["true"], None, T).expect_err("unreachable");
        assert!(err.is_unreachable(), "{err:?}");
        assert!(err.to_string().contains("Connection refused"), "{err}");
    }
}
