//! Nix hash notation: `sha256:<nix32>`, `sha256:<hex>` and SRI `sha256-<base64>`.
//!
//! narinfo signatures are made over the `sha256:<nix32>` form, while `nix path-info
//! --json` prints SRI; [`NarHash`] converts between them.
use base64::Engine as _;

use crate::error::NixError;

const NIX32_ALPHABET: &[u8; 32] = b"0123456789abcdfghijklmnpqrsvwxyz";

/// A SHA-256 digest as Nix prints it in several notations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NarHash(pub [u8; 32]);

impl NarHash {
    /// Parses `sha256:<nix32>`, `sha256:<hex>`, `sha256:<base64>` or `sha256-<base64>`.
    pub fn parse(s: &str) -> Result<Self, NixError> {
        let bad = || NixError::Hash(s.to_owned());
        let (algo, rest, sri) = if let Some((a, r)) = s.split_once(':') {
            (a, r, false)
        } else if let Some((a, r)) = s.split_once('-') {
            (a, r, true)
        } else {
            return Err(bad());
        };
        if algo != "sha256" {
            return Err(bad());
        }
        let bytes: Vec<u8> = if sri || rest.len() == 44 {
            base64::engine::general_purpose::STANDARD.decode(rest).map_err(|_| bad())?
        } else if rest.len() == 52 {
            nix32_decode(rest).ok_or_else(bad)?
        } else if rest.len() == 64 {
            hex_decode(rest).ok_or_else(bad)?
        } else {
            return Err(bad());
        };
        let arr: [u8; 32] = bytes.try_into().map_err(|_| bad())?;
        Ok(Self(arr))
    }

    /// `sha256:<nix32>`, the form used in narinfo files and their fingerprints.
    pub fn to_nix32(&self) -> String {
        format!("sha256:{}", nix32_encode(&self.0))
    }

    /// `sha256-<base64>` (SRI), the form newer Nix prints.
    pub fn to_sri(&self) -> String {
        format!("sha256-{}", base64::engine::general_purpose::STANDARD.encode(self.0))
    }
}

/// Encodes bytes in Nix's base-32 (least significant bits first, its own alphabet).
pub fn nix32_encode(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        return String::new();
    }
    let len = (bytes.len() * 8 - 1) / 5 + 1;
    let mut out = String::with_capacity(len);
    for n in (0..len).rev() {
        let b = n * 5;
        let i = b / 8;
        let j = b % 8;
        let lo = u16::from(bytes[i]) >> j;
        let hi = if i + 1 < bytes.len() { u16::from(bytes[i + 1]) << (8 - j) } else { 0 };
        let c = usize::from((lo | hi) & 0x1f);
        out.push(char::from(NIX32_ALPHABET[c]));
    }
    out
}

/// Decodes Nix's base-32; `None` on a bad character or non-canonical padding.
pub fn nix32_decode(s: &str) -> Option<Vec<u8>> {
    let size = s.len() * 5 / 8;
    let mut out = vec![0u8; size];
    for (n, ch) in s.bytes().rev().enumerate() {
        let digit = NIX32_ALPHABET.iter().position(|&a| a == ch)? as u16;
        let b = n * 5;
        let i = b / 8;
        let j = b % 8;
        let low = (digit << j) as u8;
        if i < size {
            out[i] |= low;
        } else if low != 0 {
            return None;
        }
        let high = (digit >> (8 - j)) as u8;
        if i + 1 < size {
            out[i + 1] |= high;
        } else if high != 0 {
            return None;
        }
    }
    Some(out)
}

fn hex_decode(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    // Taken from a real `nix copy` to a file:// cache on Nix 2.8: the narinfo said
    // `NarHash: sha256:1xmr8j…` and `nix path-info --json` said `sha256-EFUd…`.
    const NIX32: &str = "sha256:1xmr8jicvzszfzpz46g37mlpvbzjl2wpwvl2b05psipssyp1sm8h";
    const SRI: &str = "sha256-EFUdrtf6Rn0LWIJufrmg8q99aT3jGfLvd1//zaJEufY=";

    #[test]
    fn sri_and_nix32_describe_the_same_digest() {
        let a = NarHash::parse(NIX32).unwrap();
        let b = NarHash::parse(SRI).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.to_nix32(), NIX32);
        assert_eq!(b.to_sri(), SRI);
    }

    #[test]
    fn garbage_is_rejected() {
        for s in ["", "sha256", "md5:abc", "sha256:zzzz", "sha256-!!!", "sha256:eeee"] {
            assert!(NarHash::parse(s).is_err(), "{s}");
        }
    }
}
