//! Service units of a lab host. The fixture system declares services as real
//! unit files in `$toplevel/etc/systemd/system/*.service`; "starting" one runs
//! its `ExecStart=` to completion (all lab services are oneshot-like) and the
//! exit status decides `active` or `failed`. State lives in `/run/lab/units`,
//! so it is gone after a reboot, as on a real machine.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

pub const STATE_DIR: &str = "/run/lab/units";
pub const UNIT_DIR: &str = "/run/current-system/etc/systemd/system";
/// Longest an `ExecStart=` may run before the unit counts as failed.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActiveState {
    Active,
    Failed,
    Inactive,
}

impl ActiveState {
    pub fn as_str(self) -> &'static str {
        match self {
            ActiveState::Active => "active",
            ActiveState::Failed => "failed",
            ActiveState::Inactive => "inactive",
        }
    }
}

/// Units the current system declares, sorted.
pub fn declared(unit_dir: &Path) -> io::Result<Vec<String>> {
    let mut units = Vec::new();
    match fs::read_dir(unit_dir) {
        Ok(listing) => {
            for item in listing {
                let name = item?.file_name().to_string_lossy().into_owned();
                if name.ends_with(".service") {
                    units.push(name);
                }
            }
        }
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        Err(err) => return Err(err),
    }
    units.sort();
    Ok(units)
}

/// `foo` → `foo.service`, as systemctl completes unit names.
pub fn unit_name(name: &str) -> String {
    if name.contains('.') { name.to_owned() } else { format!("{name}.service") }
}

fn state_file(state_dir: &Path, unit: &str) -> PathBuf {
    state_dir.join(unit)
}

pub fn state(state_dir: &Path, unit: &str) -> ActiveState {
    match fs::read_to_string(state_file(state_dir, unit)).as_deref().map(str::trim) {
        Ok("active") => ActiveState::Active,
        Ok("failed") => ActiveState::Failed,
        _ => ActiveState::Inactive,
    }
}

pub fn set_state(state_dir: &Path, unit: &str, state: ActiveState) -> io::Result<()> {
    fs::create_dir_all(state_dir)?;
    fs::write(state_file(state_dir, unit), state.as_str())
}

/// The `ExecStart=` line of a unit file.
pub fn exec_start(unit_file: &Path) -> io::Result<Option<String>> {
    let text = fs::read_to_string(unit_file)?;
    Ok(text
        .lines()
        .find_map(|l| l.trim().strip_prefix("ExecStart="))
        .map(|s| s.trim_start_matches(['-', '@', '+', '!']).to_owned()))
}

/// Starts (or restarts) a unit: runs its `ExecStart=` and records the result.
pub fn start(unit_dir: &Path, state_dir: &Path, unit: &str) -> io::Result<ActiveState> {
    let file = unit_dir.join(unit);
    if !file.exists() {
        return Err(io::Error::new(io::ErrorKind::NotFound, format!("Unit {unit} not found.")));
    }
    let result = match exec_start(&file)? {
        None => ActiveState::Active,
        Some(command) => {
            let mut child = Command::new("/bin/sh")
                .args(["-c", &command])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?;
            match crate::process::wait_deadline(&mut child, START_TIMEOUT, unit) {
                Ok(status) if status.success() => ActiveState::Active,
                _ => ActiveState::Failed,
            }
        }
    };
    set_state(state_dir, unit, result)?;
    Ok(result)
}

/// `systemctl is-system-running`: `running` when every declared unit is
/// active, `degraded` when one failed, `starting` while some never ran.
pub fn system_state(unit_dir: &Path, state_dir: &Path) -> io::Result<&'static str> {
    let mut starting = false;
    for unit in declared(unit_dir)? {
        match state(state_dir, &unit) {
            ActiveState::Failed => return Ok("degraded"),
            ActiveState::Inactive => starting = true,
            ActiveState::Active => {}
        }
    }
    Ok(if starting { "starting" } else { "running" })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_start_and_report_state() {
        let units = tempfile::tempdir().unwrap();
        let state_dir = tempfile::tempdir().unwrap();
        fs::write(units.path().join("good.service"), "[Service]\nExecStart=/bin/sh -c 'exit 0'\n").unwrap();
        fs::write(units.path().join("bad.service"), "[Service]\nExecStart=/bin/sh -c 'exit 1'\n").unwrap();
        assert_eq!(system_state(units.path(), state_dir.path()).unwrap(), "starting");
        assert_eq!(start(units.path(), state_dir.path(), "good.service").unwrap(), ActiveState::Active);
        assert_eq!(start(units.path(), state_dir.path(), "bad.service").unwrap(), ActiveState::Failed);
        assert_eq!(state(state_dir.path(), "bad.service"), ActiveState::Failed);
        assert_eq!(system_state(units.path(), state_dir.path()).unwrap(), "degraded");
        assert!(start(units.path(), state_dir.path(), "missing.service").is_err());
    }

    #[test]
    fn unit_names_are_completed() {
        assert_eq!(unit_name("sshd"), "sshd.service");
        assert_eq!(unit_name("multi-user.target"), "multi-user.target");
    }
}
