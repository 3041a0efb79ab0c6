//! Command-line flags. ip-masq-agent's policy flags keep their names and meaning; every value
//! is parsed into its type by clap, so a bad one is reported like any other usage error.
//!
//! A drop-in replacement must start with the arguments of the DaemonSet it replaces, so the
//! command line is read in two steps: [`go_flags`] first takes every flag that
//! ip-masq-agent and ip-masq-agent-v2 define on Go's flag set (their own and those of the
//! klog or glog logging they register), in the forms Go's `flag` package accepts, and clap
//! then parses the rest. The ip-masq-agent flags we implement are handed on to clap in one
//! canonical form; the others are kept as [`Foreign`] flags, for one warning at start that
//! says what nft-masq-agent does instead ([`Cli::foreign_warning`]). That first step, and the
//! table of the Go tools' flags it reads, is [`goflags`].

mod goflags;

use std::ffi::OsString;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, CommandFactory, FromArgMatches, Parser};
use goflags::{Foreign, go_flags, level_for_verbosity};
use nft_masq_agent::config::duration::parse_go_duration;
use nft_masq_agent::config::priority::ChainPriority;
use nft_masq_agent::config::{DEFAULT_MAX_PREFIXES, PolicyFlags, ports::PortRanges};
use nft_masq_agent::daemon::Options;
use nft_masq_agent::kernel::conntrack::Protocols;
use nft_masq_agent::kernel::nft::compat::OwnerMode;
use nft_masq_agent::kernel::nft::ruleset::DEFAULT_MAX_FOREIGN_ELEMENTS;
use nft_masq_agent::model::shard::{DEFAULT_MAX_SET_PREFIXES, MIN_MAX_SET_PREFIXES};

/// Keeps an ip-masq-agent-compatible masquerade policy in force as one nftables table,
/// committed atomically over netlink.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None, after_help = COMPAT_HELP)]
pub struct Cli {
    /// Config file (YAML or JSON, ip-masq-agent's keys), or a directory whose `ip-masq*`
    /// files are merged (ip-masq-agent-v2's layout). Repeat to merge several; lists are
    /// unioned. No file at all means the defaults. The default, the directory /etc/config,
    /// reads both tools' layouts: ip-masq-agent's /etc/config/ip-masq-agent, and with
    /// ip-masq-agent-v2's volume every `ip-masq*` file beside it.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_CONFIG, action = ArgAction::Append)]
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
    /// components that translate the packet in place of ours (at --chain-priority: before
    /// ours, or after an exemption of ours). Reading the kernel needs
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

    /// The most prefixes one exemption set holds. A family with more is cut into sets by
    /// address block, each behind its own chain that one verdict map per family jumps to
    /// (`nonmasq-dispatch-v4`), so that reading the table back stays linear in its size (the
    /// kernel dumps a set in time quadratic in its elements) and a flushed set is refilled
    /// in a few milliseconds (docs/design.md, "Block sets"). At least 256.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_SET_PREFIXES,
          value_parser = parse_max_set_prefixes)]
    pub max_set_prefixes: usize,

    /// Our NAT chain's priority at the postrouting hook, written as nft writes it:
    /// `srcnat + 10` (the default: after iptables' nat POSTROUTING, like ip-masq-agent's
    /// appended jump), `srcnat - 10`, `srcnat`, or a number. The first chain that sets up a
    /// binding decides a connection's NAT: running earlier makes our masquerade or `snatTo`
    /// win over a later chain's, but our exemptions never stop a later chain from
    /// translating (docs/operations.md, "Chain priority").
    #[arg(
        long,
        value_name = "PRIORITY",
        default_value = "srcnat + 10",
        allow_hyphen_values = true
    )]
    pub chain_priority: ChainPriority,

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

    /// Once the first table of a valid config is committed (also with --once), remove
    /// ip-masq-agent's iptables chain (IP-MASQ-AGENT, or the --masq-chain given) and every
    /// jump to it from the iptables-nft nat tables (ip and ip6), in one transaction over
    /// netlink, so that its old policy stops deciding first. Nothing is removed when the
    /// chain holds a rule ip-masq-agent would not have written (the log names it); for a
    /// chain in iptables-legacy the log gives the commands to run.
    #[arg(long)]
    pub take_over_iptables_chain: bool,

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

    /// Flags of ip-masq-agent, ip-masq-agent-v2 and their logging that are accepted but not
    /// implemented, in the order given ([`go_flags`] collects them).
    #[arg(skip)]
    pub foreign: Vec<Foreign>,

    /// Whether `--config` was given on the command line (not the default).
    #[arg(skip)]
    pub explicit_config: bool,
}

/// The default `--config`: the directory of the ConfigMap volume, with a trailing slash so it
/// is read as a directory (its `ip-masq*` files) even if it appears only later. With
/// ip-masq-agent's volume it holds one such file, /etc/config/ip-masq-agent, the file
/// ip-masq-agent reads; with ip-masq-agent-v2's projected volume it holds that file and the
/// provider's `ip-masq-agent-reconciled`, the files v2 reads. Either DaemonSet, its image
/// alone replaced, keeps its policy.
pub const DEFAULT_CONFIG: &str = "/etc/config/";

/// The end of `--help`: what else is accepted.
const COMPAT_HELP: &str = "\
Also accepted, so that an ip-masq-agent or ip-masq-agent-v2 DaemonSet starts unchanged (one
warning at start names them): --masq-chain (no iptables chain is made: the policy is table
inet nft-masq-agent), --resync-interval (v2; changes apply as they happen, the full check
runs every resyncInterval of the config), klog's --v=N (log level: 0-2 info, 3-4 debug, 5+
trace; RUST_LOG overrides it) and klog's and glog's other flags (--logtostderr, --log_file,
--log_dir, --stderrthreshold, ...; logs go to stderr). ip-masq-agent's flags may be written
as Go accepts them: -flag or --flag, =value or a separate value, booleans as
--flag=true|false. docs/migrating-from-ip-masq-agent.md lists them all.";

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

/// `ADDR:PORT`, `[IPV6]:PORT`, or `[IPV4]:PORT`: brackets around either family, so that a
/// manifest can write `[$(HOST_IP)]:9983` whatever the family of the node's address.
fn parse_listen(s: &str) -> Result<Listen, String> {
    let bad = |e: &dyn std::fmt::Display| format!("{e} (want ADDR:PORT, [ADDR]:PORT or off)");
    match s {
        "" | "off" => Ok(Listen(None)),
        a => {
            if let Some((host, port)) = a.strip_prefix('[').and_then(|r| r.split_once("]:")) {
                let ip: IpAddr = host.parse().map_err(|e| bad(&e))?;
                let port: u16 = port.parse().map_err(|e| bad(&e))?;
                return Ok(Listen(Some(SocketAddr::new(ip, port))));
            }
            a.parse().map(|a| Listen(Some(a))).map_err(|e| bad(&e))
        }
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
    /// Parses the process's arguments ([`Cli::try_parse_args`]); on an error prints it and
    /// exits as clap does (2 for a usage error).
    pub fn parse_args() -> Cli {
        Cli::try_parse_args(std::env::args_os()).unwrap_or_else(|e| e.exit())
    }

    /// Parses `args` (the program name first): the Go tools' flags by [`go_flags`], the rest
    /// by clap.
    pub fn try_parse_args<I, T>(args: I) -> Result<Cli, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString>,
    {
        let mut cmd = Cli::command();
        let mut args: Vec<OsString> = args.into_iter().map(Into::into).collect();
        let program = if args.is_empty() {
            OsString::from("nft-masq-agent")
        } else {
            args.remove(0)
        };
        let long_with_value: Vec<String> = cmd
            .get_arguments()
            .filter(|a| a.get_action().takes_values())
            .filter(|a| a.get_num_args().is_none_or(|n| n.min_values() > 0))
            .filter_map(|a| a.get_long().map(str::to_string))
            .collect();
        let (rest, foreign) = go_flags(args, &long_with_value)
            .map_err(|m| cmd.error(clap::error::ErrorKind::ValueValidation, m))?;
        let matches = cmd.try_get_matches_from_mut(std::iter::once(program).chain(rest))?;
        let mut cli = Cli::from_arg_matches(&matches).map_err(|e| e.format(&mut cmd))?;
        cli.foreign = foreign;
        cli.explicit_config =
            matches.value_source("config") == Some(clap::parser::ValueSource::CommandLine);
        Ok(cli)
    }

    /// The last `--masq-chain` given (ip-masq-agent's iptables chain; `IP-MASQ-AGENT` when
    /// none is), or `None`.
    pub fn masq_chain(&self) -> Option<&str> {
        self.foreign_value("masq-chain")
    }

    /// The chain `--take-over-iptables-chain` removes: `--masq-chain`'s, else
    /// ip-masq-agent's default `IP-MASQ-AGENT`; `None` without the flag.
    pub fn take_over_chain(&self) -> Option<String> {
        self.take_over_iptables_chain.then(|| {
            self.masq_chain()
                .unwrap_or(nft_masq_agent::kernel::nft::takeover::DEFAULT_CHAIN)
                .to_string()
        })
    }

    /// klog's `--v`, the last one given.
    pub fn verbosity(&self) -> Option<i64> {
        self.foreign_value("v").and_then(|v| v.parse().ok())
    }

    fn foreign_value(&self, name: &str) -> Option<&str> {
        self.foreign
            .iter()
            .rev()
            .find(|f| f.name == name)
            .map(|f| f.value.as_str())
    }

    /// The one warning at start about the accepted but unimplemented flags: each, as given,
    /// with what nft-masq-agent does instead; `None` when there are none.
    pub fn foreign_warning(&self) -> Option<String> {
        goflags::warning(&self.foreign)
    }

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
            max_foreign_elements: self.max_foreign_elements,
            take_over_chain: self.take_over_chain(),
            explicit_config: self.explicit_config,
        }
    }

    /// A warning for each `--config` path given explicitly that does not exist: the
    /// defaults then apply, as for a missing default path, but an operator who named a path
    /// meant a file (a typo, a volume not mounted). `None` for the default path.
    pub fn missing_config_warning(&self) -> Option<String> {
        if !self.explicit_config {
            return None;
        }
        let missing: Vec<String> = self
            .config
            .iter()
            .filter(|p| !p.exists())
            .map(|p| p.display().to_string())
            .collect();
        if missing.is_empty() {
            return None;
        }
        let all = missing.len() == self.config.len();
        Some(format!(
            "--config {} does not exist{}; the daemon reads it once it appears",
            missing.join(", --config "),
            if all {
                ": ip-masq-agent's defaults are in force (metric nft_masq_agent_policy_source{source=\"missing\"})"
            } else {
                ": the other config paths apply"
            }
        ))
    }

    /// The policy flags.
    pub fn policy_flags(&self) -> PolicyFlags {
        PolicyFlags {
            nomasq_all_reserved_ranges: self.nomasq_all_reserved_ranges,
            enable_ipv6: self.enable_ipv6,
            random_fully: self.random_fully,
            to_ports: self.to_ports.clone(),
            max_prefixes: self.max_prefixes,
            chain_priority: self.chain_priority,
            max_set_prefixes: self.max_set_prefixes,
        }
    }
}

/// `--max-set-prefixes`: a count of at least [`MIN_MAX_SET_PREFIXES`].
fn parse_max_set_prefixes(s: &str) -> Result<usize, String> {
    let n: usize = s
        .parse()
        .map_err(|e| format!("{s:?} is not a count: {e}"))?;
    if n < MIN_MAX_SET_PREFIXES {
        return Err(format!("{n} is below the least, {MIN_MAX_SET_PREFIXES}"));
    }
    Ok(n)
}

/// Logs to stderr; the level comes from `RUST_LOG`, else from klog's `--v`
/// ([`level_for_verbosity`]), else info.
pub fn init_logging(cli: &Cli) {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let default = cli.verbosity().map_or("info", level_for_verbosity);
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    // Colour only for people at a terminal: container logs must stay plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => {
            nft_masq_agent::report::jsonlog::set_json(true);
            builder
                .event_format(nft_masq_agent::report::jsonlog::JsonLines)
                .init()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_args(std::iter::once("nft-masq-agent").chain(args.iter().copied()))
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
            &["--max-foreign-elements=-1"][..],
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

    #[test]
    fn chain_priority_takes_nfts_forms_and_names_flag_and_value_when_bad() {
        let prio = |args: &[&str]| parse(args).unwrap().policy_flags().chain_priority.0;
        assert_eq!(prio(&[]), 110);
        assert_eq!(prio(&["--chain-priority", "srcnat - 10"]), 90);
        assert_eq!(prio(&["--chain-priority", "srcnat+5"]), 105);
        assert_eq!(prio(&["--chain-priority", "-10"]), -10);
        assert_eq!(prio(&["--chain-priority=95"]), 95);
        for bad in ["srcnat plus 10", "dstnat", "5000"] {
            let e = parse(&["--chain-priority", bad]).unwrap_err().to_string();
            assert!(
                e.contains("--chain-priority") && e.contains(bad),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn an_explicit_missing_config_is_warned_about_the_default_is_not() {
        let dir = std::env::temp_dir().join(format!("nma-cli-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let there = dir.join("ip-masq-agent");
        std::fs::write(&there, "nonMasqueradeCIDRs: []\n").unwrap();
        let gone = dir.join("ip-masq-agnet");
        let (there, gone) = (there.to_str().unwrap(), gone.to_str().unwrap());
        // The default path, missing or not: as today.
        let d = parse(&[]).unwrap();
        assert!(!d.explicit_config && !d.daemon_options().explicit_config);
        assert_eq!(d.missing_config_warning(), None);
        let c = parse(&["--config", gone]).unwrap();
        assert!(c.daemon_options().explicit_config);
        let w = c.missing_config_warning().unwrap();
        assert!(
            w.starts_with(&format!(
                "--config {gone} does not exist: ip-masq-agent's defaults"
            )),
            "{w}"
        );
        assert!(w.contains("source=\"missing\""), "{w}");
        let w = parse(&["--config", there, "--config", gone])
            .unwrap()
            .missing_config_warning()
            .unwrap();
        assert!(
            w.contains(gone) && w.contains("the other config paths apply"),
            "{w}"
        );
        assert_eq!(
            parse(&["--config", there])
                .unwrap()
                .missing_config_warning(),
            None
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn take_over_names_the_masq_chain_or_ip_masq_agents_default() {
        assert_eq!(parse(&[]).unwrap().take_over_chain(), None);
        assert_eq!(
            parse(&["--masq-chain=IP-MASQ"]).unwrap().take_over_chain(),
            None
        );
        let c = parse(&["--take-over-iptables-chain"]).unwrap();
        assert_eq!(c.take_over_chain().as_deref(), Some("IP-MASQ-AGENT"));
        assert_eq!(c.daemon_options().take_over_chain, c.take_over_chain());
        for args in [
            &["--take-over-iptables-chain", "--masq-chain=IP-MASQ"][..],
            &[
                "-masq-chain",
                "OLD",
                "--take-over-iptables-chain",
                "--masq-chain",
                "IP-MASQ",
            ],
        ] {
            let c = parse(args).unwrap();
            assert_eq!(c.take_over_chain().as_deref(), Some("IP-MASQ"), "{args:?}");
        }
        assert!(
            parse(&["--take-over-iptables-chain", "--once"])
                .unwrap()
                .take_over_chain()
                .is_some()
        );
    }

    /// The arguments of real DaemonSets, as they are (each list's source is in
    /// tests/dropin.rs, which runs the agent with them).
    const MANIFESTS: &[(&str, &[&str])] = &[
        ("kubernetes-sigs/ip-masq-agent ip-masq-agent.yaml", &[]),
        (
            "kubernetes/kubernetes cluster/addons/ip-masq-agent",
            &["--masq-chain=IP-MASQ", "--nomasq-all-reserved-ranges"],
        ),
        (
            "GKE",
            &[
                "--v=2",
                "--logtostderr=false",
                "--log_file=/dev/stdout",
                "--log_file_max_size=0",
                "--masq-chain=IP-MASQ",
                "--random-fully=false",
            ],
        ),
        ("Azure/ip-masq-agent-v2 examples", &["--v=2"]),
        ("AKS", &["--v=2", "--resync-interval=60"]),
    ];

    #[test]
    fn real_daemonset_arguments_parse_and_keep_their_meaning() {
        for (what, args) in MANIFESTS {
            let c = parse(args).unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(c.mode(), Mode::Daemon, "{what}");
        }
        let k8s = parse(MANIFESTS[1].1).unwrap();
        assert!(k8s.nomasq_all_reserved_ranges);
        assert_eq!(k8s.masq_chain(), Some("IP-MASQ"));
        let gke = parse(MANIFESTS[2].1).unwrap();
        assert!(!gke.random_fully, "--random-fully=false keeps its meaning");
        assert_eq!(gke.verbosity(), Some(2));
        let w = gke.foreign_warning().unwrap();
        for flag in [
            "--v=2",
            "--logtostderr=false",
            "--log_file=/dev/stdout",
            "--log_file_max_size=0",
            "--masq-chain=IP-MASQ",
        ] {
            assert!(w.contains(flag), "{flag} missing from: {w}");
        }
        assert!(
            !w.contains("random-fully"),
            "implemented flags are not warned about: {w}"
        );
        assert!(
            w.contains("table inet nft-masq-agent") && w.contains("log level"),
            "{w}"
        );
        let aks = parse(MANIFESTS[4].1).unwrap();
        assert!(
            aks.foreign_warning()
                .unwrap()
                .contains("--resync-interval=60 (config changes apply as they happen")
        );
        assert_eq!(parse(&[]).unwrap().foreign_warning(), None);
    }

    #[test]
    fn default_config_reads_both_layouts_and_metrics_address_takes_brackets() {
        let d = parse(&[]).unwrap();
        assert_eq!(d.config, vec![PathBuf::from("/etc/config/")]);
        assert!(
            d.config[0].as_os_str().as_encoded_bytes().ends_with(b"/"),
            "read as a directory"
        );
        for (arg, want) in [
            ("[10.1.2.3]:9983", "10.1.2.3:9983"),
            ("[2001:db8::1]:9983", "[2001:db8::1]:9983"),
            ("10.1.2.3:9983", "10.1.2.3:9983"),
        ] {
            let c = parse(&["--metrics-address", arg]).unwrap();
            assert_eq!(
                c.metrics_address,
                Listen(Some(want.parse().unwrap())),
                "{arg}"
            );
        }
        for bad in ["[10.1.2.3]", "[10.1.2.3]:x", "[]:9983", "[$(HOST_IP)]:9983"] {
            assert!(parse(&["--metrics-address", bad]).is_err(), "{bad}");
        }
    }
}
