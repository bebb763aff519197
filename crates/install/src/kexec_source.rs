//! Where the kexec tarball comes from (`--kexec PATH|URL`), as
//! nixos-anywhere takes it (`src/nixos-anywhere.sh`, `runKexec`).

use std::path::PathBuf;

use crate::kexec;

/// The largest kexec tarball read from a local file.
pub const MAX_TARBALL: u64 = 2 << 30;

/// Where the kexec tarball comes from (`--kexec PATH|URL`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KexecSource {
    /// A local file, streamed over SSH.
    Path(PathBuf),
    /// Downloaded by the target (`curl`, else `wget`), as nixos-anywhere does.
    Url(String),
}

impl KexecSource {
    /// `http(s)://…` is a URL, anything else a file.
    ///
    /// # Errors
    /// A name that is not a tarball nixos-anywhere would take.
    pub fn parse(text: &str) -> Result<KexecSource, String> {
        if kexec::tar_flags(text).is_none() {
            return Err(format!("{text:?} is not a .tar, .tar.gz, .tar.xz or .tar.zst (nixos-images' kexec tarball)"));
        }
        if text.starts_with("https://") || text.starts_with("http://") {
            Ok(KexecSource::Url(text.to_owned()))
        } else {
            Ok(KexecSource::Path(PathBuf::from(text)))
        }
    }

    pub(crate) fn name(&self) -> String {
        match self {
            KexecSource::Path(p) => p.to_string_lossy().into_owned(),
            KexecSource::Url(u) => u.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kexec_sources() {
        assert_eq!(KexecSource::parse("https://x/k.tar.gz"), Ok(KexecSource::Url("https://x/k.tar.gz".into())));
        assert_eq!(KexecSource::parse("./k.tar"), Ok(KexecSource::Path("./k.tar".into())));
        assert!(KexecSource::parse("./k.img").is_err());
    }
}
