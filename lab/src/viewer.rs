//! A native viewer: one browser session with a gateway (the same protocol
//! and checks as the wasm client), playing the live stream the way a
//! player would, so that a run can count stalls and not only late bytes.
//!
//! The player model: it asks for each media segment when the gateway
//! announces it, and plays segment `s` at `first + buffer + (s - s0) ·
//! segment` (its first announcement `first`, of sequence `s0`), shifted by
//! every stall so far. A segment that arrives after its play time is a
//! stall: playback waits for it. `buffer` is how far behind the live edge
//! the player sits; hls.js sits three segments behind by default, the runs
//! give two, so a stall here would be a stall in hls.js too.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use meshcast_proto::{SegmentKind, StreamId};
use meshcast_relay::{Client, ClientEvent};
use tokio::time::Instant;
use wtransport::tls::Sha256Digest;

/// Where a viewer connects.
#[derive(Debug, Clone)]
pub struct Gateway {
    pub url: String,
    pub cert_hashes: Vec<Sha256Digest>,
    pub stream: StreamId,
}

/// What one viewer saw in its window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Playback {
    /// Media segments announced in the window, and delivered of them.
    pub announced: usize,
    pub delivered: usize,
    /// Delivered more than one segment duration after their announcement.
    pub late: usize,
    /// Times playback had to wait, and for how long in all.
    pub stalls: usize,
    pub stalled: Duration,
    /// Deliveries the client rejected (failed verification): must be 0.
    pub rejected: usize,
}

impl Playback {
    pub fn add(&mut self, other: &Playback) {
        self.announced += other.announced;
        self.delivered += other.delivered;
        self.late += other.late;
        self.stalls += other.stalls;
        self.stalled += other.stalled;
        self.rejected += other.rejected;
    }
}

/// Connects from `bind` (a lab host's address; call on that host's
/// runtime) and opens the session.
pub async fn connect(gateway: &Gateway, bind: SocketAddr) -> Result<Client, String> {
    let endpoint = Client::endpoint_at(Some(bind), &gateway.cert_hashes)?;
    Client::connect_with(
        endpoint,
        &gateway.url,
        gateway.stream,
        "",
        Duration::from_secs(15),
    )
    .await
    .map_err(|e| format!("viewer connects to {}: {e}", gateway.url))
}

/// Plays from `client` until `until`, counting the segments announced
/// from `from` on. A session that ends early leaves its segments
/// undelivered, which count as stalls.
pub async fn watch(
    mut client: Client,
    segment: Duration,
    buffer: Duration,
    from: Instant,
    until: Instant,
) -> Playback {
    // sequence -> (announced, delivered)
    let mut segments: BTreeMap<u64, (Instant, Option<Instant>)> = BTreeMap::new();
    let mut requests = BTreeMap::new();
    let mut rejected = 0;
    let mut start: Option<(u64, Instant)> = None;
    let end = until + buffer + segment;
    while let Ok(Ok(event)) = tokio::time::timeout_at(end, client.next_event()).await {
        let now = Instant::now();
        match event {
            ClientEvent::Announced(header) => {
                let id = header.id();
                if id.kind != SegmentKind::Media || now >= until {
                    continue;
                }
                let (s0, first) = *start.get_or_insert((id.sequence, now));
                let Some(ahead) = id.sequence.checked_sub(s0) else {
                    continue;
                };
                let play_at = first + buffer + segment * ahead as u32;
                let deadline = play_at.saturating_duration_since(now).max(segment / 2);
                if let Ok(request) = client.request(id, 0, deadline).await {
                    requests.insert(request, id.sequence);
                    segments.entry(id.sequence).or_insert((now, None));
                }
            }
            ClientEvent::Delivered { request_id, at, .. } => {
                if let Some(sequence) = requests.remove(&request_id)
                    && let Some((_, delivered)) = segments.get_mut(&sequence)
                {
                    *delivered = Some(Instant::from_std(at));
                }
            }
            ClientEvent::Rejected { request_id, .. } => {
                rejected += 1;
                requests.remove(&request_id);
            }
            ClientEvent::Error { request_id, .. } => {
                requests.remove(&request_id);
            }
            ClientEvent::Gateways(_) => {}
        }
    }
    client.close();
    let mut playback = play(&segments, segment, buffer, from);
    playback.rejected = rejected;
    playback
}

/// The player model over what arrived when (see the module docs). Segments
/// announced before `from` shape the playout but are not counted.
fn play(
    segments: &BTreeMap<u64, (Instant, Option<Instant>)>,
    segment: Duration,
    buffer: Duration,
    from: Instant,
) -> Playback {
    let mut playback = Playback::default();
    let Some((&s0, &(first, _))) = segments.iter().next() else {
        return playback;
    };
    let mut shift = Duration::ZERO;
    for (&sequence, &(announced, delivered)) in segments {
        let counted = announced >= from;
        let play_at = first + buffer + segment * (sequence - s0) as u32 + shift;
        let Some(delivered) = delivered else {
            // Never came: playback stops here for good.
            if counted {
                playback.announced += 1;
                playback.stalls += 1;
            }
            continue;
        };
        let wait = delivered.saturating_duration_since(play_at);
        shift += wait;
        if counted {
            playback.announced += 1;
            playback.delivered += 1;
            playback.late += usize::from(delivered > announced + segment);
            if !wait.is_zero() {
                playback.stalls += 1;
                playback.stalled += wait;
            }
        }
    }
    playback
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEGMENT: Duration = Duration::from_secs(2);
    const BUFFER: Duration = Duration::from_secs(4);

    fn at(base: Instant, ms: u64) -> Instant {
        base + Duration::from_millis(ms)
    }

    #[test]
    fn a_segment_after_its_play_time_stalls_and_shifts_the_rest() {
        let t = Instant::now();
        let mut segments = BTreeMap::new();
        // Announced every 2 s; the second arrives 5 s after its
        // announcement, 1 s after its play time (2 + 4 = 6 s).
        segments.insert(10, (at(t, 0), Some(at(t, 300))));
        segments.insert(11, (at(t, 2000), Some(at(t, 7000))));
        // Plays at 8 s + 1 s of stall: arriving at 8.5 s is in time.
        segments.insert(12, (at(t, 4000), Some(at(t, 8500))));
        let p = play(&segments, SEGMENT, BUFFER, t);
        assert_eq!(p.announced, 3);
        assert_eq!(p.delivered, 3);
        assert_eq!(p.late, 2);
        assert_eq!(p.stalls, 1);
        assert_eq!(p.stalled, Duration::from_secs(1));
    }

    #[test]
    fn a_missing_segment_is_a_stall_and_earlier_ones_are_not_counted() {
        let t = Instant::now();
        let mut segments = BTreeMap::new();
        segments.insert(1, (at(t, 0), Some(at(t, 9000))));
        segments.insert(2, (at(t, 2000), None));
        segments.insert(3, (at(t, 4000), Some(at(t, 4100))));
        let p = play(&segments, SEGMENT, BUFFER, at(t, 1000));
        assert_eq!(p.announced, 2);
        assert_eq!(p.delivered, 1);
        assert_eq!(p.stalls, 1);
        assert_eq!(p.late, 0);
    }
}
