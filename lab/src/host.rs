//! A meshcast node running inside a lab host: its driver on a runtime whose
//! threads live in the host's namespace, so its sockets are the host's and
//! its packets cross the host's router.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use libp2p::Multiaddr;
use libp2p::identity::Keypair;
use meshcast_node::publisher::{self, Ingested, Publisher};
use meshcast_node::{Config, Node};
use meshcast_proto::{PublisherKey, SegmentId, StreamId};
use tokio::task::JoinHandle;

use crate::net::{Host, Runtime};

/// A node and the runtime it runs on; stopped when dropped.
pub struct LabNode {
    pub node: Node,
    driver: JoinHandle<()>,
    // Declared last: dropped after the driver is aborted.
    runtime: Runtime,
}

impl LabNode {
    /// Starts a node with `config` on `host`.
    pub async fn start(host: &Host, config: Config) -> Result<LabNode, String> {
        let runtime = host.runtime();
        let (node, driver) = runtime
            .spawn(async move {
                let (node, driver) = Node::new(config, Keypair::generate_ed25519())?;
                // Several nodes log into one process: each line names its node.
                let span = tracing::info_span!("node", peer = %node.peer_id());
                let driver = tokio::spawn(tracing::Instrument::instrument(driver.run(), span));
                Ok::<_, meshcast_node::NodeError>((node, driver))
            })
            .await
            .map_err(|e| format!("the node's runtime: {e}"))?
            .map_err(|e| format!("the node does not start: {e}"))?;
        Ok(LabNode {
            node,
            driver,
            runtime,
        })
    }

    /// Runs `future` on the node's host (for helpers that open sockets).
    pub fn spawn<F>(&self, future: F) -> JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.runtime.spawn(future)
    }

    /// Runs an origin serving `media` (an HLS folder) at `origin_addr` on
    /// this node's host, and publishes its live stream from this node,
    /// signed with the key of `seed`. Returns the stream, the origin (it
    /// stops when dropped) and the ingest, running on the host.
    pub async fn publish_live(
        &self,
        media: &Path,
        origin_addr: SocketAddr,
        name: &str,
        seed: u8,
    ) -> Result<(StreamId, meshcast_origin::Running, JoinHandle<Ingested>), String> {
        let media = media.to_path_buf();
        let origin = self
            .spawn(async move { meshcast_origin::spawn(media, origin_addr).await })
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("origin: {e}"))?;
        let config = publisher::Config {
            origin: format!("{}/live/master.m3u8", origin.url()),
            public_origin: None,
            name: name.into(),
            concurrency: 4,
            max_segment: 16 << 20,
            fetch: Default::default(),
            private: false,
        };
        let node = self.node.clone();
        let ingest = self
            .spawn(async move {
                Publisher::start(node, PublisherKey::from_seed([seed; 32]), config).await
            })
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("publisher: {e}"))?;
        let stream = ingest.stream_id();
        Ok((stream, origin, self.spawn(ingest.run())))
    }

    /// Finds `stream` in the DHT within `timeout` and follows it; errors
    /// name the node as `who`.
    pub async fn follow_stream(
        &self,
        stream: StreamId,
        timeout: Duration,
        who: &str,
    ) -> Result<(), String> {
        let descriptor = self
            .node
            .find_stream(stream, timeout)
            .await
            .map_err(|e| format!("{who} finds the stream: {e}"))?;
        self.node
            .follow(descriptor)
            .await
            .map_err(|e| format!("{who} follows: {e}"))
    }

    /// Serves browsers (a gateway) on this node's host at `addr`, for
    /// `stream`; stops when the returned guard drops.
    pub async fn serve_browsers(
        &self,
        addr: std::net::Ipv4Addr,
        stream: StreamId,
    ) -> Result<Browsers, String> {
        let config = meshcast_relay::Config {
            listen: SocketAddr::from((addr, 4433)),
            web_listen: SocketAddr::from((addr, 8443)),
            serve: meshcast_relay::Serve {
                streams: vec![stream],
                ..Default::default()
            },
            ..Default::default()
        };
        let node = self.node.clone();
        let (gateway, driver) = self
            .spawn(async move { meshcast_relay::Gateway::bind(node, config).await })
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("gateway: {e}"))?;
        let driver = self.spawn(driver.run());
        Ok(Browsers {
            well_known: format!("http://{}/.well-known/meshcast", gateway.web_addr()),
            at: crate::viewer::Gateway {
                url: gateway.url().to_string(),
                cert_hashes: gateway.cert_hashes(),
                stream,
            },
            _gateway: gateway,
            driver,
        })
    }

    /// The segments of `stream` this node holds.
    pub fn held(&self, stream: &StreamId) -> BTreeSet<SegmentId> {
        self.node
            .headers(stream)
            .iter()
            .map(|h| h.info.id)
            .collect()
    }

    /// Whether a direct (not relayed) connection to `peer` is open.
    pub async fn is_direct_with(&self, peer: &libp2p::PeerId) -> bool {
        self.node
            .info()
            .await
            .is_ok_and(|info| info.direct.contains(peer))
    }

    /// This node's address `addr` with its peer id appended.
    pub fn at(&self, addr: Multiaddr) -> Multiaddr {
        addr.with(libp2p::multiaddr::Protocol::P2p(self.node.peer_id()))
    }

    /// Its relayed address (ending in its peer id), once a relay accepted
    /// its reservation.
    pub async fn relayed_addr(&self, timeout: Duration) -> Option<Multiaddr> {
        poll(timeout, || async {
            let info = self.node.info().await.ok()?;
            info.listen_addrs.into_iter().find(|a| {
                a.iter()
                    .any(|p| p == libp2p::multiaddr::Protocol::P2pCircuit)
            })
        })
        .await
    }
}

/// A gateway run by [`LabNode::serve_browsers`].
pub struct Browsers {
    /// Where viewers connect.
    pub at: crate::viewer::Gateway,
    /// Where a browser learns it (`/.well-known/meshcast`).
    pub well_known: String,
    _gateway: meshcast_relay::Gateway,
    driver: JoinHandle<()>,
}

impl Drop for Browsers {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

impl Drop for LabNode {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// Polls `probe` every 50 ms until it returns `Some`, or `timeout` passes.
pub async fn poll<T, F, Fut>(timeout: Duration, probe: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    poll_every(Duration::from_millis(50), timeout, probe).await
}

/// Polls `probe` every `interval` until it returns `Some`, or `timeout`
/// passes.
pub async fn poll_every<T, F, Fut>(interval: Duration, timeout: Duration, mut probe: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(found) = probe().await {
            return Some(found);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(interval).await;
    }
}
