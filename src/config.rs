//! Layered configuration: defaults, TOML file, `MESHCAST_*` environment, flags.
//!
//! Each layer is a figment provider, so every error names the key and the
//! layer it came from ("for key `store.max_bytes` in MESHCAST_STORE__MAX_BYTES
//! environment variable"). After merging, [`Config::validate`] checks the values
//! against each other and the protocol limits, again naming the key.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use figment::providers::{Env, Format, Serialized, Toml};
use figment::value::{Dict, Map};
use figment::{Figment, Metadata, Profile, Provider, Source};
use meshcast_proto::frame::Limits;
use multiaddr::{Multiaddr, Protocol};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Everything a meshcast process can be configured with.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub node: NodeConfig,
    pub store: StoreConfig,
    pub gateway: GatewayConfig,
    pub metrics: MetricsConfig,
    pub log: LogConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// Holds the node identity key and the on-disk cache.
    pub data_dir: PathBuf,
    /// Multiaddrs to listen on (QUIC first, TCP as the fallback where UDP is blocked).
    pub listen: Vec<String>,
    /// Multiaddrs under which others can reach this node, when known.
    pub external: Vec<String>,
    /// Peers to join the mesh through: multiaddrs ending in /p2p/<peer id>.
    pub bootstrap: Vec<String>,
    /// Relays to reserve a slot on when this node cannot be dialled (behind
    /// NAT): multiaddrs ending in /p2p/<relay peer id>.
    pub relays: Vec<String>,
    /// Streams to follow from the start (`node` and `relay`), 64 hex digits
    /// each; a gateway also follows the streams browsers ask for. A VOD is
    /// seeded whole, or up to a byte budget written after a colon
    /// ("<id>:2GiB"; ":0" seeds nothing and serves on demand).
    pub follow: Vec<String>,
    /// Also write verified segments here (VOD, inspection).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_dir: Option<PathBuf>,
    /// Fetch origin fallbacks from loopback and private addresses too (an
    /// origin on your own network). Off, no stream can make the node request
    /// anything inside its network.
    pub allow_private_origins: bool,
    /// Upload cap, all segment uploads together, e.g. "8Mbit/s" or "1MB/s":
    /// the node keeps to it and declines uploads it could not finish in
    /// time behind it. Unset: the uplink is the limit.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_rate",
        deserialize_with = "de_rate"
    )]
    pub max_upload: Option<u64>,
    /// Forward each verified piece of a segment while the rest still
    /// arrives (cut-through), so a hop costs a round trip rather than a
    /// whole segment. Off: store-and-forward, for comparing the two.
    pub cut_through: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Memory for segments, e.g. "512MiB".
    #[serde(serialize_with = "ser_bytes", deserialize_with = "de_bytes")]
    pub max_bytes: u64,
    /// Seconds of each live stream kept behind the live edge, e.g. "30s".
    #[serde(serialize_with = "ser_duration", deserialize_with = "de_duration")]
    pub live_window: Duration,
    /// Disk for the segment cache (`node.cache_dir`), e.g. "10GiB"; beyond
    /// it the least recently requested segments are deleted.
    #[serde(serialize_with = "ser_bytes", deserialize_with = "de_bytes")]
    pub disk_max_bytes: u64,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("meshcast-data"),
            listen: vec![
                "/ip4/0.0.0.0/udp/4001/quic-v1".into(),
                "/ip4/0.0.0.0/tcp/4001".into(),
            ],
            external: Vec::new(),
            bootstrap: Vec::new(),
            relays: Vec::new(),
            follow: Vec::new(),
            cache_dir: None,
            allow_private_origins: false,
            max_upload: None,
            cut_through: true,
        }
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            max_bytes: 512 * MIB,
            live_window: Duration::from_secs(30),
            disk_max_bytes: 10 * 1024 * MIB,
        }
    }
}

/// The browser gateway: WebTransport for browsers, HTTP for the well-known
/// document. `meshcast relay` always runs one; `meshcast node` only when
/// `browser_listen` is set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayConfig {
    /// UDP address of the WebTransport endpoint; unset, a relay uses
    /// [`RELAY_BROWSER_LISTEN`] and a node runs no gateway.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub browser_listen: Option<SocketAddr>,
    /// TCP address of the HTTP server for /.well-known/meshcast.
    pub web_listen: SocketAddr,
    /// Host name or IP browsers use to reach this gateway (default: the IP of
    /// `browser_listen`, 127.0.0.1 if that is unspecified).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_host: Option<String>,
    /// Operator certificate chain (PEM), re-read when it changes; unset: self-signed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    /// Private key of `tls_cert` (PEM).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    /// Lifetime of self-signed certificates, at most 14 days.
    #[serde(serialize_with = "ser_duration", deserialize_with = "de_duration")]
    pub cert_lifetime: Duration,
    /// Browser sessions served at once.
    pub max_sessions: usize,
    /// Browser sessions from one IP address at once.
    pub max_sessions_per_ip: usize,
    /// Browser sessions from one IPv6 /64 at once.
    pub max_sessions_per_prefix: usize,
    /// New browser connections per second from one IP address on average
    /// (an IPv6 /64: twice as many).
    pub connections_per_second_per_ip: u32,
    /// New browser connections from one IP address at once before
    /// `connections_per_second_per_ip` applies (an IPv6 /64: twice as many).
    pub connection_burst_per_ip: u32,
    /// Other gateways to list in Welcome, each "URL=CERT_HASH_HEX".
    pub peer_gateways: Vec<String>,
    /// Streams (64 hex digits each) served to browsers besides those in
    /// `node.follow`: followed on a viewer's first Hello, unfollowed after
    /// 10 minutes without viewers.
    pub serve_streams: Vec<String>,
    /// Publisher keys (64 hex digits each) whose streams are served like
    /// `serve_streams`.
    pub serve_publishers: Vec<String>,
    /// Serve any stream a browser names. Only for a closed mesh: anyone could
    /// make the gateway follow streams of their choosing.
    pub serve_any: bool,
    /// Put viewers' IP addresses in logs (off: a session id only).
    pub log_addresses: bool,
}

/// Where `meshcast relay` serves browsers when `gateway.browser_listen` is unset.
pub const RELAY_BROWSER_LISTEN: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 4433));

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            browser_listen: None,
            web_listen: SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 8443)),
            public_host: None,
            tls_cert: None,
            tls_key: None,
            cert_lifetime: meshcast_relay::certs::MAX_SELF_SIGNED,
            max_sessions: 5000,
            max_sessions_per_ip: 32,
            max_sessions_per_prefix: 64,
            connections_per_second_per_ip: 10,
            connection_burst_per_ip: 40,
            peer_gateways: Vec::new(),
            serve_streams: Vec::new(),
            serve_publishers: Vec::new(),
            serve_any: false,
            log_addresses: false,
        }
    }
}

/// Prometheus metrics (`node`, `relay`, `publish`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Serve `/metrics` over HTTP on this TCP address, e.g. "127.0.0.1:9090"
    /// (port 0: any free port, printed); unset: no metrics.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
}

/// Logs on standard error (the filter is `RUST_LOG`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// For people: one line per event, spans and fields inline.
    #[default]
    Text,
    /// For log pipelines: one JSON object per line, with the spans' fields.
    Json,
}

const MIB: u64 = 1024 * 1024;

/// Flags that override the file and the environment. Shared by every
/// subcommand that runs a node.
#[derive(Debug, Default, Args)]
pub struct Overrides {
    /// Data directory (node identity, cache) [config: node.data_dir]
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Listen multiaddr, repeatable [config: node.listen]
    #[arg(long = "listen", value_name = "MULTIADDR")]
    listen: Vec<String>,
    /// Bootstrap peer multiaddr with /p2p/<peer id>, repeatable [config: node.bootstrap]
    #[arg(long = "bootstrap", value_name = "MULTIADDR")]
    bootstrap: Vec<String>,
    /// Relay to reserve a slot on (behind NAT), repeatable [config: node.relays]
    #[arg(long = "relay", value_name = "MULTIADDR")]
    relays: Vec<String>,
    /// Address under which others reach this node, repeatable [config: node.external]
    #[arg(long = "external", value_name = "MULTIADDR")]
    external: Vec<String>,
    /// Also write verified segments to this directory [config: node.cache_dir]
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// Segment store size, e.g. 1GiB [config: store.max_bytes]
    #[arg(long, value_name = "SIZE")]
    store_max_bytes: Option<String>,
    /// Live window, e.g. 30s [config: store.live_window]
    #[arg(long, value_name = "DURATION")]
    live_window: Option<String>,
    /// Disk cache size, e.g. 10GiB; the least recently requested segments
    /// go first [config: store.disk_max_bytes]
    #[arg(long, value_name = "SIZE")]
    disk_max_bytes: Option<String>,
    /// Serve Prometheus metrics at http://ADDR/metrics (port 0: any free port)
    /// [config: metrics.listen]
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<String>,
    /// Log format on standard error [config: log.format]
    #[arg(long, value_name = "FORMAT")]
    log_format: Option<LogFormat>,
    /// Fetch origin fallbacks from loopback and private addresses too, for
    /// an origin on your own network [config: node.allow_private_origins]
    #[arg(long)]
    allow_private_origins: bool,
    /// Upload cap for all segment uploads together, e.g. 8Mbit/s or 1MB/s
    /// [config: node.max_upload]
    #[arg(long, value_name = "RATE")]
    max_upload: Option<String>,
    /// Pass a segment on only once it is held whole (turn off cut-through,
    /// to compare) [config: node.cut_through = false]
    #[arg(long)]
    store_and_forward: bool,
}

/// Flag names by configuration key, for messages that say where a value came from.
const FLAGS: &[(&str, &str)] = &[
    ("node.data_dir", "--data-dir"),
    ("node.listen", "--listen"),
    ("node.bootstrap", "--bootstrap"),
    ("node.cache_dir", "--cache-dir"),
    ("node.relays", "--relay"),
    ("node.external", "--external"),
    ("node.allow_private_origins", "--allow-private-origins"),
    ("node.max_upload", "--max-upload"),
    ("node.cut_through", "--store-and-forward"),
    ("store.max_bytes", "--store-max-bytes"),
    ("store.live_window", "--live-window"),
    ("store.disk_max_bytes", "--disk-max-bytes"),
    ("metrics.listen", "--metrics-listen"),
    ("log.format", "--log-format"),
    ("node.follow", "--follow"),
    ("gateway.browser_listen", "--browser-listen"),
    ("gateway.web_listen", "--web-listen"),
    ("gateway.public_host", "--public-host"),
    ("gateway.tls_cert", "--tls-cert"),
    ("gateway.tls_key", "--tls-key"),
    ("gateway.cert_lifetime", "--cert-lifetime"),
    ("gateway.max_sessions", "--max-sessions"),
    ("gateway.max_sessions_per_ip", "--max-sessions-per-ip"),
    ("gateway.peer_gateways", "--peer-gateway"),
    ("gateway.serve_streams", "--serve-stream"),
    ("gateway.serve_publishers", "--serve-publisher"),
    ("gateway.serve_any", "--serve-any"),
    ("gateway.log_addresses", "--log-addresses"),
];

const FLAGS_LAYER: &str = "command-line flags";

impl Provider for Overrides {
    fn metadata(&self) -> Metadata {
        Metadata::named(FLAGS_LAYER)
    }

    /// The flags that were given, keyed like the TOML file.
    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let mut node = Dict::new();
        let mut store = Dict::new();
        if let Some(dir) = &self.data_dir {
            node.insert("data_dir".into(), dir.to_string_lossy().into_owned().into());
        }
        if !self.listen.is_empty() {
            node.insert("listen".into(), self.listen.clone().into());
        }
        if !self.bootstrap.is_empty() {
            node.insert("bootstrap".into(), self.bootstrap.clone().into());
        }
        if !self.relays.is_empty() {
            node.insert("relays".into(), self.relays.clone().into());
        }
        if !self.external.is_empty() {
            node.insert("external".into(), self.external.clone().into());
        }
        if let Some(rate) = &self.max_upload {
            node.insert("max_upload".into(), rate.clone().into());
        }
        if self.allow_private_origins {
            node.insert("allow_private_origins".into(), true.into());
        }
        if self.store_and_forward {
            node.insert("cut_through".into(), false.into());
        }
        if let Some(dir) = &self.cache_dir {
            node.insert(
                "cache_dir".into(),
                dir.to_string_lossy().into_owned().into(),
            );
        }
        if let Some(size) = &self.store_max_bytes {
            store.insert("max_bytes".into(), size.clone().into());
        }
        if let Some(window) = &self.live_window {
            store.insert("live_window".into(), window.clone().into());
        }
        if let Some(size) = &self.disk_max_bytes {
            store.insert("disk_max_bytes".into(), size.clone().into());
        }
        let mut metrics = Dict::new();
        if let Some(addr) = &self.metrics_listen {
            metrics.insert("listen".into(), addr.clone().into());
        }
        let mut log = Dict::new();
        if let Some(format) = self.log_format {
            let name = match format {
                LogFormat::Text => "text",
                LogFormat::Json => "json",
            };
            log.insert("format".into(), name.into());
        }
        let mut tree = Dict::new();
        for (section, values) in [
            ("node", node),
            ("store", store),
            ("metrics", metrics),
            ("log", log),
        ] {
            if !values.is_empty() {
                tree.insert(section.into(), values.into());
            }
        }
        Ok(Profile::Default.collect(tree))
    }
}

/// Flags of the commands that serve (`node`, `relay`, and `config show/check`
/// to preview them): streams to follow and the browser gateway. Like
/// [`Overrides`], they beat the file and the environment.
#[derive(Debug, Default, Args)]
pub struct ServeOverrides {
    /// Stream id to follow from the start (found through the DHT), repeatable.
    /// A VOD is seeded whole, or up to a budget given after a colon
    /// (ID:2GiB; ID:0 seeds nothing and fetches what viewers ask for). A
    /// gateway also follows the streams browsers ask for, a VOD on demand
    /// [config: node.follow]
    #[arg(long = "follow", value_name = "STREAM_ID[:SIZE]")]
    follow: Vec<String>,
    /// Serve browsers over WebTransport on this UDP address; a relay's default
    /// is 0.0.0.0:4433, a node serves browsers only when it is set
    /// [config: gateway.browser_listen]
    #[arg(long, value_name = "ADDR")]
    browser_listen: Option<SocketAddr>,
    /// HTTP address for /.well-known/meshcast (TCP), default 0.0.0.0:8443
    /// [config: gateway.web_listen]
    #[arg(long, value_name = "ADDR")]
    web_listen: Option<SocketAddr>,
    /// Host name or IP browsers use to reach this gateway; default: the IP of
    /// --browser-listen, 127.0.0.1 if that is 0.0.0.0 [config: gateway.public_host]
    #[arg(long, value_name = "HOST")]
    public_host: Option<String>,
    /// Operator certificate chain (PEM), re-read when it changes; default:
    /// self-signed, rotated [config: gateway.tls_cert]
    #[arg(long, value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// Private key of --tls-cert (PEM) [config: gateway.tls_key]
    #[arg(long, value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// Lifetime of self-signed certificates, at most 14 days (the default);
    /// renewed a day before the end [config: gateway.cert_lifetime]
    #[arg(long, value_name = "DURATION")]
    cert_lifetime: Option<String>,
    /// Browser sessions served at once, default 5000 [config: gateway.max_sessions]
    #[arg(long, value_name = "N")]
    max_sessions: Option<usize>,
    /// Browser sessions from one IP address at once, default 32
    /// [config: gateway.max_sessions_per_ip]
    #[arg(long, value_name = "N")]
    max_sessions_per_ip: Option<usize>,
    /// Another gateway to list in Welcome, as URL=CERT_HASH_HEX, repeatable
    /// [config: gateway.peer_gateways]
    #[arg(long = "peer-gateway", value_name = "URL=HASH")]
    peer_gateways: Vec<String>,
    /// Serve this stream to browsers besides the followed ones: followed on a
    /// viewer's first Hello, unfollowed after 10 minutes without viewers;
    /// repeatable. Browsers asking for any other stream get UNKNOWN_STREAM
    /// [config: gateway.serve_streams]
    #[arg(long = "serve-stream", value_name = "STREAM_ID")]
    serve_streams: Vec<String>,
    /// Serve every stream of this publisher (public key, 64 hex digits) like
    /// --serve-stream; repeatable [config: gateway.serve_publishers]
    #[arg(long = "serve-publisher", value_name = "KEY")]
    serve_publishers: Vec<String>,
    /// Serve any stream a browser names (a closed mesh only: anyone could make
    /// the gateway follow streams of their choosing) [config: gateway.serve_any]
    #[arg(long)]
    serve_any: bool,
    /// Put viewers' IP addresses in logs; by default a session id only
    /// [config: gateway.log_addresses]
    #[arg(long)]
    log_addresses: bool,
}

impl Provider for ServeOverrides {
    fn metadata(&self) -> Metadata {
        Metadata::named(FLAGS_LAYER)
    }

    /// The flags that were given, keyed like the TOML file.
    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let mut node = Dict::new();
        if !self.follow.is_empty() {
            node.insert("follow".into(), self.follow.clone().into());
        }
        let text = |v: &dyn ToString| figment::value::Value::from(v.to_string());
        let path = |p: &PathBuf| text(&p.to_string_lossy());
        let given = [
            ("browser_listen", self.browser_listen.map(|a| text(&a))),
            ("web_listen", self.web_listen.map(|a| text(&a))),
            ("public_host", self.public_host.as_ref().map(|h| text(h))),
            ("tls_cert", self.tls_cert.as_ref().map(path)),
            ("tls_key", self.tls_key.as_ref().map(path)),
            (
                "cert_lifetime",
                self.cert_lifetime.as_ref().map(|d| text(d)),
            ),
            ("max_sessions", self.max_sessions.map(Into::into)),
            (
                "max_sessions_per_ip",
                self.max_sessions_per_ip.map(Into::into),
            ),
            (
                "peer_gateways",
                (!self.peer_gateways.is_empty()).then(|| self.peer_gateways.clone().into()),
            ),
            (
                "serve_streams",
                (!self.serve_streams.is_empty()).then(|| self.serve_streams.clone().into()),
            ),
            (
                "serve_publishers",
                (!self.serve_publishers.is_empty()).then(|| self.serve_publishers.clone().into()),
            ),
            ("serve_any", self.serve_any.then(|| true.into())),
            ("log_addresses", self.log_addresses.then(|| true.into())),
        ];
        let gateway: Dict = given
            .into_iter()
            .filter_map(|(key, value)| Some((key.to_string(), value?)))
            .collect();
        let mut tree = Dict::new();
        for (section, values) in [("node", node), ("gateway", gateway)] {
            if !values.is_empty() {
                tree.insert(section.into(), values.into());
            }
        }
        Ok(Profile::Default.collect(tree))
    }
}

/// Where the value of `key` came from, in the words an operator would use.
fn source_of(md: &Metadata, key: &str) -> String {
    // `node.listen.0`, an entry of a list, came from where the list came from.
    let key = key
        .split('.')
        .filter(|part| part.parse::<usize>().is_err())
        .collect::<Vec<_>>()
        .join(".");
    let key = key.as_str();
    if let Some(Source::File(path)) = &md.source {
        return format!("in {}", path.display());
    }
    if md.name == FLAGS_LAYER {
        let flag = FLAGS
            .iter()
            .find(|(k, _)| *k == key)
            .map_or("a flag", |(_, f)| f);
        return format!("from {flag}");
    }
    if md.name.contains("environment") {
        return format!(
            "from MESHCAST_{}",
            key.replace('.', "__").to_ascii_uppercase()
        );
    }
    "from the defaults".into()
}

/// A configuration value that is well-formed but not acceptable.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: `{key}` {why}")]
pub struct InvalidValue {
    pub key: &'static str,
    pub why: String,
}

fn invalid(key: &'static str, why: impl Into<String>) -> InvalidValue {
    InvalidValue {
        key,
        why: why.into(),
    }
}

/// Merges the layers and validates the result.
pub fn load(
    file: Option<&Path>,
    overrides: &Overrides,
    serve: &ServeOverrides,
) -> anyhow::Result<Config> {
    let mut figment = Figment::from(Serialized::defaults(Config::default()));
    if let Some(file) = file {
        if !file.is_file() {
            anyhow::bail!(
                "configuration file {} does not exist or is not a file",
                file.display()
            );
        }
        figment = figment.merge(Toml::file_exact(file));
    }
    let figment = figment
        .merge(
            Env::prefixed("MESHCAST_")
                .ignore(&["config"])
                .map(|key| key.as_str().to_ascii_lowercase().replace("__", ".").into()),
        )
        .merge(overrides)
        .merge(serve);
    let config: Config = figment
        .extract()
        .map_err(|e| anyhow::anyhow!(describe(e)))?;
    config.validate().map_err(|e| {
        let source = figment
            .find_metadata(e.key)
            .map_or_else(|| "from the defaults".into(), |md| source_of(md, e.key));
        anyhow::anyhow!("{e} ({source})")
    })?;
    Ok(config)
}

/// One line per figment error, each naming the key and where its value came from.
fn describe(err: figment::Error) -> String {
    let lines: Vec<String> = err
        .into_iter()
        .map(|e| {
            let key = e.path.join(".");
            let source = e
                .metadata
                .as_ref()
                .map_or_else(String::new, |md| source_of(md, &key));
            if key.is_empty() {
                format!("invalid configuration {source}: {}", e.kind)
            } else {
                format!("invalid configuration: `{key}` {source}: {}", e.kind)
            }
        })
        .collect();
    lines.join("\n")
}

impl Config {
    pub fn validate(&self) -> Result<(), InvalidValue> {
        if self.node.data_dir.as_os_str().is_empty() {
            return Err(invalid("node.data_dir", "must not be empty"));
        }
        if self.node.listen.is_empty() {
            return Err(invalid(
                "node.listen",
                "needs at least one address to listen on",
            ));
        }
        for addr in &self.node.listen {
            parse_addr("node.listen", addr)?;
        }
        for addr in &self.node.external {
            parse_addr("node.external", addr)?;
        }
        for addr in &self.node.relays {
            let parsed = parse_addr("node.relays", addr)?;
            if !matches!(parsed.iter().last(), Some(Protocol::P2p(_))) {
                return Err(invalid(
                    "node.relays",
                    format!("address {addr:?} must end with /p2p/<relay peer id>"),
                ));
            }
        }
        for addr in &self.node.bootstrap {
            let parsed = parse_addr("node.bootstrap", addr)?;
            if !matches!(parsed.iter().last(), Some(Protocol::P2p(_))) {
                return Err(invalid(
                    "node.bootstrap",
                    format!(
                        "address {addr:?} must end with /p2p/<peer id>, so the node can authenticate its peer"
                    ),
                ));
            }
        }
        if let Some(rate) = self.node.max_upload {
            let slowest = meshcast_node::scheduler::Config::default().min_rate;
            if rate < slowest {
                return Err(invalid(
                    "node.max_upload",
                    format!(
                        "{} is below the slowest transfer worth finishing ({}): peers would give up on every upload; leave it unset or allow more",
                        format_rate(rate),
                        format_rate(slowest)
                    ),
                ));
            }
        }
        let min_store = Limits::DEFAULT_MAX_SEGMENT;
        if self.store.max_bytes < min_store {
            return Err(invalid(
                "store.max_bytes",
                format!(
                    "is {} bytes; it must hold at least one segment of the maximum size ({} MiB)",
                    self.store.max_bytes,
                    min_store / MIB
                ),
            ));
        }
        let window = self.store.live_window;
        if window < Duration::from_secs(2) || window > Duration::from_secs(3600) {
            return Err(invalid(
                "store.live_window",
                format!(
                    "is {}; it must be between 2s and 1h",
                    humantime::format_duration(window)
                ),
            ));
        }
        if self.store.disk_max_bytes < MIB {
            return Err(invalid(
                "store.disk_max_bytes",
                format!(
                    "is {} bytes; the disk cache needs at least 1 MiB",
                    self.store.disk_max_bytes
                ),
            ));
        }
        self.follow()?;
        self.gateway.validate()
    }

    /// The streams in `node.follow`, with how much of each to seed if it is a VOD.
    pub fn follow(
        &self,
    ) -> Result<Vec<(meshcast_proto::StreamId, meshcast_node::Seed)>, InvalidValue> {
        self.node
            .follow
            .iter()
            .map(|entry| {
                let (id, budget) = match entry.split_once(':') {
                    Some((id, budget)) => (id, Some(budget)),
                    None => (entry.as_str(), None),
                };
                let id = id.parse().map_err(|_| {
                    invalid(
                        "node.follow",
                        format!("{entry:?}: {id:?} is not a stream id (64 hex digits)"),
                    )
                })?;
                let seed = match budget {
                    None => meshcast_node::Seed::All,
                    Some(budget) => {
                        meshcast_node::Seed::Budget(parse_bytes(budget).map_err(|why| {
                            invalid("node.follow", format!("{entry:?}: bad seed budget: {why}"))
                        })?)
                    }
                };
                Ok((id, seed))
            })
            .collect()
    }

    pub fn to_toml(&self) -> anyhow::Result<String> {
        toml::to_string_pretty(self).context("printing the configuration")
    }
}

impl GatewayConfig {
    pub fn validate(&self) -> Result<(), InvalidValue> {
        if let Some(host) = &self.public_host {
            let plain = host.parse::<std::net::IpAddr>().is_ok()
                || (!host.contains(':') && url::Host::parse(host).is_ok());
            if !plain {
                return Err(invalid(
                    "gateway.public_host",
                    format!(
                        "{host:?} must be a bare host name or IP address (no scheme, port or path)"
                    ),
                ));
            }
        }
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), None) => {
                return Err(invalid(
                    "gateway.tls_cert",
                    "is set but gateway.tls_key is not: give both (PEM files) or neither (self-signed)",
                ));
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "gateway.tls_key",
                    "is set but gateway.tls_cert is not: give both (PEM files) or neither (self-signed)",
                ));
            }
            _ => {}
        }
        let lifetime = self.cert_lifetime;
        if lifetime < Duration::from_secs(2) || lifetime > meshcast_relay::certs::MAX_SELF_SIGNED {
            return Err(invalid(
                "gateway.cert_lifetime",
                format!(
                    "is {}; it must be between 2s and 14 days (browsers refuse certificate hashes of longer-lived certificates)",
                    humantime::format_duration(lifetime)
                ),
            ));
        }
        if self.max_sessions == 0 {
            return Err(invalid("gateway.max_sessions", "must be at least 1"));
        }
        if self.max_sessions_per_ip == 0 {
            return Err(invalid("gateway.max_sessions_per_ip", "must be at least 1"));
        }
        if self.max_sessions_per_prefix == 0 {
            return Err(invalid(
                "gateway.max_sessions_per_prefix",
                "must be at least 1",
            ));
        }
        if self.connections_per_second_per_ip == 0 {
            return Err(invalid(
                "gateway.connections_per_second_per_ip",
                "must be at least 1",
            ));
        }
        if self.connection_burst_per_ip == 0 {
            return Err(invalid(
                "gateway.connection_burst_per_ip",
                "must be at least 1",
            ));
        }
        self.serve()?;
        for entry in &self.peer_gateways {
            parse_peer_gateway(entry).map_err(|why| invalid("gateway.peer_gateways", why))?;
        }
        Ok(())
    }
}

impl GatewayConfig {
    /// `serve_streams`, `serve_publishers` and `serve_any`, parsed.
    pub fn serve(&self) -> Result<meshcast_relay::Serve, InvalidValue> {
        let streams = self
            .serve_streams
            .iter()
            .map(|s| {
                s.parse().map_err(|e| {
                    invalid(
                        "gateway.serve_streams",
                        format!("{s:?} is not a stream id: {e}"),
                    )
                })
            })
            .collect::<Result<_, _>>()?;
        let publishers = self
            .serve_publishers
            .iter()
            .map(|s| {
                s.parse().map_err(|e| {
                    invalid(
                        "gateway.serve_publishers",
                        format!("{s:?} is not a publisher key: {e}"),
                    )
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(meshcast_relay::Serve {
            streams,
            publishers,
            any: self.serve_any,
        })
    }
}

/// Splits a `gateway.peer_gateways` entry, "https://host:port/=<64 hex
/// digits>", into the URL and the lower-case certificate hash.
pub fn parse_peer_gateway(entry: &str) -> Result<(String, String), String> {
    const EXAMPLE: &str = "e.g. https://gw.example.org:4433/=<64 hex digits>";
    let (url, hash) = entry
        .rsplit_once('=')
        .ok_or_else(|| format!("entry {entry:?} is not URL=CERT_HASH_HEX ({EXAMPLE})"))?;
    match url::Url::parse(url) {
        Ok(parsed) if parsed.scheme() == "https" && parsed.host().is_some() => {}
        _ => {
            return Err(format!(
                "entry {entry:?}: {url:?} is not an https:// URL ({EXAMPLE})"
            ));
        }
    }
    if hash.len() != 64 || !hash.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!(
            "entry {entry:?}: the certificate hash must be 64 hex digits, a SHA-256 ({EXAMPLE})"
        ));
    }
    Ok((url.to_string(), hash.to_ascii_lowercase()))
}

fn parse_addr(key: &'static str, addr: &str) -> Result<Multiaddr, InvalidValue> {
    addr.parse()
        .map_err(|e| invalid(key, format!("address {addr:?} is not a multiaddr: {e}")))
}

/// Parses a duration flag: "250ms", "2h", "7d".
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("{text:?} is not a duration: {e}"))
}

/// Parses "1048576", "512MiB", "1.5 GiB", "64kB": binary (KiB, MiB, GiB) and
/// decimal (kB, MB, GB) units.
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size (examples: 1048576, 512MiB, 2GB)"))?;
    let scale = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        other => {
            return Err(format!(
                "unknown size unit {other:?} (use B, KiB, MiB, GiB, kB, MB or GB)"
            ));
        }
    };
    let bytes = number * scale;
    if !bytes.is_finite() || bytes > u64::MAX as f64 {
        return Err(format!("{text:?} is too large"));
    }
    Ok(bytes.round() as u64)
}

/// Parses a rate: bits ("8Mbit/s", "500kbit/s") or bytes ("1MB/s",
/// "512KiB/s") per second, into bytes per second. A unit is required: a bare
/// number would leave bits or bytes to a guess.
pub fn parse_rate(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let examples = "examples: 8Mbit/s, 500kbit/s, 1MB/s, 512KiB/s";
    let number: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a rate ({examples})"))?;
    let unit = unit.trim();
    let bits = |scale: f64| number * scale / 8.0;
    let bytes_per_second = match unit {
        "bit/s" => bits(1.0),
        "kbit/s" => bits(1e3),
        "Mbit/s" => bits(1e6),
        "Gbit/s" => bits(1e9),
        "B/s" => number,
        "kB/s" => number * 1e3,
        "MB/s" => number * 1e6,
        "GB/s" => number * 1e9,
        "KiB/s" => number * 1024.0,
        "MiB/s" => number * 1024.0 * 1024.0,
        "GiB/s" => number * 1024.0 * 1024.0 * 1024.0,
        "" => {
            return Err(format!(
                "{text:?} needs a unit, bits or bytes per second ({examples})"
            ));
        }
        other => {
            return Err(format!(
                "unknown rate unit {other:?} (bit/s, kbit/s, Mbit/s, Gbit/s, B/s, kB/s, MB/s, GB/s, KiB/s, MiB/s, GiB/s)"
            ));
        }
    };
    if !bytes_per_second.is_finite() || bytes_per_second >= u64::MAX as f64 {
        return Err(format!("{text:?} is too large"));
    }
    if bytes_per_second < 1.0 {
        return Err(format!("{text:?} is less than a byte per second"));
    }
    Ok(bytes_per_second.round() as u64)
}

/// A rate for people and for the TOML file: in bit/s units where exact.
pub fn format_rate(bytes_per_second: u64) -> String {
    let bits = u128::from(bytes_per_second) * 8;
    match bits {
        b if b % 1_000_000 == 0 => format!("{}Mbit/s", b / 1_000_000),
        b if b % 1_000 == 0 => format!("{}kbit/s", b / 1_000),
        _ => format!("{bytes_per_second}B/s"),
    }
}

fn ser_rate<S: Serializer>(rate: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
    match rate {
        Some(rate) => s.serialize_str(&format_rate(*rate)),
        None => s.serialize_none(),
    }
}

fn de_rate<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let text = String::deserialize(d)?;
    parse_rate(&text)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

fn ser_bytes<S: Serializer>(bytes: &u64, s: S) -> Result<S::Ok, S::Error> {
    if bytes.is_multiple_of(MIB) {
        s.serialize_str(&format!("{}MiB", bytes / MIB))
    } else {
        s.serialize_u64(*bytes)
    }
}

fn de_bytes<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        Number(u64),
        Text(String),
    }
    match Size::deserialize(d)? {
        Size::Number(n) => Ok(n),
        Size::Text(t) => parse_bytes(&t).map_err(serde::de::Error::custom),
    }
}

fn ser_duration<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&humantime::format_duration(*d).to_string())
}

fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(&text).map_err(|e| {
        serde::de::Error::custom(format!(
            "{text:?} is not a duration ({e}; examples: 30s, 2m)"
        ))
    })
}

impl Config {
    /// The node library's configuration. Call after [`Config::validate`].
    pub fn node_config(&self) -> anyhow::Result<meshcast_node::Config> {
        let addrs = |list: &[String]| -> anyhow::Result<Vec<libp2p::Multiaddr>> {
            list.iter()
                .map(|a| a.parse().with_context(|| format!("address {a:?}")))
                .collect()
        };
        Ok(meshcast_node::Config {
            listen: addrs(&self.node.listen)?,
            external: addrs(&self.node.external)?,
            bootstrap: addrs(&self.node.bootstrap)?,
            relays: addrs(&self.node.relays)?,
            store_max_bytes: self.store.max_bytes,
            live_window: self.store.live_window,
            cache_dir: self.node.cache_dir.clone(),
            cache_max_bytes: self.store.disk_max_bytes,
            allow_private_origins: self.node.allow_private_origins,
            max_upload: self.node.max_upload,
            scheduler: meshcast_node::mesh::scheduler::Config {
                cut_through: self.node.cut_through,
                ..Default::default()
            },
            ..meshcast_node::Config::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_in_both_unit_systems() {
        assert_eq!(parse_bytes("1048576"), Ok(1 << 20));
        assert_eq!(parse_bytes("512MiB"), Ok(512 << 20));
        assert_eq!(parse_bytes("1.5 GiB"), Ok(3 << 29));
        assert_eq!(parse_bytes("64kB"), Ok(64_000));
        assert!(
            parse_bytes("12 parsecs")
                .unwrap_err()
                .contains("unknown size unit")
        );
        assert!(parse_bytes("lots").unwrap_err().contains("not a size"));
    }

    #[test]
    fn rates_parse_in_bits_and_bytes_and_print_back() {
        assert_eq!(parse_rate("8Mbit/s"), Ok(1_000_000));
        assert_eq!(parse_rate("500 kbit/s"), Ok(62_500));
        assert_eq!(parse_rate("1MB/s"), Ok(1_000_000));
        assert_eq!(parse_rate("2MiB/s"), Ok(2 << 20));
        assert!(parse_rate("8").unwrap_err().contains("needs a unit"));
        assert!(
            parse_rate("8 Mbps")
                .unwrap_err()
                .contains("unknown rate unit")
        );
        assert!(parse_rate("fast").unwrap_err().contains("not a rate"));
        assert!(
            parse_rate("0.1bit/s")
                .unwrap_err()
                .contains("less than a byte")
        );
        for rate in ["8Mbit/s", "500kbit/s", "1000001B/s"] {
            assert_eq!(format_rate(parse_rate(rate).unwrap()), rate);
        }
    }

    #[test]
    fn an_upload_cap_below_the_slowest_useful_transfer_is_refused() {
        let mut config = Config::default();
        config.node.max_upload = Some(parse_rate("256kbit/s").unwrap());
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("node.max_upload"), "{err}");
        config.node.max_upload = Some(parse_rate("8Mbit/s").unwrap());
        config.validate().unwrap();
        let text = config.to_toml().unwrap();
        assert!(text.contains("max_upload = \"8Mbit/s\""), "{text}");
        let back: Config = Figment::from(Toml::string(&text)).extract().unwrap();
        assert_eq!(back, config);
    }

    #[test]
    fn store_and_forward_turns_cut_through_off_from_the_flag_or_the_file() {
        let on = load(None, &Overrides::default(), &ServeOverrides::default()).unwrap();
        assert!(on.node.cut_through);
        assert!(on.node_config().unwrap().scheduler.cut_through);
        let flag = Overrides {
            store_and_forward: true,
            ..Overrides::default()
        };
        let off = load(None, &flag, &ServeOverrides::default()).unwrap();
        assert!(!off.node_config().unwrap().scheduler.cut_through);
        let text = off.to_toml().unwrap();
        assert!(text.contains("cut_through = false"), "{text}");
        let back: Config = Figment::from(Toml::string(&text)).extract().unwrap();
        assert_eq!(back, off);
    }

    #[test]
    fn defaults_are_valid_and_print_as_toml_that_reads_back() {
        let config = Config::default();
        config.validate().unwrap();
        let text = config.to_toml().unwrap();
        let back: Config = Figment::from(Toml::string(&text)).extract().unwrap();
        assert_eq!(back, config);
    }

    #[test]
    fn a_full_gateway_section_prints_as_toml_that_reads_back() {
        let hash = "ab".repeat(32);
        let mut config = Config::default();
        config.node.follow = vec!["cd".repeat(32)];
        config.gateway = GatewayConfig {
            browser_listen: Some("[::]:4433".parse().unwrap()),
            web_listen: "127.0.0.1:8080".parse().unwrap(),
            public_host: Some("relay.example.org".into()),
            tls_cert: Some("/etc/meshcast/tls/fullchain.pem".into()),
            tls_key: Some("/etc/meshcast/tls/privkey.pem".into()),
            cert_lifetime: Duration::from_secs(7 * 24 * 3600),
            max_sessions: 100,
            max_sessions_per_ip: 4,
            max_sessions_per_prefix: 8,
            connections_per_second_per_ip: 2,
            connection_burst_per_ip: 5,
            peer_gateways: vec![format!("https://gw.example.org:4433/={hash}")],
            serve_streams: vec!["ef".repeat(32)],
            serve_publishers: vec![
                meshcast_proto::PublisherKey::from_seed([3; 32])
                    .public()
                    .to_string(),
            ],
            serve_any: false,
            log_addresses: true,
        };
        config.validate().unwrap();
        let text = config.to_toml().unwrap();
        let back: Config = Figment::from(Toml::string(&text)).extract().unwrap();
        assert_eq!(back, config, "{text}");
    }

    #[test]
    fn served_streams_and_publishers_must_parse() {
        let mut config = Config::default();
        config.gateway.serve_streams = vec!["not-hex".into()];
        let err = config.validate().unwrap_err().to_string();
        assert!(
            err.contains("gateway.serve_streams") && err.contains("not-hex"),
            "{err}"
        );
        config.gateway.serve_streams.clear();
        config.gateway.serve_publishers = vec!["00".repeat(31)];
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("gateway.serve_publishers"), "{err}");
    }

    #[test]
    fn peer_gateways_need_an_https_url_and_a_sha256() {
        let hash = "AB".repeat(32);
        let url = "https://gw.example.org:4433/";
        assert_eq!(
            parse_peer_gateway(&format!("{url}={hash}")),
            Ok((url.to_string(), "ab".repeat(32)))
        );
        for (entry, why) in [
            (url.to_string(), "is not URL=CERT_HASH_HEX"),
            (format!("http://gw.example.org/={hash}"), "https:// URL"),
            (format!("gw.example.org={hash}"), "https:// URL"),
            (format!("{url}={}", &hash[2..]), "64 hex digits"),
            (format!("{url}={}zz", &hash[2..]), "64 hex digits"),
        ] {
            let err = parse_peer_gateway(&entry).unwrap_err();
            assert!(err.contains(why), "{entry}: {err}");
        }
    }
}
