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

use crate::config::{Config, GatewayConfig, LogFormat, RELAY_BROWSER_LISTEN, parse_peer_gateway};

/// Logs to standard error in `format`, filtered by `RUST_LOG` (else `default`).
/// JSON: one object per line, with the fields of the current span (`span`)
/// and of every span it is in (`spans`: a peer, a browser session).
pub fn init_logs_as(default: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => logs.try_init(),
        LogFormat::Json => logs.json().try_init(),
    };
}

/// Serves `/metrics` when `metrics.listen` is set, and prints
/// `metrics http://ADDR/metrics`. Before the node starts, so that nothing it
/// records is lost.
async fn start_metrics(config: &Config) -> anyhow::Result<()> {
    if let Some(listen) = config.metrics.listen {
        let addr = crate::metrics::serve(listen).await?;
        println!("metrics http://{addr}{}", crate::metrics::PATH);
    }
    Ok(())
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

/// Ctrl-C (SIGINT) and SIGTERM (what systemd and `kill` send), caught from
/// [`StopSignals::catch`] on, so one that arrives while a node starts is not
/// lost. Call inside the runtime.
struct StopSignals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn catch() -> anyhow::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            interrupt: signal(SignalKind::interrupt()).context("catching SIGINT")?,
            terminate: signal(SignalKind::terminate()).context("catching SIGTERM")?,
        })
    }

    /// Waits for the next one and names it.
    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.interrupt.recv() => "SIGINT",
            _ = self.terminate.recv() => "SIGTERM",
        }
    }
}

/// Runs until Ctrl-C or SIGTERM (a clean stop, exit status 0), or until the
/// node's driver ends (an error).
async fn until_ctrl_c(
    mut stop: StopSignals,
    driver: tokio::task::JoinHandle<()>,
) -> anyhow::Result<()> {
    tokio::select! {
        signal = stop.recv() => eprintln!("stopping ({signal})"),
        _ = driver => anyhow::bail!("the node stopped unexpectedly"),
    }
    Ok(())
}

/// `meshcast node` and `meshcast relay`: a relay also serves circuit relay v2
/// and always runs the browser gateway; a node runs it when
/// `gateway.browser_listen` is set.
pub fn node(
    config: Config,
    relay: bool,
    faults: meshcast_relay::gateway::Faults,
) -> anyhow::Result<()> {
    init_logs_as("info", config.log.format);
    let follow = config.follow()?;
    let browser_listen = match config.gateway.browser_listen {
        Some(listen) => Some(listen),
        None if relay => Some(RELAY_BROWSER_LISTEN),
        None => None,
    };
    let gateway = browser_listen
        .map(|listen| gateway_config(listen, &config.gateway, faults))
        .transpose()?;
    runtime()?.block_on(async {
        start_metrics(&config).await?;
        let stop = StopSignals::catch()?;
        let (node, driver) = start_node(&config, false, relay).await?;
        for (stream, seed) in follow {
            let node = node.clone();
            // Looked up in the background: the DHT may need a while after start.
            tokio::spawn(async move {
                match node.find_stream(stream, Duration::from_secs(120)).await {
                    Ok(descriptor) => {
                        if node.follow_with(descriptor, seed).await.is_ok() {
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
        until_ctrl_c(stop, driver).await
    })
}

/// The gateway library's configuration from `[gateway]` (already validated).
fn gateway_config(
    listen: SocketAddr,
    gateway: &GatewayConfig,
    faults: meshcast_relay::gateway::Faults,
) -> anyhow::Result<meshcast_relay::Config> {
    let cert = match (&gateway.tls_cert, &gateway.tls_key) {
        (Some(cert), Some(key)) => CertSource::Files {
            cert: cert.clone(),
            key: key.clone(),
            poll: meshcast_relay::certs::FILE_POLL,
        },
        _ => CertSource::SelfSigned {
            lifetime: gateway.cert_lifetime,
            overlap: (gateway.cert_lifetime / 14).min(Duration::from_secs(24 * 3600)),
        },
    };
    cert.validate().context("gateway.cert_lifetime")?;
    let peers = gateway
        .peer_gateways
        .iter()
        .map(|entry| {
            let (url, hash) = parse_peer_gateway(entry)
                .map_err(|why| anyhow::anyhow!("gateway.peer_gateways: {why}"))?;
            Ok(Peer {
                url,
                cert_hashes: vec![hash],
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(meshcast_relay::Config {
        listen,
        web_listen: gateway.web_listen,
        public_host: gateway.public_host.clone(),
        cert,
        limits: meshcast_relay::Limits {
            max_sessions: gateway.max_sessions,
            max_sessions_per_ip: gateway.max_sessions_per_ip,
            max_sessions_per_prefix: gateway.max_sessions_per_prefix,
            connections_per_second_per_ip: gateway.connections_per_second_per_ip,
            connection_burst_per_ip: gateway.connection_burst_per_ip,
            ..Default::default()
        },
        serve: gateway.serve()?,
        log_addresses: gateway.log_addresses,
        peers,
        faults,
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
    anyhow::ensure!(
        viewer.len() <= meshcast_proto::token::MAX_VIEWER,
        "--viewer is {} bytes long; at most {} are allowed",
        viewer.len(),
        meshcast_proto::token::MAX_VIEWER
    );
    let expires = now
        .checked_add(ttl)
        .and_then(|at| u64::try_from(at.as_micros()).ok())
        .context("--ttl is too long: the token would expire after the year 586,000")?;
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
    init_logs_as("info", config.log.format);
    let key = read_key(&args.key)?;
    runtime()?.block_on(async {
        start_metrics(&config).await?;
        let stop = StopSignals::catch()?;
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
        // This handle keeps the node (and so the driver) running once the
        // publisher is done: a VOD, or a live stream that ended, is served on.
        let publisher = Publisher::start(node.clone(), key, publisher_config).await?;
        println!("stream {}", publisher.stream_id());
        let ingest = tokio::spawn(async move {
            let done = publisher.run().await;
            let what = if done.was_live {
                "the live stream ended; published again as a VOD"
            } else {
                "VOD ingest complete"
            };
            eprintln!(
                "{what}: {} segments, {} bytes held; serving them until stopped",
                done.segments, done.bytes
            );
            println!("ingested {} {}", done.segments, done.bytes);
        });
        let result = until_ctrl_c(stop, driver).await;
        ingest.abort();
        drop(node);
        result
    })
}

pub fn origin(
    dir: PathBuf,
    listen: SocketAddr,
    parts: Option<Duration>,
    log_format: LogFormat,
) -> anyhow::Result<()> {
    init_logs_as("info", log_format);
    runtime()?.block_on(async {
        let mut stop = StopSignals::catch()?;
        let serving = || format!("serving {}", dir.display());
        let mut origin = meshcast_origin::Origin::load(&dir).with_context(serving)?;
        if let Some(target) = parts {
            origin = origin.with_parts(target).with_context(serving)?;
        }
        let running = origin.spawn(listen).await.with_context(serving)?;
        println!("origin {}", running.url());
        tracing::info!(
            "serving {}: VOD at {0}/vod/master.m3u8, live at {0}/live/master.m3u8",
            running.url()
        );
        if parts.is_some() {
            tracing::info!("low-latency live at {}/ll/master.m3u8", running.url());
        }
        eprintln!("stopping ({})", stop.recv().await);
        running.shutdown().await.context("stopping the origin")
    })
}
