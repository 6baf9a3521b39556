//! `stayler-api`: serves the HTTP API (default), mints a token for local use, checks a
//! configuration without starting, or asks the running API whether it is healthy.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use shared::auth::{Role, TokenKeys};
use shared::config::Config;
use shared::observability::probe;
use uuid::Uuid;

#[derive(Parser)]
#[command(name = "stayler-api", version, about = "Stayler Storage HTTP API")]
struct Cli {
    /// The YAML configuration file; `STAYLER_*` environment variables override it.
    #[arg(long, global = true, env = shared::config::CONFIG_FILE_ENV, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the API (the default).
    Serve,
    /// Print a bearer token signed with `auth.jwtSecret`, for local use and scripts.
    MintToken {
        /// `user`, `vendor`, `service` or `admin`.
        #[arg(long, value_parser = parse_role)]
        role: Role,
        /// The caller's id; a new random one when omitted.
        #[arg(long)]
        sub: Option<Uuid>,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 3600)]
        ttl: i64,
    },
    /// Load and validate the configuration (file and environment), print what it selects,
    /// and exit: 0 when the service would start with it, 1 with the offending key otherwise.
    CheckConfig,
    /// Ask the API on this machine whether it serves: exit 0 when GET /storage/health on
    /// server.port answers 200 (ok or degraded) within 2 s, else say why and exit 1.
    Health,
}

fn parse_role(value: &str) -> Result<Role, String> {
    serde_json::from_value(serde_json::Value::String(value.to_owned()))
        .map_err(|_| "one of user, vendor, service, admin".to_owned())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    shared::telemetry::init();
    let config = Config::load_from(cli.config.as_deref()).context("loading the configuration")?;
    shared::storage::apply_umask(config.storage.umask_bits().expect("validated with the configuration"));
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let api = api::start(config).await?;
            shared::shutdown::signalled().await.context("listening for SIGTERM")?;
            api.stop().await
        }
        Command::Health => {
            let server = &config.server;
            let listen: SocketAddr = tokio::net::lookup_host((server.host.as_str(), server.port))
                .await
                .ok()
                .and_then(|mut addresses| addresses.next())
                .with_context(|| format!("server.host `{}` has no address to ask", server.host))?;
            let status = probe::ask(probe::local(listen), "/storage/health").await.context("the API is not healthy")?;
            println!("healthy: {status}");
            Ok(())
        }
        Command::CheckConfig => {
            println!("{}", config.summary());
            Ok(())
        }
        Command::MintToken { role, sub, ttl } => {
            let keys = TokenKeys::from_config(&config.auth);
            println!("{}", keys.mint(sub.unwrap_or_else(Uuid::now_v7), role, chrono::Duration::seconds(ttl)));
            Ok(())
        }
    }
}
