//! Followed streams: which of their segments a node downloads by itself.
//!
//! A live stream: every segment published within the live window of its
//! newest. A VOD: what the node seeds. Seeding a whole VOD takes every
//! segment that fits the seed capacity; seeding a budget is planned once the
//! header index is read, init segments first, then by rendezvous hashing of
//! the node's id and each segment's hash, so that independent seeders with
//! small budgets cover different parts of the VOD instead of all its start.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use meshcast_proto::{SegmentId, SegmentKind, StreamKey, VerifiedDescriptor, VerifiedHeader};

/// How much of a VOD a node downloads by itself. Whatever the choice, it
/// learns the VOD's whole header index, serves what it holds, and fetches
/// any other segment on demand. A live stream's live window is always kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seed {
    /// Every segment.
    All,
    /// Segments up to this many bytes (0: none, on demand only), chosen by
    /// rendezvous hashing (see the module docs). Init segments come first.
    Budget(u64),
}

impl Seed {
    /// Only what viewers ask for.
    pub const ON_DEMAND: Seed = Seed::Budget(0);

    pub fn bytes(self) -> u64 {
        match self {
            Seed::All => u64::MAX,
            Seed::Budget(bytes) => bytes,
        }
    }

    /// The larger of two choices: following a stream again never seeds less.
    pub fn max(self, other: Seed) -> Seed {
        if self.bytes() >= other.bytes() {
            self
        } else {
            other
        }
    }
}

/// Segments behind the newest one from which a live segment counts as
/// history: a viewer near the live edge plays about this far behind it.
pub(super) const HISTORY_SEGMENTS: u64 = 3;

#[derive(Debug)]
pub(super) struct Followed {
    pub(super) descriptor: VerifiedDescriptor,
    /// Publish time of the newest segment seen: where the live window ends.
    newest_us: u64,
    /// The newest publisher epoch of a verified header: the publisher's
    /// current run. Headers of older runs are superseded.
    pub(super) epoch_us: u64,
    pub(super) seed: Seed,
    /// A VOD: the segments chosen for seeding, and their bytes.
    planned: HashSet<SegmentId>,
    planned_bytes: u64,
}

impl Followed {
    pub(super) fn new(descriptor: VerifiedDescriptor, seed: Seed) -> Self {
        Self {
            descriptor,
            newest_us: 0,
            epoch_us: 0,
            seed,
            planned: HashSet::new(),
            planned_bytes: 0,
        }
    }

    /// Followed again, with a descriptor as new or newer.
    pub(super) fn renewed(self, descriptor: VerifiedDescriptor, seed: Seed) -> Self {
        Self {
            descriptor,
            seed: self.seed.max(seed),
            ..self
        }
    }

    pub(super) fn live(&self) -> bool {
        self.descriptor.descriptor().live
    }

    pub(super) fn key(&self) -> StreamKey {
        self.descriptor.stream_key()
    }

    /// Does the node download this segment by itself? Live: if it is recent
    /// enough. VOD: if it seeds it (seeding all: if it fits `capacity`).
    pub(super) fn wanted(
        &mut self,
        header: &VerifiedHeader,
        window: Duration,
        capacity: u64,
    ) -> bool {
        let window = u64::try_from(window.as_micros()).unwrap_or(u64::MAX);
        let published = header.info().published_at_us;
        self.newest_us = self.newest_us.max(published);
        let id = header.id();
        if self.live() {
            // An init segment is wanted as long as the stream runs.
            return id.kind == SegmentKind::Init
                || published.saturating_add(window) > self.newest_us;
        }
        if self.planned.contains(&id) {
            return true;
        }
        let size = header.info().length;
        let fits = self.planned_bytes.saturating_add(size) <= capacity;
        if self.seed == Seed::All && fits {
            self.planned.insert(id);
            self.planned_bytes += size;
            return true;
        }
        false
    }

    /// Whether a live header is well behind the live edge: published more
    /// than [`HISTORY_SEGMENTS`] segment durations before the newest one
    /// seen (see `Scheduler::history_learned`).
    pub(super) fn behind_edge(&self, published_us: u64) -> bool {
        let duration_us = u64::from(self.descriptor.descriptor().segment_duration_ms.max(1)) * 1000;
        self.live() && published_us.saturating_add(HISTORY_SEGMENTS * duration_us) < self.newest_us
    }

    /// A live header published more than `window_us` before the newest one
    /// seen: too old to download or announce (a replay, or a very late
    /// straggler). The newest moves only with verified headers. An init
    /// segment is never stale: the playlist names it as long as it runs.
    pub(super) fn stale(&self, id: &SegmentId, published_us: u64, window_us: u64) -> bool {
        self.live()
            && id.kind != SegmentKind::Init
            && published_us.saturating_add(window_us) <= self.newest_us
    }

    /// Is an unheld header still worth remembering? A VOD's always (any of
    /// it may be asked for); a live one while within twice the window.
    pub(super) fn keeps(&self, header: &VerifiedHeader, window_us: u64) -> bool {
        !self.live()
            || header.id().kind == SegmentKind::Init
            || header.info().published_at_us.saturating_add(2 * window_us) >= self.newest_us
    }

    /// What a budgeted seeder already holds counts against its budget.
    pub(super) fn count_held(&mut self, held: Vec<(SegmentId, u64)>) {
        if self.live() {
            return;
        }
        for (id, size) in held {
            if self.planned.insert(id) {
                self.planned_bytes += size;
            }
        }
    }

    /// Chooses what a VOD seeded within a budget downloads among the headers
    /// known (`pending`), once its index is read: returns the new choices.
    pub(super) fn plan(
        &mut self,
        me: &[u8],
        pending: &HashMap<SegmentId, VerifiedHeader>,
        capacity: u64,
    ) -> Vec<(SegmentId, u64)> {
        let budget = self.seed.bytes().min(capacity);
        if self.live() || self.seed == Seed::All || self.planned_bytes >= budget {
            return Vec::new();
        }
        let stream = self.descriptor.stream_key().id;
        let mut candidates: Vec<(bool, [u8; 32], SegmentId, u64)> = pending
            .iter()
            .filter(|(id, _)| id.stream == stream && !self.planned.contains(id))
            .map(|(id, header)| {
                let mut hasher = blake3::Hasher::new();
                hasher.update(me);
                hasher.update(&header.signed().info.hash);
                let score = *hasher.finalize().as_bytes();
                let media = id.kind != SegmentKind::Init;
                (media, score, *id, header.info().length)
            })
            .collect();
        candidates.sort();
        let mut chosen = Vec::new();
        for (_, _, id, size) in candidates {
            if self.planned_bytes.saturating_add(size) <= budget {
                self.planned_bytes += size;
                self.planned.insert(id);
                chosen.push((id, size));
            }
        }
        chosen
    }
}
