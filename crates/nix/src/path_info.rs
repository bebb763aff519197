//! `nix path-info --json` output, in both of its historical shapes.
use serde::Deserialize;

use crate::hash::NarHash;
use crate::keys::{PublicKey, narinfo_fingerprint};

/// What Nix knows about one store path (locally or in a binary cache).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PathInfo {
    /// The store path (filled in from the key in the object shape).
    #[serde(default)]
    pub path: String,
    /// The NAR hash as Nix printed it (`sha256-…` SRI, or `sha256:…`).
    pub nar_hash: String,
    /// NAR size in bytes.
    pub nar_size: u64,
    /// Full store paths this path references.
    #[serde(default)]
    pub references: Vec<String>,
    /// Size of the whole closure (only with `-S`).
    #[serde(default)]
    pub closure_size: Option<u64>,
    /// `name:base64` signatures.
    #[serde(default)]
    pub signatures: Vec<String>,
    /// The derivation that built it, when known.
    #[serde(default)]
    pub deriver: Option<String>,
    /// For binary caches: the NAR's URL relative to the cache.
    #[serde(default)]
    pub url: Option<String>,
}

impl PathInfo {
    /// Parses `nix path-info --json` output: a list (Nix ≤ 2.18) or an object keyed by
    /// store path (2.19+). In the object shape, `null` entries (paths that are not valid
    /// in that store) are returned in the second list.
    pub fn parse_many(json: &str) -> Result<(Vec<PathInfo>, Vec<String>), String> {
        let v: serde_json::Value = serde_json::from_str(json).map_err(|e| format!("not JSON: {e}"))?;
        let mut found = Vec::new();
        let mut missing = Vec::new();
        match v {
            serde_json::Value::Array(items) => {
                for item in items {
                    // Nix ≤ 2.18 prints `{"path": …, "valid": false}` for absent paths.
                    if item.get("valid") == Some(&serde_json::Value::Bool(false)) {
                        if let Some(p) = item.get("path").and_then(|p| p.as_str()) {
                            missing.push(p.to_owned());
                        }
                        continue;
                    }
                    found.push(serde_json::from_value(item).map_err(|e| e.to_string())?);
                }
            }
            serde_json::Value::Object(map) => {
                for (path, item) in map {
                    if item.is_null() {
                        missing.push(path);
                        continue;
                    }
                    let mut info: PathInfo = serde_json::from_value(item).map_err(|e| e.to_string())?;
                    info.path = path;
                    found.push(info);
                }
            }
            _ => return Err("expected a list or an object".into()),
        }
        Ok((found, missing))
    }

    /// The NAR hash, parsed.
    pub fn nar_hash(&self) -> Option<NarHash> {
        NarHash::parse(&self.nar_hash).ok()
    }

    /// The narinfo fingerprint its signatures cover.
    pub fn fingerprint(&self) -> Option<String> {
        let mut refs = self.references.clone();
        refs.sort();
        Some(narinfo_fingerprint(&self.path, &self.nar_hash()?, self.nar_size, &refs))
    }

    /// True if one of its signatures verifies with `key`.
    pub fn is_signed_by(&self, key: &PublicKey) -> bool {
        self.fingerprint().is_some_and(|fp| self.signatures.iter().any(|s| key.verifies(fp.as_bytes(), s)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Verbatim from `nix path-info --json --store file:///tmp/cache1 …` on Nix 2.8.
    const LIST_28: &str = r#"[{"path":"/nix/store/9lbzgxvs2rjybvqa15sgxw4j0qzp009i-sys","narHash":"sha256-EFUdrtf6Rn0LWIJufrmg8q99aT3jGfLvd1//zaJEufY=","narSize":120,"references":[],"deriver":"/nix/store/cjcl65d3w7gdbf8cnh5r2bj5724lf86g-sys.drv","signatures":["test1:b8W6YGeP9tqmZGtBwmaVz2C+Ar/Hpz1k6RJo/0nDnyHlgLRPmuSlsNfJlCy9nj6eG+Yqj9CwKI3Ra4LokLsWBw=="],"url":"nar/1xmr8jicvzszfzpz46g37mlpvbzjl2wpwvl2b05psipssyp1sm8h.nar","downloadHash":"sha256-EFUdrtf6Rn0LWIJufrmg8q99aT3jGfLvd1//zaJEufY=","downloadSize":120}]"#;

    #[test]
    fn the_2_8_list_shape_parses_and_its_signature_verifies() {
        let (infos, missing) = PathInfo::parse_many(LIST_28).unwrap();
        assert!(missing.is_empty());
        assert_eq!(infos.len(), 1);
        let pk = PublicKey::parse("test1:fjYcuZjQVdZgKGeDy4UPE6TZkOtzYO0yGbMmrsf7aMc=").unwrap();
        assert!(infos[0].is_signed_by(&pk));
        let mut forged = infos[0].clone();
        forged.nar_size += 1;
        assert!(!forged.is_signed_by(&pk));
    }

    #[test]
    fn the_object_shape_and_missing_paths() {
        let json = r#"{"/nix/store/a-x":{"narHash":"sha256-EFUdrtf6Rn0LWIJufrmg8q99aT3jGfLvd1//zaJEufY=","narSize":1,"closureSize":9},"/nix/store/b-y":null}"#;
        let (infos, missing) = PathInfo::parse_many(json).unwrap();
        assert_eq!(infos[0].path, "/nix/store/a-x");
        assert_eq!(infos[0].closure_size, Some(9));
        assert_eq!(missing, vec!["/nix/store/b-y".to_owned()]);
        let old = r#"[{"path":"/nix/store/b-y","valid":false}]"#;
        assert_eq!(PathInfo::parse_many(old).unwrap().1, vec!["/nix/store/b-y".to_owned()]);
        assert!(PathInfo::parse_many("42").is_err());
    }
}
