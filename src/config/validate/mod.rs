//! Validation: one config file's bytes into a [`FileConfig`], strictly, collecting every
//! problem; [`super::merge`] then makes one [`super::Config`] of the files (and
//! [`super::parse`] of one file alone). Pure.
//!
//! Two steps, as the habit "parse, then validate into new types" asks: the file is read as a
//! generic YAML tree (JSON is YAML), then every key is checked by hand, collecting *every*
//! problem with the key, list index and value it concerns. Doing the second step by hand
//! instead of with `#[derive(Deserialize)]` is what lets one bad entry be reported together
//! with all the others, and an unknown key be rejected with a suggestion instead of being
//! silently ignored (a typo must never change what is masqueraded).
//!
//! This module reads the document and every key but one: `snatRules`, whose entries are
//! mappings with lists of their own, is read in `snat_rules.rs`, by more methods of the same
//! validator, so its problems are collected (and counted against the limit) with the others.

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use ipnet::IpNet;

use super::duration::parse_go_duration;
use super::snat::parse_snat_target;
use super::yaml::{self, Node as Value};
use super::{
    Config, ConfigError, DEFAULT_CIDR_LIMIT, FileConfig, Interface, KNOWN_KEYS, MAX_PROBLEMS,
    MIN_RESYNC_INTERVAL, PolicyFlags, Problem, SnatTarget,
};
use crate::addr::prefix::Family;

// `snatRules` entries: more methods of the validator below.
mod snat_rules;

/// What one file says, validated but not merged, with notes for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    /// The keys the file sets.
    pub config: FileConfig,
    /// Notes about the file itself (keys matched case-insensitively).
    pub notes: Vec<String>,
}

/// Validates the bytes of one file, on its own.
pub fn parse_file(bytes: &[u8], path: &Path, flags: &PolicyFlags) -> Result<Parsed, ConfigError> {
    match std::str::from_utf8(bytes) {
        Ok(text) => parse_file_str(text, path, flags),
        Err(_) => Err(ConfigError::Invalid {
            path: path.to_path_buf(),
            problems: vec![Problem {
                key: "(file)".into(),
                value: None,
                message: "not valid UTF-8 text".into(),
            }],
        }),
    }
}

/// Validates the text of one file, on its own.
pub fn parse_file_str(text: &str, path: &Path, flags: &PolicyFlags) -> Result<Parsed, ConfigError> {
    let invalid = |problems| ConfigError::Invalid {
        path: path.to_path_buf(),
        problems,
    };
    let limits = yaml::Limits::for_max_prefixes(flags.max_prefixes);
    let doc = yaml::parse(text, &limits).map_err(|e| {
        invalid(vec![Problem {
            key: "(document)".into(),
            value: None,
            message: format!("not valid YAML or JSON: {e}"),
        }])
    })?;
    let mut v = Validator {
        flags,
        problems: Vec::new(),
        more_problems: 0,
        notes: Vec::new(),
    };
    let config = v.document(untag(&doc));
    if v.more_problems > 0 {
        v.problems.push(Problem {
            key: "…".into(),
            value: None,
            message: format!("and {} more problems like these", v.more_problems),
        });
    }
    if v.problems.is_empty() {
        Ok(Parsed {
            config,
            notes: v.notes,
        })
    } else {
        Err(invalid(v.problems))
    }
}

/// Whether a document is a whole Kubernetes ConfigMap manifest (`kind: ConfigMap`, or
/// `apiVersion` with `data`) rather than the config it carries: the hint to give, naming
/// the `data` keys found.
fn configmap_manifest(map: &[(Value, Value)]) -> Option<String> {
    let get = |name: &str| {
        map.iter().find_map(|(k, v)| match untag(k) {
            Value::Str(s) if s == name => Some(untag(v)),
            _ => None,
        })
    };
    let kind = match get("kind") {
        Some(Value::Str(s)) => Some(s.as_str()),
        _ => None,
    };
    let data = get("data");
    if kind != Some("ConfigMap") && !(get("apiVersion").is_some() && data.is_some()) {
        return None;
    }
    let keys: Vec<String> = match data {
        Some(Value::Map(m)) => m
            .iter()
            .filter_map(|(k, _)| match untag(k) {
                Value::Str(s) => Some(s.clone()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    let found = if keys.is_empty() {
        "it has no data keys".to_string()
    } else {
        format!("its data keys: {}", keys.join(", "))
    };
    Some(format!(
        "this is a Kubernetes {} manifest, not the config it carries ({found}): pass the value \
         of data.ip-masq-agent, the file its volume mounts at /etc/config/ip-masq-agent \
         (kubectl get configmap NAME -o jsonpath='{{.data.ip-masq-agent}}' > FILE)",
        kind.unwrap_or("ConfigMap-like")
    ))
}

fn untag(v: &Value) -> &Value {
    match v {
        Value::Tagged(_, v) => untag(v),
        other => other,
    }
}

/// Compact, single-line rendering of a YAML value for messages.
fn show(v: &Value) -> String {
    match untag(v) {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Int(n) => n.to_string(),
        Value::Float(f) => f.to_string(),
        Value::Str(s) => format!("{s:?}"),
        Value::Seq(items) => {
            let mut parts: Vec<String> = items.iter().take(4).map(show).collect();
            if items.len() > 4 {
                parts.push(format!("… {} more", items.len() - 4));
            }
            format!("[{}]", parts.join(", "))
        }
        Value::Map(m) => format!("{{mapping with {} keys}}", m.len()),
        Value::Tagged(..) => "(tagged value)".into(),
    }
}

fn kind(v: &Value) -> &'static str {
    match untag(v) {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Int(_) | Value::Float(_) => "a number",
        Value::Str(_) => "a string",
        Value::Seq(_) => "a list",
        Value::Map(_) => "a mapping",
        Value::Tagged(..) => "a tagged value",
    }
}

struct Validator<'a> {
    flags: &'a PolicyFlags,
    problems: Vec<Problem>,
    more_problems: usize,
    notes: Vec<String>,
}

impl Validator<'_> {
    fn problem(
        &mut self,
        key: impl Into<String>,
        value: Option<&Value>,
        message: impl Into<String>,
    ) {
        self.push(Problem {
            key: key.into(),
            value: value.map(show),
            message: message.into(),
        });
    }

    /// Records a problem; past [`MAX_PROBLEMS`] only counts it (a 100,000-entry list of bad
    /// values must not become a 100,000-line log message).
    fn push(&mut self, p: Problem) {
        if self.problems.len() < MAX_PROBLEMS {
            self.problems.push(p);
        } else {
            self.more_problems += 1;
        }
    }

    /// The whole document: resolve the keys, validate each value, check the limits.
    fn document(&mut self, doc: &Value) -> FileConfig {
        let mut config = FileConfig::default();
        let map = match doc {
            // An empty or comment-only file parses as null: it sets nothing, like
            // ip-masq-agent's (the defaults then apply).
            Value::Null => return config,
            Value::Map(m) => m,
            other => {
                self.problem(
                    "(document)",
                    Some(other),
                    format!("expected a mapping of config keys, got {}", kind(other)),
                );
                return config;
            }
        };
        if let Some(message) = configmap_manifest(map) {
            // One problem, not one "unknown key" per field of the manifest.
            self.problem("(document)", None, message);
            return config;
        }
        for (key, value) in self.resolve_keys(map) {
            self.apply(&mut config, key, untag(value));
        }
        self.check_cidr_limit(&config);
        config
    }

    /// Matches each key to a known one: exactly, else case-insensitively (Go's encoding/json
    /// matches field names that way, so ip-masq-agent accepts `CidrLimit`), else it is
    /// unknown and reported with a hint. A key given twice is reported too.
    fn resolve_keys<'v>(&mut self, map: &'v [(Value, Value)]) -> Vec<(&'static str, &'v Value)> {
        let mut seen: Vec<(&'static str, String)> = Vec::new();
        let mut entries = Vec::new();
        for (k, value) in map {
            let name = match untag(k) {
                Value::Str(s) => s.clone(),
                other => {
                    self.problem("(document)", Some(other), "keys must be strings");
                    continue;
                }
            };
            let Some(known) = known_key(&name) else {
                let hint = suggest(&name)
                    .map(|s| format!("; did you mean {s}?"))
                    .unwrap_or_else(|| format!("; known keys: {}", KNOWN_KEYS.join(", ")));
                self.problem(name, Some(value), format!("unknown key{hint}"));
                continue;
            };
            if let Some((_, first)) = seen.iter().find(|(k, _)| *k == known) {
                let message = if *first == name {
                    format!("{known} is given twice")
                } else {
                    format!("{known} is given twice (as {first} and {name})")
                };
                self.problem(name.clone(), Some(value), message);
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
        entries
    }

    /// Validates one key's value into `config`; a problem leaves the key unset.
    fn apply(&mut self, config: &mut FileConfig, key: &'static str, value: &Value) {
        if matches!(value, Value::Null) {
            // ip-masq-agent (Go encoding/json) leaves the default in place for null.
            return;
        }
        match key {
            "nonMasqueradeCIDRs" => config.non_masquerade_cidrs = self.cidr_list(key, value),
            "masqueradeCIDRs" => config.masquerade_cidrs = self.cidr_list(key, value),
            "sourceCIDRs" => config.source_cidrs = self.cidr_list(key, value),
            "egressInterfaces" => config.egress_interfaces = self.interfaces(value),
            "snatTo" => config.snat_to = self.snat_targets("snatTo", value),
            "snatRules" => config.snat_rules = self.snat_rules(value),
            "cidrLimit" => config.cidr_limit = self.cidr_limit(value),
            "masqLinkLocal" => config.masq_link_local = self.boolean(key, value),
            "masqLinkLocalIPv6" => config.masq_link_local_ipv6 = self.boolean(key, value),
            "resyncInterval" => config.resync_interval = self.resync_interval(value),
            _ => unreachable!("every known key is handled"),
        }
    }

    /// `cidrLimit` bounds each list of the file (and ip-masq-agent's default list, when the
    /// file leaves `nonMasqueradeCIDRs` to it, as ip-masq-agent does).
    fn check_cidr_limit(&mut self, config: &FileConfig) {
        let limit = config.cidr_limit.unwrap_or(DEFAULT_CIDR_LIMIT);
        let default_len = Config::default_non_masquerade(self.flags).len();
        let lens = [
            (
                "nonMasqueradeCIDRs",
                config
                    .non_masquerade_cidrs
                    .as_ref()
                    .map_or(default_len, Vec::len),
            ),
            (
                "masqueradeCIDRs",
                config.masquerade_cidrs.as_ref().map_or(0, Vec::len),
            ),
            (
                "sourceCIDRs",
                config.source_cidrs.as_ref().map_or(0, Vec::len),
            ),
            (
                "egressInterfaces",
                config.egress_interfaces.as_ref().map_or(0, Vec::len),
            ),
            // Every source prefix of every entry, as the other lists count prefixes.
            (
                "snatRules",
                config
                    .snat_rules
                    .iter()
                    .flatten()
                    .map(|r| r.source_cidrs.len())
                    .sum(),
            ),
        ];
        for (key, len) in lens {
            if len > limit {
                self.push(Problem {
                    key: key.into(),
                    value: Some(format!("({len} entries)")),
                    message: format!(
                        "more entries than cidrLimit ({limit}); raise cidrLimit if this is \
                         intended"
                    ),
                });
            }
        }
    }

    /// A list of strings, each validated by `parse`; the whole list, or `None` on problems.
    fn list<T>(
        &mut self,
        key: &str,
        value: &Value,
        what: &str,
        mut parse: impl FnMut(&mut Self, &str) -> Result<T, String>,
    ) -> Option<Vec<T>> {
        let Value::Seq(items) = value else {
            self.problem(
                key,
                Some(value),
                format!("expected a list of {what} strings, got {}", kind(value)),
            );
            return None;
        };
        let before = self.problems.len() + self.more_problems;
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let at = format!("{key}[{i}]");
            let Value::Str(s) = untag(item) else {
                let article = if what.starts_with(['a', 'e', 'i', 'o', 'u']) {
                    "an"
                } else {
                    "a"
                };
                self.problem(
                    at,
                    Some(item),
                    format!("expected {article} {what} string, got {}", kind(item)),
                );
                continue;
            };
            match parse(self, s) {
                Ok(v) => out.push(v),
                Err(msg) => self.problem(at, Some(item), msg),
            }
        }
        (self.problems.len() + self.more_problems == before).then_some(out)
    }

    fn cidr_list(&mut self, key: &str, value: &Value) -> Option<Vec<IpNet>> {
        self.list(key, value, "CIDR", |v, s| {
            let net = parse_cidr(s)?;
            v.family_enabled(Family::of(&net), "IPv6 CIDR")?;
            Ok(net)
        })
    }

    /// IPv6 needs `--enable-ipv6`; the error says so.
    fn family_enabled(&self, family: Family, what: &str) -> Result<(), String> {
        if family == Family::V6 && !self.flags.enable_ipv6 {
            return Err(format!(
                "{what}, but IPv6 is not enabled (start the agent with --enable-ipv6)"
            ));
        }
        Ok(())
    }

    fn interfaces(&mut self, value: &Value) -> Option<Vec<Interface>> {
        self.list("egressInterfaces", value, "interface name", |_, s| {
            s.parse()
        })
    }

    /// `snatTo` (at `key`): an address or an inclusive range `A-B` per entry, at most one
    /// per family.
    fn snat_targets(&mut self, key: &str, value: &Value) -> Option<Vec<SnatTarget>> {
        let mut seen: Vec<(Family, usize)> = Vec::new();
        let mut index = 0;
        self.list(key, value, "address or address range", |v, s| {
            let at = index;
            index += 1;
            let target = parse_snat_target(s)?;
            let family = target.family();
            v.family_enabled(family, "IPv6 address")?;
            if let Some((_, first)) = seen.iter().find(|(f, _)| *f == family) {
                return Err(format!(
                    "a second {} entry ({key}[{first}] is one): at most one address or range \
                     per family",
                    family_name(family)
                ));
            }
            seen.push((family, at));
            Ok(target)
        })
    }

    fn cidr_limit(&mut self, value: &Value) -> Option<usize> {
        match value {
            Value::Int(n) if *n >= 0 => Some(usize::try_from(*n).unwrap_or(usize::MAX)),
            Value::Int(_) => {
                self.problem("cidrLimit", Some(value), "must not be negative");
                None
            }
            Value::Float(_) => {
                self.problem("cidrLimit", Some(value), "expected a whole number");
                None
            }
            other => {
                self.problem(
                    "cidrLimit",
                    Some(other),
                    format!("expected a whole number, got {}", kind(other)),
                );
                None
            }
        }
    }

    fn boolean(&mut self, key: &str, value: &Value) -> Option<bool> {
        match value {
            // Plain yes/no/on/off are booleans already (YAML 1.1, as ip-masq-agent reads).
            Value::Bool(b) => Some(*b),
            // A quoted one is a string, which ip-masq-agent's JSON decoding refuses for a
            // boolean field: refused here too, rather than accepted by one and not the other.
            Value::Str(s) => {
                let bare = s.trim().to_ascii_lowercase();
                let message = if matches!(
                    bare.as_str(),
                    "true" | "false" | "yes" | "no" | "on" | "off" | "y" | "n"
                ) {
                    format!(
                        "expected true or false, got a string: write {key}: {} without quotes \
                         (ip-masq-agent refuses a string here too)",
                        matches!(bare.as_str(), "true" | "yes" | "on" | "y")
                    )
                } else {
                    "expected true or false, got a string".to_string()
                };
                self.problem(key, Some(value), message);
                None
            }
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
        let Value::Str(s) = value else {
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
            Ok(d) if d.negative || d.magnitude < MIN_RESYNC_INTERVAL => {
                self.problem(
                    "resyncInterval",
                    Some(value),
                    format!(
                        "must be at least {MIN_RESYNC_INTERVAL:?}: every resync reads the whole \
                         table back"
                    ),
                );
                None
            }
            Ok(d) => Some(d.magnitude),
            Err(e) => {
                self.problem("resyncInterval", Some(value), e.to_string());
                None
            }
        }
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

fn family_name(f: Family) -> &'static str {
    match f {
        Family::V4 => "IPv4",
        Family::V6 => "IPv6",
    }
}

/// The known key `name` stands for: exactly, else case-insensitively.
fn known_key(name: &str) -> Option<&'static str> {
    KNOWN_KEYS
        .iter()
        .find(|known| **known == name)
        .or_else(|| {
            KNOWN_KEYS
                .iter()
                .find(|known| known.eq_ignore_ascii_case(name))
        })
        .copied()
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
