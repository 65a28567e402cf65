//! A 3-node mesh with a relay in front, for tests of the browser gateway.

use std::collections::BTreeSet;
use std::time::Duration;

use bytes::Bytes;
use meshcast_node::publisher::Publisher;
use meshcast_proto::{PublisherKey, SegmentId, StreamId, VerifiedHeader};
use meshcast_relay::{Client, ClientError, Gateway};

use crate::{TestNode, config, follow, local, media_dir, publisher_config};

/// An origin, a publisher, a plain node and a relay node (with a gateway): a 3-node mesh.
pub struct Mesh {
    _origin: meshcast_origin::Running,
    pub publisher: TestNode,
    pub node: TestNode,
    pub relay: TestNode,
    pub gateway: Gateway,
    pub stream: StreamId,
    pub key: PublisherKey,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Mesh {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// The relay serves the test stream on demand (listed in `serve.streams`,
/// not followed beforehand), besides whatever `gateway_config` lists.
pub async fn mesh(private: bool, gateway_config: meshcast_relay::Config) -> Mesh {
    mesh_with(private, gateway_config, config()).await
}

/// [`mesh`] with the relay's node configured as `relay_config`.
pub async fn mesh_with(
    private: bool,
    mut gateway_config: meshcast_relay::Config,
    relay_config: meshcast_node::Config,
) -> Mesh {
    let origin = meshcast_origin::spawn(media_dir(), local())
        .await
        .expect("origin");
    let publisher = TestNode::start(config()).await;
    let key = PublisherKey::from_seed([21; 32]);
    let mut cfg = publisher_config(format!("{}/live/master.m3u8", origin.url()), "relay-test");
    cfg.private = private;
    let ingest = Publisher::start(publisher.node.clone(), key.clone(), cfg)
        .await
        .expect("publisher");
    let stream = ingest.stream_id();
    let node = TestNode::start(config()).await;
    follow(&node, &publisher, stream).await;
    let relay = TestNode::start(relay_config).await;
    relay.node.dial(node.addr.clone()).await.expect("dial");
    relay.node.dial(publisher.addr.clone()).await.expect("dial");
    gateway_config.serve.streams.push(stream);
    let (gateway, driver) = Gateway::bind(relay.node.clone(), gateway_config)
        .await
        .expect("gateway");
    let tasks = vec![
        tokio::spawn(async move {
            ingest.run().await;
        }),
        tokio::spawn(driver.run()),
    ];
    Mesh {
        _origin: origin,
        publisher,
        node,
        relay,
        gateway,
        stream,
        key,
        tasks,
    }
}

pub fn gateway_config() -> meshcast_relay::Config {
    meshcast_relay::Config {
        listen: local(),
        web_listen: local(),
        // Tests connect from 127.0.0.1 many times in a row; the rate of new
        // connections has its own test.
        limits: meshcast_relay::Limits {
            connections_per_second_per_ip: 1_000,
            connection_burst_per_ip: 1_000,
            ..Default::default()
        },
        ..Default::default()
    }
}

pub async fn connect(mesh: &Mesh, token: &str) -> Result<Client, ClientError> {
    Client::connect(
        mesh.gateway.url(),
        &mesh.gateway.cert_hashes(),
        mesh.stream,
        token,
        Duration::from_secs(15),
    )
    .await
}

/// Carries `expected` from `publisher` (which holds them) across the mesh to
/// a gateway, and fetches each with a native client through it: with
/// `middle`, publisher — node — relay (three nodes, the node holding all of
/// them first), else publisher — relay. Returns what the client got, in
/// `expected` order.
pub async fn fetch_via_gateway(
    publisher: &TestNode,
    stream: StreamId,
    expected: &BTreeSet<SegmentId>,
    middle: bool,
) -> Vec<(VerifiedHeader, Bytes)> {
    let mut nodes = Vec::new();
    let mut upstream = publisher;
    if middle {
        let node = TestNode::start(config()).await;
        follow(&node, publisher, stream).await;
        node.assert_gets(&stream, expected, Duration::from_secs(30))
            .await;
        nodes.push(node);
        upstream = &nodes[0];
    }
    let relay = TestNode::start(config()).await;
    follow(&relay, upstream, stream).await;
    let mut config = gateway_config();
    config.serve.streams.push(stream);
    let (gateway, driver) = Gateway::bind(relay.node.clone(), config)
        .await
        .expect("gateway");
    let driver = tokio::spawn(driver.run());
    let mut client = Client::connect(
        gateway.url(),
        &gateway.cert_hashes(),
        stream,
        "",
        Duration::from_secs(15),
    )
    .await
    .expect("a session");
    let mut got = Vec::with_capacity(expected.len());
    for id in expected {
        let fetched = client
            .fetch(*id, Duration::from_secs(10))
            .await
            .unwrap_or_else(|e| panic!("{id}: {e}"));
        got.push(fetched);
    }
    client.close();
    driver.abort();
    got
}
