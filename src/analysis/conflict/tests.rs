use super::*;
use crate::kernel::nft::decode::ChainMsg;
use crate::kernel::nft::expr::ImmData;
use crate::kernel::nft::ruleset::ForeignSet;
use crate::model::{BaseChain, Chain, HOOK_POSTROUTING};

fn base(name: &str, priority: i32) -> ChainMsg {
    ChainMsg {
        table: "nat".into(),
        chain: Chain {
            name: name.into(),
            base: Some(BaseChain {
                kind: "nat".into(),
                hook: HOOK_POSTROUTING,
                priority,
                policy: 1,
            }),
            rules: Vec::new(),
        },
    }
}

fn regular(name: &str) -> ChainMsg {
    ChainMsg {
        table: "nat".into(),
        chain: Chain {
            name: name.into(),
            base: None,
            rules: Vec::new(),
        },
    }
}

fn rule(chain: &str, handle: u64, exprs: Vec<Expr>) -> RuleMsg {
    RuleMsg {
        table: "nat".into(),
        chain: chain.into(),
        handle,
        exprs,
    }
}

fn cmp(op: u32, data: &[u8]) -> Expr {
    Expr::Cmp {
        sreg: 1,
        op,
        data: data.to_vec(),
    }
}

fn payload(offset: u32, len: u32) -> Expr {
    Expr::Payload {
        base: NFT_PAYLOAD_NETWORK_HEADER,
        offset,
        len,
        dreg: 1,
    }
}

fn target(name: &str) -> Expr {
    Expr::Compat {
        target: true,
        name: name.into(),
        rev: 0,
        info: Vec::new(),
    }
}

/// What iptables-nft 1.8.9 makes of kubenet's and kube-proxy's rules (read back from a
/// kernel with `nft --debug=netlink`).
fn kubelet_kubenet_kube_proxy() -> ForeignTable {
    // -m addrtype ! --dst-type LOCAL: dest = LOCAL (XT_ADDRTYPE_LOCAL, 1 << RTN_LOCAL = 4, as
    // iptables-nft writes it: tests/fixtures/takeover-ip.bin), flags = invert dest (2).
    let mut addrtype = 0u16.to_ne_bytes().to_vec();
    addrtype.extend_from_slice(&4u16.to_ne_bytes());
    addrtype.extend_from_slice(&2u32.to_ne_bytes());
    ForeignTable {
        family: NFPROTO_IPV4,
        name: "nat".into(),
        chains: vec![base("POSTROUTING", 100), regular("KUBE-POSTROUTING")],
        rules: vec![
            // kubenet: ! -d 10.0.0.0/8 -m addrtype ! --dst-type LOCAL -j MASQUERADE
            rule(
                "POSTROUTING",
                2,
                vec![
                    payload(16, 1),
                    cmp(NFT_CMP_NEQ, &[10]),
                    Expr::Compat {
                        target: false,
                        name: "addrtype".into(),
                        rev: 1,
                        info: addrtype,
                    },
                    Expr::Counter {
                        packets: 0,
                        bytes: 0,
                    },
                    target("MASQUERADE"),
                ],
            ),
            rule(
                "POSTROUTING",
                4,
                vec![Expr::Immediate {
                    dreg: 0,
                    data: ImmData::Verdict(NFT_JUMP, Some("KUBE-POSTROUTING".into())),
                }],
            ),
            // kube-proxy: unmarked packets return; marked ones are masqueraded.
            rule(
                "KUBE-POSTROUTING",
                5,
                vec![
                    Expr::Meta {
                        key: NFT_META_MARK,
                        dreg: 1,
                    },
                    Expr::Bitwise {
                        sreg: 1,
                        dreg: 1,
                        len: 4,
                        mask: 0x4000u32.to_ne_bytes().to_vec(),
                        xor: vec![0; 4],
                    },
                    cmp(NFT_CMP_NEQ, &0x4000u32.to_ne_bytes()),
                    Expr::Immediate {
                        dreg: 0,
                        data: ImmData::Verdict(NFT_RETURN, None),
                    },
                ],
            ),
            rule("KUBE-POSTROUTING", 6, vec![target("MARK")]),
            rule("KUBE-POSTROUTING", 7, vec![target("MASQUERADE")]),
        ],
        sets: Vec::<ForeignSet>::new(),
    }
}

fn probe(dst: &str) -> Packet {
    Packet {
        src: Some("10.244.1.2".parse().unwrap()),
        dst: dst.parse().unwrap(),
        oif: None,
        dst_local: Some(false),
    }
}

fn answers(findings: &[Finding]) -> Vec<(u64, Answer)> {
    findings
        .iter()
        .map(|f| (f.handle, f.answer.clone()))
        .collect()
}

#[test]
fn kubenet_masquerades_outside_10_8_and_kube_proxy_is_conditional() {
    let t = [kubelet_kubenet_kube_proxy()];
    // Outside 10/8 kubenet's rule takes the packet: nothing after it matters.
    let outside = analyze(&t, &probe("192.168.0.5"));
    assert_eq!(answers(&outside), [(2, Answer::Yes)]);
    assert_eq!(conflicts(&outside).count(), 1);
    // Inside, it does not; kube-proxy's rule translates only marked packets.
    let inside = analyze_all(&t, &probe("10.20.0.5"));
    assert_eq!(
        answers(&inside),
        [(7, Answer::Conditional(vec![MARK.into()])), (2, Answer::No)]
    );
    assert_eq!(inside[0].chain, "KUBE-POSTROUTING (from POSTROUTING)");
    assert_eq!(conflicts(&inside).count(), 0);
    // A local destination is excluded by the addrtype match.
    let mut local = probe("192.168.0.5");
    local.dst_local = Some(true);
    assert!(answers(&analyze_all(&t, &local)).contains(&(2, Answer::No)));
    // Unknown locality: cannot tell, and why.
    local.dst_local = None;
    let f = analyze(&t, &local);
    assert_eq!(
        f[0].answer,
        Answer::CannotTell(vec!["whether the destination is local".into()])
    );
}

#[test]
fn a_return_in_a_jumped_chain_comes_back_to_the_caller() {
    // kube-proxy's jump first (as it inserts it), kubenet's rule after it.
    let mut t = kubelet_kubenet_kube_proxy();
    t.rules.swap(0, 1);
    let t = [t];
    let f = analyze(&t, &probe("192.168.0.5"));
    assert_eq!(
        answers(&f),
        [
            (2, Answer::Yes),
            (7, Answer::Conditional(vec![MARK.into()]))
        ],
        "unmarked packets return from KUBE-POSTROUTING and meet kubenet's rule"
    );
    assert_eq!(conflicts(&f).count(), 1);
}

#[test]
fn chains_after_ours_are_walked_too_and_other_families_left_out() {
    // A chain after ours still translates what our `return` leaves alone.
    let mut t = kubelet_kubenet_kube_proxy();
    t.chains[0] = base("POSTROUTING", 200);
    let f = analyze(&[t], &probe("192.168.0.5"));
    assert_eq!(answers(&f)[0], (2, Answer::Yes), "{f:?}");
    assert_eq!(f[0].priority, 200);
    let t = kubelet_kubenet_kube_proxy();
    assert!(
        analyze(&[t], &probe("2001:db8::5")).is_empty(),
        "an ip table"
    );
}

#[test]
fn native_rules_with_sets_and_interfaces() {
    // inet cni: ip saddr 10.244.0.0/16 ip daddr != { 10.0.0.0/8 } oifname "eth0" masquerade
    let mut oif = b"eth0".to_vec();
    oif.resize(16, 0);
    let t = ForeignTable {
        family: NFPROTO_INET,
        name: "cni".into(),
        chains: vec![base("post", 100)],
        rules: vec![rule(
            "post",
            3,
            vec![
                Expr::Meta {
                    key: NFT_META_NFPROTO,
                    dreg: 1,
                },
                cmp(NFT_CMP_EQ, &[NFPROTO_IPV4]),
                payload(12, 2),
                cmp(NFT_CMP_EQ, &[10, 244]),
                payload(16, 4),
                Expr::Lookup {
                    set: "__set0".into(),
                    sreg: 1,
                    dreg: None,
                    set_id: None,
                    flags: NFT_LOOKUP_F_INV,
                },
                Expr::Meta {
                    key: NFT_META_OIFNAME,
                    dreg: 1,
                },
                cmp(NFT_CMP_EQ, &oif),
                Expr::Masq {
                    flags: 0,
                    reg_min: None,
                    reg_max: None,
                },
            ],
        )],
        sets: vec![ForeignSet::keys(
            "__set0",
            4,
            vec![crate::addr::prefix::Span {
                lo: 0x0a00_0000,
                hi: 0x0aff_ffff,
            }],
        )],
    };
    let t = [t];
    let mut p = probe("192.168.0.5");
    assert_eq!(
        answers(&analyze(&t, &p)),
        [(3, Answer::CannotTell(vec!["the output interface".into()]))]
    );
    p.oif = Some("eth0".into());
    assert_eq!(answers(&analyze(&t, &p)), [(3, Answer::Yes)]);
    p.oif = Some("eth1".into());
    assert_eq!(answers(&analyze_all(&t, &p)), [(3, Answer::No)]);
    let inside = probe("10.1.2.3");
    assert_eq!(answers(&analyze_all(&t, &inside)), [(3, Answer::No)]);
    let mut outside_src = probe("192.168.0.5");
    outside_src.src = Some("10.245.0.1".parse().unwrap());
    assert_eq!(answers(&analyze_all(&t, &outside_src)), [(3, Answer::No)]);
}

fn jump(code: i32, to: &str) -> Expr {
    Expr::Immediate {
        dreg: 0,
        data: ImmData::Verdict(code, Some(to.into())),
    }
}

fn masq() -> Expr {
    Expr::Masq {
        flags: 0,
        reg_min: None,
        reg_max: None,
    }
}

/// `tcp dport N`: a match the analysis cannot decide.
fn tcp_dport(port: u16) -> Vec<Expr> {
    vec![
        Expr::Meta {
            key: NFT_META_L4PROTO,
            dreg: 1,
        },
        cmp(NFT_CMP_EQ, &[6]),
        Expr::Payload {
            base: NFT_PAYLOAD_TRANSPORT_HEADER,
            offset: 2,
            len: 2,
            dreg: 1,
        },
        cmp(NFT_CMP_EQ, &port.to_be_bytes()),
    ]
}

const PORTS: &[&str] = &["the transport protocol", "transport header fields (ports)"];

fn why(w: &[&str]) -> Vec<String> {
    w.iter().map(|s| s.to_string()).collect()
}

/// The hostile table: `post` jumps 4 times to c1, each ci 4 times to c(i+1), the
/// last one masquerades `tcp dport 1` (so no chain ends the walk early: every jump comes
/// back); `filler` more `tcp dport` rules spread over the chains.
pub(super) fn hostile(depth: usize, filler: usize) -> ForeignTable {
    let mut chains = vec![base("post", 100)];
    let mut rules = Vec::new();
    let mut handle = 0;
    let mut add = |chain: &str, exprs: Vec<Expr>, rules: &mut Vec<RuleMsg>| {
        handle += 1;
        rules.push(rule(chain, handle, exprs));
    };
    let name = |i: usize| {
        if i == 0 {
            "post".to_string()
        } else {
            format!("c{i}")
        }
    };
    for i in 0..=depth {
        if i > 0 {
            chains.push(regular(&name(i)));
        }
        for f in 0..filler / (depth + 1) {
            let mut e = tcp_dport(1000 + f as u16);
            e.push(Expr::Counter {
                packets: 0,
                bytes: 0,
            });
            add(&name(i), e, &mut rules);
        }
        if i < depth {
            for _ in 0..4 {
                add(&name(i), vec![jump(NFT_JUMP, &name(i + 1))], &mut rules);
            }
        } else {
            let mut e = tcp_dport(1);
            e.push(masq());
            add(&name(i), e, &mut rules);
        }
    }
    ForeignTable {
        family: NFPROTO_IPV4,
        name: "hostile".into(),
        chains,
        rules,
        sets: Vec::new(),
    }
}

#[test]
fn a_hostile_jump_graph_is_walked_once_per_chain() {
    for depth in [12, 16, 64] {
        let t = [hostile(depth, 0)];
        let start = std::time::Instant::now();
        let f = analyze(&t, &probe("10.1.2.3"));
        let took = start.elapsed();
        // 4^16 ways into the last chain; walking each would take hours.
        assert!(
            took < std::time::Duration::from_secs(2),
            "depth {depth}: {took:?}"
        );
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].chain, format!("c{depth} (from post)"));
        assert_eq!(f[0].answer, Answer::CannotTell(why(PORTS)));
        // Evaluated rules: each once per mark assumption, whatever the number of ways.
        let evaluated = std::cell::Cell::new(0u64);
        analyze_until(&t, &probe("10.1.2.3"), &|| {
            evaluated.set(evaluated.get() + 256);
            false
        })
        .unwrap();
        assert!(
            evaluated.get() <= 4 * 256 + 8 * t[0].rules.len() as u64,
            "depth {depth}: {} steps for {} rules",
            evaluated.get(),
            t[0].rules.len()
        );
    }
}

#[test]
fn a_stop_cuts_the_analysis_short() {
    let t = [hostile(16, 10_000)];
    let asked = std::cell::Cell::new(0);
    let r = analyze_until(&t, &probe("10.1.2.3"), &|| {
        asked.set(asked.get() + 1);
        asked.get() > 3
    });
    assert_eq!(r, None);
    assert_eq!(
        asked.get(),
        4,
        "asked every few hundred rules, not once per rule"
    );
    assert!(analyze_until(&t, &probe("10.1.2.3"), &|| false).is_some());
}

/// `ip daddr vmap { 10.0.0.0/8 : jump domasq, 192.168.0.0/16 : accept }`, then a
/// masquerade of everything; `domasq` masquerades.
fn vmap_table(map: ForeignSet) -> ForeignTable {
    ForeignTable {
        family: NFPROTO_IPV4,
        name: "vm".into(),
        chains: vec![base("post", 100), regular("domasq")],
        rules: vec![
            rule(
                "post",
                1,
                vec![
                    payload(16, 4),
                    Expr::Lookup {
                        set: "__map0".into(),
                        sreg: 1,
                        dreg: Some(NFT_REG_VERDICT),
                        set_id: None,
                        flags: 0,
                    },
                ],
            ),
            rule("post", 2, vec![target("MASQUERADE")]),
            rule("domasq", 3, vec![masq()]),
        ],
        sets: vec![map],
    }
}

fn verdict(code: i32, chain: Option<&str>) -> crate::kernel::nft::ruleset::Verdict {
    crate::kernel::nft::ruleset::Verdict {
        code,
        chain: chain.map(str::to_string),
    }
}

fn ten_and_192_168() -> ForeignSet {
    use crate::addr::prefix::Span;
    ForeignSet::verdict_map(
        "__map0",
        4,
        vec![verdict(NFT_JUMP, Some("domasq")), verdict(NF_ACCEPT, None)],
        Some(vec![
            (
                Span {
                    lo: 0x0a00_0000,
                    hi: 0x0aff_ffff,
                },
                0,
            ),
            (
                Span {
                    lo: 0xc0a8_0000,
                    hi: 0xc0a8_ffff,
                },
                1,
            ),
        ]),
    )
}

#[test]
fn verdict_maps_are_followed() {
    let t = [vmap_table(ten_and_192_168())];
    // 10/8 jumps to domasq, which masquerades: our exemption is overridden.
    let f = analyze_all(&t, &probe("10.1.2.3"));
    assert_eq!(answers(&f), [(3, Answer::Yes), (2, Answer::No)]);
    assert_eq!(f[0].chain, "domasq (from post)");
    // 192.168/16 is accepted: nothing after it translates.
    let f = analyze_all(&t, &probe("192.168.1.1"));
    assert_eq!(answers(&f), [(2, Answer::No), (3, Answer::No)]);
    // No element: the lookup fails, the next rule masquerades.
    let f = analyze_all(&t, &probe("172.16.0.1"));
    assert_eq!(answers(&f), [(2, Answer::Yes), (3, Answer::No)]);
}

#[test]
fn verdict_maps_with_keys_we_cannot_compare_may_go_anywhere() {
    // kube-proxy's style: `ip daddr . meta l4proto . th dport vmap @services`.
    let map = ForeignSet::verdict_map("__map0", 12, vec![verdict(NFT_GOTO, Some("domasq"))], None);
    let t = [vmap_table(map)];
    let f = analyze(&t, &probe("10.1.2.3"));
    let w = why(&["a lookup in map __map0"]);
    assert_eq!(
        answers(&f),
        [
            (3, Answer::CannotTell(w.clone())),
            (2, Answer::CannotTell(w))
        ]
    );
}

#[test]
fn sets_not_read_make_lookups_cannot_tell() {
    let reason = crate::kernel::nft::ruleset::not_read_reason("__map0", "vm", 20_000);
    let t = [vmap_table(ForeignSet::opaque("__map0", 4, reason.clone()))];
    let f = analyze(&t, &probe("10.1.2.3"));
    assert_eq!(answers(&f), [(2, Answer::CannotTell(vec![reason.clone()]))]);
    // A plain set not read: the same, not "no".
    let mut t = kubelet_kubenet_kube_proxy();
    t.rules[0].exprs[1] = Expr::Lookup {
        set: "big".into(),
        sreg: 1,
        dreg: None,
        set_id: None,
        flags: NFT_LOOKUP_F_INV,
    };
    t.sets = vec![ForeignSet::opaque("big", 4, reason.clone())];
    let f = analyze(&[t], &probe("10.1.2.3"));
    assert_eq!(f[0].answer, Answer::CannotTell(vec![reason]));
}

#[test]
fn loops_deep_chains_and_missing_chains_are_cannot_tell() {
    // post -> a -> b -> a: the kernel refuses it, a decoder may still see it.
    let t = ForeignTable {
        family: NFPROTO_IPV4,
        name: "loop".into(),
        chains: vec![base("post", 100), regular("a"), regular("b")],
        rules: vec![
            rule("post", 1, vec![jump(NFT_JUMP, "a")]),
            rule("a", 2, vec![jump(NFT_JUMP, "b")]),
            rule("b", 3, vec![jump(NFT_GOTO, "a")]),
            rule("b", 4, vec![jump(NFT_JUMP, "nowhere")]),
            rule("post", 5, vec![masq()]),
        ],
        sets: Vec::new(),
    };
    let f = analyze(&[t], &probe("10.1.2.3"));
    assert_eq!(
        answers(&f),
        [(
            5,
            Answer::CannotTell(why(&[
                "a loop of jumps through chain a",
                "chain nowhere, which was not read"
            ]))
        )]
    );
    // 100,000 chains deep: no recursion, so no stack overflow.
    let mut t = hostile(1, 0);
    t.rules.clear();
    let n = 100_000;
    for i in 0..n {
        let from = if i == 0 {
            "post".into()
        } else {
            format!("d{i}")
        };
        t.chains.push(regular(&format!("d{}", i + 1)));
        t.rules
            .push(rule(&from, i, vec![jump(NFT_JUMP, &format!("d{}", i + 1))]));
    }
    t.rules.push(rule(&format!("d{n}"), n, vec![masq()]));
    let f = analyze(&[t], &probe("10.1.2.3"));
    assert_eq!(answers(&f), [(n, Answer::Yes)]);
}

/// Analysis time against jump depth and foreign rule count, for docs/design.md:
/// `cargo test --release --lib conflict::tests::timing -- --ignored --nocapture`.
#[test]
#[ignore = "a benchmark: prints a table"]
fn timing() {
    println!("| depth | rules | analysis (ms) |");
    println!("|---|---|---|");
    for depth in [6, 8, 10, 12, 16] {
        for filler in [100, 1_000, 10_000] {
            let t = [hostile(depth, filler)];
            let runs = 5;
            let start = std::time::Instant::now();
            for _ in 0..runs {
                std::hint::black_box(analyze_all(&t, &probe("10.1.2.3")));
            }
            let ms = start.elapsed().as_secs_f64() * 1e3 / f64::from(runs);
            println!("| {depth} | {} | {ms:.2} |", t[0].rules.len());
        }
    }
}
