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

/// Serves one inbound stream. Returns the accepted push's transfer and result.
pub(super) async fn serve(
    mut framed: Framed,
    peer: PeerId,
    store: Arc<Mutex<Store>>,
    internal: mpsc::Sender<Internal>,
    stats: Arc<Stats>,
    announce_only: bool,
    faults: Faults,
) -> Result<Option<(TransferId, Result<(VerifiedHeader, Bytes), ExchangeError>)>, ExchangeError> {
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
                lock(&store).get(&id)
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
            let mut headers = lock(&store).headers(&stream);
            // The newest are the most useful to a late joiner.
            let skip = headers.len().saturating_sub(MAX_LISTED);
            let headers = headers.drain(skip..).map(|h| h.to_pb()).collect();
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
