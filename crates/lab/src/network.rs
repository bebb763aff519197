//! The lab network: one Linux bridge per lab in the root namespace (that is
//! where fleetgate runs), and one network namespace per host joined to it by a
//! veth pair. Hosts get no default route: they can reach the lab and nothing else.
//!
//! Addresses are `10.203.<lab id>.0/24`: the bridge is `.1`, hosts `.11` up.

use std::fs::{self, File};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use rustix::fs::{FlockOperation, flock};

use crate::process::{self, ProcessError};

const IP_TIMEOUT: Duration = Duration::from_secs(20);
/// Serialises lab-id allocation between concurrent `up`s on one machine.
const ALLOCATION_LOCK: &str = "/run/fleetgate-lab.lock";

pub fn bridge_name(id: u8) -> String {
    format!("fgl{id}")
}

pub fn netns_name(id: u8, host: &str) -> String {
    format!("fgl{id}-{host}")
}

/// Interface names are limited to 15 bytes, so veths are named by index.
pub fn veth_name(id: u8, index: usize) -> String {
    format!("fgl{id}v{index}")
}

fn peer_name(id: u8, index: usize) -> String {
    format!("fgl{id}p{index}")
}

pub fn gateway_address(id: u8) -> String {
    format!("10.203.{id}.1")
}

pub fn host_address(id: u8, index: usize) -> String {
    format!("10.203.{id}.{}", 11 + index)
}

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error(transparent)]
    Command(#[from] ProcessError),
    #[error("cannot take the lab allocation lock {ALLOCATION_LOCK}: {0}")]
    Lock(std::io::Error),
    #[error(
        "every lab id (1-250) is in use or its 10.203.<id>.0/24 is already routed here: bring a lab down first (`fleetgate-lab down`)"
    )]
    Exhausted,
}

fn ip(args: &[&str]) -> Result<String, ProcessError> {
    Ok(process::run(Command::new("ip").args(args), IP_TIMEOUT)?.stdout)
}

fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

/// Picks a lab id no other lab on this machine uses and claims it by creating
/// the lab's bridge, under a machine-wide lock.
pub fn create_bridge() -> Result<u8, NetworkError> {
    if let Some(parent) = Path::new(ALLOCATION_LOCK).parent() {
        fs::create_dir_all(parent).map_err(NetworkError::Lock)?;
    }
    let lock = File::create(ALLOCATION_LOCK).map_err(NetworkError::Lock)?;
    flock(&lock, FlockOperation::LockExclusive).map_err(|e| NetworkError::Lock(e.into()))?;
    let routes = routed_prefixes(&ip(&["-4", "-o", "route", "show", "table", "all"])?);
    let id = (1..=250u8)
        .find(|id| !link_exists(&bridge_name(*id)) && !routes.iter().any(|r| overlaps(*r, lab_prefix(*id))))
        .ok_or(NetworkError::Exhausted)?;
    let bridge = bridge_name(id);
    ip(&["link", "add", &bridge, "type", "bridge"])?;
    ip(&["addr", "add", &format!("{}/24", gateway_address(id)), "dev", &bridge])?;
    ip(&["link", "set", &bridge, "up"])?;
    Ok(id)
}

type Prefix = (u32, u8);

fn lab_prefix(id: u8) -> Prefix {
    (u32::from_be_bytes([10, 203, id, 0]), 24)
}

/// Destinations of `ip -4 -o route show table all`, without `default` (a lab
/// never conflicts with the default route: it is more specific).
fn routed_prefixes(routes: &str) -> Vec<Prefix> {
    const TYPES: [&str; 10] = [
        "unicast",
        "local",
        "broadcast",
        "multicast",
        "throw",
        "unreachable",
        "prohibit",
        "blackhole",
        "nat",
        "anycast",
    ];
    routes
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let first = words.next()?;
            let dest = if TYPES.contains(&first) { words.next()? } else { first };
            let (address, length) = dest.split_once('/').unwrap_or((dest, "32"));
            let address: std::net::Ipv4Addr = address.parse().ok()?;
            Some((u32::from(address), length.parse().ok().filter(|l| *l <= 32)?))
        })
        .collect()
}

fn overlaps(a: Prefix, b: Prefix) -> bool {
    let shorter = a.1.min(b.1);
    let mask = if shorter == 0 { 0 } else { u32::MAX << (32 - shorter) };
    a.0 & mask == b.0 & mask
}

/// Creates the host's namespace and cables it to the bridge.
pub fn add_host(id: u8, index: usize, host: &str) -> Result<(), NetworkError> {
    let netns = netns_name(id, host);
    let veth = veth_name(id, index);
    let peer = peer_name(id, index);
    ip(&["netns", "add", &netns])?;
    ip(&["link", "add", &veth, "type", "veth", "peer", "name", &peer])?;
    ip(&["link", "set", &peer, "netns", &netns])?;
    ip(&["link", "set", &veth, "master", &bridge_name(id), "up"])?;
    let inside = |args: &[&str]| -> Result<String, ProcessError> {
        let mut full = vec!["netns", "exec", netns.as_str(), "ip"];
        full.extend_from_slice(args);
        ip(&full)
    };
    inside(&["link", "set", "lo", "up"])?;
    inside(&["link", "set", &peer, "name", "eth0"])?;
    inside(&["addr", "add", &format!("{}/24", host_address(id, index)), "dev", "eth0"])?;
    inside(&["link", "set", "eth0", "up"])?;
    Ok(())
}

/// Removes what [`add_host`] made; quiet about parts already gone.
pub fn remove_host(id: u8, index: usize, host: &str) -> Result<(), NetworkError> {
    let netns = netns_name(id, host);
    if Path::new("/run/netns").join(&netns).exists() {
        ip(&["netns", "del", &netns])?;
    }
    // Deleting the namespace destroys the veth pair asynchronously.
    let veth = veth_name(id, index);
    if link_exists(&veth) {
        match ip(&["link", "del", &veth]) {
            // Gone between the look and the delete: `ip` says either, by version and race.
            Err(ProcessError::Failed { stderr, .. })
                if stderr.contains("Cannot find device") || stderr.contains("No such device") => {}
            other => {
                other?;
            }
        }
    }
    Ok(())
}

pub fn remove_bridge(id: u8) -> Result<(), NetworkError> {
    let bridge = bridge_name(id);
    if link_exists(&bridge) {
        ip(&["link", "del", &bridge])?;
    }
    Ok(())
}

pub fn bridge_exists(id: u8) -> bool {
    link_exists(&bridge_name(id))
}

/// The kernel's interface index of lab `id`'s bridge, if it exists. Indexes
/// are not reused while the machine runs, so this tells a lab's own bridge
/// from one another lab made later under the same (freed) id.
pub fn bridge_ifindex(id: u8) -> Option<u32> {
    let path = Path::new("/sys/class/net").join(bridge_name(id)).join("ifindex");
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

pub fn netns_exists(id: u8, host: &str) -> bool {
    Path::new("/run/netns").join(netns_name(id, host)).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_routed_range_keeps_its_lab_id_free() {
        let routes = routed_prefixes(
            "default via 192.0.2.1 dev eth0\n10.203.7.0/24 dev tun0 scope link\nlocal 127.0.0.0/8 dev lo table local\nbroadcast 10.203.9.255 dev fgl9 table local\n10.0.0.0/8 via 192.0.2.9 dev eth0\n",
        );
        assert!(routes.iter().any(|r| overlaps(*r, lab_prefix(7))), "a VPN's 10.203.7.0/24");
        assert!(routes.iter().any(|r| overlaps(*r, lab_prefix(9))), "a broadcast address inside it");
        assert!(routes.iter().any(|r| overlaps(*r, lab_prefix(100))), "a covering 10.0.0.0/8");
        let without_vpn = routed_prefixes("default via 192.0.2.1 dev eth0\n192.0.2.0/24 dev eth0\n");
        assert!(!without_vpn.iter().any(|r| overlaps(*r, lab_prefix(7))), "the default route never conflicts");
    }
}
