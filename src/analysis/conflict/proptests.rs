//! The linear walk against the obvious one: on random acyclic tables (jumps, gotos, returns,
//! accepts, verdict maps, known and unknown matches), following every way through the
//! chains one by one, as the analysis once did, finds the same rules with the same answers
//! (yes, or cannot tell). The reasons of a "cannot tell" may be fewer: where one way reaches
//! a chain surely, the linear walk does not also name the unknowns of the other ways, which
//! do not matter (the obvious walk names every unknown of every way).

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::emulate::{self, Act, Env};
use super::finding::{Stopper, Why, extend, join};
use super::*;
use crate::addr::prefix::Span;
use crate::kernel::nft::decode::ChainMsg;
use crate::kernel::nft::expr::ImmData;
use crate::kernel::nft::ruleset::{ForeignSet, Verdict};
use crate::model::{BaseChain, Chain, HOOK_POSTROUTING};

/// A rule's match.
#[derive(Debug, Clone)]
enum Cond {
    None,
    /// `ip daddr 10.0.0.0/8` (true for the probe) or `ip daddr 11.0.0.0/8` (false).
    Daddr(bool),
    /// `tcp dport 80`: unknown.
    Port,
    /// `meta mark & 1 == 1`: false unmarked, unknown with any mark.
    Mark,
    /// `oifname "eth0"`: unknown.
    Oif,
}

/// A rule's action; chains are named by how far after the rule's own they are.
#[derive(Debug, Clone)]
enum Do {
    Masq,
    Jump(usize),
    Goto(usize),
    Return,
    Accept,
    Count,
    /// A verdict map on the destination: its verdicts (jump or goto ahead, accept, return),
    /// whether its key covers the probe, whether its keys can be compared.
    Vmap(Vec<(bool, usize)>, bool, bool),
}

fn cond() -> impl Strategy<Value = Cond> {
    prop_oneof![
        3 => Just(Cond::None),
        2 => any::<bool>().prop_map(Cond::Daddr),
        1 => Just(Cond::Port),
        1 => Just(Cond::Mark),
        1 => Just(Cond::Oif),
    ]
}

fn act() -> impl Strategy<Value = Do> {
    prop_oneof![
        2 => Just(Do::Masq),
        3 => (1usize..4).prop_map(Do::Jump),
        1 => (1usize..4).prop_map(Do::Goto),
        1 => Just(Do::Return),
        1 => Just(Do::Accept),
        1 => Just(Do::Count),
        2 => (
            prop::collection::vec((any::<bool>(), 0usize..5), 1..4),
            any::<bool>(),
            any::<bool>()
        )
            .prop_map(|(v, hit, comparable)| Do::Vmap(v, hit, comparable)),
    ]
}

/// Chains of rules; chain i may only call chains after it.
fn tables() -> impl Strategy<Value = Vec<Vec<(Cond, Do)>>> {
    prop::collection::vec(prop::collection::vec((cond(), act()), 0..5), 1..7)
}

fn cmp1(data: &[u8]) -> Expr {
    Expr::Cmp {
        sreg: 1,
        op: NFT_CMP_EQ,
        data: data.to_vec(),
    }
}

fn build(spec: &[Vec<(Cond, Do)>]) -> ForeignTable {
    let name = |i: usize| format!("c{i}");
    let mut chains = Vec::new();
    let mut rules = Vec::new();
    let mut sets = Vec::new();
    for (i, rs) in spec.iter().enumerate() {
        chains.push(ChainMsg {
            table: "t".into(),
            chain: Chain {
                name: name(i),
                base: (i == 0).then(|| BaseChain {
                    kind: "nat".into(),
                    hook: HOOK_POSTROUTING,
                    priority: 100,
                    policy: 1,
                }),
                rules: Vec::new(),
            },
        });
        for (c, d) in rs {
            let mut exprs = match c {
                Cond::None => vec![],
                Cond::Daddr(hit) => vec![
                    Expr::Payload {
                        base: NFT_PAYLOAD_NETWORK_HEADER,
                        offset: 16,
                        len: 1,
                        dreg: 1,
                    },
                    cmp1(&[if *hit { 10 } else { 11 }]),
                ],
                Cond::Port => vec![
                    Expr::Payload {
                        base: NFT_PAYLOAD_TRANSPORT_HEADER,
                        offset: 2,
                        len: 2,
                        dreg: 1,
                    },
                    cmp1(&[0, 80]),
                ],
                Cond::Mark => vec![
                    Expr::Meta {
                        key: NFT_META_MARK,
                        dreg: 1,
                    },
                    Expr::Bitwise {
                        sreg: 1,
                        dreg: 1,
                        len: 4,
                        mask: 1u32.to_ne_bytes().to_vec(),
                        xor: vec![0; 4],
                    },
                    cmp1(&1u32.to_ne_bytes()),
                ],
                Cond::Oif => vec![
                    Expr::Meta {
                        key: NFT_META_OIFNAME,
                        dreg: 1,
                    },
                    cmp1(b"eth0\0\0\0\0\0\0\0\0\0\0\0\0"),
                ],
            };
            let verdict = |code: i32, chain: Option<String>| Expr::Immediate {
                dreg: 0,
                data: ImmData::Verdict(code, chain),
            };
            match d {
                Do::Masq => exprs.push(Expr::Masq {
                    flags: 0,
                    reg_min: None,
                    reg_max: None,
                }),
                Do::Jump(k) => exprs.push(verdict(NFT_JUMP, Some(name(i + k)))),
                Do::Goto(k) => exprs.push(verdict(NFT_GOTO, Some(name(i + k)))),
                Do::Return => exprs.push(verdict(NFT_RETURN, None)),
                Do::Accept => exprs.push(verdict(NF_ACCEPT, None)),
                Do::Count => exprs.push(Expr::Counter {
                    packets: 0,
                    bytes: 0,
                }),
                Do::Vmap(vs, hit, comparable) => {
                    let set = format!("__map{}", sets.len());
                    let verdicts: Vec<Verdict> = vs
                        .iter()
                        .map(|(goto, k)| match k {
                            0 => Verdict {
                                code: NF_ACCEPT,
                                chain: None,
                            },
                            1 => Verdict {
                                code: NFT_RETURN,
                                chain: None,
                            },
                            k => Verdict {
                                code: if *goto { NFT_GOTO } else { NFT_JUMP },
                                chain: Some(name(i + k - 1)),
                            },
                        })
                        .collect();
                    // The probe's destination is 10.1.2.3.
                    let lo = if *hit { 0x0a00_0000 } else { 0x0b00_0000 };
                    let keys = comparable.then(|| {
                        vec![(
                            Span {
                                lo,
                                hi: lo + 0xff_ffff,
                            },
                            0,
                        )]
                    });
                    sets.push(ForeignSet::verdict_map(&set, 4, verdicts, keys));
                    exprs.push(Expr::Payload {
                        base: NFT_PAYLOAD_NETWORK_HEADER,
                        offset: 16,
                        len: 4,
                        dreg: 1,
                    });
                    exprs.push(Expr::Lookup {
                        set,
                        sreg: 1,
                        dreg: Some(NFT_REG_VERDICT),
                        set_id: None,
                        flags: 0,
                    });
                }
            }
            rules.push(RuleMsg {
                table: "t".into(),
                chain: name(i),
                handle: rules.len() as u64 + 1,
                exprs,
            });
        }
    }
    ForeignTable {
        family: NFPROTO_IPV4,
        name: "t".into(),
        chains,
        rules,
        sets,
    }
}

/// The walk as it was: every way through the chains in turn.
struct Reference<'a> {
    table: &'a ForeignTable,
    env: Env<'a>,
    found: BTreeMap<u64, Why>,
}

enum Exit {
    Never,
    Always,
    When(Why),
}

impl<'a> Reference<'a> {
    fn chain(&mut self, name: &str, path: &Why) -> Exit {
        let mut gated = Why::new();
        let mut left = Why::new();
        let table = self.table;
        for rule in table.rules.iter().filter(|r| r.chain == name) {
            for (act, why) in emulate::evaluate(rule, &self.env) {
                let mut full = path.clone();
                extend(&mut full, &gated);
                extend(&mut full, &why);
                let (kind, when) = match act {
                    Act::Translates(_) => {
                        match self.found.get_mut(&rule.handle) {
                            Some(w) => join(w, full),
                            None => {
                                self.found.insert(rule.handle, full);
                            }
                        }
                        (2, why)
                    }
                    Act::UnknownVerdict => (2, why),
                    Act::Verdict(code @ (NFT_JUMP | NFT_GOTO), Some(to)) => {
                        let exists = table.chains.iter().any(|c| c.chain.name == to);
                        let exit = if exists {
                            self.chain(to, &full)
                        } else {
                            Exit::When(vec![format!("chain {to}, which was not read")])
                        };
                        match (exit, code) {
                            (Exit::Always, _) => (2, why),
                            (Exit::When(w), _) => {
                                let mut all = why;
                                extend(&mut all, &w);
                                (2, all)
                            }
                            (Exit::Never, NFT_GOTO) => (1, why),
                            (Exit::Never, _) => (0, Why::new()),
                        }
                    }
                    Act::Verdict(NFT_CONTINUE | NFT_BREAK, _) => (0, Why::new()),
                    Act::Verdict(NFT_RETURN, _) => (1, why),
                    Act::Verdict(..) => (2, why),
                };
                match kind {
                    0 => {}
                    2 if when.is_empty() => {
                        return if gated.is_empty() {
                            Exit::Always
                        } else {
                            Exit::When(gated)
                        };
                    }
                    1 if when.is_empty() => {
                        return if left.is_empty() {
                            Exit::Never
                        } else {
                            Exit::When(left)
                        };
                    }
                    2 => {
                        extend(&mut left, &when);
                        extend(&mut gated, &when);
                    }
                    _ => extend(&mut gated, &when),
                }
            }
        }
        if left.is_empty() {
            Exit::Never
        } else {
            Exit::When(left)
        }
    }
}

fn normal(why: &Why) -> Vec<String> {
    let mut w = why.clone();
    w.sort();
    w
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn the_linear_walk_finds_what_following_every_way_finds(spec in tables()) {
        let table = build(&spec);
        let probe = Packet {
            src: Some("10.244.1.2".parse().unwrap()),
            dst: "10.1.2.3".parse().unwrap(),
            oif: None,
            dst_local: Some(false),
        };
        let sets = table.sets.iter().map(|s| (s.name.as_str(), s)).collect();
        let never = || false;
        let mut stop = Stopper::new(&never);
        let index = walk::Table::new(&table, &mut stop).unwrap();
        for mark in [Some(0), None] {
            let mut reference = Reference {
                table: &table,
                env: Env { probe: &probe, mark, sets: &sets },
                found: BTreeMap::new(),
            };
            reference.chain("c0", &Why::new());
            let want: BTreeMap<u64, Vec<String>> =
                reference.found.iter().map(|(h, w)| (*h, normal(w))).collect();
            let got: BTreeMap<u64, Vec<String>> = index
                .pass(&probe, mark, &mut stop)
                .unwrap()
                .into_iter()
                .flat_map(|(_, f)| f)
                .map(|f| {
                    let w = match f.answer {
                        Answer::Yes => Vec::new(),
                        Answer::CannotTell(w) => normal(&w),
                        other => panic!("{other:?}"),
                    };
                    (f.handle, w)
                })
                .collect();
            let kinds = |m: &BTreeMap<u64, Vec<String>>| -> Vec<(u64, bool)> {
                m.iter().map(|(h, w)| (*h, w.is_empty())).collect()
            };
            prop_assert_eq!(kinds(&got), kinds(&want), "mark {:?}, table {:#?}", mark, spec);
            for (h, w) in &got {
                // Both walks name at most MAX_WHY unknowns, each the first it meets: past the
                // cap the reference's list is a sample, and the two samples may differ.
                if want[h].iter().any(|r| r == super::finding::MORE) {
                    continue;
                }
                prop_assert!(
                    w.iter().all(|r| want[h].contains(r)),
                    "rule {}: {:?} not within {:?}; mark {:?}, table {:#?}", h, w, want[h], mark, spec
                );
            }
        }
    }
}
