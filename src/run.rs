//! `meshcast node`, `meshcast publish`, `meshcast origin`: long-running roles.
//!
//! Each prints machine-readable lines on standard output (`peer <id>`,
//! `listening <multiaddr>`, `stream <id>`, `origin <url>`) so scripts and
//! tests can wire processes together; logs go to standard error.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use meshcast_node::identity;
use meshcast_node::node::{Driver, Node};
use meshcast_node::publisher::{self, Publisher};
use meshcast_proto::{PublisherKey, StreamId};
use meshcast_relay::certs::CertSource;
use meshcast_relay::{Gateway, Peer, wellknown};

use crate::cli::GatewayArgs;
use crate::config::Config;

/// Logs to standard error, filtered by `RUST_LOG` (else `default`).
pub fn init_logs(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Runtime::new().context("starting the async runtime")
}

/// Starts a node from the configuration and prints its identity and addresses.
/// A relay also serves circuit relay v2 and AutoNAT for NATed nodes.
async fn start_node(
    config: &Config,
    announce_only: bool,
    relay: bool,
) -> anyhow::Result<(Node, tokio::task::JoinHandle<()>)> {
    let key = identity::load_or_create(&config.node.data_dir)?;
    let mut node_config = config.node_config()?;
    node_config.announce_only = announce_only;
    node_config.relay_server = relay;
    if relay && node_config.external.is_empty() {
        tracing::warn!(
            "a relay needs node.external (--external): without a confirmed public address it accepts no reservations"
        );
    }
    let (node, driver): (Node, Driver) = Node::new(node_config, key)?;
    let driver = tokio::spawn(driver.run());
    println!("peer {}", node.peer_id());
    // Listeners come up asynchronously; wait briefly for the first addresses.
    for _ in 0..50 {
        let info = node.info().await?;
        if !info.listen_addrs.is_empty() {
            for addr in info.listen_addrs {
                println!("listening {addr}/p2p/{}", info.peer_id);
            }
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok((node, driver))
}

async fn until_ctrl_c(driver: tokio::task::JoinHandle<()>) -> anyhow::Result<()> {
    tokio::select! {
        signal = tokio::signal::ctrl_c() => signal.context("waiting for Ctrl-C")?,
        _ = driver => anyhow::bail!("the node stopped unexpectedly"),
    }
    eprintln!("stopping");
    Ok(())
}

pub fn node(
    config: Config,
    follow: Vec<StreamId>,
    gateway: Option<(SocketAddr, GatewayArgs)>,
    relay: bool,
) -> anyhow::Result<()> {
    init_logs("info");
    let gateway = gateway
        .map(|(listen, args)| gateway_config(listen, args))
        .transpose()?;
    runtime()?.block_on(async {
        let (node, driver) = start_node(&config, false, relay).await?;
        for stream in follow {
            let node = node.clone();
            // Looked up in the background: the DHT may need a while after start.
            tokio::spawn(async move {
                match node.find_stream(stream, Duration::from_secs(120)).await {
                    Ok(descriptor) => {
                        if node.follow(descriptor).await.is_ok() {
                            println!("following {stream}");
                        }
                    }
                    Err(e) => tracing::error!("cannot follow {stream}: {e}"),
                }
            });
        }
        let _gateway = match gateway {
            Some(config) => {
                let (gateway, gateway_driver) = Gateway::bind(node.clone(), config).await?;
                println!("gateway {}", gateway.url());
                for hash in gateway.cert_hashes() {
                    println!("cert-hash {}", hex::encode(hash.as_ref()));
                }
                println!(
                    "well-known http://{}{}",
                    gateway.web_addr(),
                    wellknown::PATH
                );
                Some(tokio::spawn(gateway_driver.run()))
            }
            None => None,
        };
        until_ctrl_c(driver).await
    })
}

fn gateway_config(listen: SocketAddr, args: GatewayArgs) -> anyhow::Result<meshcast_relay::Config> {
    let cert = match (args.tls_cert, args.tls_key) {
        (Some(cert), Some(key)) => CertSource::Files {
            cert,
            key,
            poll: meshcast_relay::certs::FILE_POLL,
        },
        _ => CertSource::SelfSigned {
            lifetime: args.cert_lifetime,
            overlap: (args.cert_lifetime / 14).min(Duration::from_secs(24 * 3600)),
        },
    };
    cert.validate().context("--cert-lifetime")?;
    let peers = args
        .peer_gateways
        .iter()
        .map(|text| {
            let (url, hash) = text
                .split_once('=')
                .with_context(|| format!("--peer-gateway {text:?} must be URL=CERT_HASH_HEX"))?;
            anyhow::ensure!(
                hash.len() == 64 && hash.chars().all(|c| c.is_ascii_hexdigit()),
                "--peer-gateway {text:?}: the hash must be 64 hex digits"
            );
            Ok(Peer {
                url: url.to_string(),
                cert_hashes: vec![hash.to_ascii_lowercase()],
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(meshcast_relay::Config {
        listen,
        web_listen: args.web_listen,
        public_host: args.public_host,
        cert,
        limits: meshcast_relay::Limits {
            max_sessions: args.max_sessions,
            max_sessions_per_ip: args.max_sessions_per_ip,
            ..Default::default()
        },
        peers,
        faults: meshcast_relay::gateway::Faults {
            corrupt_every: args.fault_corrupt_every,
        },
        ..Default::default()
    })
}

/// Issues a viewer token; see `meshcast token --help`.
pub fn token(
    key: &Path,
    name: Option<&str>,
    stream: Option<StreamId>,
    ttl: Duration,
    viewer: &str,
) -> anyhow::Result<String> {
    let key = read_key(key)?;
    let stream = match (name, stream) {
        (Some(name), _) => meshcast_proto::StreamKey::new(key.public(), name).id,
        (None, Some(stream)) => stream,
        (None, None) => anyhow::bail!("give --name or --stream"),
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .context("the system clock is before 1970")?;
    let expires = u64::try_from((now + ttl).as_micros()).context("--ttl is too long")?;
    Ok(meshcast_proto::token::issue(&key, &stream, expires, viewer))
}

/// What `meshcast publish` needs besides the node configuration.
pub struct PublishArgs {
    pub origin: String,
    pub key: PathBuf,
    pub name: String,
    pub public_origin: Option<url::Url>,
    pub announce_only: bool,
    pub concurrency: usize,
    pub private: bool,
}

fn read_key(path: &Path) -> anyhow::Result<PublisherKey> {
    let pem = std::fs::read_to_string(path)
        .with_context(|| format!("reading publisher key {}", path.display()))?;
    PublisherKey::from_pem(&pem).with_context(|| format!("publisher key {}", path.display()))
}

pub fn publish(config: Config, args: PublishArgs) -> anyhow::Result<()> {
    init_logs("info");
    let key = read_key(&args.key)?;
    runtime()?.block_on(async {
        let (node, driver) = start_node(&config, args.announce_only, false).await?;
        let publisher_config = publisher::Config {
            origin: args.origin,
            public_origin: args.public_origin,
            name: args.name,
            concurrency: args.concurrency,
            max_segment: meshcast_proto::frame::Limits::DEFAULT_MAX_SEGMENT,
            fetch: Default::default(),
            private: args.private,
        };
        let publisher = Publisher::start(node, key, publisher_config).await?;
        println!("stream {}", publisher.stream_id());
        let ingest = tokio::spawn(publisher.run());
        let result = until_ctrl_c(driver).await;
        ingest.abort();
        result
    })
}

pub fn origin(dir: PathBuf, listen: SocketAddr) -> anyhow::Result<()> {
    init_logs("info");
    runtime()?.block_on(async {
        let running = meshcast_origin::spawn(&dir, listen)
            .await
            .with_context(|| format!("serving {}", dir.display()))?;
        println!("origin {}", running.url());
        eprintln!(
            "serving {}: VOD at {0}/vod/master.m3u8, live at {0}/live/master.m3u8",
            running.url()
        );
        tokio::signal::ctrl_c()
            .await
            .context("waiting for Ctrl-C")?;
        running.shutdown().await.context("stopping the origin")
    })
}
