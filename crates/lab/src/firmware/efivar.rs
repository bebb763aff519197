//! EFI variables as efivarfs shows them: one file per variable, named
//! `<Name>-<vendor GUID>`, holding a little-endian u32 of attributes followed by
//! the value. systemd-boot's variables hold NUL-terminated UTF-16LE strings.
//! Reference: the kernel's `Documentation/filesystems/efivarfs.rst` and
//! systemd's `docs/BOOT_LOADER_INTERFACE.md`.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Vendor GUID of the Boot Loader Interface variables.
pub const LOADER_GUID: &str = "4a67b082-0a4c-41cf-b6c7-440b29bb8c4f";

/// `EFI_VARIABLE_NON_VOLATILE | BOOTSERVICE_ACCESS | RUNTIME_ACCESS`.
pub const DEFAULT_ATTRIBUTES: u32 = 0x7;

pub fn path(efivars: &Path, name: &str) -> PathBuf {
    efivars.join(format!("{name}-{LOADER_GUID}"))
}

/// Reads a string variable; `None` if it is not set or not a valid string.
pub fn read_string(efivars: &Path, name: &str) -> io::Result<Option<String>> {
    let bytes = match fs::read(path(efivars, name)) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(err),
    };
    Ok(decode_string(&bytes))
}

pub fn decode_string(bytes: &[u8]) -> Option<String> {
    let value = bytes.get(4..)?;
    if value.len() % 2 != 0 {
        return None;
    }
    let units: Vec<u16> =
        value.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).take_while(|u| *u != 0).collect();
    String::from_utf16(&units).ok()
}

pub fn encode_string(value: &str) -> Vec<u8> {
    let mut bytes = DEFAULT_ATTRIBUTES.to_le_bytes().to_vec();
    for unit in value.encode_utf16().chain([0]) {
        bytes.extend_from_slice(&unit.to_le_bytes());
    }
    bytes
}

pub fn write_string(efivars: &Path, name: &str, value: &str) -> io::Result<()> {
    fs::write(path(efivars, name), encode_string(value))
}

pub fn remove(efivars: &Path, name: &str) -> io::Result<()> {
    match fs::remove_file(path(efivars, name)) {
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_a_utf16_string_with_attributes() {
        let bytes = encode_string("nixos-generation-7.conf");
        assert_eq!(&bytes[..4], &[7, 0, 0, 0]);
        assert_eq!(&bytes[bytes.len() - 2..], &[0, 0]);
        assert_eq!(decode_string(&bytes).as_deref(), Some("nixos-generation-7.conf"));
    }

    #[test]
    fn malformed_values_read_as_unset() {
        assert_eq!(decode_string(&[7, 0]), None, "shorter than the attributes");
        assert_eq!(decode_string(&[7, 0, 0, 0]), Some(String::new()));
        assert_eq!(decode_string(&[7]), None);
        assert_eq!(decode_string(&[7, 0, 0, 0, 0x41]), None);
    }
}
