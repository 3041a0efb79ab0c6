//! Go duration syntax (`time.ParseDuration`), as ip-masq-agent's `resyncInterval` uses it.
//!
//! ip-masq-agent decodes `resyncInterval` into a `metav1.Duration`, which calls Go's
//! `time.ParseDuration`. Existing ConfigMaps therefore hold strings such as `60s`, `1m30s`,
//! `1.5h` or `500ms`; we accept exactly that grammar so a drop-in config parses the same.

use std::time::Duration;

/// Why a duration string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// The string does not follow `[-+]?([0-9]*(\.[0-9]*)?[a-z]+)+`.
    #[error("not a duration (expected Go syntax such as 60s, 1m30s, 1.5h, 500ms)")]
    Syntax,
    /// A number without a unit, other than the lone `0`.
    #[error("missing unit (one of ns, us, ms, s, m, h)")]
    MissingUnit,
    /// A unit Go does not know.
    #[error("unknown unit {0:?} (one of ns, us, ms, s, m, h)")]
    UnknownUnit(String),
    /// Larger than Go's int64 nanoseconds.
    #[error("out of range")]
    Overflow,
}

/// A parsed Go duration: sign and magnitude, so that negative values can be reported
/// as such by the validator instead of failing to parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GoDuration {
    /// True for a leading `-` on a non-zero value.
    pub negative: bool,
    /// The magnitude.
    pub magnitude: Duration,
}

/// Parses a Go duration string (`time.ParseDuration`).
pub fn parse_go_duration(s: &str) -> Result<GoDuration, DurationError> {
    let (negative, mut rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Ok(GoDuration {
            negative: false,
            magnitude: Duration::ZERO,
        });
    }
    if rest.is_empty() {
        return Err(DurationError::Syntax);
    }
    // Accumulate in nanoseconds as u128 and check Go's int64 limit at the end.
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (int_part, after_int) = rest.split_at(int_len);
        let (frac_part, after_num) = match after_int.strip_prefix('.') {
            Some(f) => {
                let n = f.bytes().take_while(u8::is_ascii_digit).count();
                f.split_at(n)
            }
            None => ("", after_int),
        };
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(DurationError::Syntax);
        }
        let unit_len = after_num
            .char_indices()
            .find(|(_, c)| c.is_ascii_digit() || *c == '.')
            .map_or(after_num.len(), |(i, _)| i);
        let (unit, after_unit) = after_num.split_at(unit_len);
        let unit_ns: u128 = match unit {
            "" => return Err(DurationError::MissingUnit),
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            other => return Err(DurationError::UnknownUnit(other.to_string())),
        };
        let int_value: u128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse().map_err(|_| DurationError::Overflow)?
        };
        let mut value = int_value
            .checked_mul(unit_ns)
            .ok_or(DurationError::Overflow)?;
        // The fractional part contributes frac * unit / 10^digits, truncated like Go.
        let mut scale = unit_ns;
        for digit in frac_part.bytes().take(30) {
            scale /= 10;
            value += u128::from(digit - b'0') * scale;
            if scale == 0 {
                break;
            }
        }
        total = total.checked_add(value).ok_or(DurationError::Overflow)?;
        if total > i64::MAX as u128 {
            return Err(DurationError::Overflow);
        }
        rest = after_unit;
    }
    let nanos = u64::try_from(total).map_err(|_| DurationError::Overflow)?;
    Ok(GoDuration {
        negative: negative && nanos != 0,
        magnitude: Duration::from_nanos(nanos),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> Duration {
        let d = parse_go_duration(s).expect(s);
        assert!(!d.negative, "{s} parsed as negative");
        d.magnitude
    }

    #[test]
    fn accepts_go_examples() {
        assert_eq!(ok("60s"), Duration::from_secs(60));
        assert_eq!(ok("1m30s"), Duration::from_secs(90));
        assert_eq!(ok("1.5h"), Duration::from_secs(5400));
        assert_eq!(ok("2h45m"), Duration::from_secs(9900));
        assert_eq!(ok("300ms"), Duration::from_millis(300));
        assert_eq!(ok("1us"), Duration::from_micros(1));
        assert_eq!(ok("1\u{b5}s"), Duration::from_micros(1));
        assert_eq!(ok("10ns"), Duration::from_nanos(10));
        assert_eq!(ok(".5s"), Duration::from_millis(500));
        assert_eq!(ok("+5s"), Duration::from_secs(5));
        assert_eq!(ok("0"), Duration::ZERO);
    }

    #[test]
    fn reports_negative_values() {
        let d = parse_go_duration("-1m").unwrap();
        assert!(d.negative);
        assert_eq!(d.magnitude, Duration::from_secs(60));
        assert!(!parse_go_duration("-0s").unwrap().negative);
    }

    #[test]
    fn rejects_bad_syntax() {
        assert_eq!(parse_go_duration(""), Err(DurationError::Syntax));
        assert_eq!(parse_go_duration("s"), Err(DurationError::Syntax));
        assert_eq!(parse_go_duration("60"), Err(DurationError::MissingUnit));
        assert_eq!(
            parse_go_duration("5 s"),
            Err(DurationError::UnknownUnit(" s".into()))
        );
        assert_eq!(
            parse_go_duration("1d"),
            Err(DurationError::UnknownUnit("d".into()))
        );
        assert_eq!(parse_go_duration("3000000h"), Err(DurationError::Overflow));
    }
}
