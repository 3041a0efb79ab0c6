//! `nft list` syntax for a [`Table`]: what `--dry-run` and `--dump` print.
//!
//! The output is meant to be read by people and to be accepted by `nft -f`. Two deliberate
//! departures from `nft list`: set elements are printed one per line (a 100,000-prefix set
//! stays diffable), and table flags are printed as a comment, because nft 1.0.6 prints
//! `flags owner` for an owned table but cannot parse it back.

use std::fmt::{self, Display, Formatter, Write as _};

use std::net::IpAddr;

use crate::addr::prefix::{Span, span_to_prefixes};
use crate::config::priority::ChainPriority;

use super::{
    Annotations, BaseChain, Chain, Dispatch, Family, Map, NAT_PERSISTENT, NAT_PROTO_RANDOM,
    NAT_PROTO_RANDOM_FULLY, NameSet, Rule, Set, Stmt, Table, TableFlags,
};

/// A name as nft wants it: bare when it is a plain identifier, quoted otherwise.
struct Name<'a>(&'a str);

impl Display for Name<'_> {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let plain = self
            .0
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic())
            && self
                .0
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-./".contains(c));
        if plain {
            f.write_str(self.0)
        } else {
            write!(f, "\"{}\"", self.0.replace('"', "'"))
        }
    }
}

impl Display for TableFlags {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let mut names = Vec::new();
        if self.has(TableFlags::DORMANT) {
            names.push("dormant".to_string());
        }
        if self.has(TableFlags::OWNER) {
            names.push("owner".to_string());
        }
        if self.has(TableFlags::PERSIST) {
            names.push("persist".to_string());
        }
        let rest = self.0 & !(TableFlags::DORMANT | TableFlags::OWNER | TableFlags::PERSIST);
        if rest != 0 {
            names.push(format!("0x{rest:x}"));
        }
        f.write_str(&names.join(","))
    }
}

impl Table {
    /// The `nft list` rendering, with a `#` comment per set element from `notes`.
    pub fn render(&self, notes: Option<&Annotations>) -> String {
        Rendered { table: self, notes }.to_string()
    }
}

/// A table with optional element comments.
struct Rendered<'a> {
    table: &'a Table,
    notes: Option<&'a Annotations>,
}

impl Display for Table {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        Rendered {
            table: self,
            notes: None,
        }
        .fmt(f)
    }
}

impl Display for Rendered<'_> {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let (t, notes) = (self.table, self.notes);
        writeln!(f, "table inet {} {{", Name(&t.name))?;
        if t.flags.0 != 0 {
            // A comment: nft 1.0.6 cannot parse `flags owner` / `flags persist` back.
            writeln!(f, "\t# flags {}", t.flags)?;
        }
        for what in &t.foreign {
            writeln!(f, "\t# not understood by nft-masq-agent: {what}")?;
        }
        let mut first = true;
        for set in &t.sets {
            if !first {
                writeln!(f)?;
            }
            first = false;
            set.write(f, notes)?;
        }
        for set in &t.name_sets {
            if !first {
                writeln!(f)?;
            }
            first = false;
            set.write(f, notes)?;
        }
        for map in &t.maps {
            if !first {
                writeln!(f)?;
            }
            first = false;
            map.write(f, notes)?;
        }
        for map in &t.dispatch {
            if !first {
                writeln!(f)?;
            }
            first = false;
            map.write(f)?;
        }
        for chain in &t.chains {
            if !first {
                writeln!(f)?;
            }
            first = false;
            write!(f, "{chain}")?;
        }
        writeln!(f, "}}")
    }
}

/// One element line, with its comment if there is one.
fn element(body: &mut String, value: &dyn Display, note: Option<&str>) {
    match note {
        Some(n) => {
            let _ = writeln!(body, "\t\t\t{value},\t# {n}");
        }
        None => {
            let _ = writeln!(body, "\t\t\t{value},");
        }
    }
}

impl Set {
    fn write(&self, f: &mut Formatter<'_>, notes: Option<&Annotations>) -> fmt::Result {
        let key = match self.family {
            Family::V4 => "ipv4_addr",
            Family::V6 => "ipv6_addr",
        };
        writeln!(f, "\tset {} {{", Name(&self.name))?;
        writeln!(f, "\t\ttype {key}")?;
        writeln!(f, "\t\tflags interval")?;
        if !self.prefixes.is_empty() {
            // One element per line: long sets stay readable and diffable.
            let mut body = String::with_capacity(self.prefixes.len() * 20);
            body.push_str("\t\telements = {\n");
            for (i, p) in self.prefixes.iter().enumerate() {
                element(&mut body, p, notes.and_then(|n| n.of(&self.name, i)));
            }
            body.push_str("\t\t}\n");
            f.write_str(&body)?;
        }
        writeln!(f, "\t}}")
    }
}

/// A span of addresses as nft writes it: a prefix when it is one, else `first-last`.
struct SpanText(Family, Span);

impl Display for SpanText {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let SpanText(family, span) = *self;
        let mut nets = Vec::new();
        span_to_prefixes(span, family.bits(), &mut nets);
        if let [one] = nets.as_slice() {
            return write!(f, "{one}");
        }
        let addr = |v: u128| match family {
            Family::V4 => IpAddr::from(std::net::Ipv4Addr::from(v as u32)),
            Family::V6 => IpAddr::from(std::net::Ipv6Addr::from(v)),
        };
        write!(f, "{}-{}", addr(span.lo), addr(span.hi))
    }
}

impl Map {
    fn write(&self, f: &mut Formatter<'_>, notes: Option<&Annotations>) -> fmt::Result {
        let key = match self.family {
            Family::V4 => "ipv4_addr",
            Family::V6 => "ipv6_addr",
        };
        writeln!(f, "\tmap {} {{", Name(&self.name))?;
        writeln!(f, "\t\ttype {key} : {key}")?;
        writeln!(f, "\t\tflags interval")?;
        if !self.entries.is_empty() {
            let mut body = String::with_capacity(self.entries.len() * 40);
            body.push_str("\t\telements = {\n");
            for (i, e) in self.entries.iter().enumerate() {
                let text = format!("{} : {}", SpanText(self.family, e.span), e.to);
                element(&mut body, &text, notes.and_then(|n| n.of(&self.name, i)));
            }
            body.push_str("\t\t}\n");
            f.write_str(&body)?;
        }
        writeln!(f, "\t}}")
    }
}

impl Dispatch {
    fn write(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let key = match self.family {
            Family::V4 => "ipv4_addr",
            Family::V6 => "ipv6_addr",
        };
        writeln!(f, "\tmap {} {{", Name(&self.name))?;
        writeln!(f, "\t\ttype {key} : verdict")?;
        writeln!(f, "\t\tflags interval")?;
        if !self.blocks.is_empty() {
            let mut body = String::with_capacity(self.blocks.len() * 60);
            body.push_str("\t\telements = {\n");
            for block in &self.blocks {
                let text = format!("{block} : jump {}", Name(&self.chain(block)));
                element(&mut body, &text, None);
            }
            body.push_str("\t\t}\n");
            f.write_str(&body)?;
        }
        writeln!(f, "\t}}")
    }
}

impl NameSet {
    fn write(&self, f: &mut Formatter<'_>, notes: Option<&Annotations>) -> fmt::Result {
        writeln!(f, "\tset {} {{", Name(&self.name))?;
        writeln!(f, "\t\ttype ifname")?;
        writeln!(f, "\t\tflags interval")?;
        if !self.names.is_empty() {
            let mut body = String::from("\t\telements = {\n");
            for (i, n) in self.names.iter().enumerate() {
                // Names never hold a quote (the kernel's rules and ours refuse it).
                let quoted = format!("\"{n}\"");
                element(&mut body, &quoted, notes.and_then(|a| a.of(&self.name, i)));
            }
            body.push_str("\t\t}\n");
            f.write_str(&body)?;
        }
        writeln!(f, "\t}}")
    }
}

fn proto(family: Family) -> &'static str {
    match family {
        Family::V4 => "ip",
        Family::V6 => "ip6",
    }
}

/// nft's NAT flag words, space-prefixed (`fully-random`, ...), or nothing.
fn nat_flags(flags: u32) -> String {
    let mut names = Vec::new();
    if flags & NAT_PROTO_RANDOM != 0 {
        names.push("random");
    }
    if flags & NAT_PROTO_RANDOM_FULLY != 0 {
        names.push("fully-random");
    }
    if flags & NAT_PERSISTENT != 0 {
        names.push("persistent");
    }
    if names.is_empty() {
        String::new()
    } else {
        format!(" {}", names.join(","))
    }
}

fn ports(p: Option<(u16, u16)>) -> String {
    match p {
        Some((a, b)) if a == b => format!(":{a}"),
        Some((a, b)) => format!(":{a}-{b}"),
        None => String::new(),
    }
}

/// `snat` targets as nft writes them: IPv6 addresses in brackets when a port follows.
fn snat_to(first: IpAddr, last: IpAddr, p: Option<(u16, u16)>) -> String {
    let addr = |a: IpAddr| match (a, p) {
        (IpAddr::V6(a), Some(_)) => format!("[{a}]"),
        _ => a.to_string(),
    };
    let range = if first == last {
        addr(first)
    } else {
        format!("{}-{}", addr(first), addr(last))
    };
    format!("{range}{}", ports(p))
}

fn hook_name(hook: u32) -> Option<&'static str> {
    Some(match hook {
        0 => "prerouting",
        1 => "input",
        2 => "forward",
        3 => "output",
        4 => "postrouting",
        _ => return None,
    })
}

impl Display for BaseChain {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let hook = hook_name(self.hook);
        write!(f, "type {} hook ", self.kind)?;
        match hook {
            Some(h) => f.write_str(h)?,
            None => write!(f, "{}", self.hook)?,
        }
        // nft's symbolic priority for nat at postrouting is `srcnat` (100).
        if self.kind == "nat" && hook == Some("postrouting") {
            write!(f, " priority {}", ChainPriority(self.priority))?;
        } else {
            write!(f, " priority {}", self.priority)?;
        }
        let policy = match self.policy {
            1 => "accept",
            0 => "drop",
            _ => "accept",
        };
        write!(f, "; policy {policy};")
    }
}

impl Display for Chain {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        writeln!(f, "\tchain {} {{", Name(&self.name))?;
        if let Some(base) = &self.base {
            writeln!(f, "\t\t{base}")?;
        }
        for rule in &self.rules {
            writeln!(f, "\t\t{rule}")?;
        }
        writeln!(f, "\t}}")
    }
}

impl Display for Rule {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let unknown = self.stmts.iter().any(|s| matches!(s, Stmt::Unknown(_)));
        if unknown {
            // Shown, never dropped: but as a comment, since replaying a partial rule with
            // `nft -f` would install something other than what is in the kernel.
            f.write_str("# rule not understood by nft-masq-agent:")?;
        }
        for (i, stmt) in self.stmts.iter().enumerate() {
            if i > 0 || unknown {
                f.write_str(" ")?;
            }
            write!(f, "{stmt}")?;
        }
        Ok(())
    }
}

fn l4proto_name(p: u8) -> Option<&'static str> {
    Some(match p {
        1 => "icmp",
        6 => "tcp",
        17 => "udp",
        58 => "ipv6-icmp",
        132 => "sctp",
        _ => return None,
    })
}

impl Display for Stmt {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Stmt::Nfproto(Family::V4) => f.write_str("meta nfproto ipv4"),
            Stmt::Nfproto(Family::V6) => f.write_str("meta nfproto ipv6"),
            Stmt::L4proto(p) => match l4proto_name(*p) {
                Some(n) => write!(f, "meta l4proto {n}"),
                None => write!(f, "meta l4proto {p}"),
            },
            Stmt::FibDaddrLocal => f.write_str("fib daddr type local"),
            Stmt::DaddrInSet { family, set } => {
                write!(f, "{} daddr @{}", proto(*family), Name(set))
            }
            Stmt::SaddrNotInSet { family, set } => {
                write!(f, "{} saddr != @{}", proto(*family), Name(set))
            }
            Stmt::DaddrVmap { family, map } => {
                write!(f, "{} daddr vmap @{}", proto(*family), Name(map))
            }
            Stmt::OifnameNotInSet { set } => write!(f, "oifname != @{}", Name(set)),
            Stmt::NumgenBelow { modulus, below } => {
                write!(f, "numgen random mod {modulus} < {below}")
            }
            Stmt::Counter { packets, bytes } => {
                write!(f, "counter packets {packets} bytes {bytes}")
            }
            Stmt::Masquerade { flags, ports: p } => {
                let to = match p {
                    Some(_) => format!(" to {}", ports(*p)),
                    None => String::new(),
                };
                write!(f, "masquerade{to}{}", nat_flags(*flags))
            }
            Stmt::Snat {
                family,
                first,
                last,
                flags,
                ports: p,
            } => write!(
                f,
                "snat {} to {}{}",
                proto(*family),
                snat_to(*first, *last, *p),
                nat_flags(*flags)
            ),
            Stmt::SnatMap {
                family,
                map,
                packets,
                bytes,
                flags,
                ports: p,
            } => write!(
                f,
                "counter packets {packets} bytes {bytes} snat {} to {} saddr map @{}{}{}",
                proto(*family),
                proto(*family),
                Name(map),
                ports(*p),
                nat_flags(*flags)
            ),
            Stmt::Return => f.write_str("return"),
            Stmt::Accept => f.write_str("accept"),
            Stmt::Jump { chain } => write!(f, "jump {}", Name(chain)),
            Stmt::Unknown(what) => write!(f, "[{what}]"),
        }
    }
}
