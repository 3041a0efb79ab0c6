//! Translation between the statement level of [`Stmt`] (what `nft list` shows) and the
//! kernel's expressions ([`Expr`], whose wire format is [`super::expr`]'s job).
//!
//! [`lower`] turns statements into the expressions nft itself generates for them (checked
//! against `nft --debug=netlink`); [`raise`] recognises those sequences again when reading a
//! rule back. Anything `raise` does not recognise becomes [`Stmt::Unknown`] with a
//! description, so a foreign or tampered rule is shown and compares unequal, never dropped.

use std::net::IpAddr;

use super::expr::{Expr, ImmData};
use super::uapi::*;

use crate::addr::prefix::Family;
use crate::model::Stmt;
use crate::model::{NAT_PERSISTENT, NAT_PROTO_RANDOM, NAT_PROTO_RANDOM_FULLY, NAT_PROTO_SPECIFIED};

// The NAT statements (`masquerade`, `snat to`, `snat ... map`), lowered and recognised.
mod nat;
use nat::{lower_masquerade, lower_snat, lower_snat_map, snat_candidate, snat_map_candidate};

/// Every expression the agent generates loads into and reads from register 1 (and 2 for a
/// port range's upper end), as nft does for these statements.
const R1: u32 = NFT_REG_1;

/// The NAT flags the agent may set; a masquerade with any other flag is not ours.
pub const KNOWN_NAT_FLAGS: u32 =
    NAT_PROTO_SPECIFIED | NAT_PROTO_RANDOM | NAT_PERSISTENT | NAT_PROTO_RANDOM_FULLY;

fn nfproto_of(f: Family) -> u8 {
    match f {
        Family::V4 => NFPROTO_IPV4,
        Family::V6 => NFPROTO_IPV6,
    }
}

fn meta(key: u32) -> Expr {
    Expr::Meta { key, dreg: R1 }
}

fn cmp_eq(data: Vec<u8>) -> Expr {
    Expr::Cmp {
        sreg: R1,
        op: NFT_CMP_EQ,
        data,
    }
}

/// Where a family's destination address sits in the network header: (offset, length).
fn daddr_field(family: Family) -> (u32, u32) {
    match family {
        Family::V4 => (16, 4),
        Family::V6 => (24, 16),
    }
}

/// Where a family's source address sits in the network header: (offset, length).
fn saddr_field(family: Family) -> (u32, u32) {
    match family {
        Family::V4 => (12, 4),
        Family::V6 => (8, 16),
    }
}

/// An address field loaded into register 1: in an inet table the payload offset only means
/// the address after checking the family; nft adds this dependency implicitly, so do we.
fn addr_load(family: Family, (offset, len): (u32, u32)) -> [Expr; 3] {
    [
        meta(NFT_META_NFPROTO),
        cmp_eq(vec![nfproto_of(family)]),
        Expr::Payload {
            base: NFT_PAYLOAD_NETWORK_HEADER,
            offset,
            len,
            dreg: R1,
        },
    ]
}

/// `<family> <field> [!=] @set`: the address loaded ([`addr_load`]) and looked up.
fn addr_lookup(
    family: Family,
    field: (u32, u32),
    set: &str,
    flags: u32,
    set_id: &dyn Fn(&str) -> Option<u32>,
) -> [Expr; 4] {
    let [m, c, p] = addr_load(family, field);
    [
        m,
        c,
        p,
        Expr::Lookup {
            set: set.into(),
            sreg: R1,
            dreg: None,
            set_id: set_id(set),
            flags,
        },
    ]
}

fn addr_bytes(a: IpAddr) -> Vec<u8> {
    match a {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// Expressions for a rule's statements, as nft generates them for an `inet` table.
/// `set_id` gives the batch-local id of a set by name, so lookups also work when the set is
/// created in the same transaction.
pub fn lower(stmts: &[Stmt], set_id: &dyn Fn(&str) -> Option<u32>) -> Vec<Expr> {
    let mut out = Vec::with_capacity(stmts.len() * 3);
    for stmt in stmts {
        lower_one(stmt, set_id, &mut out);
    }
    out
}

fn lower_one(stmt: &Stmt, set_id: &dyn Fn(&str) -> Option<u32>, out: &mut Vec<Expr>) {
    match stmt {
        Stmt::Nfproto(f) => out.extend([meta(NFT_META_NFPROTO), cmp_eq(vec![nfproto_of(*f)])]),
        Stmt::L4proto(p) => out.extend([meta(NFT_META_L4PROTO), cmp_eq(vec![*p])]),
        // The address type is compared in host byte order.
        Stmt::FibDaddrLocal => out.extend([
            Expr::Fib {
                flags: NFTA_FIB_F_DADDR,
                result: NFT_FIB_RESULT_ADDRTYPE,
                dreg: R1,
            },
            cmp_eq(RTN_LOCAL.to_ne_bytes().to_vec()),
        ]),
        Stmt::DaddrInSet { family, set } => {
            out.extend(addr_lookup(*family, daddr_field(*family), set, 0, set_id));
        }
        Stmt::DaddrVmap { family, map } => {
            let [m, c, p] = addr_load(*family, daddr_field(*family));
            out.extend([
                m,
                c,
                p,
                Expr::Lookup {
                    set: map.clone(),
                    sreg: R1,
                    dreg: Some(NFT_REG_VERDICT),
                    set_id: set_id(map),
                    flags: 0,
                },
            ]);
        }
        Stmt::SaddrNotInSet { family, set } => {
            let inv = NFT_LOOKUP_F_INV;
            out.extend(addr_lookup(*family, saddr_field(*family), set, inv, set_id));
        }
        Stmt::OifnameNotInSet { set } => out.extend([
            meta(NFT_META_OIFNAME),
            Expr::Lookup {
                set: set.clone(),
                sreg: R1,
                dreg: None,
                set_id: set_id(set),
                flags: NFT_LOOKUP_F_INV,
            },
        ]),
        // cmp compares bytes (memcmp): the host-order number is converted to big-endian
        // first so "less than" means what it says, as nft does.
        Stmt::NumgenBelow { modulus, below } => out.extend([
            Expr::Numgen {
                dreg: R1,
                modulus: *modulus,
                kind: NFT_NG_RANDOM,
                offset: 0,
            },
            Expr::Byteorder {
                sreg: R1,
                dreg: R1,
                op: NFT_BYTEORDER_HTON,
                len: 4,
                size: 4,
            },
            Expr::Cmp {
                sreg: R1,
                op: NFT_CMP_LT,
                data: below.to_be_bytes().to_vec(),
            },
        ]),
        Stmt::Counter { packets, bytes } => out.push(Expr::Counter {
            packets: *packets,
            bytes: *bytes,
        }),
        Stmt::Masquerade { flags, ports } => lower_masquerade(*flags, *ports, out),
        Stmt::Snat {
            family,
            first,
            last,
            flags,
            ports,
        } => lower_snat(*family, (*first, *last), *flags, *ports, out),
        Stmt::SnatMap {
            family,
            map,
            packets,
            bytes,
            flags,
            ports,
        } => lower_snat_map(
            *family,
            map,
            (*packets, *bytes),
            *flags,
            *ports,
            set_id,
            out,
        ),
        Stmt::Return => out.push(Expr::Immediate {
            dreg: NFT_REG_VERDICT,
            data: ImmData::Verdict(NFT_RETURN, None),
        }),
        Stmt::Accept => out.push(Expr::Immediate {
            dreg: NFT_REG_VERDICT,
            data: ImmData::Verdict(NF_ACCEPT, None),
        }),
        Stmt::Jump { chain } => out.push(Expr::Immediate {
            dreg: NFT_REG_VERDICT,
            data: ImmData::Verdict(NFT_JUMP, Some(chain.clone())),
        }),
        // Never produced by `desired`; nothing sensible to send.
        Stmt::Unknown(_) => {}
    }
}

/// Recognises the statements in a rule's expressions: the inverse of [`lower`].
///
/// Each statement is found in two steps: `candidates` reads the parameters a statement
/// would have from the first expressions, then [`lower`] must produce exactly those
/// expressions from it. So `raise` accepts nothing `lower` would not write, and the two
/// directions cannot drift apart.
pub fn raise(exprs: &[Expr]) -> Vec<Stmt> {
    let mut out = Vec::new();
    let mut rest = exprs;
    while let Some(first) = rest.first() {
        let found = candidates(rest).into_iter().find_map(|stmt| {
            let want = lower(std::slice::from_ref(&stmt), &|_| None);
            rest.starts_with(&want).then_some((stmt, want.len()))
        });
        let (stmt, used) = found.unwrap_or_else(|| (Stmt::Unknown(first.describe()), 1));
        out.push(stmt);
        rest = &rest[used..];
    }
    out
}

/// The statements the expressions at the start of `exprs` may stand for, longest first (a
/// set lookup starts with the same `meta nfproto` comparison as a bare family match).
fn candidates(exprs: &[Expr]) -> Vec<Stmt> {
    match exprs {
        [Expr::Meta { key, .. }, Expr::Cmp { data, .. }, rest @ ..] if *key == NFT_META_NFPROTO => {
            let Some(family) = family_of(data) else {
                return Vec::new();
            };
            let mut out = Vec::new();
            if let [
                _,
                Expr::Lookup {
                    set, dreg: None, ..
                },
                ..,
            ] = rest
            {
                out.push(Stmt::DaddrInSet {
                    family,
                    set: set.clone(),
                });
                out.push(Stmt::SaddrNotInSet {
                    family,
                    set: set.clone(),
                });
            }
            if let [
                _,
                Expr::Lookup {
                    set, dreg: Some(_), ..
                },
                ..,
            ] = rest
            {
                out.push(Stmt::DaddrVmap {
                    family,
                    map: set.clone(),
                });
            }
            out.push(Stmt::Nfproto(family));
            out
        }
        [Expr::Meta { key, .. }, Expr::Cmp { data, .. }, ..] if *key == NFT_META_L4PROTO => data
            .first()
            .map(|p| Stmt::L4proto(*p))
            .into_iter()
            .collect(),
        [
            Expr::Meta { key, .. },
            Expr::Lookup {
                set, dreg: None, ..
            },
            ..,
        ] if *key == NFT_META_OIFNAME => {
            vec![Stmt::OifnameNotInSet { set: set.clone() }]
        }
        [Expr::Fib { .. }, ..] => vec![Stmt::FibDaddrLocal],
        [Expr::Payload { .. }, ..] => snat_map_candidate(exprs).into_iter().collect(),
        [Expr::Numgen { modulus, .. }, _, Expr::Cmp { data, .. }, ..] => {
            match <[u8; 4]>::try_from(data.as_slice()) {
                Ok(b) => vec![Stmt::NumgenBelow {
                    modulus: *modulus,
                    below: u32::from_be_bytes(b),
                }],
                Err(_) => Vec::new(),
            }
        }
        [Expr::Counter { packets, bytes }, ..] => vec![Stmt::Counter {
            packets: *packets,
            bytes: *bytes,
        }],
        [
            Expr::Immediate {
                data: ImmData::Value(lo),
                ..
            },
            Expr::Immediate {
                data: ImmData::Value(hi),
                ..
            },
            Expr::Masq { flags, .. },
            ..,
        ] if flags & !KNOWN_NAT_FLAGS == 0 => {
            match (
                <[u8; 2]>::try_from(lo.as_slice()),
                <[u8; 2]>::try_from(hi.as_slice()),
            ) {
                (Ok(lo), Ok(hi)) => vec![Stmt::Masquerade {
                    flags: *flags,
                    ports: Some((u16::from_be_bytes(lo), u16::from_be_bytes(hi))),
                }],
                _ => Vec::new(),
            }
        }
        [Expr::Masq { flags, .. }, ..] if flags & !KNOWN_NAT_FLAGS == 0 => vec![Stmt::Masquerade {
            flags: *flags,
            ports: None,
        }],
        [
            Expr::Immediate {
                data: ImmData::Verdict(NFT_JUMP, Some(chain)),
                ..
            },
            ..,
        ] => vec![Stmt::Jump {
            chain: chain.clone(),
        }],
        [Expr::Immediate { .. }, ..] => snat_candidate(exprs)
            .into_iter()
            .chain([Stmt::Return, Stmt::Accept])
            .collect(),
        _ => Vec::new(),
    }
}

fn family_of(nfproto: &[u8]) -> Option<Family> {
    [Family::V4, Family::V6]
        .into_iter()
        .find(|f| nfproto == [nfproto_of(*f)])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::netlink::{Attrs, Writer};

    fn no_ids(_: &str) -> Option<u32> {
        None
    }

    /// Statements -> expressions -> bytes -> expressions -> statements.
    fn roundtrip(stmts: Vec<Stmt>) {
        let exprs = lower(&stmts, &no_ids);
        let mut w = Writer::default();
        for e in &exprs {
            e.encode(&mut w);
        }
        let bytes = w.into_bytes();
        let decoded: Vec<Expr> = Attrs::new(&bytes)
            .map(|a| Expr::decode(&a.unwrap()).unwrap())
            .collect();
        assert_eq!(decoded, exprs);
        assert_eq!(raise(&decoded), stmts);
    }

    #[test]
    fn the_block_dispatch_round_trips_and_is_what_nft_writes() {
        for (family, map, set) in [
            (Family::V4, "nonmasq-dispatch-v4", "nonmasq-v4-10.128.0.0/9"),
            (Family::V6, "nonmasq-dispatch-v6", "nonmasq-v6-fd/8"),
        ] {
            roundtrip(vec![Stmt::DaddrVmap {
                family,
                map: map.into(),
            }]);
            roundtrip(vec![
                Stmt::DaddrInSet {
                    family,
                    set: set.into(),
                },
                Stmt::Accept,
            ]);
        }
        roundtrip(vec![Stmt::Jump {
            chain: "translate".into(),
        }]);
        // A goto is not a jump.
        let goto = [Expr::Immediate {
            dreg: NFT_REG_VERDICT,
            data: ImmData::Verdict(NFT_GOTO, Some("translate".into())),
        }];
        assert!(matches!(raise(&goto)[..], [Stmt::Unknown(_)]));
        // `ip daddr vmap @nonmasq-dispatch-v4` as `nft --debug=netlink` shows it:
        //   [ meta load nfproto => reg 1 ] [ cmp eq reg 1 0x00000002 ]
        //   [ payload load 4b @ network header + 16 => reg 1 ]
        //   [ lookup reg 1 set nonmasq-dispatch-v4 dreg 0 0x0 ]
        let e = lower(
            &[Stmt::DaddrVmap {
                family: Family::V4,
                map: "nonmasq-dispatch-v4".into(),
            }],
            &no_ids,
        );
        assert_eq!(
            e[2..],
            [
                Expr::Payload {
                    base: NFT_PAYLOAD_NETWORK_HEADER,
                    offset: 16,
                    len: 4,
                    dreg: 1
                },
                Expr::Lookup {
                    set: "nonmasq-dispatch-v4".into(),
                    sreg: 1,
                    dreg: Some(NFT_REG_VERDICT),
                    set_id: None,
                    flags: 0,
                },
            ]
        );
        // A map lookup into another register (a value map) is not the dispatch.
        let mut odd = e;
        if let Expr::Lookup { dreg, .. } = &mut odd[3] {
            *dreg = Some(1);
        }
        assert!(
            !raise(&odd)
                .iter()
                .any(|s| matches!(s, Stmt::DaddrVmap { .. }))
        );
    }

    #[test]
    fn every_statement_round_trips() {
        roundtrip(vec![Stmt::Nfproto(Family::V6), Stmt::Return]);
        roundtrip(vec![Stmt::FibDaddrLocal, Stmt::Return]);
        for (family, set) in [(Family::V4, "nonmasq-v4"), (Family::V6, "nonmasq-v6")] {
            roundtrip(vec![
                Stmt::DaddrInSet {
                    family,
                    set: set.into(),
                },
                Stmt::Return,
            ]);
        }
        roundtrip(vec![
            Stmt::L4proto(132),
            Stmt::NumgenBelow {
                modulus: 61744,
                below: 28976,
            },
            Stmt::Counter {
                packets: 3,
                bytes: 180,
            },
            Stmt::Masquerade {
                flags: NAT_PROTO_RANDOM_FULLY | NAT_PROTO_SPECIFIED,
                ports: Some((1024, 29999)),
            },
        ]);
        roundtrip(vec![
            Stmt::Counter {
                packets: 0,
                bytes: 0,
            },
            Stmt::Masquerade {
                flags: 0,
                ports: None,
            },
        ]);
        for (family, set) in [(Family::V4, "sources-v4"), (Family::V6, "sources-v6")] {
            roundtrip(vec![
                Stmt::SaddrNotInSet {
                    family,
                    set: set.into(),
                },
                Stmt::Return,
            ]);
        }
        roundtrip(vec![
            Stmt::OifnameNotInSet {
                set: "egress-interfaces".into(),
            },
            Stmt::Return,
        ]);
        let v4 = |s: &str| -> IpAddr { s.parse().unwrap() };
        for (first, last, ports) in [
            ("192.0.2.10", "192.0.2.10", None),
            ("192.0.2.10", "192.0.2.20", None),
            ("192.0.2.10", "192.0.2.10", Some((1024, 29999))),
            ("192.0.2.10", "192.0.2.20", Some((1024, 2000))),
            ("2001:db8::10", "2001:db8::20", Some((1024, 2000))),
            ("2001:db8::10", "2001:db8::10", None),
        ] {
            let (first, last) = (v4(first), v4(last));
            roundtrip(vec![
                Stmt::Nfproto(Family::of_addr(&first)),
                Stmt::Counter {
                    packets: 0,
                    bytes: 0,
                },
                Stmt::Snat {
                    family: Family::of_addr(&first),
                    first,
                    last,
                    flags: NAT_PROTO_RANDOM_FULLY
                        | if ports.is_some() {
                            NAT_PROTO_SPECIFIED
                        } else {
                            0
                        },
                    ports,
                },
            ]);
        }
    }

    #[test]
    fn snat_matches_nft_register_layout() {
        // `snat ip to 192.0.2.10-192.0.2.20:1024-2000` as `nft --debug=netlink` shows it:
        //   [ immediate reg 1 0x0a0200c0 ] [ immediate reg 2 0x140200c0 ]
        //   [ immediate reg 3 0x00000004 ] [ immediate reg 4 0x0000d007 ]
        //   [ nat snat ip addr_min reg 1 addr_max reg 2 proto_min reg 3 proto_max reg 4 flags 0x2 ]
        let e = lower(
            &[Stmt::Snat {
                family: Family::V4,
                first: "192.0.2.10".parse().unwrap(),
                last: "192.0.2.20".parse().unwrap(),
                flags: NAT_PROTO_SPECIFIED,
                ports: Some((1024, 2000)),
            }],
            &no_ids,
        );
        assert_eq!(
            e.last().unwrap(),
            &Expr::Nat {
                kind: NFT_NAT_SNAT,
                family: u32::from(NFPROTO_IPV4),
                reg_addr_min: Some(1),
                reg_addr_max: Some(2),
                reg_proto_min: Some(3),
                reg_proto_max: Some(4),
                flags: NAT_PROTO_SPECIFIED,
            }
        );
        assert_eq!(
            e[3],
            Expr::Immediate {
                dreg: 4,
                data: ImmData::Value(vec![0x07, 0xd0])
            }
        );
    }

    #[test]
    fn unknown_expressions_are_kept_as_unknown() {
        let exprs = vec![
            Expr::Payload {
                base: 1,
                offset: 12,
                len: 4,
                dreg: 1,
            },
            Expr::Cmp {
                sreg: 1,
                op: 0,
                data: vec![1, 2, 3, 4],
            },
            Expr::Other { name: "log".into() },
            Expr::Immediate {
                dreg: 0,
                data: ImmData::Verdict(NF_ACCEPT, None),
            },
        ];
        let stmts = raise(&exprs);
        assert_eq!(stmts.len(), 4);
        assert!(
            stmts[..3].iter().all(|s| matches!(s, Stmt::Unknown(_))),
            "{stmts:?}"
        );
        assert_eq!(stmts[2], Stmt::Unknown("log expression".into()));
        assert_eq!(stmts[3], Stmt::Accept);
    }

    #[test]
    fn a_lookup_of_another_field_is_not_a_daddr_match() {
        // `ip saddr @s`: same shape as our daddr lookup, offset 12.
        let mut exprs = lower(
            &[Stmt::DaddrInSet {
                family: Family::V4,
                set: "s".into(),
            }],
            &no_ids,
        );
        if let Expr::Payload { offset, .. } = &mut exprs[2] {
            *offset = 12;
        }
        let stmts = raise(&exprs);
        assert!(
            !stmts.iter().any(|s| matches!(s, Stmt::DaddrInSet { .. })),
            "{stmts:?}"
        );
        assert!(
            stmts.iter().any(|s| matches!(s, Stmt::Unknown(_))),
            "{stmts:?}"
        );
    }

    #[test]
    fn near_misses_are_unknown_never_misread() {
        let masq = lower(
            &[Stmt::Masquerade {
                flags: NAT_PROTO_SPECIFIED,
                ports: Some((1024, 2047)),
            }],
            &no_ids,
        );
        // Registers swapped: the port range would mean something else.
        let mut swapped = masq.clone();
        if let Expr::Masq {
            reg_min, reg_max, ..
        } = &mut swapped[2]
        {
            std::mem::swap(reg_min, reg_max);
        }
        assert!(
            !raise(&swapped)
                .iter()
                .any(|s| matches!(s, Stmt::Masquerade { .. }))
        );
        // A verdict other than return, a masquerade with an unknown flag, an odd register.
        let odd = [
            Expr::Immediate {
                dreg: NFT_REG_VERDICT,
                data: ImmData::Verdict(NF_DROP, None),
            },
            Expr::Masq {
                flags: 0x100,
                reg_min: None,
                reg_max: None,
            },
            Expr::Fib {
                flags: NFTA_FIB_F_DADDR,
                result: NFT_FIB_RESULT_ADDRTYPE,
                dreg: 3,
            },
        ];
        for e in odd {
            let stmts = raise(std::slice::from_ref(&e));
            assert!(matches!(stmts[..], [Stmt::Unknown(_)]), "{e:?}: {stmts:?}");
        }
    }

    #[test]
    fn matches_nft_register_layout() {
        // `fib daddr type local return` as `nft --debug=netlink` shows it:
        //   [ fib daddr type => reg 1 ] [ cmp eq reg 1 0x00000002 ] [ immediate reg 0 return ]
        let e = lower(&[Stmt::FibDaddrLocal, Stmt::Return], &no_ids);
        assert_eq!(
            e,
            vec![
                Expr::Fib {
                    flags: 2,
                    result: 3,
                    dreg: 1
                },
                Expr::Cmp {
                    sreg: 1,
                    op: 0,
                    data: 2u32.to_ne_bytes().to_vec()
                },
                Expr::Immediate {
                    dreg: 0,
                    data: ImmData::Verdict(-5, None)
                },
            ]
        );
    }
}
