//! What a simulation run models: the network, the stream, and who misbehaves.

use std::time::Duration;

/// How the peers that misbehave do it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum BadKind {
    /// Accept every transfer, send and read nothing, and claim in header
    /// lists to hold every segment published (a Sybil holder): the peer
    /// costs others a timeout per attempt until they bench it, and is never
    /// banned (nothing it sends fails verification).
    Stall,
    /// Send bytes that fail verification: caught and banned by the first
    /// honest peer that receives them.
    Forge,
}

/// A run's settings. [`Scenario::default`] is the reference case at
/// 1,000 nodes.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Scenario {
    /// Nodes besides the publisher.
    pub nodes: u32,
    /// Each node's uplink and downlink, bits per second.
    pub uplink_bps: f64,
    pub downlink_bps: f64,
    /// The publisher's uplink (a studio or a server, not a home).
    pub publisher_uplink_bps: f64,
    /// Neighbours each node dials at start and on joining.
    pub degree: u32,
    /// Neighbours the publisher keeps.
    pub publisher_degree: u32,
    /// The stream: bits per second, one rendition, in segments of this long.
    pub bitrate_bps: f64,
    pub segment: Duration,
    /// How much of the stream is published.
    pub duration: Duration,
    /// Median round-trip time between two nodes (regions and access links
    /// spread it: see `net.rs`).
    pub rtt_median: Duration,
    /// Round-trip time from any node to the HTTP origin (a CDN edge).
    pub origin_rtt: Duration,
    /// Share of nodes behind NAT: two of them connect only if a hole punch
    /// succeeds.
    pub nat: f64,
    /// Probability that a hole punch between two NATed nodes succeeds.
    pub punch_success: f64,
    /// Share of nodes replaced per minute: a node leaves abruptly, a fresh
    /// one joins.
    pub churn_per_min: f64,
    /// Share of nodes that stall ([`BadKind::Stall`]).
    pub stallers: f64,
    /// Share of nodes that forge ([`BadKind::Forge`]).
    pub forgers: f64,
    /// How long a node waits for the mesh before fetching a live segment
    /// from the origin (the node's `origin_after`, 4 s by default).
    pub origin_after: Duration,
    /// How long a node waits for a push before pulling a segment it heard
    /// of (the node's `pull_delay`, 150 ms by default).
    pub pull_delay: Duration,
    /// A transfer running longer is cancelled and retried elsewhere (the
    /// node's `transfer_timeout`, 5 s by default).
    pub transfer_timeout: Duration,
    /// Nodes forward a segment while it is still arriving, each verified
    /// piece at once (the node's `cut_through`, on by default); off, every
    /// hop waits for the whole segment (store-and-forward).
    pub cut_through: bool,
    pub seed: u64,
}

impl Default for Scenario {
    fn default() -> Self {
        Self {
            nodes: 1_000,
            uplink_bps: 10e6,
            downlink_bps: 50e6,
            publisher_uplink_bps: 100e6,
            degree: 8,
            publisher_degree: 8,
            bitrate_bps: 4e6,
            segment: Duration::from_secs(2),
            duration: Duration::from_secs(60),
            rtt_median: Duration::from_millis(50),
            origin_rtt: Duration::from_millis(20),
            nat: 0.6,
            punch_success: 0.7,
            churn_per_min: 0.0,
            stallers: 0.0,
            forgers: 0.0,
            origin_after: Duration::from_secs(4),
            pull_delay: Duration::from_millis(150),
            transfer_timeout: Duration::from_secs(5),
            cut_through: true,
            seed: 1,
        }
    }
}

impl Scenario {
    /// How a node drawn `roll` (uniform in 0..1) misbehaves, if it does.
    pub fn bad_kind(&self, roll: f64) -> Option<BadKind> {
        if roll < self.stallers {
            Some(BadKind::Stall)
        } else if roll < self.stallers + self.forgers {
            Some(BadKind::Forge)
        } else {
            None
        }
    }

    /// Bytes in one segment.
    pub fn segment_bytes(&self) -> usize {
        (self.bitrate_bps / 8.0 * self.segment.as_secs_f64()).round() as usize
    }

    /// Segments published.
    pub fn segments(&self) -> u64 {
        (self.duration.as_secs_f64() / self.segment.as_secs_f64()).floor() as u64
    }

    /// Checks the settings make sense: a clear message for each that does not.
    pub fn validate(&self) -> Result<(), String> {
        let share = |name: &str, v: f64| {
            if (0.0..=1.0).contains(&v) {
                Ok(())
            } else {
                Err(format!(
                    "{name} must be between 0 and 1 (0% and 100%), not {v}"
                ))
            }
        };
        share("nat", self.nat)?;
        share("punch success", self.punch_success)?;
        share("stallers", self.stallers)?;
        share("forgers", self.forgers)?;
        if self.stallers + self.forgers > 1.0 {
            return Err("stallers and forgers together must be at most 100% of the nodes".into());
        }
        share("churn per minute", self.churn_per_min)?;
        if self.nodes < 2 {
            return Err("at least 2 nodes".into());
        }
        if self.degree < 1 || self.publisher_degree < 1 {
            return Err("degree and publisher degree must be at least 1".into());
        }
        for (name, v) in [
            ("uplink", self.uplink_bps),
            ("downlink", self.downlink_bps),
            ("publisher uplink", self.publisher_uplink_bps),
            ("bitrate", self.bitrate_bps),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return Err(format!("{name} must be a positive rate, not {v}"));
            }
        }
        if self.segment.is_zero() || self.segments() == 0 {
            return Err("the stream must last at least one segment".into());
        }
        if self.segment_bytes() == 0 || self.segment_bytes() > 64 << 20 {
            return Err(format!(
                "a segment of {} bytes: bitrate × segment must be between 1 byte and 64 MiB",
                self.segment_bytes()
            ));
        }
        Ok(())
    }
}
