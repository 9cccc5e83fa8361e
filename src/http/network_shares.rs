//! How much of something all clients share (form memory, connections to an upstream) each
//! client network holds, so that one network can be kept to its share.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard};

use ipnet::IpNet;

use super::client_ip::network_of;

/// A client network ([`network_of`]) as one number: an IPv4 /32 as its IPv4-mapped IPv6
/// address, an IPv6 /48 as its network address (whose last 80 bits are zero, which no mapped
/// address's are). One number hashes in one step.
pub type NetworkKey = u128;

pub fn network_key(client: IpAddr) -> NetworkKey {
    match network_of(client) {
        IpNet::V4(v4) => u128::from(v4.addr().to_ipv6_mapped()),
        IpNet::V6(v6) => u128::from(v6.network()),
    }
}

/// What each client network holds now, in units its owner chooses; networks holding nothing
/// are forgotten. (SipHash: the keys are the clients' addresses.)
#[derive(Default)]
pub struct NetworkShares(Mutex<HashMap<NetworkKey, u32>>);

impl NetworkShares {
    fn lock(&self) -> MutexGuard<'_, HashMap<NetworkKey, u32>> {
        // The counts stay consistent whatever panicked while holding them.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds `units` to what `client`'s network holds, unless that would take it above `cap`:
    /// its key, or `None` (nothing added).
    pub fn take(&self, client: IpAddr, units: u32, cap: u32) -> Option<NetworkKey> {
        let network = network_key(client);
        let mut held = self.lock();
        let now = held
            .get(&network)
            .copied()
            .unwrap_or(0)
            .saturating_add(units);
        if now > cap {
            return None;
        }
        held.insert(network, now);
        Some(network)
    }

    /// Adds `units` to what `client`'s network holds, whatever it holds: its key and what it
    /// holds now.
    pub fn add(&self, client: IpAddr, units: u32) -> (NetworkKey, u32) {
        let network = network_key(client);
        let mut held = self.lock();
        let now = held.entry(network).or_insert(0);
        *now = now.saturating_add(units);
        (network, *now)
    }

    /// Gives back `units` that `network` took.
    pub fn give_back(&self, network: NetworkKey, units: u32) {
        let mut held = self.lock();
        if let Some(now) = held.get_mut(&network) {
            *now = now.saturating_sub(units);
            if *now == 0 {
                held.remove(&network);
            }
        }
    }

    /// No network holds anything.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn networks_are_ipv4_addresses_and_ipv6_sites() {
        assert_eq!(
            network_key(ip("192.0.2.7")),
            network_key(ip("::ffff:192.0.2.7"))
        );
        assert_ne!(network_key(ip("192.0.2.7")), network_key(ip("192.0.2.8")));
        assert_eq!(
            network_key(ip("2001:db8:1:2::1")),
            network_key(ip("2001:db8:1:ffff::9"))
        );
        assert_ne!(
            network_key(ip("2001:db8:1::1")),
            network_key(ip("2001:db8:2::1"))
        );
        assert_ne!(network_key(ip("0.0.0.0")), network_key(ip("::")));
    }

    #[test]
    fn a_network_is_kept_to_its_cap_and_forgotten_when_it_holds_nothing() {
        let shares = NetworkShares::default();
        let a = shares.take(ip("192.0.2.1"), 3, 4).unwrap();
        assert!(shares.take(ip("192.0.2.1"), 2, 4).is_none());
        assert_eq!(shares.take(ip("192.0.2.1"), 1, 4), Some(a));
        assert!(
            shares.take(ip("192.0.2.2"), 4, 4).is_some(),
            "another network"
        );
        assert_eq!(shares.add(ip("192.0.2.1"), 9), (a, 13), "add has no cap");
        shares.give_back(a, 13);
        shares.give_back(network_key(ip("192.0.2.2")), 4);
        assert!(shares.is_empty());
    }
}
