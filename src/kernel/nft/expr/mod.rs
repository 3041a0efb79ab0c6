//! nf_tables expressions: the kernel's register machine, and their wire format.
//!
//! This file holds the type ([`Expr`]) and the dispatch from it; each expression kind's
//! file holds its format: how it is written (`emit`), read (`parse`) and shown (`describe`),
//! side by side, so the directions cannot drift apart; the round-trip tests hold them to it.
//! Expressions the agent does not model are kept by name ([`Expr::Other`]). What the
//! expressions *mean* at the statement level is [`super::stmt`]'s job.

mod arith;
mod cmp;
mod counter;
mod fields;
mod immediate;
mod lookup;
mod meta;
mod nat;
mod payload;
mod xt;

use super::uapi::*;
use crate::kernel::netlink::{Attr, Malformed, Writer};
use fields::Fields;

pub(crate) use immediate::parse_verdict;

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
        /// Destination register of a map lookup: the element's data goes there (0, the
        /// verdict register, for a verdict map: `vmap`); `None` for a set membership test.
        dreg: Option<u32>,
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
    /// `nat <type> <family> addr_min reg .. [addr_max reg ..] [proto_min reg .. proto_max reg ..]`.
    Nat {
        /// `NFT_NAT_SNAT` / `NFT_NAT_DNAT`.
        kind: u32,
        /// `NFPROTO_*` of the addresses.
        family: u32,
        /// Register holding the first address.
        reg_addr_min: Option<u32>,
        /// Register holding the last address.
        reg_addr_max: Option<u32>,
        /// Register holding the first port.
        reg_proto_min: Option<u32>,
        /// Register holding the last port.
        reg_proto_max: Option<u32>,
        /// `NF_NAT_RANGE_*` flags.
        flags: u32,
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
    /// `bitwise reg = (reg & mask) ^ xor` (the boolean form; shifts are `Other`).
    Bitwise {
        /// Source register.
        sreg: u32,
        /// Destination register.
        dreg: u32,
        /// Length in bytes.
        len: u32,
        /// The AND mask.
        mask: Vec<u8>,
        /// The XOR value.
        xor: Vec<u8>,
    },
    /// An x_tables match or target run through nft_compat (what iptables-nft writes for
    /// `-m addrtype`, `-j MASQUERADE`, `-j SNAT`, ...).
    Compat {
        /// `true` for a target, `false` for a match.
        target: bool,
        /// Its name (`MASQUERADE`, `addrtype`).
        name: String,
        /// Its revision.
        rev: u32,
        /// Its x_tables info struct, host order.
        info: Vec<u8>,
    },
    /// An expression the agent does not model; kept by name.
    Other {
        /// The expression's name (`log`, `ct`, ...).
        name: String,
    },
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
            Expr::Nat { .. } => "nat",
            Expr::Numgen { .. } => "numgen",
            Expr::Byteorder { .. } => "byteorder",
            Expr::Bitwise { .. } => "bitwise",
            Expr::Compat { target, .. } => xt::name(*target),
            Expr::Other { name } => name,
        }
    }

    /// Appends this expression as one `NFTA_LIST_ELEM` of a rule's expression list.
    pub fn encode(&self, w: &mut Writer) {
        let elem = w.begin_nest(NFTA_LIST_ELEM);
        w.put_str(NFTA_EXPR_NAME, self.name());
        let data = w.begin_nest(NFTA_EXPR_DATA);
        self.emit_data(w);
        w.end_nest(data);
        w.end_nest(elem);
    }

    /// Writes the attributes inside `NFTA_EXPR_DATA`, by the expression's own file.
    fn emit_data(&self, w: &mut Writer) {
        match self {
            Expr::Meta { key, dreg } => meta::emit_meta(w, *key, *dreg),
            Expr::Cmp { sreg, op, data } => cmp::emit(w, *sreg, *op, data),
            Expr::Payload {
                base,
                offset,
                len,
                dreg,
            } => payload::emit(w, [*dreg, *base, *offset, *len]),
            Expr::Lookup {
                set,
                sreg,
                dreg,
                set_id,
                flags,
            } => lookup::emit(w, set, *sreg, *dreg, *set_id, *flags),
            Expr::Fib {
                flags,
                result,
                dreg,
            } => meta::emit_fib(w, [*dreg, *result, *flags]),
            Expr::Immediate { dreg, data } => immediate::emit(w, *dreg, data),
            Expr::Counter { packets, bytes } => counter::emit(w, *packets, *bytes),
            Expr::Masq {
                flags,
                reg_min,
                reg_max,
            } => nat::emit_masq(w, *flags, *reg_min, *reg_max),
            Expr::Nat {
                kind,
                family,
                reg_addr_min,
                reg_addr_max,
                reg_proto_min,
                reg_proto_max,
                flags,
            } => nat::emit_nat(
                w,
                [*kind, *family],
                [*reg_addr_min, *reg_addr_max, *reg_proto_min, *reg_proto_max],
                *flags,
            ),
            Expr::Numgen {
                dreg,
                modulus,
                kind,
                offset,
            } => arith::emit_numgen(w, [*dreg, *modulus, *kind], *offset),
            Expr::Byteorder {
                sreg,
                dreg,
                op,
                len,
                size,
            } => arith::emit_byteorder(w, [*sreg, *dreg, *op, *len, *size]),
            Expr::Bitwise {
                sreg,
                dreg,
                len,
                mask,
                xor,
            } => arith::emit_bitwise(w, [*sreg, *dreg, *len], mask, xor),
            Expr::Compat {
                name, rev, info, ..
            } => xt::emit(w, name, *rev, info),
            Expr::Other { .. } => {}
        }
    }

    /// Decodes one `NFTA_LIST_ELEM` of a rule's expression list.
    pub fn decode(elem: &Attr<'_>) -> Result<Expr, Malformed> {
        let f = Fields::of(elem)?;
        match f.name.as_str() {
            "meta" => meta::parse_meta(&f),
            "cmp" => cmp::parse(&f),
            "payload" => payload::parse(&f),
            "lookup" => lookup::parse(&f),
            "fib" => meta::parse_fib(&f),
            "immediate" => immediate::parse(&f),
            "counter" => counter::parse(&f),
            "masq" => nat::parse_masq(&f),
            "nat" => nat::parse_nat(&f),
            "numgen" => arith::parse_numgen(&f),
            "byteorder" => arith::parse_byteorder(&f),
            "bitwise" => arith::parse_bitwise(&f),
            "match" => xt::parse(&f, false),
            "target" => xt::parse(&f, true),
            _ => Ok(f.other()),
        }
    }

    /// A short description in the style of `nft --debug=netlink`, for unknown sequences.
    pub fn describe(&self) -> String {
        match self {
            Expr::Meta { key, dreg } => meta::describe_meta(*key, *dreg),
            Expr::Cmp { sreg, op, data } => cmp::describe(*sreg, *op, data),
            Expr::Payload {
                base,
                offset,
                len,
                dreg,
            } => payload::describe(*base, *offset, *len, *dreg),
            Expr::Lookup {
                set,
                sreg,
                dreg,
                flags,
                ..
            } => lookup::describe(set, *sreg, *dreg, *flags),
            Expr::Fib {
                flags,
                result,
                dreg,
            } => meta::describe_fib(*flags, *result, *dreg),
            Expr::Immediate { dreg, data } => immediate::describe(*dreg, data),
            Expr::Counter { packets, bytes } => counter::describe(*packets, *bytes),
            Expr::Masq {
                flags,
                reg_min,
                reg_max,
            } => nat::describe_masq(*flags, *reg_min, *reg_max),
            Expr::Nat {
                kind,
                family,
                flags,
                ..
            } => nat::describe_nat(*kind, *family, *flags),
            Expr::Numgen {
                dreg,
                modulus,
                kind,
                offset,
            } => arith::describe_numgen(*dreg, *modulus, *kind, *offset),
            Expr::Byteorder { sreg, dreg, op, .. } => arith::describe_byteorder(*sreg, *dreg, *op),
            Expr::Bitwise {
                sreg,
                dreg,
                mask,
                xor,
                ..
            } => arith::describe_bitwise(*sreg, *dreg, mask, xor),
            Expr::Compat {
                target, name, rev, ..
            } => xt::describe(*target, name, *rev),
            Expr::Other { name } => format!("{name} expression"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::netlink::Attrs;

    /// Every variant, with every optional attribute both present and absent.
    fn samples() -> Vec<Expr> {
        vec![
            Expr::Meta { key: 15, dreg: 1 },
            Expr::Cmp {
                sreg: 1,
                op: 2,
                data: vec![1, 2, 3],
            },
            Expr::Payload {
                base: 1,
                offset: 16,
                len: 4,
                dreg: 1,
            },
            Expr::Lookup {
                set: "s".into(),
                sreg: 1,
                dreg: None,
                set_id: None,
                flags: 1,
            },
            Expr::Lookup {
                set: "__map0".into(),
                sreg: 1,
                dreg: Some(NFT_REG_VERDICT),
                set_id: None,
                flags: 0,
            },
            Expr::Fib {
                flags: 2,
                result: 3,
                dreg: 1,
            },
            Expr::Immediate {
                dreg: 1,
                data: ImmData::Value(vec![4, 0]),
            },
            Expr::Immediate {
                dreg: 0,
                data: ImmData::Verdict(NFT_JUMP, Some("c".into())),
            },
            Expr::Counter {
                packets: u64::MAX,
                bytes: 7,
            },
            Expr::Masq {
                flags: 0,
                reg_min: None,
                reg_max: None,
            },
            Expr::Masq {
                flags: 0x12,
                reg_min: Some(1),
                reg_max: Some(2),
            },
            Expr::Nat {
                kind: 0,
                family: 2,
                reg_addr_min: Some(1),
                reg_addr_max: None,
                reg_proto_min: Some(2),
                reg_proto_max: Some(3),
                flags: 0x12,
            },
            Expr::Numgen {
                dreg: 1,
                modulus: 9,
                kind: 1,
                offset: 3,
            },
            Expr::Byteorder {
                sreg: 1,
                dreg: 1,
                op: 1,
                len: 4,
                size: 4,
            },
            Expr::Bitwise {
                sreg: 1,
                dreg: 1,
                len: 4,
                mask: vec![0xff, 0xf0, 0, 0],
                xor: vec![0; 4],
            },
            Expr::Compat {
                target: false,
                name: "addrtype".into(),
                rev: 1,
                info: vec![0, 0, 2, 0, 2, 0, 0, 0],
            },
            Expr::Compat {
                target: true,
                name: "MASQUERADE".into(),
                rev: 0,
                info: vec![1, 0, 0, 0],
            },
            Expr::Other { name: "log".into() },
        ]
    }

    #[test]
    fn emit_and_parse_agree_for_every_expression() {
        let mut w = Writer::default();
        for e in samples() {
            e.encode(&mut w);
        }
        let bytes = w.into_bytes();
        let back: Vec<Expr> = Attrs::new(&bytes)
            .map(|a| Expr::decode(&a.unwrap()).unwrap())
            .collect();
        assert_eq!(back, samples());
    }

    /// What the conflict report shows for a sequence it does not recognise; the split of
    /// this file into one file per expression kind kept every line.
    #[test]
    fn describe_shows_every_expression_as_nft_debug_does() {
        let shown: Vec<String> = samples().iter().map(Expr::describe).collect();
        assert_eq!(
            shown,
            [
                "meta load key 15 => reg 1",
                "cmp op 2 reg 1 0x010203",
                "payload load 4b @ base 1 + 16 => reg 1",
                "lookup reg 1 set s inverted",
                "lookup reg 1 vmap __map0",
                "fib flags 0x2 result 3 => reg 1",
                "immediate reg 1 0x0400",
                "jump c",
                "counter packets 18446744073709551615 bytes 7",
                "masq flags 0x0 proto regs None-None",
                "masq flags 0x12 proto regs Some(1)-Some(2)",
                "nat type 0 family 2 flags 0x12",
                "numgen type 1 mod 9 offset 3 => reg 1",
                "byteorder op 1 reg 1 => reg 1",
                "bitwise reg 1 = (reg 1 & 0xfff00000) ^ 0x00000000",
                "match name addrtype rev 1",
                "target name MASQUERADE rev 0",
                "log expression",
            ]
        );
        let map = Expr::Lookup {
            set: "m".into(),
            sreg: 1,
            dreg: Some(2),
            set_id: Some(4),
            flags: 0,
        };
        assert_eq!(map.describe(), "lookup reg 1 map m => reg 2");
    }

    #[test]
    fn missing_required_attributes_are_errors_not_panics() {
        let mut w = Writer::default();
        let elem = w.begin_nest(NFTA_LIST_ELEM);
        w.put_str(NFTA_EXPR_NAME, "fib");
        let data = w.begin_nest(NFTA_EXPR_DATA);
        w.put_u32(NFTA_FIB_DREG, 1);
        w.end_nest(data);
        w.end_nest(elem);
        let bytes = w.into_bytes();
        let a = Attrs::new(&bytes).next().unwrap().unwrap();
        assert!(Expr::decode(&a).is_err());
    }
}
