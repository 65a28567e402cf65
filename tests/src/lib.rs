//! Helpers for tests that run real nodes over QUIC on 127.0.0.1.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use libp2p::Multiaddr;
use libp2p::identity::Keypair;
use meshcast_node::{Config, Node};
use meshcast_proto::{SegmentId, StreamId};
use tokio::task::JoinHandle;

pub mod hostile;
pub mod live;
pub mod relay;

/// An ephemeral port on 127.0.0.1.
pub fn local() -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], 0))
}

/// The committed test stream.
pub fn media_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../media/test-stream")
}

/// Logs to the test output when `RUST_LOG` is set.
pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// A node configuration for loopback tests: QUIC on an ephemeral port.
pub fn config() -> Config {
    Config {
        listen: vec!["/ip4/127.0.0.1/udp/0/quic-v1".parse().expect("multiaddr")],
        live_window: Duration::from_secs(60),
        store_max_bytes: 256 << 20,
        read_timeout: Duration::from_secs(5),
        // Every origin in these tests is on loopback.
        allow_private_origins: true,
        ..Config::default()
    }
}

/// A node whose driver runs on its own task; stopped when dropped.
pub struct TestNode {
    pub node: Node,
    pub addr: Multiaddr,
    driver: JoinHandle<()>,
}

impl Drop for TestNode {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

impl TestNode {
    pub async fn start(config: Config) -> TestNode {
        Self::start_with_key(config, Keypair::generate_ed25519()).await
    }

    pub async fn start_with_key(config: Config, key: Keypair) -> TestNode {
        let (node, driver) = Node::new(config, key).expect("node starts");
        let driver = tokio::spawn(driver.run());
        let addr = eventually(Duration::from_secs(5), || async {
            node.info().await.ok()?.listen_addrs.into_iter().next()
        })
        .await
        .expect("node listens");
        let addr = addr.with_p2p(node.peer_id()).expect("address without /p2p");
        TestNode { node, addr, driver }
    }

    /// Stops the driver and waits for it to end.
    pub async fn stop(self) {
        self.driver.abort();
        let _ = (&mut { self }.driver).await;
    }

    pub fn holds(&self, id: &SegmentId) -> bool {
        self.node.segment(id).is_some()
    }

    pub fn held(&self, stream: &StreamId) -> BTreeSet<SegmentId> {
        self.node
            .headers(stream)
            .iter()
            .map(|h| h.info.id)
            .collect()
    }

    /// Checks that this node holds every segment in `expected`, each
    /// byte-identical to the origin's file (the committed test stream).
    pub fn assert_identical_to_origin(&self, expected: &BTreeSet<SegmentId>) {
        for id in expected {
            let segment = self
                .node
                .segment(id)
                .unwrap_or_else(|| panic!("node {} lacks {id}", self.node.peer_id()));
            let uri = &segment.header.info().uri;
            let file = std::fs::read(media_dir().join(uri)).expect("origin file");
            assert_eq!(
                segment.body.as_ref(),
                file.as_slice(),
                "{id} differs from the origin's {uri}"
            );
        }
    }

    /// Waits until this node holds every segment in `expected`; panics with
    /// the missing ones after `timeout`.
    pub async fn assert_gets(
        &self,
        stream: &StreamId,
        expected: &BTreeSet<SegmentId>,
        timeout: Duration,
    ) {
        let all = eventually(timeout, || async {
            expected.is_subset(&self.held(stream)).then_some(())
        })
        .await;
        let held = self.held(stream);
        let missing: Vec<_> = expected.difference(&held).collect();
        assert!(
            all.is_some(),
            "node {} misses {missing:?}",
            self.node.peer_id()
        );
    }
}

/// Polls a probe every 50 ms until it returns `Some`, or the timeout passes
/// (the lab's, shared).
pub use meshcast_lab::host::poll as eventually;

/// A minimal HTTP/1.1 server for origins that misbehave in ways a real one
/// would refuse to: it serves `files` by path and answers 404 for the rest.
/// Stops when the returned handle is dropped.
pub async fn serve_files(
    files: std::collections::HashMap<String, Vec<u8>>,
) -> (std::net::SocketAddr, JoinHandle<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("local address");
    let files = std::sync::Arc::new(files);
    let task = tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let files = files.clone();
            tokio::spawn(async move {
                let mut request = vec![0u8; 4096];
                let Ok(n) = socket.read(&mut request).await else {
                    return;
                };
                let text = String::from_utf8_lossy(&request[..n]);
                let path = text.split_whitespace().nth(1).unwrap_or("/").to_string();
                let response = match files.get(&path) {
                    Some(body) => {
                        let mut r = format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            body.len()
                        )
                        .into_bytes();
                        r.extend_from_slice(body);
                        r
                    }
                    None => {
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                            .to_vec()
                    }
                };
                let _ = socket.write_all(&response).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    (addr, task)
}

/// A publisher configuration for `origin` (a playlist URL or folder).
pub fn publisher_config(origin: String, name: &str) -> meshcast_node::publisher::Config {
    meshcast_node::publisher::Config {
        origin,
        public_origin: None,
        name: name.into(),
        concurrency: 4,
        max_segment: 16 << 20,
        fetch: Default::default(),
        private: false,
    }
}

/// Starts a publisher on `node` for the playlist at `origin`, with the key
/// of `seed`: the publisher (to `run`) and its signed descriptor.
pub async fn publish(
    node: &TestNode,
    origin: String,
    name: &str,
    seed: u8,
) -> (
    meshcast_node::publisher::Publisher,
    meshcast_proto::VerifiedDescriptor,
) {
    let publisher = meshcast_node::publisher::Publisher::start(
        node.node.clone(),
        meshcast_proto::PublisherKey::from_seed([seed; 32]),
        publisher_config(origin, name),
    )
    .await
    .expect("publisher");
    let descriptor = node
        .node
        .known_descriptor(publisher.stream_id())
        .await
        .expect("the publisher runs")
        .expect("the publisher knows its descriptor");
    (publisher, descriptor)
}

/// [`publish`]es a stream that ends (a VOD) and runs its ingest to the end,
/// within 30 s: its id, its descriptor and what was ingested.
pub async fn publish_whole(
    node: &TestNode,
    origin: String,
    name: &str,
    seed: u8,
) -> (
    StreamId,
    meshcast_proto::VerifiedDescriptor,
    meshcast_node::publisher::Ingested,
) {
    let (ingest, descriptor) = publish(node, origin, name, seed).await;
    let stream = ingest.stream_id();
    let ingested = tokio::time::timeout(Duration::from_secs(30), ingest.run())
        .await
        .expect("the ingest completes within 30 s");
    (stream, descriptor, ingested)
}

/// Connects `node` through `via`, finds `stream` in the DHT and follows it.
pub async fn follow(node: &TestNode, via: &TestNode, stream: StreamId) {
    node.node.dial(via.addr.clone()).await.expect("dial");
    let descriptor = node
        .node
        .find_stream(stream, Duration::from_secs(10))
        .await
        .expect("descriptor found in the DHT");
    node.node.follow(descriptor).await.expect("follow");
}
