//! Which rules ip-masq-agent writes, recognised by their shape as iptables-nft encodes them.
//!
//! ip-masq-agent (every release since it took that name in 2017, and ip-masq-agent-v2) writes
//! three kinds of rule, each with its own fixed comment:
//!
//! - in `nat POSTROUTING`: `-m comment --comment C -m addrtype ! --dst-type LOCAL -j CHAIN`
//!   (the jump; its comment names the chain and, written through `iptables -A` with the
//!   quotes inside the argument, may carry literal double quotes);
//! - in CHAIN: `-d CIDR -m comment --comment C -j RETURN` (one per non-masquerade range; no
//!   `-d` for 0.0.0.0/0, which iptables leaves out; before May 2017 also with the addrtype
//!   match);
//! - in CHAIN: `-m comment --comment C -j MASQUERADE [--random-fully]` last, and since
//!   `--to-ports` (2024) before it, per protocol, `-p P [-m statistic --mode random
//!   --probability X] -j MASQUERADE [--random-fully] --to-ports A-B`.
//!
//! iptables-nft encodes `-d` and `-p` natively (payload or meta load, optional bitwise mask,
//! cmp), adds a `counter` to every rule, and keeps `-m comment`, `-m addrtype`,
//! `-m statistic` and `-j MASQUERADE` as x_tables matches and targets (nft_compat). A rule of
//! the chain is ip-masq-agent's when it has exactly that shape and one of ip-masq-agent's
//! comments; anything else (another match, another target, another comment or none) is
//! someone else's, and the takeover is refused.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::dump::NatRule;
use crate::kernel::nft::expr::{Expr, ImmData};
use crate::kernel::nft::uapi::*;

/// The comment of ip-masq-agent's `-j RETURN` rules (since May 2017).
pub const RETURN_COMMENT: &str = "ip-masq-agent: local traffic is not subject to MASQUERADE";
/// The same rules' comment in the first releases.
const RETURN_COMMENT_2017: &str =
    "ip-masq-agent: cluster-local traffic should not be subject to MASQUERADE";
/// The comment of ip-masq-agent's `-j MASQUERADE` rules (since May 2017).
pub const MASQ_COMMENT: &str =
    "ip-masq-agent: outbound traffic is subject to MASQUERADE (must be last in chain)";
/// The same rules' comment in the first releases.
const MASQ_COMMENT_2017: &str = "ip-masq-agent: outbound traffic should be subject to \
                                 MASQUERADE (this match must come after cluster-local CIDR \
                                 matches)";

/// The comment of ip-masq-agent's jump from `nat POSTROUTING` to `chain`.
pub fn jump_comment(chain: &str) -> String {
    format!(
        "ip-masq-agent: ensure nat POSTROUTING directs all non-LOCAL destination traffic to \
         our custom {chain} chain"
    )
}

/// `NF_NAT_RANGE_PROTO_SPECIFIED`: the target has a port range (`--to-ports`).
const NAT_PROTO_SPECIFIED: u32 = 0x2;
/// `NF_NAT_RANGE_PROTO_RANDOM_FULLY` (`--random-fully`).
const NAT_RANDOM_FULLY: u32 = 0x10;
/// `XT_ADDRTYPE_LOCAL`: a type is `1 << RTN_*`, and `RTN_LOCAL` is 2.
const ADDRTYPE_LOCAL: u16 = 1 << 2;
/// `XT_ADDRTYPE_INVERT_DEST` (revision 1's flags).
const ADDRTYPE_INVERT_DEST: u32 = 0x2;

/// A rule of ip-masq-agent's chain, as ip-masq-agent writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Written {
    /// `-d CIDR ... -j RETURN`: a non-masquerade range (`None`: every destination).
    Return {
        /// The range, `10.0.0.0/8`.
        destination: Option<String>,
    },
    /// `... -j MASQUERADE`.
    Masquerade {
        /// `--random-fully`.
        random_fully: bool,
        /// `-p` (tcp 6, udp 17, sctp 132) with `--to-ports`.
        protocol: Option<u8>,
        /// `--to-ports A-B`.
        ports: Option<(u16, u16)>,
    },
}

/// A prefix match on an address field, as decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Prefix {
    /// `-s` (false) or `-d` (true).
    dst: bool,
    /// `!` (cmp neq).
    negated: bool,
    text: String,
}

/// A register loaded and not yet compared.
#[derive(Debug, Clone)]
struct Load {
    reg: u32,
    what: Field,
    mask: Option<Vec<u8>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    /// Source (false) or destination (true) address, `len` bytes of it.
    Addr { dst: bool, len: u32 },
    /// The layer 4 protocol (`meta l4proto`, or the header's protocol byte).
    L4proto,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    Return,
    Jump(String),
    Goto(String),
    Masquerade {
        flags: u32,
        ports: Option<(u16, u16)>,
    },
}

/// What one rule says, expression by expression, in the terms ip-masq-agent's rules need.
#[derive(Debug, Clone, Default)]
struct Facts {
    prefixes: Vec<Prefix>,
    comments: Vec<String>,
    addrtype_not_local: bool,
    protocols: Vec<u8>,
    statistic: bool,
    verdicts: Vec<Verdict>,
    /// What ip-masq-agent never writes, described.
    other: Vec<String>,
    /// The whole rule in `iptables-save` terms, for logs.
    words: Vec<String>,
}

/// A rule in `iptables-save` terms (`-d 10.0.0.0/8 -m comment --comment "…" -j RETURN`), with
/// `[nft: …]` for expressions that have no iptables spelling; counters are left out.
pub fn describe(family: u8, rule: &NatRule) -> String {
    let f = facts(family, rule);
    if f.words.is_empty() {
        "(no match, no verdict)".into()
    } else {
        f.words.join(" ")
    }
}

/// Whether `rule` is a rule ip-masq-agent writes into its chain: `Ok` with what it does, or
/// `Err` with why not.
pub fn written(family: u8, rule: &NatRule) -> Result<Written, String> {
    let f = facts(family, rule);
    if let Some(first) = f.other.first() {
        return Err(format!("ip-masq-agent writes no {first}"));
    }
    let [verdict] = f.verdicts.as_slice() else {
        return Err("not one verdict".into());
    };
    if f.prefixes.iter().any(|p| !p.dst || p.negated) || f.prefixes.len() > 1 {
        return Err("a source or negated address match".into());
    }
    let [comment] = f.comments.as_slice() else {
        return Err(if f.comments.is_empty() {
            "no ip-masq-agent comment".into()
        } else {
            "more than one comment".into()
        });
    };
    let comment = unquoted(comment);
    if f.protocols.len() > 1 {
        return Err("more than one protocol match".into());
    }
    let protocol = f.protocols.first().copied();
    match verdict {
        Verdict::Return => {
            if comment != RETURN_COMMENT && comment != RETURN_COMMENT_2017 {
                return Err(format!("RETURN with comment {comment:?}"));
            }
            if protocol.is_some() || f.statistic {
                return Err("a protocol or statistic match on a RETURN rule".into());
            }
            Ok(Written::Return {
                destination: f.prefixes.first().map(|p| p.text.clone()),
            })
        }
        Verdict::Masquerade { flags, ports } => {
            if comment != MASQ_COMMENT && comment != MASQ_COMMENT_2017 {
                return Err(format!("MASQUERADE with comment {comment:?}"));
            }
            if !f.prefixes.is_empty() {
                return Err("an address match on the MASQUERADE rule".into());
            }
            if flags & !(NAT_PROTO_SPECIFIED | NAT_RANDOM_FULLY) != 0 {
                return Err(format!("MASQUERADE flags 0x{flags:x}"));
            }
            // --to-ports only ever comes with -p (and the statistic match only with both).
            if ports.is_some() != protocol.is_some() || (f.statistic && protocol.is_none()) {
                return Err("ports, protocol and statistic not as ip-masq-agent pairs them".into());
            }
            if protocol.is_some_and(|p| ![6, 17, 132].contains(&p)) {
                return Err("a protocol other than tcp, udp, sctp".into());
            }
            Ok(Written::Masquerade {
                random_fully: flags & NAT_RANDOM_FULLY != 0,
                protocol,
                ports: *ports,
            })
        }
        Verdict::Jump(c) | Verdict::Goto(c) => Err(format!("a jump to {c}")),
    }
}

/// The chain `rule` jumps or goes to, if its verdict is one.
pub fn jump_target(rule: &NatRule) -> Option<&str> {
    rule.exprs.iter().find_map(|e| match e {
        Expr::Immediate {
            dreg: NFT_REG_VERDICT,
            data: ImmData::Verdict(NFT_JUMP | NFT_GOTO, Some(c)),
        } => Some(c.as_str()),
        _ => None,
    })
}

/// Whether `rule` is ip-masq-agent's own jump to `chain` (its comment, `addrtype ! LOCAL`,
/// nothing else).
pub fn own_jump(family: u8, rule: &NatRule, chain: &str) -> bool {
    let f = facts(family, rule);
    f.other.is_empty()
        && f.prefixes.is_empty()
        && f.protocols.is_empty()
        && !f.statistic
        && f.addrtype_not_local
        && f.verdicts == [Verdict::Jump(chain.to_string())]
        && matches!(f.comments.as_slice(), [c] if unquoted(c) == jump_comment(chain))
}

/// A comment without one pair of enclosing double quotes: ip-masq-agent passes its jump's
/// comment to `iptables -A` with the quotes inside the argument, so they are part of it.
fn unquoted(c: &str) -> &str {
    c.strip_prefix('"')
        .and_then(|c| c.strip_suffix('"'))
        .unwrap_or(c)
}

fn facts(family: u8, rule: &NatRule) -> Facts {
    let mut f = Facts::default();
    if let Some(c) = &rule.comment {
        f.comments.push(c.clone());
        f.words.push(format!("-m comment --comment {c:?}"));
    }
    let mut load: Option<Load> = None;
    for e in &rule.exprs {
        // A load must be followed by its comparison (a mask may come between).
        if let Some(l) = &mut load {
            match e {
                Expr::Bitwise {
                    sreg,
                    dreg,
                    mask,
                    xor,
                    ..
                } if *sreg == l.reg
                    && *dreg == l.reg
                    && l.mask.is_none()
                    && matches!(l.what, Field::Addr { .. })
                    && xor.iter().all(|b| *b == 0) =>
                {
                    l.mask = Some(mask.clone());
                    continue;
                }
                Expr::Cmp { sreg, op, data }
                    if *sreg == l.reg && (*op == NFT_CMP_EQ || *op == NFT_CMP_NEQ) =>
                {
                    let l = load.take().expect("a load is pending");
                    compared(&mut f, family, &l, *op == NFT_CMP_NEQ, data);
                    continue;
                }
                _ => {
                    let l = load.take().expect("a load is pending");
                    unknown(&mut f, format!("load into register {} not compared", l.reg));
                }
            }
        }
        match e {
            Expr::Counter { .. } => {}
            Expr::Payload {
                base: NFT_PAYLOAD_NETWORK_HEADER,
                offset,
                len,
                dreg,
            } => match field(family, *offset, *len) {
                Some(what) => {
                    load = Some(Load {
                        reg: *dreg,
                        what,
                        mask: None,
                    })
                }
                None => unknown(&mut f, e.describe()),
            },
            Expr::Meta {
                key: NFT_META_L4PROTO,
                dreg,
            } => {
                load = Some(Load {
                    reg: *dreg,
                    what: Field::L4proto,
                    mask: None,
                })
            }
            Expr::Compat {
                target: false,
                name,
                rev,
                info,
            } => compat_match(&mut f, name, *rev, info),
            Expr::Compat {
                target: true,
                name,
                info,
                ..
            } if name == "MASQUERADE" => match masquerade(family, info) {
                Some((flags, ports)) => {
                    let mut w = "-j MASQUERADE".to_string();
                    if let Some((a, b)) = ports {
                        w.push_str(&format!(" --to-ports {a}-{b}"));
                    }
                    if flags & NAT_RANDOM_FULLY != 0 {
                        w.push_str(" --random-fully");
                    }
                    f.words.push(w);
                    f.verdicts.push(Verdict::Masquerade { flags, ports });
                }
                None => unknown(&mut f, "MASQUERADE target of this size".into()),
            },
            Expr::Compat {
                target: true, name, ..
            } => alien(&mut f, format!("-j {name}")),
            Expr::Immediate {
                dreg: NFT_REG_VERDICT,
                data: ImmData::Verdict(code, chain),
            } => match (*code, chain) {
                (NFT_RETURN, _) => {
                    f.words.push("-j RETURN".into());
                    f.verdicts.push(Verdict::Return);
                }
                (NFT_JUMP, Some(c)) => {
                    f.words.push(format!("-j {c}"));
                    f.verdicts.push(Verdict::Jump(c.clone()));
                }
                (NFT_GOTO, Some(c)) => {
                    f.words.push(format!("-g {c}"));
                    f.verdicts.push(Verdict::Goto(c.clone()));
                }
                _ => unknown(&mut f, e.describe()),
            },
            _ => unknown(&mut f, e.describe()),
        }
    }
    if let Some(l) = load {
        unknown(&mut f, format!("load into register {} not compared", l.reg));
    }
    f
}

/// Something ip-masq-agent never writes: noted, and shown in the description.
fn unknown(f: &mut Facts, what: String) {
    f.words.push(format!("[nft: {what}]"));
    f.other.push(what);
}

/// An x_tables match or target ip-masq-agent does not use: shown by its iptables name.
fn alien(f: &mut Facts, word: String) {
    f.words.push(word.clone());
    f.other.push(word);
}

/// The network header field at `offset`, `len` bytes long, when it is one of ours.
fn field(family: u8, offset: u32, len: u32) -> Option<Field> {
    // (source offset, destination offset, address length, protocol byte offset)
    let (src, dst, alen, proto) = match family {
        NFPROTO_IPV4 => (12, 16, 4, 9),
        NFPROTO_IPV6 => (8, 24, 16, 6),
        _ => return None,
    };
    match offset {
        _ if offset == proto && len == 1 => Some(Field::L4proto),
        _ if (offset == src || offset == dst) && (1..=alen).contains(&len) => Some(Field::Addr {
            dst: offset == dst,
            len,
        }),
        _ => None,
    }
}

/// A load compared: a prefix match or a protocol match.
fn compared(f: &mut Facts, family: u8, load: &Load, negated: bool, data: &[u8]) {
    let bang = if negated { "! " } else { "" };
    match load.what {
        Field::L4proto => match data {
            [p] if !negated => {
                f.protocols.push(*p);
                f.words.push(format!("-p {}", protocol_name(*p)));
            }
            _ => unknown(f, format!("{bang}protocol 0x{}", hex(data))),
        },
        Field::Addr { dst, len } => match prefix(family, len, load.mask.as_deref(), data) {
            Some(text) => {
                f.words
                    .push(format!("{bang}{} {text}", if dst { "-d" } else { "-s" }));
                f.prefixes.push(Prefix { dst, negated, text });
            }
            None => unknown(f, format!("address match 0x{}", hex(data))),
        },
    }
}

/// `10.0.0.0/8` from the compared bytes and the mask: the mask must be leading ones, the data
/// zero past them.
fn prefix(family: u8, len: u32, mask: Option<&[u8]>, data: &[u8]) -> Option<String> {
    let len = len as usize;
    if data.len() != len || mask.is_some_and(|m| m.len() != len) {
        return None;
    }
    let mut bits = 0u32;
    let mut ended = false;
    for (i, d) in data.iter().enumerate() {
        let m = mask.map_or(0xff, |m| m[i]);
        if d & !m != 0 || (ended && m != 0) || m.leading_ones() + m.trailing_zeros() != 8 {
            return None;
        }
        bits += m.leading_ones();
        ended |= m != 0xff;
    }
    let addr: IpAddr = match family {
        NFPROTO_IPV4 => {
            let mut b = [0u8; 4];
            b[..len].copy_from_slice(data);
            Ipv4Addr::from(b).into()
        }
        _ => {
            let mut b = [0u8; 16];
            b[..len].copy_from_slice(data);
            Ipv6Addr::from(b).into()
        }
    };
    Some(format!("{addr}/{bits}"))
}

/// An x_tables match.
fn compat_match(f: &mut Facts, name: &str, rev: u32, info: &[u8]) {
    match name {
        "comment" => {
            // struct xt_comment_info { char comment[256]; }
            let text = info.split(|b| *b == 0).next().unwrap_or_default();
            let text = String::from_utf8_lossy(text).into_owned();
            f.words.push(format!("-m comment --comment {text:?}"));
            f.comments.push(text);
        }
        "addrtype" if addrtype_not_local(rev, info) => {
            f.words.push("-m addrtype ! --dst-type LOCAL".into());
            f.addrtype_not_local = true;
        }
        "statistic" if statistic_random(info) => {
            f.words.push("-m statistic --mode random".into());
            f.statistic = true;
        }
        _ => alien(f, format!("-m {name}")),
    }
}

fn u16_at(info: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(info.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(info: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(info.get(at..at + 4)?.try_into().ok()?))
}

/// `-m addrtype ! --dst-type LOCAL` and nothing more. Revision 1: `{ u16 source; u16 dest;
/// u32 flags; }`; revision 0: `{ u16 source; u16 dest; u32 invert_source; u32 invert_dest; }`
/// (host order).
fn addrtype_not_local(rev: u32, info: &[u8]) -> bool {
    let head = (u16_at(info, 0), u16_at(info, 2));
    match rev {
        1 => {
            head == (Some(0), Some(ADDRTYPE_LOCAL)) && u32_at(info, 4) == Some(ADDRTYPE_INVERT_DEST)
        }
        0 => {
            head == (Some(0), Some(ADDRTYPE_LOCAL))
                && u32_at(info, 4) == Some(0)
                && u32_at(info, 8) == Some(1)
        }
        _ => false,
    }
}

/// `-m statistic --mode random` (not inverted): `{ u16 mode; u16 flags; ... }`, mode 0.
fn statistic_random(info: &[u8]) -> bool {
    u16_at(info, 0) == Some(0) && u16_at(info, 2) == Some(0)
}

/// The MASQUERADE target's flags and port range (network order in the struct). IPv4:
/// `struct nf_nat_ipv4_multi_range_compat { u32 rangesize; { u32 flags; be32 min_ip, max_ip;
/// be16 min, max; } range[1]; }`; IPv6: `struct nf_nat_range { u32 flags; addr min, max
/// (16 bytes each); be16 min, max; }`.
fn masquerade(family: u8, info: &[u8]) -> Option<(u32, Option<(u16, u16)>)> {
    let (flags_at, ports_at) = match family {
        NFPROTO_IPV4 => (4, 16),
        _ => (0, 36),
    };
    if family == NFPROTO_IPV4 && u32_at(info, 0) != Some(1) {
        return None;
    }
    let flags = u32_at(info, flags_at)?;
    let port = |at: usize| -> Option<u16> {
        Some(u16::from_be_bytes(info.get(at..at + 2)?.try_into().ok()?))
    };
    let (min, max) = (port(ports_at)?, port(ports_at + 2)?);
    let ports = (flags & NAT_PROTO_SPECIFIED != 0).then_some((min, max));
    Some((flags, ports))
}

fn protocol_name(p: u8) -> String {
    match p {
        6 => "tcp".into(),
        17 => "udp".into(),
        132 => "sctp".into(),
        _ => p.to_string(),
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
