//! The masquerade configuration: ip-masq-agent's file format, read strictly.
//!
//! - this module: the validated [`Config`], its defaults (one place for the default list and
//!   link-local) and the [`PolicyFlags`];
//! - `derived`: what the config asks for per family (exempt, carved and source ranges, SNAT
//!   targets, the `snatRules` map), as the model and the analyses read it (pure);
//! - `error`: [`ConfigError`] and the [`Problem`]s a refused file lists;
//! - [`validate`]: bytes into a [`Config`], collecting every problem (pure);
//! - [`snat`]: `snatTo` entries, and the addresses no packet may leave with (pure);
//! - [`source`]: the files on disk, read, hashed and validated (the only I/O here).

mod derived;
pub mod duration;
mod error;
pub mod merge;
pub mod ports;
pub mod priority;
pub mod snat;
pub mod source;
pub mod validate;
pub mod yaml;

pub use error::{ConfigError, Problem};
pub use source::{ConfigSource, Source, Update, parse, parse_str};
pub use validate::parse_cidr;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;

use std::net::IpAddr;

pub use crate::addr::ifname::Interface;
use crate::addr::prefix::Family;
use ports::PortRanges;

/// The file names in a config directory that make up the config: every regular file whose
/// name starts with this (ip-masq-agent-v2's convention).
pub const DIR_FILE_PREFIX: &str = "ip-masq";

/// Where ip-masq-agent (and we, by default) read the config: a ConfigMap volume.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/config/ip-masq-agent";

/// IPv4 link-local range, not masqueraded unless `masqLinkLocal` is true.
pub const LINK_LOCAL_V4: &str = "169.254.0.0/16";
/// IPv6 link-local range, not masqueraded unless `masqLinkLocalIPv6` is true.
pub const LINK_LOCAL_V6: &str = "fe80::/10";

/// RFC 1918 private ranges: ip-masq-agent's default `nonMasqueradeCIDRs`.
pub const RFC1918_RANGES: [&str; 3] = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"];

/// Further reserved ranges added to the default by `--nomasq-all-reserved-ranges`, in
/// ip-masq-agent's order.
pub const OTHER_RESERVED_RANGES: [&str; 8] = [
    "100.64.0.0/10",   // RFC 6598 shared address space
    "192.0.0.0/24",    // RFC 6890
    "192.0.2.0/24",    // RFC 5737 TEST-NET-1
    "192.88.99.0/24",  // RFC 7526
    "198.18.0.0/15",   // RFC 6815 benchmarking
    "198.51.100.0/24", // RFC 5737 TEST-NET-2
    "203.0.113.0/24",  // RFC 5737 TEST-NET-3
    "240.0.0.0/4",     // RFC 5735 former class E
];

/// The keys ip-masq-agent knows, plus our extensions `masqueradeCIDRs`, `sourceCIDRs`,
/// `egressInterfaces`, `snatTo` and `snatRules`.
pub const KNOWN_KEYS: [&str; 10] = [
    "nonMasqueradeCIDRs",
    "masqueradeCIDRs",
    "sourceCIDRs",
    "egressInterfaces",
    "snatTo",
    "snatRules",
    "cidrLimit",
    "masqLinkLocal",
    "masqLinkLocalIPv6",
    "resyncInterval",
];

/// Default `cidrLimit`, as ip-masq-agent.
pub const DEFAULT_CIDR_LIMIT: usize = 64;
/// Default `resyncInterval`, as ip-masq-agent.
pub const DEFAULT_RESYNC_INTERVAL: Duration = Duration::from_secs(60);
/// The shortest `resyncInterval`: each resync reads the whole table back, so a smaller one
/// would keep the agent (and the kernel) busy doing nothing useful.
pub const MIN_RESYNC_INTERVAL: Duration = Duration::from_secs(1);

/// Default `--max-prefixes`: the most prefixes one commit may hold after merging and
/// carving out. The agent's peak at this size (35.5 MiB with IPv6 keys, through start-up, a
/// ConfigMap swap, full checks and a repair) is 55 % of the DaemonSet's 64 MiB memory limit
/// (measured by `cargo bench --bench live -- --sections memory`; see docs/design.md,
/// "Limits and failure modes").
pub const DEFAULT_MAX_PREFIXES: usize = 150_000;

/// Config bytes allowed per prefix of `--max-prefixes` (a `- 2001:db8:1234:5678::/64` entry
/// with its indentation and comment room), and the least any cap allows.
pub const CONFIG_BYTES_PER_PREFIX: u64 = 64;
/// The smallest config size cap, whatever `--max-prefixes` says.
pub const MIN_CONFIG_BYTES: u64 = 1 << 20;

/// The most problems one error lists; the rest are counted.
pub const MAX_PROBLEMS: usize = 100;

/// Command-line options that shape the policy; they mirror ip-masq-agent's flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyFlags {
    /// `--nomasq-all-reserved-ranges`: the default list also holds [`OTHER_RESERVED_RANGES`].
    pub nomasq_all_reserved_ranges: bool,
    /// `--enable-ipv6`: manage IPv6 too; without it IPv6 CIDRs are an error and IPv6 traffic
    /// is left alone.
    pub enable_ipv6: bool,
    /// `--random-fully`: masquerade with `fully-random` source port allocation.
    pub random_fully: bool,
    /// `--to-ports`: restrict TCP/UDP/SCTP source ports to these ranges.
    pub to_ports: Option<PortRanges>,
    /// `--max-prefixes`: the most prefixes a commit may hold.
    pub max_prefixes: usize,
    /// `--chain-priority`: where our NAT chain runs among the others at postrouting.
    pub chain_priority: priority::ChainPriority,
    /// `--max-set-prefixes`: the most prefixes one exemption set holds before the family's
    /// exemptions are cut into sets by address block ([`crate::model::shard`]).
    pub max_set_prefixes: usize,
}

impl PolicyFlags {
    /// The most config bytes read, all files together: [`CONFIG_BYTES_PER_PREFIX`] per
    /// prefix of `--max-prefixes`, at least [`MIN_CONFIG_BYTES`].
    pub fn max_config_bytes(&self) -> u64 {
        (self.max_prefixes as u64)
            .saturating_mul(CONFIG_BYTES_PER_PREFIX)
            .max(MIN_CONFIG_BYTES)
    }
}

impl Default for PolicyFlags {
    fn default() -> Self {
        PolicyFlags {
            nomasq_all_reserved_ranges: false,
            enable_ipv6: false,
            random_fully: true,
            to_ports: None,
            max_prefixes: DEFAULT_MAX_PREFIXES,
            chain_priority: priority::ChainPriority::DEFAULT,
            max_set_prefixes: crate::model::shard::DEFAULT_MAX_SET_PREFIXES,
        }
    }
}

/// Where a configured value came from, for log notes, `--explain` and the annotations of
/// `--dump` / `--dry-run`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Origin {
    /// A config file: its index in [`Config::files`], and the list index in its key.
    File {
        /// Index into [`Config::files`].
        file: usize,
        /// Index in the file's list.
        index: usize,
    },
    /// ip-masq-agent's default list (no file set the key).
    Default,
    /// `--nomasq-all-reserved-ranges`'s additions to the default list.
    ReservedRanges,
}

/// A configured value and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry<T> {
    /// The value.
    pub value: T,
    /// Where it came from.
    pub origin: Origin,
}

/// A `snatTo` entry: one address, or an inclusive range of one family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SnatTarget {
    /// First address.
    pub first: IpAddr,
    /// Last address (equal to `first` for one address).
    pub last: IpAddr,
}

impl SnatTarget {
    /// The family of the addresses.
    pub fn family(&self) -> Family {
        Family::of_addr(&self.first)
    }
}

impl fmt::Display for SnatTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

/// A `snatRules` entry: the sources it holds, and the address each family of them leaves
/// with (the entry of the longest prefix holding a source chooses its address).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnatRule {
    /// `sourceCIDRs`: IPv4 and IPv6 prefixes, none in another entry.
    pub source_cidrs: Vec<IpNet>,
    /// `snatTo`: at most one address per family; each prefix's family has one.
    pub snat_to: Vec<SnatTarget>,
}

impl SnatRule {
    /// The address of `family`, if the entry has one.
    pub fn target(&self, family: Family) -> Option<SnatTarget> {
        self.snat_to.iter().find(|t| t.family() == family).copied()
    }
}

/// The config keys, as one file states them; `None` is a key the file does not set (absent
/// or null). Several files merge into one [`Config`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileConfig {
    /// `nonMasqueradeCIDRs`.
    pub non_masquerade_cidrs: Option<Vec<IpNet>>,
    /// `masqueradeCIDRs`.
    pub masquerade_cidrs: Option<Vec<IpNet>>,
    /// `sourceCIDRs`.
    pub source_cidrs: Option<Vec<IpNet>>,
    /// `egressInterfaces`.
    pub egress_interfaces: Option<Vec<Interface>>,
    /// `snatTo`: at most one entry per family.
    pub snat_to: Option<Vec<SnatTarget>>,
    /// `snatRules`: per source prefix, the address to leave with.
    pub snat_rules: Option<Vec<SnatRule>>,
    /// `cidrLimit`: bounds this file's lists.
    pub cidr_limit: Option<usize>,
    /// `masqLinkLocal`.
    pub masq_link_local: Option<bool>,
    /// `masqLinkLocalIPv6`.
    pub masq_link_local_ipv6: Option<bool>,
    /// `resyncInterval`.
    pub resync_interval: Option<Duration>,
}

/// A validated configuration, merged from every file. Every field is in force; defaults are
/// already applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The files it was read from, in merge order (empty: no file, the defaults).
    pub files: Vec<PathBuf>,
    /// Destinations not to masquerade, as given (valid, host bits clear), in file order.
    pub non_masquerade_cidrs: Vec<Entry<IpNet>>,
    /// Destinations always masqueraded, carved out of the non-masquerade ranges.
    pub masquerade_cidrs: Vec<Entry<IpNet>>,
    /// Sources considered for translation; empty: every source.
    pub source_cidrs: Vec<Entry<IpNet>>,
    /// Egress interfaces translated on; empty: every interface.
    pub egress_interfaces: Vec<Entry<Interface>>,
    /// Addresses to SNAT to instead of masquerading, at most one per family.
    pub snat_to: Vec<Entry<SnatTarget>>,
    /// Per source prefix, the address to SNAT to (longest prefix first); sources no entry
    /// holds fall back to `snat_to` or masquerade.
    pub snat_rules: Vec<Entry<SnatRule>>,
    /// Masquerade 169.254.0.0/16 too.
    pub masq_link_local: bool,
    /// Masquerade fe80::/10 too.
    pub masq_link_local_ipv6: bool,
    /// Period of the full check that backs up the event-driven updates.
    pub resync_interval: Duration,
}

fn net(s: &str) -> IpNet {
    // Only called on the constant lists above, which the tests parse.
    s.parse()
        .unwrap_or_else(|_| panic!("bad built-in CIDR {s}"))
}

/// Entries for values given in code (tests, benchmarks): as if from one file, in order.
pub fn entries<T>(values: impl IntoIterator<Item = T>) -> Vec<Entry<T>> {
    values
        .into_iter()
        .enumerate()
        .map(|(index, value)| Entry {
            value,
            origin: Origin::File { file: 0, index },
        })
        .collect()
}

/// The values of a list of entries.
pub fn values<T>(list: &[Entry<T>]) -> impl Iterator<Item = &T> {
    list.iter().map(|e| &e.value)
}

impl Config {
    /// ip-masq-agent's default `nonMasqueradeCIDRs`, with their origins.
    pub fn default_non_masquerade(flags: &PolicyFlags) -> Vec<Entry<IpNet>> {
        let mut list: Vec<Entry<IpNet>> = RFC1918_RANGES
            .iter()
            .map(|s| Entry {
                value: net(s),
                origin: Origin::Default,
            })
            .collect();
        if flags.nomasq_all_reserved_ranges {
            list.extend(OTHER_RESERVED_RANGES.iter().map(|s| Entry {
                value: net(s),
                origin: Origin::ReservedRanges,
            }));
        }
        list
    }

    /// The configuration used when no file exists, or it is empty or only comments.
    pub fn defaults(flags: &PolicyFlags) -> Config {
        Config {
            files: Vec::new(),
            non_masquerade_cidrs: Config::default_non_masquerade(flags),
            masquerade_cidrs: Vec::new(),
            source_cidrs: Vec::new(),
            egress_interfaces: Vec::new(),
            snat_to: Vec::new(),
            snat_rules: Vec::new(),
            masq_link_local: false,
            masq_link_local_ipv6: false,
            resync_interval: DEFAULT_RESYNC_INTERVAL,
        }
    }

    /// The link-local range of `family` when it is exempt from masquerading (unless
    /// `masqLinkLocal` / `masqLinkLocalIPv6` says otherwise): ip-masq-agent's rule, kept in
    /// this one place.
    pub fn link_local_exempt(&self, family: Family) -> Option<IpNet> {
        match family {
            Family::V4 if !self.masq_link_local => Some(net(LINK_LOCAL_V4)),
            Family::V6 if !self.masq_link_local_ipv6 => Some(net(LINK_LOCAL_V6)),
            _ => None,
        }
    }

    /// The file an origin names.
    pub fn file_of(&self, origin: Origin) -> Option<&Path> {
        match origin {
            Origin::File { file, .. } => self.files.get(file).map(PathBuf::as_path),
            _ => None,
        }
    }

    /// How an entry of `key` is named in notes and annotations: `key[index]`, with its file
    /// when several are merged, or what the default is.
    pub fn label(&self, key: &str, origin: Origin) -> String {
        match origin {
            Origin::File { index, .. } if self.files.len() > 1 => {
                let path = self.file_of(origin).unwrap_or(Path::new("?"));
                format!("{key}[{index}] of {}", path.display())
            }
            Origin::File { index, .. } => format!("{key}[{index}]"),
            Origin::Default => format!("{key} (ip-masq-agent's default)"),
            Origin::ReservedRanges => format!("{key} (--nomasq-all-reserved-ranges)"),
        }
    }
}

/// A validated config with what the operator should know about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    /// The configuration in force.
    pub config: Config,
    /// Notes for the log: merged overlaps, entries without effect, case-insensitive keys.
    pub notes: Vec<String>,
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod tests_snat_rules;
