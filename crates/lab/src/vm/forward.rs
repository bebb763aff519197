//! Services on this machine's loopback that a VM guest may reach, and
//! nothing else: the guest's user network is `restrict=on` (it reaches no
//! other address), and QEMU's `guestfwd` rules hand each TCP connection the
//! guest opens to [`GUEST_ADDRESS`]`:PORT` to a fresh `fleetgate-lab
//! __forward` process (libslirp's `cmd:` forward: the connection is its
//! stdin and stdout), which connects it to `127.0.0.1:N` — N read, at that
//! moment, from the host's `loopback-forward/PORT` file. So a test can start
//! its servers on free loopback ports after the VM booted and point the
//! guest's fixed addresses at them ([`set`]); with no file, the guest's
//! connection is closed at once.

use std::fs;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::layout::HostDir;

/// The guest's address for this machine's loopback services (in QEMU's user
/// network 10.0.2.0/24, beside its gateway .2, DNS .3 and the guest's .15).
pub const GUEST_ADDRESS: &str = "10.0.2.100";
/// The guest ports that are forwarded (each to the port [`set`] names).
pub const GUEST_PORTS: [u16; 2] = [8080, 8081];
/// A forwarded connection idle this long (no byte either way) is closed.
const IDLE: Duration = Duration::from_secs(300);
/// How long an answer may still take once the guest closed its side.
const AFTER_GUEST_CLOSED: Duration = Duration::from_secs(10);

fn target_file(dir: &HostDir, guest_port: u16) -> PathBuf {
    dir.root().join("loopback-forward").join(guest_port.to_string())
}

/// Makes `GUEST_ADDRESS:guest_port` in the guest reach `127.0.0.1:host_port`
/// here (from the next connection on).
pub fn set(dir: &HostDir, guest_port: u16, host_port: u16) -> anyhow::Result<()> {
    anyhow::ensure!(GUEST_PORTS.contains(&guest_port), "guest port {guest_port} is not forwarded ({GUEST_PORTS:?})");
    let file = target_file(dir, guest_port);
    if let Some(parent) = file.parent() {
        fs::create_dir_all(parent)?;
    }
    crate::state::write_atomically(&file, host_port.to_string().as_bytes())?;
    Ok(())
}

/// The `guestfwd=` options of the VM's `-netdev user` (commas of QEMU's
/// option syntax doubled; the command is split by GLib's shell rules, so it
/// is single-quoted).
pub fn netdev_options(dir: &HostDir, lab_binary: &Path) -> String {
    let quote = |p: &Path| format!("'{}'", p.display().to_string().replace('\'', r"'\''")).replace(',', ",,");
    GUEST_PORTS
        .iter()
        .map(|port| {
            format!(
                ",guestfwd=tcp:{GUEST_ADDRESS}:{port}-cmd:{} __forward --to {}",
                quote(lab_binary),
                quote(&target_file(dir, *port))
            )
        })
        .collect()
}

/// `fleetgate-lab __forward --to FILE`: connects stdin/stdout (one guest
/// connection) to `127.0.0.1:<port in FILE>` until either side ends. Says
/// nothing: its stderr is the guest's connection too.
pub fn run(to: &Path) -> anyhow::Result<()> {
    let port: u16 = fs::read_to_string(to)?.trim().parse()?;
    let upstream = TcpStream::connect(("127.0.0.1", port))?;
    upstream.set_read_timeout(Some(IDLE))?;
    let mut to_upstream = upstream.try_clone()?;
    std::thread::spawn(move || {
        let _ = copy(&mut std::io::stdin().lock(), &mut to_upstream);
        let _ = to_upstream.shutdown(Shutdown::Write);
        // The guest closed its side (or its QEMU ended): the answer has
        // this long to arrive, then this process ends, whatever upstream does.
        std::thread::sleep(AFTER_GUEST_CLOSED);
        std::process::exit(0);
    });
    let mut from_upstream = upstream;
    copy(&mut from_upstream, &mut std::io::stdout().lock())?;
    Ok(())
}

/// Copies until end of input (or an error, such as the idle timeout), flushing each chunk.
fn copy(from: &mut impl Read, to: &mut impl Write) -> std::io::Result<()> {
    let mut buf = [0u8; 64 * 1024];
    loop {
        let n = from.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        to.write_all(&buf[..n])?;
        to.flush()?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::LabDir;

    #[test]
    fn only_the_forwarded_guest_ports_can_be_pointed_somewhere() {
        let tmp = tempfile::tempdir().expect("tmp");
        let dir = LabDir::new(tmp.path()).host("vm1");
        assert!(set(&dir, 22, 2222).is_err());
        set(&dir, GUEST_PORTS[1], 41234).expect("set");
        assert_eq!(fs::read_to_string(target_file(&dir, GUEST_PORTS[1])).expect("file"), "41234");
    }

    #[test]
    fn each_forward_runs_the_lab_binary_quoted_with_qemus_commas_doubled() {
        let dir = LabDir::new("/tmp/a,b c").host("vm1");
        let opts = netdev_options(&dir, Path::new("/usr/bin/fleetgate-lab"));
        assert_eq!(
            opts,
            ",guestfwd=tcp:10.0.2.100:8080-cmd:'/usr/bin/fleetgate-lab' __forward --to '/tmp/a,,b c/hosts/vm1/loopback-forward/8080'\
             ,guestfwd=tcp:10.0.2.100:8081-cmd:'/usr/bin/fleetgate-lab' __forward --to '/tmp/a,,b c/hosts/vm1/loopback-forward/8081'"
        );
    }
}
