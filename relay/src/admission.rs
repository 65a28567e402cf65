//! Who may hold a slot: counts per address, per IPv6 /64 and in total.
//!
//! One IPv6 customer usually holds a whole /64 (often more), so a per-address
//! limit alone lets one host take every slot by changing its source address.
//! Each slot counts against its address, against its /64 when it is IPv6, and
//! against the total; an IPv4-mapped IPv6 address counts as the IPv4 address.
//! A [`Counter`] is plain data; the gateway keeps one for connections in their
//! handshake and one for sessions.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};

/// The caps a [`Counter`] enforces.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Caps {
    pub total: usize,
    pub per_ip: usize,
    /// Per IPv6 /64.
    pub per_prefix: usize,
}

/// Which cap a refused slot would have gone over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Full {
    Total,
    Address,
    Prefix,
}

impl Full {
    pub fn message(self) -> &'static str {
        match self {
            Full::Total => "the gateway is full",
            Full::Address => "too many sessions from your address",
            Full::Prefix => "too many sessions from your network (IPv6 /64)",
        }
    }
}

/// Slots held, by address, by /64 and in total. Entries exist only for
/// addresses that hold a slot, so it is as small as what it counts.
#[derive(Debug, Default)]
pub(crate) struct Counter {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
    per_prefix: HashMap<Ipv6Addr, usize>,
}

/// The /64 of an IPv6 address; none for IPv4.
fn prefix(ip: IpAddr) -> Option<Ipv6Addr> {
    match ip {
        IpAddr::V4(_) => None,
        IpAddr::V6(v6) => Some(Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
    }
}

impl Counter {
    /// Takes a slot for `ip` (see [`canonical`]), or says which cap is reached.
    pub fn take(&mut self, ip: IpAddr, caps: Caps) -> Result<(), Full> {
        if self.total >= caps.total {
            return Err(Full::Total);
        }
        if self.per_ip.get(&ip).copied().unwrap_or(0) >= caps.per_ip {
            return Err(Full::Address);
        }
        let net = prefix(ip);
        if let Some(net) = net
            && self.per_prefix.get(&net).copied().unwrap_or(0) >= caps.per_prefix
        {
            return Err(Full::Prefix);
        }
        self.total += 1;
        *self.per_ip.entry(ip).or_default() += 1;
        if let Some(net) = net {
            *self.per_prefix.entry(net).or_default() += 1;
        }
        Ok(())
    }

    /// Gives back a slot [`take`](Self::take) gave `ip`.
    pub fn give_back(&mut self, ip: IpAddr) {
        if !decrement(&mut self.per_ip, ip) {
            return;
        }
        self.total = self.total.saturating_sub(1);
        if let Some(net) = prefix(ip) {
            decrement(&mut self.per_prefix, net);
        }
    }

    pub fn total(&self) -> usize {
        self.total
    }
}

/// Whether `key` had a count to decrement.
fn decrement<K: std::hash::Hash + Eq>(map: &mut HashMap<K, usize>, key: K) -> bool {
    let Some(n) = map.get_mut(&key) else {
        return false;
    };
    *n = n.saturating_sub(1);
    if *n == 0 {
        map.remove(&key);
    }
    true
}

/// The address a remote is counted under: IPv4-mapped IPv6 as IPv4.
pub(crate) fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAPS: Caps = Caps {
        total: 10,
        per_ip: 2,
        per_prefix: 3,
    };

    fn v6(s: &str) -> IpAddr {
        s.parse().expect("address")
    }

    #[test]
    fn one_ipv6_64_fills_only_its_prefix_cap_whatever_its_addresses() {
        let mut c = Counter::default();
        for host in 1..=3 {
            c.take(v6(&format!("2001:db8:1:2::{host}")), CAPS)
                .expect("under the caps");
        }
        assert_eq!(
            c.take(v6("2001:db8:1:2::99"), CAPS),
            Err(Full::Prefix),
            "a fourth address of the same /64"
        );
        c.take(v6("2001:db8:1:3::1"), CAPS)
            .expect("the next /64 is another network");
        c.give_back(v6("2001:db8:1:2::2"));
        c.take(v6("2001:db8:1:2::99"), CAPS)
            .expect("a slot given back is free again");
    }

    #[test]
    fn addresses_and_the_total_have_their_own_caps() {
        let mut c = Counter::default();
        let a = v6("192.0.2.1");
        c.take(a, CAPS).expect("first");
        c.take(a, CAPS).expect("second");
        assert_eq!(c.take(a, CAPS), Err(Full::Address));
        for host in 2..10 {
            c.take(v6(&format!("192.0.2.{host}")), CAPS)
                .expect("other addresses");
        }
        assert_eq!(c.take(v6("198.51.100.1"), CAPS), Err(Full::Total));
        for _ in 0..20 {
            c.give_back(a);
        }
        assert_eq!(c.total(), 8, "giving back more than taken never underflows");
        assert!(
            !c.per_ip.contains_key(&a),
            "no entry for an address with no slot"
        );
    }

    #[test]
    fn an_ipv4_mapped_address_counts_as_its_ipv4_address() {
        assert_eq!(canonical(v6("::ffff:192.0.2.1")), v6("192.0.2.1"));
        assert_eq!(canonical(v6("2001:db8::1")), v6("2001:db8::1"));
    }
}
