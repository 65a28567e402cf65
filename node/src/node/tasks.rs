//! The tasks that perform the mesh core's outputs: transfers, header lists,
//! inbound streams and the disk cache (on blocking threads, never on the
//! event loop). Each ends in one [`Done`] for the driver to report.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use libp2p::PeerId;
use meshcast_proto::frame::Limits;
use meshcast_proto::pb;
use meshcast_proto::{
    SegmentId, SignedHeader, StreamId, StreamKey, VerifiedDescriptor, VerifiedHeader,
};
use tokio::sync::oneshot;
use tokio::task::JoinSet;
use tracing::Instrument as _;

use super::handle::lock;
use super::uploads::Uploads;
use crate::arrival::Announcer;
use crate::cache::{self, Cache};
use crate::config::Faults;
use crate::exchange::{self, ExchangeError, Framed, Offered, Outgoing, Pace};
use crate::ingest::playlist::ByteRange;
use crate::ingest::source::fetch_url_range;
use crate::mesh::scheduler::TransferId;
use crate::mesh::{Broken, Failure, Pushed};
use crate::uplink::Uplink;

/// An accepted push, received by the task serving its stream.
pub(super) type PushIn = (TransferId, Result<(VerifiedHeader, Bytes), Broken>);

/// How a task ended.
pub(super) enum Done {
    Download {
        transfer: TransferId,
        result: Result<Option<(VerifiedHeader, Bytes)>, Broken>,
    },
    /// A push offer was answered (or failed); an accepted one goes on with
    /// [`Tasks::send_pushed`].
    Offered {
        transfer: TransferId,
        peer: PeerId,
        body: Outgoing,
        span: tracing::Span,
        result: Result<Offered, Broken>,
    },
    Upload {
        transfer: TransferId,
        peer: PeerId,
        bytes: u64,
        /// Its body was forwarded as it arrived (cut-through).
        forwarded: bool,
        result: Result<Pushed, Broken>,
    },
    Headers {
        peer: PeerId,
        stream: StreamId,
        page: u32,
        result: Result<Vec<pb::SegmentHeader>, Broken>,
    },
    /// An inbound stream was served; an accepted push reports its download.
    Inbound {
        peer: PeerId,
        download: Option<PushIn>,
        result: Result<(), Broken>,
    },
    CacheLoaded {
        stream: StreamId,
        loaded: Vec<(VerifiedHeader, Bytes)>,
        on_disk: Vec<(SegmentId, u64)>,
    },
    CacheWritten {
        id: SegmentId,
        written: bool,
        deleted: Vec<SegmentId>,
        used: u64,
    },
    CacheRead {
        id: SegmentId,
        read: Option<(VerifiedHeader, Bytes)>,
    },
}

/// Tasks in flight, and the way to cancel each transfer among them.
pub(super) struct Tasks {
    set: JoinSet<Done>,
    cancels: HashMap<TransferId, oneshot::Sender<()>>,
    limits: Limits,
    pace: Pace,
    uploads: Uploads,
    /// Test-only: an upload throttle and corrupt bodies.
    faults: Faults,
    uplink: Uplink,
}

impl Tasks {
    pub(super) fn new(
        limits: Limits,
        pace: Pace,
        uploads: Uploads,
        faults: Faults,
        uplink: Uplink,
    ) -> Self {
        Self {
            set: JoinSet::new(),
            cancels: HashMap::new(),
            limits,
            pace,
            uploads,
            faults,
            uplink,
        }
    }

    /// The next task to end; pending forever while there is none.
    pub(super) async fn next(&mut self) -> Done {
        loop {
            match self.set.join_next().await {
                Some(Ok(done)) => {
                    if let Done::Download { transfer, .. }
                    | Done::Offered { transfer, .. }
                    | Done::Upload { transfer, .. }
                    | Done::Inbound {
                        download: Some((transfer, _)),
                        ..
                    } = &done
                    {
                        self.cancels.remove(transfer);
                    }
                    return done;
                }
                // A task panicked: nothing to report (its transfer, if any,
                // times out in the mesh core).
                Some(Err(_)) => continue,
                None => std::future::pending().await,
            }
        }
    }

    pub(super) fn abort_all(&mut self) {
        self.set.abort_all();
    }

    /// Cancels a transfer: its task ends at once, reporting it failed.
    pub(super) fn cancel(&mut self, transfer: TransferId) {
        if let Some(cancel) = self.cancels.remove(&transfer) {
            let _ = cancel.send(());
        }
    }

    /// A receiver that fires when `transfer` is cancelled (for an accepted
    /// push, which runs in the task serving its inbound stream).
    pub(super) fn cancellation(&mut self, transfer: TransferId) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        self.cancels.insert(transfer, tx);
        rx
    }

    pub(super) fn spawn(&mut self, task: impl Future<Output = Done> + Send + 'static) {
        self.set.spawn(task);
    }

    /// Runs `work` until it ends or the transfer is cancelled.
    fn spawn_transfer(
        &mut self,
        transfer: TransferId,
        span: tracing::Span,
        work: impl Future<Output = Done> + Send + 'static,
        cancelled: Done,
    ) {
        let cancel = self.cancellation(transfer);
        self.set.spawn(
            async move {
                tokio::select! {
                    done = work => done,
                    _ = cancel => cancelled,
                }
            }
            .instrument(span),
        );
    }

    /// Offers a segment; the answer comes back as [`Done::Offered`]. No
    /// room in the upload budget is taken yet: an offer to a peer that has
    /// gone silent (its box died, its connection not timed out yet) would
    /// hold it, and with it every push to live peers.
    pub(super) fn push(
        &mut self,
        control: libp2p_stream::Control,
        transfer: TransferId,
        peer: PeerId,
        (header, body): (SignedHeader, Outgoing),
        span: tracing::Span,
    ) {
        let (limits, pace) = (self.limits, self.pace);
        let (rate, corrupt) = (self.faults.upload_rate, self.faults.corrupt_bodies);
        let uplink = self.uplink.clone();
        let task_span = span.clone();
        let (offered_body, cancelled_body) = (body.clone(), body);
        let work = async move {
            let mut control = control;
            let result = async {
                let framed = open(&mut control, peer, limits, pace).await?;
                let framed = framed
                    .with_throttle(rate)
                    .with_corruption(corrupt)
                    .with_uplink(uplink);
                exchange::offer(framed, &header).await
            }
            .await;
            Done::Offered {
                transfer,
                peer,
                body: offered_body,
                span,
                result: result.map_err(|e| e.broken()),
            }
        };
        let cancelled = Done::Offered {
            transfer,
            peer,
            body: cancelled_body,
            span: tracing::Span::none(),
            result: Err(cancelled()),
        };
        self.spawn_transfer(transfer, task_span, work, cancelled);
    }

    /// Sends the body of an accepted offer, once the upload budget has room
    /// for it.
    pub(super) fn send_pushed(
        &mut self,
        transfer: TransferId,
        peer: PeerId,
        framed: Framed,
        body: Outgoing,
        span: tracing::Span,
    ) {
        let uploads = self.uploads.clone();
        let bytes = body.len();
        let forwarded = matches!(body, Outgoing::Arriving(_));
        let work = async move {
            let result = async {
                // Waits as long as the scheduler lets the push run.
                let _room = uploads
                    .room(bytes, Duration::MAX)
                    .await
                    .ok_or(ExchangeError::Closed)?;
                exchange::send_pushed(framed, &body).await
            }
            .await;
            Done::Upload {
                transfer,
                peer,
                bytes,
                forwarded,
                result: result.map_err(|e| e.broken()),
            }
        };
        let cancelled = Done::Upload {
            transfer,
            peer,
            bytes,
            forwarded,
            result: Err(cancelled()),
        };
        self.spawn_transfer(transfer, span, work, cancelled);
    }

    pub(super) fn pull(
        &mut self,
        control: libp2p_stream::Control,
        transfer: TransferId,
        peer: PeerId,
        (id, key): (SegmentId, StreamKey),
        announcer: Option<Announcer>,
        span: tracing::Span,
    ) {
        let (limits, pace) = (self.limits, self.pace);
        let work = async move {
            let mut control = control;
            let result = async {
                let framed = open(&mut control, peer, limits, pace).await?;
                exchange::pull(framed, id, &key, announcer).await
            }
            .await;
            Done::Download {
                transfer,
                result: result.map_err(|e| e.broken()),
            }
        };
        let cancelled = Done::Download {
            transfer,
            result: Err(cancelled()),
        };
        self.spawn_transfer(transfer, span, work, cancelled);
    }

    pub(super) fn fetch_origin(
        &mut self,
        http: reqwest::Client,
        transfer: TransferId,
        (url, allow_private): (String, bool),
        header: VerifiedHeader,
    ) {
        let work = async move {
            Done::Download {
                transfer,
                result: fetch_origin(&http, &url, allow_private, header)
                    .await
                    .map(Some),
            }
        };
        let cancelled = Done::Download {
            transfer,
            result: Err(cancelled()),
        };
        self.spawn_transfer(transfer, tracing::Span::current(), work, cancelled);
    }

    pub(super) fn list_headers(
        &mut self,
        control: libp2p_stream::Control,
        peer: PeerId,
        (stream, page, after): (StreamId, u32, Option<SegmentId>),
        span: tracing::Span,
    ) {
        let (limits, pace) = (self.limits, self.pace);
        let task = async move {
            let mut control = control;
            let result = async {
                let framed = open(&mut control, peer, limits, pace).await?;
                exchange::list_headers(framed, stream, page > 0, after).await
            }
            .await;
            Done::Headers {
                peer,
                stream,
                page,
                result: result.map_err(|e| e.broken()),
            }
        };
        self.set.spawn(task.instrument(span));
    }

    /// Loads what the disk cache holds of a stream just followed (headers
    /// checked against its key, up to `memory` bytes of bodies).
    pub(super) fn load_cache(
        &mut self,
        cache: Arc<Mutex<Cache>>,
        descriptor: &VerifiedDescriptor,
        max_segment: u64,
        memory: u64,
    ) {
        let key = descriptor.stream_key();
        self.set.spawn(async move {
            let load = tokio::task::spawn_blocking(move || {
                let mut cache = lock(&cache);
                let loaded = cache.load(&key, max_segment, memory);
                (loaded, cache.held(&key.id))
            });
            let (loaded, on_disk) = load.await.unwrap_or_default();
            Done::CacheLoaded {
                stream: key.id,
                loaded,
                on_disk,
            }
        });
    }

    pub(super) fn write_cache(
        &mut self,
        cache: Arc<Mutex<Cache>>,
        header: VerifiedHeader,
        body: Bytes,
    ) {
        let id = header.id();
        self.set.spawn(async move {
            let write = tokio::task::spawn_blocking(move || {
                let mut cache = lock(&cache);
                let deleted = cache.write(&header, &body);
                (cache.contains(&id), deleted, cache.used_bytes())
            });
            let (written, deleted, used) = write.await.unwrap_or_default();
            Done::CacheWritten {
                id,
                written,
                deleted,
                used,
            }
        });
    }

    pub(super) fn read_cache(&mut self, cache: Arc<Mutex<Cache>>, id: SegmentId) {
        self.set.spawn(async move {
            let read = tokio::task::spawn_blocking(move || read_cached(&cache, &id));
            Done::CacheRead {
                id,
                read: read.await.ok().flatten(),
            }
        });
    }
}

fn cancelled() -> Broken {
    Broken::Failed("cancelled".into())
}

/// Reads a segment back from the disk cache, hashing it again: a damaged or
/// missing file is deleted from the index, never served. Blocking.
pub(super) fn read_cached(cache: &Mutex<Cache>, id: &SegmentId) -> Option<(VerifiedHeader, Bytes)> {
    let (header, path) = lock(cache).request(id)?;
    match cache::read_body(&path, &header) {
        Some(body) => Some((header, body)),
        None => {
            lock(cache).delete(id);
            None
        }
    }
}

/// Opens a segment-exchange stream, dialling the peer if needed.
pub(super) async fn open(
    control: &mut libp2p_stream::Control,
    peer: PeerId,
    limits: Limits,
    pace: Pace,
) -> Result<Framed, ExchangeError> {
    let timeout = pace.frame;
    let stream = tokio::time::timeout(timeout, control.open_stream(peer, exchange::PROTOCOL))
        .await
        .map_err(|_| ExchangeError::Timeout(timeout))?
        .map_err(|e| ExchangeError::Open(e.to_string()))?;
    Ok(Framed::new(stream, limits, timeout).with_pace(pace))
}

/// Fetches a segment from the origin: bytes other than the ones the
/// publisher signed are a verification failure (of the origin, or of
/// whatever sits between).
async fn fetch_origin(
    http: &reqwest::Client,
    url: &str,
    allow_private: bool,
    header: VerifiedHeader,
) -> Result<(VerifiedHeader, Bytes), Broken> {
    let parsed = url::Url::parse(url).map_err(|e| Broken::Failed(format!("{url}: {e}")))?;
    // The resolver guards names; an IP literal is never resolved.
    crate::origin::check(&parsed, allow_private).map_err(Broken::Failed)?;
    // A byte-range segment is that range of the resource (signed).
    let range = header.info().range_start.map(|offset| ByteRange {
        offset,
        length: header.info().length,
    });
    let body = fetch_url_range(http, &parsed, range, header.info().length)
        .await
        .map_err(|e| Broken::Failed(e.to_string()))?;
    header
        .verify_body(&body, header.info().length)
        .map_err(|e| Broken::Misbehaved {
            reason: format!("{url}: {e}"),
            failure: Some(Failure::Body),
        })?;
    Ok((header, body))
}

/// Applies the test-only header faults to a segment about to be sent (a
/// body is corrupted as it is encoded: [`Framed::with_corruption`]).
pub(super) fn faulty(
    faults: &Faults,
    header: &SignedHeader,
    body: &Bytes,
) -> (SignedHeader, Bytes) {
    (faults.header(header), body.clone())
}
