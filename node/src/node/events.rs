//! Swarm events, translated: connections to the NAT bookkeeping (and from
//! there to the mesh), gossip and pings to the mesh, the DHT to itself.

use std::time::Instant;

use libp2p::kad::store::RecordStore as _;
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, dcutr, gossipsub, identify, kad, ping};
use meshcast_proto::{StreamId, VerifiedDescriptor};

use super::driver::{Driver, FIND_QUORUM, MAX_PROVIDER_DIALS, descriptor_from_record, peer_span};
use super::handle::NodeError;
use super::nat::{log_relay_client_event, log_relay_server_event};
use crate::behaviour::{self, BehaviourEvent};
use crate::metrics::{self, Failure};

impl Driver {
    pub(super) fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::ConnectionEstablished {
                peer_id,
                num_established,
                connection_id,
                endpoint,
                ..
            } => {
                if let Some(reply) = self.dials.remove(&connection_id) {
                    let _ = reply.send(Ok(()));
                }
                let span = self
                    .peer_spans
                    .entry(peer_id)
                    .or_insert_with(|| peer_span(peer_id))
                    .clone();
                span.in_scope(|| {
                    tracing::debug!(
                        remote = %endpoint.get_remote_address(),
                        dialer = endpoint.is_dialer(),
                        connections = num_established.get(),
                        "connection established"
                    )
                });
                self.peers_changed();
                if num_established.get() == 1 {
                    self.reput_records();
                    self.gossip_heal.connected.insert(
                        peer_id,
                        (Instant::now(), endpoint.get_remote_address().clone()),
                    );
                }
                let changes = span.in_scope(|| {
                    self.nat.connection_established(
                        &mut self.swarm,
                        peer_id,
                        connection_id,
                        endpoint.is_relayed().then_some(endpoint.is_listener()),
                    )
                });
                for change in changes {
                    self.on_change(change);
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                endpoint,
                num_established,
                cause,
            } => {
                self.peer_span(peer_id).in_scope(|| match &cause {
                    Some(e) => tracing::debug!(
                        remote = %endpoint.get_remote_address(),
                        connections = num_established,
                        "connection closed: {e}"
                    ),
                    None => tracing::debug!(
                        remote = %endpoint.get_remote_address(),
                        connections = num_established,
                        "connection closed"
                    ),
                });
                if num_established == 0 {
                    self.peer_spans.remove(&peer_id);
                    self.gossip_heal.connected.remove(&peer_id);
                    if let Some(addr) = self.gossip_heal.redial.remove(&peer_id) {
                        let addr = addr.clone().with_p2p(peer_id).unwrap_or(addr);
                        let _ = self.swarm.dial(addr);
                    }
                }
                self.peers_changed();
                let change = self.nat.connection_closed(
                    &mut self.swarm,
                    peer_id,
                    connection_id,
                    endpoint.is_relayed(),
                );
                if let Some(change) = change {
                    self.on_change(change);
                }
            }
            SwarmEvent::OutgoingConnectionError {
                connection_id,
                peer_id,
                error,
                ..
            } => {
                let reason = error.to_string();
                if let Some(reply) = self.dials.remove(&connection_id) {
                    let _ = reply.send(Err(NodeError::Dial {
                        addr: Multiaddr::empty(),
                        reason: reason.clone(),
                    }));
                }
                let bootstrap = peer_id.is_some_and(|p| {
                    self.config
                        .bootstrap
                        .iter()
                        .any(|a| a.iter().last() == Some(libp2p::multiaddr::Protocol::P2p(p)))
                });
                if bootstrap {
                    self.warn(format!("bootstrap peer did not answer: {reason}"));
                }
            }
            SwarmEvent::NewListenAddr { address, .. } => tracing::info!("listening on {address}"),
            SwarmEvent::ExternalAddrConfirmed { address } => {
                tracing::info!("reachable at {address}");
                self.nat.update_kad_mode(&mut self.swarm);
            }
            SwarmEvent::ExternalAddrExpired { address } => {
                tracing::info!("no longer reachable at {address}");
                self.nat.update_kad_mode(&mut self.swarm);
            }
            SwarmEvent::ListenerClosed {
                listener_id,
                reason,
                ..
            } => {
                if let Some(warning) = self.nat.listener_closed(listener_id, reason) {
                    self.warn(warning);
                }
            }
            SwarmEvent::ListenerError { listener_id, error } => {
                tracing::warn!(?listener_id, "listener error: {error}")
            }
            SwarmEvent::Behaviour(event) => self.on_behaviour_event(event),
            _ => {}
        }
    }

    fn on_behaviour_event(&mut self, event: BehaviourEvent) {
        match event {
            BehaviourEvent::RelayClient(event) => log_relay_client_event(event),
            BehaviourEvent::RelayServer(event) => log_relay_server_event(event),
            BehaviourEvent::Dcutr(dcutr::Event {
                remote_peer_id,
                result,
            }) => self.peer_span(remote_peer_id).in_scope(|| match result {
                Ok(_) => tracing::info!("hole punching succeeded: direct connection established"),
                Err(e) => tracing::info!(
                    "hole punching failed ({e}); the peer stays reachable through the relay for coordination only"
                ),
            }),
            // `result` says whether the request was answered; the dial-back
            // outcome went to the client.
            BehaviourEvent::AutonatServer(event) => tracing::debug!(
                client = %event.client,
                addr = %event.tested_addr,
                "answered an AutoNAT request: {:?}",
                event.result
            ),
            BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. }) => {
                self.peer_span(peer_id).in_scope(|| {
                    self.nat
                        .dial_back(&mut self.swarm, peer_id, &info.listen_addrs)
                });
                // Only DHT servers belong in the routing table: a NATed node
                // in client mode would be asked, through a relay, for nothing.
                if info.protocols.contains(&behaviour::KAD_PROTOCOL) {
                    for addr in info.listen_addrs {
                        self.swarm.behaviour_mut().kad.add_address(&peer_id, addr);
                    }
                }
            }
            BehaviourEvent::Ping(ping::Event {
                peer,
                result: Ok(rtt),
                ..
            }) => self.mesh.handle_rtt(peer, rtt),
            BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            }) => {
                let acceptance = self.on_announce(
                    propagation_source,
                    message.source,
                    &message.topic,
                    &message.data,
                );
                // Reported before the mesh's ban (performed after this
                // event) blacklists the peer.
                self.swarm
                    .behaviour_mut()
                    .gossipsub
                    .report_message_validation_result(&message_id, &propagation_source, acceptance);
            }
            BehaviourEvent::Kad(event) => self.on_kad_event(event),
            _ => {}
        }
    }

    fn on_kad_event(&mut self, event: kad::Event) {
        match event {
            kad::Event::OutboundQueryProgressed {
                id,
                result: kad::QueryResult::GetRecord(result),
                step,
                ..
            } => {
                let Some(find) = self.finds.get_mut(&id) else {
                    return;
                };
                if let Ok(kad::GetRecordOk::FoundRecord(peer_record)) = result {
                    match descriptor_from_record(&peer_record.record, &find.stream) {
                        Some(found) => {
                            find.valid += 1;
                            let issued = |d: &VerifiedDescriptor| d.descriptor().issued_at_us;
                            if find
                                .newest
                                .as_ref()
                                .is_none_or(|n| issued(&found) > issued(n))
                            {
                                find.newest = Some(found);
                            }
                        }
                        None => {
                            metrics::verification_failure(Failure::Descriptor);
                            tracing::debug!(
                                peer = ?peer_record.peer,
                                "the DHT returned a record that is not a valid descriptor of the stream"
                            );
                        }
                    }
                }
                if find.valid >= FIND_QUORUM || step.last {
                    if let Some(find) = self.finds.remove(&id) {
                        let _ = find.reply.send(find.newest);
                    }
                    if let Some(mut query) = self.swarm.behaviour_mut().kad.query_mut(&id) {
                        query.finish();
                    }
                }
            }
            kad::Event::OutboundQueryProgressed {
                result:
                    kad::QueryResult::GetProviders(Ok(kad::GetProvidersOk::FoundProviders {
                        providers,
                        ..
                    })),
                ..
            } => {
                let me = *self.swarm.local_peer_id();
                let fresh: Vec<PeerId> = providers
                    .into_iter()
                    .filter(|p| *p != me && !self.mesh.is_banned(p) && !self.swarm.is_connected(p))
                    .take(MAX_PROVIDER_DIALS)
                    .collect();
                for peer in fresh {
                    let _ = self.swarm.dial(peer);
                }
            }
            kad::Event::InboundRequest {
                request:
                    kad::InboundRequest::PutRecord {
                        record: Some(record),
                        source,
                        ..
                    },
            } => {
                let valid = StreamId::from_bytes(record.key.as_ref())
                    .ok()
                    .and_then(|id| descriptor_from_record(&record, &id));
                let Some(descriptor) = valid else {
                    self.mesh.handle_misbehaviour(
                        source,
                        "stored a DHT record that is not a valid stream descriptor".into(),
                        Some(Failure::Descriptor),
                        Instant::now(),
                    );
                    return;
                };
                let id = descriptor.stream_key().id;
                let issued = descriptor.descriptor().issued_at_us;
                match self.mesh.followed(&id) {
                    // A newer descriptor of a followed stream (a live stream
                    // that ended and became a VOD) replaces ours.
                    Some((seed, ours)) if issued > ours => {
                        self.mesh.follow(descriptor, seed, Instant::now())
                    }
                    Some(_) => {}
                    None => {
                        // The newest valid descriptor wins here too: an old
                        // one replayed does not replace what we keep.
                        let store = self.swarm.behaviour_mut().kad.store_mut();
                        let kept = store
                            .get(&record.key)
                            .and_then(|r| descriptor_from_record(&r, &id))
                            .map(|d| d.descriptor().issued_at_us);
                        if kept.is_none_or(|kept| issued > kept) {
                            let _ = store.put(record);
                        }
                    }
                }
            }
            // Provider records are how followers of a stream find each
            // other: stored (within the DHT store's bounds) for any key that
            // can name a stream. Kademlia checks that the record names its
            // sender as the provider.
            kad::Event::InboundRequest {
                request:
                    kad::InboundRequest::AddProvider {
                        record: Some(record),
                    },
            } => {
                if StreamId::from_bytes(record.key.as_ref()).is_ok()
                    && let Err(e) = self
                        .swarm
                        .behaviour_mut()
                        .kad
                        .store_mut()
                        .add_provider(record)
                {
                    tracing::debug!("provider record not stored: {e}");
                }
            }
            _ => {}
        }
    }
}
