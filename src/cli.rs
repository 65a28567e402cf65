//! Command-line interface: subcommands and their arguments.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::{self, Overrides};
use crate::keygen;

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
}

#[derive(Debug, Subcommand)]
enum ConfigAction {
    /// Print the merged configuration as TOML.
    Show(ConfigArgs),
    /// Validate the merged configuration; exit non-zero with the bad key and why.
    Check(ConfigArgs),
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
        config::load(self.config.as_deref(), &self.overrides)
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
        Command::Config { action } => match action {
            ConfigAction::Show(layers) => print!("{}", layers.load()?.to_toml()?),
            ConfigAction::Check(layers) => {
                layers.load()?;
                eprintln!("configuration is valid");
            }
        },
    }
    Ok(())
}
