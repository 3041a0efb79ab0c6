//! The agent's log as `--log-format json` writes it: one JSON object a line,
//! `{"timestamp":…,"level":"INFO","fields":{"message":…,KEY:VALUE…},"target":…}`.

use serde_json::{Map, Value};

/// One line of the agent's log.
#[derive(Debug, Clone, PartialEq)]
pub struct LogLine {
    /// RFC 3339 UTC (`2026-11-30T07:23:17.945179Z`); empty for a line that is not JSON.
    pub timestamp: String,
    /// `ERROR`, `WARN`, `INFO`, `DEBUG` or `TRACE`; empty for a line that is not JSON (the
    /// `nft-masq-agent: error: …` line of a failed start, a panic).
    pub level: String,
    /// The module that logged it.
    pub target: String,
    /// The message (the whole line, for a line that is not JSON).
    pub message: String,
    /// The structured fields besides the message (`reason`, `prefixes`, `form`, …).
    pub fields: Map<String, Value>,
}

impl LogLine {
    /// Parses one line; a line that is not a JSON object is kept whole as the message.
    pub fn parse(line: &str) -> LogLine {
        let plain = || LogLine {
            timestamp: String::new(),
            level: String::new(),
            target: String::new(),
            message: line.to_string(),
            fields: Map::new(),
        };
        let Ok(Value::Object(mut o)) = serde_json::from_str::<Value>(line) else {
            return plain();
        };
        let mut text = |key: &str| match o.remove(key) {
            Some(Value::String(s)) => s,
            _ => String::new(),
        };
        let (timestamp, level, target) = (text("timestamp"), text("level"), text("target"));
        let mut fields = match o.remove("fields") {
            Some(Value::Object(f)) => f,
            _ => Map::new(),
        };
        let message = match fields.remove("message") {
            Some(Value::String(s)) => s,
            Some(other) => other.to_string(),
            None => String::new(),
        };
        LogLine {
            timestamp,
            level,
            target,
            message,
            fields,
        }
    }

    /// A field as a number (the agent logs some as strings: `duration_ms="0.251"`).
    pub fn number(&self, key: &str) -> Option<f64> {
        match self.fields.get(key)? {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => s.parse().ok(),
            _ => None,
        }
    }

    /// A field as text (a string's contents, anything else as JSON).
    pub fn text(&self, key: &str) -> Option<String> {
        match self.fields.get(key)? {
            Value::String(s) => Some(s.clone()),
            other => Some(other.to_string()),
        }
    }

    /// The commit this line reports, if it is one: the daemon's commit line and `--once`'s
    /// are the only events carrying both `prefixes` and `elements` (src/daemon/agent.rs,
    /// `committed`; src/main.rs, `once`).
    pub fn commit(&self) -> Option<Commit> {
        let prefixes = self.number("prefixes")? as u64;
        let elements = self.number("elements")? as u64;
        Some(Commit {
            timestamp: self.timestamp.clone(),
            message: self.message.clone(),
            reason: self.text("reason"),
            form: self.text("form"),
            prefixes,
            elements,
            sent: self.number("sent").map(|v| v as u64),
            added: self.number("added").map(|v| v as u64),
            removed: self.number("removed").map(|v| v as u64),
            duration_ms: self.number("duration_ms").unwrap_or(0.0),
            transactions: self.number("transactions").map(|v| v as u64),
        })
    }

    /// Seconds since midnight UTC of its timestamp, on the clock of [`utc_now`].
    pub fn utc_seconds(&self) -> Option<f64> {
        let time = self.timestamp.split('T').nth(1)?.trim_end_matches('Z');
        let mut parts = time.split(':');
        let (h, m, s) = (parts.next()?, parts.next()?, parts.next()?);
        Some(
            h.parse::<f64>().ok()? * 3600.0
                + m.parse::<f64>().ok()? * 60.0
                + s.parse::<f64>().ok()?,
        )
    }

    /// The line as the agent's text format would show it (`TIMESTAMP  LEVEL target: message
    /// key=value …`, strings quoted), so that a log reads the same in either format.
    pub fn render(&self) -> String {
        if self.level.is_empty() {
            return self.message.clone();
        }
        let mut s = format!(
            "{} {:>5} {}: {}",
            self.timestamp, self.level, self.target, self.message
        );
        let mut lists = String::new();
        for (k, v) in &self.fields {
            match v {
                Value::String(text) => s.push_str(&format!(" {k}={text:?}")),
                // A list of strings (a config's `problems`): one per line, as the text
                // format writes them.
                Value::Array(items) if items.iter().all(Value::is_string) => {
                    for item in items.iter().filter_map(Value::as_str) {
                        lists.push_str("\n  ");
                        lists.push_str(item);
                    }
                }
                other => s.push_str(&format!(" {k}={other}")),
            }
        }
        s + &lists
    }
}

/// Seconds since midnight UTC now, to compare with [`LogLine::utc_seconds`].
pub fn utc_now() -> f64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970");
    d.as_secs_f64() % 86_400.0
}

/// A commit of table `inet nft-masq-agent` as the agent logged it.
#[derive(Debug, Clone, PartialEq)]
pub struct Commit {
    /// When it was logged (after the kernel applied it).
    pub timestamp: String,
    /// The message: `committed table inet nft-masq-agent (WHY): +ADDED -REMOVED`.
    pub message: String,
    /// `startup`, `config`, `drift`, … (the daemon's; `--once` logs none).
    pub reason: Option<String>,
    /// `difference`, `reshape`, `in-place`, `create` or `handover` (the daemon's; `replace` and
    /// `delete-first` from builds before the sets were created a transaction ahead).
    pub form: Option<String>,
    /// Prefixes in the table.
    pub prefixes: u64,
    /// Set elements in the table.
    pub elements: u64,
    /// Elements this commit sent (the daemon's).
    pub sent: Option<u64>,
    /// Prefixes added since the table before (the daemon's).
    pub added: Option<u64>,
    /// Prefixes removed since the table before (the daemon's).
    pub removed: Option<u64>,
    /// How long the commit took, in milliseconds.
    pub duration_ms: f64,
    /// Transactions it committed (the daemon's; more than one when the sets were created
    /// before the rules that use them; absent from older builds: one).
    pub transactions: Option<u64>,
}

impl Commit {
    /// Whether its form creates the sets anew (the table was missing or had to be
    /// recreated): `create` and `handover` fill them a transaction before the rules that
    /// use them; `replace` and `delete-first` (older builds) in the same one, which leaves
    /// the kernel's new-set gap open.
    pub fn creates_sets(&self) -> bool {
        matches!(
            self.form.as_deref(),
            Some("create" | "handover" | "replace" | "delete-first")
        )
    }
}

/// Reads a growing log file incrementally: only what was appended since the last read is
/// parsed, so polling a long log stays cheap.
#[derive(Debug, Default)]
pub struct LogReader {
    /// Bytes of the file consumed so far (complete lines only).
    offset: u64,
    /// Every complete line so far.
    lines: Vec<LogLine>,
    /// The same lines rendered ([`LogLine::render`]), one a line.
    text: String,
}

impl LogReader {
    /// A reader that ignores what `path` holds now (a log another process began).
    pub fn from_end(path: &std::path::Path) -> LogReader {
        LogReader {
            offset: std::fs::metadata(path).map_or(0, |m| m.len()),
            ..LogReader::default()
        }
    }

    /// Reads what `path` gained since the last call.
    pub fn update(&mut self, path: &std::path::Path) {
        use std::io::{Read, Seek, SeekFrom};
        let Ok(mut f) = std::fs::File::open(path) else {
            return;
        };
        if f.seek(SeekFrom::Start(self.offset)).is_err() {
            return;
        }
        let mut new = Vec::new();
        if f.read_to_end(&mut new).is_err() {
            return;
        }
        // A line is parsed once it is complete; a partial one waits for the next read.
        let Some(end) = new.iter().rposition(|&b| b == b'\n') else {
            return;
        };
        self.offset += end as u64 + 1;
        for raw in String::from_utf8_lossy(&new[..end]).split('\n') {
            self.push(raw);
        }
    }

    /// Adds one line.
    pub fn push(&mut self, raw: &str) {
        let line = LogLine::parse(raw);
        self.text.push_str(&line.render());
        self.text.push('\n');
        self.lines.push(line);
    }

    /// Every line so far.
    pub fn lines(&self) -> &[LogLine] {
        &self.lines
    }

    /// Every line so far, rendered.
    pub fn text(&self) -> &str {
        &self.text
    }
}

/// Parses a whole log (the stderr of `--once --log-format json`, say).
pub fn parse_log(text: &str) -> Vec<LogLine> {
    text.lines().map(LogLine::parse).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAEMON_COMMIT: &str = r#"{"timestamp":"2026-12-06T22:16:49.460003Z","level":"INFO","fields":{"message":"committed table inet nft-masq-agent (start-up): +10.0.0.0/8 +169.254.0.0/16","reason":"startup","prefixes":2,"elements":5,"sent":5,"form":"delete-first","added":2,"removed":0,"duration_ms":"10.910"},"target":"nft_masq_agent::daemon::agent"}"#;
    const ONCE_COMMIT: &str = r#"{"timestamp":"2026-12-06T22:16:49.389465Z","level":"INFO","fields":{"message":"committed table inet nft-masq-agent","prefixes":4,"elements":9,"bytes":1404,"duration_ms":0.442521},"target":"nft_masq_agent"}"#;
    const CONNTRACK: &str = r#"{"timestamp":"2026-12-06T22:16:49.475813Z","level":"INFO","fields":{"message":"conntrack: 0 of 0 entries deleted","examined":0,"deleted":0,"duration_ms":"14.9"},"target":"nft_masq_agent::daemon::agent"}"#;

    #[test]
    fn a_list_of_problems_renders_one_per_line() {
        let line = LogLine::parse(
            r#"{"timestamp":"2026-12-07T00:38:21.996617Z","level":"ERROR","fields":{"message":"invalid config file /c: 2 problems; keeping the last good config","problems":["/c: a = [\"x\"]: unknown key","/c: b = 1: bad"]},"target":"t"}"#,
        );
        assert_eq!(
            line.render(),
            "2026-12-07T00:38:21.996617Z ERROR t: invalid config file /c: 2 problems; keeping the \
             last good config\n  /c: a = [\"x\"]: unknown key\n  /c: b = 1: bad"
        );
    }

    #[test]
    fn commits_are_told_by_their_fields() {
        let c = LogLine::parse(DAEMON_COMMIT).commit().expect("a commit");
        assert_eq!(c.reason.as_deref(), Some("startup"));
        assert_eq!(c.form.as_deref(), Some("delete-first"));
        assert_eq!((c.prefixes, c.elements, c.sent), (2, 5, Some(5)));
        assert_eq!((c.added, c.removed), (Some(2), Some(0)));
        assert!((c.duration_ms - 10.91).abs() < 1e-9);
        assert!(c.creates_sets());
        assert_eq!(c.transactions, None);
        let handover = LogLine::parse(&DAEMON_COMMIT.replace(
            r#""form":"delete-first""#,
            r#""form":"handover","transactions":5"#,
        ))
        .commit()
        .expect("a commit");
        assert_eq!(handover.transactions, Some(5));
        assert!(handover.creates_sets());
        let once = LogLine::parse(ONCE_COMMIT)
            .commit()
            .expect("--once's commit");
        assert_eq!(
            (once.prefixes, once.elements, once.form.as_deref()),
            (4, 9, None)
        );
        assert!(!once.creates_sets());
        assert_eq!(LogLine::parse(CONNTRACK).commit(), None);
    }

    #[test]
    fn lines_render_as_the_text_format_does() {
        let l = LogLine::parse(DAEMON_COMMIT);
        assert_eq!(l.level, "INFO");
        assert_eq!(l.target, "nft_masq_agent::daemon::agent");
        let text = l.render();
        assert!(
            text.starts_with(
                "2026-12-06T22:16:49.460003Z  INFO nft_masq_agent::daemon::agent: committed \
                 table inet nft-masq-agent (start-up): +10.0.0.0/8"
            ),
            "{text}"
        );
        assert!(text.contains(" reason=\"startup\""), "{text}");
        assert!(text.contains(" prefixes=2"), "{text}");
        assert!(text.contains(" duration_ms=\"10.910\""), "{text}");
        assert!((l.utc_seconds().unwrap() - 80_209.460003).abs() < 1e-6);
    }

    #[test]
    fn a_line_that_is_not_json_is_kept_whole() {
        let l = LogLine::parse("nft-masq-agent: error: CAP_NET_ADMIN is not effective");
        assert_eq!(l.level, "");
        assert_eq!(
            l.render(),
            "nft-masq-agent: error: CAP_NET_ADMIN is not effective"
        );
        assert_eq!(l.commit(), None);
    }

    #[test]
    fn the_reader_parses_complete_lines_once() {
        let dir = std::env::temp_dir().join(format!("nma-testkit-log-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("agent.log");
        std::fs::write(&path, format!("{DAEMON_COMMIT}\n{{\"timestamp\"")).unwrap();
        let mut r = LogReader::default();
        r.update(&path);
        assert_eq!(r.lines().len(), 1);
        std::fs::write(&path, format!("{DAEMON_COMMIT}\n{CONNTRACK}\n")).unwrap();
        r.update(&path);
        assert_eq!(r.lines().len(), 2);
        assert_eq!(r.lines()[1].message, "conntrack: 0 of 0 entries deleted");
        assert_eq!(r.text().lines().count(), 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
