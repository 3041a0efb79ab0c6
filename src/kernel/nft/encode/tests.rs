use ipnet::IpNet;

use super::*;
use crate::config::{Config, PolicyFlags};
use crate::kernel::netlink::messages;
use crate::kernel::nft::decode;
use crate::kernel::nft::expr::Expr;
use crate::model::{self, TableFlags};

fn set_of(family: Family, list: &[&str]) -> Set {
    Set {
        name: "s".into(),
        family,
        prefixes: list.iter().map(|s| s.parse::<IpNet>().unwrap()).collect(),
    }
}

fn v4(a: [u8; 4]) -> u128 {
    u128::from(u32::from_be_bytes(a))
}

fn defaults(ipv6: bool) -> Table {
    let f = PolicyFlags {
        enable_ipv6: ipv6,
        ..PolicyFlags::default()
    };
    model::desired(&Config::defaults(&f), &f, TableFlags::default())
}

/// The messages of a batch as (type, flags, seq).
fn headers(b: &Batch) -> Vec<(u16, u16, u32)> {
    messages(&b.bytes)
        .map(|m| {
            let m = m.unwrap();
            (m.ty, m.flags, m.seq)
        })
        .collect()
}

#[test]
fn interval_elements_for_ordinary_ranges() {
    let s = set_of(Family::V4, &["10.0.0.0/8", "192.168.0.0/16"]);
    assert_eq!(
        interval_elements(&s),
        vec![
            (0, true), // leading end marker: the first range does not start at 0
            (v4([10, 0, 0, 0]), false),
            (v4([11, 0, 0, 0]), true),
            (v4([192, 168, 0, 0]), false),
            (v4([192, 169, 0, 0]), true),
        ]
    );
}

#[test]
fn interval_elements_at_the_top_of_the_address_space() {
    // 240.0.0.0/4 ends at 255.255.255.255: no end element (last + 1 would overflow).
    let s = set_of(Family::V4, &["10.0.0.0/8", "240.0.0.0/4"]);
    assert_eq!(
        interval_elements(&s),
        vec![
            (0, true),
            (v4([10, 0, 0, 0]), false),
            (v4([11, 0, 0, 0]), true),
            (v4([240, 0, 0, 0]), false),
        ]
    );
    // 0.0.0.0/0 starts at 0 (no leading marker) and ends at the top (no end).
    assert_eq!(
        interval_elements(&set_of(Family::V4, &["0.0.0.0/0"])),
        vec![(0, false)]
    );
    assert_eq!(
        interval_elements(&set_of(Family::V6, &["::/0"])),
        vec![(0, false)]
    );
    let ff = u128::from("ff00::".parse::<std::net::Ipv6Addr>().unwrap());
    assert_eq!(
        interval_elements(&set_of(Family::V6, &["ff00::/8"])),
        vec![(0, true), (ff, false)]
    );
    assert_eq!(
        interval_elements(&set_of(Family::V4, &["255.255.255.255/32"])),
        vec![(0, true), (u128::from(u32::MAX), false)]
    );
    assert!(interval_elements(&set_of(Family::V4, &[])).is_empty());
}

#[test]
fn newtable_and_batch_framing_bytes() {
    let mut t = defaults(false);
    t.sets.clear();
    t.chains.clear();
    let b = replace(&t, 100, ReplaceForm::AddDeleteAdd);
    let mut want: Vec<u8> = Vec::new();
    let hdr = |want: &mut Vec<u8>, len: u32, ty: u16, flags: u16, seq: u32, nfgen: [u8; 4]| {
        want.extend_from_slice(&len.to_ne_bytes());
        want.extend_from_slice(&ty.to_ne_bytes());
        want.extend_from_slice(&flags.to_ne_bytes());
        want.extend_from_slice(&seq.to_ne_bytes());
        want.extend_from_slice(&0u32.to_ne_bytes());
        want.extend_from_slice(&nfgen);
    };
    // BATCH_BEGIN: type 16, NLM_F_REQUEST, res_id = NFNL_SUBSYS_NFTABLES (big-endian 10).
    hdr(&mut want, 20, 16, 0x1, 100, [0, 0, 0, 10]);
    let name_attr = |want: &mut Vec<u8>| {
        want.extend_from_slice(&[19, 0, 1, 0]);
        want.extend_from_slice(b"nft-masq-agent\0\0");
    };
    // NEWTABLE (0x0a00): REQUEST | CREATE, family inet (1), NAME, FLAGS = 0 (BE).
    hdr(&mut want, 48, 0x0a00, 0x401, 101, [1, 0, 0, 0]);
    name_attr(&mut want);
    want.extend_from_slice(&[8, 0, 2, 0, 0, 0, 0, 0]);
    // DELTABLE (0x0a02): REQUEST, NAME only.
    hdr(&mut want, 40, 0x0a02, 0x1, 102, [1, 0, 0, 0]);
    name_attr(&mut want);
    // The last message asks for the one ACK: REQUEST | ACK | CREATE.
    hdr(&mut want, 48, 0x0a00, 0x405, 103, [1, 0, 0, 0]);
    name_attr(&mut want);
    want.extend_from_slice(&[8, 0, 2, 0, 0, 0, 0, 0]);
    // BATCH_END: type 17.
    hdr(&mut want, 20, 17, 0x1, 104, [0, 0, 0, 10]);
    assert_eq!(b.bytes, want);
    assert_eq!(
        b.msgs.iter().map(|m| m.seq).collect::<Vec<_>>(),
        [101, 102, 103],
        "BEGIN and END are not nf_tables messages"
    );
}

#[test]
fn table_flags_are_sent_big_endian() {
    let mut t = defaults(false);
    t.flags = TableFlags(TableFlags::OWNER | TableFlags::PERSIST);
    let b = replace(&t, 1, ReplaceForm::AddDeleteAdd);
    let first = &b.bytes[b.msgs[0].offset..b.msgs[0].offset + b.msgs[0].len];
    assert_eq!(&first[first.len() - 8..], &[8, 0, 2, 0, 0, 0, 0, 6]);
}

#[test]
fn set_element_bytes() {
    let mut t = defaults(false);
    t.sets = vec![Set {
        name: "nonmasq-v4".into(),
        ..set_of(Family::V4, &["10.0.0.0/8"])
    }];
    t.chains.clear();
    let b = replace(&t, 1, ReplaceForm::AddDeleteAdd);
    let m = b
        .msgs
        .iter()
        .find(|m| m.kind == NFT_MSG_NEWSETELEM)
        .unwrap();
    let msg = &b.bytes[m.offset..m.offset + m.len];
    let elements_attr: &[u8] = &[
        68, 0, 3, 0x80, // NFTA_SET_ELEM_LIST_ELEMENTS, nested
        24, 0, 1, 0x80, 12, 0, 1, 0x80, 8, 0, 1, 0, 0, 0, 0, 0, 8, 0, 3, 0, 0, 0, 0,
        1, // end 0
        16, 0, 1, 0x80, 12, 0, 1, 0x80, 8, 0, 1, 0, 10, 0, 0, 0, // start 10.0.0.0
        24, 0, 1, 0x80, 12, 0, 1, 0x80, 8, 0, 1, 0, 11, 0, 0, 0, 8, 0, 3, 0, 0, 0, 0,
        1, // end
    ];
    assert!(msg.ends_with(elements_attr), "{msg:?}");
    assert_eq!(b.elements, 3);
    let newset = b.msgs.iter().find(|m| m.kind == NFT_MSG_NEWSET).unwrap();
    let set_msg = messages(&b.bytes[newset.offset..]).next().unwrap().unwrap();
    let s = decode::set(&set_msg).unwrap();
    assert_eq!((s.flags, s.key_len), (NFT_SET_INTERVAL, 4));
}

#[test]
fn batch_message_order_and_flags() {
    let b = replace(&defaults(true), 7, ReplaceForm::AddDeleteAdd);
    let kinds: Vec<u16> = b.msgs.iter().map(|m| m.kind).collect();
    assert_eq!(
        kinds,
        [
            NFT_MSG_NEWTABLE,
            NFT_MSG_DELTABLE,
            NFT_MSG_NEWTABLE,
            NFT_MSG_NEWSET,
            NFT_MSG_NEWSETELEM,
            NFT_MSG_NEWSET,
            NFT_MSG_NEWSETELEM,
            NFT_MSG_NEWCHAIN,
            NFT_MSG_NEWRULE,
            NFT_MSG_NEWRULE,
            NFT_MSG_NEWRULE,
            NFT_MSG_NEWRULE,
        ]
    );
    let h = headers(&b);
    assert_eq!(h.first().unwrap().0, NFNL_MSG_BATCH_BEGIN);
    assert_eq!(h.last().unwrap().0, NFNL_MSG_BATCH_END);
    let seqs: Vec<u32> = h.iter().map(|x| x.2).collect();
    assert_eq!(seqs, (7..7 + h.len() as u32).collect::<Vec<_>>());
    // One ACK for the whole batch, on its last message: a batch of any size is answered by
    // one message when it commits (failing messages are reported whatever their flags).
    let body = &h[1..h.len() - 1];
    for (ty, flags, _) in &body[..body.len() - 1] {
        assert_eq!(flags & (NLM_F_REQUEST | NLM_F_ACK), NLM_F_REQUEST, "{ty:x}");
    }
    assert_eq!(body.last().unwrap().1 & NLM_F_ACK, NLM_F_ACK);
    let d = replace(&defaults(false), 1, ReplaceForm::DeleteAdd);
    assert_eq!(d.msgs[0].kind, NFT_MSG_DELTABLE);
    assert_eq!(d.msgs[1].kind, NFT_MSG_NEWTABLE);
}

#[test]
fn encoded_batch_decodes_back_to_the_same_table() {
    // Our NEW* requests have the same layout as the kernel's dump replies, so the decoder
    // must read our own batch back to the table it came from.
    for ipv6 in [false, true] {
        let mut t = defaults(ipv6);
        if ipv6 {
            t.sets[1].prefixes = vec!["::/0".parse().unwrap()];
        }
        let b = replace(&t, 1, ReplaceForm::AddDeleteAdd);
        let back = decode::table_from_dump(&b.bytes, &t.name).unwrap().unwrap();
        assert_eq!(back, t);
    }
}

#[test]
fn a_large_set_is_split_into_messages_under_64k() {
    let prefixes: Vec<IpNet> = (0..100_000u32)
        .map(|i| {
            format!("{}.{}.{}.0/24", 11 + i / 65536, (i / 256) % 256, i % 256)
                .parse()
                .unwrap()
        })
        .collect();
    let mut t = defaults(false);
    t.sets[0].prefixes = prefixes.clone();
    let b = replace(&t, 1, ReplaceForm::AddDeleteAdd);
    let elem_msgs: Vec<&BatchMsg> = b
        .msgs
        .iter()
        .filter(|m| m.kind == NFT_MSG_NEWSETELEM)
        .collect();
    assert!(elem_msgs.len() > 30, "{}", elem_msgs.len());
    assert!(elem_msgs.iter().all(|m| m.len < 64 * 1024));
    // 100,000 contiguous /24s: every start but the first shares its key with an end.
    assert_eq!(b.elements, 1 + 2 * 100_000);
    let back = decode::table_from_dump(&b.bytes, &t.name).unwrap().unwrap();
    assert_eq!(back.sets[0].prefixes, prefixes);
}

#[test]
fn rule_expressions_match_nft() {
    // `ip daddr @nonmasq-v4 return` as nft --debug=netlink shows it:
    //   [ meta load nfproto => reg 1 ] [ cmp eq reg 1 0x00000002 ]
    //   [ payload load 4b @ network header + 16 => reg 1 ] [ lookup reg 1 set nonmasq-v4 ]
    //   [ immediate reg 0 return ]
    let b = replace(&defaults(false), 1, ReplaceForm::AddDeleteAdd);
    let rules: Vec<&BatchMsg> = b
        .msgs
        .iter()
        .filter(|m| m.kind == NFT_MSG_NEWRULE)
        .collect();
    let r = rules[2];
    let msg = messages(&b.bytes[r.offset..r.offset + r.len])
        .next()
        .unwrap()
        .unwrap();
    let exprs = decode::rule(&msg).unwrap().exprs;
    let names: Vec<&str> = exprs.iter().map(|e| e.name()).collect();
    assert_eq!(names, ["meta", "cmp", "payload", "lookup", "immediate"]);
    assert!(matches!(
        &exprs[3],
        Expr::Lookup { set, sreg: 1, flags: 0, .. } if set == "nonmasq-v4"
    ));
    // The set is referenced by name and by its id in this batch.
    let newset = b.msgs.iter().find(|m| m.kind == NFT_MSG_NEWSET).unwrap();
    assert!(
        b.bytes[r.offset..r.offset + r.len]
            .windows(8)
            .any(|w| w == [8, 0, 4, 0, 0, 0, 0, 1])
    );
    assert!(
        b.bytes[newset.offset..newset.offset + newset.len]
            .windows(8)
            .any(|w| w == [8, 0, 10, 0, 0, 0, 0, 1])
    );
}

#[test]
fn delete_batch() {
    let b = delete("nft-masq-agent", 5);
    assert_eq!(b.msgs.len(), 1);
    assert_eq!(b.msgs[0].kind, NFT_MSG_DELTABLE);
    assert_eq!(headers(&b).len(), 3);
}

mod interval_properties {
    //! The encoder's interval elements, in any order, decode back to the same prefixes:
    //! `interval_elements` -> `decode::interval_prefixes`, for canonical sets anywhere in the
    //! address space (the top included, where the last prefix has no end element).

    use proptest::prelude::*;

    use super::*;
    use crate::addr::prefix::RangeSet;

    /// Spans of `family`: (a, b) pairs in 1024 blocks of 2^shift addresses from the bottom,
    /// or single addresses just below the top.
    fn sets() -> impl Strategy<Value = (Family, Vec<IpNet>, u64)> {
        let family = prop_oneof![Just(Family::V4), Just(Family::V6)];
        let pairs = prop::collection::vec((0u128..1024, 0u128..1024), 0..12);
        (family, any::<bool>(), pairs, any::<u64>()).prop_map(|(family, top, pairs, seed)| {
            let (base, shift) = if top {
                (family.max() - 1023, 0)
            } else {
                (0, u32::from(family.bits()) - 10)
            };
            let at = |u: u128| base + (u << shift);
            let spans = pairs
                .iter()
                .map(|&(a, b)| Span {
                    lo: at(a.min(b)),
                    hi: at(a.max(b)) + ((1u128 << shift) - 1),
                })
                .collect();
            let prefixes = RangeSet::from_spans(spans).to_prefixes(family.bits());
            (family, prefixes, seed)
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn interval_elements_decode_back_to_the_prefixes((family, prefixes, seed) in sets()) {
            let set = Set { name: "s".into(), family, prefixes: prefixes.clone() };
            let elems = interval_elements(&set);
            // No end element past the top; at most one per prefix plus the leading marker.
            prop_assert!(elems.len() <= 2 * prefixes.len() + 1);
            for (key, _) in &elems {
                prop_assert!(*key <= family.max());
            }
            let mut wire: Vec<decode::Element> = elems
                .iter()
                .map(|&(key, is_end)| {
                    let flags = if is_end { NFT_SET_ELEM_INTERVAL_END } else { 0 };
                    decode::Element::new(&key_bytes(key, family.addr_len()), flags)
                })
                .collect();
            // The kernel dumps elements in its own order: any order must do.
            let mut x = seed | 1;
            for i in (1..wire.len()).rev() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                wire.swap(i, (x % (i as u64 + 1)) as usize);
            }
            prop_assert_eq!(decode::interval_prefixes(&wire, family), prefixes);
        }
    }
}

/// What the kernel would report of `t` after the replace form created it.
fn skeleton_of(t: &Table) -> Skeleton {
    Skeleton {
        owner: None,
        flags: t.flags,
        sets: set_specs(t)
            .iter()
            .map(|s| decode::SetMsg {
                table: t.name.clone(),
                name: s.name.to_string(),
                flags: s.flags(),
                key_len: s.key_len as u32,
                key_type: s.key_type,
                data_type: s.data.map_or(0, |d| d.0),
                data_len: s.data.map_or(0, |d| d.1 as u32),
            })
            .collect(),
        chains: t
            .chains
            .iter()
            .map(|c| model::Chain {
                rules: Vec::new(),
                ..c.clone()
            })
            .collect(),
    }
}

#[test]
fn in_place_batch_flushes_and_refills_and_never_deletes_the_table() {
    let t = defaults(true);
    let b = replace(&t, 1, ReplaceForm::InPlace);
    let kinds: Vec<u16> = b.msgs.iter().map(|m| m.kind).collect();
    assert!(!kinds.contains(&NFT_MSG_DELTABLE), "{kinds:?}");
    assert_eq!(kinds[0], NFT_MSG_NEWTABLE);
    // Each set: created if missing, flushed, refilled, in that order.
    for set in &t.sets {
        let at = |kind: u16| {
            b.msgs
                .iter()
                .position(|m| m.kind == kind && m.what.contains(&set.name))
                .unwrap_or_else(|| panic!("no {kind} for {}", set.name))
        };
        assert!(at(NFT_MSG_NEWSET) < at(NFT_MSG_DELSETELEM));
        assert!(at(NFT_MSG_DELSETELEM) < at(NFT_MSG_NEWSETELEM));
    }
    // The flush names the set and carries no elements (an element list would delete only
    // those elements).
    let flush = messages(&b.bytes)
        .map(|m| m.unwrap())
        .find(|m| m.ty == nft_type(NFT_MSG_DELSETELEM))
        .unwrap();
    let attrs: Vec<u16> = flush.attrs().map(|a| a.unwrap().ty).collect();
    assert_eq!(
        attrs,
        [NFTA_SET_ELEM_LIST_TABLE, NFTA_SET_ELEM_LIST_SET],
        "{attrs:?}"
    );
    // Each chain is flushed before its rules are added.
    let chain = kinds.iter().position(|&k| k == NFT_MSG_NEWCHAIN).unwrap();
    assert_eq!(kinds[chain + 1], NFT_MSG_DELRULE);
    assert!(kinds[chain + 2..].iter().all(|&k| k == NFT_MSG_NEWRULE));
    // The same elements as the replace form.
    assert_eq!(
        b.elements,
        replace(&t, 1, ReplaceForm::AddDeleteAdd).elements
    );
}

#[test]
fn in_place_only_when_the_live_table_has_exactly_our_sets_and_chains() {
    let t = defaults(true);
    let live = skeleton_of(&t);
    assert!(fits_in_place(&t, &live));
    // Other elements and rules do not matter: they are flushed.
    let mut other = t.clone();
    other.sets[0].prefixes.truncate(1);
    other.chains[0].rules.pop();
    assert!(fits_in_place(&other, &live));

    let mut extra_chain = live.clone();
    extra_chain.chains.push(model::Chain {
        name: "planted".into(),
        base: None,
        rules: Vec::new(),
    });
    assert!(!fits_in_place(&t, &extra_chain), "a chain would survive");

    let mut extra_set = live.clone();
    let mut s = extra_set.sets[0].clone();
    s.name = "planted".into();
    extra_set.sets.push(s);
    assert!(!fits_in_place(&t, &extra_set), "a set would survive");

    let mut missing = live.clone();
    missing.sets.pop();
    assert!(!fits_in_place(&t, &missing));

    let mut key = live.clone();
    key.sets[0].key_type = NFT_TYPE_IFNAME;
    assert!(
        !fits_in_place(&t, &key),
        "NEWSET would not change a key type"
    );

    let mut flags = live.clone();
    flags.sets[0].flags |= 0x10;
    assert!(!fits_in_place(&t, &flags));

    let mut hook = live.clone();
    if let Some(base) = hook.chains[0].base.as_mut() {
        base.priority += 1;
    }
    assert!(
        !fits_in_place(&t, &hook),
        "a base chain's priority is fixed"
    );

    let mut owner = live.clone();
    owner.flags = TableFlags(owner.flags.0 ^ 1);
    assert!(
        !fits_in_place(&t, &owner),
        "the kernel refuses a flag change in place"
    );

    // A persistent table whose owner has gone keeps only the persist flag; an
    // owner-and-persist NEWTABLE claims it in place. Not one another process still owns.
    let mut owned = t.clone();
    owned.flags = TableFlags(TableFlags::OWNER | TableFlags::PERSIST);
    let mut orphan = live;
    orphan.flags = TableFlags(TableFlags::PERSIST);
    assert!(fits_in_place(&owned, &orphan));
    assert!(
        !fits_in_place(&t, &orphan),
        "persist cannot be dropped in place"
    );
    let mut held = orphan.clone();
    held.flags = owned.flags;
    held.owner = Some(77);
    assert!(
        fits_in_place(&owned, &held),
        "a refusal then tells who holds it"
    );
    held.flags = TableFlags(TableFlags::PERSIST);
    assert!(!fits_in_place(&owned, &held));

    // Our sets and no chain: in place too (the chains are created); not with a set missing.
    let mut bare = skeleton_of(&t);
    bare.chains.clear();
    assert!(!fits_in_place(&t, &bare) && unchained(&t, &bare));
    bare.sets.pop();
    assert!(!unchained(&t, &bare));
    assert!(
        !unchained(&t, &skeleton_of(&t)),
        "chains there: fits_in_place decides"
    );
}

/// Elements as a set, with the delta's deletions and additions applied.
fn apply(old: &[(u128, bool)], gone: &[(u128, bool)], came: &[(u128, bool)]) -> Vec<(u128, bool)> {
    let mut out: std::collections::BTreeSet<(u128, bool)> = old.iter().copied().collect();
    for e in gone {
        assert!(out.remove(e), "deleting {e:?}, which is not there");
    }
    for e in came {
        assert!(out.insert(*e), "adding {e:?}, which is there");
    }
    // BTreeSet orders (key, false) before (key, true); the kernel keeps both: compare as sets.
    out.into_iter().collect()
}

fn sorted(v: &[(u128, bool)]) -> Vec<(u128, bool)> {
    let mut v = v.to_vec();
    v.sort();
    v
}

#[test]
fn interval_diff_sends_whole_intervals_and_yields_the_new_elements() {
    let els = |list: &[&str]| interval_elements(&set_of(Family::V4, list));
    let old = els(&["10.0.0.0/9", "11.0.0.0/8", "12.0.0.0/8", "240.0.0.0/4"]);
    // The leading end element, pairs, adjacent pairs sharing a key, a start with no end.
    let cut: Vec<usize> = intervals(&old).iter().map(|i| i.len()).collect();
    assert_eq!(cut, [1, 2, 2, 2, 1]);
    // A wider first prefix (same start key), one gone, one new, the top kept.
    let new = els(&["10.0.0.0/8", "12.0.0.0/8", "100.64.0.0/10", "240.0.0.0/4"]);
    let (gone, came) = interval_diff(&old, &new);
    assert_eq!(
        gone,
        [
            (v4([10, 0, 0, 0]), false),
            (v4([10, 128, 0, 0]), true),
            (v4([11, 0, 0, 0]), false),
            (v4([12, 0, 0, 0]), true)
        ]
    );
    assert_eq!(
        came,
        [
            (v4([10, 0, 0, 0]), false),
            (v4([11, 0, 0, 0]), true),
            (v4([100, 64, 0, 0]), false),
            (v4([100, 128, 0, 0]), true)
        ]
    );
    assert_eq!(apply(&old, &gone, &came), sorted(&new));
    assert_eq!(interval_diff(&new, &new), (vec![], vec![]));
    // From everything (0.0.0.0/0: a start at 0, no end, no leading end) and back.
    let all = els(&["0.0.0.0/0"]);
    let (gone, came) = interval_diff(&all, &new);
    assert_eq!(apply(&all, &gone, &came), sorted(&new));
    let (gone, came) = interval_diff(&new, &all);
    assert_eq!(apply(&new, &gone, &came), sorted(&all));
}

#[test]
fn interval_diff_of_random_sets_yields_the_new_elements() {
    // A small LCG: the same sequence every run.
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        (seed >> 33) as u32
    };
    let pool: Vec<String> = (0..64u32)
        .map(|i| {
            let len = 8 + (i % 5) * 4;
            let a = (i * 0x0400_0000) & (u32::MAX << (32 - len));
            format!("{}/{len}", std::net::Ipv4Addr::from(a))
        })
        .chain(["0.0.0.0/0".to_string(), "240.0.0.0/4".to_string()])
        .collect();
    let pick = |next: &mut dyn FnMut() -> u32| {
        let f = PolicyFlags::default();
        let mut c = Config::defaults(&f);
        let nets: Vec<IpNet> = pool
            .iter()
            .filter(|_| next() % 3 == 0)
            .map(|s| s.parse().unwrap())
            .collect();
        c.non_masquerade_cidrs = crate::config::entries(nets);
        model::desired(&c, &f, TableFlags::default())
    };
    let mut old = pick(&mut next);
    for _ in 0..300 {
        let new = pick(&mut next);
        let b = delta(&old, &new, 1, 7).expect("same shape");
        for (was, now) in old.sets.iter().zip(&new.sets) {
            let (a, b) = (interval_elements(was), interval_elements(now));
            let (gone, came) = interval_diff(&a, &b);
            assert_eq!(apply(&a, &gone, &came), sorted(&b), "{was:?} -> {now:?}");
        }
        assert_eq!(b.msgs[0].kind, NFT_MSG_NEWTABLE);
        old = new;
    }
}

#[test]
fn delta_sends_only_what_changed_and_refuses_another_shape() {
    let t = defaults(true);
    // Valid only at the generation given: BEGIN carries it (big-endian NFNL_BATCH_GENID).
    let at7 = delta(&t, &t, 1, 7).unwrap();
    let begin = messages(&at7.bytes).next().unwrap().unwrap();
    let genid: Vec<(u16, Vec<u8>)> = begin
        .attrs()
        .map(|a| a.unwrap())
        .map(|a| (a.ty, a.data.to_vec()))
        .collect();
    assert_eq!(genid, [(NFNL_BATCH_GENID, 7u32.to_be_bytes().to_vec())]);
    // Nothing changed: NEWTABLE alone (a transaction that changes nothing).
    let same = delta(&t, &t, 1, 7).unwrap();
    let kinds: Vec<u16> = same.msgs.iter().map(|m| m.kind).collect();
    assert_eq!(kinds, [NFT_MSG_NEWTABLE]);
    // One prefix more: one NEWSETELEM with its two elements; the rules are not touched.
    let mut more = t.clone();
    more.sets[0]
        .prefixes
        .push("203.0.113.0/24".parse().unwrap());
    more.sets[0].prefixes.sort();
    let b = delta(&t, &more, 1, 7).unwrap();
    let kinds: Vec<u16> = b.msgs.iter().map(|m| m.kind).collect();
    assert_eq!(kinds, [NFT_MSG_NEWTABLE, NFT_MSG_NEWSETELEM]);
    assert_eq!(b.elements, 2);
    // And back: one DELSETELEM.
    let kinds: Vec<u16> = delta(&more, &t, 1, 7)
        .unwrap()
        .msgs
        .iter()
        .map(|m| m.kind)
        .collect();
    assert_eq!(kinds, [NFT_MSG_NEWTABLE, NFT_MSG_DELSETELEM]);
    // A changed rule: that chain flushed and refilled.
    let mut rules = t.clone();
    rules.chains[0].rules.pop();
    let b = delta(&t, &rules, 1, 7).unwrap();
    let kinds: Vec<u16> = b.msgs.iter().map(|m| m.kind).collect();
    assert_eq!(
        kinds[..3],
        [NFT_MSG_NEWTABLE, NFT_MSG_NEWCHAIN, NFT_MSG_DELRULE]
    );
    assert_eq!(kinds.len(), 3 + rules.chains[0].rules.len());
    // Another shape needs a full form.
    assert!(
        delta(&t, &defaults(false), 1, 7).is_none(),
        "the IPv6 set went"
    );
    let mut flags = t.clone();
    flags.flags = TableFlags(1);
    assert!(delta(&t, &flags, 1, 7).is_none());
    let mut hook = t.clone();
    if let Some(b) = hook.chains[0].base.as_mut() {
        b.priority += 1;
    }
    assert!(delta(&t, &hook, 1, 7).is_none());
}
