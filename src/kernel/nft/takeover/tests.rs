//! The takeover on the kernel's own bytes: `tests/fixtures/takeover-ip.bin` and
//! `takeover-ip6.bin` are the dumps of the `nat` tables iptables-nft 1.8.9 wrote from
//! `tests/fixtures/takeover-*.rules` on kernel 6.18 (`examples/capture_nat.rs`), plus one
//! rule added with nft (a comment in the rule's user data, handle 35). Handles below are
//! those the kernel gave.

use super::dump::{self, NatRule, NatTable};
use super::plan::{self, Plan};
use super::recognise::{self, Written};
use super::*;
use crate::kernel::netlink::messages;
use crate::kernel::nft::expr::{Expr, ImmData};

const IP: &[u8] = include_bytes!("../../../../tests/fixtures/takeover-ip.bin");
const IP6: &[u8] = include_bytes!("../../../../tests/fixtures/takeover-ip6.bin");

fn tables() -> Vec<NatTable> {
    vec![
        dump::parse(NFPROTO_IPV4, IP).unwrap(),
        dump::parse(NFPROTO_IPV6, IP6).unwrap(),
    ]
}

fn ret(d: &str) -> Written {
    Written::Return {
        destination: Some(d.into()),
    }
}

fn masq(protocol: Option<u8>, ports: Option<(u16, u16)>) -> Written {
    Written::Masquerade {
        random_fully: true,
        protocol,
        ports,
    }
}

fn removals(p: Plan) -> Vec<Removal> {
    match p {
        Plan::Remove(r) => r,
        other => panic!("expected a removal, got {other:?}"),
    }
}

#[test]
fn the_dumps_hold_every_chain_and_rule() {
    let [ip, ip6] = <[NatTable; 2]>::try_from(tables()).unwrap();
    let names: Vec<&str> = ip.chains.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "PREROUTING",
            "INPUT",
            "OUTPUT",
            "POSTROUTING",
            "HAND-EDITED",
            "IP-MASQ",
            "IP-MASQ-AGENT",
            "KUBE-MARK-MASQ",
            "KUBE-POSTROUTING"
        ]
    );
    assert!(ip.chain("POSTROUTING").unwrap().base);
    assert!(!ip.chain("IP-MASQ-AGENT").unwrap().base);
    assert_eq!(ip.rules.len(), 26);
    assert_eq!(ip6.rules.len(), 6);
    // Only the rule nft added has a comment in its user data; iptables' are matches.
    let with_udata: Vec<u64> = ip
        .rules
        .iter()
        .filter(|r| r.comment.is_some())
        .map(|r| r.handle)
        .collect();
    assert_eq!(with_udata, [35]);
    // The ip6 dump read as ip finds nothing: the family is checked.
    assert!(dump::parse(NFPROTO_IPV4, IP6).unwrap().rules.is_empty());
}

#[test]
fn todays_ip_masq_agent_is_recognised_in_both_families() {
    let r = removals(plan::plan("IP-MASQ-AGENT", &tables()));
    assert_eq!(r.len(), 2);
    let (ip, ip6) = (&r[0], &r[1]);
    assert_eq!((ip.family, ip6.family), (NFPROTO_IPV4, NFPROTO_IPV6));
    assert_eq!(
        ip.rules,
        [
            (24, ret("169.254.0.0/16")),
            (25, ret("10.0.0.0/8")),
            (26, ret("172.16.0.0/12")),
            (27, ret("203.0.113.7/32")),
            (28, masq(Some(6), Some((1024, 29999)))),
            (29, masq(Some(6), Some((32768, 65535)))),
            (30, masq(None, None)),
        ]
    );
    // Its own jump (the comment with literal quotes) and a hand-made one: both go.
    let jumps: Vec<(&str, u64, bool)> = ip
        .jumps
        .iter()
        .map(|j| (j.chain.as_str(), j.handle, j.own))
        .collect();
    assert_eq!(
        jumps,
        [("POSTROUTING", 12, true), ("POSTROUTING", 14, false)]
    );
    assert_eq!(ip.jumps[1].description, "-s 10.244.0.0/16 -j IP-MASQ-AGENT");
    assert_eq!(
        ip6.rules.iter().map(|(_, w)| w.clone()).collect::<Vec<_>>(),
        [
            ret("fe80::/10"),
            ret("fd00::/8"),
            ret("fd00:10:244::/52"),
            masq(Some(17), Some((32768, 65535))),
            masq(None, None),
        ]
    );
    assert_eq!(ip6.jumps.len(), 1);
    assert!(ip6.jumps[0].own);
}

#[test]
fn a_2017_release_under_masq_chain_is_recognised() {
    let r = removals(plan::plan("IP-MASQ", &tables()));
    assert_eq!(r.len(), 1, "only in ip");
    assert_eq!(
        r[0].rules,
        [
            (21, ret("10.0.0.0/8")),
            (22, Written::Return { destination: None }),
            (
                23,
                Written::Masquerade {
                    random_fully: false,
                    protocol: None,
                    ports: None
                }
            ),
        ]
    );
    // The jump's comment without quotes (an older release) is its own too.
    assert_eq!(r[0].jumps.len(), 1);
    assert!(r[0].jumps[0].own);
    assert_eq!(r[0].jumps[0].handle, 13);
}

#[test]
fn a_chain_with_others_rules_is_refused_naming_each() {
    let Plan::Refuse(foreign) = plan::plan("HAND-EDITED", &tables()) else {
        panic!("not refused");
    };
    let got: Vec<(Option<u64>, &str)> = foreign
        .iter()
        .map(|f| (f.handle, f.description.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (Some(17), "-s 10.244.5.0/24 -j RETURN"),
            (
                Some(18),
                "-d 100.64.0.0/10 -m comment --comment \"vpn\" -j RETURN"
            ),
            (
                Some(19),
                "-m comment --comment \"ip-masq-agent: outbound traffic is subject to \
                 MASQUERADE (must be last in chain)\" -j SNAT"
            ),
        ]
    );
    assert!(foreign.iter().all(|f| f.family == NFPROTO_IPV4));
    assert!(foreign[0].why.contains("source"), "{}", foreign[0].why);
    assert!(foreign[1].why.contains("\"vpn\""), "{}", foreign[1].why);
    assert!(foreign[2].why.contains("-j SNAT"), "{}", foreign[2].why);
    // kube-proxy's chain is never taken for ip-masq-agent's.
    assert!(matches!(
        plan::plan("KUBE-POSTROUTING", &tables()),
        Plan::Refuse(_)
    ));
    // A base chain of that name is not iptables' -N chain.
    let Plan::Refuse(f) = plan::plan("POSTROUTING", &tables()) else {
        panic!("base chain not refused");
    };
    assert!(
        f.iter()
            .any(|f| f.handle.is_none() && f.why.contains("base"))
    );
}

#[test]
fn a_refusal_in_one_family_removes_nothing_in_the_other() {
    let mut t = tables();
    // ip6's chain gets a rule of someone else's.
    t[1].rules.push(NatRule {
        chain: "IP-MASQ-AGENT".into(),
        handle: 99,
        exprs: vec![verdict(NF_ACCEPT, None)],
        comment: None,
    });
    let Plan::Refuse(f) = plan::plan("IP-MASQ-AGENT", &t) else {
        panic!("not refused");
    };
    assert_eq!(f.len(), 1);
    assert_eq!((f[0].family, f[0].handle), (NFPROTO_IPV6, Some(99)));
}

#[test]
fn a_missing_chain_is_nothing_to_do() {
    assert_eq!(plan::plan("NOT-THERE", &tables()), Plan::Nothing);
    assert_eq!(plan::plan(DEFAULT_CHAIN, &[]), Plan::Nothing);
}

#[test]
fn the_batch_deletes_jumps_rules_then_chain_at_the_generation_read() {
    let r = removals(plan::plan("IP-MASQ-AGENT", &tables()));
    let b = plan::batch(&r, 1000, 0x1234_5678);
    let msgs: Vec<_> = messages(&b.bytes).map(Result::unwrap).collect();
    assert_eq!(msgs.len(), 2 + b.msgs.len());
    // BEGIN carries the generation, big-endian.
    let begin = &msgs[0];
    assert_eq!(begin.ty, NFNL_MSG_BATCH_BEGIN);
    let genid = begin
        .attrs()
        .map(Result::unwrap)
        .find(|a| a.ty == NFNL_BATCH_GENID)
        .unwrap();
    assert_eq!(genid.data, 0x1234_5678u32.to_be_bytes());
    assert_eq!(msgs.last().unwrap().ty, NFNL_MSG_BATCH_END);
    let whats: Vec<&str> = b.msgs.iter().map(|m| m.what.as_str()).collect();
    assert_eq!(
        whats,
        [
            "DELRULE ip nat POSTROUTING handle 12",
            "DELRULE ip nat POSTROUTING handle 14",
            "DELRULE ip nat IP-MASQ-AGENT handle 24",
            "DELRULE ip nat IP-MASQ-AGENT handle 25",
            "DELRULE ip nat IP-MASQ-AGENT handle 26",
            "DELRULE ip nat IP-MASQ-AGENT handle 27",
            "DELRULE ip nat IP-MASQ-AGENT handle 28",
            "DELRULE ip nat IP-MASQ-AGENT handle 29",
            "DELRULE ip nat IP-MASQ-AGENT handle 30",
            "DELCHAIN ip nat IP-MASQ-AGENT",
            "DELRULE ip6 nat POSTROUTING handle 6",
            "DELRULE ip6 nat IP-MASQ-AGENT handle 7",
            "DELRULE ip6 nat IP-MASQ-AGENT handle 8",
            "DELRULE ip6 nat IP-MASQ-AGENT handle 9",
            "DELRULE ip6 nat IP-MASQ-AGENT handle 10",
            "DELRULE ip6 nat IP-MASQ-AGENT handle 11",
            "DELCHAIN ip6 nat IP-MASQ-AGENT",
        ]
    );
    // Each message as described: family, table, chain, handle; consecutive sequence
    // numbers; only the last asks for the ACK.
    for (i, (m, bm)) in msgs[1..msgs.len() - 1].iter().zip(&b.msgs).enumerate() {
        assert_eq!(m.seq, 1001 + i as u32);
        assert_eq!(m.seq, bm.seq);
        assert_eq!(m.nft_msg(), Some(bm.kind));
        let fam = if bm.what.contains(" ip6 ") {
            NFPROTO_IPV6
        } else {
            NFPROTO_IPV4
        };
        assert_eq!(m.family(), fam);
        assert!(crate::kernel::nft::decode::is_of_table(m, "nat"));
        if bm.kind == NFT_MSG_DELRULE {
            let r = crate::kernel::nft::decode::rule(m).unwrap();
            assert!(
                bm.what
                    .ends_with(&format!(" {} handle {}", r.chain, r.handle))
            );
        }
        let last = i + 1 == b.msgs.len();
        assert_eq!(m.flags & NLM_F_ACK != 0, last, "{}", bm.what);
    }
}

#[test]
fn legacy_commands_delete_every_jump_then_flush_and_delete_the_chain() {
    assert_eq!(
        plan::legacy_commands(NFPROTO_IPV4, "IP-MASQ"),
        "iptables-legacy -t nat -S | sed -n 's/^-A \\(.* -[jg] IP-MASQ\\)$/-D \\1/p' | while \
         read -r r; do eval \"iptables-legacy -t nat $r\"; done; iptables-legacy -t nat -F \
         IP-MASQ; iptables-legacy -t nat -X IP-MASQ"
    );
    assert!(plan::legacy_commands(NFPROTO_IPV6, "X").starts_with("ip6tables-legacy -t nat -S"));
}

#[test]
fn legacy_is_named_only_where_nf_tables_lacks_the_chain() {
    let both = ["ip", "ip6"];
    assert_eq!(
        plan::legacy_to_check(&both, &tables(), "IP-MASQ"),
        ["ip6"],
        "IP-MASQ is in ip's nat table only"
    );
    assert!(plan::legacy_to_check(&both, &tables(), "IP-MASQ-AGENT").is_empty());
    assert_eq!(plan::legacy_to_check(&both, &tables(), "X"), both);
    assert!(plan::legacy_to_check(&[], &tables(), "X").is_empty());
}

// Constructed rules: what the shape check accepts and refuses beyond the fixtures.

fn verdict(code: i32, chain: Option<&str>) -> Expr {
    Expr::Immediate {
        dreg: NFT_REG_VERDICT,
        data: ImmData::Verdict(code, chain.map(str::to_string)),
    }
}

fn comment(text: &str) -> Expr {
    let mut info = text.as_bytes().to_vec();
    info.resize(256, 0);
    Expr::Compat {
        target: false,
        name: "comment".into(),
        rev: 0,
        info,
    }
}

fn masquerade_target(flags: u32) -> Expr {
    let mut info = 1u32.to_ne_bytes().to_vec();
    info.extend_from_slice(&flags.to_ne_bytes());
    info.resize(24, 0);
    Expr::Compat {
        target: true,
        name: "MASQUERADE".into(),
        rev: 0,
        info,
    }
}

fn rule(exprs: Vec<Expr>) -> NatRule {
    NatRule {
        chain: "IP-MASQ-AGENT".into(),
        handle: 1,
        exprs,
        comment: None,
    }
}

fn dst_10_8() -> Vec<Expr> {
    vec![
        Expr::Payload {
            base: NFT_PAYLOAD_NETWORK_HEADER,
            offset: 16,
            len: 1,
            dreg: 1,
        },
        Expr::Cmp {
            sreg: 1,
            op: NFT_CMP_EQ,
            data: vec![10],
        },
    ]
}

#[test]
fn the_shape_check_refuses_what_ip_masq_agent_never_writes() {
    let c = recognise::MASQ_COMMENT;
    let ok = rule(vec![comment(c), masquerade_target(0x10)]);
    assert!(recognise::written(NFPROTO_IPV4, &ok).is_ok());
    let cases: Vec<(&str, Vec<Expr>)> = vec![
        ("no comment", vec![masquerade_target(0)]),
        (
            "two comments",
            vec![comment(c), comment(c), masquerade_target(0)],
        ),
        (
            "--random (not fully)",
            vec![comment(c), masquerade_target(0x4)],
        ),
        (
            "ports without a protocol",
            vec![comment(c), masquerade_target(0x2)],
        ),
        (
            "a destination on the masquerade",
            [dst_10_8(), vec![comment(c), masquerade_target(0)]].concat(),
        ),
        (
            "the RETURN comment on a masquerade",
            vec![comment(recognise::RETURN_COMMENT), masquerade_target(0)],
        ),
        (
            "a log expression",
            vec![
                comment(c),
                Expr::Other { name: "log".into() },
                masquerade_target(0),
            ],
        ),
        (
            "a load never compared",
            vec![
                Expr::Meta {
                    key: NFT_META_L4PROTO,
                    dreg: 1,
                },
                comment(c),
                masquerade_target(0),
            ],
        ),
        (
            "a negated destination",
            vec![
                Expr::Payload {
                    base: NFT_PAYLOAD_NETWORK_HEADER,
                    offset: 16,
                    len: 1,
                    dreg: 1,
                },
                Expr::Cmp {
                    sreg: 1,
                    op: NFT_CMP_NEQ,
                    data: vec![10],
                },
                comment(recognise::RETURN_COMMENT),
                verdict(NFT_RETURN, None),
            ],
        ),
        (
            "accept instead of return",
            [
                dst_10_8(),
                vec![comment(recognise::RETURN_COMMENT), verdict(NF_ACCEPT, None)],
            ]
            .concat(),
        ),
        (
            "a jump",
            vec![
                comment(recognise::RETURN_COMMENT),
                verdict(NFT_JUMP, Some("X")),
            ],
        ),
    ];
    for (what, exprs) in cases {
        assert!(
            recognise::written(NFPROTO_IPV4, &rule(exprs)).is_err(),
            "{what} accepted"
        );
    }
}

#[test]
fn a_comment_in_user_data_counts_and_quotes_around_it_are_ip_masq_agents() {
    let mut r = rule([dst_10_8(), vec![verdict(NFT_RETURN, None)]].concat());
    r.comment = Some(format!("\"{}\"", recognise::RETURN_COMMENT));
    assert_eq!(recognise::written(NFPROTO_IPV4, &r), Ok(ret("10.0.0.0/8")));
    assert_eq!(
        recognise::describe(NFPROTO_IPV4, &r),
        format!(
            "-m comment --comment \"\\\"{}\\\"\" -d 10.0.0.0/8 -j RETURN",
            recognise::RETURN_COMMENT
        )
    );
}

#[test]
fn prefixes_need_a_contiguous_mask_and_zeros_past_it() {
    let r = |mask: Vec<u8>, data: Vec<u8>| {
        rule(vec![
            Expr::Payload {
                base: NFT_PAYLOAD_NETWORK_HEADER,
                offset: 16,
                len: 2,
                dreg: 1,
            },
            Expr::Bitwise {
                sreg: 1,
                dreg: 1,
                len: 2,
                mask,
                xor: vec![0, 0],
            },
            Expr::Cmp {
                sreg: 1,
                op: NFT_CMP_EQ,
                data,
            },
            comment(recognise::RETURN_COMMENT),
            verdict(NFT_RETURN, None),
        ])
    };
    assert_eq!(
        recognise::written(NFPROTO_IPV4, &r(vec![0xff, 0xf0], vec![172, 16])),
        Ok(ret("172.16.0.0/12"))
    );
    for (mask, data) in [
        (vec![0xff, 0x0f], vec![172, 0]),  // holes in the mask
        (vec![0xf0, 0xff], vec![16, 0]),   // ones after a partial byte
        (vec![0xff, 0xf0], vec![172, 17]), // data past the mask
    ] {
        assert!(recognise::written(NFPROTO_IPV4, &r(mask, data)).is_err());
    }
}

#[test]
fn the_log_lines_name_handles_and_what_each_rule_is() {
    let r = removals(plan::plan("IP-MASQ-AGENT", &tables()));
    let j: Vec<String> = r[0].jumps.iter().map(jump_text).collect();
    assert_eq!(
        j[1],
        "POSTROUTING handle 14 (not ip-masq-agent's own jump): -s 10.244.0.0/16 -j IP-MASQ-AGENT"
    );
    let Plan::Refuse(f) = plan::plan("HAND-EDITED", &tables()) else {
        panic!()
    };
    assert!(
        foreign_text(&f[0]).starts_with("ip nat handle 17: -s 10.244.5.0/24 -j RETURN ("),
        "{}",
        foreign_text(&f[0])
    );
}
