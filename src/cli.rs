//! The `notion-gateway` command line (docs/behaviour.md §6).
//!
//! `notion-gateway` alone is `notion-gateway serve` with the embedded defaults: it listens on
//! `127.0.0.1:8787` and forwards to `https://api.notion.com`. Flags override every other source.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::Overrides;

#[derive(Debug, Parser)]
#[command(
    name = "notion-gateway",
    version,
    about = "A rate-limiting reverse proxy for the Notion API",
    after_help = ENV_HELP
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub global: GlobalArgs,
}

/// Shown after `--help`: the configuration layers besides the flags.
const ENV_HELP: &str = "\
Configuration: embedded defaults < --config FILE < NOTION_GATEWAY_* environment variables < flags.
Every key of the file can be set from the environment: NOTION_GATEWAY_<SECTION>__<KEY>, e.g.
  NOTION_GATEWAY_SERVER__LISTEN=0.0.0.0:8787  NOTION_GATEWAY_LIMITS__RATE=2.5
  NOTION_GATEWAY_UPSTREAM__URL=https://api.notion.com  NOTION_GATEWAY_LOG__FILE=/var/log/ngw.jsonl
NOTION_GATEWAY_CONFIG names the file (as --config does). `notion-gateway check-config` prints the
effective values; config/notion-gateway.toml documents every key.";

#[derive(Debug, Subcommand, Clone, PartialEq, Eq)]
pub enum Command {
    /// Serve the gateway (the default).
    Serve,
    /// Validate the configuration and print the effective values, secrets redacted.
    CheckConfig,
    /// Find out why Notion calls fail: configuration, DNS, TCP, TLS, proxy, token,
    /// Notion-Version, clock, and a running gateway. Exits 1 when a step fails.
    Doctor(DoctorArgs),
    /// Exit 0 if the gateway on server.listen answers /healthz (for container health checks;
    /// needs no curl or shell).
    Healthcheck,
    /// Error analysis of the gateway's JSON request log (log.file): errors by status, by hour
    /// and by request size, the peak error hour, slowest routes, retries, and Notion request
    /// ids of failures.
    Report(ReportArgs),
    /// Gateway keys for a team sharing one gateway (docs/team.md).
    #[command(subcommand)]
    Keys(KeysCommand),
}

#[derive(Debug, Subcommand, Clone, PartialEq, Eq)]
pub enum KeysCommand {
    /// Print a new random gateway key (once: it is not stored anywhere) and the [[keys]]
    /// entry with its digest to paste into the configuration file.
    New {
        /// The key's name: shown in logs, metrics and /status.
        name: String,
        /// The [[integrations]] entry whose token and budgets the key uses.
        #[arg(long, value_name = "INTEGRATION")]
        integration: String,
    },
}

#[derive(Debug, Args, Clone, PartialEq, Eq)]
pub struct ReportArgs {
    /// Log files to read in order (a rotated one first), `-` for standard input
    /// [default: the configured log.file].
    #[arg(value_name = "LOG_FILE")]
    pub files: Vec<PathBuf>,
    /// One JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// How many slow routes and failed requests to list.
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub top: usize,
}

#[derive(Debug, Args, Clone, PartialEq, Eq)]
pub struct DoctorArgs {
    /// Environment variable holding the integration token to try (never printed).
    #[arg(long, value_name = "VAR", default_value = "NOTION_TOKEN")]
    pub token_env: String,
    /// A running gateway to ask for /readyz and /status [default: http://<server.listen>].
    #[arg(long, value_name = "URL")]
    pub gateway: Option<String>,
    /// One JSON object instead of text lines.
    #[arg(long)]
    pub json: bool,
    /// Notion's public status API (Atlassian Statuspage), asked whether Notion reports an
    /// incident; "" skips the step.
    #[arg(
        long,
        value_name = "URL",
        env = "NOTION_STATUS_URL",
        default_value = crate::doctor::NOTION_STATUS_URL
    )]
    pub status_url: String,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// TOML configuration file (see config/notion-gateway.toml).
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        env = "NOTION_GATEWAY_CONFIG"
    )]
    pub config: Option<PathBuf>,
    /// Address to listen on, e.g. 127.0.0.1:8787 (server.listen).
    #[arg(long, global = true, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Upstream base URL, e.g. https://api.notion.com (upstream.url).
    #[arg(long, global = true, value_name = "URL")]
    pub upstream: Option<String>,
    /// Log format: pretty or json (log.format).
    #[arg(long, global = true, value_name = "FORMAT", value_parser = ["pretty", "json"])]
    pub log_format: Option<String>,
}

impl GlobalArgs {
    pub fn overrides(&self) -> Overrides {
        Overrides {
            config_file: self.config.clone(),
            listen: self.listen.clone(),
            upstream: self.upstream.clone(),
            log_format: self.log_format.clone(),
        }
    }
}
