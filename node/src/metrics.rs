//! Prometheus metrics: every name and label value, defined once for the
//! node, the publisher and the browser gateway (`meshcast-relay` updates its
//! metrics through the helpers here).
//!
//! Updates go through the `metrics` facade: they cost next to nothing and
//! record nothing until the process installs a recorder (`meshcast` does
//! with `--metrics-listen`). The sans-I/O store and scheduler know nothing of
//! this: the shell around them updates the metrics.
//!
//! Gauges that describe one node ([`LocalGauge`]) are applied as deltas, so
//! that several nodes in one process add up instead of overwriting each
//! other, and a node that stops takes its share away.

use metrics::{Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge};

/// Verified segments accepted into the store, by `source`.
pub const SEGMENTS_RECEIVED: &str = "meshcast_segments_received_total";
/// Segment body bytes, by `direction` and `class`.
pub const BYTES: &str = "meshcast_bytes_total";
/// Peers with at least one open libp2p connection.
pub const PEERS_CONNECTED: &str = "meshcast_peers_connected";
/// Data from peers (or the origin) that failed verification, by `what`.
pub const VERIFICATION_FAILURES: &str = "meshcast_verification_failures_total";
/// Peers banned for sending bad data.
pub const BANS: &str = "meshcast_bans_total";
/// Inbound segment-exchange streams reset at once: over the node's limit or
/// the sending peer's share of it.
pub const STREAMS_REFUSED: &str = "meshcast_streams_refused_total";
/// Time from a segment's signed publish time to its arrival in this node's store.
pub const PROPAGATION: &str = "meshcast_propagation_seconds";
/// Browser sessions open now.
pub const BROWSER_SESSIONS: &str = "meshcast_browser_sessions";
/// Browser sessions admitted since start.
pub const BROWSER_SESSIONS_TOTAL: &str = "meshcast_browser_sessions_total";
/// Browser requests answered, by `result`.
pub const BROWSER_REQUESTS: &str = "meshcast_browser_requests_total";
/// Segments that missed their deadline, by `where`.
pub const LATE_SEGMENTS: &str = "meshcast_late_segments_total";
/// Segment bytes held in memory.
pub const STORE_BYTES: &str = "meshcast_store_bytes";
/// Segments held in memory.
pub const STORE_SEGMENTS: &str = "meshcast_store_segments";
/// Bytes in the on-disk cache (`node.cache_dir`).
pub const CACHE_BYTES: &str = "meshcast_cache_bytes";
/// The upload cap (`node.max_upload`) in bytes per second; 0 without one.
pub const UPLOAD_CAP: &str = "meshcast_upload_cap_bytes_per_second";
/// Pulls answered `Absent` because the upload cap could not send the body
/// before the puller's deadline.
pub const PULLS_DECLINED_AT_CAP: &str = "meshcast_pulls_declined_at_cap_total";
/// Pushes accepted while their segment was still arriving here, and so
/// forwarded piece by piece as it came (cut-through), whatever their end.
pub const FORWARDS: &str = "meshcast_cut_through_forwards_total";
/// Always 1, labelled with the `version` of the program.
pub const BUILD_INFO: &str = "meshcast_build_info";

/// Histogram buckets of [`PROPAGATION`], in seconds: from one-hop loopback
/// (10 ms) to the origin fallback's territory (a few seconds) and beyond.
pub const PROPAGATION_BUCKETS: &[f64] =
    &[0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 6.0, 10.0];

/// The `source` labels of [`SEGMENTS_RECEIVED`]: see [`crate::mesh::Source::label`].
pub const SOURCES: [&str; 5] = ["push", "pull", "origin", "publisher", "cache"];

/// The `direction` label of [`BYTES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    In,
    Out,
}

impl Direction {
    pub fn label(self) -> &'static str {
        match self {
            Self::In => "in",
            Self::Out => "out",
        }
    }
}

/// The `class` label of [`BYTES`]: who is on the other end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Other nodes (segment exchange).
    Mesh,
    /// The HTTP origin (the publisher's ingest, nodes' fallback).
    Origin,
    /// Browsers and native clients of the gateway.
    Browser,
}

impl Class {
    pub fn label(self) -> &'static str {
        match self {
            Self::Mesh => "mesh",
            Self::Origin => "origin",
            Self::Browser => "browser",
        }
    }
}

/// The `what` label of [`VERIFICATION_FAILURES`].
pub use crate::mesh::Failure;

impl Failure {
    pub const ALL: [Failure; 3] = [Self::Header, Self::Body, Self::Descriptor];

    pub fn label(self) -> &'static str {
        match self {
            Self::Header => "header",
            Self::Body => "body",
            Self::Descriptor => "descriptor",
        }
    }
}

/// The `result` label of [`BROWSER_REQUESTS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestResult {
    /// Header and body sent.
    Delivered,
    /// Not held, and the request allowed no wait.
    NotFound,
    /// Not held before the request's deadline: answered `DEADLINE`.
    Deadline,
    /// Cancelled or replaced by the client, or its session or stream closed
    /// before the delivery was sent.
    Cancelled,
    /// Over a limit (requests or bytes in flight) or not a segment of the
    /// session's stream.
    Refused,
}

impl RequestResult {
    pub const ALL: [RequestResult; 5] = [
        Self::Delivered,
        Self::NotFound,
        Self::Deadline,
        Self::Cancelled,
        Self::Refused,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::NotFound => "not_found",
            Self::Deadline => "deadline",
            Self::Cancelled => "cancelled",
            Self::Refused => "refused",
        }
    }
}

/// The `where` label of [`LATE_SEGMENTS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Late {
    /// A gateway answered a browser's request `DEADLINE`.
    Browser,
    /// A node fetched a segment from the origin because the mesh missed the deadline.
    Mesh,
}

impl Late {
    pub fn label(self) -> &'static str {
        match self {
            Self::Browser => "browser",
            Self::Mesh => "mesh",
        }
    }
}

pub fn segment_received(source: &'static str) {
    counter!(SEGMENTS_RECEIVED, "source" => source).increment(1);
}

pub fn bytes(direction: Direction, class: Class, bytes: u64) {
    counter!(BYTES, "direction" => direction.label(), "class" => class.label()).increment(bytes);
}

pub fn verification_failure(what: Failure) {
    counter!(VERIFICATION_FAILURES, "what" => what.label()).increment(1);
}

pub fn pull_declined_at_cap() {
    counter!(PULLS_DECLINED_AT_CAP).increment(1);
}

pub fn forward() {
    counter!(FORWARDS).increment(1);
}

pub fn ban() {
    counter!(BANS).increment(1);
}

pub fn inbound_refused() {
    counter!(STREAMS_REFUSED).increment(1);
}

/// Records a segment's propagation time: `now_us - published_at_us`, both
/// microseconds since the Unix epoch (a publisher clock ahead of ours counts
/// as zero).
pub fn propagation(published_at_us: u64, now_us: u64) {
    let micros = now_us.saturating_sub(published_at_us);
    metrics::histogram!(PROPAGATION).record(micros as f64 / 1e6);
}

pub fn browser_request(result: RequestResult) {
    counter!(BROWSER_REQUESTS, "result" => result.label()).increment(1);
}

pub fn late(place: Late) {
    counter!(LATE_SEGMENTS, "where" => place.label()).increment(1);
}

/// One open browser session: counted in [`BROWSER_SESSIONS_TOTAL`] when
/// made, in [`BROWSER_SESSIONS`] until dropped.
#[derive(Debug)]
pub struct BrowserSession(());

impl BrowserSession {
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        counter!(BROWSER_SESSIONS_TOTAL).increment(1);
        gauge!(BROWSER_SESSIONS).increment(1.0);
        Self(())
    }
}

impl Drop for BrowserSession {
    fn drop(&mut self) {
        gauge!(BROWSER_SESSIONS).decrement(1.0);
    }
}

/// One node's contribution to a process-wide gauge: [`LocalGauge::set`]
/// applies the change since the last value, and dropping it removes the
/// node's share.
#[derive(Debug)]
pub struct LocalGauge {
    name: &'static str,
    last: f64,
}

impl LocalGauge {
    pub fn new(name: &'static str) -> Self {
        gauge!(name).increment(0.0);
        Self { name, last: 0.0 }
    }

    pub fn set(&mut self, value: u64) {
        let value = value as f64;
        if value != self.last {
            gauge!(self.name).increment(value - self.last);
            self.last = value;
        }
    }
}

impl Drop for LocalGauge {
    fn drop(&mut self) {
        if self.last != 0.0 {
            gauge!(self.name).decrement(self.last);
        }
    }
}

/// Help texts and units, and a zero for every label combination, so that a
/// scrape shows every series from the start (rates and dashboards need the
/// zero). Call once after installing the recorder.
pub fn register(version: &str) {
    describe_counter!(
        SEGMENTS_RECEIVED,
        "Verified segments accepted into the store, by how they came (push, pull, origin, publisher)"
    );
    describe_counter!(
        BYTES,
        Unit::Bytes,
        "Segment body bytes received (in) and sent (out), by the other end (mesh, origin, browser)"
    );
    describe_gauge!(PEERS_CONNECTED, "Peers with an open libp2p connection");
    describe_counter!(
        VERIFICATION_FAILURES,
        "Headers, bodies and DHT descriptors that failed verification"
    );
    describe_counter!(BANS, "Peers banned for sending bad data");
    describe_counter!(
        STREAMS_REFUSED,
        "Inbound segment streams reset at once: over the node's limit or one peer's share"
    );
    describe_histogram!(
        PROPAGATION,
        Unit::Seconds,
        "Time from a segment's signed publish time to its arrival in this node's store"
    );
    describe_gauge!(BROWSER_SESSIONS, "Browser sessions open now");
    describe_counter!(BROWSER_SESSIONS_TOTAL, "Browser sessions admitted");
    describe_counter!(BROWSER_REQUESTS, "Browser segment requests, by result");
    describe_counter!(
        LATE_SEGMENTS,
        "Segments that missed their deadline: gateway answers DEADLINE (browser), origin fallbacks (mesh)"
    );
    describe_gauge!(STORE_BYTES, Unit::Bytes, "Segment bytes held in memory");
    describe_gauge!(STORE_SEGMENTS, "Segments held in memory");
    describe_gauge!(
        CACHE_BYTES,
        Unit::Bytes,
        "Bytes in the on-disk segment cache"
    );
    describe_gauge!(
        UPLOAD_CAP,
        "The upload cap (node.max_upload) in bytes per second; 0 without one"
    );
    describe_counter!(
        PULLS_DECLINED_AT_CAP,
        "Pulls answered Absent: behind the upload cap, the body would not reach the puller before its deadline"
    );
    describe_counter!(
        FORWARDS,
        "Pushes accepted while their segment was still arriving, forwarded piece by piece (cut-through)"
    );
    describe_gauge!(BUILD_INFO, "Always 1; the version label names the build");
    counter!(PULLS_DECLINED_AT_CAP).increment(0);
    counter!(FORWARDS).increment(0);

    gauge!(BUILD_INFO, "version" => version.to_string()).set(1.0);
    for source in SOURCES {
        counter!(SEGMENTS_RECEIVED, "source" => source).increment(0);
    }
    for direction in [Direction::In, Direction::Out] {
        for class in [Class::Mesh, Class::Origin, Class::Browser] {
            bytes(direction, class, 0);
        }
    }
    for what in Failure::ALL {
        counter!(VERIFICATION_FAILURES, "what" => what.label()).increment(0);
    }
    counter!(BANS).increment(0);
    counter!(STREAMS_REFUSED).increment(0);
    counter!(BROWSER_SESSIONS_TOTAL).increment(0);
    gauge!(BROWSER_SESSIONS).increment(0.0);
    for result in RequestResult::ALL {
        counter!(BROWSER_REQUESTS, "result" => result.label()).increment(0);
    }
    for place in [Late::Browser, Late::Mesh] {
        counter!(LATE_SEGMENTS, "where" => place.label()).increment(0);
    }
    for name in [PEERS_CONNECTED, STORE_BYTES, STORE_SEGMENTS, CACHE_BYTES] {
        gauge!(name).increment(0.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_is_a_valid_prometheus_name_with_the_meshcast_prefix() {
        let names = [
            SEGMENTS_RECEIVED,
            BYTES,
            PEERS_CONNECTED,
            VERIFICATION_FAILURES,
            BANS,
            PROPAGATION,
            BROWSER_SESSIONS,
            BROWSER_SESSIONS_TOTAL,
            BROWSER_REQUESTS,
            LATE_SEGMENTS,
            STORE_BYTES,
            STORE_SEGMENTS,
            CACHE_BYTES,
            BUILD_INFO,
        ];
        for name in names {
            assert!(name.starts_with("meshcast_"), "{name}");
            assert!(
                name.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                "{name}"
            );
        }
        let mut unique = names.to_vec();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), names.len());
        assert!(PROPAGATION_BUCKETS.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(PROPAGATION_BUCKETS.first(), Some(&0.01));
        assert_eq!(PROPAGATION_BUCKETS.last(), Some(&10.0));
    }
}
