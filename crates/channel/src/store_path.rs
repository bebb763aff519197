//! Store path validation: `/nix/store/<32 nix32 chars>-<name>`, nothing else.
use crate::error::ChannelError;

/// Checks that `s` is a plain top-level store path (no subpath, no `..`, no options).
pub fn validate(s: &str) -> Result<String, ChannelError> {
    let bad = || ChannelError::BadStorePath { path: crate::error::shown(s) };
    let rest = s.strip_prefix("/nix/store/").ok_or_else(bad)?;
    let (hash, name) = rest.split_at_checked(32).ok_or_else(bad)?;
    let hash_ok = hash.bytes().all(|b| b"0123456789abcdfghijklmnpqrsvwxyz".contains(&b));
    let name = name.strip_prefix('-').ok_or_else(bad)?;
    let name_ok = !name.is_empty()
        && name.len() <= 211
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"+-._?=".contains(&b));
    if hash_ok && name_ok { Ok(s.to_owned()) } else { Err(bad()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_top_level_store_paths() {
        let ok = "/nix/store/9lbzgxvs2rjybvqa15sgxw4j0qzp009i-nixos-system-web1-24.05";
        assert_eq!(validate(ok).unwrap(), ok);
        for bad in [
            "",
            "/nix/store",
            "/nix/store/9lbzgxvs2rjybvqa15sgxw4j0qzp009i",
            "/nix/store/9lbzgxvs2rjybvqa15sgxw4j0qzp009i-x/etc",
            "/nix/store/9lbzgxvs2rjybvqa15sgxw4j0qzp009e-x",
            "/tmp/9lbzgxvs2rjybvqa15sgxw4j0qzp009i-x",
            "--store",
            "/nix/store/../../etc/passwd",
        ] {
            assert!(validate(bad).is_err(), "{bad}");
        }
    }
}
