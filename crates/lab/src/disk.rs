//! A lab host's disks: real ext4 filesystem images on loop devices. The root
//! filesystem carries the host's own `/nix`, so `nix copy` really fills it and a
//! small image really runs out of space. The ESP of systemd-boot hosts is a
//! second image (ext4, because this machine's kernel has no vfat; the fixture's
//! boot loader installer never relies on symlinks there, as on a real ESP).

use std::fs::{self, OpenOptions};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::process::{self, ProcessError};

const TOOL_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error(transparent)]
    Command(#[from] ProcessError),
    #[error("cannot create disk image {path}")]
    Image { path: String, source: std::io::Error },
    #[error("cannot read device number of {path}")]
    DeviceNumber { path: String, source: std::io::Error },
}

/// Creates a sparse ext4 image with the given label and filesystem UUID, unless
/// it already exists (a host keeps its disk across `down`/`up` only if asked).
pub fn create_ext4_image(path: &Path, size_mib: u64, label: &str, uuid: &str) -> Result<(), DiskError> {
    let image_error = |source| DiskError::Image { path: path.display().to_string(), source };
    let file = OpenOptions::new().write(true).create_new(true).open(path).map_err(image_error)?;
    file.set_len(size_mib * 1024 * 1024).map_err(image_error)?;
    drop(file);
    let result = process::run(
        Command::new("mkfs.ext4").args(["-q", "-F", "-L", label, "-U", uuid, "-E", "root_owner=0:0"]).arg(path),
        TOOL_TIMEOUT,
    );
    if let Err(err) = result {
        let _ = fs::remove_file(path);
        return Err(err.into());
    }
    Ok(())
}

/// Attaches `image` to a free loop device and returns the device path.
pub fn attach_loop(image: &Path) -> Result<String, DiskError> {
    let out = process::run(Command::new("losetup").args(["--find", "--show"]).arg(image), TOOL_TIMEOUT)?;
    Ok(out.stdout.trim().to_owned())
}

/// Detaches a loop device; a device already gone is not an error.
pub fn detach_loop(device: &str) -> Result<(), DiskError> {
    if !Path::new(device).exists() {
        return Ok(());
    }
    match process::run(Command::new("losetup").args(["-d", device]), TOOL_TIMEOUT) {
        Ok(_) => Ok(()),
        Err(ProcessError::Failed { stderr, .. }) if stderr.contains("No such device") => Ok(()),
        Err(err) => Err(err.into()),
    }
}

/// Loop devices currently backed by `image` (normally zero or one).
pub fn loops_backing(image: &Path) -> Result<Vec<String>, DiskError> {
    let out = process::run(
        Command::new("losetup").args(["--noheadings", "--output", "NAME", "--associated"]).arg(image),
        TOOL_TIMEOUT,
    )?;
    Ok(out.stdout.lines().map(|l| l.trim().to_owned()).filter(|l| !l.is_empty()).collect())
}

/// `(major, minor)` of a block device node.
pub fn device_number(device: &str) -> Result<(u32, u32), DiskError> {
    let stat =
        rustix::fs::stat(device).map_err(|e| DiskError::DeviceNumber { path: device.to_owned(), source: e.into() })?;
    Ok((rustix::fs::major(stat.st_rdev), rustix::fs::minor(stat.st_rdev)))
}
