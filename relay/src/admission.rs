//! Who may hold a slot: counts per address, per IPv6 /64 and in total.
//!
//! One IPv6 customer usually holds a whole /64 (often more), so a per-address
//! limit alone lets one host take every slot by changing its source address.
//! Each slot counts against its address, against its /64 when it is IPv6, and
//! against the total; an IPv4-mapped IPv6 address counts as the IPv4 address.
//! A [`Counter`] is plain data; the gateway keeps one for connections in their
//! handshake and one for sessions.
//!
//! Caps bound what is held at once; [`Arrivals`] bounds how fast new
//! connections come from one address (and /64): a token bucket each. An
//! attacker cut off for misbehaving comes straight back, and every return is
//! a full TLS handshake for the gateway; over its rate a connection is
//! refused at its first packet, before any handshake work. Time is passed in.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::time::Instant;

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
    /// Over the rate of new connections, per address or /64.
    Rate,
}

impl Full {
    pub fn message(self) -> &'static str {
        match self {
            Full::Total => "the gateway is full",
            Full::Address => "too many sessions from your address",
            Full::Prefix => "too many sessions from your network (IPv6 /64)",
            Full::Rate => "too many new connections from your address; try again shortly",
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

/// New connections allowed from one address: `per_second` on average, up to
/// `burst` at once. A /64 gets twice both.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rate {
    pub per_second: u32,
    pub burst: u32,
}

impl Rate {
    fn doubled(self) -> Rate {
        Rate {
            per_second: self.per_second.saturating_mul(2),
            burst: self.burst.saturating_mul(2),
        }
    }
}

/// Addresses (and /64s) with buckets kept before the full ones are dropped.
const MAX_BUCKETS: usize = 65_536;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// Tokens now, refilled at `rate` since the last look.
    fn level(&self, rate: Rate, now: Instant) -> f64 {
        let refill = now.saturating_duration_since(self.at).as_secs_f64() * rate.per_second as f64;
        (self.tokens + refill).min(rate.burst as f64)
    }
}

/// Token buckets of new connections, per address and per IPv6 /64. Only
/// addresses that connected lately have an entry: a full bucket is the same
/// as none, so full ones are dropped when the table grows past
/// [`MAX_BUCKETS`] (and if every one is still draining, all are: the limit
/// fails open rather than grow without bound).
#[derive(Debug, Default)]
pub(crate) struct Arrivals {
    per_ip: HashMap<IpAddr, Bucket>,
    per_prefix: HashMap<Ipv6Addr, Bucket>,
}

impl Arrivals {
    /// Whether a new connection from `ip` may start at `now`; takes a token
    /// from its address and /64 if so.
    pub fn admit(&mut self, ip: IpAddr, rate: Rate, now: Instant) -> Result<(), Full> {
        let net = prefix(ip);
        let ip_level = level(&self.per_ip, &ip, rate, now);
        let net_level = net.map(|n| level(&self.per_prefix, &n, rate.doubled(), now));
        if ip_level < 1.0 || net_level.is_some_and(|l| l < 1.0) {
            return Err(Full::Rate);
        }
        take(&mut self.per_ip, ip, ip_level, rate, now);
        if let (Some(net), Some(net_level)) = (net, net_level) {
            take(&mut self.per_prefix, net, net_level, rate.doubled(), now);
        }
        Ok(())
    }

    /// Addresses with a bucket (for tests).
    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.per_ip.len()
    }
}

fn level<K: std::hash::Hash + Eq>(
    map: &HashMap<K, Bucket>,
    key: &K,
    rate: Rate,
    now: Instant,
) -> f64 {
    map.get(key)
        .map_or(rate.burst as f64, |b| b.level(rate, now))
}

fn take<K: std::hash::Hash + Eq>(
    map: &mut HashMap<K, Bucket>,
    key: K,
    level: f64,
    rate: Rate,
    now: Instant,
) {
    if map.len() >= MAX_BUCKETS && !map.contains_key(&key) {
        map.retain(|_, b| b.level(rate, now) < rate.burst as f64);
        if map.len() >= MAX_BUCKETS {
            map.clear();
        }
    }
    map.insert(
        key,
        Bucket {
            tokens: level - 1.0,
            at: now,
        },
    );
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
    use std::time::Duration;

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

    const RATE: Rate = Rate {
        per_second: 2,
        burst: 4,
    };

    #[test]
    fn new_connections_from_an_address_are_limited_to_its_rate_and_burst() {
        let mut arrivals = Arrivals::default();
        let start = Instant::now();
        let a = v6("192.0.2.1");
        for n in 0..4 {
            arrivals
                .admit(a, RATE, start)
                .unwrap_or_else(|_| panic!("burst {n}"));
        }
        assert_eq!(arrivals.admit(a, RATE, start), Err(Full::Rate));
        arrivals
            .admit(v6("192.0.2.2"), RATE, start)
            .expect("another address has its own bucket");
        // Two per second: one more after 500 ms, not two.
        let later = start + Duration::from_millis(500);
        arrivals.admit(a, RATE, later).expect("refilled one");
        assert_eq!(arrivals.admit(a, RATE, later), Err(Full::Rate));
        // A long pause refills only up to the burst.
        let much_later = start + Duration::from_secs(3600);
        for _ in 0..4 {
            arrivals.admit(a, RATE, much_later).expect("burst again");
        }
        assert_eq!(arrivals.admit(a, RATE, much_later), Err(Full::Rate));
    }

    #[test]
    fn one_ipv6_64_shares_one_bucket_of_twice_the_rate() {
        let mut arrivals = Arrivals::default();
        let now = Instant::now();
        // Each address has its own burst of 4, the /64 one of 8.
        for host in 1..=8 {
            arrivals
                .admit(v6(&format!("2001:db8:1:2::{host}")), RATE, now)
                .expect("under the /64's burst");
        }
        assert_eq!(
            arrivals.admit(v6("2001:db8:1:2::99"), RATE, now),
            Err(Full::Rate),
            "a fresh address of a drained /64"
        );
        arrivals
            .admit(v6("2001:db8:1:3::1"), RATE, now)
            .expect("the next /64");
    }

    #[test]
    fn the_bucket_table_stays_bounded() {
        let mut arrivals = Arrivals::default();
        let now = Instant::now();
        for n in 0..(MAX_BUCKETS as u32 + 10) {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + n));
            arrivals.admit(ip, RATE, now).expect("a new address");
        }
        assert!(arrivals.tracked() <= MAX_BUCKETS);
        // Refilled buckets are dropped first.
        let later = now + Duration::from_secs(10);
        arrivals
            .admit(v6("192.0.2.1"), RATE, later)
            .expect("an address after the table filled");
        assert!(arrivals.tracked() <= MAX_BUCKETS);
    }

    #[test]
    fn an_ipv4_mapped_address_counts_as_its_ipv4_address() {
        assert_eq!(canonical(v6("::ffff:192.0.2.1")), v6("192.0.2.1"));
        assert_eq!(canonical(v6("2001:db8::1")), v6("2001:db8::1"));
    }
}
