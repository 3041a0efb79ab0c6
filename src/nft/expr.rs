//! nf_tables expressions: the kernel's register machine, and the translation between it and
//! the statement level of [`Stmt`].
//!
//! [`lower`] turns statements into the expressions nft itself would generate for them (checked
//! against `nft --debug=netlink`); [`raise`] recognises those sequences again when reading a
//! rule back. Anything `raise` does not recognise becomes [`Stmt::Unknown`] with a
//! description, so a foreign or tampered rule is shown and compares unequal, never dropped.

use super::attr::{Attr, Malformed, Writer};
use super::uapi::*;
use crate::model::{Family, Stmt};

/// The data of an `immediate` expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImmData {
    /// A verdict with an optional chain (jump/goto).
    Verdict(i32, Option<String>),
    /// A value loaded into a data register.
    Value(Vec<u8>),
}

/// One nf_tables expression, as the kernel sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    /// `meta load <key> => reg`.
    Meta {
        /// `NFT_META_*`.
        key: u32,
        /// Destination register.
        dreg: u32,
    },
    /// `cmp <op> reg <data>`.
    Cmp {
        /// Source register.
        sreg: u32,
        /// `NFT_CMP_*`.
        op: u32,
        /// Compared bytes.
        data: Vec<u8>,
    },
    /// `payload load <len>b @ <base> + <offset> => reg`.
    Payload {
        /// `NFT_PAYLOAD_*_HEADER`.
        base: u32,
        /// Byte offset.
        offset: u32,
        /// Byte length.
        len: u32,
        /// Destination register.
        dreg: u32,
    },
    /// `lookup reg set <name>`.
    Lookup {
        /// Set name.
        set: String,
        /// Source register.
        sreg: u32,
        /// Set id within the batch, when sent.
        set_id: Option<u32>,
        /// `NFT_LOOKUP_F_*` (inverted lookup).
        flags: u32,
    },
    /// `fib <flags> <result> => reg`.
    Fib {
        /// `NFTA_FIB_F_*`.
        flags: u32,
        /// `NFT_FIB_RESULT_*`.
        result: u32,
        /// Destination register.
        dreg: u32,
    },
    /// `immediate reg <data>`.
    Immediate {
        /// Destination register (0 = verdict).
        dreg: u32,
        /// The data.
        data: ImmData,
    },
    /// `counter`.
    Counter {
        /// Packets.
        packets: u64,
        /// Bytes.
        bytes: u64,
    },
    /// `masq`.
    Masq {
        /// `NF_NAT_RANGE_*` flags.
        flags: u32,
        /// Register holding the first port.
        reg_min: Option<u32>,
        /// Register holding the last port.
        reg_max: Option<u32>,
    },
    /// `numgen reg = <type> mod <modulus> offset <offset>`.
    Numgen {
        /// Destination register.
        dreg: u32,
        /// Modulus.
        modulus: u32,
        /// `NFT_NG_*`.
        kind: u32,
        /// Offset added.
        offset: u32,
    },
    /// `byteorder reg = op(reg, size, len)`.
    Byteorder {
        /// Source register.
        sreg: u32,
        /// Destination register.
        dreg: u32,
        /// `NFT_BYTEORDER_*`.
        op: u32,
        /// Length in bytes.
        len: u32,
        /// Element size.
        size: u32,
    },
    /// An expression the agent does not model; kept by name.
    Other {
        /// The expression's name (`log`, `ct`, ...).
        name: String,
    },
}

fn data_value(w: &mut Writer, ty: u16, bytes: &[u8]) {
    let n = w.begin_nest(ty);
    w.put(NFTA_DATA_VALUE, bytes);
    w.end_nest(n);
}

impl Expr {
    /// The kernel's name for the expression.
    pub fn name(&self) -> &str {
        match self {
            Expr::Meta { .. } => "meta",
            Expr::Cmp { .. } => "cmp",
            Expr::Payload { .. } => "payload",
            Expr::Lookup { .. } => "lookup",
            Expr::Fib { .. } => "fib",
            Expr::Immediate { .. } => "immediate",
            Expr::Counter { .. } => "counter",
            Expr::Masq { .. } => "masq",
            Expr::Numgen { .. } => "numgen",
            Expr::Byteorder { .. } => "byteorder",
            Expr::Other { name } => name,
        }
    }

    /// Appends this expression as one `NFTA_LIST_ELEM` of a rule's expression list.
    pub fn encode(&self, w: &mut Writer) {
        let elem = w.begin_nest(NFTA_LIST_ELEM);
        w.put_str(NFTA_EXPR_NAME, self.name());
        let data = w.begin_nest(NFTA_EXPR_DATA);
        match self {
            Expr::Meta { key, dreg } => {
                w.put_u32(NFTA_META_DREG, *dreg);
                w.put_u32(NFTA_META_KEY, *key);
            }
            Expr::Cmp { sreg, op, data } => {
                w.put_u32(NFTA_CMP_SREG, *sreg);
                w.put_u32(NFTA_CMP_OP, *op);
                data_value(w, NFTA_CMP_DATA, data);
            }
            Expr::Payload {
                base,
                offset,
                len,
                dreg,
            } => {
                w.put_u32(NFTA_PAYLOAD_DREG, *dreg);
                w.put_u32(NFTA_PAYLOAD_BASE, *base);
                w.put_u32(NFTA_PAYLOAD_OFFSET, *offset);
                w.put_u32(NFTA_PAYLOAD_LEN, *len);
            }
            Expr::Lookup {
                set,
                sreg,
                set_id,
                flags,
            } => {
                w.put_str(NFTA_LOOKUP_SET, set);
                w.put_u32(NFTA_LOOKUP_SREG, *sreg);
                if let Some(id) = set_id {
                    w.put_u32(NFTA_LOOKUP_SET_ID, *id);
                }
                if *flags != 0 {
                    w.put_u32(NFTA_LOOKUP_FLAGS, *flags);
                }
            }
            Expr::Fib {
                flags,
                result,
                dreg,
            } => {
                w.put_u32(NFTA_FIB_DREG, *dreg);
                w.put_u32(NFTA_FIB_RESULT, *result);
                w.put_u32(NFTA_FIB_FLAGS, *flags);
            }
            Expr::Immediate { dreg, data } => {
                w.put_u32(NFTA_IMMEDIATE_DREG, *dreg);
                let d = w.begin_nest(NFTA_IMMEDIATE_DATA);
                match data {
                    ImmData::Value(bytes) => w.put(NFTA_DATA_VALUE, bytes),
                    ImmData::Verdict(code, chain) => {
                        let v = w.begin_nest(NFTA_DATA_VERDICT);
                        w.put_u32(NFTA_VERDICT_CODE, *code as u32);
                        if let Some(c) = chain {
                            w.put_str(NFTA_VERDICT_CHAIN, c);
                        }
                        w.end_nest(v);
                    }
                }
                w.end_nest(d);
            }
            Expr::Counter { packets, bytes } => {
                w.put_u64(NFTA_COUNTER_BYTES, *bytes);
                w.put_u64(NFTA_COUNTER_PACKETS, *packets);
            }
            Expr::Masq {
                flags,
                reg_min,
                reg_max,
            } => {
                if *flags != 0 {
                    w.put_u32(NFTA_MASQ_FLAGS, *flags);
                }
                if let Some(r) = reg_min {
                    w.put_u32(NFTA_MASQ_REG_PROTO_MIN, *r);
                }
                if let Some(r) = reg_max {
                    w.put_u32(NFTA_MASQ_REG_PROTO_MAX, *r);
                }
            }
            Expr::Numgen {
                dreg,
                modulus,
                kind,
                offset,
            } => {
                w.put_u32(NFTA_NG_DREG, *dreg);
                w.put_u32(NFTA_NG_MODULUS, *modulus);
                w.put_u32(NFTA_NG_TYPE, *kind);
                if *offset != 0 {
                    w.put_u32(NFTA_NG_OFFSET, *offset);
                }
            }
            Expr::Byteorder {
                sreg,
                dreg,
                op,
                len,
                size,
            } => {
                w.put_u32(NFTA_BYTEORDER_SREG, *sreg);
                w.put_u32(NFTA_BYTEORDER_DREG, *dreg);
                w.put_u32(NFTA_BYTEORDER_OP, *op);
                w.put_u32(NFTA_BYTEORDER_LEN, *len);
                w.put_u32(NFTA_BYTEORDER_SIZE, *size);
            }
            Expr::Other { .. } => {}
        }
        w.end_nest(data);
        w.end_nest(elem);
    }

    /// Decodes one `NFTA_LIST_ELEM` of a rule's expression list.
    pub fn decode(elem: &Attr<'_>) -> Result<Expr, Malformed> {
        let mut name = None;
        let mut data: Vec<Attr<'_>> = Vec::new();
        for a in elem.nested() {
            let a = a?;
            match a.ty {
                NFTA_EXPR_NAME => name = Some(a.str()?.to_string()),
                NFTA_EXPR_DATA => data = a.nested().collect::<Result<_, _>>()?,
                _ => {}
            }
        }
        let name = name.ok_or_else(|| Malformed("expression without a name".into()))?;
        let u32_of = |ty: u16| -> Result<Option<u32>, Malformed> {
            data.iter()
                .find(|a| a.ty == ty)
                .map(|a| a.u32())
                .transpose()
        };
        let need = |ty: u16| -> Result<u32, Malformed> {
            u32_of(ty)?.ok_or_else(|| Malformed(format!("{name}: attribute {ty} missing")))
        };
        let find = |ty: u16| data.iter().find(|a| a.ty == ty);
        let value_of = |a: &Attr<'_>| -> Result<Vec<u8>, Malformed> {
            for inner in a.nested() {
                let inner = inner?;
                if inner.ty == NFTA_DATA_VALUE {
                    return Ok(inner.data.to_vec());
                }
            }
            Err(Malformed(format!("{name}: data without a value")))
        };
        Ok(match name.as_str() {
            "meta" if find(NFTA_META_DREG).is_some() => Expr::Meta {
                key: need(NFTA_META_KEY)?,
                dreg: need(NFTA_META_DREG)?,
            },
            "cmp" => Expr::Cmp {
                sreg: need(NFTA_CMP_SREG)?,
                op: need(NFTA_CMP_OP)?,
                data: match find(NFTA_CMP_DATA) {
                    Some(a) => value_of(a)?,
                    None => return Err(Malformed("cmp without data".into())),
                },
            },
            "payload" if find(NFTA_PAYLOAD_DREG).is_some() => Expr::Payload {
                base: need(NFTA_PAYLOAD_BASE)?,
                offset: need(NFTA_PAYLOAD_OFFSET)?,
                len: need(NFTA_PAYLOAD_LEN)?,
                dreg: need(NFTA_PAYLOAD_DREG)?,
            },
            "lookup" => Expr::Lookup {
                set: find(NFTA_LOOKUP_SET)
                    .map(|a| a.str())
                    .transpose()?
                    .unwrap_or_default()
                    .to_string(),
                sreg: need(NFTA_LOOKUP_SREG)?,
                // The id only exists inside a batch; the kernel does not report it.
                set_id: None,
                flags: u32_of(NFTA_LOOKUP_FLAGS)?.unwrap_or(0),
            },
            "fib" => Expr::Fib {
                flags: need(NFTA_FIB_FLAGS)?,
                result: need(NFTA_FIB_RESULT)?,
                dreg: need(NFTA_FIB_DREG)?,
            },
            "immediate" => {
                let dreg = need(NFTA_IMMEDIATE_DREG)?;
                let d = find(NFTA_IMMEDIATE_DATA)
                    .ok_or_else(|| Malformed("immediate without data".into()))?;
                let mut out = None;
                for inner in d.nested() {
                    let inner = inner?;
                    match inner.ty {
                        NFTA_DATA_VALUE => out = Some(ImmData::Value(inner.data.to_vec())),
                        NFTA_DATA_VERDICT => {
                            let mut code = None;
                            let mut chain = None;
                            for v in inner.nested() {
                                let v = v?;
                                match v.ty {
                                    NFTA_VERDICT_CODE => code = Some(v.u32()? as i32),
                                    NFTA_VERDICT_CHAIN => chain = Some(v.str()?.to_string()),
                                    _ => {}
                                }
                            }
                            let code =
                                code.ok_or_else(|| Malformed("verdict without code".into()))?;
                            out = Some(ImmData::Verdict(code, chain));
                        }
                        _ => {}
                    }
                }
                Expr::Immediate {
                    dreg,
                    data: out.ok_or_else(|| Malformed("immediate without data".into()))?,
                }
            }
            "counter" => Expr::Counter {
                bytes: find(NFTA_COUNTER_BYTES)
                    .map(|a| a.u64())
                    .transpose()?
                    .unwrap_or(0),
                packets: find(NFTA_COUNTER_PACKETS)
                    .map(|a| a.u64())
                    .transpose()?
                    .unwrap_or(0),
            },
            "masq" => Expr::Masq {
                flags: u32_of(NFTA_MASQ_FLAGS)?.unwrap_or(0),
                reg_min: u32_of(NFTA_MASQ_REG_PROTO_MIN)?,
                reg_max: u32_of(NFTA_MASQ_REG_PROTO_MAX)?,
            },
            "numgen" => Expr::Numgen {
                dreg: need(NFTA_NG_DREG)?,
                modulus: need(NFTA_NG_MODULUS)?,
                kind: need(NFTA_NG_TYPE)?,
                offset: u32_of(NFTA_NG_OFFSET)?.unwrap_or(0),
            },
            "byteorder" => Expr::Byteorder {
                sreg: need(NFTA_BYTEORDER_SREG)?,
                dreg: need(NFTA_BYTEORDER_DREG)?,
                op: need(NFTA_BYTEORDER_OP)?,
                len: need(NFTA_BYTEORDER_LEN)?,
                size: need(NFTA_BYTEORDER_SIZE)?,
            },
            _ => Expr::Other { name },
        })
    }

    /// A short description in the style of `nft --debug=netlink`, for unknown sequences.
    pub fn describe(&self) -> String {
        match self {
            Expr::Meta { key, dreg } => format!("meta load key {key} => reg {dreg}"),
            Expr::Cmp { sreg, op, data } => format!("cmp op {op} reg {sreg} 0x{}", hex(data)),
            Expr::Payload {
                base,
                offset,
                len,
                dreg,
            } => format!("payload load {len}b @ base {base} + {offset} => reg {dreg}"),
            Expr::Lookup {
                set, sreg, flags, ..
            } => {
                let inv = if flags & 1 != 0 { " inverted" } else { "" };
                format!("lookup reg {sreg} set {set}{inv}")
            }
            Expr::Fib {
                flags,
                result,
                dreg,
            } => format!("fib flags 0x{flags:x} result {result} => reg {dreg}"),
            Expr::Immediate { dreg, data } => match data {
                ImmData::Verdict(code, chain) => {
                    let v = verdict_name(*code);
                    match chain {
                        Some(c) => format!("{v} {c}"),
                        None => v.to_string(),
                    }
                }
                ImmData::Value(v) => format!("immediate reg {dreg} 0x{}", hex(v)),
            },
            Expr::Counter { packets, bytes } => format!("counter packets {packets} bytes {bytes}"),
            Expr::Masq {
                flags,
                reg_min,
                reg_max,
            } => format!("masq flags 0x{flags:x} proto regs {reg_min:?}-{reg_max:?}"),
            Expr::Numgen {
                dreg,
                modulus,
                kind,
                offset,
            } => format!("numgen type {kind} mod {modulus} offset {offset} => reg {dreg}"),
            Expr::Byteorder { sreg, dreg, op, .. } => {
                format!("byteorder op {op} reg {sreg} => reg {dreg}")
            }
            Expr::Other { name } => format!("{name} expression"),
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn verdict_name(code: i32) -> &'static str {
    match code {
        NF_DROP => "drop",
        NF_ACCEPT => "accept",
        NFT_CONTINUE => "continue",
        NFT_BREAK => "break",
        NFT_JUMP => "jump",
        NFT_GOTO => "goto",
        NFT_RETURN => "return",
        _ => "verdict",
    }
}

fn nfproto_of(f: Family) -> u8 {
    match f {
        Family::V4 => NFPROTO_IPV4,
        Family::V6 => NFPROTO_IPV6,
    }
}

fn meta(key: u32) -> Expr {
    Expr::Meta {
        key,
        dreg: NFT_REG_1,
    }
}

fn cmp_eq(data: Vec<u8>) -> Expr {
    Expr::Cmp {
        sreg: NFT_REG_1,
        op: NFT_CMP_EQ,
        data,
    }
}

/// Expressions for a rule's statements, as nft generates them for an `inet` table.
/// `set_id` gives the batch-local id of a set by name, so lookups also work when the set is
/// created in the same transaction.
pub fn lower(stmts: &[Stmt], set_id: &dyn Fn(&str) -> Option<u32>) -> Vec<Expr> {
    let mut out = Vec::with_capacity(stmts.len() * 3);
    for stmt in stmts {
        match stmt {
            Stmt::Nfproto(f) => {
                out.push(meta(NFT_META_NFPROTO));
                out.push(cmp_eq(vec![nfproto_of(*f)]));
            }
            Stmt::L4proto(p) => {
                out.push(meta(NFT_META_L4PROTO));
                out.push(cmp_eq(vec![*p]));
            }
            Stmt::FibDaddrLocal => {
                out.push(Expr::Fib {
                    flags: NFTA_FIB_F_DADDR,
                    result: NFT_FIB_RESULT_ADDRTYPE,
                    dreg: NFT_REG_1,
                });
                // The address type is compared in host byte order.
                out.push(cmp_eq(RTN_LOCAL.to_ne_bytes().to_vec()));
            }
            Stmt::DaddrInSet { family, set } => {
                // In an inet table the payload offset only means "daddr" after checking
                // the family: nft adds this dependency implicitly, so do we.
                out.push(meta(NFT_META_NFPROTO));
                out.push(cmp_eq(vec![nfproto_of(*family)]));
                let (offset, len) = match family {
                    Family::V4 => (16, 4),
                    Family::V6 => (24, 16),
                };
                out.push(Expr::Payload {
                    base: NFT_PAYLOAD_NETWORK_HEADER,
                    offset,
                    len,
                    dreg: NFT_REG_1,
                });
                out.push(Expr::Lookup {
                    set: set.clone(),
                    sreg: NFT_REG_1,
                    set_id: set_id(set),
                    flags: 0,
                });
            }
            Stmt::NumgenBelow { modulus, below } => {
                out.push(Expr::Numgen {
                    dreg: NFT_REG_1,
                    modulus: *modulus,
                    kind: NFT_NG_RANDOM,
                    offset: 0,
                });
                // cmp compares bytes (memcmp): convert the host-order number to big-endian
                // first so "less than" means what it says, as nft does.
                out.push(Expr::Byteorder {
                    sreg: NFT_REG_1,
                    dreg: NFT_REG_1,
                    op: NFT_BYTEORDER_HTON,
                    len: 4,
                    size: 4,
                });
                out.push(Expr::Cmp {
                    sreg: NFT_REG_1,
                    op: NFT_CMP_LT,
                    data: below.to_be_bytes().to_vec(),
                });
            }
            Stmt::Counter { packets, bytes } => out.push(Expr::Counter {
                packets: *packets,
                bytes: *bytes,
            }),
            Stmt::Masquerade { flags, ports } => {
                if let Some((lo, hi)) = ports {
                    out.push(Expr::Immediate {
                        dreg: NFT_REG_1,
                        data: ImmData::Value(lo.to_be_bytes().to_vec()),
                    });
                    out.push(Expr::Immediate {
                        dreg: NFT_REG_2,
                        data: ImmData::Value(hi.to_be_bytes().to_vec()),
                    });
                    out.push(Expr::Masq {
                        flags: *flags,
                        reg_min: Some(NFT_REG_1),
                        reg_max: Some(NFT_REG_2),
                    });
                } else {
                    out.push(Expr::Masq {
                        flags: *flags,
                        reg_min: None,
                        reg_max: None,
                    });
                }
            }
            Stmt::Return => out.push(Expr::Immediate {
                dreg: NFT_REG_VERDICT,
                data: ImmData::Verdict(NFT_RETURN, None),
            }),
            // Never produced by `desired`; nothing sensible to send.
            Stmt::Unknown(_) => {}
        }
    }
    out
}

const KNOWN_NAT_FLAGS: u32 = crate::model::NAT_PROTO_SPECIFIED
    | crate::model::NAT_PROTO_RANDOM
    | crate::model::NAT_PERSISTENT
    | crate::model::NAT_PROTO_RANDOM_FULLY;

/// Recognises the statements in a rule's expressions: the inverse of [`lower`].
pub fn raise(exprs: &[Expr]) -> Vec<Stmt> {
    let mut out = Vec::new();
    let mut i = 0;
    let r1 = NFT_REG_1;
    while i < exprs.len() {
        let rest = &exprs[i..];
        let (stmt, used) = match rest {
            [
                Expr::Meta {
                    key: NFT_META_NFPROTO,
                    dreg: a,
                },
                Expr::Cmp {
                    sreg: b,
                    op: NFT_CMP_EQ,
                    data: proto,
                },
                Expr::Payload {
                    base: NFT_PAYLOAD_NETWORK_HEADER,
                    offset,
                    len,
                    dreg: c,
                },
                Expr::Lookup {
                    set,
                    sreg: d,
                    flags: 0,
                    ..
                },
                ..,
            ] if *a == r1 && *b == r1 && *c == r1 && *d == r1 => {
                match (proto.as_slice(), offset, len) {
                    ([NFPROTO_IPV4], 16, 4) => (
                        Stmt::DaddrInSet {
                            family: Family::V4,
                            set: set.clone(),
                        },
                        4,
                    ),
                    ([NFPROTO_IPV6], 24, 16) => (
                        Stmt::DaddrInSet {
                            family: Family::V6,
                            set: set.clone(),
                        },
                        4,
                    ),
                    _ => (Stmt::Unknown(rest[0].describe()), 1),
                }
            }
            [
                Expr::Meta {
                    key: NFT_META_NFPROTO,
                    dreg: a,
                },
                Expr::Cmp {
                    sreg: b,
                    op: NFT_CMP_EQ,
                    data,
                },
                ..,
            ] if *a == r1 && *b == r1 => match data.as_slice() {
                [NFPROTO_IPV4] => (Stmt::Nfproto(Family::V4), 2),
                [NFPROTO_IPV6] => (Stmt::Nfproto(Family::V6), 2),
                _ => (Stmt::Unknown(format!("meta nfproto {}", hex(data))), 2),
            },
            [
                Expr::Meta {
                    key: NFT_META_L4PROTO,
                    dreg: a,
                },
                Expr::Cmp {
                    sreg: b,
                    op: NFT_CMP_EQ,
                    data,
                },
                ..,
            ] if *a == r1 && *b == r1 && data.len() == 1 => (Stmt::L4proto(data[0]), 2),
            [
                Expr::Fib {
                    flags: NFTA_FIB_F_DADDR,
                    result: NFT_FIB_RESULT_ADDRTYPE,
                    dreg: a,
                },
                Expr::Cmp {
                    sreg: b,
                    op: NFT_CMP_EQ,
                    data,
                },
                ..,
            ] if *a == r1 && *b == r1 && data.as_slice() == RTN_LOCAL.to_ne_bytes() => {
                (Stmt::FibDaddrLocal, 2)
            }
            [
                Expr::Numgen {
                    dreg: a,
                    modulus,
                    kind: NFT_NG_RANDOM,
                    offset: 0,
                },
                Expr::Byteorder {
                    sreg: b,
                    dreg: c,
                    op: NFT_BYTEORDER_HTON,
                    len: 4,
                    size: 4,
                },
                Expr::Cmp {
                    sreg: d,
                    op: NFT_CMP_LT,
                    data,
                },
                ..,
            ] if [*a, *b, *c, *d] == [r1; 4] && data.len() == 4 => (
                Stmt::NumgenBelow {
                    modulus: *modulus,
                    below: u32::from_be_bytes([data[0], data[1], data[2], data[3]]),
                },
                3,
            ),
            [Expr::Counter { packets, bytes }, ..] => (
                Stmt::Counter {
                    packets: *packets,
                    bytes: *bytes,
                },
                1,
            ),
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
            ] if lo.len() == 2
                && hi.len() == 2
                && c == a
                && d == b
                && flags & !KNOWN_NAT_FLAGS == 0 =>
            {
                (
                    Stmt::Masquerade {
                        flags: *flags,
                        ports: Some((
                            u16::from_be_bytes([lo[0], lo[1]]),
                            u16::from_be_bytes([hi[0], hi[1]]),
                        )),
                    },
                    3,
                )
            }
            [
                Expr::Masq {
                    flags,
                    reg_min: None,
                    reg_max: None,
                },
                ..,
            ] if flags & !KNOWN_NAT_FLAGS == 0 => (
                Stmt::Masquerade {
                    flags: *flags,
                    ports: None,
                },
                1,
            ),
            [
                Expr::Immediate {
                    dreg: NFT_REG_VERDICT,
                    data: ImmData::Verdict(NFT_RETURN, None),
                },
                ..,
            ] => (Stmt::Return, 1),
            [other, ..] => (Stmt::Unknown(other.describe()), 1),
            [] => break,
        };
        out.push(stmt);
        i += used;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{NAT_PROTO_RANDOM_FULLY, NAT_PROTO_SPECIFIED};

    fn no_ids(_: &str) -> Option<u32> {
        None
    }

    fn roundtrip(stmts: Vec<Stmt>) {
        let exprs = lower(&stmts, &no_ids);
        let mut w = Writer::default();
        for e in &exprs {
            e.encode(&mut w);
        }
        let bytes = w.into_bytes();
        let decoded: Vec<Expr> = super::super::attr::Attrs::new(&bytes)
            .map(|a| Expr::decode(&a.unwrap()).unwrap())
            .collect();
        assert_eq!(decoded, exprs);
        assert_eq!(raise(&decoded), stmts);
    }

    #[test]
    fn every_statement_round_trips() {
        roundtrip(vec![Stmt::Nfproto(Family::V6), Stmt::Return]);
        roundtrip(vec![Stmt::FibDaddrLocal, Stmt::Return]);
        roundtrip(vec![
            Stmt::DaddrInSet {
                family: Family::V4,
                set: "nonmasq-v4".into(),
            },
            Stmt::Return,
        ]);
        roundtrip(vec![
            Stmt::DaddrInSet {
                family: Family::V6,
                set: "nonmasq-v6".into(),
            },
            Stmt::Return,
        ]);
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
