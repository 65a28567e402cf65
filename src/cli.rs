//! Command-line interface: subcommands and their arguments.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use meshcast_proto::StreamId;

use crate::config::{self, Overrides, ServeOverrides};
use crate::{demo, keygen, run};

const ABOUT: &str = "meshcast — peer-to-peer delivery of live and on-demand video.

Volunteers run edge nodes that form a QUIC mesh; publishers sign every segment
they inject; operators run relays that serve browsers over WebTransport.";

const AFTER_HELP: &str =
    "Configuration is layered, later layers winning: built-in defaults, the TOML
file given by --config (or MESHCAST_CONFIG), MESHCAST_* environment variables
(MESHCAST_<SECTION>__<KEY>, e.g. MESHCAST_STORE__MAX_BYTES=1GiB), then flags.
Run `meshcast config show` to see the result.";

#[derive(Debug, Parser)]
#[command(name = "meshcast", version, about = ABOUT, after_help = AFTER_HELP)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a publisher key (Ed25519, PKCS#8 PEM) and print its public key.
    ///
    /// The public key goes to standard output as 64 hex digits; the file is
    /// created with mode 0600. Keep the file secret and backed up: whoever holds
    /// it can publish on your streams, and a lost key means new stream ids.
    Keygen {
        /// Where to write the private key.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Replace an existing key file.
        #[arg(long)]
        force: bool,
    },
    /// Show or check the effective configuration.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Run an edge node: join the mesh, keep and pass on the streams it follows.
    ///
    /// With --browser-listen (or gateway.browser_listen) it also serves browsers
    /// over WebTransport (a gateway).
    Node {
        #[command(flatten)]
        layers: ConfigArgs,
        #[command(flatten)]
        serve: ServeOverrides,
        #[command(flatten)]
        faults: GatewayFaults,
    },
    /// Run a relay: a node that serves browsers over WebTransport and helps
    /// NATed nodes join (circuit relay v2, hole punching).
    ///
    /// Prints `gateway <url>`, `cert-hash <hex>` and `well-known <url>`.
    Relay {
        #[command(flatten)]
        layers: ConfigArgs,
        #[command(flatten)]
        serve: ServeOverrides,
        #[command(flatten)]
        faults: GatewayFaults,
    },
    /// Run a complete local deployment for a browser: an origin, two
    /// publishers (the stream, and the same media as a DASH VOD), three edge
    /// nodes, a relay and a web page, all on 127.0.0.1.
    ///
    /// The page plays with hls.js; `?player=shaka|videojs` switches player,
    /// `?format=dash` plays the DASH stream (Shaka, or `?player=dashjs`).
    /// Every role runs as a child process of this program; their logs go to
    /// files in a temporary folder (named on standard error) unless --verbose.
    /// When everything is up, standard output gets `pid <role> <pid>` for each
    /// child (origin, publisher, publisher-dash, node1, node2, node3, relay),
    /// `stream <id>`, `stream-dash <id>`, `relay <well-known url>` and, last,
    /// `demo <page url>`. Ctrl-C (or
    /// SIGTERM) stops every child and removes the temporary folder.
    Demo(crate::demo::DemoArgs),
    /// Issue a viewer token for a private stream, signed by the publisher key.
    Token {
        /// Publisher key file (from `meshcast keygen`).
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        /// The stream's name (its id is derived from the key and the name).
        #[arg(long, conflicts_with = "stream", required_unless_present = "stream")]
        name: Option<String>,
        /// The stream's id, when the name is not at hand.
        #[arg(long, value_name = "STREAM_ID")]
        stream: Option<StreamId>,
        /// How long the token is valid, e.g. 2h or 7d.
        #[arg(long, value_parser = config::parse_duration)]
        ttl: std::time::Duration,
        /// A viewer id, shown in gateway logs.
        #[arg(long, default_value = "")]
        viewer: String,
    },
    /// Publish a stream: ingest HLS from an origin, sign every segment, inject it.
    ///
    /// Prints `stream <id>`: the id viewers and nodes ask for.
    Publish {
        /// HLS origin: an http(s) URL of a master or media playlist, or a folder.
        #[arg(long, value_name = "URL|DIR")]
        origin: String,
        /// Publisher key file (from `meshcast keygen`).
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        /// Stream name; with the key it determines the stream id.
        #[arg(long)]
        name: String,
        /// Public URL of the entry playlist, for HTTP fallback when --origin is a folder.
        #[arg(long, value_name = "URL")]
        public_origin: Option<url::Url>,
        /// Announce segments but serve no bytes: nodes fetch first copies from the origin.
        #[arg(long)]
        announce_only: bool,
        /// Segment downloads in flight at once, per rendition.
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
        concurrency: u16,
        /// Private stream: viewers need a token from `meshcast token`.
        #[arg(long)]
        private: bool,
        #[command(flatten)]
        layers: ConfigArgs,
    },
    /// Serve an HLS folder over HTTP, as VOD (/vod/) and as a looping live stream (/live/).
    Origin {
        /// Folder with master.m3u8, its variants and segments.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        /// Also serve the live loop as low-latency HLS under /ll/, each
        /// segment cut into parts of about this long (e.g. 500ms; fragmented
        /// MP4 only).
        #[arg(long, value_name = "DURATION", value_parser = crate::config::parse_duration)]
        parts: Option<std::time::Duration>,
        /// Log format on standard error (what log.format is to the other roles).
        #[arg(
            long,
            value_name = "FORMAT",
            env = "MESHCAST_LOG__FORMAT",
            default_value = "text"
        )]
        log_format: config::LogFormat,
    },
}

/// Deliberate gateway misbehaviour, shared by `node` and `relay`; hidden, for
/// tests and `meshcast demo --tamper-every`. The gateway's real settings are
/// configuration ([`ServeOverrides`], `[gateway]`).
#[derive(Debug, clap::Args)]
pub struct GatewayFaults {
    /// Testing only: corrupt one byte in the body of every Nth delivery (0: never).
    #[arg(long, value_name = "N", default_value_t = 0, hide = true)]
    pub fault_corrupt_every: u32,
    /// Testing only: answer every Nth request with another segment (0: never).
    #[arg(long, value_name = "N", default_value_t = 0, hide = true)]
    pub fault_wrong_segment_every: u32,
}

impl From<GatewayFaults> for meshcast_relay::gateway::Faults {
    fn from(faults: GatewayFaults) -> Self {
        Self {
            corrupt_every: faults.fault_corrupt_every,
            wrong_segment_every: faults.fault_wrong_segment_every,
        }
    }
}

#[derive(Debug, Subcommand)]
enum ConfigAction {
    /// Print the merged configuration as TOML.
    Show {
        #[command(flatten)]
        layers: ConfigArgs,
        #[command(flatten)]
        serve: ServeOverrides,
    },
    /// Validate the merged configuration; exit non-zero with the bad key and why.
    Check {
        #[command(flatten)]
        layers: ConfigArgs,
        #[command(flatten)]
        serve: ServeOverrides,
    },
}

/// Where configuration comes from, and the flags that override it.
#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// TOML configuration file.
    #[arg(long, env = "MESHCAST_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(flatten)]
    overrides: Overrides,
}

impl ConfigArgs {
    pub fn load(&self) -> anyhow::Result<config::Config> {
        self.load_serving(&ServeOverrides::default())
    }

    /// With the flags of the commands that serve (`node`, `relay`).
    pub fn load_serving(&self, serve: &ServeOverrides) -> anyhow::Result<config::Config> {
        config::load(self.config.as_deref(), &self.overrides, serve)
    }
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Keygen { out, force } => {
            let public = keygen::write_new_key(&out, force)?;
            eprintln!(
                "wrote private key to {} (mode 0600); public key:",
                out.display()
            );
            println!("{public}");
        }
        Command::Node {
            layers,
            serve,
            faults,
        } => run::node(layers.load_serving(&serve)?, false, faults.into())?,
        Command::Relay {
            layers,
            serve,
            faults,
        } => run::node(layers.load_serving(&serve)?, true, faults.into())?,
        Command::Token {
            key,
            name,
            stream,
            ttl,
            viewer,
        } => println!(
            "{}",
            run::token(&key, name.as_deref(), stream, ttl, &viewer)?
        ),
        Command::Publish {
            origin,
            key,
            name,
            public_origin,
            announce_only,
            concurrency,
            private,
            layers,
        } => run::publish(
            layers.load()?,
            run::PublishArgs {
                origin,
                key,
                name,
                public_origin,
                announce_only,
                concurrency: usize::from(concurrency),
                private,
            },
        )?,
        Command::Origin {
            dir,
            listen,
            parts,
            log_format,
        } => run::origin(dir, listen, parts, log_format)?,
        Command::Demo(args) => demo::run(args)?,
        Command::Config { action } => match action {
            ConfigAction::Show { layers, serve } => {
                print!("{}", layers.load_serving(&serve)?.to_toml()?)
            }
            ConfigAction::Check { layers, serve } => {
                layers.load_serving(&serve)?;
                eprintln!("configuration is valid");
            }
        },
    }
    Ok(())
}
