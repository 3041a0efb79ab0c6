//! Translation between the statement level of [`Stmt`] (what `nft list` shows) and the
//! kernel's expressions ([`Expr`], whose wire format is [`super::expr`]'s job).
//!
//! [`lower`] turns statements into the expressions nft itself generates for them (checked
//! against `nft --debug=netlink`); [`raise`] recognises those sequences again when reading a
//! rule back. Anything `raise` does not recognise becomes [`Stmt::Unknown`] with a
//! description, so a foreign or tampered rule is shown and compares unequal, never dropped.

use super::expr::{Expr, ImmData};
use super::uapi::*;
use crate::model::Stmt;
use crate::model::{NAT_PERSISTENT, NAT_PROTO_RANDOM, NAT_PROTO_RANDOM_FULLY, NAT_PROTO_SPECIFIED};
use crate::prefix::Family;

/// Every expression the agent generates loads into and reads from register 1 (and 2 for a
/// port range's upper end), as nft does for these statements.
const R1: u32 = NFT_REG_1;

/// The NAT flags the agent may set; a masquerade with any other flag is not ours.
const KNOWN_NAT_FLAGS: u32 =
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
            // In an inet table the payload offset only means "daddr" after checking the
            // family: nft adds this dependency implicitly, so do we.
            let (offset, len) = daddr_field(*family);
            out.extend([
                meta(NFT_META_NFPROTO),
                cmp_eq(vec![nfproto_of(*family)]),
                Expr::Payload {
                    base: NFT_PAYLOAD_NETWORK_HEADER,
                    offset,
                    len,
                    dreg: R1,
                },
                Expr::Lookup {
                    set: set.clone(),
                    sreg: R1,
                    set_id: set_id(set),
                    flags: 0,
                },
            ]);
        }
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
        Stmt::Return => out.push(Expr::Immediate {
            dreg: NFT_REG_VERDICT,
            data: ImmData::Verdict(NFT_RETURN, None),
        }),
        // Never produced by `desired`; nothing sensible to send.
        Stmt::Unknown(_) => {}
    }
}

/// `masquerade [to :lo-hi]`: a port range travels in registers 1 and 2.
fn lower_masquerade(flags: u32, ports: Option<(u16, u16)>, out: &mut Vec<Expr>) {
    let Some((lo, hi)) = ports else {
        out.push(Expr::Masq {
            flags,
            reg_min: None,
            reg_max: None,
        });
        return;
    };
    out.extend([
        Expr::Immediate {
            dreg: R1,
            data: ImmData::Value(lo.to_be_bytes().to_vec()),
        },
        Expr::Immediate {
            dreg: NFT_REG_2,
            data: ImmData::Value(hi.to_be_bytes().to_vec()),
        },
        Expr::Masq {
            flags,
            reg_min: Some(R1),
            reg_max: Some(NFT_REG_2),
        },
    ]);
}

/// Recognises one statement at the start of a rule's remaining expressions: the statement
/// and how many expressions it spans, or `None` if the sequence is not this statement.
type Recognizer = fn(&[Expr]) -> Option<(Stmt, usize)>;

/// Tried in order: longer sequences before their prefixes (a set lookup starts with the
/// same `meta nfproto` comparison as a bare family match).
const RECOGNIZERS: [Recognizer; 9] = [
    daddr_in_set,
    nfproto,
    l4proto,
    fib_daddr_local,
    numgen_below,
    counter,
    masquerade_to_ports,
    masquerade,
    verdict_return,
];

/// Recognises the statements in a rule's expressions: the inverse of [`lower`].
pub fn raise(exprs: &[Expr]) -> Vec<Stmt> {
    let mut out = Vec::new();
    let mut rest = exprs;
    while let Some(first) = rest.first() {
        let (stmt, used) = RECOGNIZERS
            .iter()
            .find_map(|recognize| recognize(rest))
            .unwrap_or_else(|| (Stmt::Unknown(first.describe()), 1));
        out.push(stmt);
        rest = &rest[used..];
    }
    out
}

/// `meta load nfproto => reg 1; cmp eq reg 1 <data>`: the data compared.
fn nfproto_cmp(exprs: &[Expr]) -> Option<&[u8]> {
    match exprs {
        [
            Expr::Meta {
                key: NFT_META_NFPROTO,
                dreg: R1,
            },
            Expr::Cmp {
                sreg: R1,
                op: NFT_CMP_EQ,
                data,
            },
            ..,
        ] => Some(data),
        _ => None,
    }
}

fn daddr_in_set(exprs: &[Expr]) -> Option<(Stmt, usize)> {
    let proto = nfproto_cmp(exprs)?;
    let [
        _,
        _,
        Expr::Payload {
            base: NFT_PAYLOAD_NETWORK_HEADER,
            offset,
            len,
            dreg: R1,
        },
        Expr::Lookup {
            set,
            sreg: R1,
            flags: 0,
            ..
        },
        ..,
    ] = exprs
    else {
        return None;
    };
    let family = [Family::V4, Family::V6]
        .into_iter()
        .find(|f| proto == [nfproto_of(*f)] && (*offset, *len) == daddr_field(*f));
    Some(match family {
        Some(family) => (
            Stmt::DaddrInSet {
                family,
                set: set.clone(),
            },
            4,
        ),
        // A lookup of something else: show the first expression, look at the rest again.
        None => (Stmt::Unknown(exprs[0].describe()), 1),
    })
}

fn nfproto(exprs: &[Expr]) -> Option<(Stmt, usize)> {
    let data = nfproto_cmp(exprs)?;
    Some(match data {
        [NFPROTO_IPV4] => (Stmt::Nfproto(Family::V4), 2),
        [NFPROTO_IPV6] => (Stmt::Nfproto(Family::V6), 2),
        _ => (Stmt::Unknown(format!("meta nfproto {}", hex(data))), 2),
    })
}

fn l4proto(exprs: &[Expr]) -> Option<(Stmt, usize)> {
    match exprs {
        [
            Expr::Meta {
                key: NFT_META_L4PROTO,
                dreg: R1,
            },
            Expr::Cmp {
                sreg: R1,
                op: NFT_CMP_EQ,
                data,
            },
            ..,
        ] if data.len() == 1 => Some((Stmt::L4proto(data[0]), 2)),
        _ => None,
    }
}

fn fib_daddr_local(exprs: &[Expr]) -> Option<(Stmt, usize)> {
    match exprs {
        [
            Expr::Fib {
                flags: NFTA_FIB_F_DADDR,
                result: NFT_FIB_RESULT_ADDRTYPE,
                dreg: R1,
            },
            Expr::Cmp {
                sreg: R1,
                op: NFT_CMP_EQ,
                data,
            },
            ..,
        ] if data.as_slice() == RTN_LOCAL.to_ne_bytes() => Some((Stmt::FibDaddrLocal, 2)),
        _ => None,
    }
}

fn numgen_below(exprs: &[Expr]) -> Option<(Stmt, usize)> {
    match exprs {
        [
            Expr::Numgen {
                dreg: R1,
                modulus,
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
                data,
            },
            ..,
        ] => {
            let below = u32::from_be_bytes(data.as_slice().try_into().ok()?);
            Some((
                Stmt::NumgenBelow {
                    modulus: *modulus,
                    below,
                },
                3,
            ))
        }
        _ => None,
    }
}

fn counter(exprs: &[Expr]) -> Option<(Stmt, usize)> {
    match exprs {
        [Expr::Counter { packets, bytes }, ..] => Some((
            Stmt::Counter {
                packets: *packets,
                bytes: *bytes,
            },
            1,
        )),
        _ => None,
    }
}

fn masquerade_to_ports(exprs: &[Expr]) -> Option<(Stmt, usize)> {
    match exprs {
        [
            Expr::Immediate {
                dreg: a,
                data: ImmData::Value(lo),
            },
            Expr::Immediate {
                dreg: b,
                data: ImmData::Value(hi),
            },
            Expr::Masq {
                flags,
                reg_min: Some(c),
                reg_max: Some(d),
            },
            ..,
        ] if c == a && d == b && flags & !KNOWN_NAT_FLAGS == 0 => {
            let lo = u16::from_be_bytes(lo.as_slice().try_into().ok()?);
            let hi = u16::from_be_bytes(hi.as_slice().try_into().ok()?);
            Some((
                Stmt::Masquerade {
                    flags: *flags,
                    ports: Some((lo, hi)),
                },
                3,
            ))
        }
        _ => None,
    }
}

fn masquerade(exprs: &[Expr]) -> Option<(Stmt, usize)> {
    match exprs {
        [
            Expr::Masq {
                flags,
                reg_min: None,
                reg_max: None,
            },
            ..,
        ] if flags & !KNOWN_NAT_FLAGS == 0 => Some((
            Stmt::Masquerade {
                flags: *flags,
                ports: None,
            },
            1,
        )),
        _ => None,
    }
}

fn verdict_return(exprs: &[Expr]) -> Option<(Stmt, usize)> {
    match exprs {
        [
            Expr::Immediate {
                dreg: NFT_REG_VERDICT,
                data: ImmData::Verdict(NFT_RETURN, None),
            },
            ..,
        ] => Some((Stmt::Return, 1)),
        _ => None,
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::{Attrs, Writer};

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
            stmts.iter().all(|s| matches!(s, Stmt::Unknown(_))),
            "{stmts:?}"
        );
        assert_eq!(stmts[2], Stmt::Unknown("log expression".into()));
        assert_eq!(stmts[3], Stmt::Unknown("accept".into()));
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
        assert!(matches!(stmts[0], Stmt::Unknown(_)));
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
