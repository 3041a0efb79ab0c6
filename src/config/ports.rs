//! The `--to-ports` flag: ip-masq-agent's port interval list, e.g. `1024-29999,32768-65535`.
//!
//! ip-masq-agent masquerades TCP, UDP and SCTP to source ports drawn from these ranges, picking
//! a range with probability proportional to its size; other protocols are masqueraded without
//! a port restriction. We keep the syntax and that meaning (see `model::desired`).

use std::fmt;
use std::str::FromStr;

/// One inclusive port range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct PortRange {
    /// First port of the range.
    pub first: u16,
    /// Last port of the range (inclusive).
    pub last: u16,
}

impl PortRange {
    /// Number of ports in the range.
    pub fn size(&self) -> u32 {
        u32::from(self.last) - u32::from(self.first) + 1
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

/// A validated, non-empty list of non-overlapping port ranges, in the order given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortRanges(Vec<PortRange>);

impl PortRanges {
    /// The ranges in the order the operator wrote them (the order of the generated rules).
    pub fn ranges(&self) -> &[PortRange] {
        &self.0
    }

    /// Total number of ports over all ranges.
    pub fn size(&self) -> u32 {
        self.0.iter().map(PortRange::size).sum()
    }
}

impl fmt::Display for PortRanges {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

/// Why a `--to-ports` value was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortsError {
    /// Empty list or empty item.
    #[error("empty port range in {0:?}")]
    Empty(String),
    /// Not a number.
    #[error("{0:?} is not a port number")]
    NotANumber(String),
    /// Outside 1-65535.
    #[error("port {0} is out of range (1-65535)")]
    OutOfRange(String),
    /// first > last.
    #[error("range {0:?} has its first port greater than its last")]
    Reversed(String),
    /// Two ranges share ports, which would skew the proportional choice.
    #[error("ranges {0} and {1} overlap")]
    Overlap(PortRange, PortRange),
}

fn parse_port(s: &str) -> Result<u16, PortsError> {
    // Go's strconv.Atoi accepts a leading '+'; keep that for compatibility.
    let digits = s.strip_prefix('+').unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(PortsError::NotANumber(s.to_string()));
    }
    match digits.parse::<u32>() {
        Ok(n) if (1..=65535).contains(&n) => Ok(n as u16),
        _ => Err(PortsError::OutOfRange(s.to_string())),
    }
}

impl FromStr for PortRanges {
    type Err = PortsError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = Vec::new();
        for item in s.split(',') {
            let item = item.trim();
            if item.is_empty() {
                return Err(PortsError::Empty(s.to_string()));
            }
            let range = match item.split_once('-') {
                None => {
                    let p = parse_port(item)?;
                    PortRange { first: p, last: p }
                }
                Some((a, b)) => {
                    let (first, last) = (parse_port(a)?, parse_port(b)?);
                    if first > last {
                        return Err(PortsError::Reversed(item.to_string()));
                    }
                    PortRange { first, last }
                }
            };
            out.push(range);
        }
        let mut sorted = out.clone();
        sorted.sort();
        for w in sorted.windows(2) {
            if w[1].first <= w[0].last {
                return Err(PortsError::Overlap(w[0], w[1]));
            }
        }
        Ok(PortRanges(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ip_masq_agent_example() {
        let p: PortRanges = "1024-29999,32768-65535".parse().unwrap();
        assert_eq!(p.ranges().len(), 2);
        assert_eq!(p.ranges()[0].size(), 28976);
        assert_eq!(p.size(), 28976 + 32768);
        assert_eq!(p.to_string(), "1024-29999,32768-65535");
    }

    #[test]
    fn single_port_and_order_kept() {
        let p: PortRanges = "9000,1024-2047".parse().unwrap();
        assert_eq!(
            p.ranges()[0],
            PortRange {
                first: 9000,
                last: 9000
            }
        );
        assert_eq!(p.to_string(), "9000,1024-2047");
    }

    #[test]
    fn rejects_bad_values() {
        assert!(matches!(
            "".parse::<PortRanges>(),
            Err(PortsError::Empty(_))
        ));
        assert!(matches!(
            "1024-".parse::<PortRanges>(),
            Err(PortsError::NotANumber(_))
        ));
        assert!(matches!(
            "x".parse::<PortRanges>(),
            Err(PortsError::NotANumber(_))
        ));
        assert!(matches!(
            "0-10".parse::<PortRanges>(),
            Err(PortsError::OutOfRange(_))
        ));
        assert!(matches!(
            "1-65536".parse::<PortRanges>(),
            Err(PortsError::OutOfRange(_))
        ));
        assert!(matches!(
            "20-10".parse::<PortRanges>(),
            Err(PortsError::Reversed(_))
        ));
        assert!(matches!(
            "1000-2000,1500-2500".parse::<PortRanges>(),
            Err(PortsError::Overlap(..))
        ));
    }
}
