//! The config document as a tree, built from a pure-Rust YAML parser's events
//! (granit-parser), with bounds on what a document may make the agent do. Pure.
//!
//! Why our own tree: the validator must see every key in order, duplicates included, ints
//! apart from floats, and tags, to report every problem with its key and value; and a
//! parser's work must be bounded while it reads, not after. The libyaml port used before
//! scanned a whole document before its depth limit applied (40,000 nested `[` took 9 s, and
//! 1 MiB of shallow nesting 230 MB); here nesting and values are counted as they come.
//!
//! Plain scalars are typed by YAML 1.2's core schema, as before: `true`/`false`, `null`/`~`,
//! decimal, `0x` and `0o` integers, floats, `.inf`/`.nan`; `064` and `1_000` stay strings.
//! Plain `y`/`n`/`yes`/`no`/`on`/`off` (in the usual capitalisations) are booleans too, as in
//! YAML 1.1, which ip-masq-agent reads; a quoted scalar is always a string, so that a
//! boolean key can refuse `"true"` as ip-masq-agent does.

use std::fmt;

use granit_parser::{Event, Parser, ScalarStyle, Tag};

/// A YAML value.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    /// `null`, `~` or nothing.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// A whole number.
    Int(i128),
    /// A number with a fraction or exponent (or `.inf`, `.nan`).
    Float(f64),
    /// Any other scalar, and every quoted one.
    Str(String),
    /// A list.
    Seq(Vec<Node>),
    /// A mapping: entries in document order, repeated keys kept.
    Map(Vec<(Node, Node)>),
    /// A value with a tag that is not one of YAML's own (`!custom x`).
    Tagged(String, Box<Node>),
}

/// What a document may make the parser do.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Deepest nesting of lists and mappings.
    pub max_depth: usize,
    /// Values in the finished tree, aliases expanded (a "billion laughs" is a few hundred
    /// bytes that expand to billions of values).
    pub max_nodes: usize,
}

/// The config's limits at the default `--max-prefixes`: a real config is two levels deep,
/// and 250,000 values hold more than twice the largest list that default allows.
pub const LIMITS: Limits = Limits {
    max_depth: 64,
    max_nodes: 250_000,
};

impl Limits {
    /// The limits for a config held to `max_prefixes` prefixes: [`LIMITS`], with room for
    /// two values per prefix when the cap is raised above the default (a list of 500,000
    /// addresses is a legitimate config under `--max-prefixes 600000`; an alias bomb still
    /// stops at a bound that follows the operator's own cap, as the byte budget does).
    pub fn for_max_prefixes(max_prefixes: usize) -> Limits {
        Limits {
            max_nodes: LIMITS.max_nodes.max(max_prefixes.saturating_mul(2)),
            ..LIMITS
        }
    }
}

/// A document that is not YAML (or JSON), or goes beyond [`Limits`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    /// Line, from 1.
    pub line: usize,
    /// Column, from 1.
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (line {}, column {})",
            self.message, self.line, self.column
        )
    }
}

impl Node {
    /// How many values the node holds, itself included.
    fn count(&self) -> usize {
        match self {
            Node::Seq(v) => 1 + v.iter().map(Node::count).sum::<usize>(),
            Node::Map(m) => 1 + m.iter().map(|(k, v)| k.count() + v.count()).sum::<usize>(),
            Node::Tagged(_, v) => 1 + v.count(),
            _ => 1,
        }
    }
}

/// A list or mapping being read: its items, anchor id and tag.
enum Frame {
    Seq(Vec<Node>, usize, Option<String>),
    /// Entries, and a key waiting for its value.
    Map(Vec<(Node, Node)>, Option<Node>, usize, Option<String>),
}

fn tag_name(tag: &Tag) -> String {
    format!("{}{}", tag.handle(), tag.suffix())
}

/// YAML's own tags (`!!str`, `!!int`, ...) under their full name.
const CORE: &str = "tag:yaml.org,2002:";

/// Parses one document into a tree, within `limits`. Empty input is [`Node::Null`].
pub fn parse(text: &str, limits: &Limits) -> Result<Node, SyntaxError> {
    let options = granit_parser::options! {
        flow_nesting_limit: limits.max_depth,
        block_nesting_limit: limits.max_depth,
    };
    let mut b = Builder {
        stack: Vec::new(),
        anchors: Vec::new(),
        nodes: 0,
        docs: 0,
        root: None,
        limits: *limits,
    };
    for ev in Parser::new_from_str_with_options(text, options) {
        let (ev, span) = ev.map_err(|e| {
            let info = e.info();
            SyntaxError {
                line: e.marker().line(),
                column: e.marker().col() + 1,
                // The parser's own depth limit (ours, passed on) speaks of recursion.
                message: if info.contains("recursion limit") {
                    nested_too_deep(limits)
                } else {
                    info
                },
            }
        })?;
        let at = |message: String| SyntaxError {
            line: span.start.line(),
            column: span.start.col() + 1,
            message,
        };
        b.event(ev).map_err(at)?;
    }
    Ok(b.root.unwrap_or(Node::Null))
}

struct Builder {
    stack: Vec<Frame>,
    anchors: Vec<Option<Node>>,
    nodes: usize,
    docs: usize,
    root: Option<Node>,
    limits: Limits,
}

impl Builder {
    fn event(&mut self, ev: Event<'_>) -> Result<(), String> {
        let done = match ev {
            Event::DocumentStart(..) => {
                self.docs += 1;
                if self.docs > 1 {
                    return Err("more than one YAML document (a config is one)".into());
                }
                None
            }
            Event::Scalar(value, style, anchor, tag) => {
                self.nodes += 1;
                let node = match (&tag, style) {
                    (Some(t), _) => tagged_scalar(&tag_name(t), &value),
                    (None, ScalarStyle::Plain) => plain(&value),
                    (None, _) => Node::Str(value.into_owned()),
                };
                Some((node, anchor))
            }
            Event::SequenceStart(_, anchor, tag) => {
                self.open(Frame::Seq(Vec::new(), anchor, tag.map(|t| tag_name(&t))))?;
                None
            }
            Event::MappingStart(_, anchor, tag) => {
                let tag = tag.map(|t| tag_name(&t));
                self.open(Frame::Map(Vec::new(), None, anchor, tag))?;
                None
            }
            Event::SequenceEnd | Event::MappingEnd => Some(match self.stack.pop() {
                Some(Frame::Seq(items, anchor, tag)) => (tagged(Node::Seq(items), tag), anchor),
                Some(Frame::Map(entries, _, anchor, tag)) => {
                    (tagged(Node::Map(entries), tag), anchor)
                }
                None => return Err("a collection ends that never began".into()),
            }),
            Event::Alias(id) => {
                let node = self
                    .anchors
                    .get(id)
                    .cloned()
                    .flatten()
                    .ok_or("an alias to an anchor not defined before it")?;
                self.nodes = self.nodes.saturating_add(node.count());
                Some((node, 0))
            }
            _ => None,
        };
        if self.nodes > self.limits.max_nodes {
            return Err(format!(
                "more than {} values (aliases expanded): a config is far smaller",
                self.limits.max_nodes
            ));
        }
        if let Some((node, anchor)) = done {
            self.finish(node, anchor);
        }
        Ok(())
    }

    fn open(&mut self, frame: Frame) -> Result<(), String> {
        self.nodes += 1;
        if self.stack.len() >= self.limits.max_depth {
            return Err(nested_too_deep(&self.limits));
        }
        self.stack.push(frame);
        Ok(())
    }

    /// A complete value: remembered for aliases, then added to its list or mapping.
    fn finish(&mut self, node: Node, anchor: usize) {
        if anchor != 0 {
            if self.anchors.len() <= anchor {
                self.anchors.resize(anchor + 1, None);
            }
            self.anchors[anchor] = Some(node.clone());
        }
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some(Frame::Seq(items, ..)) => items.push(node),
            Some(Frame::Map(entries, key, ..)) => match key.take() {
                None => *key = Some(node),
                Some(k) => entries.push((k, node)),
            },
        }
    }
}

fn nested_too_deep(limits: &Limits) -> String {
    format!(
        "nested deeper than {} levels: a config is two levels deep",
        limits.max_depth
    )
}

/// A collection keeps a tag of its own; YAML's (`!!seq`, `!!map`) say nothing new.
fn tagged(node: Node, tag: Option<String>) -> Node {
    match tag {
        Some(t) if !t.starts_with(CORE) => Node::Tagged(t, Box::new(node)),
        _ => node,
    }
}

/// A scalar with a tag: YAML's own are honoured, any other is kept as a [`Node::Tagged`]
/// string.
fn tagged_scalar(tag: &str, value: &str) -> Node {
    let keep = || Node::Tagged(tag.into(), Box::new(Node::Str(value.into())));
    match tag.strip_prefix(CORE) {
        Some("str") => Node::Str(value.into()),
        Some("float") => match plain(value) {
            Node::Int(i) => Node::Float(i as f64),
            n @ Node::Float(_) => n,
            _ => keep(),
        },
        Some("null" | "bool" | "int") => match plain(value) {
            Node::Str(_) => keep(),
            n => n,
        },
        _ => keep(),
    }
}

/// YAML 1.2's core schema for a plain scalar.
fn plain(v: &str) -> Node {
    match v {
        "" | "~" | "null" | "Null" | "NULL" => return Node::Null,
        "true" | "True" | "TRUE" => return Node::Bool(true),
        "false" | "False" | "FALSE" => return Node::Bool(false),
        // YAML 1.1's, as go-yaml v2 (ip-masq-agent's) resolves them.
        "y" | "Y" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" => return Node::Bool(true),
        "n" | "N" | "no" | "No" | "NO" | "off" | "Off" | "OFF" => return Node::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return Node::Float(f64::INFINITY);
        }
        "-.inf" | "-.Inf" | "-.INF" => return Node::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Node::Float(f64::NAN),
        _ => {}
    }
    // Most config scalars (CIDRs, names, durations) are not numbers: decide on the first byte.
    let Some(first) = v.bytes().next() else {
        return Node::Null;
    };
    if !(first.is_ascii_digit() || matches!(first, b'-' | b'+' | b'.')) {
        return Node::Str(v.into());
    }
    let radix = |digits: &str, radix| {
        i128::from_str_radix(digits, radix)
            .map(Node::Int)
            .unwrap_or_else(|_| Node::Str(v.into()))
    };
    if let Some(h) = v.strip_prefix("0x") {
        return radix(h, 16);
    }
    if let Some(o) = v.strip_prefix("0o") {
        return radix(o, 8);
    }
    let digits = v.trim_start_matches(['-', '+']);
    if !digits.is_empty() && digits.bytes().all(|c| c.is_ascii_digit()) {
        if digits.len() > 1 && digits.starts_with('0') {
            return Node::Str(v.into());
        }
        // Beyond i128 it is still a number, a float: never a reason to fail the document.
        return v
            .parse::<i128>()
            .map(Node::Int)
            .unwrap_or_else(|_| Node::Float(v.parse().unwrap_or(f64::INFINITY)));
    }
    let float_chars = v
        .bytes()
        .all(|c| c.is_ascii_digit() || matches!(c, b'-' | b'+' | b'.' | b'e' | b'E'));
    match v.parse::<f64>() {
        Ok(f) if float_chars => Node::Float(f),
        _ => Node::Str(v.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(text: &str) -> Node {
        parse(text, &LIMITS).unwrap_or_else(|e| panic!("{e}"))
    }

    fn err(text: &str) -> String {
        parse(text, &LIMITS).unwrap_err().to_string()
    }

    fn s(v: &str) -> Node {
        Node::Str(v.into())
    }

    #[test]
    fn yaml_and_json_make_the_same_tree_in_order_with_repeats() {
        let want = Node::Map(vec![
            (s("nonMasqueradeCIDRs"), Node::Seq(vec![s("10.0.0.0/8")])),
            (s("cidrLimit"), Node::Int(64)),
            (s("cidrLimit"), Node::Int(65)),
        ]);
        assert_eq!(
            doc("nonMasqueradeCIDRs:\n  - 10.0.0.0/8\ncidrLimit: 64\ncidrLimit: 65\n"),
            want
        );
        assert_eq!(
            doc(r#"{"nonMasqueradeCIDRs": ["10.0.0.0/8"], "cidrLimit": 64, "cidrLimit": 65}"#),
            want
        );
        assert_eq!(doc(""), Node::Null);
        assert_eq!(doc("# only a comment\n"), Node::Null);
    }

    #[test]
    fn scalars_are_typed_by_the_core_schema() {
        let cases = [
            ("64", Node::Int(64)),
            ("-1", Node::Int(-1)),
            ("0x10", Node::Int(16)),
            ("1e3", Node::Float(1000.0)),
            ("64.0", Node::Float(64.0)),
            ("'64'", s("64")),
            ("064", s("064")),
            ("1_000", s("1_000")),
            ("yes", Node::Bool(true)),
            ("Off", Node::Bool(false)),
            ("'yes'", s("yes")),
            ("\"true\"", s("true")),
            ("true", Node::Bool(true)),
            ("~", Node::Null),
            ("!!str 10", s("10")),
            ("!!float 1", Node::Float(1.0)),
            (
                "!custom x",
                Node::Tagged("!custom".into(), Box::new(s("x"))),
            ),
            ("10.0.0.0/8", s("10.0.0.0/8")),
            ("1m30s", s("1m30s")),
        ];
        for (text, want) in cases {
            assert_eq!(
                doc(&format!("k: {text}")),
                Node::Map(vec![(s("k"), want)]),
                "{text}"
            );
        }
        // A number too large for i128 is a float, not a failed document.
        assert!(matches!(
            doc("k: 1000000000000000000000000000000000000000"),
            Node::Map(m) if matches!(m[0].1, Node::Float(_))
        ));
    }

    #[test]
    fn hostile_documents_are_refused_while_they_are_read() {
        let deep = format!("nonMasqueradeCIDRs: {}", "[".repeat(100_000));
        let t = std::time::Instant::now();
        assert!(
            err(&deep).contains("nested deeper than 64"),
            "{}",
            err(&deep)
        );
        let deep_maps = "{a: ".repeat(40_000);
        assert!(err(&deep_maps).contains("nested deeper"));
        assert!(
            t.elapsed() < std::time::Duration::from_secs(5),
            "{:?}",
            t.elapsed()
        );
        // A billion laughs: nine anchors of nine aliases each.
        let mut laughs = String::from("a: &a [x, x, x, x, x, x, x, x, x]\n");
        for (prev, name) in ["a", "b", "c", "d", "e", "f", "g", "h"]
            .iter()
            .zip(["b", "c", "d", "e", "f", "g", "h", "i"])
        {
            laughs.push_str(&format!(
                "{name}: &{name} [{}]\n",
                vec![format!("*{prev}"); 9].join(", ")
            ));
        }
        assert!(
            err(&laughs).contains("more than 250000 values"),
            "{}",
            err(&laughs)
        );
        // A raised --max-prefixes raises the bound with it, and the bomb still stops.
        let raised = Limits::for_max_prefixes(600_000);
        assert_eq!(Limits::for_max_prefixes(1000).max_nodes, LIMITS.max_nodes);
        let big = format!("l: [{}]\n", vec!["1.2.3.4/32"; 300_000].join(", "));
        assert!(parse(&big, &LIMITS).is_err());
        assert!(parse(&big, &raised).is_ok());
        let bomb = parse(&laughs, &raised).unwrap_err().to_string();
        assert!(bomb.contains("more than 1200000 values"), "{bomb}");
        assert!(err("a: 1\n---\nb: 2\n").contains("more than one YAML document"));
        assert!(err("a: [1, 2").contains("line 1"), "{}", err("a: [1, 2"));
    }
}
