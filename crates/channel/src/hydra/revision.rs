//! Which commit a Hydra build was made from. In order of preference:
//! 1. the built system itself, when it records `system.configurationRevision` (NixOS
//!    bakes it into `sw/bin/nixos-version`, or into a `nixos-version.json` that script
//!    reads);
//! 2. Hydra's REST API: `GET /build/<id>` → `jobsetevals` → `GET /eval/<id>` → `flake`
//!    (a locked flake URL carrying the revision);
//! 3. Hydra's PostgreSQL database through `psql`, with the query the original hook used.
use std::path::Path;
use std::sync::LazyLock;
use std::time::Duration;

use fleetgate_nix::process::Run;
use regex::Regex;

use crate::commit::CommitId;

static JSON_REV: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(r#""configurationRevision"\s*:\s*"([0-9a-fA-F]{64}|[0-9a-fA-F]{40})""#).ok()
});
static SCRIPT_REV: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(r#"--configuration-revision\)[^)]{0,400}?echo "([0-9a-fA-F]{64}|[0-9a-fA-F]{40})""#)
        .ok()
});
static VERSION_JSON: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(r"/nix/store/[0-9a-z]{32}-[0-9A-Za-z+._?=-]*\.json").ok()
});

fn capture(re: &LazyLock<Option<Regex>>, text: &str) -> Option<CommitId> {
    let re = re.as_ref()?;
    let m = re.captures(text)?.get(1)?;
    CommitId::parse(m.as_str()).ok()
}

/// Reads `system.configurationRevision` from a built NixOS system, if it recorded one.
pub fn from_system(system: &Path) -> Option<CommitId> {
    let script = std::fs::read(system.join("sw/bin/nixos-version")).ok()?;
    let text = String::from_utf8_lossy(&script);
    if let Some(c) = capture(&JSON_REV, &text).or_else(|| capture(&SCRIPT_REV, &text)) {
        return Some(c);
    }
    // Newer NixOS: the script `cat`s a separate nixos-version.json store file.
    let re = VERSION_JSON.as_ref()?;
    re.find_iter(&text).find_map(|m| {
        let json = std::fs::read_to_string(m.as_str()).ok()?;
        capture(&JSON_REV, &json)
    })
}

/// Extracts the revision from a locked flake URL: a `rev=` parameter, or a full hex
/// commit as the last path segment (`github:owner/repo/<rev>`).
pub fn from_flake_url(flake: &str) -> Option<CommitId> {
    let (path, query) = flake.split_once('?').unwrap_or((flake, ""));
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix("rev="))
        .and_then(|r| CommitId::parse(r).ok())
        .or_else(|| {
            path.trim_end_matches('/')
                .rsplit('/')
                .next()
                .and_then(|seg| CommitId::parse(seg).ok())
        })
}

/// Asks Hydra's REST API (`base` like `http://127.0.0.1:3000`).
pub fn from_hydra_api(base: &str, build: u64, timeout: Duration) -> Result<CommitId, String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .build()
        .into();
    let base = base.trim_end_matches('/');
    let get = |url: String| -> Result<serde_json::Value, String> {
        agent
            .get(&url)
            .header("Accept", "application/json")
            .call()
            .map_err(|e| format!("GET {url}: {e}"))?
            .body_mut()
            .read_json::<serde_json::Value>()
            .map_err(|e| format!("GET {url}: not JSON: {e}"))
    };
    let b = get(format!("{base}/build/{build}"))?;
    let eval = b
        .get("jobsetevals")
        .and_then(|v| v.as_array())
        .and_then(|a| a.iter().filter_map(serde_json::Value::as_u64).max())
        .ok_or_else(|| format!("build {build} has no jobsetevals"))?;
    let e = get(format!("{base}/eval/{eval}"))?;
    let flake = e
        .get("flake")
        .and_then(|v| v.as_str())
        .ok_or_else(|| format!("eval {eval} has no flake URL (not a flake jobset?)"))?;
    from_flake_url(flake).ok_or_else(|| format!("eval {eval}: no revision in flake URL {flake:?}"))
}

/// Asks Hydra's database with `psql` (peer authentication as the hydra user), the
/// query the original hook used. `build` is an integer, so nothing can be injected.
pub fn from_hydra_db(dbname: &str, build: u64, timeout: Duration) -> Result<CommitId, String> {
    let query = format!(
        "SELECT flake FROM jobsetevals WHERE id = (SELECT eval FROM jobsetevalmembers \
         WHERE build = {build} LIMIT 1) ORDER BY id DESC LIMIT 1"
    );
    let out = Run::new("psql")
        .args(["--no-psqlrc", "--tuples-only", "--no-align", "--dbname", dbname, "--command"])
        .arg(query)
        .timeout(timeout)
        .run()
        .map_err(|e| e.to_string())?;
    let flake = out.stdout_text();
    from_flake_url(flake.trim()).ok_or_else(|| format!("no revision in flake URL {flake:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const REV: &str = "6c8e2b0d3f1a4e5b7c9d0e1f2a3b4c5d6e7f8091";

    #[test]
    fn flake_urls() {
        for url in [
            format!("github:linyinfeng/dotfiles/{REV}"),
            format!("git+https://example.org/r.git?ref=main&rev={REV}"),
            format!("git+file:///srv/r?rev={REV}"),
            format!("gitlab:o/r/{REV}?dir=sub"),
        ] {
            assert_eq!(from_flake_url(&url).unwrap().as_str(), REV, "{url}");
        }
        assert!(from_flake_url("github:o/r/main").is_none());
        assert!(from_flake_url("github:o/r").is_none());
    }

    #[test]
    fn revision_in_a_nixos_version_script() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("sw/bin");
        std::fs::create_dir_all(&bin).unwrap();
        // The shape nixpkgs' nixos-version.sh has after substitution.
        let script = format!(
            "#! /bin/sh\ncase \"$1\" in\n  --configuration-revision)\n    if [[ \"{REV}\" =~ \"@\" ]]; then\n      exit 1\n    fi\n    echo \"{REV}\"\n    ;;\n  --json)\n    cat <<EOF\n{{\"configurationRevision\":\"{REV}\",\"nixosVersion\":\"24.05\"}}\nEOF\n    ;;\nesac\n"
        );
        std::fs::write(bin.join("nixos-version"), &script).unwrap();
        assert_eq!(from_system(dir.path()).unwrap().as_str(), REV);
        std::fs::write(bin.join("nixos-version"), script.replace(REV, "@configurationRevision@"))
            .unwrap();
        assert!(from_system(dir.path()).is_none());
        assert!(from_system(&dir.path().join("absent")).is_none());
    }
}
