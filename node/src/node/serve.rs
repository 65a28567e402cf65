//! Serving inbound segment-exchange streams: `Want`, `ListHeaders`, and
//! `PushOffer` (which the mesh core answers, through the driver).
//!
//! Wants and header lists read the shared store and the disk cache directly:
//! the event loop is not involved in serving what is already held.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use libp2p::PeerId;
use meshcast_proto::pb::{self, DeclineReason, mesh_message::Body};
use meshcast_proto::{SegmentId, SegmentKind, SignedHeader, StreamId, VerifiedHeader};
use tokio::sync::{mpsc, oneshot};

use super::handle::lock;
use super::tasks::{Done, PushIn, faulty, read_cached};
use super::uploads::Uploads;
use crate::arrival::{Announcer, Feed};
use crate::cache::Cache;
use crate::config::Faults;
use crate::exchange::{ExchangeError, Framed};
use crate::mesh::scheduler::{self, TransferId};
use crate::mesh::{Broken, MAX_LISTED, store};
use crate::uplink::Uplink;

/// An offer on its way to the mesh core, and where its answer goes.
pub(super) struct OfferRequest {
    pub(super) peer: PeerId,
    pub(super) header: Option<pb::SegmentHeader>,
    pub(super) reply: oneshot::Sender<Offered>,
}

/// The mesh core's answer to an offer.
pub(super) enum Offered {
    /// Receive the body; stop if `cancel` fires.
    Accept {
        transfer: TransferId,
        /// Boxed: far larger than a decline's reason.
        header: Box<VerifiedHeader>,
        cancel: oneshot::Receiver<()>,
        /// Where to say that the body is arriving, to forward it as it
        /// comes (cut-through); `None` when the node does not.
        announcer: Option<Announcer>,
    },
    Decline(DeclineReason),
    Reject(String),
}

/// What a task serving an inbound stream shares with the driver.
#[derive(Clone)]
pub(super) struct Shared {
    pub(super) store: store::Shared,
    pub(super) cache: Option<Arc<Mutex<Cache>>>,
    pub(super) offers: mpsc::Sender<OfferRequest>,
    pub(super) announce_only: bool,
    pub(super) faults: Faults,
    /// Bodies in flight to peers (see [`Uploads`]).
    pub(super) uploads: Uploads,
    /// How long a pull waits for room before it is answered `Absent` (the
    /// puller goes to another holder, or the origin).
    pub(super) serving_wait: Duration,
    /// The upload cap, and the deadline a puller gives a body of a size.
    pub(super) uplink: Uplink,
    pub(super) scheduler: scheduler::Config,
    pub(super) stats: Arc<super::Stats>,
}

/// Serves one inbound stream.
pub(super) async fn serve(framed: Framed, peer: PeerId, shared: Shared) -> Done {
    let mut download = None;
    let result = answer(framed, peer, &shared, &mut download)
        .await
        .map_err(|e| e.broken());
    Done::Inbound {
        peer,
        download,
        result,
    }
}

async fn answer(
    mut framed: Framed,
    peer: PeerId,
    shared: &Shared,
    download: &mut Option<PushIn>,
) -> Result<(), ExchangeError> {
    match framed.read_message().await? {
        Body::Want(want) => {
            let id = SegmentId::from_pb(
                &want
                    .id
                    .ok_or(ExchangeError::Protocol("Want without an id"))?,
            )?;
            let segment = if shared.announce_only {
                None
            } else {
                held_segment(shared, &id).await
            };
            // Held, and room to send it: bodies in flight to pullers are
            // bounded, as pushes are; behind the upload cap, it must also
            // reach the puller before the puller gives up on it.
            let permit = match &segment {
                Some((_, body)) => {
                    let len = body.len() as u64;
                    let deadline = shared.scheduler.transfer_deadline(len);
                    if shared
                        .uplink
                        .fits(shared.uploads.in_flight(), len, deadline)
                    {
                        shared.uploads.room(len, shared.serving_wait).await
                    } else {
                        crate::metrics::pull_declined_at_cap();
                        shared.stats.pulls_declined_at_cap.fetch_add(1, Relaxed);
                        None
                    }
                }
                None => None,
            };
            let held = segment.is_some();
            match segment.zip(permit) {
                Some(((header, body), _permit)) => {
                    let (header, body) = faulty(&shared.faults, header.signed(), &body);
                    framed
                        .send(Body::Deliver(pb::Deliver {
                            header: Some(header.to_pb()),
                        }))
                        .await?;
                    framed.send_body(&body).await?;
                    crate::metrics::bytes(
                        crate::metrics::Direction::Out,
                        crate::metrics::Class::Mesh,
                        body.len() as u64,
                    );
                    shared
                        .stats
                        .mesh_bytes_out
                        .fetch_add(body.len() as u64, Relaxed);
                    // The room is taken until the puller has it all.
                    return framed.finish_read(body.len() as u64).await;
                }
                None => {
                    framed
                        .send(Body::Absent(pb::Absent {
                            id: Some(id.to_pb()),
                            busy: held,
                        }))
                        .await?
                }
            }
            framed.finish().await
        }
        Body::ListHeaders(list) => {
            let stream = StreamId::from_bytes(&list.stream_id)?;
            let headers = if list.in_order {
                let after = list.after.as_ref().map(SegmentId::from_pb).transpose()?;
                if after.is_some_and(|a| a.stream != stream) {
                    return Err(ExchangeError::Protocol("ListHeaders after another stream"));
                }
                index_page(shared, &stream, after.as_ref())
            } else {
                newest(shared.store.lock().headers(&stream))
            };
            framed
                .send(Body::Announce(pb::Announce { headers }))
                .await?;
            framed.finish().await
        }
        Body::PushOffer(offer) => {
            let (reply, answer) = oneshot::channel();
            shared
                .offers
                .send(OfferRequest {
                    peer,
                    header: offer.header,
                    reply,
                })
                .await
                .map_err(|_| ExchangeError::Closed)?;
            match answer.await.map_err(|_| ExchangeError::Closed)? {
                Offered::Accept {
                    transfer,
                    header,
                    cancel,
                    announcer,
                } => {
                    framed.send(Body::PushAccept(pb::PushAccept {})).await?;
                    let header = *header;
                    let feed = announcer.map(|a| Feed::new(header.clone(), a));
                    let result = tokio::select! {
                        body = framed.read_body_feeding(&header, feed) => body.map_err(|e| e.broken()),
                        _ = cancel => Err(Broken::Failed("cancelled".into())),
                    };
                    *download = Some((transfer, result.map(|body| (header, body))));
                    Ok(())
                }
                Offered::Decline(reason) => {
                    framed
                        .send(Body::PushDecline(pb::PushDecline {
                            reason: reason as i32,
                        }))
                        .await?;
                    framed.finish().await
                }
                // The mesh core has banned the peer already.
                Offered::Reject(reason) => {
                    tracing::debug!("offer rejected: {reason}");
                    Ok(())
                }
            }
        }
        _ => Err(ExchangeError::Protocol("unexpected first message")),
    }
}

/// A held segment: from memory, else read back from the disk cache.
async fn held_segment(shared: &Shared, id: &SegmentId) -> Option<(VerifiedHeader, Bytes)> {
    if let Some(segment) = shared.store.lock().get(id) {
        return Some((segment.header, segment.body));
    }
    let cache = shared.cache.clone()?;
    if !lock(&cache).contains(id) {
        return None;
    }
    let id = *id;
    tokio::task::spawn_blocking(move || read_cached(&cache, &id))
        .await
        .ok()
        .flatten()
}

/// One page of the headers held of `stream` in id order after `after`:
/// memory and disk cache merged.
fn index_page(
    shared: &Shared,
    stream: &StreamId,
    after: Option<&SegmentId>,
) -> Vec<pb::SegmentHeader> {
    let mut page: BTreeMap<SegmentId, SignedHeader> = shared
        .store
        .lock()
        .headers_after(stream, after, MAX_LISTED)
        .into_iter()
        .map(|h| (h.info.id, h))
        .collect();
    if let Some(cache) = &shared.cache {
        for header in lock(cache).headers_after(stream, after, MAX_LISTED) {
            page.entry(header.info.id).or_insert(header);
        }
    }
    page.into_values()
        .take(MAX_LISTED)
        .map(|h| h.to_pb())
        .collect()
}

/// The newest [`MAX_LISTED`] headers by publish time, oldest first: what a
/// late joiner of a live stream needs. (Id order would favour a rendition
/// or a numbering that sorts last, not the newest segments.) Init segments
/// come first whatever their age: every player needs them.
fn newest(mut headers: Vec<SignedHeader>) -> Vec<pb::SegmentHeader> {
    headers.sort_by_key(|h| {
        let media = h.info.id.kind != SegmentKind::Init;
        (media, h.info.published_at_us, h.info.id)
    });
    let inits = headers
        .iter()
        .take_while(|h| h.info.id.kind == SegmentKind::Init)
        .count()
        .min(MAX_LISTED);
    let rest = headers.split_off(inits);
    let skip = rest.len().saturating_sub(MAX_LISTED - inits);
    headers.extend(rest.into_iter().skip(skip));
    headers.truncate(MAX_LISTED);
    headers.iter().map(|h| h.to_pb()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshcast_proto::{PublisherKey, SegmentInfo, StreamKey};

    #[test]
    fn header_lists_carry_the_newest_by_publish_time() {
        let key = PublisherKey::from_seed([5; 32]);
        let stream = StreamKey::new(key.public(), "list");
        // Rendition 1 is newer than rendition 0 at every sequence number
        // until 150, then rendition 0 goes on alone to 400: the newest 200
        // are rendition 0's last 200, whatever the id order says.
        let mut headers = Vec::new();
        for (rendition, last) in [(0u32, 400u64), (1, 150)] {
            for seq in 0..last {
                let published = seq * 2_000_000 + u64::from(rendition);
                let id = SegmentId::media(stream.id, rendition, seq);
                headers.push(SegmentInfo::for_body(id, b"x", 2_000_000, published).sign(&key));
            }
        }
        // And each rendition's init, published first: listed all the same.
        for rendition in [0, 1] {
            let id = SegmentId::init(stream.id, rendition, 0);
            headers.push(SegmentInfo::for_body(id, b"i", 0, 0).sign(&key));
        }
        let listed = newest(headers);
        assert_eq!(listed.len(), MAX_LISTED);
        let (inits, media) = listed.split_at(2);
        assert!(
            inits
                .iter()
                .all(|h| h.kind == SegmentKind::Init as i32 && h.sequence == 0)
        );
        assert!(media.iter().all(|h| h.rendition == 0 && h.sequence >= 202));
    }
}
