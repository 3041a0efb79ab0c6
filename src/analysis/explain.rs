//! `--explain`: why a destination is (not) translated. The decision is the config's, with
//! the entries responsible (file, key, index, value); [`crate::analysis::conflict`] adds what other
//! NAT rules do to the packet first. Pure: the kernel's answers come in as arguments
//! ([`with_kernel`] takes what was read of it, as read).

use std::net::IpAddr;

use ipnet::IpNet;
use serde::Serialize;

use super::Packet;
use crate::addr::prefix::Family;
use crate::analysis::conflict::{self, Answer, Finding};
use crate::config::priority::ChainPriority;
use crate::config::{Config, Entry, Interface, LINK_LOCAL_V4, LINK_LOCAL_V6, Origin, PolicyFlags};
use crate::kernel::nft::ruleset::{ForeignRead, too_large_message};
use crate::kernel::nft::{NftError, legacy};
use crate::model::{self, Table, TableFlags};

// `snatRules`: the entry that chooses the address, and the address a SNAT leaves with.
mod snat;
// The text for people (`--explain` without `--json`).
mod text;

/// What the policy does to the packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Masqueraded: the node's address on the way out.
    Masquerade,
    /// SNATed to a `snatTo` address.
    Snat,
    /// Left alone.
    None,
}

/// A config entry (or rule) that made the decision what it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Because {
    /// The file it is in (`null` for a default or a flag).
    pub file: Option<String>,
    /// The key (or flag, or rule).
    pub key: String,
    /// The list index, for a list entry.
    pub index: Option<usize>,
    /// The value; with `no_entry`, the packet's address or interface that no entry of the
    /// key matches (not a value of the key).
    pub value: String,
    /// The reason is that no entry of `key` matches `value` (the entries are described in
    /// `why`).
    pub no_entry: bool,
    /// What it did, for people.
    pub why: String,
}

/// Whether our table in the kernel is the one the config asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TableState {
    /// The live table is the desired one.
    InForce,
    /// It exists and differs.
    Differs,
    /// It does not exist.
    Absent,
    /// It could not be read (no privilege, no kernel support, ...).
    NotRead,
}

/// The whole answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Explanation {
    /// The destination asked about.
    pub destination: IpAddr,
    /// The source, if given.
    pub source: Option<IpAddr>,
    /// The output interface, if given.
    pub out_interface: Option<String>,
    /// What the policy does.
    pub decision: Decision,
    /// The SNAT address or range, for `snat`.
    pub snat_to: Option<String>,
    /// The entries responsible.
    pub because: Vec<Because>,
    /// Whether the table in the kernel is in force.
    pub table: TableState,
    /// Why the table state is what it is, when not in force.
    pub table_detail: Option<String>,
    /// Our chain's priority (`--chain-priority`), as nft writes it.
    pub chain_priority: String,
    /// Translating rules of other components' NAT postrouting chains (yes, no, cannot
    /// tell), each with where its chain runs relative to ours.
    pub conflicts: Vec<Other>,
    /// The rule that surely translates the packet in place of our decision, if one does:
    /// for a destination we exempt, any (our `return` stops no later chain); for one we
    /// translate, one whose chain runs before ours.
    pub overridden_by: Option<Other>,
    /// What the answer assumes or could not see.
    pub notes: Vec<String>,
}

/// Where another component's NAT chain runs relative to ours, for a connection's first
/// packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Runs {
    /// At a lower priority: it decides first.
    Before,
    /// At the same priority: the kernel's order among equals depends on the order the
    /// chains were registered in, which cannot be read back; either may run first.
    Same,
    /// At a higher priority: it sees the packet only if ours set up no binding.
    After,
}

impl Runs {
    /// Where a base chain at `priority` runs relative to ours at `ours`.
    pub fn of(priority: i32, ours: ChainPriority) -> Runs {
        match priority.cmp(&ours.0) {
            std::cmp::Ordering::Less => Runs::Before,
            std::cmp::Ordering::Equal => Runs::Same,
            std::cmp::Ordering::Greater => Runs::After,
        }
    }
}

/// Another component's translating rule, and where its chain runs relative to ours.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Other {
    /// The rule and its answer for the packet.
    #[serde(flatten)]
    pub finding: Finding,
    /// Where its chain runs.
    pub runs: Runs,
}

/// A question that describes no packet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuestionError {
    /// The source is of the other family than the destination.
    #[error(
        "--source {src} is an {} address and --explain {dst} an {} one: a packet's source and \
         destination are of one family; give a --source of the destination's family",
        family_name(src),
        family_name(dst)
    )]
    FamilyMismatch {
        /// The destination asked about.
        dst: IpAddr,
        /// The source given.
        src: IpAddr,
    },
}

fn family_name(a: &IpAddr) -> &'static str {
    match Family::of_addr(a) {
        Family::V4 => "IPv4",
        Family::V6 => "IPv6",
    }
}

/// Refuses a question no packet can ask: a source of the other family than the destination
/// (the answer would describe a packet that cannot exist).
pub fn check(q: &Packet) -> Result<(), QuestionError> {
    match q.src {
        Some(src) if Family::of_addr(&src) != q.family() => {
            Err(QuestionError::FamilyMismatch { dst: q.dst, src })
        }
        _ => Ok(()),
    }
}

struct Reasons<'a> {
    config: &'a Config,
    because: Vec<Because>,
    notes: Vec<String>,
}

impl Reasons<'_> {
    fn entry<T: std::fmt::Display>(&mut self, key: &str, e: &Entry<T>, why: impl Into<String>) {
        let (file, index) = match e.origin {
            Origin::File { index, .. } => (
                self.config
                    .file_of(e.origin)
                    .map(|p| p.display().to_string()),
                Some(index),
            ),
            Origin::Default => (None, None),
            Origin::ReservedRanges => (None, None),
        };
        let why = match e.origin {
            Origin::Default => format!("{} (ip-masq-agent's default list)", why.into()),
            Origin::ReservedRanges => {
                format!("{} (--nomasq-all-reserved-ranges)", why.into())
            }
            Origin::File { .. } => why.into(),
        };
        self.because.push(Because {
            file,
            key: key.into(),
            index,
            value: e.value.to_string(),
            no_entry: false,
            why,
        });
    }

    fn rule(&mut self, key: &str, value: impl Into<String>, why: impl Into<String>) {
        self.because.push(Because {
            file: None,
            key: key.into(),
            index: None,
            value: value.into(),
            no_entry: false,
            why: why.into(),
        });
    }

    /// No entry of the list `key` (`entries`) matches `what`: says so, and what the list is
    /// (the files that set it, or the defaults), so the key is never shown as if `what` were
    /// its value.
    fn no_entry<T>(&mut self, key: &str, entries: &[Entry<T>], what: String, then: &str) {
        let mut files: Vec<String> = Vec::new();
        for e in entries {
            if let Some(f) = self.config.file_of(e.origin) {
                let f = f.display().to_string();
                if !files.contains(&f) {
                    files.push(f);
                }
            }
        }
        let n = entries.len();
        let plural = if n == 1 { "entry" } else { "entries" };
        let list = if n == 0 {
            "the list is empty".to_string()
        } else if !files.is_empty() {
            format!("{n} {plural}, from {}", files.join(", "))
        } else if entries.iter().any(|e| e.origin == Origin::ReservedRanges) {
            format!("{n} {plural}: ip-masq-agent's default list and --nomasq-all-reserved-ranges")
        } else {
            format!("{n} {plural}: ip-masq-agent's default list")
        };
        self.because.push(Because {
            file: None,
            key: key.into(),
            index: None,
            value: what,
            no_entry: true,
            why: format!("{list}; {then}"),
        });
    }
}

fn containing(list: &[Entry<IpNet>], addr: IpAddr) -> Vec<&Entry<IpNet>> {
    list.iter().filter(|e| e.value.contains(&addr)).collect()
}

/// The config's decision for the packet, and why.
pub fn decide(
    config: &Config,
    flags: &PolicyFlags,
    q: &Packet,
) -> (Decision, Vec<Because>, Vec<String>) {
    let mut r = Reasons {
        config,
        because: Vec::new(),
        notes: Vec::new(),
    };
    let decision = decide_into(config, flags, q, &mut r);
    (decision, r.because, r.notes)
}

fn decide_into(config: &Config, flags: &PolicyFlags, q: &Packet, r: &mut Reasons<'_>) -> Decision {
    let family = Family::of_addr(&q.dst);
    if family == Family::V6 && !flags.enable_ipv6 {
        r.rule(
            "--enable-ipv6",
            "false",
            "IPv6 is left alone without --enable-ipv6",
        );
        return Decision::None;
    }
    if !in_source_scope(config, q, r) || !in_interface_scope(config, q, r) {
        return Decision::None;
    }
    match q.dst_local {
        Some(true) => {
            r.rule(
                "(rule)",
                "fib daddr type local return",
                "the destination is an address of this node",
            );
            return Decision::None;
        }
        Some(false) => {}
        None => r.notes.push(
            "assumes the destination is not an address of this node (those are never \
             translated)"
                .into(),
        ),
    }
    if exempt(config, family, q.dst, r) {
        return Decision::None;
    }
    if snat::snat_rule(config, family, q, r) {
        return Decision::Snat;
    }
    match config.snat_to.iter().find(|e| e.value.family() == family) {
        Some(t) => {
            r.entry(
                "snatTo",
                t,
                "translated to this address instead of masqueraded",
            );
            Decision::Snat
        }
        None => Decision::Masquerade,
    }
}

fn in_source_scope(config: &Config, q: &Packet, r: &mut Reasons<'_>) -> bool {
    if config.source_cidrs.is_empty() {
        return true;
    }
    let Some(src) = q.src else {
        r.notes.push(
            "sourceCIDRs is set: only packets from those sources are translated; this assumes \
             one of them (give --source to ask about another)"
                .into(),
        );
        return true;
    };
    let inside = containing(&config.source_cidrs, src);
    if inside.is_empty() {
        r.no_entry(
            "sourceCIDRs",
            &config.source_cidrs,
            src.to_string(),
            "not considered for translation",
        );
        return false;
    }
    for e in inside {
        r.entry(
            "sourceCIDRs",
            e,
            "contains the source: considered for translation",
        );
    }
    true
}

fn in_interface_scope(config: &Config, q: &Packet, r: &mut Reasons<'_>) -> bool {
    if config.egress_interfaces.is_empty() {
        return true;
    }
    let Some(oif) = &q.oif else {
        r.notes.push(
            "egressInterfaces is set: only packets leaving through those are translated; this \
             assumes one of them (give --out-interface to ask about another)"
                .into(),
        );
        return true;
    };
    let name = Interface {
        name: oif.clone(),
        wildcard: false,
    }
    .span();
    let matching: Vec<&Entry<Interface>> = config
        .egress_interfaces
        .iter()
        .filter(|e| {
            let s = e.value.span();
            s.lo <= name.lo && name.hi <= s.hi
        })
        .collect();
    if matching.is_empty() {
        r.no_entry(
            "egressInterfaces",
            &config.egress_interfaces,
            oif.clone(),
            "not translated",
        );
        return false;
    }
    for e in matching {
        r.entry("egressInterfaces", e, "matches the output interface");
    }
    true
}

/// Whether the destination is exempt; records the entries (and carve-outs) responsible.
fn exempt(config: &Config, family: Family, dst: IpAddr, r: &mut Reasons<'_>) -> bool {
    let mut exempting = containing(&config.non_masquerade_cidrs, dst);
    exempting.retain(|e| Family::of(&e.value) == family);
    let link_local = config
        .link_local_exempt(family)
        .filter(|n| n.contains(&dst));
    let (ll_key, ll_net, ll_on) = match family {
        Family::V4 => ("masqLinkLocal", LINK_LOCAL_V4, config.masq_link_local),
        Family::V6 => (
            "masqLinkLocalIPv6",
            LINK_LOCAL_V6,
            config.masq_link_local_ipv6,
        ),
    };
    let is_link_local = ll_net.parse::<IpNet>().is_ok_and(|n| n.contains(&dst));
    let carving = containing(&config.masquerade_cidrs, dst);
    if exempting.is_empty() && link_local.is_none() {
        let mut same = config.non_masquerade_cidrs.clone();
        same.retain(|e| Family::of(&e.value) == family);
        r.no_entry("nonMasqueradeCIDRs", &same, dst.to_string(), "not exempt");
        if is_link_local && ll_on {
            r.rule(
                ll_key,
                "true",
                format!("link-local {ll_net} is not exempt: translated like any destination"),
            );
        }
        for e in &carving {
            r.entry("masqueradeCIDRs", e, "contains it too (no effect here)");
        }
        return false;
    }
    let carved = !carving.is_empty();
    for e in &carving {
        r.entry(
            "masqueradeCIDRs",
            e,
            "carves the destination out of the non-masquerade entries below",
        );
    }
    let verb = if carved {
        "contains the destination, but the carve-out above wins"
    } else {
        "contains the destination: not masqueraded"
    };
    for e in exempting {
        r.entry("nonMasqueradeCIDRs", e, verb);
    }
    if let Some(ll) = link_local {
        r.rule(ll_key, "false", format!("link-local {ll} {verb}"));
    } else if is_link_local && ll_on {
        r.rule(
            ll_key,
            "true",
            format!("link-local {ll_net} is not exempt by itself (the entries above decide)"),
        );
    }
    !carved
}

/// Everything `--explain` prints, from the decision and what the kernel said.
pub fn explain(
    config: &Config,
    flags: &PolicyFlags,
    q: &Packet,
    table: (TableState, Option<String>),
    conflicts: Vec<Finding>,
    mut kernel_notes: Vec<String>,
) -> Explanation {
    let (decision, because, mut notes) = decide(config, flags, q);
    notes.append(&mut kernel_notes);
    let snat_to = match decision {
        Decision::Snat => snat::snat_address(config, Family::of_addr(&q.dst), q.src),
        _ => None,
    };
    let ours = flags.chain_priority;
    let conflicts: Vec<Other> = conflicts
        .into_iter()
        .map(|f| Other {
            runs: Runs::of(f.priority, ours),
            finding: f,
        })
        .collect();
    let overridden_by = conflicts
        .iter()
        .find(|o| {
            o.finding.answer == Answer::Yes
                && (decision == Decision::None || o.runs == Runs::Before)
        })
        .cloned();
    if decision != Decision::None {
        let translating = |o: &&Other| o.finding.answer != Answer::No;
        if let Some(o) = conflicts
            .iter()
            .filter(translating)
            .find(|o| o.runs == Runs::Same)
        {
            notes.push(format!(
                "{} {} chain {} runs at our priority ({ours}): which of two NAT chains at one \
                 priority runs first is not defined, so it may translate the packet first; \
                 give --chain-priority a value apart from it",
                o.finding.family, o.finding.table, o.finding.chain
            ));
        }
        if conflicts
            .iter()
            .filter(translating)
            .any(|o| o.runs == Runs::After)
        {
            notes.push(format!(
                "NAT chains after ours (priority above {ours}) do not see a packet ours \
                 translates: the first binding decides"
            ));
        }
    }
    Explanation {
        destination: q.dst,
        source: q.src,
        out_interface: q.oif.clone(),
        decision,
        snat_to,
        because,
        table: table.0,
        table_detail: table.1,
        chain_priority: ours.to_string(),
        conflicts,
        overridden_by,
        notes,
    }
}

/// What `--explain` read of the kernel: our table (`None`: it does not exist) and the other
/// tables with NAT postrouting chains, or why they could not be read.
pub type KernelRead = Result<(Option<Table>, ForeignRead), NftError>;

/// Everything `--explain` prints, from the config and what was read of the kernel: our
/// table compared with the one the config asks for, the other NAT tables walked for the
/// packet, and notes on what could not be seen (tables too large to analyse, read with at
/// most `max_foreign_elements` set elements; iptables-legacy's nat tables of `legacy`
/// families, which nf_tables cannot read).
pub fn with_kernel(
    config: &Config,
    flags: &PolicyFlags,
    q: &Packet,
    read: KernelRead,
    legacy: &[&str],
    max_foreign_elements: usize,
) -> Explanation {
    let mut notes: Vec<String> = Vec::new();
    let (table, conflicts) = match read {
        Ok((live, others)) => {
            for (family, table) in &others.too_large {
                notes.push(too_large_message(family, table, max_foreign_elements));
            }
            (
                table_state(config, flags, live),
                conflict::analyze_all(&others.tables, q),
            )
        }
        Err(e) => (
            (
                TableState::NotRead,
                Some(format!("{e:#} (reading the kernel needs CAP_NET_ADMIN)")),
            ),
            Vec::new(),
        ),
    };
    notes.extend(legacy::note(legacy));
    explain(config, flags, q, table, conflicts, notes)
}

/// Whether the live table is the one the config asks for (the table flags are the kernel's
/// choice, so they are not compared).
fn table_state(
    config: &Config,
    flags: &PolicyFlags,
    live: Option<Table>,
) -> (TableState, Option<String>) {
    let Some(live) = live else {
        return (TableState::Absent, None);
    };
    let mut want = model::desired(config, flags, TableFlags::default());
    want.flags = live.flags;
    if live.same_policy(&want) {
        (TableState::InForce, None)
    } else {
        (
            TableState::Differs,
            Some("compare --dump with --dry-run".into()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn config(text: &str, flags: &PolicyFlags) -> Config {
        crate::config::parse_str(text, Path::new("/etc/config/ip-masq-agent"), flags)
            .unwrap()
            .config
    }

    fn q(dst: &str) -> Packet {
        Packet {
            dst_local: Some(false),
            ..Packet::to(dst.parse().unwrap())
        }
    }

    fn keys(b: &[Because]) -> Vec<String> {
        b.iter()
            .map(|b| match b.index {
                Some(i) => format!("{}[{i}]", b.key),
                None => b.key.clone(),
            })
            .collect()
    }

    #[test]
    fn a_carve_out_names_both_entries() {
        let f = PolicyFlags::default();
        let c = config(
            "nonMasqueradeCIDRs: [10.40.0.0/14]\nmasqueradeCIDRs: [10.41.0.0/24]\n",
            &f,
        );
        let (d, because, _) = decide(&c, &f, &q("10.41.0.9"));
        assert_eq!(d, Decision::Masquerade);
        assert_eq!(
            keys(&because),
            ["masqueradeCIDRs[0]", "nonMasqueradeCIDRs[0]"]
        );
        assert_eq!(because[0].value, "10.41.0.0/24");
        assert_eq!(
            because[0].file.as_deref(),
            Some("/etc/config/ip-masq-agent")
        );
        let (d, because, _) = decide(&c, &f, &q("10.42.0.9"));
        assert_eq!(d, Decision::None);
        assert_eq!(keys(&because), ["nonMasqueradeCIDRs[0]"]);
    }

    #[test]
    fn defaults_link_local_reserved_and_ipv6() {
        let f = PolicyFlags {
            nomasq_all_reserved_ranges: true,
            ..PolicyFlags::default()
        };
        let c = Config::defaults(&f);
        let (d, b, _) = decide(&c, &f, &q("192.168.1.1"));
        assert_eq!(d, Decision::None);
        assert!(b[0].why.contains("ip-masq-agent's default list"), "{b:?}");
        let (_, b, _) = decide(&c, &f, &q("100.64.0.5"));
        assert!(b[0].why.contains("--nomasq-all-reserved-ranges"), "{b:?}");
        let (d, b, _) = decide(&c, &f, &q("169.254.0.5"));
        assert_eq!(
            (d, keys(&b)),
            (Decision::None, vec!["masqLinkLocal".to_string()])
        );
        let (d, b, _) = decide(&c, &f, &q("11.22.33.44"));
        assert_eq!(
            (d, b[0].why.as_str(), b[0].no_entry),
            (
                Decision::Masquerade,
                "11 entries: ip-masq-agent's default list and --nomasq-all-reserved-ranges; \
                 not exempt",
                true
            )
        );
        let (d, b, _) = decide(&c, &f, &q("2001:db8::5"));
        assert_eq!(
            (d, keys(&b)),
            (Decision::None, vec!["--enable-ipv6".to_string()])
        );
        let mut local = q("11.22.33.44");
        local.dst_local = Some(true);
        assert_eq!(decide(&c, &f, &local).0, Decision::None);
    }

    #[test]
    fn scopes_and_snat() {
        let f = PolicyFlags::default();
        let c = config(
            "sourceCIDRs: [10.244.0.0/16]\negressInterfaces: ['eth*']\nsnatTo: [198.51.100.9]\n",
            &f,
        );
        let mut question = q("11.22.33.44");
        let (d, _, notes) = decide(&c, &f, &question);
        assert_eq!(d, Decision::Snat);
        assert_eq!(
            notes.len(),
            2,
            "assumptions about source and interface are said"
        );
        question.src = Some("10.245.0.1".parse().unwrap());
        let (d, b, _) = decide(&c, &f, &question);
        assert_eq!(
            (d, keys(&b)),
            (Decision::None, vec!["sourceCIDRs".to_string()])
        );
        question.src = Some("10.244.0.1".parse().unwrap());
        question.oif = Some("ens5".into());
        assert_eq!(decide(&c, &f, &question).0, Decision::None);
        question.oif = Some("eth1".into());
        let (d, b, _) = decide(&c, &f, &question);
        assert_eq!(d, Decision::Snat);
        assert_eq!(
            keys(&b),
            [
                "sourceCIDRs[0]",
                "egressInterfaces[0]",
                "nonMasqueradeCIDRs",
                "snatTo[0]"
            ]
        );
        let e = explain(
            &c,
            &f,
            &question,
            (TableState::InForce, None),
            Vec::new(),
            Vec::new(),
        );
        assert_eq!(e.snat_to.as_deref(), Some("198.51.100.9"));
        assert!(
            e.text().starts_with("11.22.33.44: snat to 198.51.100.9\n"),
            "{}",
            e.text()
        );
        let json = serde_json::to_value(&e).unwrap();
        for key in ["decision", "because", "table", "conflicts"] {
            assert!(json.get(key).is_some(), "{key} in {json}");
        }
        assert_eq!(json["decision"], "snat");
        assert_eq!(json["because"][0]["key"], "sourceCIDRs");
    }

    /// iptables-nft's `-d 11.22.33.44 -j MASQUERADE` at nat POSTROUTING (srcnat).
    fn masquerade_at_srcnat(answer: Answer) -> Finding {
        Finding {
            family: "ip",
            table: "nat".into(),
            chain: "POSTROUTING".into(),
            priority: 100,
            handle: 4,
            rule: "ip daddr 11.22.33.44 masquerade".into(),
            verdict: "masquerade".into(),
            answer,
        }
    }

    fn explained(cfg: &str, prio: &str, dst: &str, answer: Answer) -> Explanation {
        let f = PolicyFlags {
            chain_priority: prio.parse().unwrap(),
            ..PolicyFlags::default()
        };
        let c = config(cfg, &f);
        let found = vec![masquerade_at_srcnat(answer)];
        explain(&c, &f, &q(dst), (TableState::InForce, None), found, vec![])
    }

    #[test]
    fn the_chain_priority_decides_whose_translation_wins() {
        let snat = "snatTo: [198.51.100.9]\n";
        // Default, srcnat + 10: iptables' masquerade at srcnat binds first.
        let e = explained(snat, "srcnat + 10", "11.22.33.44", Answer::Yes);
        let by = e.overridden_by.as_ref().expect("overridden at the default");
        assert_eq!((by.runs, by.finding.handle), (Runs::Before, 4));
        let text = e.text();
        assert!(
            text.starts_with(
                "11.22.33.44: snat to 198.51.100.9\n  BUT ip nat chain POSTROUTING (handle 4) \
                 translates it first: masquerade\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("chain postrouting at priority srcnat + 10"),
            "{text}"
        );
        assert!(
            text.contains("priority 100 (before ours) handle 4"),
            "{text}"
        );
        // srcnat - 10: ours binds first, the later masquerade never sees the packet.
        let e = explained(snat, "srcnat - 10", "11.22.33.44", Answer::Yes);
        assert_eq!(e.overridden_by, None, "{}", e.text());
        assert_eq!(e.chain_priority, "srcnat - 10");
        let text = e.text();
        assert!(
            text.contains("priority 100 (after ours) handle 4"),
            "{text}"
        );
        assert!(text.contains("note: NAT chains after ours"), "{text}");
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["chain_priority"], "srcnat - 10");
        assert_eq!(json["conflicts"][0]["runs"], "after");
        assert_eq!(
            json["conflicts"][0]["handle"], 4,
            "the finding's fields, flattened"
        );
        // An exemption stops no later chain: still overridden at srcnat - 10.
        let exempt = "nonMasqueradeCIDRs: [11.0.0.0/8]\n";
        let e = explained(exempt, "srcnat - 10", "11.22.33.44", Answer::Yes);
        assert_eq!(e.decision, Decision::None);
        assert_eq!(e.overridden_by.as_ref().map(|o| o.runs), Some(Runs::After));
        assert!(
            e.text()
                .contains("translates it after ours (our exemption does not stop it)"),
            "{}",
            e.text()
        );
        // At the same priority the order is undefined: said, not guessed.
        let e = explained(snat, "srcnat", "11.22.33.44", Answer::Yes);
        assert_eq!(e.overridden_by, None);
        assert!(
            e.notes
                .iter()
                .any(|n| n.contains("runs at our priority (srcnat)") && n.contains("not defined")),
            "{:?}",
            e.notes
        );
        assert!(
            e.text().contains("(as ours, order undefined)"),
            "{}",
            e.text()
        );
    }

    fn text_of(cfg: Option<&str>, dst: &str) -> String {
        let f = PolicyFlags::default();
        let c = match cfg {
            Some(text) => config(text, &f),
            None => Config::defaults(&f),
        };
        let e = explain(&c, &f, &q(dst), (TableState::InForce, None), vec![], vec![]);
        e.text()
    }

    #[test]
    fn the_text_says_which_entry_or_default_decides() {
        // Nothing contains it: said as such, never as if the key had the address as value.
        let t = text_of(None, "8.8.8.8");
        assert!(
            t.contains(
                "  because no entry of nonMasqueradeCIDRs contains 8.8.8.8: 3 entries: \
                 ip-masq-agent's default list; not exempt\n"
            ),
            "{t}"
        );
        assert!(!t.contains("nonMasqueradeCIDRs = 8.8.8.8"), "{t}");
        let t = text_of(Some("nonMasqueradeCIDRs: [10.0.0.0/8]\n"), "8.8.8.8");
        assert!(
            t.contains(
                "because no entry of nonMasqueradeCIDRs contains 8.8.8.8: 1 entry, from \
                 /etc/config/ip-masq-agent; not exempt"
            ),
            "{t}"
        );
        let t = text_of(Some("nonMasqueradeCIDRs: []\n"), "10.1.2.3");
        assert!(t.contains("the list is empty; not exempt"), "{t}");
        // The entry that decides, with file and index.
        let t = text_of(Some("nonMasqueradeCIDRs: [10.0.0.0/8]\n"), "10.1.2.3");
        assert!(
            t.contains(
                "because nonMasqueradeCIDRs[0] in /etc/config/ip-masq-agent = 10.0.0.0/8: \
                 contains the destination: not masqueraded"
            ),
            "{t}"
        );
        // A source or interface outside the scopes.
        let f = PolicyFlags::default();
        let c = config(
            "sourceCIDRs: [10.244.0.0/16]\negressInterfaces: [eth0]\n",
            &f,
        );
        let mut p = q("8.8.8.8");
        p.src = Some("10.9.0.1".parse().unwrap());
        let e = explain(&c, &f, &p, (TableState::InForce, None), vec![], vec![]);
        assert!(
            e.text()
                .contains("because no entry of sourceCIDRs contains 10.9.0.1: 1 entry, from"),
            "{}",
            e.text()
        );
        p.src = None;
        p.oif = Some("ens5".into());
        let e = explain(&c, &f, &p, (TableState::InForce, None), vec![], vec![]);
        assert!(
            e.text()
                .contains("because no entry of egressInterfaces matches ens5: 1 entry"),
            "{}",
            e.text()
        );
    }

    #[test]
    fn link_local_names_masq_link_local_either_way() {
        let t = text_of(None, "169.254.169.254");
        assert!(t.starts_with("169.254.169.254: not translated\n"), "{t}");
        assert!(
            t.contains("because masqLinkLocal = false: link-local 169.254.0.0/16 contains"),
            "{t}"
        );
        let t = text_of(Some("masqLinkLocal: true\n"), "169.254.169.254");
        assert!(t.starts_with("169.254.169.254: masquerade"), "{t}");
        assert!(
            t.contains(
                "because masqLinkLocal = true: link-local 169.254.0.0/16 is not exempt: \
                 translated like any destination"
            ),
            "{t}"
        );
        // Exempt by an entry even so: the entry decides, and masqLinkLocal is named.
        let t = text_of(
            Some("masqLinkLocal: true\nnonMasqueradeCIDRs: [169.254.0.0/16]\n"),
            "169.254.169.254",
        );
        assert!(t.starts_with("169.254.169.254: not translated\n"), "{t}");
        assert!(t.contains("because nonMasqueradeCIDRs[0]"), "{t}");
        assert!(
            t.contains(
                "because masqLinkLocal = true: link-local 169.254.0.0/16 is not exempt by itself"
            ),
            "{t}"
        );
        // Not link-local: masqLinkLocal is not mentioned.
        assert!(!text_of(Some("masqLinkLocal: true\n"), "8.8.8.8").contains("masqLinkLocal"));
        // IPv6: masqLinkLocalIPv6.
        let f = PolicyFlags {
            enable_ipv6: true,
            ..PolicyFlags::default()
        };
        let c = config("masqLinkLocalIPv6: true\n", &f);
        let e = explain(
            &c,
            &f,
            &q("fe80::1"),
            (TableState::InForce, None),
            vec![],
            vec![],
        );
        assert!(
            e.text().contains("because masqLinkLocalIPv6 = true"),
            "{}",
            e.text()
        );
    }

    #[test]
    fn a_source_of_the_other_family_is_refused() {
        let mut question = q("10.0.0.1");
        question.src = Some("2001:db8::1".parse().unwrap());
        assert_eq!(
            check(&question).unwrap_err().to_string(),
            "--source 2001:db8::1 is an IPv6 address and --explain 10.0.0.1 an IPv4 one: a \
             packet's source and destination are of one family; give a --source of the \
             destination's family"
        );
        let mut question = q("2001:db8::5");
        question.src = Some("10.244.1.2".parse().unwrap());
        assert!(matches!(
            check(&question),
            Err(QuestionError::FamilyMismatch { .. })
        ));
        // Same family, or no source: a packet that can exist.
        question.src = Some("fd00::5".parse().unwrap());
        assert_eq!(check(&question), Ok(()));
        assert_eq!(check(&q("10.0.0.1")), Ok(()));
    }

    #[test]
    fn the_kernel_read_gives_the_table_state_and_the_notes() {
        let f = PolicyFlags::default();
        let c = Config::defaults(&f);
        let p = q("11.22.33.44");
        let state = |read: KernelRead| {
            let e = with_kernel(&c, &f, &p, read, &[], 7);
            (e.table, e.table_detail, e.notes)
        };
        assert_eq!(
            state(Ok((None, ForeignRead::default()))),
            (TableState::Absent, None, vec![])
        );
        // The kernel's table flags are its own choice: a table that differs only in them is
        // the one in force.
        let mut live = model::desired(&c, &f, TableFlags::default());
        live.flags = TableFlags(TableFlags::OWNER);
        assert_eq!(
            state(Ok((Some(live.clone()), ForeignRead::default()))).0,
            TableState::InForce
        );
        live.sets.clear();
        let too_large = ForeignRead {
            too_large: vec![("ip", "big".into())],
            ..ForeignRead::default()
        };
        let (table, detail, notes) = state(Ok((Some(live), too_large)));
        assert_eq!(
            (table, detail.as_deref()),
            (TableState::Differs, Some("compare --dump with --dry-run"))
        );
        assert_eq!(notes, [too_large_message("ip", "big", 7)]);
        let (table, detail, _) = state(Err(NftError::Interrupted));
        assert_eq!(table, TableState::NotRead);
        assert!(
            detail
                .unwrap()
                .ends_with("(reading the kernel needs CAP_NET_ADMIN)")
        );
        let e = with_kernel(&c, &f, &p, Err(NftError::Interrupted), &["ip6"], 7);
        assert!(
            e.notes[0].contains("iptables-legacy has a nat table here (ip6)"),
            "{:?}",
            e.notes
        );
    }
}
