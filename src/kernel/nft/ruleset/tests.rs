use super::*;
use crate::kernel::netlink::{Writer, messages};
use crate::model::Chain;

fn chain(table: &str, base: Option<BaseChain>) -> ChainMsg {
    ChainMsg {
        table: table.into(),
        chain: Chain {
            name: "c".into(),
            base,
            rules: Vec::new(),
        },
    }
}

fn nat(priority: i32) -> Option<BaseChain> {
    Some(BaseChain {
        kind: "nat".into(),
        hook: HOOK_POSTROUTING,
        priority,
        policy: 1,
    })
}

#[test]
fn only_other_nat_postrouting_tables_are_kept() {
    let filter = Some(BaseChain {
        kind: "filter".into(),
        hook: 1,
        priority: 0,
        policy: 1,
    });
    let chains = vec![
        (NFPROTO_IPV4, chain("nat", nat(100))),
        (NFPROTO_IPV4, chain("nat", None)),
        (NFPROTO_INET, chain("nft-masq-agent", nat(100))),
        (NFPROTO_INET, chain("filter", filter)),
        (NFPROTO_IPV6, chain("nat", nat(100))),
        (7, chain("bridge", nat(100))),
    ];
    assert_eq!(
        nat_tables(&chains, "nft-masq-agent"),
        [(NFPROTO_IPV4, "nat".into()), (NFPROTO_IPV6, "nat".into())]
    );
}

/// One element for [`elements_msg`]: key, flags, verdict (code, chain) or data value.
struct El<'a> {
    key: &'a [u8],
    flags: u32,
    verdict: Option<(i32, Option<&'a str>)>,
    value: Option<&'a [u8]>,
}

fn el(key: &[u8]) -> El<'_> {
    El {
        key,
        flags: 0,
        verdict: None,
        value: None,
    }
}

/// A NEWSETELEM message as the kernel dumps it.
fn elements_msg(set: &str, elements: &[El<'_>]) -> Vec<u8> {
    super::super::encode::request(
        NFT_MSG_NEWSETELEM,
        false,
        1,
        NFPROTO_IPV4,
        |w: &mut Writer| {
            w.put_str(NFTA_SET_ELEM_LIST_TABLE, "t");
            w.put_str(NFTA_SET_ELEM_LIST_SET, set);
            let list = w.begin_nest(NFTA_SET_ELEM_LIST_ELEMENTS);
            for e in elements {
                let item = w.begin_nest(1);
                let k = w.begin_nest(NFTA_SET_ELEM_KEY);
                w.put(NFTA_DATA_VALUE, e.key);
                w.end_nest(k);
                if e.flags != 0 {
                    w.put_u32(NFTA_SET_ELEM_FLAGS, e.flags);
                }
                if let Some((code, chain)) = e.verdict {
                    let d = w.begin_nest(NFTA_SET_ELEM_DATA);
                    let v = w.begin_nest(NFTA_DATA_VERDICT);
                    w.put_u32(NFTA_VERDICT_CODE, code as u32);
                    if let Some(c) = chain {
                        w.put_str(NFTA_VERDICT_CHAIN, c);
                    }
                    w.end_nest(v);
                    w.end_nest(d);
                }
                if let Some(value) = e.value {
                    let d = w.begin_nest(NFTA_SET_ELEM_DATA);
                    w.put(NFTA_DATA_VALUE, value);
                    w.end_nest(d);
                }
                w.end_nest(item);
            }
            w.end_nest(list);
        },
    )
}

fn set_msg(name: &str, flags: u32, key_len: u32) -> SetMsg {
    SetMsg {
        table: "t".into(),
        name: name.into(),
        flags,
        key_len,
        key_type: NFT_TYPE_IPADDR,
        data_type: 0,
        data_len: 0,
    }
}

fn build(set: SetMsg, bytes: &[u8], room: usize) -> Option<ForeignSet> {
    let mut b = SetBuilder::new(set);
    for m in messages(bytes) {
        b.feed(&m.unwrap(), room).unwrap()?;
    }
    Some(b.finish())
}

#[test]
fn an_interval_verdict_map_keeps_each_range_with_its_verdict() {
    // `ip daddr vmap { 10.0.0.0/8 : jump domasq, 192.168.0.0/16 : accept }`, as the kernel
    // dumps the anonymous map: each range a start with the verdict and an end, end first.
    let bytes = elements_msg(
        "__map0",
        &[
            El {
                flags: NFT_SET_ELEM_INTERVAL_END,
                ..el(&[192, 169, 0, 0])
            },
            El {
                verdict: Some((NF_ACCEPT, None)),
                ..el(&[192, 168, 0, 0])
            },
            El {
                flags: NFT_SET_ELEM_INTERVAL_END,
                ..el(&[11, 0, 0, 0])
            },
            El {
                verdict: Some((NFT_JUMP, Some("domasq"))),
                ..el(&[10, 0, 0, 0])
            },
            El {
                flags: NFT_SET_ELEM_INTERVAL_END,
                ..el(&[0, 0, 0, 0])
            },
        ],
    );
    let flags = NFT_SET_ANONYMOUS | NFT_SET_CONSTANT | NFT_SET_INTERVAL | NFT_SET_MAP;
    let map = build(set_msg("__map0", flags, 4), &bytes, 100).unwrap();
    let jump = Verdict {
        code: NFT_JUMP,
        chain: Some("domasq".into()),
    };
    assert_eq!(map.verdict_of(0x0a01_0203), Some(Some(&jump)));
    assert_eq!(map.verdict_of(0x0aff_ffff), Some(Some(&jump)));
    assert_eq!(
        map.verdict_of(0xc0a8_0001).unwrap().map(|v| v.code),
        Some(NF_ACCEPT)
    );
    assert_eq!(
        map.verdict_of(0x0b00_0000),
        Some(None),
        "no element: no verdict"
    );
    assert_eq!(map.contains(0x0a00_0000), Some(true));
    assert_eq!(map.verdicts().len(), 2);
}

#[test]
fn concatenated_maps_keep_their_verdicts_and_data_maps_are_opaque() {
    // kube-proxy's service-ips: `ip daddr . meta l4proto . th dport : verdict`.
    let bytes = elements_msg(
        "service-ips",
        &[
            El {
                verdict: Some((NFT_GOTO, Some("service-a"))),
                ..el(&[10, 96, 0, 10, 6, 0, 0, 0, 0, 53, 0, 0])
            },
            El {
                verdict: Some((NFT_GOTO, Some("service-a"))),
                ..el(&[10, 96, 0, 10, 17, 0, 0, 0, 0, 53, 0, 0])
            },
        ],
    );
    let map = build(
        set_msg("service-ips", NFT_SET_MAP | NFT_SET_CONCAT, 12),
        &bytes,
        100,
    )
    .unwrap();
    assert_eq!(map.verdict_of(1), None, "keys that cannot be compared");
    assert_eq!(map.verdicts().len(), 1, "each verdict once");
    let data = elements_msg(
        "snat-to",
        &[El {
            value: Some(&[192, 0, 2, 1]),
            ..el(&[10, 0, 0, 1])
        }],
    );
    let map = build(set_msg("snat-to", NFT_SET_MAP, 4), &data, 100).unwrap();
    assert_eq!(
        map.contents(),
        &Contents::Opaque("the data of map snat-to".into())
    );
}

#[test]
fn a_set_beyond_the_room_left_is_refused() {
    let keys: Vec<[u8; 4]> = (0..10u8).map(|i| [10, 0, 0, i]).collect();
    let elements: Vec<El<'_>> = keys.iter().map(|k| el(k)).collect();
    let bytes = elements_msg("s", &elements);
    assert!(build(set_msg("s", 0, 4), &bytes, 9).is_none());
    let set = build(set_msg("s", 0, 4), &bytes, 10).unwrap();
    assert_eq!(set.contains(0x0a00_0009), Some(true));
    assert_eq!(set.contains(0x0a00_000a), Some(false));
}

fn rule(chain: &str, exprs: Vec<Expr>) -> RuleMsg {
    RuleMsg {
        table: "t".into(),
        chain: chain.into(),
        handle: 1,
        exprs,
    }
}

fn jump(to: &str) -> Expr {
    Expr::Immediate {
        dreg: 0,
        data: ImmData::Verdict(NFT_JUMP, Some(to.into())),
    }
}

fn lookup(set: &str, dreg: Option<u32>) -> Expr {
    Expr::Lookup {
        set: set.into(),
        sreg: 1,
        dreg,
        set_id: None,
        flags: 0,
    }
}

fn named(name: &str, base: Option<BaseChain>) -> ChainMsg {
    let mut c = chain("t", base);
    c.chain.name = name.into();
    c
}

#[test]
fn only_sets_that_reachable_rules_look_up_are_read() {
    let chains = vec![
        named("post", nat(100)),
        named("late", nat(200)),
        named("a", None),
        named("b", None),
        named("unused", None),
    ];
    let rules = vec![
        rule("post", vec![lookup("pools", None), jump("a")]),
        rule("a", vec![lookup("__map0", Some(0))]),
        rule("b", vec![lookup("deep", None)]),
        rule("unused", vec![lookup("services", None)]),
        rule("late", vec![lookup("after-ours", None)]),
    ];
    let mut reach = Reach::new(&chains, &rules);
    let mut first = reach.next_sets();
    first.sort_unstable();
    // A chain after ours is read too: it still translates what our `return` leaves alone.
    assert_eq!(first, ["__map0", "after-ours", "pools"]);
    // The verdict map jumps to b: b's set is wanted next, once.
    let map = ForeignSet::verdict_map(
        "__map0",
        4,
        vec![Verdict {
            code: NFT_JUMP,
            chain: Some("b".into()),
        }],
        None,
    );
    reach.read(&map);
    assert_eq!(reach.next_sets(), ["deep"]);
    reach.read(&map);
    assert!(reach.next_sets().is_empty());
    let reached: Vec<bool> = ["post", "a", "b", "unused", "late"]
        .iter()
        .map(|c| reach.reached(c))
        .collect();
    assert_eq!(reached, [true, true, true, false, true]);
    let reached = reach.finish();
    let (mut chains, mut rules) = (chains.clone(), rules.clone());
    keep_reached(&mut chains, &mut rules, &reached);
    assert_eq!(chains.len(), 4);
    assert_eq!(rules.len(), 4);
}

#[test]
fn sets_are_sorted_and_merged_whatever_the_input() {
    let s = ForeignSet::keys(
        "s",
        4,
        vec![
            Span { lo: 20, hi: 30 },
            Span { lo: 1, hi: 5 },
            Span { lo: 6, hi: 8 },
            Span { lo: 9, hi: 3 },
        ],
    );
    assert_eq!(
        s.contents(),
        &Contents::Keys(vec![Span { lo: 1, hi: 8 }, Span { lo: 20, hi: 30 }])
    );
    assert_eq!(s.contains(7), Some(true));
    assert_eq!(s.contains(19), Some(false));
    assert_eq!(s.contains(31), Some(false));
}
