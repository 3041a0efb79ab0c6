//! Several config files into one [`Config`]: ip-masq-agent-v2's merge where it has the key,
//! and the same idea for ours. Pure.
//!
//! - Lists are unioned (`nonMasqueradeCIDRs`, `masqueradeCIDRs`, `sourceCIDRs`,
//!   `egressInterfaces`); each entry keeps its file and index for notes and `--explain`.
//! - `masqLinkLocal` / `masqLinkLocalIPv6` are OR'd.
//! - `resyncInterval` is the smallest given.
//! - `cidrLimit` bounds each file on its own (checked when the file was validated).
//! - `snatRules`: entries concatenated; the same source prefix in two files with different
//!   addresses is an error naming both files and entries (the same address twice is one).
//! - `snatTo`: every file that sets a family's entry must set the same one; two different
//!   values are an error naming both files.
//! - A key no file sets keeps ip-masq-agent's default, so one file behaves exactly as in
//!   ip-masq-agent (ip-masq-agent-v2 would leave `nonMasqueradeCIDRs` empty instead; see
//!   docs/design.md).
//!
//! The cap on the resulting prefixes applies to the merged config, and so do the notes about
//! overlapping and ineffective entries.

use std::path::PathBuf;

use super::validate::Parsed;
use super::{
    Config, ConfigError, DEFAULT_RESYNC_INTERVAL, Entry, Loaded, Origin, PolicyFlags, Problem,
    SnatRule, SnatTarget,
};
use crate::addr::prefix::{Family, Span};

/// The most notes of one kind; the rest are counted.
const MAX_NOTES: usize = 20;

/// Merges validated files (in this order) into the config in force.
pub fn merge(files: Vec<(PathBuf, Parsed)>, flags: &PolicyFlags) -> Result<Loaded, ConfigError> {
    let mut config = Config::defaults(flags);
    let mut notes = Vec::new();
    let multi = files.len() > 1;
    let mut non_masq: Option<Vec<Entry<ipnet::IpNet>>> = None;
    let mut resync = None;
    for (i, (path, parsed)) in files.iter().enumerate() {
        let f = &parsed.config;
        if f.non_masquerade_cidrs.is_some() {
            non_masq
                .get_or_insert_with(Vec::new)
                .extend(entries(i, &f.non_masquerade_cidrs));
        }
        config
            .masquerade_cidrs
            .extend(entries(i, &f.masquerade_cidrs));
        config.source_cidrs.extend(entries(i, &f.source_cidrs));
        config
            .egress_interfaces
            .extend(entries(i, &f.egress_interfaces));
        for t in entries(i, &f.snat_to) {
            add_snat(&mut config, &files, t)?;
        }
        for r in entries(i, &f.snat_rules) {
            check_snat_rule(&config, &files, &r)?;
            config.snat_rules.push(r);
        }
        config.masq_link_local |= f.masq_link_local.unwrap_or(false);
        config.masq_link_local_ipv6 |= f.masq_link_local_ipv6.unwrap_or(false);
        if let Some(r) = f.resync_interval {
            resync = Some(resync.map_or(r, |x: std::time::Duration| x.min(r)));
        }
        for note in &parsed.notes {
            notes.push(if multi {
                format!("{}: {note}", path.display())
            } else {
                note.clone()
            });
        }
    }
    config.files = files.into_iter().map(|(p, _)| p).collect();
    if let Some(list) = non_masq {
        config.non_masquerade_cidrs = list;
    }
    config.resync_interval = resync.unwrap_or(DEFAULT_RESYNC_INTERVAL);
    check_prefix_cap(&config, flags)?;
    notes.extend(overlap_notes(
        &config,
        "nonMasqueradeCIDRs",
        &config.non_masquerade_cidrs,
    ));
    notes.extend(overlap_notes(
        &config,
        "masqueradeCIDRs",
        &config.masquerade_cidrs,
    ));
    notes.extend(overlap_notes(&config, "sourceCIDRs", &config.source_cidrs));
    notes.extend(no_effect_notes(&config));
    notes.extend(outside_sources_notes(&config));
    Ok(Loaded { config, notes })
}

/// The entries of file `file`'s list, with their origins.
fn entries<T: Clone>(file: usize, list: &Option<Vec<T>>) -> Vec<Entry<T>> {
    list.iter()
        .flatten()
        .enumerate()
        .map(|(index, value)| Entry {
            value: value.clone(),
            origin: Origin::File { file, index },
        })
        .collect()
}

/// Adds a `snatTo` entry, refusing a second, different one of the same family.
fn add_snat(
    config: &mut Config,
    files: &[(PathBuf, Parsed)],
    t: Entry<SnatTarget>,
) -> Result<(), ConfigError> {
    let family = t.value.family();
    match config.snat_to.iter().find(|e| e.value.family() == family) {
        None => config.snat_to.push(t),
        Some(e) if e.value == t.value => {}
        Some(e) => {
            let path = |o: Origin| match o {
                Origin::File { file, .. } => files[file].0.clone(),
                _ => PathBuf::new(),
            };
            return Err(ConfigError::Conflict {
                key: "snatTo",
                first: path(e.origin),
                first_value: e.value.to_string(),
                second: path(t.origin),
                second_value: t.value.to_string(),
            });
        }
    }
    Ok(())
}

/// Refuses a `snatRules` entry with a source prefix that an entry of an earlier file gives
/// another address (within one file, validation already refused any repeat).
fn check_snat_rule(
    config: &Config,
    files: &[(PathBuf, Parsed)],
    rule: &Entry<SnatRule>,
) -> Result<(), ConfigError> {
    let Origin::File { file, index } = rule.origin else {
        return Ok(());
    };
    let mut problems = Vec::new();
    for (j, net) in rule.value.source_cidrs.iter().enumerate() {
        let family = Family::of(net);
        let to = rule.value.target(family);
        for e in &config.snat_rules {
            let Origin::File { file: f, index: k } = e.origin else {
                continue;
            };
            if f == file {
                continue;
            }
            let Some(m) = e.value.source_cidrs.iter().position(|n| n == net) else {
                continue;
            };
            let other = e.value.target(family);
            if other != to {
                let show = |t: Option<SnatTarget>| t.map_or("none".into(), |t| t.to_string());
                problems.push(Problem {
                    key: format!(
                        "snatRules[{index}].sourceCIDRs[{j}] of {}",
                        files[file].0.display()
                    ),
                    value: Some(net.to_string()),
                    message: format!(
                        "snatTo {} here, but snatRules[{k}].sourceCIDRs[{m}] of {} gives the same \
                         prefix snatTo {}: a source prefix leaves with one address; set it in one \
                         file, or to the same address",
                        show(to),
                        files[f].0.display(),
                        show(other)
                    ),
                });
            }
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    Err(ConfigError::Merged {
        paths: files.iter().map(|(p, _)| p.clone()).collect(),
        problems,
    })
}

/// Carving `masqueradeCIDRs` holes into wide ranges multiplies prefixes (20,000 /32 holes
/// made 336,000): the cap is on the result, counted without building it.
fn check_prefix_cap(config: &Config, flags: &PolicyFlags) -> Result<(), ConfigError> {
    let families: &[Family] = if flags.enable_ipv6 {
        &[Family::V4, Family::V6]
    } else {
        &[Family::V4]
    };
    let count: usize = families
        .iter()
        .map(|f| {
            let dest = config.non_masquerade_ranges(*f).prefix_count(f.bits());
            let src = config
                .source_ranges(*f)
                .map_or(0, |r| r.prefix_count(f.bits()));
            // The map's intervals: nested prefixes cut their containers.
            dest + src + config.snat_map(*f).len()
        })
        .sum();
    if count <= flags.max_prefixes {
        return Ok(());
    }
    let problem = Problem {
        key: "(resulting table)".into(),
        value: Some(format!("({count} prefixes)")),
        message: format!(
            "the lists make {count} prefixes after merging and carving out masqueradeCIDRs, \
             more than --max-prefixes ({}); raise --max-prefixes (and the DaemonSet's memory \
             limit, see docs/operations.md) if this is intended",
            flags.max_prefixes
        ),
    };
    Err(match config.files.as_slice() {
        [one] => ConfigError::Invalid {
            path: one.clone(),
            problems: vec![problem],
        },
        many => ConfigError::Merged {
            paths: many.to_vec(),
            problems: vec![problem],
        },
    })
}

/// Notes entries that lie inside (or repeat) another entry of the same list; the model
/// merges them, so they change nothing, but the operator should know.
fn overlap_notes(config: &Config, key: &str, list: &[Entry<ipnet::IpNet>]) -> Vec<String> {
    let mut idx: Vec<(Family, Span, usize)> = list
        .iter()
        .enumerate()
        .map(|(i, e)| (Family::of(&e.value), Span::of(&e.value), i))
        .collect();
    idx.sort_by_key(|(fam, span, i)| (*fam, span.lo, std::cmp::Reverse(span.hi), *i));
    let mut notes = Vec::new();
    let mut cover: Option<(Family, Span, usize)> = None;
    for (fam, span, i) in idx {
        match cover {
            Some((cf, c, ci)) if cf == fam && span.hi <= c.hi => {
                let what = if span == c { "repeats" } else { "lies inside" };
                notes.push(format!(
                    "{} {} {what} {} {}; merged",
                    config.label(key, list[i].origin),
                    list[i].value,
                    config.label(key, list[ci].origin),
                    list[ci].value
                ));
            }
            _ => cover = Some((fam, span, i)),
        }
    }
    capped(notes)
}

/// Notes `masqueradeCIDRs` entries that do not intersect any non-masquerade range.
fn no_effect_notes(config: &Config) -> Vec<String> {
    let exempt = |f| config.exempt_ranges(f);
    let (v4, v6) = (exempt(Family::V4), exempt(Family::V6));
    let mut notes = Vec::new();
    for e in &config.masquerade_cidrs {
        let set = match Family::of(&e.value) {
            Family::V4 => &v4,
            Family::V6 => &v6,
        };
        if !set.intersects(Span::of(&e.value)) {
            notes.push(format!(
                "{} {} is outside every non-masquerade range, so it changes nothing (those \
                 destinations are masqueraded anyway)",
                config.label("masqueradeCIDRs", e.origin),
                e.value
            ));
        }
    }
    capped(notes)
}

/// Notes `snatRules` prefixes outside every `sourceCIDRs` entry: those sources are never
/// translated, so the entry chooses nothing for them.
fn outside_sources_notes(config: &Config) -> Vec<String> {
    let mut notes = Vec::new();
    for e in &config.snat_rules {
        for net in &e.value.source_cidrs {
            let inside = config
                .source_ranges(Family::of(net))
                .is_none_or(|r| r.intersects(Span::of(net)));
            if !inside {
                notes.push(format!(
                    "{} {net} is outside every sourceCIDRs entry, so it changes nothing (those \
                     sources are not translated)",
                    config.label("snatRules", e.origin)
                ));
            }
        }
    }
    capped(notes)
}

fn capped(mut notes: Vec<String>) -> Vec<String> {
    if notes.len() > MAX_NOTES {
        let more = notes.len() - MAX_NOTES;
        notes.truncate(MAX_NOTES);
        notes.push(format!("… and {more} more like these"));
    }
    notes
}
