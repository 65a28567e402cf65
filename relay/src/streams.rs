//! Which streams the gateway serves, and when it follows and unfollows them.
//!
//! A Hello names a stream. The gateway serves it if its node already follows
//! it (the operator's choice), or if [`Serve`](crate::config::Serve) lists it
//! or its publisher; anything else is refused before any DHT lookup. A listed
//! stream not followed yet is looked up once however many Hellos ask for it at
//! the same moment (single flight), its token checked, and only then followed.
//! Streams followed for viewers are unfollowed after
//! [`Limits::unfollow_after`](crate::Limits::unfollow_after) without one, so a
//! stream nobody watches costs nothing for good.

use std::sync::Arc;
use std::time::Duration;

use meshcast_node::Seed;
use meshcast_proto::pb::ErrorCode;
use meshcast_proto::{StreamId, VerifiedDescriptor, token};
use tokio::time::Instant;

use crate::shared::{Refusal, Served, Shared, lock};
use meshcast_node::unix_now_us as now_us;

/// How long the first Hello for a live stream waits for the node to hold
/// some of it, so that Welcome can name the live edge.
const FIRST_HEADERS_WAIT: Duration = Duration::from_secs(3);

/// A viewer of a served stream, counted until dropped.
pub(crate) struct Viewer {
    shared: Arc<Shared>,
    stream: StreamId,
}

impl Drop for Viewer {
    fn drop(&mut self) {
        let mut streams = lock(&self.shared.streams);
        if let Some(served) = streams.served.get_mut(&self.stream) {
            served.viewers = served.viewers.saturating_sub(1);
            if served.viewers == 0 {
                served.idle_since = Instant::now();
            }
        }
    }
}

/// Opens `stream` for a viewer that presents `token`: the descriptor to
/// welcome it with, once the stream is allowed, the token valid and the
/// stream followed.
pub(crate) async fn open(
    shared: &Arc<Shared>,
    stream: StreamId,
    token: &str,
) -> Result<(VerifiedDescriptor, Viewer), Refusal> {
    let (descriptor, following) = resolve(shared, stream).await?;
    if descriptor.descriptor().private {
        token::verify(token, &descriptor.stream_key(), now_us())
            .map_err(|e| Refusal::new(e.code(), e.to_string()))?;
    }
    if !following {
        let cell = lock(&shared.streams)
            .served
            .get(&stream)
            .map(|s| s.follow.clone())
            .unwrap_or_default();
        cell.get_or_try_init(|| follow(shared, &descriptor)).await?;
    }
    let mut streams = lock(&shared.streams);
    let served = streams.served.entry(stream).or_insert_with(|| Served {
        descriptor: descriptor.clone(),
        followed_for_viewers: !following,
        following: true,
        viewers: 0,
        idle_since: Instant::now(),
        follow: Default::default(),
    });
    served.viewers += 1;
    drop(streams);
    Ok((
        descriptor,
        Viewer {
            shared: shared.clone(),
            stream,
        },
    ))
}

/// Makes the node follow `descriptor`'s stream for viewers, once for every
/// Hello waiting on the stream's follow cell.
async fn follow(shared: &Shared, descriptor: &VerifiedDescriptor) -> Result<(), Refusal> {
    // A VOD is fetched segment by segment as viewers ask (and kept for the
    // next one), never downloaded whole because one viewer came by.
    shared
        .node
        .follow_with(descriptor.clone(), Seed::ON_DEMAND)
        .await
        .map_err(|_| Refusal::new(ErrorCode::Internal, "the node has stopped"))?;
    let stream = descriptor.stream_key().id;
    {
        let mut streams = lock(&shared.streams);
        streams.follows += 1;
        if let Some(served) = streams.served.get_mut(&stream) {
            served.following = true;
            served.followed_for_viewers = true;
        }
    }
    // A live stream followed just now has nothing held yet: give the node a
    // moment to learn the live window from its neighbours. Init segments
    // often come first and name no live edge, so wait for a media header.
    let deadline = Instant::now() + FIRST_HEADERS_WAIT;
    let holds_media = || {
        shared
            .node
            .headers(&stream)
            .iter()
            .any(|h| h.info.id.kind == meshcast_proto::SegmentKind::Media)
    };
    while descriptor.descriptor().live && !holds_media() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// The stream's newest descriptor and whether the node follows it already.
async fn resolve(
    shared: &Arc<Shared>,
    id: StreamId,
) -> Result<(VerifiedDescriptor, bool), Refusal> {
    let known = lock(&shared.streams)
        .served
        .get(&id)
        .map(|s| (s.descriptor.clone(), s.following));
    if let Some((known, following)) = known {
        // The node keeps the newest descriptor it has seen (a live stream
        // that ended is put again as a VOD): serve that one.
        let newest = shared.node.known_descriptor(id).await.ok().flatten();
        let issued = |d: &VerifiedDescriptor| d.descriptor().issued_at_us;
        return Ok(match newest {
            Some(newest) if issued(&newest) > issued(&known) && newest.stream_key().id == id => {
                if let Some(s) = lock(&shared.streams).served.get_mut(&id) {
                    s.descriptor = newest.clone();
                }
                (newest, following)
            }
            _ => (known, following),
        });
    }
    if let Ok(Some(followed)) = shared.node.followed(id).await {
        insert(shared, &followed, true)?;
        return Ok((followed, true));
    }
    let serve = &shared.config.serve;
    if !serve.may_look_up(&id) {
        return Err(unknown(id));
    }
    let cell = {
        let mut streams = lock(&shared.streams);
        let lookups = streams.lookups.len();
        match streams.lookups.get(&id) {
            Some(cell) => cell.clone(),
            None if lookups >= shared.config.limits.max_lookups => {
                return Err(Refusal::new(
                    ErrorCode::TooManyRequests,
                    "the gateway is busy looking streams up; try again shortly",
                ));
            }
            None => streams.lookups.entry(id).or_default().clone(),
        }
    };
    let found = cell.get_or_init(|| look_up(shared, id)).await.clone();
    {
        let mut streams = lock(&shared.streams);
        if streams
            .lookups
            .get(&id)
            .is_some_and(|c| Arc::ptr_eq(c, &cell))
        {
            streams.lookups.remove(&id);
        }
    }
    let found = found.map_err(|(code, message)| Refusal::new(code, message))?;
    insert(shared, &found, false)?;
    Ok((found, false))
}

/// One DHT lookup, shared by every Hello waiting in the same [`Lookup`].
async fn look_up(shared: &Shared, id: StreamId) -> Result<VerifiedDescriptor, (ErrorCode, String)> {
    let found = shared
        .node
        .find_stream(id, shared.config.find_timeout)
        .await
        .map_err(|_| {
            (
                ErrorCode::UnknownStream,
                format!("stream {id} is not known to the mesh"),
            )
        })?;
    if shared.config.serve.allows(&found.stream_key()) {
        Ok(found)
    } else {
        let Refusal(code, message) = unknown(id);
        Err((code, message))
    }
}

fn unknown(id: StreamId) -> Refusal {
    Refusal::new(
        ErrorCode::UnknownStream,
        format!("this gateway does not serve stream {id}"),
    )
}

/// Remembers a stream about to be served, within `max_streams`.
fn insert(
    shared: &Shared,
    descriptor: &VerifiedDescriptor,
    following: bool,
) -> Result<(), Refusal> {
    let mut streams = lock(&shared.streams);
    let id = descriptor.stream_key().id;
    if !streams.served.contains_key(&id) && streams.served.len() >= shared.config.limits.max_streams
    {
        return Err(Refusal::new(
            ErrorCode::TooManySessions,
            "the gateway serves as many streams as it may",
        ));
    }
    streams.served.entry(id).or_insert_with(|| Served {
        descriptor: descriptor.clone(),
        followed_for_viewers: false,
        following,
        viewers: 0,
        idle_since: Instant::now(),
        follow: Default::default(),
    });
    Ok(())
}

/// Forgets streams without a viewer for `unfollow_after`, and unfollows those
/// the gateway followed for viewers. The driver calls it now and then.
pub(crate) async fn prune(shared: &Shared) {
    let after = shared.config.limits.unfollow_after;
    let now = Instant::now();
    let unfollow: Vec<StreamId> = {
        let mut streams = lock(&shared.streams);
        let idle: Vec<StreamId> = streams
            .served
            .iter()
            .filter(|(_, s)| s.viewers == 0 && now.duration_since(s.idle_since) >= after)
            .map(|(id, _)| *id)
            .collect();
        idle.into_iter()
            .filter_map(|id| streams.served.remove(&id))
            .filter(|s| s.followed_for_viewers)
            .map(|s| s.descriptor.stream_key().id)
            .collect()
    };
    for stream in unfollow {
        tracing::info!(%stream, "no viewer for {after:?}: unfollowing");
        let _ = shared.node.unfollow(stream).await;
    }
}

/// Follows made for viewers since the gateway started, for tests.
pub(crate) fn follows(shared: &Shared) -> u64 {
    lock(&shared.streams).follows
}

/// Streams served now, for tests and metrics.
pub(crate) fn count(shared: &Shared) -> usize {
    lock(&shared.streams).served.len()
}
