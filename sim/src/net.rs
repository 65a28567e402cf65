//! The modelled internet: where nodes are, how far apart, who can reach whom.
//!
//! Latency: each node sits in one of four regions and has an access delay
//! (its last mile, log-normally spread). A round trip between two nodes is
//! the regions' base RTT plus both access delays, all scaled so that the
//! median over random pairs is the scenario's `rtt_median`. Reachability:
//! a public node accepts anyone; two NATed nodes connect only if a hole
//! punch succeeds (decided once per pair, with the scenario's probability).
//! Bandwidth sharing is in `world.rs`, next to the flows it shares.

use std::time::Duration;

use rand::Rng;
use rand::rngs::StdRng;

/// Round trips between region centres, milliseconds: Europe, North America
/// east and west, East Asia (the rough shape of public measurements).
const REGION_RTT_MS: [[f64; 4]; 4] = [
    [15.0, 80.0, 140.0, 200.0],
    [80.0, 15.0, 60.0, 180.0],
    [140.0, 60.0, 15.0, 120.0],
    [200.0, 180.0, 120.0, 15.0],
];
/// How the audience spreads over the regions.
const REGION_WEIGHTS: [f64; 4] = [0.35, 0.3, 0.15, 0.2];
const ACCESS_MEDIAN_MS: f64 = 10.0;

/// Where a node is.
#[derive(Debug, Clone, Copy)]
pub struct Place {
    region: usize,
    access_ms: f64,
}

impl Place {
    pub fn random(rng: &mut StdRng) -> Self {
        let mut pick = rng.r#gen::<f64>();
        let mut region = REGION_WEIGHTS.len() - 1;
        for (i, w) in REGION_WEIGHTS.iter().enumerate() {
            if pick < *w {
                region = i;
                break;
            }
            pick -= w;
        }
        // Log-normal, sigma 0.5: most last miles within 2× of the median.
        let normal: f64 = (0..12).map(|_| rng.r#gen::<f64>()).sum::<f64>() - 6.0;
        Self {
            region,
            access_ms: ACCESS_MEDIAN_MS * (0.5 * normal).exp(),
        }
    }

    fn rtt_ms(&self, other: &Place) -> f64 {
        REGION_RTT_MS[self.region][other.region] + self.access_ms + other.access_ms
    }
}

/// Latencies, scaled to a median round trip.
#[derive(Debug, Clone)]
pub struct Latency {
    scale: f64,
}

impl Latency {
    /// Calibrates the scale on random pairs of places drawn like the nodes'.
    pub fn calibrated(rtt_median: Duration, rng: &mut StdRng) -> Self {
        let mut samples: Vec<f64> = (0..2_001)
            .map(|_| Place::random(rng).rtt_ms(&Place::random(rng)))
            .collect();
        samples.sort_by(f64::total_cmp);
        let median = samples[samples.len() / 2];
        Self {
            scale: rtt_median.as_secs_f64() * 1e3 / median,
        }
    }

    pub fn rtt(&self, a: &Place, b: &Place) -> Duration {
        Duration::from_secs_f64(a.rtt_ms(b) * self.scale / 1e3)
    }

    /// Half a round trip: one message's way.
    pub fn one_way(&self, a: &Place, b: &Place) -> Duration {
        self.rtt(a, b) / 2
    }
}

/// May `a` and `b` connect? Public nodes accept anyone; two NATed nodes
/// need a successful punch.
pub fn reachable(a_nat: bool, b_nat: bool, punch_success: f64, rng: &mut StdRng) -> bool {
    !(a_nat && b_nat) || rng.r#gen::<f64>() < punch_success
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn the_median_round_trip_is_the_one_asked_for() {
        let mut rng = StdRng::seed_from_u64(3);
        let latency = Latency::calibrated(Duration::from_millis(50), &mut rng);
        let mut rtts: Vec<Duration> = (0..5_000)
            .map(|_| latency.rtt(&Place::random(&mut rng), &Place::random(&mut rng)))
            .collect();
        rtts.sort();
        let median = rtts[rtts.len() / 2].as_secs_f64() * 1e3;
        assert!((45.0..55.0).contains(&median), "median {median} ms");
        assert!(rtts[rtts.len() * 99 / 100] > rtts[rtts.len() / 2] * 2);
    }
}
