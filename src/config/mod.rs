//! The masquerade configuration: ip-masq-agent's file format, read strictly.
//!
//! Parsing goes in two steps, as the habit "parse, then validate into new types" asks: the
//! file is read as a generic YAML tree (JSON is YAML), then every key is checked by hand into
//! a [`Config`], collecting *every* problem with the key, list index and value it concerns.
//! Doing the second step by hand instead of with `#[derive(Deserialize)]` is what lets one bad
//! entry be reported together with all the others, and an unknown key be rejected with a
//! suggestion instead of being silently ignored (a typo must never change what is
//! masqueraded).

pub mod duration;
pub mod ports;

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde_yaml_ng::Value;

use crate::model::ranges::{RangeSet, Span};
use duration::parse_go_duration;
use ports::PortRanges;

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

/// The keys ip-masq-agent knows, plus our extension `masqueradeCIDRs`.
pub const KNOWN_KEYS: [&str; 6] = [
    "nonMasqueradeCIDRs",
    "masqueradeCIDRs",
    "cidrLimit",
    "masqLinkLocal",
    "masqLinkLocalIPv6",
    "resyncInterval",
];

/// Default `cidrLimit`, as ip-masq-agent.
pub const DEFAULT_CIDR_LIMIT: usize = 64;
/// Default `resyncInterval`, as ip-masq-agent.
pub const DEFAULT_RESYNC_INTERVAL: Duration = Duration::from_secs(60);

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
}

impl Default for PolicyFlags {
    fn default() -> Self {
        PolicyFlags {
            nomasq_all_reserved_ranges: false,
            enable_ipv6: false,
            random_fully: true,
            to_ports: None,
        }
    }
}

/// A validated configuration. Every field is in force; defaults are already applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Destinations not to masquerade, as given (valid, host bits clear), in file order.
    pub non_masquerade_cidrs: Vec<IpNet>,
    /// Destinations always masqueraded, carved out of the non-masquerade ranges.
    pub masquerade_cidrs: Vec<IpNet>,
    /// The most entries either list may hold.
    pub cidr_limit: usize,
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

impl Config {
    /// The configuration used when the file is missing, empty or only comments.
    pub fn defaults(flags: &PolicyFlags) -> Config {
        let mut non_masq: Vec<IpNet> = RFC1918_RANGES.iter().map(|s| net(s)).collect();
        if flags.nomasq_all_reserved_ranges {
            non_masq.extend(OTHER_RESERVED_RANGES.iter().map(|s| net(s)));
        }
        Config {
            non_masquerade_cidrs: non_masq,
            masquerade_cidrs: Vec::new(),
            cidr_limit: DEFAULT_CIDR_LIMIT,
            masq_link_local: false,
            masq_link_local_ipv6: false,
            resync_interval: DEFAULT_RESYNC_INTERVAL,
        }
    }
}

/// How the config was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// No file at the path: defaults.
    Missing,
    /// The file is empty or holds only comments: defaults.
    Empty,
    /// Read from the file.
    File,
}

/// A validated config with what the operator should know about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    /// The configuration in force.
    pub config: Config,
    /// Notes for the log: merged overlaps, entries without effect, case-insensitive keys.
    pub notes: Vec<String>,
    /// Whether a file was read.
    pub source: Source,
}

/// One thing wrong with a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The key, with the list index where there is one (`nonMasqueradeCIDRs[2]`).
    pub key: String,
    /// The offending value, rendered compactly, when there is one.
    pub value: Option<String>,
    /// What is wrong, for people.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            Some(v) => write!(f, "{} = {}: {}", self.key, v, self.message),
            None => write!(f, "{}: {}", self.key, self.message),
        }
    }
}

/// Why a config could not be used. The previous ruleset stays in force.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file exists but cannot be read.
    #[error("cannot read config file {path}")]
    Read {
        /// The config path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file was read and has one or more problems; all of them are listed.
    #[error("invalid config file {path}: {}", ProblemList { path, problems })]
    Invalid {
        /// The config path.
        path: PathBuf,
        /// Every problem found.
        problems: Vec<Problem>,
    },
}

struct ProblemList<'a> {
    path: &'a Path,
    problems: &'a [Problem],
}

impl fmt::Display for ProblemList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        write!(f, "{n} problem{}", if n == 1 { "" } else { "s" })?;
        for p in self.problems {
            write!(f, "\n  {}: {p}", self.path.display())?;
        }
        Ok(())
    }
}

impl ConfigError {
    /// The individual problems (empty for a read error).
    pub fn problems(&self) -> &[Problem] {
        match self {
            ConfigError::Read { .. } => &[],
            ConfigError::Invalid { problems, .. } => problems,
        }
    }
}

/// Reads and validates the config at `path`. A missing file means defaults.
pub fn load(path: &Path, flags: &PolicyFlags) -> Result<Loaded, ConfigError> {
    parse(read(path)?.as_deref(), path, flags)
}

/// Reads the config file's bytes; `None` when there is no file. Separate from [`parse`] so
/// the daemon can skip parsing a file that did not change (a 100,000-entry file takes a
/// noticeable fraction of a second to validate).
pub fn read(path: &Path) -> Result<Option<Vec<u8>>, ConfigError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(ConfigError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Validates what [`read`] returned; `path` is only used in messages.
pub fn parse(
    bytes: Option<&[u8]>,
    path: &Path,
    flags: &PolicyFlags,
) -> Result<Loaded, ConfigError> {
    match bytes {
        None => Ok(Loaded {
            config: Config::defaults(flags),
            notes: vec![format!(
                "no config file at {}: using defaults",
                path.display()
            )],
            source: Source::Missing,
        }),
        Some(bytes) => match std::str::from_utf8(bytes) {
            Ok(text) => parse_str(text, path, flags),
            Err(_) => Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                problems: vec![Problem {
                    key: "(file)".into(),
                    value: None,
                    message: "not valid UTF-8 text".into(),
                }],
            }),
        },
    }
}

/// Validates config text; `path` is only used in messages.
pub fn parse_str(text: &str, path: &Path, flags: &PolicyFlags) -> Result<Loaded, ConfigError> {
    let invalid = |problems| ConfigError::Invalid {
        path: path.to_path_buf(),
        problems,
    };
    let doc: Value = match serde_yaml_ng::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            return Err(invalid(vec![Problem {
                key: "(document)".into(),
                value: None,
                message: format!("not valid YAML or JSON: {e}"),
            }]));
        }
    };
    let mut v = Validator {
        flags,
        problems: Vec::new(),
        notes: Vec::new(),
    };
    let (config, source) = v.document(untag(&doc));
    if v.problems.is_empty() {
        Ok(Loaded {
            config,
            notes: v.notes,
            source,
        })
    } else {
        Err(invalid(v.problems))
    }
}

fn untag(v: &Value) -> &Value {
    match v {
        Value::Tagged(t) => untag(&t.value),
        other => other,
    }
}

/// Compact, single-line rendering of a YAML value for messages.
fn show(v: &Value) -> String {
    match untag(v) {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("{s:?}"),
        Value::Sequence(items) => {
            let mut parts: Vec<String> = items.iter().take(4).map(show).collect();
            if items.len() > 4 {
                parts.push(format!("… {} more", items.len() - 4));
            }
            format!("[{}]", parts.join(", "))
        }
        Value::Mapping(m) => format!("{{mapping with {} keys}}", m.len()),
        Value::Tagged(_) => "(tagged value)".into(),
    }
}

fn kind(v: &Value) -> &'static str {
    match untag(v) {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

struct Validator<'a> {
    flags: &'a PolicyFlags,
    problems: Vec<Problem>,
    notes: Vec<String>,
}

impl Validator<'_> {
    fn problem(
        &mut self,
        key: impl Into<String>,
        value: Option<&Value>,
        message: impl Into<String>,
    ) {
        self.problems.push(Problem {
            key: key.into(),
            value: value.map(show),
            message: message.into(),
        });
    }

    fn document(&mut self, doc: &Value) -> (Config, Source) {
        let mut config = Config::defaults(self.flags);
        let map = match doc {
            // An empty or comment-only file parses as null: defaults, like ip-masq-agent.
            Value::Null => return (config, Source::Empty),
            Value::Mapping(m) => m,
            other => {
                self.problem(
                    "(document)",
                    Some(other),
                    format!("expected a mapping of config keys, got {}", kind(other)),
                );
                return (config, Source::File);
            }
        };

        // Resolve keys: exact match, else case-insensitive (Go's encoding/json matches field
        // names that way, so ip-masq-agent accepts `CidrLimit`), else unknown with a hint.
        let mut seen: Vec<(&'static str, String)> = Vec::new();
        let mut entries: Vec<(&'static str, &Value)> = Vec::new();
        for (k, value) in map {
            let name = match untag(k) {
                Value::String(s) => s.clone(),
                other => {
                    self.problem("(document)", Some(other), "keys must be strings");
                    continue;
                }
            };
            let known = KNOWN_KEYS.iter().find(|known| **known == name).or_else(|| {
                KNOWN_KEYS
                    .iter()
                    .find(|known| known.eq_ignore_ascii_case(&name))
            });
            let Some(&known) = known else {
                let hint = suggest(&name)
                    .map(|s| format!("; did you mean {s}?"))
                    .unwrap_or_else(|| format!("; known keys: {}", KNOWN_KEYS.join(", ")));
                self.problem(name, Some(value), format!("unknown key{hint}"));
                continue;
            };
            if let Some((_, first)) = seen.iter().find(|(k, _)| *k == known) {
                self.problem(
                    name.clone(),
                    Some(value),
                    format!("{known} is given twice (as {first} and {name})"),
                );
                continue;
            }
            if known != name {
                self.notes.push(format!(
                    "key {name} taken as {known} (keys match case-insensitively, as in \
                     ip-masq-agent); write {known}"
                ));
            }
            seen.push((known, name));
            entries.push((known, value));
        }

        for (key, value) in entries {
            let value = untag(value);
            if value.is_null() {
                // ip-masq-agent (Go encoding/json) leaves the default in place for null.
                continue;
            }
            match key {
                "nonMasqueradeCIDRs" => {
                    if let Some(list) = self.cidr_list(key, value) {
                        config.non_masquerade_cidrs = list;
                    }
                }
                "masqueradeCIDRs" => {
                    if let Some(list) = self.cidr_list(key, value) {
                        config.masquerade_cidrs = list;
                    }
                }
                "cidrLimit" => {
                    if let Some(n) = self.cidr_limit(value) {
                        config.cidr_limit = n;
                    }
                }
                "masqLinkLocal" => {
                    if let Some(b) = self.boolean(key, value) {
                        config.masq_link_local = b;
                    }
                }
                "masqLinkLocalIPv6" => {
                    if let Some(b) = self.boolean(key, value) {
                        config.masq_link_local_ipv6 = b;
                    }
                }
                "resyncInterval" => {
                    if let Some(d) = self.resync_interval(value) {
                        config.resync_interval = d;
                    }
                }
                _ => unreachable!("every known key is handled"),
            }
        }

        for (key, list) in [
            ("nonMasqueradeCIDRs", &config.non_masquerade_cidrs),
            ("masqueradeCIDRs", &config.masquerade_cidrs),
        ] {
            if list.len() > config.cidr_limit {
                self.problems.push(Problem {
                    key: key.into(),
                    value: Some(format!("({} entries)", list.len())),
                    message: format!(
                        "more entries than cidrLimit ({}); raise cidrLimit if this is intended",
                        config.cidr_limit
                    ),
                });
            }
        }
        if self.problems.is_empty() {
            self.overlap_notes("nonMasqueradeCIDRs", &config.non_masquerade_cidrs);
            self.overlap_notes("masqueradeCIDRs", &config.masquerade_cidrs);
            self.no_effect_notes(&config);
        }
        (config, Source::File)
    }

    fn cidr_list(&mut self, key: &str, value: &Value) -> Option<Vec<IpNet>> {
        let Value::Sequence(items) = value else {
            self.problem(
                key,
                Some(value),
                format!("expected a list of CIDR strings, got {}", kind(value)),
            );
            return None;
        };
        let before = self.problems.len();
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let at = format!("{key}[{i}]");
            let Value::String(s) = untag(item) else {
                self.problem(
                    at,
                    Some(item),
                    format!("expected a CIDR string, got {}", kind(item)),
                );
                continue;
            };
            match parse_cidr(s) {
                Ok(net) => {
                    if net.addr().is_ipv6() && !self.flags.enable_ipv6 {
                        self.problem(
                            at,
                            Some(item),
                            "IPv6 CIDR, but IPv6 is not enabled (start the agent with \
                             --enable-ipv6)",
                        );
                    } else {
                        out.push(net);
                    }
                }
                Err(msg) => self.problem(at, Some(item), msg),
            }
        }
        (self.problems.len() == before).then_some(out)
    }

    fn cidr_limit(&mut self, value: &Value) -> Option<usize> {
        let n = match value {
            Value::Number(n) => n,
            other => {
                self.problem(
                    "cidrLimit",
                    Some(other),
                    format!("expected a whole number, got {}", kind(other)),
                );
                return None;
            }
        };
        match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => Some(usize::try_from(u).unwrap_or(usize::MAX)),
            (None, Some(_)) => {
                self.problem("cidrLimit", Some(value), "must not be negative");
                None
            }
            _ => {
                self.problem("cidrLimit", Some(value), "expected a whole number");
                None
            }
        }
    }

    fn boolean(&mut self, key: &str, value: &Value) -> Option<bool> {
        match value {
            Value::Bool(b) => Some(*b),
            // ip-masq-agent reads YAML 1.1 (go-yaml v2), where yes/no/on/off are booleans;
            // our YAML 1.2 parser sees strings, so accept those spellings for compatibility.
            Value::String(s) => match s.as_str() {
                "y" | "Y" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" | "true" | "True"
                | "TRUE" => Some(true),
                "n" | "N" | "no" | "No" | "NO" | "off" | "Off" | "OFF" | "false" | "False"
                | "FALSE" => Some(false),
                _ => {
                    self.problem(key, Some(value), "expected true or false");
                    None
                }
            },
            other => {
                self.problem(
                    key,
                    Some(other),
                    format!("expected true or false, got {}", kind(other)),
                );
                None
            }
        }
    }

    fn resync_interval(&mut self, value: &Value) -> Option<Duration> {
        let Value::String(s) = value else {
            self.problem(
                "resyncInterval",
                Some(value),
                format!(
                    "expected a duration string such as \"60s\" or \"1m30s\", got {}",
                    kind(value)
                ),
            );
            return None;
        };
        match parse_go_duration(s) {
            Ok(d) if d.negative || d.magnitude.is_zero() => {
                self.problem("resyncInterval", Some(value), "must be positive");
                None
            }
            Ok(d) => Some(d.magnitude),
            Err(e) => {
                self.problem("resyncInterval", Some(value), e.to_string());
                None
            }
        }
    }

    /// Notes entries that lie inside (or repeat) an earlier-sorted entry of the same list;
    /// the model merges them, so they change nothing, but the operator should know.
    fn overlap_notes(&mut self, key: &str, list: &[IpNet]) {
        let mut idx: Vec<(u8, Span, usize)> = list
            .iter()
            .enumerate()
            .map(|(i, n)| (u8::from(n.addr().is_ipv6()), Span::of(n), i))
            .collect();
        idx.sort_by_key(|(fam, span, i)| (*fam, span.lo, std::cmp::Reverse(span.hi), *i));
        let mut notes = Vec::new();
        let mut cover: Option<(u8, Span, usize)> = None;
        for (fam, span, i) in idx {
            match cover {
                Some((cf, c, ci)) if cf == fam && span.hi <= c.hi => {
                    let what = if span == c { "repeats" } else { "lies inside" };
                    notes.push(format!(
                        "{key}[{i}] {} {what} {key}[{ci}] {}; merged",
                        list[i], list[ci]
                    ));
                }
                _ => cover = Some((fam, span, i)),
            }
        }
        self.push_capped(notes);
    }

    /// Notes `masqueradeCIDRs` entries that do not intersect any non-masquerade range.
    fn no_effect_notes(&mut self, config: &Config) {
        if config.masquerade_cidrs.is_empty() {
            return;
        }
        let mut non_masq: Vec<IpNet> = config.non_masquerade_cidrs.clone();
        if !config.masq_link_local {
            non_masq.push(net(LINK_LOCAL_V4));
        }
        if !config.masq_link_local_ipv6 && self.flags.enable_ipv6 {
            non_masq.push(net(LINK_LOCAL_V6));
        }
        let v4 = RangeSet::from_nets(non_masq.iter().filter(|n| n.addr().is_ipv4()));
        let v6 = RangeSet::from_nets(non_masq.iter().filter(|n| n.addr().is_ipv6()));
        let mut notes = Vec::new();
        for (i, n) in config.masquerade_cidrs.iter().enumerate() {
            let set = if n.addr().is_ipv4() { &v4 } else { &v6 };
            if !set.intersects(Span::of(n)) {
                notes.push(format!(
                    "masqueradeCIDRs[{i}] {n} is outside every non-masquerade range, so it \
                     changes nothing (those destinations are masqueraded anyway)"
                ));
            }
        }
        self.push_capped(notes);
    }

    fn push_capped(&mut self, mut notes: Vec<String>) {
        const MAX: usize = 20;
        if notes.len() > MAX {
            let more = notes.len() - MAX;
            notes.truncate(MAX);
            notes.push(format!("… and {more} more like these"));
        }
        self.notes.extend(notes);
    }
}

/// Parses one CIDR as ip-masq-agent's `validateCIDR` does (Go's `net.ParseCIDR` plus the
/// alignment check), with a message saying exactly what is wrong.
pub fn parse_cidr(s: &str) -> Result<IpNet, String> {
    let Some((addr, len)) = s.split_once('/') else {
        return Err("not a CIDR: missing /prefix-length (write e.g. 10.0.0.0/8)".into());
    };
    let addr: IpAddr = addr
        .parse()
        .map_err(|_| format!("not a CIDR: {addr:?} is not an IP address"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let family = if addr.is_ipv4() { "IPv4" } else { "IPv6" };
    if len.is_empty() || !len.bytes().all(|b| b.is_ascii_digit()) || len.len() > 3 {
        return Err(format!(
            "not a CIDR: prefix length {len:?} is not a number from 0 to {max}"
        ));
    }
    let len: u8 = len
        .parse()
        .map_err(|_| "prefix length out of range".to_string())?;
    if len > max {
        return Err(format!(
            "prefix length {len} is out of range for {family} (0-{max})"
        ));
    }
    let net = IpNet::new(addr, len).map_err(|e| e.to_string())?;
    if net.trunc() != net {
        return Err(format!(
            "host bits are set; the network containing this address is {}",
            net.trunc()
        ));
    }
    Ok(net)
}

/// The known key closest to `name`, if close enough to be a plausible typo.
fn suggest(name: &str) -> Option<&'static str> {
    let lower = name.to_ascii_lowercase();
    KNOWN_KEYS
        .iter()
        .map(|k| (strsim::levenshtein(&lower, &k.to_ascii_lowercase()), *k))
        .filter(|(d, k)| *d <= (k.len() / 3).max(2))
        .min()
        .map(|(_, k)| k)
}

#[cfg(test)]
mod tests;
