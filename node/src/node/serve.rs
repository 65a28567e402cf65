//! Stream-level helpers: open, serve an inbound stream, fetch from the origin.

use super::*;

/// Opens a segment-exchange stream, dialling the peer if needed.
pub(super) async fn open(
    control: &mut libp2p_stream::Control,
    peer: PeerId,
    limits: Limits,
    timeout: Duration,
) -> Result<Framed, ExchangeError> {
    let stream = tokio::time::timeout(timeout, control.open_stream(peer, exchange::PROTOCOL))
        .await
        .map_err(|_| ExchangeError::Timeout(timeout))?
        .map_err(|e| ExchangeError::Open(e.to_string()))?;
    Ok(Framed::new(stream, limits, timeout))
}

/// Why an origin fetch brought no segment.
pub(super) enum OriginError {
    /// The request failed.
    Fetch(String),
    /// The origin's bytes are not the ones the publisher signed.
    Verify(String),
}

pub(super) async fn fetch_origin(
    http: &reqwest::Client,
    url: &url::Url,
    header: &VerifiedHeader,
) -> Result<Bytes, OriginError> {
    let body = fetch_url(http, url, header.info().length)
        .await
        .map_err(|e: FetchError| OriginError::Fetch(e.to_string()))?;
    header
        .verify_body(&body, header.info().length)
        .map_err(|e| OriginError::Verify(format!("{url}: {e}")))?;
    Ok(body)
}

/// What a task serving an inbound stream shares with the driver.
pub(super) struct Shared {
    pub(super) store: Arc<Mutex<Store>>,
    pub(super) cache: Option<Arc<Mutex<Cache>>>,
    pub(super) internal: mpsc::Sender<Internal>,
    pub(super) stats: Arc<Stats>,
    pub(super) announce_only: bool,
    pub(super) faults: Faults,
}

/// A held segment: from memory, else read back from the disk cache (and
/// hashed again: a damaged file is deleted, never served).
async fn held_segment(shared: &Shared, id: &SegmentId) -> Option<Segment> {
    if let Some(segment) = lock(&shared.store).get(id) {
        return Some(segment);
    }
    let cache = shared.cache.clone()?;
    let (header, path) = lock(&cache).request(id)?;
    let read = {
        let header = header.clone();
        tokio::task::spawn_blocking(move || crate::cache::read_body(&path, &header))
    };
    match read.await.ok().flatten() {
        Some(body) => Some(Segment { header, body }),
        None => {
            lock(&cache).delete(id);
            None
        }
    }
}

/// One page of the headers held of `stream` in id order after `after`:
/// memory and disk cache merged.
fn index_page(
    shared: &Shared,
    stream: &StreamId,
    after: Option<&SegmentId>,
) -> Vec<pb::SegmentHeader> {
    let mut page: std::collections::BTreeMap<SegmentId, SignedHeader> = lock(&shared.store)
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

/// Serves one inbound stream. Returns the accepted push's transfer and result.
pub(super) async fn serve(
    mut framed: Framed,
    peer: PeerId,
    shared: Shared,
) -> Result<Option<(TransferId, Result<(VerifiedHeader, Bytes), ExchangeError>)>, ExchangeError> {
    let Shared {
        store,
        internal,
        stats,
        announce_only,
        faults,
        ..
    } = &shared;
    let (announce_only, faults) = (*announce_only, *faults);
    match framed.read_message().await? {
        Body::Want(want) => {
            let id = SegmentId::from_pb(
                &want
                    .id
                    .ok_or(ExchangeError::Protocol("Want without an id"))?,
            )?;
            let segment = if announce_only {
                None
            } else {
                held_segment(&shared, &id).await
            };
            match segment {
                Some(segment) => {
                    let header = Some(faults.header(segment.header.signed()).to_pb());
                    framed.send(Body::Deliver(pb::Deliver { header })).await?;
                    framed.send_body(&faults.body(&segment.body)).await?;
                    let bytes = segment.body.len() as u64;
                    stats.bytes_out.fetch_add(bytes, Relaxed);
                    crate::metrics::bytes(
                        crate::metrics::Direction::Out,
                        crate::metrics::Class::Mesh,
                        bytes,
                    );
                }
                None => {
                    framed
                        .send(Body::Absent(pb::Absent {
                            id: Some(id.to_pb()),
                        }))
                        .await?
                }
            }
            framed.finish().await?;
            Ok(None)
        }
        Body::ListHeaders(list) => {
            let stream = StreamId::from_bytes(&list.stream_id)?;
            let headers = if list.in_order {
                let after = list.after.as_ref().map(SegmentId::from_pb).transpose()?;
                if after.is_some_and(|a| a.stream != stream) {
                    return Err(ExchangeError::Protocol("ListHeaders after another stream"));
                }
                index_page(&shared, &stream, after.as_ref())
            } else {
                let mut headers = lock(store).headers(&stream);
                // The newest are the most useful to a late joiner.
                let skip = headers.len().saturating_sub(MAX_LISTED);
                headers.drain(skip..).map(|h| h.to_pb()).collect()
            };
            framed
                .send(Body::Announce(pb::Announce { headers }))
                .await?;
            framed.finish().await?;
            Ok(None)
        }
        Body::PushOffer(offer) => {
            let (reply, answer) = oneshot::channel();
            internal
                .send(Internal::Offer {
                    peer,
                    header: offer.header,
                    reply,
                })
                .await
                .map_err(|_| ExchangeError::Closed)?;
            match answer.await.map_err(|_| ExchangeError::Closed)? {
                OfferReply::Accept(transfer, header) => {
                    framed.send(Body::PushAccept(pb::PushAccept {})).await?;
                    let result = framed.read_body(&header).await.map(|body| (header, body));
                    Ok(Some((transfer, result)))
                }
                OfferReply::Decline(reason) => {
                    framed
                        .send(Body::PushDecline(pb::PushDecline {
                            reason: reason as i32,
                        }))
                        .await?;
                    framed.finish().await?;
                    Ok(None)
                }
                OfferReply::Reject(e) => Err(e),
            }
        }
        _ => Err(ExchangeError::Protocol("unexpected first message")),
    }
}

pub(super) fn descriptor_from_record(
    record: &kad::Record,
    id: &StreamId,
) -> Option<VerifiedDescriptor> {
    let msg = pb::StreamDescriptor::decode(record.value.as_slice()).ok()?;
    SignedDescriptor::from_pb(&msg).ok()?.verify_for(id).ok()
}
