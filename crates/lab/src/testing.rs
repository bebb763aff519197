//! Helpers for tests that use a lab: a guard that always brings the lab down
//! (also when the test panics) and checks that nothing was left behind.

use std::fs;
use std::ops::Deref;
use std::path::{Path, PathBuf};

use crate::lab::Lab;
use crate::layout::LabDir;
use crate::network;
use crate::spec::{HostSpec, LabSpec};

/// A lab in a temporary directory, brought down on drop.
pub struct LabGuard {
    lab: Option<Lab>,
    root: PathBuf,
    _tmp: tempfile::TempDir,
}

impl LabGuard {
    /// Brings up a lab of hosts given as `NAME=BUS,BOOTLOADER`.
    pub fn up(hosts: &[&str]) -> anyhow::Result<LabGuard> {
        let tmp = tempfile::Builder::new().prefix("fleetgate-lab-test-").tempdir()?;
        let root = tmp.path().join("lab");
        // Lets `scripts/test` tell a live test's lab from a killed test's.
        fs::write(tmp.path().join("owner.pid"), std::process::id().to_string())?;
        let spec = LabSpec::new(hosts.iter().map(|h| HostSpec::parse(h)).collect::<Result<_, _>>()?)?;
        let lab = Lab::up(LabDir::new(&root), &spec, &mut |_| {})?;
        Ok(LabGuard { lab: Some(lab), root, _tmp: tmp })
    }

    /// Brings the lab down now and returns what was left behind (nothing, if
    /// all is well).
    pub fn down(mut self) -> anyhow::Result<Vec<String>> {
        let Some(lab) = self.lab.take() else { return Ok(Vec::new()) };
        let id = lab.state().id;
        let bridge = network::bridge_ifindex(id);
        let netns: Vec<String> = lab.hosts().map(|h| h.netns.clone()).collect();
        Lab::down(&LabDir::new(&self.root), &mut |_| {})?;
        Ok(leftovers(id, bridge, &netns, &self.root))
    }
}

impl Deref for LabGuard {
    type Target = Lab;
    fn deref(&self) -> &Lab {
        // `lab` is only taken by `down`, which consumes the guard.
        self.lab.as_ref().unwrap_or_else(|| unreachable!("LabGuard used after down"))
    }
}

impl Drop for LabGuard {
    fn drop(&mut self) {
        if self.lab.take().is_some() {
            if let Err(err) = Lab::down(&LabDir::new(&self.root), &mut |_| {}) {
                eprintln!("fleetgate-lab: could not bring the test lab down: {err:#}");
            }
        }
    }
}

/// Everything of lab `id` still on this machine: network namespaces, the
/// bridge (the one with interface index `bridge`: once this lab freed its id,
/// a lab running beside it may make a bridge of the same name), mounts or
/// loop devices under `root`, processes mentioning `root`.
pub fn leftovers(id: u8, bridge: Option<u32>, netns: &[String], root: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for name in netns {
        if Path::new("/run/netns").join(name).exists() {
            found.push(format!("network namespace {name}"));
        }
    }
    if bridge.is_some() && network::bridge_ifindex(id) == bridge {
        found.push(format!("bridge {}", network::bridge_name(id)));
    }
    let root_text = root.display().to_string();
    if let Ok(mounts) = fs::read_to_string("/proc/self/mountinfo") {
        found.extend(mounts.lines().filter(|l| l.contains(&root_text)).map(|l| format!("mount {l}")));
    }
    if let Ok(loops) = fs::read_dir("/sys/block") {
        for entry in loops.flatten() {
            let backing = entry.path().join("loop/backing_file");
            if let Ok(file) = fs::read_to_string(&backing) {
                if file.contains(&root_text) {
                    found.push(format!("loop device {} backing {}", entry.file_name().to_string_lossy(), file.trim()));
                }
            }
        }
    }
    if let Ok(procs) = fs::read_dir("/proc") {
        for entry in procs.flatten() {
            let Ok(cmdline) = fs::read(entry.path().join("cmdline")) else { continue };
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(&root_text) {
                found.push(format!("process {}: {}", entry.file_name().to_string_lossy(), cmdline.trim()));
            }
        }
    }
    found
}
