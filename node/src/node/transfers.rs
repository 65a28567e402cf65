//! Transfers: inbound streams, offers, the scheduler's actions and their results.

use tracing::Instrument as _;

use super::*;
use crate::metrics::{self, Class, Direction, Failure, Late, Received};

impl Driver {
    pub(super) fn on_inbound(&mut self, peer: PeerId, stream: libp2p::Stream) {
        if self.inbound >= MAX_INBOUND || self.banned.contains_key(&peer) {
            return; // dropping the stream resets it
        }
        self.inbound += 1;
        let framed = Framed::new(stream, self.config.limits, self.config.read_timeout);
        let store = self.store.clone();
        let cache = self.cache.clone();
        let internal = self.internal_tx.clone();
        let stats = self.stats.clone();
        let announce_only = self.config.announce_only;
        let faults = self.config.faults;
        let span = self.peer_span(peer);
        self.tasks.spawn(
            async move {
                let started = Instant::now();
                let shared = Shared {
                    store,
                    cache,
                    internal,
                    stats,
                    announce_only,
                    faults,
                };
                match serve(framed, peer, shared).await {
                    Ok(Some((transfer, result))) => TaskDone::Download {
                        transfer,
                        via: Via::PushIn(peer),
                        started,
                        result: result.map(Some),
                    },
                    Ok(None) => TaskDone::Served {
                        peer,
                        result: Ok(()),
                    },
                    Err(e) => TaskDone::Served {
                        peer,
                        result: Err(e),
                    },
                }
            }
            .instrument(span),
        );
    }

    pub(super) fn on_internal(&mut self, internal: Internal) {
        let Internal::Offer {
            peer,
            header,
            reply,
        } = internal;
        let decision = match self.decide_offer(peer, header) {
            Ok(decision) => decision,
            Err(e) => {
                self.stats.verification_failures.fetch_add(1, Relaxed);
                metrics::verification_failure(Failure::Header);
                self.ban(peer, format!("offered a bad header: {e}"));
                OfferReply::Reject(e)
            }
        };
        let _ = reply.send(decision);
    }

    pub(super) fn decide_offer(
        &mut self,
        peer: PeerId,
        header: Option<pb::SegmentHeader>,
    ) -> Result<OfferReply, ExchangeError> {
        let header = header.ok_or(ExchangeError::Protocol("offer without a header"))?;
        let signed = SignedHeader::from_pb(&header)?;
        let Some(key) = self.streams.get(&signed.info.id.stream).map(|s| s.key) else {
            return Ok(OfferReply::Decline(DeclineReason::NotWanted));
        };
        let verified = signed.verify(&key)?;
        let id = verified.id();
        if self.holds(&id) {
            return Ok(OfferReply::Decline(DeclineReason::AlreadyHave));
        }
        if !self.wanted(&verified) {
            return Ok(OfferReply::Decline(DeclineReason::NotWanted));
        }
        let now = Instant::now();
        self.pending.entry(id).or_insert_with(|| verified.clone());
        Ok(
            match self
                .scheduler
                .offered(id, verified.info().length, peer, now)
            {
                Decision::Accept(transfer) => OfferReply::Accept(transfer, verified),
                Decision::Decline(reason) => OfferReply::Decline(reason),
            },
        )
    }

    pub(super) fn run_actions(&mut self) {
        while let Some(action) = self.scheduler.poll_action() {
            let now = Instant::now();
            match action {
                Action::Offer { transfer, peer, id } => {
                    let Some(segment) = lock(&self.store).get(&id) else {
                        self.scheduler.finished(transfer, Outcome::Failed, now);
                        continue;
                    };
                    let mut control = self.control.clone();
                    let (limits, timeout) = (self.config.limits, self.config.read_timeout);
                    let faults = self.config.faults;
                    let span = self.peer_span(peer);
                    let handle = self.tasks.spawn(
                        async move {
                            let bytes = segment.body.len() as u64;
                            let (header, body) = (
                                faults.header(segment.header.signed()),
                                faults.body(&segment.body),
                            );
                            let result = async {
                                let framed = open(&mut control, peer, limits, timeout).await?;
                                exchange::push(framed, &header, &body).await
                            }
                            .await;
                            TaskDone::Upload {
                                transfer,
                                peer,
                                bytes,
                                result,
                            }
                        }
                        .instrument(span),
                    );
                    self.aborts.insert(transfer, handle);
                }
                Action::Pull { transfer, peer, id } => {
                    let Some(key) = self.streams.get(&id.stream).map(|s| s.key) else {
                        self.scheduler.finished(transfer, Outcome::Failed, now);
                        continue;
                    };
                    let mut control = self.control.clone();
                    let (limits, timeout) = (self.config.limits, self.config.read_timeout);
                    let span = self.peer_span(peer);
                    let handle = self.tasks.spawn(
                        async move {
                            let result = async {
                                let framed = open(&mut control, peer, limits, timeout).await?;
                                exchange::pull(framed, id, &key).await
                            }
                            .await;
                            TaskDone::Download {
                                transfer,
                                via: Via::Pull(peer),
                                started: now,
                                result,
                            }
                        }
                        .instrument(span),
                    );
                    self.aborts.insert(transfer, handle);
                }
                Action::FetchOrigin { transfer, id } => {
                    match self.origin_url(&id) {
                        Some((url, header)) => {
                            metrics::late(Late::Mesh);
                            tracing::debug!("{id} is late in the mesh; fetching it from {url}");
                            let http = self.http.clone();
                            let handle = self.tasks.spawn(async move {
                                match fetch_origin(&http, &url, &header).await {
                                    Ok(body) => TaskDone::Download {
                                        transfer,
                                        via: Via::Origin,
                                        started: now,
                                        result: Ok(Some((header, body))),
                                    },
                                    Err(OriginError::Fetch(error)) => TaskDone::OriginFailed {
                                        transfer,
                                        id,
                                        error,
                                    },
                                    Err(OriginError::Verify(error)) => {
                                        metrics::verification_failure(Failure::Body);
                                        TaskDone::OriginFailed {
                                            transfer,
                                            id,
                                            error,
                                        }
                                    }
                                }
                            });
                            self.aborts.insert(transfer, handle);
                        }
                        // A segment demanded before its header was known:
                        // the mesh did not have it, and without the signed
                        // URI and hash the origin cannot be asked.
                        None if !self.pending.contains_key(&id) => {
                            tracing::debug!("{id}: no peer had it, and its header is unknown");
                            self.scheduler.finished(transfer, Outcome::Failed, now);
                        }
                        None => {
                            self.warn(format!("segment {id} is late and its stream names no origin to fetch it from"));
                            self.scheduler.finished(transfer, Outcome::Failed, now);
                        }
                    }
                }
                Action::Cancel { transfer } => {
                    if let Some(handle) = self.aborts.remove(&transfer) {
                        handle.abort();
                    }
                }
            }
        }
    }

    /// The origin URL of a segment: descriptor origin, then rendition playlist, then segment URI.
    pub(super) fn origin_url(&self, id: &SegmentId) -> Option<(url::Url, VerifiedHeader)> {
        let header = self.pending.get(id)?.clone();
        let descriptor = self.streams.get(&id.stream)?.descriptor.descriptor();
        let rendition = descriptor
            .renditions
            .iter()
            .find(|r| r.id == id.rendition)?;
        let base = url::Url::parse(&descriptor.origin_url).ok()?;
        let playlist = base.join(&rendition.uri).ok()?;
        let url = playlist.join(&header.info().uri).ok()?;
        Some((url, header))
    }

    pub(super) fn on_task_done(&mut self, done: TaskDone) {
        let now = Instant::now();
        match done {
            TaskDone::Download {
                transfer,
                via,
                started,
                result,
            } => {
                self.aborts.remove(&transfer);
                let peer = match via {
                    Via::Pull(p) | Via::PushIn(p) => Some(p),
                    Via::Origin => None,
                };
                let outcome = match result {
                    Ok(Some((header, body))) => {
                        let bytes = body.len() as u64;
                        let source = match via {
                            Via::Pull(p) => Source::Pull(p),
                            Via::PushIn(p) => Source::Push(p),
                            Via::Origin => Source::Origin,
                        };
                        self.stored(header, body, source, now);
                        Outcome::Done {
                            bytes,
                            elapsed: now.saturating_duration_since(started),
                        }
                    }
                    Ok(None) => Outcome::Absent,
                    Err(e) if e.is_misbehaviour() => {
                        self.stats.verification_failures.fetch_add(1, Relaxed);
                        if let Some(what) = Failure::of(&e) {
                            metrics::verification_failure(what);
                        }
                        if let Some(peer) = peer {
                            self.ban(peer, e.to_string());
                        }
                        Outcome::Misbehaved
                    }
                    Err(e) => {
                        match peer {
                            Some(peer) => self
                                .peer_span(peer)
                                .in_scope(|| tracing::debug!("download failed: {e}")),
                            None => tracing::debug!("download failed: {e}"),
                        }
                        Outcome::Failed
                    }
                };
                self.inbound_finished(&via);
                self.scheduler.finished(transfer, outcome, now);
            }
            TaskDone::OriginFailed {
                transfer,
                id,
                error,
            } => {
                self.aborts.remove(&transfer);
                self.warn(format!("origin fetch of {id} failed: {error}"));
                self.scheduler.finished(transfer, Outcome::Failed, now);
            }
            TaskDone::Upload {
                transfer,
                peer,
                bytes,
                result,
            } => {
                self.aborts.remove(&transfer);
                let outcome = match result {
                    Ok(Pushed::Delivered) => {
                        self.stats.bytes_out.fetch_add(bytes, Relaxed);
                        metrics::bytes(Direction::Out, Class::Mesh, bytes);
                        Outcome::Done {
                            bytes,
                            elapsed: Duration::ZERO,
                        }
                    }
                    Ok(Pushed::Declined(reason)) => Outcome::Declined(reason),
                    Err(e) if e.is_misbehaviour() => {
                        self.ban(peer, e.to_string());
                        Outcome::Misbehaved
                    }
                    Err(_) => Outcome::Failed,
                };
                self.scheduler.finished(transfer, outcome, now);
            }
            TaskDone::CacheRead { header, body } => {
                let id = header.id();
                match body {
                    Some(body) => {
                        let size = body.len() as u64;
                        let inserted = lock(&self.store).insert(header, body);
                        if let Inserted::New { evicted } = inserted {
                            self.scheduler.held(id, size, now);
                            self.forget_evicted(evicted);
                            self.store_changed();
                            self.emit(Event::Stored {
                                id,
                                source: Source::Cache,
                                bytes: size,
                                at: now,
                            });
                        }
                    }
                    None => {
                        if let Some(cache) = &self.cache {
                            lock(cache).delete(&id);
                        }
                        self.scheduler.evicted(&id);
                    }
                }
            }
            TaskDone::Headers {
                peer,
                stream,
                page,
                result,
            } => match result {
                Ok(headers) => {
                    let Some(key) = self.streams.get(&stream).map(|s| s.key) else {
                        return;
                    };
                    let last = headers.len() < MAX_LISTED || page >= MAX_INDEX_PAGES;
                    let mut after = None;
                    for header in headers {
                        match SignedHeader::from_pb(&header)
                            .map_err(Into::into)
                            .and_then(|h| h.verify(&key))
                        {
                            Ok(verified) => {
                                after = Some(verified.id());
                                self.learn(verified, Some(peer), now);
                            }
                            Err(e) => {
                                self.stats.verification_failures.fetch_add(1, Relaxed);
                                metrics::verification_failure(Failure::Header);
                                self.ban(peer, format!("listed a bad header: {e}"));
                                return;
                            }
                        }
                    }
                    if page > 0 {
                        match after {
                            Some(after) if !last => {
                                self.request_page(peer, stream, page + 1, Some(after))
                            }
                            _ => self.plan_seed(stream),
                        }
                    }
                }
                Err(e) if e.is_misbehaviour() => self.ban(peer, e.to_string()),
                Err(e) => self
                    .peer_span(peer)
                    .in_scope(|| tracing::debug!("header list failed: {e}")),
            },
            TaskDone::Served { peer, result } => {
                self.inbound = self.inbound.saturating_sub(1);
                if let Err(e) = result
                    && e.is_misbehaviour()
                {
                    self.stats.verification_failures.fetch_add(1, Relaxed);
                    if let Some(what) = Failure::of(&e) {
                        metrics::verification_failure(what);
                    }
                    self.ban(peer, e.to_string());
                }
            }
        }
    }

    pub(super) fn inbound_finished(&mut self, via: &Via) {
        if matches!(via, Via::PushIn(_)) {
            self.inbound = self.inbound.saturating_sub(1);
        }
    }

    pub(super) fn stored(
        &mut self,
        header: VerifiedHeader,
        body: Bytes,
        source: Source,
        now: Instant,
    ) {
        let id = header.id();
        let bytes = body.len() as u64;
        let published_at_us = header.info().published_at_us;
        match source {
            Source::Origin => {
                self.stats.origin_bytes_in.fetch_add(bytes, Relaxed);
                metrics::bytes(Direction::In, Class::Origin, bytes);
            }
            _ => {
                self.stats.mesh_bytes_in.fetch_add(bytes, Relaxed);
                metrics::bytes(Direction::In, Class::Mesh, bytes);
            }
        };
        self.pending.remove(&id);
        self.write_cache(&header, &body);
        if self.config.faults.forge_headers {
            self.announce_forged(&header);
        }
        let inserted = lock(&self.store).insert(header, body);
        match inserted {
            Inserted::New { evicted } => {
                self.forget_evicted(evicted);
                metrics::segment_received(match source {
                    Source::Push(_) => Received::Push,
                    Source::Pull(_) => Received::Pull,
                    Source::Origin => Received::Origin,
                    Source::Injected | Source::Cache => Received::Publisher,
                });
                if source != Source::Injected {
                    metrics::propagation(published_at_us, crate::unix_now_us());
                }
                self.store_changed();
                self.emit(Event::Stored {
                    id,
                    source,
                    bytes,
                    at: now,
                });
            }
            Inserted::AlreadyHeld => {
                self.stats.duplicate_bytes.fetch_add(bytes, Relaxed);
            }
            Inserted::TooLarge => self.warn(format!(
                "segment {id} ({bytes} bytes) is larger than the whole store"
            )),
        }
    }
}

impl Driver {
    /// Writes a verified segment to the disk cache, if there is one; what it
    /// deletes to stay within its bound and is not in memory either is no
    /// longer held.
    pub(super) fn write_cache(&mut self, header: &VerifiedHeader, body: &Bytes) {
        let Some(cache) = self.cache.clone() else {
            return;
        };
        let (deleted, used) = {
            let mut cache = lock(&cache);
            (cache.write(header, body), cache.used_bytes())
        };
        self.gauges.cache_bytes.set(used);
        for id in deleted {
            if !lock(&self.store).contains(&id) {
                self.scheduler.evicted(&id);
            }
        }
    }

    /// Gossips a header that does not verify, under a fresh message id.
    pub(super) fn announce_forged(&mut self, header: &VerifiedHeader) {
        let mut forged = self.config.faults.header(header.signed());
        forged.info.id.sequence += 1_000_000;
        let announce = pb::Announce {
            headers: vec![forged.to_pb()],
        };
        let topic = behaviour::topic(&header.id().stream, header.id().rendition);
        let _ = self
            .swarm
            .behaviour_mut()
            .gossipsub
            .publish(topic, announce.encode_to_vec());
    }
}
