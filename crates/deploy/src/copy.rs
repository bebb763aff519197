//! `nix copy --to ssh://…` of a system closure, with the host's ssh options
//! passed the way deploy-rs does (`NIX_SSHOPTS`).

use fleetgate_nix::{CopyOptions, Nix, StoreUri};

use crate::inventory::Host;

/// `NIX_SSHOPTS` for a host: its ssh options and port, space-separated
/// (Nix splits the variable on spaces).
#[must_use]
pub fn nix_sshopts(host: &Host) -> String {
    let mut opts = host.ssh_opts.clone();
    if let Some(port) = host.ssh_port {
        opts.extend(["-p".to_owned(), port.to_string()]);
    }
    opts.join(" ")
}

/// The `ssh://` store of a host.
#[must_use]
pub fn store_uri(host: &Host) -> String {
    match &host.ssh_user {
        Some(user) => format!("ssh://{user}@{}", host.hostname),
        None => format!("ssh://{}", host.hostname),
    }
}

/// Below this many free bytes on the target's `/nix` after a failed copy,
/// the failure is reported as a full disk (Nix often only says "disk I/O
/// error" from SQLite).
pub const LOW_SPACE: u64 = 16 << 20;

/// Copies `system`'s closure to the host. `free_after` is asked only when
/// the copy failed: the free bytes on the target's `/nix` then.
///
/// # Errors
/// A message saying what failed and what to do; a full disk is recognised.
pub fn copy(
    nix: &Nix,
    host: &Host,
    system: &str,
    substitute_on_destination: bool,
    free_bytes: Option<u64>,
    free_after: &mut dyn FnMut() -> Option<u64>,
) -> Result<(), String> {
    let store = StoreUri::parse(&store_uri(host)).map_err(|e| e.to_string())?;
    let nix = nix.clone().with_env("NIX_SSHOPTS", nix_sshopts(host));
    let options = CopyOptions {
        substitute_on_destination,
        ..CopyOptions::default()
    };
    nix.copy_to(&store, &[system.to_owned()], &options).map_err(|e| {
        let text = e.to_string();
        let after = free_after();
        if text.contains("No space left on device") || after.is_some_and(|f| f < LOW_SPACE) {
            format!(
                "the target ran out of disk space during the copy ({} free on /nix before it, {} after); nothing was activated. \
                 Free space on the host (e.g. `nix-collect-garbage --delete-older-than 30d`) and deploy again:\n{}",
                free_bytes.map_or_else(|| "unknown".to_owned(), human_bytes),
                after.map_or_else(|| "unknown".to_owned(), human_bytes),
                tail(&text)
            )
        } else {
            format!("nix copy to {} failed; nothing was activated: {}", store_uri(host), tail(&text))
        }
    })
}

fn tail(text: &str) -> String {
    crate::remote::tail(text, 6)
}

/// `1.5 GiB`.
#[must_use]
pub fn human_bytes(n: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    #[allow(clippy::cast_precision_loss)]
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < units.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 { format!("{n} B") } else { format!("{v:.1} {}", units[i]) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sshopts_and_store() {
        let host = Host {
            name: "web1".into(),
            hostname: "10.0.0.1".into(),
            ssh_user: Some("root".into()),
            ssh_port: Some(2222),
            ssh_opts: vec!["-F".into(), "/lab/ssh_config".into()],
            tags: vec![],
            power_cycle: None,
            health: crate::config::HealthSettings::default(),
        };
        assert_eq!(nix_sshopts(&host), "-F /lab/ssh_config -p 2222");
        assert_eq!(store_uri(&host), "ssh://root@10.0.0.1");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(10), "10 B");
    }
}
