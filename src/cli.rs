//! Command-line flags. ip-masq-agent's policy flags keep their names and meaning; every value
//! is parsed into its type by clap, so a bad one is reported like any other usage error.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Parser};
use nft_masq_agent::config::duration::parse_go_duration;
use nft_masq_agent::config::{
    DEFAULT_CONFIG_PATH, DEFAULT_MAX_PREFIXES, PolicyFlags, ports::PortRanges,
};
use nft_masq_agent::conntrack::Protocols;
use nft_masq_agent::daemon::Options;
use nft_masq_agent::nft::compat::OwnerMode;
use nft_masq_agent::nft::ruleset::DEFAULT_MAX_FOREIGN_ELEMENTS;

/// Keeps an ip-masq-agent-compatible masquerade policy in force as one nftables table,
/// committed atomically over netlink.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
pub struct Cli {
    /// Config file (YAML or JSON, ip-masq-agent's keys), or a directory whose `ip-masq*`
    /// files are merged (ip-masq-agent-v2's layout). Repeat to merge several; lists are
    /// unioned. No file at all means the defaults.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_CONFIG_PATH, action = ArgAction::Append)]
    pub config: Vec<PathBuf>,

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

    /// Say whether packets to DESTINATION are translated and why: the config entries
    /// responsible, whether the table in the kernel is in force, and NAT rules of other
    /// components that translate the packet before ours. Reading the kernel needs
    /// CAP_NET_ADMIN (without it, the config's answer alone).
    #[arg(long, group = "mode", value_name = "DESTINATION")]
    pub explain: Option<IpAddr>,

    /// With --explain: the packet's source address.
    #[arg(long, value_name = "ADDRESS", requires = "explain")]
    pub source: Option<IpAddr>,

    /// With --explain: the interface the packet leaves through.
    #[arg(long, value_name = "NAME", requires = "explain")]
    pub out_interface: Option<String>,

    /// With --explain: text for people, or one JSON object.
    #[arg(long, value_enum, default_value_t = Output::Text, requires = "explain")]
    pub output: Output,

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
    pub to_ports: Option<PortRanges>,

    /// The most prefixes one commit may hold, after merging and carving out (a few
    /// `masqueradeCIDRs` holes in a wide range can make many). Beyond it the config is
    /// refused like any invalid one, and the config files together may be at most 64 bytes
    /// per prefix of this (at least 1 MiB). At the default the agent peaks at about 36 MiB,
    /// within the DaemonSet's 64 MiB memory limit; raise both together.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_PREFIXES)]
    pub max_prefixes: usize,

    /// The set elements one read of other components' NAT tables may keep, all tables
    /// together. Only the sets that rules reachable from their NAT postrouting chains look
    /// up are read (kube-proxy's service maps are not); a table whose sets would go past
    /// this is reported as too large to analyse, and lookups in the sets not read count as
    /// "cannot tell". The default costs at most about 2 MiB while a read lasts.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_FOREIGN_ELEMENTS)]
    pub max_foreign_elements: usize,

    /// Table ownership: `auto` claims the table with the kernel's owner flag only where the
    /// persist flag also exists (Linux 6.9+), so nobody else can change it and it survives the
    /// agent's exit; `on` claims it wherever the owner flag exists (5.12+), accepting that the
    /// kernel removes the table when the agent exits on kernels without persist; `off` never
    /// claims it and repairs foreign changes instead.
    #[arg(long, value_name = "MODE", value_enum, default_value_t = Owner::Auto)]
    pub table_owner: Owner,

    /// After a commit that changes how some destination, source or interface is translated,
    /// delete the conntrack entries of the flows it affects, so their next packet is decided
    /// by the new rules (NAT is decided on a flow's first packet; a UDP flow that keeps
    /// sending would keep its old translation for ever). `connectionless`: UDP, UDP-Lite,
    /// ICMP, ICMPv6 only, which is harmless; `all`: also TCP, SCTP and DCCP, which BREAKS
    /// open connections to the affected destinations (they must reconnect); `off`: leave
    /// conntrack alone.
    #[arg(long, value_name = "WHICH", value_enum, default_value_t = ConntrackReconcile::Connectionless)]
    pub conntrack_reconcile: ConntrackReconcile,

    /// Address for /healthz, /readyz and /metrics; `off` disables the endpoint. The default
    /// listens on loopback only: the DaemonSet probes it there and the metrics overlay
    /// widens it for scraping.
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:9983", value_parser = parse_listen)]
    pub metrics_address: Listen,

    /// Quiet time after a config file event before the file is read (Go duration syntax),
    /// so that one ConfigMap update causes one reload.
    #[arg(long, value_name = "DURATION", default_value = "5ms", value_parser = parse_duration)]
    pub debounce: Duration,

    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// `--table-owner`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Owner {
    /// Owner + persist where persist exists (6.9+), else no ownership.
    Auto,
    /// Owner wherever it exists (5.12+), with persist where available.
    On,
    /// Never claim the table; repair foreign changes.
    Off,
}

impl From<Owner> for OwnerMode {
    fn from(o: Owner) -> OwnerMode {
        match o {
            Owner::Auto => OwnerMode::Auto,
            Owner::On => OwnerMode::On,
            Owner::Off => OwnerMode::Off,
        }
    }
}

/// `--conntrack-reconcile`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ConntrackReconcile {
    /// UDP, UDP-Lite, ICMP and ICMPv6 entries.
    Connectionless,
    /// Also TCP, SCTP and DCCP (open connections to affected destinations break).
    All,
    /// No conntrack reconciliation.
    Off,
}

impl From<ConntrackReconcile> for Option<Protocols> {
    fn from(c: ConntrackReconcile) -> Option<Protocols> {
        match c {
            ConntrackReconcile::Connectionless => Some(Protocols::Connectionless),
            ConntrackReconcile::All => Some(Protocols::All),
            ConntrackReconcile::Off => None,
        }
    }
}

/// `--metrics-address`: an address, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listen(pub Option<SocketAddr>);

fn parse_listen(s: &str) -> Result<Listen, String> {
    match s {
        "" | "off" => Ok(Listen(None)),
        a => a
            .parse()
            .map(|a| Listen(Some(a)))
            .map_err(|e| format!("{e} (want ADDR:PORT or off)")),
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = parse_go_duration(s).map_err(|e| e.to_string())?;
    if d.negative {
        return Err("must not be negative".into());
    }
    Ok(d.magnitude)
}

/// `--explain`'s output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// Short text, the decision first.
    Text,
    /// One JSON object.
    Json,
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
    /// Explain a destination.
    Explain,
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
        } else if self.explain.is_some() {
            Mode::Explain
        } else {
            Mode::Daemon
        }
    }

    /// The daemon options.
    pub fn daemon_options(&self) -> Options {
        Options {
            config: self.config.clone(),
            flags: self.policy_flags(),
            owner: self.table_owner.into(),
            conntrack: self.conntrack_reconcile.into(),
            listen: self.metrics_address.0,
            debounce: self.debounce,
        }
    }

    /// The policy flags.
    pub fn policy_flags(&self) -> PolicyFlags {
        PolicyFlags {
            nomasq_all_reserved_ranges: self.nomasq_all_reserved_ranges,
            enable_ipv6: self.enable_ipv6,
            random_fully: self.random_fully,
            to_ports: self.to_ports.clone(),
            max_prefixes: self.max_prefixes,
        }
    }
}

/// Logs to stderr; the level comes from `RUST_LOG` and defaults to info.
pub fn init_logging(cli: &Cli) {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("nft-masq-agent").chain(args.iter().copied()))
    }

    #[test]
    fn typed_values_parse_and_bad_ones_are_usage_errors() {
        let c = parse(&[
            "--table-owner",
            "off",
            "--metrics-address",
            "off",
            "--debounce",
            "20ms",
        ])
        .unwrap();
        assert_eq!(c.table_owner, Owner::Off);
        assert_eq!(c.metrics_address, Listen(None));
        assert_eq!(c.debounce, Duration::from_millis(20));
        let d = parse(&[]).unwrap();
        assert_eq!(
            d.metrics_address,
            Listen(Some("127.0.0.1:9983".parse().unwrap()))
        );
        assert_eq!(d.debounce, Duration::from_millis(5));
        assert_eq!(d.max_foreign_elements, DEFAULT_MAX_FOREIGN_ELEMENTS);
        assert_eq!(
            parse(&["--max-foreign-elements", "0"])
                .unwrap()
                .max_foreign_elements,
            0
        );
        for bad in [
            &["--max-foreign-elements", "-1"][..],
            &["--table-owner", "maybe"][..],
            &["--metrics-address", "localhost"],
            &["--debounce=-5ms"],
            &["--debounce", "5"],
            &["--to-ports", "10-5"],
        ] {
            let e = parse(bad).unwrap_err();
            let flag = bad[0].split('=').next().unwrap();
            assert!(e.to_string().contains(flag), "{bad:?}: {e}");
        }
    }
}
