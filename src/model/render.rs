//! `nft list` syntax for a [`Table`]: what `--dry-run` and `--dump` print.
//!
//! The output is meant to be read by people and to be accepted by `nft -f`. Two deliberate
//! departures from `nft list`: set elements are printed one per line (a 100,000-prefix set
//! stays diffable), and table flags are printed as a comment, because nft 1.0.6 prints
//! `flags owner` for an owned table but cannot parse it back.

use std::fmt::{self, Display, Formatter, Write as _};

use super::{
    BaseChain, Chain, Family, NAT_PERSISTENT, NAT_PROTO_RANDOM, NAT_PROTO_RANDOM_FULLY, Rule, Set,
    Stmt, Table, TableFlags,
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

impl Display for Table {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        writeln!(f, "table inet {} {{", Name(&self.name))?;
        if self.flags.0 != 0 {
            // A comment: nft 1.0.6 cannot parse `flags owner` / `flags persist` back.
            writeln!(f, "\t# flags {}", self.flags)?;
        }
        for what in &self.foreign {
            writeln!(f, "\t# not understood by nft-masq-agent: {what}")?;
        }
        let mut first = true;
        for set in &self.sets {
            if !first {
                writeln!(f)?;
            }
            first = false;
            write!(f, "{set}")?;
        }
        for chain in &self.chains {
            if !first {
                writeln!(f)?;
            }
            first = false;
            write!(f, "{chain}")?;
        }
        writeln!(f, "}}")
    }
}

impl Display for Set {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
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
            for p in &self.prefixes {
                let _ = writeln!(body, "\t\t\t{p},");
            }
            body.push_str("\t\t}\n");
            f.write_str(&body)?;
        }
        writeln!(f, "\t}}")
    }
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
            let off = self.priority - 100;
            match off {
                0 => f.write_str(" priority srcnat")?,
                o if o > 0 => write!(f, " priority srcnat + {o}")?,
                o => write!(f, " priority srcnat - {}", -o)?,
            }
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
                let proto = match family {
                    Family::V4 => "ip",
                    Family::V6 => "ip6",
                };
                write!(f, "{proto} daddr @{}", Name(set))
            }
            Stmt::NumgenBelow { modulus, below } => {
                write!(f, "numgen random mod {modulus} < {below}")
            }
            Stmt::Counter { packets, bytes } => {
                write!(f, "counter packets {packets} bytes {bytes}")
            }
            Stmt::Masquerade { flags, ports } => {
                f.write_str("masquerade")?;
                if let Some((a, b)) = ports {
                    if a == b {
                        write!(f, " to :{a}")?;
                    } else {
                        write!(f, " to :{a}-{b}")?;
                    }
                }
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
                if !names.is_empty() {
                    write!(f, " {}", names.join(","))?;
                }
                Ok(())
            }
            Stmt::Return => f.write_str("return"),
            Stmt::Unknown(what) => write!(f, "[{what}]"),
        }
    }
}
