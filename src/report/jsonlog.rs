//! `--log-format json`: one JSON object per event, in the shape of tracing-subscriber's JSON
//! lines (`timestamp`, `level`, `fields` with `message`, `target`), except that a field named
//! in [`ARRAY_FIELDS`] is an array, not a string: a config's problems are a list a log
//! pipeline can index, not one string with `\n` in it. tracing's field values are scalars,
//! so such a field is recorded as its JSON text ([`problems_field`]) and embedded here.
//!
//! [`error_with_problems`] is how the agent logs a multi-line error (a config's problems):
//! in text, the lines as before; in JSON, the first line as the message and the others as
//! the `problems` array.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::Value;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Fields whose value is the JSON text of an array, embedded as the array.
pub const ARRAY_FIELDS: [&str; 1] = ["problems"];

/// Whether logs are JSON (set once, by the binary, before the first event).
static JSON: AtomicBool = AtomicBool::new(false);

/// Says that logs are JSON lines ([`JsonLines`]), so multi-line errors are split into fields.
pub fn set_json(on: bool) {
    JSON.store(on, Ordering::Relaxed);
}

/// Splits a multi-line error (a summary, then one problem per line indented by two spaces,
/// as [`crate::config::ConfigError`] writes them) into the summary and the problems.
pub fn split_problems(text: &str) -> (&str, Vec<&str>) {
    let mut lines = text.split('\n');
    let head = lines.next().unwrap_or_default();
    (head, lines.map(str::trim_start).collect())
}

/// The JSON text of `problems` for the `problems` field.
pub fn problems_field(problems: &[&str]) -> String {
    serde_json::to_string(problems).unwrap_or_else(|_| "[]".into())
}

/// Logs `text` followed by `tail` at ERROR: in text as it is; in JSON with the problems of
/// `text` ([`split_problems`]) as the `problems` array and the summary and `tail` as the
/// message.
pub fn error_with_problems(text: &str, tail: &str) {
    if !JSON.load(Ordering::Relaxed) {
        tracing::error!("{text}{tail}");
        return;
    }
    let (head, problems) = split_problems(text);
    if problems.is_empty() {
        tracing::error!("{text}{tail}");
    } else {
        tracing::error!(problems = %problems_field(&problems), "{head}{tail}");
    }
}

/// The JSON line format.
#[derive(Debug, Default, Clone, Copy)]
pub struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut timestamp = String::new();
        SystemTime.format_time(&mut Writer::new(&mut timestamp))?;
        let mut fields = Fields::default();
        event.record(&mut fields);
        let meta = event.metadata();
        writeln!(
            writer,
            "{}",
            line(&timestamp, meta.level().as_str(), &fields.0, meta.target())
        )
    }
}

/// One line: `{"timestamp":…,"level":…,"fields":{…},"target":…}`, fields in the order given.
fn line(timestamp: &str, level: &str, fields: &[(String, Value)], target: &str) -> String {
    let s = |v: &str| Value::from(v).to_string();
    let fields: Vec<String> = fields
        .iter()
        .map(|(k, v)| format!("{}:{v}", s(k)))
        .collect();
    format!(
        "{{\"timestamp\":{},\"level\":{},\"fields\":{{{}}},\"target\":{}}}",
        s(timestamp),
        s(level),
        fields.join(","),
        s(target)
    )
}

#[derive(Default)]
struct Fields(Vec<(String, Value)>);

impl Fields {
    fn put(&mut self, field: &Field, value: Value) {
        let value = match value {
            Value::String(text) if ARRAY_FIELDS.contains(&field.name()) => {
                match serde_json::from_str::<Value>(&text) {
                    Ok(array @ Value::Array(_)) => array,
                    _ => Value::String(text),
                }
            }
            other => other,
        };
        self.0.push((field.name().to_string(), value));
    }
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, Value::String(format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::from(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Value::from(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        // NaN and infinities have no JSON number: null, as serde_json writes them.
        self.put(field, Value::from(value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A writer that keeps what the subscriber writes.
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn logged(json: bool, f: impl FnOnce()) -> String {
        let buf = Buf::default();
        let out = buf.clone();
        let builder = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || out.clone());
        let dispatch = if json {
            tracing::Dispatch::new(builder.event_format(JsonLines).finish())
        } else {
            tracing::Dispatch::new(builder.finish())
        };
        set_json(json);
        tracing::dispatcher::with_default(&dispatch, f);
        set_json(false);
        String::from_utf8(buf.0.lock().unwrap().clone()).unwrap()
    }

    const ERROR: &str = "invalid config file /cfg: 2 problems\n  /cfg: foo = 1: unknown key\n  \
                         /cfg: masqLinkLocal = \"true\": expected true or false";

    #[test]
    fn problems_are_an_array_in_json_and_lines_in_text() {
        let text = logged(false, || {
            error_with_problems(ERROR, "; keeping the last good config")
        });
        assert!(
            text.contains(
                "invalid config file /cfg: 2 problems\n  /cfg: foo = 1: unknown key\n  /cfg: \
                 masqLinkLocal = \"true\": expected true or false; keeping the last good config"
            ),
            "{text}"
        );
        let json = logged(true, || {
            error_with_problems(ERROR, "; keeping the last good config")
        });
        assert_eq!(json.lines().count(), 1, "{json}");
        let v: Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["level"], "ERROR");
        assert_eq!(
            v["fields"]["message"],
            "invalid config file /cfg: 2 problems; keeping the last good config"
        );
        assert_eq!(
            v["fields"]["problems"],
            serde_json::json!([
                "/cfg: foo = 1: unknown key",
                "/cfg: masqLinkLocal = \"true\": expected true or false"
            ])
        );
        assert!(v["timestamp"].as_str().unwrap().ends_with('Z'), "{v}");
        assert_eq!(v["target"], "nft_masq_agent::report::jsonlog");
    }

    #[test]
    fn other_fields_keep_their_types_and_order() {
        let json = logged(true, || {
            tracing::info!(
                prefixes = 4u64,
                delta = -1i64,
                ok = true,
                ms = 0.5,
                reason = "startup",
                "committed"
            );
        });
        let v: Value = serde_json::from_str(&json).unwrap();
        assert_eq!(
            v["fields"],
            serde_json::json!({"message": "committed", "prefixes": 4, "delta": -1, "ok": true, "ms": 0.5, "reason": "startup"})
        );
        assert!(json.starts_with("{\"timestamp\":"), "{json}");
        assert!(
            json.contains("\"fields\":{\"message\":\"committed\",\"prefixes\":4"),
            "{json}"
        );
        // A problems field that is not an array stays the string it is.
        let json = logged(true, || tracing::warn!(problems = "none", "x"));
        let v: Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["fields"]["problems"], "none");
    }
}
