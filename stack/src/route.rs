//! The stack's own routing table: which interface a destination leaves through.
//!
//! Longest prefix wins; among equal prefixes the route added first wins. Every interface address
//! also yields a connected route for its network (as the kernel adds `proto kernel` routes), so a
//! peer on an interface's subnet is reached through that interface without a configured route.

use std::net::IpAddr;

use crate::addr::Cidr;
use crate::ids::IfaceId;

/// One route: destinations in `dest` leave through `iface`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// The destination prefix (`0.0.0.0/0` or `::/0` for a default route).
    pub dest: Cidr,
    /// The interface it leaves through.
    pub iface: IfaceId,
}

/// A routing table with longest-prefix match.
#[derive(Debug, Default, Clone)]
pub struct RoutingTable {
    routes: Vec<Route>,
}

impl RoutingTable {
    /// Add a route. A prefix is stored as its network (`192.0.2.7/24` becomes `192.0.2.0/24`).
    pub fn add(&mut self, dest: Cidr, iface: IfaceId) {
        let route = Route {
            dest: dest.network(),
            iface,
        };
        if !self.routes.contains(&route) {
            self.routes.push(route);
        }
    }

    /// Remove every route through `iface`.
    pub fn remove_interface(&mut self, iface: IfaceId) {
        self.routes.retain(|r| r.iface != iface);
    }

    /// The routes, in the order they were added.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// The best route to `dest` among those whose interface `usable` accepts: longest prefix,
    /// then first added.
    pub fn lookup(&self, dest: &IpAddr, usable: impl Fn(IfaceId) -> bool) -> Option<Route> {
        let mut best: Option<Route> = None;
        for route in self
            .routes
            .iter()
            .filter(|r| r.dest.contains(dest) && usable(r.iface))
        {
            if best.is_none_or(|b| route.dest.prefix_len() > b.dest.prefix_len()) {
                best = Some(*route);
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    #[test]
    fn longest_prefix_wins_then_first_added() {
        let mut t = RoutingTable::default();
        t.add(Cidr::default_v4(), IfaceId(0));
        t.add(cidr("198.51.100.0/24"), IfaceId(1));
        t.add(cidr("198.51.100.128/25"), IfaceId(2));
        t.add(cidr("198.51.100.128/25"), IfaceId(3));
        let all = |_| true;
        assert_eq!(
            t.lookup(&"203.0.113.1".parse().unwrap(), all)
                .unwrap()
                .iface,
            IfaceId(0)
        );
        assert_eq!(
            t.lookup(&"198.51.100.1".parse().unwrap(), all)
                .unwrap()
                .iface,
            IfaceId(1)
        );
        assert_eq!(
            t.lookup(&"198.51.100.200".parse().unwrap(), all)
                .unwrap()
                .iface,
            IfaceId(2)
        );
        assert!(t.lookup(&"2001:db8::1".parse().unwrap(), all).is_none());
        // An unusable interface (down) is skipped: the next best route is taken.
        let not2 = |i| i != IfaceId(2) && i != IfaceId(3);
        assert_eq!(
            t.lookup(&"198.51.100.200".parse().unwrap(), not2)
                .unwrap()
                .iface,
            IfaceId(1)
        );
    }

    #[test]
    fn stores_networks() {
        let mut t = RoutingTable::default();
        t.add(cidr("192.0.2.7/24"), IfaceId(0));
        assert_eq!(t.routes()[0].dest, cidr("192.0.2.0/24"));
    }
}
