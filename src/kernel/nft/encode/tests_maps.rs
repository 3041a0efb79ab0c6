//! `snatRules` maps on the wire: NEWSET with the map's flags and data, elements with their
//! address, read back by the decoder; the difference form sends only the changed intervals.

use super::*;
use crate::config::{self, PolicyFlags};
use crate::kernel::netlink::messages;
use crate::kernel::nft::decode;
use crate::kernel::nft::stmt::{lower, raise};
use crate::model::{self, Stmt, TableFlags};

fn v6() -> PolicyFlags {
    PolicyFlags {
        enable_ipv6: true,
        to_ports: Some("1024-65535".parse().unwrap()),
        ..PolicyFlags::default()
    }
}

fn table(text: &str) -> Table {
    let c = config::parse_str(text, "/c".as_ref(), &v6())
        .unwrap()
        .config;
    model::desired(&c, &v6(), TableFlags::default())
}

/// `n` entries of /24 sources under 10.0.0.0/8, each with its own address, plus a /16
/// holding the first 256 of them (nested prefixes).
fn many(n: usize, changed: Option<usize>) -> String {
    let mut s = String::from(
        "cidrLimit: 100000\nsnatRules:\n- sourceCIDRs: [10.0.0.0/16]\n  snatTo: [192.0.2.1]\n",
    );
    for i in 0..n {
        let last = if Some(i) == changed { 250 } else { 1 + i % 200 };
        s.push_str(&format!(
            "- sourceCIDRs: [10.{}.{}.0/24]\n  snatTo: [198.51.{}.{last}]\n",
            i / 256,
            i % 256,
            i % 100
        ));
    }
    s
}

const RULES: &str = "snatRules:\n\
    - sourceCIDRs: [10.244.0.0/16]\n  snatTo: [192.0.2.20]\n\
    - sourceCIDRs: [10.244.5.0/24, 'fd00:5::/64']\n  snatTo: [192.0.2.21, '2001:db8::21']\n";

#[test]
fn a_map_is_created_with_its_data_type_and_read_back_as_committed() {
    let t = table(RULES);
    assert_eq!(t.maps.len(), 2);
    let b = replace(&t, 1, ReplaceForm::AddDeleteAdd);
    let newset = messages(&b.bytes)
        .map(|m| m.unwrap())
        .filter(|m| m.nft_msg() == Some(NFT_MSG_NEWSET))
        .map(|m| decode::set(&m).unwrap())
        .find(|s| s.name == model::MAP_SNAT_V4)
        .unwrap();
    assert_eq!(newset.flags, NFT_SET_INTERVAL | NFT_SET_MAP);
    assert_eq!(
        (
            newset.key_type,
            newset.key_len,
            newset.data_type,
            newset.data_len
        ),
        (NFT_TYPE_IPADDR, 4, NFT_TYPE_IPADDR, 4)
    );
    // Our NEW* requests have the layout of the kernel's dump replies.
    let back = decode::table_from_dump(&b.bytes, &t.name).unwrap().unwrap();
    assert_eq!(back, t);
    assert!(back.same_policy(&t));
}

#[test]
fn the_map_rule_lowers_as_nft_does_with_the_counter_after_the_lookup_and_raises_back() {
    for ports in [None, Some((1024, 65535))] {
        let stmt = Stmt::SnatMap {
            family: model::Family::V4,
            map: "snat-v4".into(),
            packets: 3,
            bytes: 300,
            flags: model::NAT_PROTO_RANDOM_FULLY,
            ports,
        };
        let exprs = lower(std::slice::from_ref(&stmt), &|_| Some(9));
        let text: Vec<String> = exprs.iter().map(|e| e.describe()).collect();
        assert!(
            text[1].contains("lookup reg 1 map snat-v4 => reg 1"),
            "{text:?}"
        );
        assert!(text[2].starts_with("counter"), "{text:?}");
        assert!(
            text.last().unwrap().starts_with("nat type 0 family 2"),
            "{text:?}"
        );
        let mut decoded = exprs.clone();
        if let crate::kernel::nft::expr::Expr::Lookup { set_id, .. } = &mut decoded[1] {
            *set_id = None; // the kernel does not report it
        }
        assert_eq!(raise(&decoded), [stmt]);
    }
}

#[test]
fn a_one_entry_change_at_10000_entries_sends_only_that_interval() {
    let (old, new) = (table(&many(10_000, None)), table(&many(10_000, Some(4321))));
    let full = replace(&new, 1, ReplaceForm::AddDeleteAdd);
    let b = delta(&old, &new, 1, 7).unwrap();
    let kinds: Vec<u16> = b.msgs.iter().map(|m| m.kind).collect();
    assert_eq!(
        kinds,
        [NFT_MSG_NEWTABLE, NFT_MSG_DELSETELEM, NFT_MSG_NEWSETELEM],
        "no rule, no other map element"
    );
    // The interval's start and end, deleted and added again with the new address.
    assert_eq!(b.elements, 4);
    println!(
        "one snatRules entry changed at 10,000 entries: {} elements in {} bytes (the full \
         replace: {} elements in {} bytes)",
        b.elements,
        b.bytes.len(),
        full.elements,
        full.bytes.len()
    );
    assert!(full.elements > 20_000);
    // The new element carries the new address.
    let added = messages(&b.bytes)
        .map(|m| m.unwrap())
        .find(|m| m.nft_msg() == Some(NFT_MSG_NEWSETELEM))
        .map(|m| decode::elements(&m).unwrap())
        .unwrap();
    let want = u128::from(u32::from(std::net::Ipv4Addr::new(198, 51, 21, 250)));
    assert_eq!(added.data.iter().map(|d| d.1).collect::<Vec<_>>(), [want]);
}

#[test]
fn the_in_place_form_fits_a_live_map_only_with_the_same_data_type() {
    let t = table(RULES);
    let live = || Skeleton {
        flags: t.flags,
        owner: None,
        sets: set::set_specs(&t)
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
    };
    assert!(fits_in_place(&t, &live()));
    let mut plain = live();
    let map = plain.sets.iter_mut().find(|s| s.name == "snat-v4").unwrap();
    map.flags = NFT_SET_INTERVAL; // a set of the map's name: NEWSET would not make it a map
    assert!(!fits_in_place(&t, &plain));
    let mut data = live();
    let map = data.sets.iter_mut().find(|s| s.name == "snat-v4").unwrap();
    map.data_len = 8; // ranges as data
    assert!(!fits_in_place(&t, &data));
}
