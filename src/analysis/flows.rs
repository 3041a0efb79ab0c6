//! Which open flows a policy change affects: our chain evaluated on a conntrack entry's
//! first packet as our postrouting chain saw it, under the table that was in force and under
//! the one just committed. A flow is affected when the two outcomes differ; its entry is then
//! deleted so that its next packet is decided by the new rules (issue 12). Pure: tables and
//! flows in, a predicate out.
//!
//! The packet is judged where NAT is decided, at postrouting (issue 17): its destination is
//! the one after destination NAT (a Service address DNAT'ed to an endpoint at prerouting or
//! output), which conntrack keeps as the reply tuple's source; its source is the one before
//! source NAT, the original tuple's source. Judging by the original destination would keep
//! a flow through a Service on its old translation when the endpoint's range changes
//! decision, and reset flows to a Service range whose endpoints are not affected.
//!
//! The outcome of a flow is what our chain does with its first packet: leave it alone, or
//! translate it (masquerade, or SNAT to an address range), possibly only when it leaves
//! through the `egressInterfaces`. That one comparison covers every way a decision can
//! change: a destination range moving between the lists (`ip daddr @nonmasq-* return`), a
//! source range entering or leaving `sourceCIDRs` (`ip saddr != @sources-* return`), a new
//! SNAT address, a new interface list.
//!
//! What a conntrack entry cannot tell is evaluated the same way under both tables, so it
//! never makes a flow look affected by itself:
//! - the egress interface: the outcome carries the interface list it depends on instead;
//! - `fib daddr type local`: taken as false (the node's own addresses do not move with the
//!   config; a flow to one is not source-NATed at postrouting under either table);
//! - `numgen` (the `--to-ports` draw): taken as true (the ranges come from a flag, equal in
//!   both tables).
//!
//! A rule with a statement the agent did not write (a table adopted at start that someone
//! changed) makes the outcome unknown, which differs from every outcome: such flows are
//! re-evaluated rather than guessed at.

use std::collections::HashMap;

use crate::addr::ifname::Interface;
use crate::addr::prefix::{Family, RangeSet, Span, addr_to_u128};
use crate::kernel::conntrack::Flow;
use crate::model::{Chain, Dispatch, MapEntry, Stmt, Table};
use std::net::IpAddr;

/// What our chain does with a flow's first packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome<'t> {
    /// Nothing: a `return`, or the end of the chain.
    Untouched,
    /// Translated by `how` (a `masquerade` or `snat` statement); `via`: only when leaving
    /// through one of these interfaces (`egressInterfaces`).
    Translated {
        /// The translating statement.
        how: &'t Stmt,
        /// The interfaces the translation is limited to.
        via: Option<&'t [Interface]>,
    },
    /// Translated to `to` by a `snatRules` map (`snat ... saddr map @map`) with these NAT
    /// flags and ports; `via` as above. The address is the decision, not the map's name:
    /// a source whose entry changes address is affected, the others are not.
    Mapped {
        /// The address the map gives the source.
        to: IpAddr,
        /// `NF_NAT_RANGE_*` flags.
        flags: u32,
        /// Source port range, when restricted.
        ports: Option<(u16, u16)>,
        /// The interfaces the translation is limited to.
        via: Option<&'t [Interface]>,
    },
    /// A statement the agent did not write was reached.
    Unknown,
}

/// A table prepared for evaluating many flows: its sets as sorted ranges, looked up in
/// O(log n).
#[derive(Debug)]
pub struct Evaluator<'t> {
    table: &'t Table,
    sets: HashMap<&'t str, RangeSet>,
    maps: HashMap<&'t str, &'t [MapEntry]>,
    dispatch: HashMap<&'t str, &'t Dispatch>,
    chains: HashMap<&'t str, &'t Chain>,
}

/// How deep jumps are followed: the agent's tables jump once (to a block chain); the kernel
/// refuses loops, and a deeper table read back is judged unknown rather than walked.
const MAX_JUMPS: usize = 4;

impl<'t> Evaluator<'t> {
    /// Prepares `table` (linear in its size).
    pub fn new(table: &'t Table) -> Evaluator<'t> {
        let sets = table
            .sets
            .iter()
            .map(|s| (s.name.as_str(), RangeSet::from_nets(&s.prefixes)))
            .collect();
        let maps = table
            .maps
            .iter()
            .map(|m| (m.name.as_str(), m.entries.as_slice()))
            .collect();
        let dispatch = table
            .dispatch
            .iter()
            .map(|d| (d.name.as_str(), d))
            .collect();
        let chains = table.chains.iter().map(|c| (c.name.as_str(), c)).collect();
        Evaluator {
            table,
            sets,
            maps,
            dispatch,
            chains,
        }
    }

    /// The chain the dispatch map `map` sends `addr` of `family` to, if it holds its block.
    fn block_chain(&self, map: &str, family: Family, addr: u128) -> Option<&'t Chain> {
        let d = self.dispatch.get(map).filter(|d| d.family == family)?;
        let i = d.blocks.partition_point(|b| Span::of(b).hi < addr);
        let block = d.blocks.get(i).filter(|b| Span::of(b).lo <= addr)?;
        self.chains.get(d.chain(block).as_str()).copied()
    }

    /// The address map `map` gives `addr` (its entries are sorted and disjoint).
    fn lookup(&self, map: &str, addr: u128) -> Option<IpAddr> {
        let entries = self.maps.get(map)?;
        let i = entries.partition_point(|e| e.span.hi < addr);
        entries.get(i).filter(|e| e.span.lo <= addr).map(|e| e.to)
    }

    fn contains(&self, set: &str, addr: u128) -> bool {
        self.sets
            .get(set)
            .is_some_and(|r| r.intersects(Span { lo: addr, hi: addr }))
    }

    fn interfaces(&self, set: &str) -> &'t [Interface] {
        self.table
            .name_sets
            .iter()
            .find(|n| n.name == set)
            .map_or(&[], |n| n.names.as_slice())
    }

    /// The outcome for `flow`: the base chains' rules in order, on its first packet as
    /// postrouting saw it (the source before source NAT, the destination after destination
    /// NAT).
    pub fn outcome(&self, flow: &Flow) -> Outcome<'t> {
        let mut packet = Packet {
            flow,
            src: addr_to_u128(flow.postrouting_source()),
            dst: addr_to_u128(flow.postrouting_destination()),
            via: None,
        };
        for chain in self.table.chains.iter().filter(|c| c.base.is_some()) {
            if let Some(outcome) = self.run(chain, &mut packet, 0) {
                return outcome;
            }
        }
        Outcome::Untouched
    }

    /// The rules of `chain` in order: the outcome of a verdict, or `None` at its end (back to
    /// the chain that jumped here, or on to the base chain's policy).
    fn run(
        &self,
        chain: &'t Chain,
        packet: &mut Packet<'_, 't>,
        depth: usize,
    ) -> Option<Outcome<'t>> {
        let (flow, src, dst) = (packet.flow, packet.src, packet.dst);
        'rules: for rule in &chain.rules {
            for stmt in &rule.stmts {
                let matched = match stmt {
                    Stmt::Nfproto(f) => *f == flow.family,
                    Stmt::L4proto(p) => *p == flow.protocol,
                    Stmt::FibDaddrLocal => false,
                    Stmt::DaddrInSet { family, set } => {
                        *family == flow.family && self.contains(set, dst)
                    }
                    // A block found: its chain decides, or gives the packet back to the
                    // next rule; no block: the rule ends at the lookup.
                    Stmt::DaddrVmap { family, map } => {
                        if *family == flow.family
                            && let Some(next) = self.block_chain(map, *family, dst)
                        {
                            if depth >= MAX_JUMPS {
                                return Some(Outcome::Unknown);
                            }
                            if let Some(outcome) = self.run(next, packet, depth + 1) {
                                return Some(outcome);
                            }
                        }
                        false
                    }
                    Stmt::SaddrNotInSet { family, set } => {
                        *family == flow.family && !self.contains(set, src)
                    }
                    Stmt::OifnameNotInSet { set } => {
                        // `oifname != @set return`: the packets that go on are those
                        // leaving through the set; what follows applies only to them.
                        packet.via = Some(self.interfaces(set));
                        false
                    }
                    Stmt::NumgenBelow { .. } | Stmt::Counter { .. } => true,
                    Stmt::Masquerade { .. } | Stmt::Snat { .. } => {
                        return Some(Outcome::Translated {
                            how: stmt,
                            via: packet.via,
                        });
                    }
                    // A source the map does not hold ends the rule at the lookup.
                    Stmt::SnatMap {
                        family,
                        map,
                        flags,
                        ports,
                        ..
                    } => match self.lookup(map, src) {
                        Some(to) if *family == flow.family => {
                            return Some(Outcome::Mapped {
                                to,
                                flags: *flags,
                                ports: *ports,
                                via: packet.via,
                            });
                        }
                        _ => false,
                    },
                    // The chain decides, or the packet comes back to the next rule.
                    Stmt::Jump { chain: name } => {
                        let Some(next) = self.chains.get(name.as_str()).copied() else {
                            return Some(Outcome::Unknown);
                        };
                        if depth >= MAX_JUMPS {
                            return Some(Outcome::Unknown);
                        }
                        if let Some(outcome) = self.run(next, packet, depth + 1) {
                            return Some(outcome);
                        }
                        continue 'rules;
                    }
                    // `return` from a jumped-to chain goes back to the rule after the jump.
                    Stmt::Return if depth > 0 => return None,
                    // `accept` in a block chain ends the base chain as `return` does in it.
                    Stmt::Return | Stmt::Accept => return Some(Outcome::Untouched),
                    Stmt::Unknown(_) => return Some(Outcome::Unknown),
                };
                if !matched {
                    continue 'rules;
                }
            }
        }
        None
    }
}

/// A flow's first packet on its way through the chains: its addresses as postrouting sees
/// them, and the interfaces an `oifname` rule limited what follows to.
struct Packet<'f, 't> {
    flow: &'f Flow,
    src: u128,
    dst: u128,
    via: Option<&'t [Interface]>,
}

/// Whether two outcomes are the same decision. Rule counters are not part of it, and an
/// unknown outcome equals nothing.
fn same(a: Outcome<'_>, b: Outcome<'_>) -> bool {
    match (a, b) {
        (Outcome::Unknown, _) | (_, Outcome::Unknown) => false,
        (a, b) => a == b,
    }
}

/// Selects the flows whose outcome differs between `old` and `new`.
#[derive(Debug)]
pub struct Change<'t> {
    old: Evaluator<'t>,
    new: Evaluator<'t>,
}

impl<'t> Change<'t> {
    /// The change from `old` to `new`.
    pub fn new(old: &'t Table, new: &'t Table) -> Change<'t> {
        Change {
            old: Evaluator::new(old),
            new: Evaluator::new(new),
        }
    }

    /// Whether the change can affect any flow at all: false when the tables make the same
    /// decisions (same rules and sets; counters and flags aside).
    pub fn any(&self) -> bool {
        !self.old.table.same_policy(self.new.table)
    }

    /// Whether `flow`'s first packet would be treated differently now.
    pub fn affects(&self, flow: &Flow) -> bool {
        !same(self.old.outcome(flow), self.new.outcome(flow))
    }

    /// The families whose flows can be affected: those either table handles.
    pub fn families(&self) -> Vec<Family> {
        let mut out = Vec::new();
        for f in [Family::V4, Family::V6] {
            let handles =
                |t: &Table| t.sets.iter().any(|s| s.family == f) || !excludes_family(t, f);
            if handles(self.old.table) || handles(self.new.table) {
                out.push(f);
            }
        }
        out
    }
}

/// Whether the table's first rule is `meta nfproto <f> return` (IPv6 left alone without
/// `--enable-ipv6`).
fn excludes_family(t: &Table, f: Family) -> bool {
    t.chains
        .iter()
        .filter(|c| c.base.is_some())
        .filter_map(|c| c.rules.first())
        .any(|r| r.stmts == [Stmt::Nfproto(f), Stmt::Return])
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;
    use crate::config::{PolicyFlags, parse};
    use crate::kernel::conntrack::{L4, Tuple};
    use crate::model::{self, TableFlags};

    fn table(yaml: &str, flags: &PolicyFlags) -> Table {
        let config = parse(yaml.as_bytes(), "/etc/config/ip-masq-agent".as_ref(), flags)
            .expect("valid config")
            .config;
        model::desired(&config, flags, TableFlags::default())
    }

    fn flow(proto: u8, src: &str, dst: &str) -> Flow {
        let (src, dst): (IpAddr, IpAddr) = (src.parse().unwrap(), dst.parse().unwrap());
        let l4 = L4::Ports {
            src: 40000,
            dst: 53,
        };
        Flow {
            family: Family::of_addr(&src),
            protocol: proto,
            original: Tuple { src, dst, l4 },
            reply: Tuple {
                src: dst,
                dst: src,
                l4,
            },
            status: 0,
            id: None,
            zone: None,
            mark: None,
            timeout: None,
        }
    }

    /// Exemption sets cut by block (`--max-set-prefixes`): each destination is looked up
    /// in its block's set only, and exactly the configured ones are left alone.
    #[test]
    fn block_sets_exempt_exactly_the_configured_destinations() {
        let f = PolicyFlags {
            enable_ipv6: true,
            max_set_prefixes: 2,
            ..PolicyFlags::default()
        };
        let c = parse(
            b"nonMasqueradeCIDRs: [10.0.0.0/16, 10.64.0.0/16, 10.200.0.0/16, 172.16.0.0/12, \
             fd00::/16, fd80::/16, 2001:db8::/32]\n",
            std::path::Path::new("/test"),
            &f,
        )
        .unwrap()
        .config;
        let t = crate::model::desired(&c, &f, Default::default());
        assert!(t.sets.len() > 2, "{t}");
        let ev = Evaluator::new(&t);
        for (dst, exempt) in [
            ("10.0.1.1", true),
            ("10.1.0.1", false),
            ("10.64.3.3", true),
            ("10.200.255.255", true),
            ("10.201.0.0", false),
            ("172.31.0.1", true),
            ("8.8.8.8", false),
            ("fd00::1", true),
            ("fd01::1", false),
            ("2001:db8::1", true),
            ("2001:db9::1", false),
        ] {
            let src = if dst.contains(':') {
                "fd99::1"
            } else {
                "100.64.0.2"
            };
            let out = ev.outcome(&flow(UDP, src, dst));
            assert_eq!(matches!(out, Outcome::Untouched), exempt, "{dst}: {out:?}");
        }
    }

    /// A flow to `service` that destination NAT sent to `endpoint` (the reply comes from
    /// the endpoint), as conntrack reports a Service connection.
    fn dnat(src: &str, service: &str, endpoint: &str) -> Flow {
        let mut f = flow(UDP, src, service);
        f.reply.src = endpoint.parse().unwrap();
        f.status = crate::kernel::conntrack::uapi::IPS_DST_NAT;
        f
    }

    const UDP: u8 = 17;

    fn v6() -> PolicyFlags {
        PolicyFlags {
            enable_ipv6: true,
            ..PolicyFlags::default()
        }
    }

    #[test]
    fn a_destination_moving_into_non_masquerade_is_affected_and_others_are_not() {
        let f = PolicyFlags::default();
        let old = table("nonMasqueradeCIDRs: [10.0.0.0/8]\n", &f);
        let new = table("nonMasqueradeCIDRs: [10.0.0.0/8, 203.0.113.0/24]\n", &f);
        let c = Change::new(&old, &new);
        assert!(c.any());
        assert!(c.affects(&flow(UDP, "10.244.1.2", "203.0.113.9")));
        assert!(!c.affects(&flow(UDP, "10.244.1.2", "198.51.100.9")));
        assert!(!c.affects(&flow(UDP, "10.244.1.2", "10.1.2.3")));
        // And back (masqueradeCIDRs carving it out again).
        let back = table(
            "nonMasqueradeCIDRs: [10.0.0.0/8, 203.0.113.0/24]\nmasqueradeCIDRs: [203.0.113.0/25]\n",
            &f,
        );
        let c = Change::new(&new, &back);
        assert!(c.affects(&flow(UDP, "10.244.1.2", "203.0.113.9")));
        assert!(!c.affects(&flow(UDP, "10.244.1.2", "203.0.113.200")));
    }

    #[test]
    fn a_flow_through_a_service_is_judged_by_its_endpoint() {
        let f = PolicyFlags::default();
        let old = table("nonMasqueradeCIDRs: [10.0.0.0/8]\n", &f);
        let new = table("nonMasqueradeCIDRs: [10.0.0.0/8, 203.0.113.0/24]\n", &f);
        let c = Change::new(&old, &new);
        // A Service address inside 10/8 (exempt under both tables), DNAT'ed to an endpoint
        // that just became exempt: postrouting masqueraded it before and leaves it now.
        let via_service = dnat("10.244.1.2", "10.96.0.10", "203.0.113.2");
        assert!(c.affects(&via_service));
        assert!(matches!(
            Evaluator::new(&old).outcome(&via_service),
            Outcome::Translated { .. }
        ));
        assert_eq!(
            Evaluator::new(&new).outcome(&via_service),
            Outcome::Untouched
        );
        // The same Service sending to an endpoint whose decision did not change.
        assert!(!c.affects(&dnat("10.244.1.2", "10.96.0.10", "198.51.100.9")));
        assert!(!c.affects(&dnat("10.244.1.2", "10.96.0.10", "10.1.2.3")));
    }

    #[test]
    fn a_service_range_that_changes_decision_does_not_affect_endpoints_that_do_not() {
        let f = PolicyFlags::default();
        // The Service range 203.0.113.0/24 becomes exempt; its endpoints are elsewhere.
        let old = table("nonMasqueradeCIDRs: [10.0.0.0/8]\n", &f);
        let new = table("nonMasqueradeCIDRs: [10.0.0.0/8, 203.0.113.0/24]\n", &f);
        let c = Change::new(&old, &new);
        // Endpoint outside every exempt range: masqueraded under both tables.
        assert!(!c.affects(&dnat("10.244.1.2", "203.0.113.7", "198.51.100.9")));
        // Endpoint in 10/8: left alone under both.
        assert!(!c.affects(&dnat("10.244.1.2", "203.0.113.7", "10.20.0.5")));
        // An endpoint inside the range that changed is affected, whatever the Service.
        assert!(c.affects(&dnat("10.244.1.2", "192.0.2.7", "203.0.113.9")));
        // A direct flow (no DNAT: the reply comes from the destination) as before.
        assert!(c.affects(&flow(UDP, "10.244.1.2", "203.0.113.7")));
    }

    #[test]
    fn the_source_is_judged_before_source_nat() {
        let f = PolicyFlags::default();
        let all = table("nonMasqueradeCIDRs: [10.0.0.0/8]\n", &f);
        let scoped = table(
            "nonMasqueradeCIDRs: [10.0.0.0/8]\nsourceCIDRs: [10.244.0.0/16]\n",
            &f,
        );
        let c = Change::new(&all, &scoped);
        // Masqueraded by us: the reply goes to the node's address, which is not in
        // sourceCIDRs; the pod's is, so the decision did not change.
        let mut masqueraded = flow(UDP, "10.244.1.2", "198.51.100.9");
        masqueraded.reply.dst = "192.0.2.1".parse().unwrap();
        masqueraded.status = crate::kernel::conntrack::uapi::IPS_SRC_NAT;
        assert!(!c.affects(&masqueraded));
        let mut other = masqueraded;
        other.original.src = "10.99.0.5".parse().unwrap();
        assert!(c.affects(&other));
    }

    #[test]
    fn a_source_entering_or_leaving_source_cidrs_is_affected() {
        let f = PolicyFlags::default();
        let all = table("nonMasqueradeCIDRs: [10.0.0.0/8]\n", &f);
        let scoped = table(
            "nonMasqueradeCIDRs: [10.0.0.0/8]\nsourceCIDRs: [10.244.0.0/16]\n",
            &f,
        );
        let c = Change::new(&all, &scoped);
        assert!(c.affects(&flow(UDP, "10.99.0.5", "198.51.100.9")));
        assert!(!c.affects(&flow(UDP, "10.244.3.4", "198.51.100.9")));
        // A destination nobody translates is untouched under both.
        assert!(!c.affects(&flow(UDP, "10.99.0.5", "10.1.1.1")));
    }

    #[test]
    fn a_new_snat_address_affects_the_translated_flows_only() {
        let f = PolicyFlags::default();
        let a = table(
            "nonMasqueradeCIDRs: [10.0.0.0/8]\nsnatTo: [192.0.2.10]\n",
            &f,
        );
        let b = table(
            "nonMasqueradeCIDRs: [10.0.0.0/8]\nsnatTo: [192.0.2.11]\n",
            &f,
        );
        let c = Change::new(&a, &b);
        assert!(c.affects(&flow(UDP, "10.244.1.2", "198.51.100.9")));
        assert!(!c.affects(&flow(UDP, "10.244.1.2", "10.3.3.3")));
        let m = table("nonMasqueradeCIDRs: [10.0.0.0/8]\n", &f);
        assert!(Change::new(&m, &a).affects(&flow(UDP, "10.244.1.2", "198.51.100.9")));
    }

    #[test]
    fn new_egress_interfaces_affect_the_translated_flows_only() {
        let f = PolicyFlags::default();
        let a = table("egressInterfaces: [eth0]\n", &f);
        let b = table("egressInterfaces: [eth0, wg0]\n", &f);
        let c = Change::new(&a, &b);
        assert!(c.affects(&flow(UDP, "10.244.1.2", "198.51.100.9")));
        assert!(!c.affects(&flow(UDP, "10.244.1.2", "10.3.3.3")));
        assert!(!Change::new(&a, &a.clone()).affects(&flow(UDP, "10.244.1.2", "198.51.100.9")));
    }

    #[test]
    fn the_same_policy_affects_nothing_and_counters_do_not_count() {
        let f = PolicyFlags::default();
        let a = table("nonMasqueradeCIDRs: [10.0.0.0/8]\n", &f);
        let mut b = a.clone();
        for rule in &mut b.chains[0].rules {
            for s in &mut rule.stmts {
                if let Stmt::Counter { packets, .. } = s {
                    *packets = 42;
                }
            }
        }
        let c = Change::new(&a, &b);
        assert!(!c.any());
        assert!(!c.affects(&flow(UDP, "10.244.1.2", "198.51.100.9")));
    }

    #[test]
    fn ipv6_flows_follow_the_ipv6_set_and_are_left_alone_without_enable_ipv6() {
        let old = table("nonMasqueradeCIDRs: [10.0.0.0/8, fd00::/8]\n", &v6());
        let new = table(
            "nonMasqueradeCIDRs: [10.0.0.0/8, fd00::/8, 2001:db8::/32]\n",
            &v6(),
        );
        let c = Change::new(&old, &new);
        assert!(c.affects(&flow(UDP, "fd00::5", "2001:db8::1")));
        assert!(!c.affects(&flow(UDP, "fd00::5", "2001:db9::1")));
        assert_eq!(c.families(), [Family::V4, Family::V6]);
        let f = PolicyFlags::default();
        let v4only = table("nonMasqueradeCIDRs: [10.0.0.0/8]\n", &f);
        let v4more = table("nonMasqueradeCIDRs: [10.0.0.0/8, 192.0.2.0/24]\n", &f);
        let c = Change::new(&v4only, &v4more);
        assert_eq!(c.families(), [Family::V4]);
        assert!(!c.affects(&flow(UDP, "fd00::5", "2001:db8::1")));
    }

    #[test]
    fn to_ports_rules_decide_per_protocol() {
        let f = PolicyFlags {
            to_ports: Some("1024-29999,32768-65535".parse().unwrap()),
            ..PolicyFlags::default()
        };
        let old = table("nonMasqueradeCIDRs: [10.0.0.0/8]\n", &f);
        let new = table("nonMasqueradeCIDRs: [10.0.0.0/8, 198.51.100.0/24]\n", &f);
        let c = Change::new(&old, &new);
        for proto in [6, UDP, 1] {
            assert!(c.affects(&flow(proto, "10.244.1.2", "198.51.100.9")));
            assert!(!c.affects(&flow(proto, "10.244.1.2", "192.0.2.9")));
        }
    }

    #[test]
    fn a_statement_we_did_not_write_makes_the_outcome_unknown() {
        let f = PolicyFlags::default();
        let a = table("nonMasqueradeCIDRs: [10.0.0.0/8]\n", &f);
        let mut b = a.clone();
        b.chains[0].rules.insert(
            0,
            model::Rule {
                stmts: vec![Stmt::Unknown("log".into())],
            },
        );
        let c = Change::new(&a, &b);
        assert!(c.affects(&flow(UDP, "10.244.1.2", "10.1.1.1")));
        assert_eq!(
            Evaluator::new(&b).outcome(&flow(UDP, "10.244.1.2", "10.1.1.1")),
            Outcome::Unknown
        );
    }
}

#[cfg(test)]
mod tests_snat_rules;
