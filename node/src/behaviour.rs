//! The libp2p protocols a node speaks, combined into one behaviour.

use std::time::Duration;

use libp2p::identity::Keypair;
use libp2p::swarm::NetworkBehaviour;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::{
    StreamProtocol, allow_block_list, autonat, dcutr, gossipsub, identify, kad, ping, relay,
};

use crate::config::Config;

pub const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/meshcast/kad/1.0.0");
pub const IDENTIFY_PROTOCOL: &str = "/meshcast/id/1.0.0";
/// Gossipsub's default, stated: announcements carry headers, never bytes.
pub const MAX_GOSSIP_MESSAGE: usize = 64 * 1024;

#[derive(NetworkBehaviour)]
pub struct Behaviour {
    pub blocked: allow_block_list::Behaviour<allow_block_list::BlockedPeers>,
    pub kad: kad::Behaviour<kad::store::MemoryStore>,
    pub identify: identify::Behaviour,
    pub ping: ping::Behaviour,
    pub gossipsub: gossipsub::Behaviour,
    pub autonat: autonat::v2::client::Behaviour,
    pub stream: libp2p_stream::Behaviour,
    /// Reserves slots on the configured relays and dials peers through them
    /// (the transport half is built into the swarm by `with_relay_client`).
    pub relay_client: relay::client::Behaviour,
    /// Direct connection upgrade through relay: hole punching, coordinated
    /// over a relayed connection.
    pub dcutr: dcutr::Behaviour,
    /// Circuit relay v2 server; on only with `Config::relay_server`.
    pub relay_server: Toggle<relay::Behaviour>,
    /// AutoNAT v2 server (dials back the addresses a client asks about); on
    /// only with `Config::relay_server`: relays are the nodes known to be
    /// publicly reachable, the ones a NATed node can ask.
    pub autonat_server: Toggle<autonat::v2::server::Behaviour>,
}

/// The relay server's configuration: libp2p's defaults (per-peer and per-IP
/// rate limits, 1 h reservations, at most 4 reservations and 4 circuits per
/// peer) with the configured totals and circuit limits.
fn relay_config(config: &Config) -> relay::Config {
    let defaults = relay::Config::default();
    relay::Config {
        max_reservations: config.relay_max_reservations,
        max_reservations_per_peer: defaults
            .max_reservations_per_peer
            .min(config.relay_max_reservations),
        max_circuits: config.relay_max_circuits,
        max_circuits_per_peer: defaults
            .max_circuits_per_peer
            .min(config.relay_max_circuits),
        // libp2p-relay requires the duration to fit in a u32 of seconds.
        max_circuit_duration: config
            .relay_circuit_duration
            .min(Duration::from_secs(u64::from(u32::MAX))),
        max_circuit_bytes: config.relay_circuit_bytes,
        ..defaults
    }
}

impl Behaviour {
    pub fn new(
        key: &Keypair,
        relay_client: relay::client::Behaviour,
        config: &Config,
    ) -> Result<Self, String> {
        let peer_id = key.public().to_peer_id();

        let mut kad_config = kad::Config::new(KAD_PROTOCOL);
        // Descriptor records are verified before they are stored (see node.rs).
        kad_config.set_record_filtering(kad::StoreInserts::FilterBoth);
        kad_config.set_query_timeout(Duration::from_secs(20));
        let mut kad =
            kad::Behaviour::with_config(peer_id, kad::store::MemoryStore::new(peer_id), kad_config);
        // Volunteer nodes are meant to be reachable, and answer DHT requests.
        // A node that reserves relay slots expects not to be: requests to it
        // would cross a circuit, spending the relay's few circuits and bytes
        // on other peers' lookups. It starts as a client (it still looks up,
        // stores and provides) and the driver makes it a server once a direct
        // address of it is confirmed.
        kad.set_mode(Some(if config.relays.is_empty() {
            kad::Mode::Server
        } else {
            kad::Mode::Client
        }));

        let gossip_config = gossipsub::ConfigBuilder::default()
            .validation_mode(gossipsub::ValidationMode::Strict)
            .validate_messages()
            .message_id_fn(message_id)
            .max_transmit_size(MAX_GOSSIP_MESSAGE)
            .heartbeat_interval(Duration::from_secs(1))
            .build()
            .map_err(|e| format!("gossipsub config: {e}"))?;
        let mut gossipsub = gossipsub::Behaviour::new(
            gossipsub::MessageAuthenticity::Signed(key.clone()),
            gossip_config,
        )
        .map_err(|e| format!("gossipsub: {e}"))?;
        gossipsub
            .with_peer_score(
                gossipsub::PeerScoreParams::default(),
                gossipsub::PeerScoreThresholds::default(),
            )
            .map_err(|e| format!("gossipsub scoring: {e}"))?;

        Ok(Self {
            blocked: allow_block_list::Behaviour::default(),
            kad,
            identify: identify::Behaviour::new(
                identify::Config::new(IDENTIFY_PROTOCOL.into(), key.public())
                    .with_agent_version(format!("meshcast/{}", env!("CARGO_PKG_VERSION"))),
            ),
            // Every 15 s (libp2p's default), not 5 s: the RTT only ranks
            // holders, and QUIC keeps connections alive on its own. With 100
            // idle peers the 5 s ping was about a third of a node's CPU and
            // wake-ups (`meshcast-bench idle`: 2.2-2.5 % of a core and
            // ~390 wake-ups/s at 5 s, 1.6-1.75 % and ~270/s at 15-30 s).
            ping: ping::Behaviour::new(ping::Config::new().with_interval(Duration::from_secs(15))),
            gossipsub,
            autonat: autonat::v2::client::Behaviour::default(),
            stream: libp2p_stream::Behaviour::new(),
            relay_client,
            dcutr: dcutr::Behaviour::new(peer_id),
            relay_server: config
                .relay_server
                .then(|| relay::Behaviour::new(peer_id, relay_config(config)))
                .into(),
            autonat_server: config
                .relay_server
                .then(autonat::v2::server::Behaviour::default)
                .into(),
        })
    }
}

/// Score parameters for a stream's topic: invalid announcements weigh heavily.
pub fn topic_score_params() -> gossipsub::TopicScoreParams {
    gossipsub::TopicScoreParams {
        topic_weight: 1.0,
        invalid_message_deliveries_weight: -100.0,
        invalid_message_deliveries_decay: 0.5,
        ..Default::default()
    }
}

/// The gossip topic of one rendition of one stream.
pub fn topic(stream: &meshcast_proto::StreamId, rendition: u32) -> gossipsub::IdentTopic {
    gossipsub::IdentTopic::new(format!("meshcast/v1/{stream}/{rendition}"))
}

/// The gossip topic gateway records travel on. Every node subscribes, so
/// records cross the whole mesh, not just between gateways.
pub fn gateways_topic() -> gossipsub::IdentTopic {
    gossipsub::IdentTopic::new("meshcast/v1/gateways")
}

/// The stream and rendition a topic hash names, if it is one of ours.
pub fn parse_topic(topic: &gossipsub::TopicHash) -> Option<crate::mesh::Topic> {
    let rest = topic.as_str().strip_prefix("meshcast/v1/")?;
    let (stream, rendition) = rest.split_once('/')?;
    Some(crate::mesh::Topic {
        stream: stream.parse().ok()?,
        rendition: rendition.parse().ok()?,
    })
}

/// Message ids are the hash of the whole message, which the mesh verifies
/// before gossip forwards it: the same announcement sent twice (a retrying
/// publisher) is one message, and no one can take the id of an announcement
/// that is still to come. (Ids from the announced segment id, read before
/// any signature check, let a peer that announced forged headers for the
/// next sequence numbers first have the real announcements dropped as
/// duplicates.)
fn message_id(message: &gossipsub::Message) -> gossipsub::MessageId {
    gossipsub::MessageId::from(blake3::hash(&message.data).as_bytes().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshcast_proto::StreamId;

    #[test]
    fn topics_name_a_stream_and_a_rendition() {
        let stream = StreamId::from_bytes(&[7; 32]).expect("32 bytes");
        let topic = topic(&stream, 3).hash();
        assert_eq!(
            parse_topic(&topic),
            Some(crate::mesh::Topic {
                stream,
                rendition: 3
            })
        );
        for other in ["meshcast/v1/zz/1", "meshcast/v2/x/1", "other"] {
            assert_eq!(parse_topic(&gossipsub::TopicHash::from_raw(other)), None);
        }
    }
}
