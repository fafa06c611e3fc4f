//! Which network a host connects from, as far as keeping one party off
//! both copies of a unit goes.
//!
//! Host keys cost nothing, but addresses on many networks cost an attacker
//! more: the scheduler gives a unit's later copies only to hosts on other
//! networks than its earlier copies' hosts. A network is the address cut
//! to a prefix (IPv4 /24 and IPv6 /48 by default, a job setting), like the
//! "same subnet" rules of BOINC's and Tor's path selection.

use std::net::IpAddr;

/// The network `addr` belongs to with the given prefix lengths, as a
/// comparable key; `None` when the job turned the rule off for this
/// address family (prefix 0).
pub fn network(addr: IpAddr, v4_prefix: u8, v6_prefix: u8) -> Option<(bool, u128)> {
    match addr.to_canonical() {
        IpAddr::V4(a) => {
            let bits = u32::from(a) as u128;
            cut(bits, 32, v4_prefix).map(|k| (false, k))
        }
        IpAddr::V6(a) => cut(u128::from(a), 128, v6_prefix).map(|k| (true, k)),
    }
}

fn cut(bits: u128, width: u8, prefix: u8) -> Option<u128> {
    if prefix == 0 {
        return None;
    }
    let keep = prefix.min(width);
    Some(bits >> (width - keep))
}

/// Whether two addresses are on one network under the job's prefixes.
/// An unknown address shares a network with nobody.
pub fn same_network(a: Option<IpAddr>, b: Option<IpAddr>, v4_prefix: u8, v6_prefix: u8) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => {
            let na = network(a, v4_prefix, v6_prefix);
            na.is_some() && na == network(b, v4_prefix, v6_prefix)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn addresses_group_by_prefix() {
        assert!(same_network(ip("10.1.2.3"), ip("10.1.2.200"), 24, 48));
        assert!(!same_network(ip("10.1.2.3"), ip("10.1.3.3"), 24, 48));
        assert!(same_network(ip("10.1.2.3"), ip("10.1.3.3"), 16, 48));
        assert!(same_network(
            ip("2001:db8:1::1"),
            ip("2001:db8:1:ffff::2"),
            24,
            48
        ));
        assert!(!same_network(
            ip("2001:db8:1::1"),
            ip("2001:db8:2::1"),
            24,
            48
        ));
        // A v4-mapped v6 address is its v4 address (dual-stack sockets).
        assert!(same_network(ip("::ffff:10.1.2.3"), ip("10.1.2.9"), 24, 48));
        assert!(!same_network(ip("10.1.2.3"), ip("2001:db8::1"), 24, 48));
        assert!(!same_network(ip("10.1.2.3"), ip("10.1.2.3"), 0, 48), "off");
        assert!(!same_network(None, ip("10.1.2.3"), 24, 48));
        assert!(same_network(ip("10.1.2.3"), ip("10.1.2.3"), 32, 128));
    }
}
