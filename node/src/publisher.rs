//! The publisher: ingests HLS from an origin, signs every segment, injects it.
//!
//! [`Publisher::start`] reads the origin's entry playlist (a master playlist,
//! whose variants become renditions, or a single media playlist), builds and
//! signs the stream descriptor and publishes it. [`Publisher::run`] then polls
//! each rendition's playlist at the pace RFC 8216 asks of clients (the target
//! duration after a change, half of it otherwise), downloads new segments
//! (init segments first) with bounded concurrency, signs and injects them.
//! Problems after start — an unparsable playlist, a segment that 404s, times
//! out or is too large — are reported as warnings and the loop goes on: the
//! next poll may well succeed.
//!
//! A VOD's ingest ends once every rendition's playlist is read (it has
//! `#EXT-X-ENDLIST`); a live stream's ends when `#EXT-X-ENDLIST` appears, and
//! the descriptor is then signed again with `live: false`, so that nodes that
//! look the stream up from then on treat it as a VOD. Either way the
//! publisher's node keeps serving what it holds: the caller keeps it running
//! (`meshcast publish` does until Ctrl-C or SIGTERM).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use meshcast_proto::{
    DecodeError, Descriptor, PublisherKey, Rendition, SegmentId, SegmentInfo, StreamId, StreamKey,
    VerifiedDescriptor,
};
use tokio::sync::broadcast;

use crate::ingest::dash;
use crate::ingest::playlist::{self, ByteRange, Item, Playlist, Tracker};
use crate::ingest::source::{FetchLimits, Source};
use crate::node::{Node, NodeError};
use crate::unix_now_us as now_us;

#[derive(Debug, Clone)]
pub struct Config {
    /// An http(s) URL of a playlist, or a folder holding one.
    pub origin: String,
    /// Where viewers and nodes can fetch the origin over HTTP when the mesh is
    /// late. Defaults to `origin` when that is a URL; a folder origin without
    /// it has no HTTP fallback.
    pub public_origin: Option<url::Url>,
    pub name: String,
    /// Segment downloads in flight at once, per rendition.
    pub concurrency: usize,
    pub max_segment: u64,
    pub fetch: FetchLimits,
    /// Viewers need a token signed by the publisher key (`meshcast token`).
    pub private: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("cannot read the origin: {0}")]
    Origin(String),
    #[error("the origin's playlists do not make a valid stream: {0}")]
    Descriptor(#[from] DecodeError),
    #[error(transparent)]
    Node(#[from] NodeError),
}

/// What the publisher reports besides logs.
#[derive(Debug, Clone)]
pub enum PublishEvent {
    Injected {
        id: SegmentId,
        bytes: u64,
    },
    Warning {
        message: String,
    },
    /// Every rendition's playlist has ended: nothing more will be injected.
    Complete(Ingested),
}

/// What an ingest injected, when it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ingested {
    pub segments: u64,
    pub bytes: u64,
    /// The stream was live and ended (`#EXT-X-ENDLIST` appeared): it is now
    /// published as a VOD.
    pub was_live: bool,
}

struct Track {
    id: u32,
    /// The rendition's playlist, resolved by the source.
    playlist: String,
}

pub struct Publisher {
    node: Node,
    key: PublisherKey,
    stream: StreamKey,
    source: Arc<Source>,
    descriptor: VerifiedDescriptor,
    tracks: Vec<Track>,
    config: Config,
    events: broadcast::Sender<PublishEvent>,
    injected_segments: AtomicU64,
    injected_bytes: AtomicU64,
    /// When this run started (its first descriptor's issue time), signed
    /// into every header: a restarted publisher may number segments from
    /// the start again, and nodes tell its headers from the last run's.
    epoch_us: u64,
}

impl Publisher {
    /// Reads the origin, signs and publishes the stream descriptor.
    pub async fn start(
        node: Node,
        key: PublisherKey,
        config: Config,
    ) -> Result<Self, PublishError> {
        let source = Source::from_arg(&config.origin, config.fetch)
            .map_err(|e| PublishError::Origin(e.to_string()))?;
        let entry = source.entry().to_string();
        let resolve = |relative_to: &str, uri: &str| {
            source
                .resolve(relative_to, uri)
                .map_err(|e| PublishError::Origin(e.to_string()))
        };
        let playlist = fetch_playlist(&source, "", &entry, config.max_segment).await?;
        let (renditions, tracks, first) = match playlist {
            Playlist::Master(variants) => {
                let first_uri = variants.first().map(|v| v.uri.clone()).unwrap_or_default();
                let first =
                    match fetch_playlist(&source, &entry, &first_uri, config.max_segment).await? {
                        Playlist::Media(media) => media,
                        Playlist::Master(_) => {
                            return Err(PublishError::Origin(format!(
                                "variant {first_uri} is a master playlist"
                            )));
                        }
                    };
                let tracks = variants
                    .iter()
                    .map(|v| {
                        Ok(Track {
                            id: v.id,
                            playlist: keep_fragment(resolve(&entry, &v.uri)?, &v.uri),
                        })
                    })
                    .collect::<Result<Vec<_>, PublishError>>()?;
                let renditions = variants
                    .into_iter()
                    .map(|v| Rendition {
                        id: v.id,
                        name: v.name,
                        bandwidth: v.bandwidth,
                        codecs: v.codecs,
                        width: v.width,
                        height: v.height,
                        uri: v.uri,
                        kind: v.kind,
                        group: v.group,
                        language: v.language,
                    })
                    .collect();
                (renditions, tracks, first)
            }
            Playlist::Media(media) => {
                let rendition = Rendition {
                    id: 0,
                    name: "default".into(),
                    bandwidth: 0,
                    codecs: String::new(),
                    width: 0,
                    height: 0,
                    uri: String::new(),
                    ..Default::default()
                };
                let track = Track {
                    id: 0,
                    playlist: resolve("", &entry)?,
                };
                (vec![rendition], vec![track], media)
            }
        };
        let origin_url = match (&config.public_origin, &source) {
            (Some(url), _) => url.to_string(),
            (None, Source::Http { .. }) => source
                .resolve("", &entry)
                .map_err(|e| PublishError::Origin(e.to_string()))?,
            (None, Source::Folder { .. }) => String::new(),
        };
        let descriptor = Descriptor {
            publisher: key.public(),
            name: config.name.clone(),
            renditions,
            origin_url,
            segment_duration_ms: u32::try_from(first.target_duration.as_millis())
                .unwrap_or(u32::MAX)
                .max(1),
            live: !first.ended,
            issued_at_us: now_us(),
            private: config.private,
        }
        .sign(&key)?;
        node.publish(descriptor.clone()).await?;
        let (events, _) = broadcast::channel(1024);
        Ok(Self {
            epoch_us: descriptor.descriptor().issued_at_us,
            node,
            stream: descriptor.stream_key(),
            key,
            source: Arc::new(source),
            descriptor,
            tracks,
            config,
            events,
            injected_segments: AtomicU64::new(0),
            injected_bytes: AtomicU64::new(0),
        })
    }

    pub fn stream_id(&self) -> StreamId {
        self.stream.id
    }

    pub fn descriptor(&self) -> &VerifiedDescriptor {
        &self.descriptor
    }

    pub fn events(&self) -> broadcast::Receiver<PublishEvent> {
        self.events.subscribe()
    }

    /// Polls every rendition until the stream ends: a VOD once everything
    /// is injected, a live stream when its playlists end (never, for most).
    /// A live stream that ended is published again as a VOD. The node keeps
    /// serving after this returns, as long as a handle to it is kept.
    pub async fn run(self) -> Ingested {
        let this = Arc::new(self);
        let polls = this.tracks.iter().map(|track| {
            this.clone()
                .poll_rendition(track.id, track.playlist.clone())
        });
        futures::future::join_all(polls).await;
        let was_live = this.descriptor.descriptor().live;
        if was_live {
            this.publish_ended().await;
        }
        let ingested = Ingested {
            segments: this.injected_segments.load(Relaxed),
            bytes: this.injected_bytes.load(Relaxed),
            was_live,
        };
        let _ = this.events.send(PublishEvent::Complete(ingested));
        ingested
    }

    /// Signs the descriptor again as a VOD (a newer `issued_at`) and puts it
    /// in the DHT in place of the live one.
    async fn publish_ended(&self) {
        let mut descriptor = self.descriptor.descriptor().clone();
        descriptor.live = false;
        descriptor.issued_at_us = now_us().max(descriptor.issued_at_us + 1);
        let signed = match descriptor.sign(&self.key) {
            Ok(signed) => signed,
            Err(e) => return self.warn(format!("the ended stream stays live: {e}")),
        };
        if let Err(e) = self.node.publish(signed).await {
            self.warn(format!("the ended stream stays live: {e}"));
        }
    }

    fn warn(&self, message: String) {
        tracing::warn!("{message}");
        let _ = self.events.send(PublishEvent::Warning { message });
    }

    async fn poll_rendition(self: Arc<Self>, rendition: u32, playlist: String) {
        let mut tracker = Tracker::new();
        let mut parts = PartBodies::default();
        let target =
            Duration::from_millis(u64::from(self.descriptor.descriptor().segment_duration_ms));
        let blocking = matches!(*self.source, Source::Http { .. });
        // The part a blocking reload asks for, when the origin offers them.
        let mut reload: Option<(u64, u32)> = None;
        loop {
            let mut ended = false;
            let mut new = false;
            let uri = match reload {
                Some((msn, part)) => blocking_reload(&playlist, msn, part),
                None => playlist.clone(),
            };
            match fetch_playlist(&self.source, "", &uri, self.config.max_segment).await {
                Ok(Playlist::Media(media)) => {
                    ended = media.ended;
                    let items = tracker.update(&media);
                    new = !items.is_empty();
                    self.ingest(rendition, &playlist, items, &mut parts).await;
                }
                Ok(Playlist::Master(_)) => self.warn(format!(
                    "rendition playlist {playlist} is a master playlist"
                )),
                Err(e) => self.warn(format!("rendition {rendition}: {e}")),
            }
            if ended {
                return;
            }
            // Low latency: ask at once for the next part; the origin holds
            // the request until it exists, so the publisher's delay is a
            // fetch, not a poll interval. A reload that brought nothing new
            // was not held: the origin does not block, so poll.
            let asked = reload.take();
            if blocking && (new || asked.is_none()) {
                reload = tracker.next_part();
                if reload.is_some() {
                    continue;
                }
            }
            // Before any playlist loaded, retry at the descriptor's pace.
            let wait = tracker.poll_interval();
            tokio::time::sleep(if wait.is_zero() { target / 2 } else { wait }).await;
        }
    }

    async fn ingest(
        &self,
        rendition: u32,
        playlist_uri: &str,
        items: Vec<Item>,
        parts: &mut PartBodies,
    ) {
        let max = self.config.max_segment;
        let downloads = futures::stream::iter(items)
            .map(|item| async move {
                let what = match &item {
                    Item::Init { uri, range, .. } => Some((uri, *range)),
                    Item::Media(seg) => Some((&seg.uri, seg.range)),
                    Item::Part(part) => Some((&part.uri, None)),
                    // Made of parts already fetched.
                    Item::Assembled { .. } => None,
                };
                let body = match what {
                    Some((uri, range)) => {
                        Some(self.source.get_range(playlist_uri, uri, range, max).await)
                    }
                    None => None,
                };
                (item, body)
            })
            .buffered(self.config.concurrency.max(1));
        futures::pin_mut!(downloads);
        let stream = self.stream.id;
        while let Some((item, body)) = downloads.next().await {
            let (id, described) = match item {
                Item::Init {
                    sequence,
                    uri,
                    range,
                } => (
                    SegmentId::init(stream, rendition, sequence),
                    Described::new(uri, range, Duration::ZERO),
                ),
                Item::Media(seg) => (
                    SegmentId::media(stream, rendition, seg.sequence),
                    Described::of(seg),
                ),
                Item::Part(part) => {
                    let id = SegmentId::part(stream, rendition, part.sequence, part.index);
                    match &body {
                        Some(Ok(bytes)) => parts.add(part.sequence, part.index, bytes.clone()),
                        _ => parts.lost(part.sequence),
                    }
                    (id, Described::new(part.uri, None, part.duration))
                }
                Item::Assembled { segment, parts: n } => {
                    let id = SegmentId::media(stream, rendition, segment.sequence);
                    match parts.take(segment.sequence, n) {
                        Some(whole) => {
                            let described = Described {
                                parts: n,
                                ..Described::of(segment)
                            };
                            self.inject(id, described, whole).await;
                        }
                        // A part failed: the segment as the origin serves it.
                        None => match self
                            .source
                            .get_range(playlist_uri, &segment.uri, segment.range, max)
                            .await
                        {
                            Ok(body) => {
                                self.count_origin(&body);
                                self.inject(id, Described::of(segment), body).await;
                            }
                            Err(e) => self.warn(format!("segment {id} not published: {e}")),
                        },
                    }
                    continue;
                }
            };
            match body {
                Some(Ok(body)) => {
                    self.count_origin(&body);
                    self.inject(id, described, body).await
                }
                Some(Err(e)) => self.warn(format!("segment {id} not published: {e}")),
                None => {}
            }
        }
    }

    fn count_origin(&self, body: &Bytes) {
        crate::metrics::bytes(
            crate::metrics::Direction::In,
            crate::metrics::Class::Origin,
            body.len() as u64,
        );
    }

    /// Signs and injects a segment as `described`.
    async fn inject(&self, id: SegmentId, described: Described, body: Bytes) {
        let Described {
            uri,
            range,
            duration,
            discontinuity,
            program_date_time_ms,
            parts,
        } = described;
        let duration_us = u64::try_from(duration.as_micros()).unwrap_or(u64::MAX);
        let mut info = SegmentInfo::for_body(id, &body, duration_us, now_us())
            .with_uri(uri)
            .with_timeline(discontinuity, program_date_time_ms);
        if let Some(range) = range {
            info = info.with_range(range.offset);
        }
        let header = info
            .with_epoch(self.epoch_us)
            .with_parts(parts)
            .sign(&self.key)
            .verify(&self.stream);
        let header = match header {
            Ok(header) => header,
            Err(e) => return self.warn(format!("segment {id} not published: {e}")),
        };
        let bytes = body.len() as u64;
        if let Err(e) = self.node.inject(header, body).await {
            return self.warn(format!("segment {id} not injected: {e}"));
        }
        // A segment made of parts brings no new bytes: they were its parts.
        if parts == 0 {
            self.injected_segments.fetch_add(1, Relaxed);
            self.injected_bytes.fetch_add(bytes, Relaxed);
        }
        let _ = self.events.send(PublishEvent::Injected { id, bytes });
    }
}

/// What a segment's header says besides its bytes.
struct Described {
    /// `range` of the resource at `uri`, or all of it.
    uri: String,
    range: Option<ByteRange>,
    duration: Duration,
    discontinuity: bool,
    program_date_time_ms: Option<u64>,
    /// Over 0 for a media segment that is the concatenation of that many
    /// parts already injected.
    parts: u32,
}

impl Described {
    fn new(uri: String, range: Option<ByteRange>, duration: Duration) -> Self {
        Self {
            uri,
            range,
            duration,
            discontinuity: false,
            program_date_time_ms: None,
            parts: 0,
        }
    }

    fn of(segment: playlist::MediaSegment) -> Self {
        Self {
            discontinuity: segment.discontinuity,
            program_date_time_ms: segment.program_date_time_ms,
            ..Self::new(segment.uri, segment.range, segment.duration)
        }
    }
}

/// The playlist URI with the query of a blocking reload for part `part` of
/// segment `msn` (RFC 8216bis §6.2.5.2).
fn blocking_reload(playlist: &str, msn: u64, part: u32) -> String {
    let separator = if playlist.contains('?') { '&' } else { '?' };
    format!("{playlist}{separator}_HLS_msn={msn}&_HLS_part={part}")
}

/// The bodies of the parts of the segments in progress, to publish each
/// segment as their concatenation once it is whole.
#[derive(Debug, Default)]
struct PartBodies {
    /// By segment sequence: the parts so far, in order.
    segments: std::collections::BTreeMap<u64, Vec<Bytes>>,
}

impl PartBodies {
    /// Segments kept: the one in progress and a few before it.
    const KEPT: usize = 4;

    fn add(&mut self, sequence: u64, index: u32, body: Bytes) {
        let parts = self.segments.entry(sequence).or_default();
        // Parts come in order from the first; anything else breaks the run,
        // and `take` then finds too few.
        if parts.len() == index as usize {
            parts.push(body);
        }
        while self.segments.len() > Self::KEPT {
            self.segments.pop_first();
        }
    }

    /// A part of the segment could not be fetched.
    fn lost(&mut self, sequence: u64) {
        self.segments.remove(&sequence);
    }

    /// The concatenation of the segment's `count` parts, if all are here.
    fn take(&mut self, sequence: u64, count: u32) -> Option<Bytes> {
        let parts = self.segments.remove(&sequence)?;
        (parts.len() == count as usize).then(|| Bytes::from(parts.concat()))
    }
}

/// `resolved` with the fragment of `uri`, if resolving dropped it (a folder
/// path has none): a DASH rendition is its MPD and a fragment.
fn keep_fragment(resolved: String, uri: &str) -> String {
    match uri.split_once('#') {
        Some((_, fragment)) if !resolved.contains('#') => format!("{resolved}#{fragment}"),
        _ => resolved,
    }
}

async fn fetch_playlist(
    source: &Source,
    relative_to: &str,
    uri: &str,
    max: u64,
) -> Result<Playlist, PublishError> {
    // Playlists are small; a multi-megabyte one is a mistake or an attack.
    let max = max.min(4 << 20);
    // A DASH rendition is its MPD with a fragment naming the representation.
    let resource = uri.split('#').next().unwrap_or(uri);
    let bytes = source
        .get(relative_to, resource, max)
        .await
        .map_err(|e| PublishError::Origin(e.to_string()))?;
    let named = || {
        source
            .resolve(relative_to, resource)
            .unwrap_or_else(|_| resource.to_string())
    };
    if dash::is_mpd(&bytes) {
        let parsed = if uri.contains('#') {
            // A representation addressed by SegmentBase: its sidx first.
            let index = match dash::index_needed(&bytes, uri) {
                Ok(Some((file, range))) => Some(
                    source
                        .get_range(&named(), &file, Some(range), dash::MAX_INDEX_BYTES)
                        .await
                        .map_err(|e| PublishError::Origin(format!("the sidx of {uri}: {e}")))?,
                ),
                Ok(None) => None,
                Err(e) => return Err(PublishError::Origin(format!("{}: {e}", named()))),
            };
            dash::media_playlist(&bytes, uri, now_us(), index.as_deref()).map(Playlist::Media)
        } else {
            // Renditions name the MPD relative to itself: its file name.
            let (path, query) = match resource.split_once('?') {
                Some((path, query)) => (path, Some(query)),
                None => (resource, None),
            };
            let mut file = path.rsplit('/').next().unwrap_or(path).to_owned();
            if let Some(query) = query {
                file = format!("{file}?{query}");
            }
            dash::renditions(&bytes, &file).map(Playlist::Master)
        };
        return parsed.map_err(|e| PublishError::Origin(format!("{}: {e}", named())));
    }
    playlist::parse(&bytes).map_err(|e| PublishError::Origin(format!("{}: {e}", named())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(byte: u8) -> Bytes {
        Bytes::from(vec![byte; 3])
    }

    #[test]
    fn a_segment_is_its_parts_only_when_every_part_came_in_order() {
        let mut parts = PartBodies::default();
        parts.add(5, 0, part(1));
        parts.add(5, 1, part(2));
        assert_eq!(parts.take(5, 3), None, "one part short");
        parts.add(6, 0, part(1));
        parts.add(6, 1, part(2));
        assert_eq!(parts.take(6, 2).as_deref(), Some(&[1, 1, 1, 2, 2, 2][..]));
        // A part that failed: the segment is fetched whole instead.
        parts.add(7, 0, part(1));
        parts.lost(7);
        parts.add(7, 1, part(2));
        assert_eq!(parts.take(7, 2), None);
        // Out of order (a part skipped) breaks the run too.
        parts.add(8, 1, part(2));
        assert_eq!(parts.take(8, 1), None);
        // Only a few segments are kept.
        for seq in 10..20 {
            parts.add(seq, 0, part(0));
        }
        assert_eq!(parts.segments.len(), PartBodies::KEPT);
        assert!(parts.take(19, 1).is_some() && parts.take(10, 1).is_none());
    }

    #[test]
    fn a_blocking_reload_adds_its_query() {
        assert_eq!(
            blocking_reload("v.m3u8", 7, 2),
            "v.m3u8?_HLS_msn=7&_HLS_part=2"
        );
        assert_eq!(
            blocking_reload("v.m3u8?token=1", 7, 0),
            "v.m3u8?token=1&_HLS_msn=7&_HLS_part=0"
        );
    }
}
