//! `--chain-priority`: where our NAT chain runs among the other NAT chains of the postrouting
//! hook, written as nft writes priorities (`srcnat + 10`, `srcnat - 10`, `srcnat`, or a
//! number).
//!
//! NAT chains at one hook run in priority order for a connection's first packet, and the
//! first that sets up a binding decides; a chain that only returns sets up none. So a lower
//! priority makes our *translation* win over a later chain's, while our *exemption* never
//! stops a later chain from translating (docs/design.md, "Chain priority").

use std::fmt;
use std::str::FromStr;

/// nft's `srcnat`: `NF_IP_PRI_NAT_SRC`, where iptables' nat POSTROUTING chains run.
pub const SRCNAT: i32 = 100;

/// The priority of our chain, as nf_tables stores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ChainPriority(pub i32);

impl ChainPriority {
    /// `srcnat + 10`: after iptables' nat POSTROUTING (kube-proxy's, a CNI's and
    /// ip-masq-agent's rules), where ip-masq-agent's appended jump sits.
    pub const DEFAULT: ChainPriority = ChainPriority(SRCNAT + 10);
    /// The lowest priority the kernel accepts for a NAT chain: it refuses one at or below
    /// `NF_IP_PRI_CONNTRACK` (-200) with EOPNOTSUPP, since NAT needs the conntrack entry.
    pub const MIN: ChainPriority = ChainPriority(-199);
    /// The highest accepted: as far above `srcnat` as [`ChainPriority::MIN`] is below it.
    /// NAT chains are ordered only among themselves, and those in use sit within a few
    /// units of `srcnat` (iptables at 100, kindnet at 90), so a value beyond this is a typo
    /// (`1100` for `110`) rather than a place.
    pub const MAX: ChainPriority = ChainPriority(2 * SRCNAT - Self::MIN.0);
}

impl Default for ChainPriority {
    fn default() -> Self {
        ChainPriority::DEFAULT
    }
}

impl fmt::Display for ChainPriority {
    /// As nft writes a NAT chain's priority at postrouting: `srcnat`, `srcnat + N`,
    /// `srcnat - N`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // In i64: a priority decoded from the kernel may be any i32.
        match i64::from(self.0) - i64::from(SRCNAT) {
            0 => f.write_str("srcnat"),
            o if o > 0 => write!(f, "srcnat + {o}"),
            o => write!(f, "srcnat - {}", -o),
        }
    }
}

/// Why a `--chain-priority` value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PriorityError {
    /// Neither `srcnat [± N]` nor a whole number.
    #[error(
        "{0:?} is not a priority: write it as nft does, `srcnat`, `srcnat + 10`, \
         `srcnat - 10` or a number such as 110"
    )]
    Syntax(String),
    /// Another symbolic name: those belong to other hooks or chain types.
    #[error(
        "{0:?}: our chain is a NAT chain at the postrouting hook, whose symbolic priority is \
         `srcnat` (write e.g. `srcnat - 10`)"
    )]
    OtherName(String),
    /// Outside [`ChainPriority::MIN`]..=[`ChainPriority::MAX`].
    #[error(
        "{given} is priority {value}, outside {min} ({lo}) to {max} ({hi}): the kernel refuses a \
         NAT chain at or below -200 (NF_IP_PRI_CONNTRACK), and NAT chains in use sit near \
         srcnat (iptables at srcnat, kindnet at srcnat - 10)",
        min = ChainPriority::MIN,
        lo = ChainPriority::MIN.0,
        max = ChainPriority::MAX,
        hi = ChainPriority::MAX.0
    )]
    OutOfRange {
        /// As given.
        given: String,
        /// Its value.
        value: i64,
    },
}

impl FromStr for ChainPriority {
    type Err = PriorityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let given = s.trim();
        let syntax = || PriorityError::Syntax(s.to_string());
        let value: i64 = if let Some(rest) = given.strip_prefix("srcnat") {
            let rest = rest.trim_start();
            if rest.is_empty() {
                i64::from(SRCNAT)
            } else if let Some(n) = rest.strip_prefix('+') {
                i64::from(SRCNAT) + unsigned(n, &syntax)?
            } else if let Some(n) = rest.strip_prefix('-') {
                i64::from(SRCNAT) - unsigned(n, &syntax)?
            } else {
                return Err(syntax());
            }
        } else if given.starts_with(|c: char| c.is_ascii_alphabetic()) {
            let name: String = given
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric())
                .collect();
            return Err(if OTHER_NAMES.contains(&name.as_str()) {
                PriorityError::OtherName(s.to_string())
            } else {
                syntax()
            });
        } else if let Some(n) = given.strip_prefix('-') {
            -unsigned(n, &syntax)?
        } else {
            unsigned(given.strip_prefix('+').unwrap_or(given), &syntax)?
        };
        if !(i64::from(ChainPriority::MIN.0)..=i64::from(ChainPriority::MAX.0)).contains(&value) {
            return Err(PriorityError::OutOfRange {
                given: given.to_string(),
                value,
            });
        }
        // In range, so it fits.
        Ok(ChainPriority(value as i32))
    }
}

/// A magnitude: digits only (no `0x`, no `_`, no sign), few enough that i64 holds them.
fn unsigned(t: &str, syntax: &dyn Fn() -> PriorityError) -> Result<i64, PriorityError> {
    let t = t.trim();
    if t.is_empty() || t.len() > 12 || !t.bytes().all(|b| b.is_ascii_digit()) {
        return Err(syntax());
    }
    t.parse().map_err(|_| syntax())
}

/// nft's other symbolic priorities (of other hooks and chain types).
const OTHER_NAMES: [&str; 8] = [
    "raw",
    "mangle",
    "dstnat",
    "filter",
    "security",
    "out",
    "bridge",
    "conntrack",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nft_forms_parse_and_render_as_nft_writes_them() {
        for (given, value, shown) in [
            ("srcnat + 10", 110, "srcnat + 10"),
            ("srcnat+10", 110, "srcnat + 10"),
            ("  srcnat -10 ", 90, "srcnat - 10"),
            ("srcnat - 10", 90, "srcnat - 10"),
            ("srcnat", 100, "srcnat"),
            ("110", 110, "srcnat + 10"),
            ("-10", -10, "srcnat - 110"),
            ("+5", 5, "srcnat - 95"),
            ("-199", -199, "srcnat - 299"),
            ("srcnat + 299", 399, "srcnat + 299"),
        ] {
            let p: ChainPriority = given.parse().unwrap_or_else(|e| panic!("{given}: {e}"));
            assert_eq!(p.0, value, "{given}");
            assert_eq!(p.to_string(), shown, "{given}");
            assert_eq!(shown.parse::<ChainPriority>(), Ok(p), "{shown} reads back");
        }
        assert_eq!(ChainPriority::default().to_string(), "srcnat + 10");
    }

    #[test]
    fn other_values_are_refused_saying_why() {
        let err = |s: &str| s.parse::<ChainPriority>().unwrap_err().to_string();
        for bad in [
            "",
            "srcnat +",
            "srcnat 10",
            "srcnat * 2",
            "srcnat + -3",
            "0x10",
            "1_0",
            "ten",
            "srcnat + 10 + 1",
        ] {
            assert!(
                err(bad).contains("is not a priority"),
                "{bad:?}: {}",
                err(bad)
            );
        }
        assert!(err("dstnat").contains("symbolic priority is `srcnat`"));
        assert!(err("filter + 10").contains("symbolic priority is `srcnat`"));
        let low = err("srcnat - 300");
        assert!(
            low.contains("priority -200, outside srcnat - 299 (-199) to srcnat + 299 (399)"),
            "{low}"
        );
        assert!(low.contains("NF_IP_PRI_CONNTRACK"), "{low}");
        assert!(err("400").contains("outside"));
        assert!(err("99999999999").contains("outside"));
        assert!(err("9999999999999").contains("is not a priority"));
    }
}
