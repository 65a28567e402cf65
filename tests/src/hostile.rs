//! A hostile peer for tests: a bare libp2p swarm (QUIC, gossipsub,
//! libp2p-stream) that speaks meshcast's protocols by hand, so that a test
//! can misbehave in ways an honest node never does: trickle frames, squat
//! gossip message ids, announce what it should not.

use std::time::Duration;

use futures::StreamExt;
use libp2p::identity::Keypair;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, gossipsub};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

#[derive(NetworkBehaviour)]
struct Behaviour {
    gossipsub: gossipsub::Behaviour,
    stream: libp2p_stream::Behaviour,
}

enum Command {
    Dial(Multiaddr, oneshot::Sender<Result<(), String>>),
    Subscribe(gossipsub::IdentTopic),
    Publish(
        gossipsub::IdentTopic,
        Vec<u8>,
        oneshot::Sender<Result<(), String>>,
    ),
    Connected(PeerId, oneshot::Sender<bool>),
}

/// See the module docs. Stopped when dropped.
pub struct Hostile {
    pub peer_id: PeerId,
    /// Opens streams of any protocol to connected peers.
    pub control: libp2p_stream::Control,
    commands: mpsc::Sender<Command>,
    task: JoinHandle<()>,
}

impl Drop for Hostile {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Hostile {
    pub fn start() -> Hostile {
        let key = Keypair::generate_ed25519();
        let peer_id = key.public().to_peer_id();
        let mut swarm = libp2p::SwarmBuilder::with_existing_identity(key)
            .with_tokio()
            .with_quic()
            .with_behaviour(|key| {
                let config = gossipsub::ConfigBuilder::default()
                    .heartbeat_interval(Duration::from_millis(200))
                    .build()
                    .expect("gossipsub config");
                let gossipsub = gossipsub::Behaviour::new(
                    gossipsub::MessageAuthenticity::Signed(key.clone()),
                    config,
                )
                .expect("gossipsub");
                Behaviour {
                    gossipsub,
                    stream: libp2p_stream::Behaviour::new(),
                }
            })
            .expect("behaviour")
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(120)))
            .build();
        swarm
            .listen_on("/ip4/127.0.0.1/udp/0/quic-v1".parse().expect("multiaddr"))
            .expect("listen");
        let control = swarm.behaviour().stream.new_control();
        let (commands, mut rx) = mpsc::channel::<Command>(64);
        let task = tokio::spawn(async move {
            let mut dials: Vec<(
                libp2p::swarm::ConnectionId,
                oneshot::Sender<Result<(), String>>,
            )> = Vec::new();
            loop {
                tokio::select! {
                    event = swarm.select_next_some() => match event {
                        SwarmEvent::ConnectionEstablished { connection_id, .. } => {
                            if let Some(i) = dials.iter().position(|(c, _)| *c == connection_id) {
                                let _ = dials.swap_remove(i).1.send(Ok(()));
                            }
                        }
                        SwarmEvent::OutgoingConnectionError { connection_id, error, .. } => {
                            if let Some(i) = dials.iter().position(|(c, _)| *c == connection_id) {
                                let _ = dials.swap_remove(i).1.send(Err(error.to_string()));
                            }
                        }
                        _ => {}
                    },
                    command = rx.recv() => match command {
                        Some(Command::Dial(addr, reply)) => {
                            let opts = libp2p::swarm::dial_opts::DialOpts::from(addr);
                            let id = opts.connection_id();
                            match swarm.dial(opts) {
                                Ok(()) => dials.push((id, reply)),
                                Err(e) => {
                                    let _ = reply.send(Err(e.to_string()));
                                }
                            }
                        }
                        Some(Command::Subscribe(topic)) => {
                            let _ = swarm.behaviour_mut().gossipsub.subscribe(&topic);
                        }
                        Some(Command::Publish(topic, data, reply)) => {
                            let result = swarm
                                .behaviour_mut()
                                .gossipsub
                                .publish(topic, data)
                                .map(|_| ())
                                .map_err(|e| e.to_string());
                            let _ = reply.send(result);
                        }
                        Some(Command::Connected(peer, reply)) => {
                            let _ = reply.send(swarm.is_connected(&peer));
                        }
                        None => break,
                    },
                }
            }
        });
        Hostile {
            peer_id,
            control,
            commands,
            task,
        }
    }

    pub async fn dial(&self, addr: Multiaddr) -> Result<(), String> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Dial(addr, tx))
            .await
            .map_err(|_| "hostile peer stopped".to_string())?;
        rx.await.map_err(|_| "hostile peer stopped".to_string())?
    }

    pub async fn subscribe(&self, topic: gossipsub::IdentTopic) {
        let _ = self.commands.send(Command::Subscribe(topic)).await;
    }

    /// Publishes raw bytes on a topic (gossipsub signs them as ours).
    pub async fn publish(&self, topic: gossipsub::IdentTopic, data: Vec<u8>) -> Result<(), String> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Publish(topic, data, tx))
            .await
            .map_err(|_| "hostile peer stopped".to_string())?;
        rx.await.map_err(|_| "hostile peer stopped".to_string())?
    }

    pub async fn is_connected(&self, peer: PeerId) -> bool {
        let (tx, rx) = oneshot::channel();
        if self
            .commands
            .send(Command::Connected(peer, tx))
            .await
            .is_err()
        {
            return false;
        }
        rx.await.unwrap_or(false)
    }
}
