//! A cap on the connections one client network holds open (`limits.max_connections_per_client`),
//! so that one client cannot take every place under `limits.max_connections` and leave the
//! gateway accepting no one else.
//!
//! One count for the whole gateway, checked by the accept loops (both listeners) before a
//! connection goes to a worker, like the places of `limits.max_connections`: a count per worker
//! would let a network hold the cap on every worker. A connection that is admitted holds its
//! [`ClientPlace`] for its whole life, on its worker, wherever it ends (TLS handshake, HTTP
//! session, parked between requests, WebSocket tunnel); a connection over its network's cap is
//! closed right after the accept, before any byte of it is read.
//!
//! Peers in `server.trusted_proxies` are exempt: every client of a front proxy arrives from the
//! proxy's address, and counting them as one network would refuse them all.

use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;

use crate::http::client_ip::is_trusted;
use crate::http::network_shares::{NetworkKey, NetworkShares};
use crate::logging::Throttle;

/// How many connections each client network holds open, against the cap.
pub(crate) struct ClientConnections {
    open: NetworkShares,
    cap: u32,
    trusted: Vec<IpNet>,
    /// Refusals are logged at debug level each, and in a throttled warning with their count, so
    /// that a client being refused cannot flood the log.
    refusals: Throttle,
}

/// What to do with a connection just accepted from a peer.
pub(crate) enum Admission {
    /// Counted in its network until the place is dropped.
    Admitted(ClientPlace),
    /// A trusted proxy: not counted.
    Exempt,
    /// Its network holds the cap already: close it.
    Refused,
}

/// One open connection counted in its network; given back when dropped.
pub(crate) struct ClientPlace {
    connections: Arc<ClientConnections>,
    network: NetworkKey,
}

impl Drop for ClientPlace {
    fn drop(&mut self) {
        self.connections.open.give_back(self.network, 1);
    }
}

impl ClientConnections {
    /// At most `cap` connections per client network, none counted for peers in `trusted`.
    pub(crate) fn new(cap: usize, trusted: Vec<IpNet>) -> ClientConnections {
        ClientConnections {
            open: NetworkShares::default(),
            cap: u32::try_from(cap).unwrap_or(u32::MAX),
            trusted,
            refusals: Throttle::new(),
        }
    }

    /// Counts a connection from `peer` in its network, unless the network holds the cap already
    /// or `peer` is a trusted proxy.
    pub(crate) fn admit(self: &Arc<Self>, peer: IpAddr) -> Admission {
        if is_trusted(peer, &self.trusted) {
            return Admission::Exempt;
        }
        match self.open.take(peer, 1, self.cap) {
            Some(network) => Admission::Admitted(ClientPlace {
                connections: self.clone(),
                network,
            }),
            None => {
                self.note_refusal(peer);
                Admission::Refused
            }
        }
    }

    fn note_refusal(&self, peer: IpAddr) {
        tracing::debug!(%peer, "connection refused: its network holds limits.max_connections_per_client");
        if let Some(held_back) = self.refusals.allow() {
            tracing::warn!(
                refused = held_back + 1,
                last_peer = %peer,
                cap = self.cap,
                "connections refused: a client network holds limits.max_connections_per_client \
                 (behind a proxy, list it in server.trusted_proxies)"
            );
        }
    }

    /// No network holds a connection (tests).
    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.open.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn admitted(admission: Admission) -> ClientPlace {
        match admission {
            Admission::Admitted(place) => place,
            Admission::Exempt => panic!("exempt"),
            Admission::Refused => panic!("refused"),
        }
    }

    #[test]
    fn one_network_is_kept_to_its_cap_and_gets_places_back_when_connections_end() {
        let clients = Arc::new(ClientConnections::new(2, Vec::new()));
        let a = admitted(clients.admit(ip("192.0.2.1")));
        let b = admitted(clients.admit(ip("::ffff:192.0.2.1")));
        assert!(matches!(clients.admit(ip("192.0.2.1")), Admission::Refused));
        // An IPv6 /48 is one network, whatever the host part.
        let c = admitted(clients.admit(ip("2001:db8:1:2::1")));
        let d = admitted(clients.admit(ip("2001:db8:1:3::1")));
        assert!(matches!(
            clients.admit(ip("2001:db8:1:ffff::9")),
            Admission::Refused
        ));
        let other = admitted(clients.admit(ip("192.0.2.2")));
        drop(a);
        let e = admitted(clients.admit(ip("192.0.2.1")));
        drop((b, c, d, e, other));
        assert!(clients.is_empty());
    }

    #[test]
    fn trusted_proxies_are_not_counted() {
        let trusted = vec!["10.0.0.0/8".parse().unwrap()];
        let clients = Arc::new(ClientConnections::new(1, trusted));
        for _ in 0..3 {
            assert!(matches!(clients.admit(ip("10.1.2.3")), Admission::Exempt));
        }
        assert!(clients.is_empty());
        let _held = admitted(clients.admit(ip("192.0.2.1")));
        assert!(matches!(clients.admit(ip("192.0.2.1")), Admission::Refused));
    }
}
