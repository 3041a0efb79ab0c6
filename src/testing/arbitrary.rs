//! `arbitrary::Arbitrary` for the expressions, statements, sets and chains (the `fuzzing`
//! feature). Each is drawn as the wire carries it and the agent reads it back, so a value
//! drawn here must survive encode -> decode (and a statement `raise(lower(..))`) unchanged:
//! names without NUL (the wire ends them with one) and short, byte strings of at most 256
//! bytes, set prefixes canonical, an SNAT range in order and of its family, NAT flags among
//! those the agent writes, and what the kernel folds already folded. What falls outside
//! (a flag the agent never writes, a name by which the decoder parses an expression of its
//! own) is the fuzz target's to add, where it asserts what happens to it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use arbitrary::{Arbitrary, Result, Unstructured};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::addr::prefix::{Family, RangeSet};
use crate::kernel::nft::expr::{Expr, ImmData};
use crate::kernel::nft::stmt::KNOWN_NAT_FLAGS;
use crate::model::{BaseChain, Chain, Rule, Set, Stmt, TableFlags};

/// The longest name drawn; the longest byte string.
const MAX_NAME: usize = 32;
const MAX_BYTES: usize = 256;
/// The most prefixes (and holes) a set is drawn from; rules a chain; statements a rule.
const MAX_NETS: usize = 64;
const MAX_RULES: usize = 16;
const MAX_STMTS: usize = 16;

/// The names `Expr::decode` parses as expressions of its own: an `Other` is never one.
const MODELLED: [&str; 14] = [
    "meta",
    "cmp",
    "payload",
    "lookup",
    "fib",
    "immediate",
    "counter",
    "masq",
    "nat",
    "numgen",
    "byteorder",
    "bitwise",
    "match",
    "target",
];

/// A name as the wire carries it: no NUL, at most [`MAX_NAME`] characters.
fn name(u: &mut Unstructured<'_>) -> Result<String> {
    let s: String = u.arbitrary()?;
    Ok(s.chars().filter(|&c| c != '\0').take(MAX_NAME).collect())
}

fn bytes(u: &mut Unstructured<'_>) -> Result<Vec<u8>> {
    let v: Vec<u8> = u.arbitrary()?;
    Ok(v.into_iter().take(MAX_BYTES).collect())
}

/// An address of the family, from any integer (IPv4 uses the low 32 bits).
fn addr(family: Family, a: u128) -> IpAddr {
    match family {
        Family::V4 => IpAddr::V4(Ipv4Addr::from(a as u32)),
        Family::V6 => IpAddr::V6(Ipv6Addr::from(a)),
    }
}

/// A prefix of the family: any address, any length, host bits cleared.
fn net(u: &mut Unstructured<'_>, family: Family) -> Result<IpNet> {
    let a: u128 = u.arbitrary()?;
    let len: u8 = u.arbitrary()?;
    Ok(match family {
        Family::V4 => IpNet::V4(
            Ipv4Net::new(Ipv4Addr::from(a as u32), len % 33)
                .expect("len <= 32")
                .trunc(),
        ),
        Family::V6 => IpNet::V6(
            Ipv6Net::new(Ipv6Addr::from(a), len % 129)
                .expect("len <= 128")
                .trunc(),
        ),
    })
}

fn ranges(u: &mut Unstructured<'_>, family: Family) -> Result<RangeSet> {
    let n = u.int_in_range(0..=MAX_NETS)?;
    let nets = (0..n)
        .map(|_| net(u, family))
        .collect::<Result<Vec<IpNet>>>()?;
    Ok(RangeSet::from_nets(&nets))
}

impl<'a> Arbitrary<'a> for Family {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Family> {
        Ok(if u.arbitrary()? {
            Family::V6
        } else {
            Family::V4
        })
    }
}

impl<'a> Arbitrary<'a> for TableFlags {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<TableFlags> {
        Ok(TableFlags(u.arbitrary()?))
    }
}

impl<'a> Arbitrary<'a> for ImmData {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<ImmData> {
        Ok(if u.arbitrary()? {
            let chain = if u.arbitrary()? { Some(name(u)?) } else { None };
            ImmData::Verdict(u.arbitrary()?, chain)
        } else {
            ImmData::Value(bytes(u)?)
        })
    }
}

impl<'a> Arbitrary<'a> for Expr {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Expr> {
        Ok(match u.int_in_range(0..=13u8)? {
            0 => Expr::Meta {
                key: u.arbitrary()?,
                dreg: u.arbitrary()?,
            },
            1 => Expr::Cmp {
                sreg: u.arbitrary()?,
                op: u.arbitrary()?,
                data: bytes(u)?,
            },
            2 => Expr::Payload {
                base: u.arbitrary()?,
                offset: u.arbitrary()?,
                len: u.arbitrary()?,
                dreg: u.arbitrary()?,
            },
            // The kernel never reports a batch-local set id.
            3 => Expr::Lookup {
                set: name(u)?,
                sreg: u.arbitrary()?,
                dreg: u.arbitrary()?,
                set_id: None,
                flags: u.arbitrary()?,
            },
            4 => Expr::Fib {
                flags: u.arbitrary()?,
                result: u.arbitrary()?,
                dreg: u.arbitrary()?,
            },
            5 => Expr::Immediate {
                dreg: u.arbitrary()?,
                data: u.arbitrary()?,
            },
            6 => Expr::Counter {
                packets: u.arbitrary()?,
                bytes: u.arbitrary()?,
            },
            7 => Expr::Masq {
                flags: u.arbitrary()?,
                reg_min: u.arbitrary()?,
                reg_max: u.arbitrary()?,
            },
            8 => {
                let reg_addr_min: Option<u32> = u.arbitrary()?;
                let reg_addr_max: Option<u32> = u.arbitrary()?;
                let flags: u32 = u.arbitrary()?;
                Expr::Nat {
                    kind: u.arbitrary()?,
                    family: u.arbitrary()?,
                    reg_addr_min,
                    // The kernel reports a missing last address as the first one's register,
                    // and NF_NAT_RANGE_MAP_IPS with an address: the decoder folds both back.
                    reg_addr_max: reg_addr_max.filter(|r| Some(*r) != reg_addr_min),
                    reg_proto_min: u.arbitrary()?,
                    reg_proto_max: u.arbitrary()?,
                    flags: if reg_addr_min.is_some() {
                        flags & !1
                    } else {
                        flags
                    },
                }
            }
            9 => Expr::Bitwise {
                sreg: u.arbitrary()?,
                dreg: u.arbitrary()?,
                len: u.arbitrary()?,
                mask: bytes(u)?,
                xor: bytes(u)?,
            },
            10 => Expr::Compat {
                target: u.arbitrary()?,
                name: name(u)?,
                rev: u.arbitrary()?,
                info: bytes(u)?,
            },
            11 => Expr::Numgen {
                dreg: u.arbitrary()?,
                modulus: u.arbitrary()?,
                kind: u.arbitrary()?,
                offset: u.arbitrary()?,
            },
            12 => Expr::Byteorder {
                sreg: u.arbitrary()?,
                dreg: u.arbitrary()?,
                op: u.arbitrary()?,
                len: u.arbitrary()?,
                size: u.arbitrary()?,
            },
            _ => {
                let mut n = name(u)?;
                if n.is_empty() || MODELLED.contains(&n.as_str()) {
                    n.insert(0, 'x');
                }
                Expr::Other { name: n }
            }
        })
    }
}

impl<'a> Arbitrary<'a> for Stmt {
    /// Any statement but `Unknown` (which has no wire form).
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Stmt> {
        Ok(match u.int_in_range(0..=13u8)? {
            0 => Stmt::Nfproto(u.arbitrary()?),
            1 => Stmt::L4proto(u.arbitrary()?),
            2 => Stmt::FibDaddrLocal,
            3 => Stmt::DaddrInSet {
                family: u.arbitrary()?,
                set: name(u)?,
            },
            4 => Stmt::SaddrNotInSet {
                family: u.arbitrary()?,
                set: name(u)?,
            },
            5 => Stmt::OifnameNotInSet { set: name(u)? },
            6 => Stmt::NumgenBelow {
                modulus: u.arbitrary()?,
                below: u.arbitrary()?,
            },
            7 => Stmt::Counter {
                packets: u.arbitrary()?,
                bytes: u.arbitrary()?,
            },
            8 => Stmt::Masquerade {
                flags: u.arbitrary::<u32>()? & KNOWN_NAT_FLAGS,
                ports: u.arbitrary()?,
            },
            9 => {
                let family: Family = u.arbitrary()?;
                let (a, b): (u128, u128) = u.arbitrary()?;
                Stmt::Snat {
                    family,
                    first: addr(family, a.min(b)),
                    last: addr(family, a.max(b)),
                    flags: u.arbitrary::<u32>()? & KNOWN_NAT_FLAGS,
                    ports: u.arbitrary()?,
                }
            }
            10 => Stmt::SnatMap {
                family: u.arbitrary()?,
                map: name(u)?,
                packets: u.arbitrary()?,
                bytes: u.arbitrary()?,
                flags: u.arbitrary::<u32>()? & KNOWN_NAT_FLAGS,
                ports: u.arbitrary()?,
            },
            11 => Stmt::DaddrVmap {
                family: u.arbitrary()?,
                map: name(u)?,
            },
            12 => Stmt::Accept,
            _ => Stmt::Return,
        })
    }
}

impl<'a> Arbitrary<'a> for Set {
    /// A set of prefixes with holes cut out of them, as the fewest prefixes (what both the
    /// model and the decoder produce).
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Set> {
        let name = name(u)?;
        let family: Family = u.arbitrary()?;
        let prefixes = ranges(u, family)?
            .difference(&ranges(u, family)?)
            .to_prefixes(family.bits());
        Ok(Set {
            name,
            family,
            prefixes,
        })
    }
}

impl<'a> Arbitrary<'a> for BaseChain {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<BaseChain> {
        Ok(BaseChain {
            kind: name(u)?,
            hook: u.arbitrary()?,
            priority: u.arbitrary()?,
            policy: u.arbitrary()?,
        })
    }
}

impl<'a> Arbitrary<'a> for Rule {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Rule> {
        let n = u.int_in_range(0..=MAX_STMTS)?;
        Ok(Rule {
            stmts: (0..n).map(|_| u.arbitrary()).collect::<Result<_>>()?,
        })
    }
}

impl<'a> Arbitrary<'a> for Chain {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Chain> {
        let name = name(u)?;
        let base = u.arbitrary()?;
        let n = u.int_in_range(0..=MAX_RULES)?;
        Ok(Chain {
            name,
            base,
            rules: (0..n).map(|_| u.arbitrary()).collect::<Result<_>>()?,
        })
    }
}
