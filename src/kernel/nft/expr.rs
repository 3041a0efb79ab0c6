//! nf_tables expressions: the kernel's register machine, and their wire format.
//!
//! Each expression's attributes are written and read by a pair of functions that sit side by
//! side (`emit_*` / `parse_*`), so the two directions cannot drift apart; the round-trip tests
//! hold them to it. Expressions the agent does not model are kept by name ([`Expr::Other`]).
//! What the expressions *mean* at the statement level is [`super::stmt`]'s job.

use super::uapi::*;
use crate::kernel::netlink::{Attr, Malformed, Writer};

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
            Expr::Compat { target: true, .. } => "target",
            Expr::Compat { target: false, .. } => "match",
            Expr::Other { name } => name,
        }
    }

    /// Appends this expression as one `NFTA_LIST_ELEM` of a rule's expression list.
    pub fn encode(&self, w: &mut Writer) {
        let elem = w.begin_nest(NFTA_LIST_ELEM);
        w.put_str(NFTA_EXPR_NAME, self.name());
        let data = w.begin_nest(NFTA_EXPR_DATA);
        match self {
            Expr::Meta { key, dreg } => emit_meta(w, *key, *dreg),
            Expr::Cmp { sreg, op, data } => emit_cmp(w, *sreg, *op, data),
            Expr::Payload {
                base,
                offset,
                len,
                dreg,
            } => emit_payload(w, [*dreg, *base, *offset, *len]),
            Expr::Lookup {
                set,
                sreg,
                dreg,
                set_id,
                flags,
            } => emit_lookup(w, set, *sreg, *dreg, *set_id, *flags),
            Expr::Fib {
                flags,
                result,
                dreg,
            } => emit_fib(w, [*dreg, *result, *flags]),
            Expr::Immediate { dreg, data } => emit_immediate(w, *dreg, data),
            Expr::Counter { packets, bytes } => emit_counter(w, *packets, *bytes),
            Expr::Masq {
                flags,
                reg_min,
                reg_max,
            } => emit_masq(w, *flags, *reg_min, *reg_max),
            Expr::Nat {
                kind,
                family,
                reg_addr_min,
                reg_addr_max,
                reg_proto_min,
                reg_proto_max,
                flags,
            } => emit_nat(
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
            } => emit_numgen(w, [*dreg, *modulus, *kind], *offset),
            Expr::Byteorder {
                sreg,
                dreg,
                op,
                len,
                size,
            } => emit_byteorder(w, [*sreg, *dreg, *op, *len, *size]),
            Expr::Bitwise {
                sreg,
                dreg,
                len,
                mask,
                xor,
            } => emit_bitwise(w, [*sreg, *dreg, *len], mask, xor),
            Expr::Compat {
                name, rev, info, ..
            } => emit_compat(w, name, *rev, info),
            Expr::Other { .. } => {}
        }
        w.end_nest(data);
        w.end_nest(elem);
    }

    /// Decodes one `NFTA_LIST_ELEM` of a rule's expression list.
    pub fn decode(elem: &Attr<'_>) -> Result<Expr, Malformed> {
        let f = Fields::of(elem)?;
        match f.name.as_str() {
            "meta" => parse_meta(&f),
            "cmp" => parse_cmp(&f),
            "payload" => parse_payload(&f),
            "lookup" => parse_lookup(&f),
            "fib" => parse_fib(&f),
            "immediate" => parse_immediate(&f),
            "counter" => parse_counter(&f),
            "masq" => parse_masq(&f),
            "nat" => parse_nat(&f),
            "numgen" => parse_numgen(&f),
            "byteorder" => parse_byteorder(&f),
            "bitwise" => parse_bitwise(&f),
            "match" => parse_compat(&f, false),
            "target" => parse_compat(&f, true),
            _ => Ok(f.other()),
        }
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
                set,
                sreg,
                dreg,
                flags,
                ..
            } => {
                let inv = if flags & 1 != 0 { " inverted" } else { "" };
                match dreg {
                    Some(NFT_REG_VERDICT) => format!("lookup reg {sreg} vmap {set}{inv}"),
                    Some(d) => format!("lookup reg {sreg} map {set} => reg {d}{inv}"),
                    None => format!("lookup reg {sreg} set {set}{inv}"),
                }
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
            Expr::Nat {
                kind,
                family,
                flags,
                ..
            } => format!("nat type {kind} family {family} flags 0x{flags:x}"),
            Expr::Numgen {
                dreg,
                modulus,
                kind,
                offset,
            } => format!("numgen type {kind} mod {modulus} offset {offset} => reg {dreg}"),
            Expr::Byteorder { sreg, dreg, op, .. } => {
                format!("byteorder op {op} reg {sreg} => reg {dreg}")
            }
            Expr::Bitwise {
                sreg,
                dreg,
                mask,
                xor,
                ..
            } => format!(
                "bitwise reg {dreg} = (reg {sreg} & 0x{}) ^ 0x{}",
                hex(mask),
                hex(xor)
            ),
            Expr::Compat {
                target, name, rev, ..
            } => {
                let kind = if *target { "target" } else { "match" };
                format!("{kind} name {name} rev {rev}")
            }
            Expr::Other { name } => format!("{name} expression"),
        }
    }
}

// bitwise: the boolean form (mask and xor, both NFTA_DATA_VALUE nests).
fn emit_bitwise(w: &mut Writer, regs_len: [u32; 3], mask: &[u8], xor: &[u8]) {
    put_u32s(
        w,
        &[NFTA_BITWISE_SREG, NFTA_BITWISE_DREG, NFTA_BITWISE_LEN],
        &regs_len,
    );
    for (ty, data) in [(NFTA_BITWISE_MASK, mask), (NFTA_BITWISE_XOR, xor)] {
        let n = w.begin_nest(ty);
        w.put(NFTA_DATA_VALUE, data);
        w.end_nest(n);
    }
}

fn parse_bitwise(f: &Fields<'_>) -> Result<Expr, Malformed> {
    // A shift (NFTA_BITWISE_OP / DATA) has no mask: not the form we evaluate.
    if f.find(NFTA_BITWISE_MASK).is_none() {
        return Ok(f.other());
    }
    Ok(Expr::Bitwise {
        sreg: f.u32(NFTA_BITWISE_SREG)?,
        dreg: f.u32(NFTA_BITWISE_DREG)?,
        len: f.u32(NFTA_BITWISE_LEN)?,
        mask: f.value(NFTA_BITWISE_MASK)?,
        xor: f.value(NFTA_BITWISE_XOR)?,
    })
}

// match / target (nft_compat): name, revision, the x_tables info bytes. The attribute
// numbers are the same for both.
fn emit_compat(w: &mut Writer, name: &str, rev: u32, info: &[u8]) {
    w.put_str(NFTA_MATCH_NAME, name);
    w.put_u32(NFTA_MATCH_REV, rev);
    w.put(NFTA_MATCH_INFO, info);
}

fn parse_compat(f: &Fields<'_>, target: bool) -> Result<Expr, Malformed> {
    let (name_ty, rev_ty, info_ty) = if target {
        (NFTA_TARGET_NAME, NFTA_TARGET_REV, NFTA_TARGET_INFO)
    } else {
        (NFTA_MATCH_NAME, NFTA_MATCH_REV, NFTA_MATCH_INFO)
    };
    Ok(Expr::Compat {
        target,
        name: f
            .find(name_ty)
            .map(|a| a.str_lossy().into_owned())
            .unwrap_or_default(),
        rev: f.opt_u32(rev_ty)?.unwrap_or(0),
        info: f.find(info_ty).map(|a| a.data.to_vec()).unwrap_or_default(),
    })
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

/// The name and data attributes of one expression, with typed accessors.
struct Fields<'a> {
    name: String,
    data: Vec<Attr<'a>>,
}

impl<'a> Fields<'a> {
    fn of(elem: &Attr<'a>) -> Result<Fields<'a>, Malformed> {
        let mut name = None;
        let mut data = Vec::new();
        for a in elem.nested() {
            let a = a?;
            match a.ty {
                // Expression names are the kernel's own (ASCII); lossy keeps a bad one
                // readable instead of failing the whole rule.
                NFTA_EXPR_NAME => name = Some(a.str_lossy().into_owned()),
                NFTA_EXPR_DATA => data = a.nested().collect::<Result<_, _>>()?,
                _ => {}
            }
        }
        let name = name.ok_or_else(|| Malformed("expression without a name".into()))?;
        Ok(Fields { name, data })
    }

    fn find(&self, ty: u16) -> Option<&Attr<'a>> {
        self.data.iter().find(|a| a.ty == ty)
    }

    fn opt_u32(&self, ty: u16) -> Result<Option<u32>, Malformed> {
        self.find(ty).map(Attr::u32).transpose()
    }

    fn u32(&self, ty: u16) -> Result<u32, Malformed> {
        self.opt_u32(ty)?
            .ok_or_else(|| Malformed(format!("{}: attribute {ty} missing", self.name)))
    }

    fn u64_or_0(&self, ty: u16) -> Result<u64, Malformed> {
        Ok(self.find(ty).map(Attr::u64).transpose()?.unwrap_or(0))
    }

    /// The value inside an `NFTA_DATA_VALUE` nest (cmp's and immediate's data).
    fn value(&self, ty: u16) -> Result<Vec<u8>, Malformed> {
        let nest = self
            .find(ty)
            .ok_or_else(|| Malformed(format!("{} without data", self.name)))?;
        for inner in nest.nested() {
            let inner = inner?;
            if inner.ty == NFTA_DATA_VALUE {
                return Ok(inner.data.to_vec());
            }
        }
        Err(Malformed(format!("{}: data without a value", self.name)))
    }

    fn other(&self) -> Expr {
        Expr::Other {
            name: self.name.clone(),
        }
    }
}

fn put_u32s(w: &mut Writer, attrs: &[u16], values: &[u32]) {
    for (ty, v) in attrs.iter().zip(values) {
        w.put_u32(*ty, *v);
    }
}

// meta: a load (with a destination register). `meta set` (a source register) is not ours.
const META: [u16; 2] = [NFTA_META_DREG, NFTA_META_KEY];

fn emit_meta(w: &mut Writer, key: u32, dreg: u32) {
    put_u32s(w, &META, &[dreg, key]);
}

fn parse_meta(f: &Fields<'_>) -> Result<Expr, Malformed> {
    if f.find(NFTA_META_DREG).is_none() {
        return Ok(f.other());
    }
    Ok(Expr::Meta {
        key: f.u32(NFTA_META_KEY)?,
        dreg: f.u32(NFTA_META_DREG)?,
    })
}

// cmp: register, operation, and the compared bytes in an NFTA_DATA_VALUE nest.
fn emit_cmp(w: &mut Writer, sreg: u32, op: u32, data: &[u8]) {
    put_u32s(w, &[NFTA_CMP_SREG, NFTA_CMP_OP], &[sreg, op]);
    let n = w.begin_nest(NFTA_CMP_DATA);
    w.put(NFTA_DATA_VALUE, data);
    w.end_nest(n);
}

fn parse_cmp(f: &Fields<'_>) -> Result<Expr, Malformed> {
    Ok(Expr::Cmp {
        sreg: f.u32(NFTA_CMP_SREG)?,
        op: f.u32(NFTA_CMP_OP)?,
        data: f.value(NFTA_CMP_DATA)?,
    })
}

// payload: a load. A payload write (`payload set`) has no destination register.
const PAYLOAD: [u16; 4] = [
    NFTA_PAYLOAD_DREG,
    NFTA_PAYLOAD_BASE,
    NFTA_PAYLOAD_OFFSET,
    NFTA_PAYLOAD_LEN,
];

fn emit_payload(w: &mut Writer, values: [u32; 4]) {
    put_u32s(w, &PAYLOAD, &values);
}

fn parse_payload(f: &Fields<'_>) -> Result<Expr, Malformed> {
    if f.find(NFTA_PAYLOAD_DREG).is_none() {
        return Ok(f.other());
    }
    Ok(Expr::Payload {
        base: f.u32(NFTA_PAYLOAD_BASE)?,
        offset: f.u32(NFTA_PAYLOAD_OFFSET)?,
        len: f.u32(NFTA_PAYLOAD_LEN)?,
        dreg: f.u32(NFTA_PAYLOAD_DREG)?,
    })
}

// lookup: the set by name (and by batch-local id when sent), the registers, inversion flags.
fn emit_lookup(
    w: &mut Writer,
    set: &str,
    sreg: u32,
    dreg: Option<u32>,
    set_id: Option<u32>,
    flags: u32,
) {
    w.put_str(NFTA_LOOKUP_SET, set);
    w.put_u32(NFTA_LOOKUP_SREG, sreg);
    if let Some(d) = dreg {
        w.put_u32(NFTA_LOOKUP_DREG, d);
    }
    if let Some(id) = set_id {
        w.put_u32(NFTA_LOOKUP_SET_ID, id);
    }
    if flags != 0 {
        w.put_u32(NFTA_LOOKUP_FLAGS, flags);
    }
}

fn parse_lookup(f: &Fields<'_>) -> Result<Expr, Malformed> {
    Ok(Expr::Lookup {
        set: f
            .find(NFTA_LOOKUP_SET)
            .map(|a| a.str_lossy().into_owned())
            .unwrap_or_default(),
        sreg: f.u32(NFTA_LOOKUP_SREG)?,
        dreg: f.opt_u32(NFTA_LOOKUP_DREG)?,
        // The id only exists inside a batch; the kernel does not report it.
        set_id: None,
        flags: f.opt_u32(NFTA_LOOKUP_FLAGS)?.unwrap_or(0),
    })
}

// fib
const FIB: [u16; 3] = [NFTA_FIB_DREG, NFTA_FIB_RESULT, NFTA_FIB_FLAGS];

fn emit_fib(w: &mut Writer, values: [u32; 3]) {
    put_u32s(w, &FIB, &values);
}

fn parse_fib(f: &Fields<'_>) -> Result<Expr, Malformed> {
    Ok(Expr::Fib {
        flags: f.u32(NFTA_FIB_FLAGS)?,
        result: f.u32(NFTA_FIB_RESULT)?,
        dreg: f.u32(NFTA_FIB_DREG)?,
    })
}

// immediate: a value for a data register, or a verdict (with a chain for jump/goto).
fn emit_immediate(w: &mut Writer, dreg: u32, data: &ImmData) {
    w.put_u32(NFTA_IMMEDIATE_DREG, dreg);
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

fn parse_immediate(f: &Fields<'_>) -> Result<Expr, Malformed> {
    let dreg = f.u32(NFTA_IMMEDIATE_DREG)?;
    let nest = f
        .find(NFTA_IMMEDIATE_DATA)
        .ok_or_else(|| Malformed("immediate without data".into()))?;
    let mut data = None;
    for inner in nest.nested() {
        let inner = inner?;
        match inner.ty {
            NFTA_DATA_VALUE => data = Some(ImmData::Value(inner.data.to_vec())),
            NFTA_DATA_VERDICT => data = Some(parse_verdict(&inner)?),
            _ => {}
        }
    }
    Ok(Expr::Immediate {
        dreg,
        data: data.ok_or_else(|| Malformed("immediate without data".into()))?,
    })
}

/// A verdict (`NFTA_DATA_VERDICT`'s nest): its code and chain.
pub(crate) fn parse_verdict(nest: &Attr<'_>) -> Result<ImmData, Malformed> {
    let mut code = None;
    let mut chain = None;
    for v in nest.nested() {
        let v = v?;
        match v.ty {
            NFTA_VERDICT_CODE => code = Some(v.u32()? as i32),
            // A chain name is someone else's choice: never fail on it.
            NFTA_VERDICT_CHAIN => chain = Some(v.str_lossy().into_owned()),
            _ => {}
        }
    }
    let code = code.ok_or_else(|| Malformed("verdict without code".into()))?;
    Ok(ImmData::Verdict(code, chain))
}

// counter: 64-bit values (absent means zero).
fn emit_counter(w: &mut Writer, packets: u64, bytes: u64) {
    w.put_u64(NFTA_COUNTER_BYTES, bytes);
    w.put_u64(NFTA_COUNTER_PACKETS, packets);
}

fn parse_counter(f: &Fields<'_>) -> Result<Expr, Malformed> {
    Ok(Expr::Counter {
        bytes: f.u64_or_0(NFTA_COUNTER_BYTES)?,
        packets: f.u64_or_0(NFTA_COUNTER_PACKETS)?,
    })
}

// masq: all optional.
fn emit_masq(w: &mut Writer, flags: u32, reg_min: Option<u32>, reg_max: Option<u32>) {
    if flags != 0 {
        w.put_u32(NFTA_MASQ_FLAGS, flags);
    }
    if let Some(r) = reg_min {
        w.put_u32(NFTA_MASQ_REG_PROTO_MIN, r);
    }
    if let Some(r) = reg_max {
        w.put_u32(NFTA_MASQ_REG_PROTO_MAX, r);
    }
}

fn parse_masq(f: &Fields<'_>) -> Result<Expr, Malformed> {
    Ok(Expr::Masq {
        flags: f.opt_u32(NFTA_MASQ_FLAGS)?.unwrap_or(0),
        reg_min: f.opt_u32(NFTA_MASQ_REG_PROTO_MIN)?,
        reg_max: f.opt_u32(NFTA_MASQ_REG_PROTO_MAX)?,
    })
}

// nat: type and family, then optional registers and flags.
const NAT_REGS: [u16; 4] = [
    NFTA_NAT_REG_ADDR_MIN,
    NFTA_NAT_REG_ADDR_MAX,
    NFTA_NAT_REG_PROTO_MIN,
    NFTA_NAT_REG_PROTO_MAX,
];

fn emit_nat(w: &mut Writer, kind_family: [u32; 2], regs: [Option<u32>; 4], flags: u32) {
    put_u32s(w, &[NFTA_NAT_TYPE, NFTA_NAT_FAMILY], &kind_family);
    for (ty, reg) in NAT_REGS.iter().zip(regs) {
        if let Some(r) = reg {
            w.put_u32(*ty, r);
        }
    }
    if flags != 0 {
        w.put_u32(NFTA_NAT_FLAGS, flags);
    }
}

/// `NF_NAT_RANGE_MAP_IPS`: the kernel sets it itself when an address register is given, and
/// reports it back; nft neither sends nor shows it.
const NAT_MAP_IPS: u32 = 0x1;

fn parse_nat(f: &Fields<'_>) -> Result<Expr, Malformed> {
    let reg_addr_min = f.opt_u32(NFTA_NAT_REG_ADDR_MIN)?;
    let mut flags = f.opt_u32(NFTA_NAT_FLAGS)?.unwrap_or(0);
    if reg_addr_min.is_some() {
        flags &= !NAT_MAP_IPS;
    }
    // Without a last address the kernel uses the first one's register, and says so.
    let reg_addr_max = f
        .opt_u32(NFTA_NAT_REG_ADDR_MAX)?
        .filter(|r| Some(*r) != reg_addr_min);
    Ok(Expr::Nat {
        kind: f.u32(NFTA_NAT_TYPE)?,
        family: f.u32(NFTA_NAT_FAMILY)?,
        reg_addr_min,
        reg_addr_max,
        reg_proto_min: f.opt_u32(NFTA_NAT_REG_PROTO_MIN)?,
        reg_proto_max: f.opt_u32(NFTA_NAT_REG_PROTO_MAX)?,
        flags,
    })
}

// numgen: the offset is optional (0 when absent).
const NUMGEN: [u16; 3] = [NFTA_NG_DREG, NFTA_NG_MODULUS, NFTA_NG_TYPE];

fn emit_numgen(w: &mut Writer, values: [u32; 3], offset: u32) {
    put_u32s(w, &NUMGEN, &values);
    if offset != 0 {
        w.put_u32(NFTA_NG_OFFSET, offset);
    }
}

fn parse_numgen(f: &Fields<'_>) -> Result<Expr, Malformed> {
    Ok(Expr::Numgen {
        dreg: f.u32(NFTA_NG_DREG)?,
        modulus: f.u32(NFTA_NG_MODULUS)?,
        kind: f.u32(NFTA_NG_TYPE)?,
        offset: f.opt_u32(NFTA_NG_OFFSET)?.unwrap_or(0),
    })
}

// byteorder
const BYTEORDER: [u16; 5] = [
    NFTA_BYTEORDER_SREG,
    NFTA_BYTEORDER_DREG,
    NFTA_BYTEORDER_OP,
    NFTA_BYTEORDER_LEN,
    NFTA_BYTEORDER_SIZE,
];

fn emit_byteorder(w: &mut Writer, values: [u32; 5]) {
    put_u32s(w, &BYTEORDER, &values);
}

fn parse_byteorder(f: &Fields<'_>) -> Result<Expr, Malformed> {
    Ok(Expr::Byteorder {
        sreg: f.u32(NFTA_BYTEORDER_SREG)?,
        dreg: f.u32(NFTA_BYTEORDER_DREG)?,
        op: f.u32(NFTA_BYTEORDER_OP)?,
        len: f.u32(NFTA_BYTEORDER_LEN)?,
        size: f.u32(NFTA_BYTEORDER_SIZE)?,
    })
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
