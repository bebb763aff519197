//! `kill_running_children` ends every child still running (its own binary: it kills
//! every child of the process, so no other test may run beside it).
#![allow(clippy::expect_used)]

use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn children_still_running_are_killed_and_their_callers_return() {
    let runner = std::thread::spawn(|| {
        let mut c = Command::new("sh");
        // A grandchild too: the whole group goes.
        c.args(["-c", "sleep 600 & sleep 600"]);
        fleetgate_process::run_command(c, None, Duration::from_secs(600))
    });
    let until = Instant::now() + Duration::from_secs(30);
    while fleetgate_process::running_children() == 0 {
        assert!(Instant::now() < until, "the child never started");
        std::thread::yield_now();
    }
    let started = Instant::now();
    assert_eq!(fleetgate_process::kill_running_children(), 1);
    let (status, _) = runner.join().expect("runner").expect("a status");
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(9));
    assert!(started.elapsed() < Duration::from_secs(30), "returned at once, not at its timeout");
    assert_eq!(fleetgate_process::running_children(), 0);
    assert_eq!(fleetgate_process::kill_running_children(), 0);
}
