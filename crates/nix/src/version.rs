//! The installed Nix's version, parsed from `nix --version`.
use std::fmt;

/// A Nix release, `major.minor.patch`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NixVersion {
    /// Major version (2).
    pub major: u32,
    /// Minor version (8 for Debian 12's nix-bin).
    pub minor: u32,
    /// Patch level.
    pub patch: u32,
}

impl NixVersion {
    /// The oldest Nix this crate supports.
    pub const MINIMUM: Self = Self::new(2, 8, 0);

    /// A version from its parts.
    pub const fn new(major: u32, minor: u32, patch: u32) -> Self {
        Self { major, minor, patch }
    }

    /// Parses the output of `nix --version`: `nix (Nix) 2.8.0`,
    /// `nix (Nix) 2.24.10`, `nix (Determinate Nix 3.6.2) 2.29.0`, `nix (Lix, like Nix) 2.91.1`.
    /// The last whitespace-separated word is the version; suffixes like `pre2023…` or
    /// `-rc1` after the numbers are ignored.
    pub fn parse(output: &str) -> Option<Self> {
        let word = output.split_whitespace().last()?;
        let mut parts = word.split('.').map(|p| {
            let digits: String = p.chars().take_while(char::is_ascii_digit).collect();
            digits.parse::<u32>().ok()
        });
        let major = parts.next()??;
        let minor = parts.next()??;
        let patch = parts.next().flatten().unwrap_or(0);
        Some(Self::new(major, minor, patch))
    }

    /// `nix-command`/`flakes` must be enabled per invocation (every 2.x so far).
    pub fn needs_experimental_flags(&self) -> bool {
        self.major == 2
    }

    /// `nix path-info --json` prints an object keyed by path from 2.19 on, a list before.
    pub fn path_info_is_object(&self) -> bool {
        *self >= Self::new(2, 19, 0)
    }
}

impl fmt::Display for NixVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_version_strings_parse() {
        let v = |s| NixVersion::parse(s).unwrap();
        assert_eq!(v("nix (Nix) 2.8.0\n"), NixVersion::new(2, 8, 0));
        assert_eq!(v("nix (Nix) 2.24.10"), NixVersion::new(2, 24, 10));
        assert_eq!(v("nix (Nix) 2.19.0pre20231004_deadbee"), NixVersion::new(2, 19, 0));
        assert_eq!(v("nix (Lix, like Nix) 2.91.1"), NixVersion::new(2, 91, 1));
        assert_eq!(v("nix (Nix) 2.3"), NixVersion::new(2, 3, 0));
        assert!(NixVersion::parse("").is_none());
        assert!(NixVersion::parse("nix (Nix) unknown").is_none());
    }

    #[test]
    fn ordering_and_floor() {
        assert!(NixVersion::new(2, 8, 0) >= NixVersion::MINIMUM);
        assert!(NixVersion::new(2, 7, 9) < NixVersion::MINIMUM);
        assert!(!NixVersion::new(2, 8, 0).path_info_is_object());
        assert!(NixVersion::new(2, 24, 0).path_info_is_object());
    }
}
