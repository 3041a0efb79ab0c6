//! Command-line flags. ip-masq-agent's policy flags keep their names and meaning.

use std::path::PathBuf;

use anyhow::Result;
use clap::{ArgAction, Parser};
use nft_masq_agent::config::duration::parse_go_duration;
use nft_masq_agent::config::{DEFAULT_CONFIG_PATH, PolicyFlags, ports::PortRanges};
use nft_masq_agent::run::{Options, OwnerMode};

/// Keeps an ip-masq-agent-compatible masquerade policy in force as one nftables table,
/// committed atomically over netlink.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
pub struct Cli {
    /// Config file (YAML or JSON, ip-masq-agent's keys); a missing file means defaults.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_CONFIG_PATH)]
    pub config: PathBuf,

    /// Validate the config, commit the table once and exit. On an invalid config exit
    /// non-zero and leave the existing table exactly as it is.
    #[arg(long, group = "mode")]
    pub once: bool,

    /// Print the live table, decoded from the kernel, in `nft list` syntax.
    #[arg(long, group = "mode")]
    pub dump: bool,

    /// Print the table that would be committed; needs no privileges and touches nothing.
    #[arg(long, group = "mode")]
    pub dry_run: bool,

    /// Delete the agent's table and exit.
    #[arg(long, group = "mode")]
    pub cleanup: bool,

    /// Also exempt every IPv4 range reserved by RFCs (100.64.0.0/10, 192.0.0.0/24,
    /// 192.0.2.0/24, 192.88.99.0/24, 198.18.0.0/15, 198.51.100.0/24, 203.0.113.0/24,
    /// 240.0.0.0/4) when the config has no nonMasqueradeCIDRs.
    #[arg(long)]
    pub nomasq_all_reserved_ranges: bool,

    /// Manage IPv6 as well. Without it IPv6 CIDRs in the config are an error and IPv6
    /// traffic is left alone.
    #[arg(long)]
    pub enable_ipv6: bool,

    /// Masquerade with fully random source ports (iptables' --random-fully); use
    /// --random-fully=false to turn it off.
    #[arg(long, value_name = "BOOL", default_value_t = true, action = ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true")]
    pub random_fully: bool,

    /// Masquerade TCP, UDP and SCTP to source ports in these ranges, each range chosen in
    /// proportion to its size, e.g. "1024-29999,32768-65535" (as ip-masq-agent).
    #[arg(long, value_name = "RANGES")]
    pub to_ports: Option<String>,

    /// Table ownership: `auto` claims the table with the kernel's owner flag only where the
    /// persist flag also exists (Linux 6.9+), so nobody else can change it and it survives the
    /// agent's exit; `on` claims it wherever the owner flag exists (5.12+), accepting that the
    /// kernel removes the table when the agent exits on kernels without persist; `off` never
    /// claims it and repairs foreign changes instead.
    #[arg(long, value_name = "MODE", default_value = "auto", value_parser = ["auto", "on", "off"])]
    pub table_owner: String,

    /// Address for /healthz, /readyz and /metrics; `off` disables the endpoint. The default
    /// listens on loopback only: the DaemonSet probes it there and the metrics overlay
    /// widens it for scraping.
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:9983")]
    pub metrics_address: String,

    /// Quiet time after a config file event before the file is read (Go duration syntax),
    /// so that one ConfigMap update causes one reload.
    #[arg(long, value_name = "DURATION", default_value = "5ms")]
    pub debounce: String,

    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log pipelines.
    Json,
}

/// What the process does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Keep the policy in force until stopped.
    Daemon,
    /// Commit once and exit.
    Once,
    /// Print the live table.
    Dump,
    /// Print the desired table.
    DryRun,
    /// Delete the table.
    Cleanup,
}

impl Cli {
    /// The selected mode.
    pub fn mode(&self) -> Mode {
        if self.once {
            Mode::Once
        } else if self.dump {
            Mode::Dump
        } else if self.dry_run {
            Mode::DryRun
        } else if self.cleanup {
            Mode::Cleanup
        } else {
            Mode::Daemon
        }
    }

    /// The daemon options, validated.
    pub fn daemon_options(&self) -> Result<Options> {
        let listen = match self.metrics_address.as_str() {
            "" | "off" => None,
            a => Some(a.parse().map_err(|e| {
                anyhow::anyhow!("invalid --metrics-address {a:?} (want ADDR:PORT or off): {e}")
            })?),
        };
        let debounce = parse_go_duration(&self.debounce)
            .map_err(|e| anyhow::anyhow!("invalid --debounce {:?}: {e}", self.debounce))?;
        anyhow::ensure!(!debounce.negative, "--debounce must not be negative");
        Ok(Options {
            config: self.config.clone(),
            flags: self.policy_flags()?,
            owner: self
                .table_owner
                .parse::<OwnerMode>()
                .map_err(anyhow::Error::msg)?,
            listen,
            debounce: debounce.magnitude,
        })
    }

    /// The policy flags, validated.
    pub fn policy_flags(&self) -> Result<PolicyFlags> {
        let to_ports = match &self.to_ports {
            None => None,
            Some(s) => Some(
                s.parse::<PortRanges>()
                    .map_err(|e| anyhow::anyhow!("invalid --to-ports {s:?}: {e}"))?,
            ),
        };
        Ok(PolicyFlags {
            nomasq_all_reserved_ranges: self.nomasq_all_reserved_ranges,
            enable_ipv6: self.enable_ipv6,
            random_fully: self.random_fully,
            to_ports,
        })
    }
}

/// Logs to stderr; the level comes from `RUST_LOG` and defaults to info.
pub fn init_logging(cli: &Cli) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    use std::io::IsTerminal;
    // Colour only for people at a terminal: container logs must stay plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
