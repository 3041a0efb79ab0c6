//! An [`Explanation`] as text for people: the decision first, then why, then what else on
//! the node may change it. Apart from the decision itself (`explain.rs`), which it only reads.

use super::{Decision, Explanation, Runs, TableState};
use crate::analysis::conflict::Answer;

impl Explanation {
    /// Short text for people: the decision first.
    pub fn text(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let what = match self.decision {
            Decision::Masquerade => "masquerade (the node's address)".to_string(),
            Decision::Snat => format!("snat to {}", self.snat_to.as_deref().unwrap_or("?")),
            Decision::None => "not translated".to_string(),
        };
        let _ = writeln!(out, "{}: {what}", self.destination);
        if let Some(o) = &self.overridden_by {
            let f = &o.finding;
            let when = match (self.decision, o.runs) {
                (Decision::None, Runs::After) => "after ours (our exemption does not stop it)",
                _ => "first",
            };
            let _ = writeln!(
                out,
                "  BUT {} {} chain {} (handle {}) translates it {when}: {}",
                f.family, f.table, f.chain, f.handle, f.verdict
            );
        }
        for b in &self.because {
            let at = match (&b.file, b.index) {
                (Some(file), Some(i)) => format!("{}[{i}] in {file}", b.key),
                (None, Some(i)) => format!("{}[{i}]", b.key),
                _ => b.key.clone(),
            };
            if b.no_entry {
                let verb = match b.key.as_str() {
                    "egressInterfaces" => "matches",
                    _ => "contains",
                };
                let _ = writeln!(
                    out,
                    "  because no entry of {at} {verb} {}: {}",
                    b.value, b.why
                );
            } else {
                let _ = writeln!(out, "  because {at} = {}: {}", b.value, b.why);
            }
        }
        let table = match self.table {
            TableState::InForce => "in force",
            TableState::Differs => "DIFFERS from the config",
            TableState::Absent => "ABSENT",
            TableState::NotRead => "not read",
        };
        let _ = write!(
            out,
            "  table inet nft-masq-agent: {table}, chain postrouting at priority {}",
            self.chain_priority
        );
        if let Some(d) = &self.table_detail {
            let _ = write!(out, " ({d})");
        }
        out.push('\n');
        for o in &self.conflicts {
            let f = &o.finding;
            let runs = match o.runs {
                Runs::Before => "before ours",
                Runs::Same => "as ours, order undefined",
                Runs::After => "after ours",
            };
            let answer = match &f.answer {
                Answer::Yes => "YES, first".to_string(),
                Answer::No => "no".to_string(),
                Answer::CannotTell(w) => format!("cannot tell (depends on {})", w.join(", ")),
                Answer::Conditional(w) => format!("only for {} (expected)", w.join(", ")),
            };
            let _ = writeln!(
                out,
                "  other NAT rule {} {} chain {} priority {} ({runs}) handle {} ({}): {answer}",
                f.family, f.table, f.chain, f.priority, f.handle, f.verdict
            );
        }
        for n in &self.notes {
            let _ = writeln!(out, "  note: {n}");
        }
        out
    }
}
