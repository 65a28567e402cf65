//! Gateways found through the mesh: signed gateway records gossiped between
//! nodes, listed in Welcome and pushed to open sessions. Real swarms and
//! gateways over QUIC on 127.0.0.1, viewers on the native client.

use std::time::Duration;

use meshcast_proto::gateway::GatewayRecord;
use meshcast_proto::session::GatewayAddr;
use meshcast_proto::{SegmentId, SegmentKind};
use meshcast_relay::{Client, ClientEvent, Gateway};
use meshcast_tests::relay::{Mesh, connect, gateway_config, mesh};
use meshcast_tests::{TestNode, config, init_logs};

/// A node with a gateway serving the test stream, joined to `mesh`.
async fn another_gateway(mesh: &Mesh) -> (TestNode, Gateway, tokio::task::JoinHandle<()>) {
    let node = TestNode::start(config()).await;
    node.node.dial(mesh.relay.addr.clone()).await.expect("dial");
    node.node.dial(mesh.node.addr.clone()).await.expect("dial");
    let (gateway, task) = start_gateway(&node, mesh).await;
    (node, gateway, task)
}

async fn start_gateway(node: &TestNode, mesh: &Mesh) -> (Gateway, tokio::task::JoinHandle<()>) {
    let mut config = gateway_config();
    config.serve.streams.push(mesh.stream);
    let (gateway, driver) = Gateway::bind(node.node.clone(), config)
        .await
        .expect("gateway");
    (gateway, tokio::spawn(driver.run()))
}

fn hashes(gateway: &Gateway) -> Vec<[u8; 32]> {
    gateway.cert_hashes().iter().map(|h| *h.as_ref()).collect()
}

/// A viewer's session and the newest gateway list it has heard (Welcome's,
/// then each update).
struct Viewer {
    client: Client,
    list: Vec<GatewayAddr>,
    /// Every URL any list named.
    ever: Vec<String>,
}

impl Viewer {
    fn new(client: Client) -> Self {
        let list = client.gateways().to_vec();
        let ever = list.iter().map(|g| g.url.clone()).collect();
        Self { client, list, ever }
    }

    /// Reads the session's events until the list satisfies `want`.
    async fn until(&mut self, within: Duration, want: impl Fn(&[GatewayAddr]) -> bool) {
        assert!(
            self.try_until(within, want).await,
            "no such gateway list within {within:?}; last: {:?}",
            self.list
        );
    }

    /// Like [`until`](Self::until); false when `within` passes first.
    async fn try_until(&mut self, within: Duration, want: impl Fn(&[GatewayAddr]) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        while !want(&self.list) {
            match tokio::time::timeout_at(deadline, self.client.next_event()).await {
                Ok(Ok(ClientEvent::Gateways(update))) => {
                    self.ever.extend(update.iter().map(|g| g.url.clone()));
                    self.list = update;
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => panic!("session ended: {e}"),
                Err(_) => return false,
            }
        }
        true
    }
}

fn lists(list: &[GatewayAddr], gateway: &Gateway) -> bool {
    list.iter()
        .any(|g| g.url == gateway.url() && g.cert_hashes == hashes(gateway) && g.record.is_some())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_finds_gateways_through_the_mesh_and_reaches_a_restarted_one_with_its_new_hash() {
    init_logs();
    let mesh = mesh(false, gateway_config()).await;
    let (b_node, b, b_task) = another_gateway(&mesh).await;
    let (_c_node, c, _c_task) = another_gateway(&mesh).await;
    let mut viewer = Viewer::new(
        connect(&mesh, "")
            .await
            .expect("session through the first gateway"),
    );
    viewer
        .until(Duration::from_secs(20), |list| {
            lists(list, &b) && lists(list, &c)
        })
        .await;
    let b_key = viewer
        .list
        .iter()
        .find(|g| g.url == b.url())
        .and_then(|g| g.record)
        .map(|(node, _)| node)
        .expect("b's record names its node");
    assert_eq!(Some(b_key), b_node.node.node_key());

    // Someone else claims to be b, somewhere else: a record naming b's node
    // key, signed with its own. Gossip's first hop drops it.
    let attacker = TestNode::start(config()).await;
    attacker
        .node
        .dial(mesh.relay.addr.clone())
        .await
        .expect("dial");
    let now = meshcast_node::unix_now_us();
    let forged_url = "https://forged.example:4433/";
    let forged = GatewayRecord {
        node: b_key,
        url: forged_url.into(),
        cert_hashes: vec![[6; 32]],
        issued_at_us: now + 60_000_000,
        expires_at_us: now + 600_000_000,
        streams: vec![mesh.stream],
    };
    // Its own record, validly signed, does arrive: the path works, so the
    // forged one is dropped for its signature, not lost on the way.
    let own_url = "https://attacker.example:4433/";
    let own = GatewayRecord {
        node: attacker.node.node_key().expect("ed25519"),
        url: own_url.into(),
        ..forged.clone()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        attacker
            .node
            .publish_gateway(&forged)
            .await
            .expect("gossiped");
        attacker.node.publish_gateway(&own).await.expect("gossiped");
        let arrived = viewer
            .try_until(Duration::from_secs(1), |list| {
                list.iter().any(|g| g.url == own_url)
            })
            .await;
        if arrived {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the attacker's own record never arrived"
        );
    }

    // b restarts: a new certificate (and port), the same node.
    let old_url = b.url().to_string();
    let old_hashes = hashes(&b);
    b_task.abort();
    drop(b);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (b, _b_task) = start_gateway(&b_node, &mesh).await;
    assert_ne!(hashes(&b), old_hashes);
    viewer
        .until(Duration::from_secs(20), |list| lists(list, &b))
        .await;
    let list = viewer.list.clone();
    assert!(
        !list
            .iter()
            .any(|g| g.url == old_url && g.cert_hashes == old_hashes),
        "the old record is still listed beside the new one: {list:?}"
    );
    assert!(
        !viewer.ever.iter().any(|url| url == forged_url),
        "a forged record reached the viewer"
    );

    // The viewer reaches the restarted gateway with what the record says.
    let entry = list.iter().find(|g| g.url == b.url()).expect("b listed");
    let pinned: Vec<wtransport::tls::Sha256Digest> = entry
        .cert_hashes
        .iter()
        .map(|h| wtransport::tls::Sha256Digest::new(*h))
        .collect();
    let mut again = Client::connect(
        &entry.url,
        &pinned,
        mesh.stream,
        "",
        Duration::from_secs(15),
    )
    .await
    .expect("a session with the restarted gateway");
    let init = SegmentId {
        stream: mesh.stream,
        rendition: 0,
        kind: SegmentKind::Init,
        sequence: 0,
        part: 0,
    };
    again
        .fetch(init, Duration::from_secs(10))
        .await
        .expect("served by the restarted gateway");
}
