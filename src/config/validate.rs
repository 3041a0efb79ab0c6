//! Validation: config bytes into a [`Config`], strictly, collecting every problem. Pure.
//!
//! Two steps, as the habit "parse, then validate into new types" asks: the file is read as a
//! generic YAML tree (JSON is YAML), then every key is checked by hand, collecting *every*
//! problem with the key, list index and value it concerns. Doing the second step by hand
//! instead of with `#[derive(Deserialize)]` is what lets one bad entry be reported together
//! with all the others, and an unknown key be rejected with a suggestion instead of being
//! silently ignored (a typo must never change what is masqueraded).

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use ipnet::IpNet;
use serde_yaml_ng::Value;

use super::duration::parse_go_duration;
use super::{
    Config, ConfigError, KNOWN_KEYS, Loaded, MAX_PROBLEMS, MIN_RESYNC_INTERVAL, PolicyFlags,
    Problem,
};
use crate::prefix::{Family, Span};

/// Validates the bytes of one config file; `path` is only used in messages.
pub fn parse(bytes: &[u8], path: &Path, flags: &PolicyFlags) -> Result<Loaded, ConfigError> {
    match std::str::from_utf8(bytes) {
        Ok(text) => parse_str(text, path, flags),
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

/// Validates config text; `path` is only used in messages.
pub fn parse_str(text: &str, path: &Path, flags: &PolicyFlags) -> Result<Loaded, ConfigError> {
    let invalid = |problems| ConfigError::Invalid {
        path: path.to_path_buf(),
        problems,
    };
    let doc: Value = serde_yaml_ng::from_str(text).map_err(|e| {
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
        Ok(Loaded {
            config,
            notes: v.notes,
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

    /// The whole document: resolve the keys, apply each value over the defaults, check the
    /// limits, then (only for a valid file) note what the operator should know.
    fn document(&mut self, doc: &Value) -> Config {
        let mut config = Config::defaults(self.flags);
        let map = match doc {
            // An empty or comment-only file parses as null: defaults, like ip-masq-agent.
            Value::Null => return config,
            Value::Mapping(m) => m,
            other => {
                self.problem(
                    "(document)",
                    Some(other),
                    format!("expected a mapping of config keys, got {}", kind(other)),
                );
                return config;
            }
        };
        for (key, value) in self.resolve_keys(map) {
            self.apply(&mut config, key, untag(value));
        }
        self.check_limits(&config);
        if self.problems.is_empty() {
            self.overlap_notes("nonMasqueradeCIDRs", &config.non_masquerade_cidrs);
            self.overlap_notes("masqueradeCIDRs", &config.masquerade_cidrs);
            self.no_effect_notes(&config);
        }
        config
    }

    /// Matches each key to a known one: exactly, else case-insensitively (Go's encoding/json
    /// matches field names that way, so ip-masq-agent accepts `CidrLimit`), else it is
    /// unknown and reported with a hint. A key given twice is reported too.
    fn resolve_keys<'v>(
        &mut self,
        map: &'v serde_yaml_ng::Mapping,
    ) -> Vec<(&'static str, &'v Value)> {
        let mut seen: Vec<(&'static str, String)> = Vec::new();
        let mut entries = Vec::new();
        for (k, value) in map {
            let name = match untag(k) {
                Value::String(s) => s.clone(),
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
        entries
    }

    /// Validates one key's value into `config`; a problem leaves the default in place.
    fn apply(&mut self, config: &mut Config, key: &'static str, value: &Value) {
        if value.is_null() {
            // ip-masq-agent (Go encoding/json) leaves the default in place for null.
            return;
        }
        match key {
            "nonMasqueradeCIDRs" => {
                set(&mut config.non_masquerade_cidrs, self.cidr_list(key, value))
            }
            "masqueradeCIDRs" => set(&mut config.masquerade_cidrs, self.cidr_list(key, value)),
            "cidrLimit" => set(&mut config.cidr_limit, self.cidr_limit(value)),
            "masqLinkLocal" => set(&mut config.masq_link_local, self.boolean(key, value)),
            "masqLinkLocalIPv6" => set(&mut config.masq_link_local_ipv6, self.boolean(key, value)),
            "resyncInterval" => set(&mut config.resync_interval, self.resync_interval(value)),
            _ => unreachable!("every known key is handled"),
        }
    }

    /// `cidrLimit` bounds each list (the default list too, as ip-masq-agent);
    /// `--max-prefixes` bounds what they make together.
    fn check_limits(&mut self, config: &Config) {
        self.check_cidr_limit(config);
        if self.problems.is_empty() {
            self.check_prefix_cap(config);
        }
    }

    /// Carving `masqueradeCIDRs` holes into wide ranges multiplies prefixes (20,000 /32
    /// holes made 336,000): the cap is on the result, counted without building it.
    fn check_prefix_cap(&mut self, config: &Config) {
        let families: &[Family] = if self.flags.enable_ipv6 {
            &[Family::V4, Family::V6]
        } else {
            &[Family::V4]
        };
        let count: usize = families
            .iter()
            .map(|f| config.non_masquerade_ranges(*f).prefix_count(f.bits()))
            .sum();
        if count > self.flags.max_prefixes {
            self.push(Problem {
                key: "(resulting table)".into(),
                value: Some(format!("({count} prefixes)")),
                message: format!(
                    "the lists make {count} prefixes after merging and carving out \
                     masqueradeCIDRs, more than --max-prefixes ({}); raise --max-prefixes (and \
                     the DaemonSet's memory limit, see docs/operations.md) if this is intended",
                    self.flags.max_prefixes
                ),
            });
        }
    }

    fn check_cidr_limit(&mut self, config: &Config) {
        for (key, list) in [
            ("nonMasqueradeCIDRs", &config.non_masquerade_cidrs),
            ("masqueradeCIDRs", &config.masquerade_cidrs),
        ] {
            if list.len() > config.cidr_limit {
                self.push(Problem {
                    key: key.into(),
                    value: Some(format!("({} entries)", list.len())),
                    message: format!(
                        "more entries than cidrLimit ({}); raise cidrLimit if this is intended",
                        config.cidr_limit
                    ),
                });
            }
        }
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
        let v4 = config.exempt_ranges(Family::V4);
        let v6 = config.exempt_ranges(Family::V6);
        let mut notes = Vec::new();
        for (i, n) in config.masquerade_cidrs.iter().enumerate() {
            let set = match Family::of(n) {
                Family::V4 => &v4,
                Family::V6 => &v6,
            };
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

/// Stores a validated value; `None` (a problem was reported) leaves the default.
fn set<T>(field: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *field = v;
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
