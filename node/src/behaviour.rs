//! The libp2p protocols a node speaks, combined into one behaviour.

use std::time::Duration;

use libp2p::identity::Keypair;
use libp2p::swarm::NetworkBehaviour;
use libp2p::{StreamProtocol, allow_block_list, autonat, gossipsub, identify, kad, ping};
use meshcast_proto::pb;
use prost::Message as _;

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
}

impl Behaviour {
    pub fn new(key: &Keypair) -> Result<Self, String> {
        let peer_id = key.public().to_peer_id();

        let mut kad_config = kad::Config::new(KAD_PROTOCOL);
        // Descriptor records are verified before they are stored (see node.rs).
        kad_config.set_record_filtering(kad::StoreInserts::FilterBoth);
        kad_config.set_query_timeout(Duration::from_secs(20));
        let mut kad =
            kad::Behaviour::with_config(peer_id, kad::store::MemoryStore::new(peer_id), kad_config);
        // Volunteer nodes are meant to be reachable; NATed ones join through relays.
        kad.set_mode(Some(kad::Mode::Server));

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
            ping: ping::Behaviour::new(ping::Config::new().with_interval(Duration::from_secs(5))),
            gossipsub,
            autonat: autonat::v2::client::Behaviour::default(),
            stream: libp2p_stream::Behaviour::new(),
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

/// Message ids derive from the announced segment id, so the same segment
/// announced twice (by a retrying publisher) is one message.
fn message_id(message: &gossipsub::Message) -> gossipsub::MessageId {
    let segment = pb::Announce::decode(message.data.as_slice())
        .ok()
        .and_then(|a| a.headers.into_iter().next())
        .map(|h| {
            let mut id = h.stream_id.to_vec();
            id.extend_from_slice(&h.rendition.to_be_bytes());
            id.extend_from_slice(&h.kind.to_be_bytes());
            id.extend_from_slice(&h.sequence.to_be_bytes());
            id
        });
    match segment {
        Some(id) => gossipsub::MessageId::from(id),
        // Not an announcement: validation will reject it; any stable id does.
        None => gossipsub::MessageId::from(blake3::hash(&message.data).as_bytes().to_vec()),
    }
}
