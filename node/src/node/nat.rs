//! NAT traversal in the shell: relay reservations, the DHT mode, and which
//! connected peers are segment neighbours.
//!
//! A node behind a NAT reserves slots on relays and is reached through them;
//! DCUtR then punches a direct connection where the NATs allow. Segments
//! never cross a circuit: the relay caps circuits (`relay_circuit_bytes`) far
//! below video rates, and libp2p-stream opens each stream on a random
//! connection to the peer, so a circuit left beside a direct connection would
//! carry some transfers into that cap. So a peer becomes a neighbour (for
//! the mesh core) only once it is connected directly and its circuits are
//! closed.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use libp2p::core::transport::ListenerId;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::ConnectionId;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::{Multiaddr, PeerId, Swarm, kad, relay};

use super::handle::NodeError;
use crate::behaviour::Behaviour;

/// Most addresses of a peer dialled back: identify lists at most what the
/// peer sends, and a hostile one could send many.
const MAX_DIAL_BACK_ADDRS: usize = 8;

/// A relay this node reserves a slot on.
struct RelaySlot {
    /// The relay's address, ending in `/p2p/<relay peer id>`.
    addr: Multiaddr,
    peer: PeerId,
    /// The `<relay>/p2p-circuit` listener, while a reservation is pending or held.
    listener: Option<ListenerId>,
    last_attempt: Option<Instant>,
}

/// What a connection change means for the mesh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Change {
    /// The peer is a neighbour now.
    Up(PeerId),
    /// The peer is no longer a neighbour.
    Down(PeerId),
    /// A direct connection opened while the peer was reachable only through
    /// a relay (the circuit is being closed).
    Upgraded(PeerId),
}

pub(super) struct Nat {
    relays: Vec<RelaySlot>,
    retry: Duration,
    /// Open direct (not relayed) connections per peer.
    direct: HashMap<PeerId, usize>,
    /// Open relayed connections (circuits) per peer.
    relayed: HashMap<PeerId, HashSet<ConnectionId>>,
    /// Peers that reached this node through a relay, not yet dialled back
    /// (see [`Nat::dial_back`]); once dialled back they stay here with
    /// `true` until every connection to them is gone.
    inbound_circuit: HashMap<PeerId, bool>,
    neighbours: HashSet<PeerId>,
}

impl Nat {
    /// `relays`: full relay addresses ending in `/p2p/<peer id>`; `retry`:
    /// the least time between two reservation attempts on one relay.
    pub(super) fn new(relays: &[Multiaddr], retry: Duration) -> Result<Self, NodeError> {
        Ok(Self {
            relays: relays
                .iter()
                .map(|addr| relay_slot(addr.clone()))
                .collect::<Result<_, _>>()?,
            retry,
            direct: HashMap::new(),
            relayed: HashMap::new(),
            inbound_circuit: HashMap::new(),
            neighbours: HashSet::new(),
        })
    }

    /// Asks each relay whose reservation is missing for one, at most every
    /// `retry` per relay. Returns warnings.
    pub(super) fn reserve(&mut self, swarm: &mut Swarm<Behaviour>) -> Vec<String> {
        let mut warnings = Vec::new();
        for slot in &mut self.relays {
            if slot.listener.is_some()
                || slot.last_attempt.is_some_and(|t| t.elapsed() < self.retry)
            {
                continue;
            }
            // The relay is a node like any other: a DHT contact as well.
            swarm
                .behaviour_mut()
                .kad
                .add_address(&slot.peer, slot.addr.clone());
            // The relay client dials the relay if needed, then reserves; the
            // listener reports the relayed address once the relay accepts.
            slot.last_attempt = Some(Instant::now());
            match swarm.listen_on(slot.addr.clone().with(Protocol::P2pCircuit)) {
                Ok(listener) => slot.listener = Some(listener),
                Err(e) => {
                    warnings.push(format!("cannot reserve a slot on relay {}: {e}", slot.addr))
                }
            }
        }
        warnings
    }

    /// A listener closed. For a relayed one (the reservation was refused,
    /// the connection to the relay failed or closed, a renewal failed), a
    /// warning; the next [`Nat::reserve`] retries.
    pub(super) fn listener_closed(
        &mut self,
        listener: ListenerId,
        reason: Result<(), std::io::Error>,
    ) -> Option<String> {
        let slot = self
            .relays
            .iter_mut()
            .find(|s| s.listener == Some(listener))?;
        slot.listener = None;
        let why = match reason {
            Ok(()) => "the connection to it failed or closed".to_string(),
            Err(e) => format!("{e}"),
        };
        Some(format!(
            "no reservation on relay {}: {why}; retrying in {:?}",
            slot.addr, self.retry
        ))
    }

    pub(super) fn connection_established(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        peer: PeerId,
        connection: ConnectionId,
        relayed_inbound: Option<bool>,
    ) -> Vec<Change> {
        let mut changes = Vec::new();
        if let Some(inbound) = relayed_inbound {
            self.relayed.entry(peer).or_default().insert(connection);
            if inbound {
                self.inbound_circuit.entry(peer).or_insert(false);
            }
            if self.direct.contains_key(&peer) {
                // Already connected directly: the circuit would only cost
                // the relay a slot.
                swarm.close_connection(connection);
            } else {
                tracing::info!(
                    "connected through a relay; waiting for a direct connection (hole punching)"
                );
            }
        } else {
            let count = self.direct.entry(peer).or_default();
            *count += 1;
            if *count == 1 && self.relayed.contains_key(&peer) {
                tracing::info!("direct connection established; closing the relayed one");
                changes.push(Change::Upgraded(peer));
            }
            changes.extend(self.settle(swarm, peer));
        }
        changes
    }

    pub(super) fn connection_closed(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        peer: PeerId,
        connection: ConnectionId,
        relayed: bool,
    ) -> Option<Change> {
        if relayed {
            if let Some(circuits) = self.relayed.get_mut(&peer) {
                circuits.remove(&connection);
                if circuits.is_empty() {
                    self.relayed.remove(&peer);
                }
            }
            if !self.direct.contains_key(&peer) && !self.relayed.contains_key(&peer) {
                self.inbound_circuit.remove(&peer);
            }
            return self.settle(swarm, peer);
        }
        if let Some(count) = self.direct.get_mut(&peer) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.direct.remove(&peer);
            }
        }
        if !self.direct.contains_key(&peer) && !self.relayed.contains_key(&peer) {
            self.inbound_circuit.remove(&peer);
        }
        (!self.direct.contains_key(&peer) && self.neighbours.remove(&peer))
            .then_some(Change::Down(peer))
    }

    /// A peer that reached this node only through a relay said (identify)
    /// where it listens: dial it there, once. Where it is reachable (public,
    /// or behind a NAT that forwards the port) this is a direct connection
    /// at once, whatever hole punching does: libp2p's DCUtR over TCP fails
    /// when one side's SYN lands on the other's listening socket, which the
    /// lab's NAT matrix showed between a symmetric NAT and a public node.
    /// Only the side the circuit came in to dials: the other one chose the
    /// circuit because it could not reach this node.
    pub(super) fn dial_back(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        peer: PeerId,
        listen_addrs: &[Multiaddr],
    ) {
        if self.direct.contains_key(&peer) {
            return;
        }
        let Some(dialled) = self.inbound_circuit.get_mut(&peer) else {
            return;
        };
        if *dialled {
            return;
        }
        let addrs: Vec<Multiaddr> = listen_addrs
            .iter()
            .filter(|a| !a.iter().any(|p| p == Protocol::P2pCircuit))
            .take(MAX_DIAL_BACK_ADDRS)
            .cloned()
            .collect();
        if addrs.is_empty() {
            return;
        }
        *dialled = true;
        tracing::debug!(?addrs, "dialling back a peer that came through a relay");
        let opts = DialOpts::peer_id(peer)
            .addresses(addrs)
            .condition(PeerCondition::Always)
            .build();
        if let Err(e) = swarm.dial(opts) {
            tracing::debug!("cannot dial back: {e}");
        }
    }

    /// Peers with at least one direct connection open.
    pub(super) fn direct_peers(&self) -> impl Iterator<Item = PeerId> + '_ {
        self.direct.keys().copied()
    }

    /// Makes a peer a neighbour once it is connected directly and no circuit
    /// to it remains (closing the circuits first).
    fn settle(&mut self, swarm: &mut Swarm<Behaviour>, peer: PeerId) -> Option<Change> {
        if !self.direct.contains_key(&peer) {
            return None;
        }
        match self.relayed.get(&peer) {
            Some(circuits) if !circuits.is_empty() => {
                for connection in circuits.clone() {
                    swarm.close_connection(connection);
                }
                None
            }
            _ => self.neighbours.insert(peer).then_some(Change::Up(peer)),
        }
    }

    /// A node with relays answers DHT requests only while a direct (not
    /// relayed) address of it is confirmed, by AutoNAT or configuration:
    /// requests to it would otherwise cross a circuit.
    pub(super) fn update_kad_mode(&self, swarm: &mut Swarm<Behaviour>) {
        if self.relays.is_empty() {
            return;
        }
        let direct = swarm
            .external_addresses()
            .any(|a| !a.iter().any(|p| p == Protocol::P2pCircuit));
        let mode = if direct {
            kad::Mode::Server
        } else {
            kad::Mode::Client
        };
        let kad = &mut swarm.behaviour_mut().kad;
        if kad.mode() != mode {
            tracing::info!("DHT mode: {mode}");
            kad.set_mode(Some(mode));
        }
    }
}

/// Checks a configured relay address: the relay client needs its peer id.
fn relay_slot(addr: Multiaddr) -> Result<RelaySlot, NodeError> {
    let invalid = |reason: &str| NodeError::Listen {
        addr: addr.clone(),
        reason: reason.to_string(),
    };
    if addr.iter().any(|p| p == Protocol::P2pCircuit) {
        return Err(invalid(
            "a relay address is the relay's own address, without /p2p-circuit",
        ));
    }
    match addr.iter().last() {
        Some(Protocol::P2p(peer)) => Ok(RelaySlot {
            addr,
            peer,
            listener: None,
            last_attempt: None,
        }),
        _ => Err(invalid("a relay address must end in /p2p/<relay peer id>")),
    }
}

pub(super) fn log_relay_client_event(event: relay::client::Event) {
    match event {
        relay::client::Event::ReservationReqAccepted {
            relay_peer_id,
            renewal,
            limit,
        } => {
            let limit = limit.map(|l| (l.duration(), l.data_in_bytes()));
            if renewal {
                tracing::debug!(relay = %relay_peer_id, "relay reservation renewed");
            } else {
                tracing::info!(
                    relay = %relay_peer_id,
                    "relay accepted our reservation; circuit limit (duration, bytes): {limit:?}"
                );
            }
        }
        relay::client::Event::OutboundCircuitEstablished {
            relay_peer_id,
            limit,
        } => tracing::debug!(relay = %relay_peer_id, ?limit, "circuit opened through relay"),
        relay::client::Event::InboundCircuitEstablished { src_peer_id, limit } => {
            tracing::debug!(peer = %src_peer_id, ?limit, "inbound circuit through our relay")
        }
    }
}

pub(super) fn log_relay_server_event(event: relay::Event) {
    match event {
        relay::Event::ReservationReqAccepted {
            src_peer_id,
            renewed,
        } => tracing::debug!(peer = %src_peer_id, renewed, "relay: reservation accepted"),
        relay::Event::ReservationReqDenied {
            src_peer_id,
            status,
        } => tracing::info!(peer = %src_peer_id, "relay: reservation denied ({status:?})"),
        relay::Event::CircuitReqAccepted {
            src_peer_id,
            dst_peer_id,
        } => tracing::debug!(src = %src_peer_id, dst = %dst_peer_id, "relay: circuit opened"),
        relay::Event::CircuitReqDenied {
            src_peer_id,
            dst_peer_id,
            status,
        } => tracing::info!(
            src = %src_peer_id,
            dst = %dst_peer_id,
            "relay: circuit denied ({status:?})"
        ),
        relay::Event::StatusChanged { status } => {
            tracing::info!("relay service {status:?} (it needs a confirmed external address)")
        }
        // The rest (closed circuits and reservations, deprecated error
        // variants) is routine.
        other => tracing::debug!("relay: {other:?}"),
    }
}
