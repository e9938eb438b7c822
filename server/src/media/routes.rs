//! Which peer a datagram belongs to, by its source address.
//!
//! str0m decides whether a datagram is a peer's (`Rtc::accepts`: the nominated address, a
//! STUN message with the peer's ufrag, or another address ICE found usable). Asking every peer
//! in turn costs work proportional to the number of peers for every datagram, so the engine
//! remembers which peer accepted a source address and asks that peer first. The peer still
//! decides: a remembered peer that no longer accepts the datagram (the client moved to another
//! address and the old one was reused, a STUN message of another connection from the same
//! address) sends the datagram down the slow path, which asks every peer and remembers the
//! answer. New addresses (ICE checks, a consent-freshness or renomination change of address)
//! take the slow path once.

use std::collections::HashMap;
use std::net::SocketAddr;

use str0m::net::Protocol;

/// Source (protocol, address) → index of the peer that last accepted a datagram from it.
#[derive(Default)]
pub(crate) struct Routes {
    map: HashMap<(Protocol, SocketAddr), usize>,
}

impl Routes {
    /// The peer (index below `peers`) that takes a datagram from `source`: the remembered one if
    /// `accepts` says it still does, else the first that does (remembered from now on).
    pub(crate) fn find(
        &mut self,
        proto: Protocol,
        source: SocketAddr,
        peers: usize,
        mut accepts: impl FnMut(usize) -> bool,
    ) -> Option<usize> {
        let key = (proto, source);
        if let Some(&i) = self.map.get(&key) {
            if i < peers && accepts(i) {
                return Some(i);
            }
        }
        let found = (0..peers).find(|&i| accepts(i));
        match found {
            Some(i) => {
                // Addresses peers moved away from are forgotten now and then.
                if self.map.len() >= 64 + 8 * peers {
                    self.map.clear();
                }
                self.map.insert(key, i);
            }
            None => {
                self.map.remove(&key);
            }
        }
        found
    }

    /// Peer `idx` was removed with `swap_remove` from a list of `len` peers: its addresses are
    /// forgotten and the last peer's now lead to `idx`.
    pub(crate) fn removed(&mut self, idx: usize, len: usize) {
        let last = len - 1;
        self.map.retain(|_, i| *i != idx);
        if idx != last {
            for i in self.map.values_mut() {
                if *i == last {
                    *i = idx;
                }
            }
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// A stand-in for the peers: each accepts datagrams from the addresses it has.
    struct Peers(Vec<Vec<SocketAddr>>);

    impl Peers {
        fn route(&self, routes: &mut Routes, from: SocketAddr, asked: &mut usize) -> Option<usize> {
            *asked = 0;
            routes.find(Protocol::Udp, from, self.0.len(), |i| {
                *asked += 1;
                self.0[i].contains(&from)
            })
        }
    }

    /// Two peers behind one IP address, different ports: each port reaches its own peer, and
    /// once learned, with one question.
    #[test]
    fn same_ip_different_ports() {
        let a = addr("192.0.2.1:40000");
        let b = addr("192.0.2.1:40001");
        let peers = Peers(vec![vec![addr("198.51.100.7:5000")], vec![a], vec![b]]);
        let mut routes = Routes::default();
        let mut asked = 0;
        assert_eq!(peers.route(&mut routes, a, &mut asked), Some(1));
        assert_eq!(peers.route(&mut routes, b, &mut asked), Some(2));
        assert_eq!(peers.route(&mut routes, a, &mut asked), Some(1));
        assert_eq!(asked, 1, "a learned address asks one peer");
        assert_eq!(peers.route(&mut routes, b, &mut asked), Some(2));
        assert_eq!(asked, 1);
        // The same address over ICE-TCP is another source.
        assert_eq!(routes.find(Protocol::Tcp, a, 3, |i| i == 0), Some(0));
        assert_eq!(peers.route(&mut routes, a, &mut asked), Some(1));
    }

    /// A peer whose address changes (ICE renomination, a new network): the new address is
    /// found by asking; when another peer later takes over the old address, the remembered
    /// peer no longer accepts it and the datagram reaches the new owner.
    #[test]
    fn address_change_and_reuse() {
        let old = addr("192.0.2.1:40000");
        let new = addr("192.0.2.9:50000");
        let mut peers = Peers(vec![vec![addr("198.51.100.7:5000")], vec![old]]);
        let mut routes = Routes::default();
        let mut asked = 0;
        assert_eq!(peers.route(&mut routes, old, &mut asked), Some(1));
        peers.0[1] = vec![new];
        assert_eq!(peers.route(&mut routes, new, &mut asked), Some(1));
        // Peer 0 now gets the old address.
        peers.0[0].push(old);
        assert_eq!(peers.route(&mut routes, old, &mut asked), Some(0));
        assert_eq!(peers.route(&mut routes, old, &mut asked), Some(0));
        assert_eq!(asked, 1);
        // Nobody accepts it any more: unmatched, and forgotten.
        peers.0[0].pop();
        assert_eq!(peers.route(&mut routes, old, &mut asked), None);
        assert_eq!(routes.len(), 1);
    }

    /// Removing a peer with `swap_remove` moves the last one into its place.
    #[test]
    fn removal_follows_swap_remove() {
        let a = addr("192.0.2.1:1");
        let b = addr("192.0.2.2:2");
        let c = addr("192.0.2.3:3");
        let mut peers = Peers(vec![vec![a], vec![b], vec![c]]);
        let mut routes = Routes::default();
        let mut asked = 0;
        for x in [a, b, c] {
            peers.route(&mut routes, x, &mut asked);
        }
        peers.0.swap_remove(0);
        routes.removed(0, 3);
        assert_eq!(routes.len(), 2);
        assert_eq!(peers.route(&mut routes, c, &mut asked), Some(0));
        assert_eq!(asked, 1, "the moved peer's address leads to its new index");
        assert_eq!(peers.route(&mut routes, b, &mut asked), Some(1));
        assert_eq!(asked, 1);
        assert_eq!(peers.route(&mut routes, a, &mut asked), None);
    }
}
