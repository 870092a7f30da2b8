//! YAML front end: yaml-rust2's marked events → [`Node`] tree, resolving plain scalars the way
//! kube-apiserver's YAML library (go-yaml v2, YAML 1.1 flavour) does, and recording duplicate keys
//! the way its strict mode reports them. Its limits are go-yaml's: the characters its reader
//! refuses (see [`super::yaml_reader`]) and an alias-expansion budget, not a node count — a 200,000-item
//! list without aliases loads, as in kube-apiserver.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, Parser, Tag};
use yaml_rust2::scanner::{Marker, ScanError, TScalarStyle};
use zeroize::Zeroizing;

use super::node::{Entry, Node, Value, MAX_DEPTH};

/// go-yaml v2's alias budget: once more than 100 of over 1,000 decoded nodes come from alias
/// expansion, their share may be at most 99 % up to 400,000 decoded nodes, falling linearly to
/// 10 % at 4,000,000 and above ("document contains excessive aliasing"). Nodes are counted as
/// go-yaml's decoder visits them: every scalar (keys too), collection and alias node, and each
/// node of an alias's expansion again.
fn allowed_alias_ratio(decoded: usize) -> f64 {
    const LOW: usize = 400_000;
    const HIGH: usize = 4_000_000;
    match decoded {
        d if d <= LOW => 0.99,
        d if d >= HIGH => 0.10,
        d => 0.99 - 0.89 * ((d - LOW) as f64 / (HIGH - LOW) as f64),
    }
}

/// Most nodes a document may build (alias expansions included). Not go-yaml's: it bounds memory
/// (a node costs ~150 bytes here, so the densest 64 MiB file would need ~10 GB). 4,000,000 nodes
/// are 20 times a 200,000-resource config; kube-apiserver, which has no cap, validates each
/// resource list pairwise, so lists that long do not load there in useful time either.
pub(crate) const MAX_NODES: usize = 4_000_000;

fn excessive_aliasing(decoded: usize, from_aliases: usize) -> bool {
    from_aliases > 100
        && decoded > 1000
        && from_aliases as f64 / decoded as f64 > allowed_alias_ratio(decoded)
}

/// The first document of a YAML stream, JSON-converted like sigs.k8s.io/yaml does.
pub(crate) struct YamlDocument {
    /// `None`: the document is empty (only comments or whitespace), i.e. `null`.
    pub root: Option<Node>,
    /// go-yaml strict mode's complaints: `line N: key "x" already set in map`, in document order.
    pub duplicate_keys: Vec<(usize, String)>,
}

/// Why the YAML could not be read at all. `message` is go-yaml's text (`yaml: line 4: …`).
#[derive(Debug)]
pub(crate) struct YamlSyntaxError {
    pub message: String,
    pub line: Option<usize>,
}

pub(crate) fn parse(bytes: &[u8]) -> Result<YamlDocument, YamlSyntaxError> {
    parse_with_limit(bytes, MAX_NODES)
}

fn parse_with_limit(bytes: &[u8], node_limit: usize) -> Result<YamlDocument, YamlSyntaxError> {
    super::yaml_reader::check(bytes).map_err(|err| YamlSyntaxError {
        message: format!("yaml: {}", err.problem),
        line: Some(line_of_offset(bytes, err.offset)),
    })?;
    let text = std::str::from_utf8(bytes).map_err(|err| YamlSyntaxError {
        message: "yaml: invalid leading UTF-8 octet".to_owned(),
        line: Some(line_of_offset(bytes, err.valid_up_to())),
    })?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut builder = TreeBuilder::new(node_limit);
    let mut parser = Parser::new_from_str(text);
    loop {
        let (event, mark) = parser.next_token().map_err(syntax_error)?;
        match builder.on_event(event, mark)? {
            Flow::Continue => {}
            Flow::Done => break,
        }
    }
    // go-yaml parses the whole document before decoding it, so a syntax error anywhere wins over
    // the alias budget.
    if builder.excessive_aliasing {
        return Err(YamlSyntaxError {
            message: "yaml: document contains excessive aliasing".to_owned(),
            line: None,
        });
    }
    Ok(YamlDocument {
        root: builder.root,
        duplicate_keys: builder.duplicates,
    })
}

fn line_of_offset(bytes: &[u8], offset: usize) -> usize {
    bytes.iter().take(offset).filter(|b| **b == b'\n').count() + 1
}

/// Problems libyaml raises in its *parser* (as opposed to its scanner); go-yaml prints these with
/// the 0-based line of the problem mark, scanner problems with the 1-based line.
const PARSER_PROBLEMS: &[&str] = &[
    "did not find expected node content",
    "did not find expected key",
    "did not find expected ',' or '}'",
    "did not find expected ',' or ']'",
    "did not find expected '-' indicator",
    "did not find expected <document start>",
    "did not find expected <document-start>",
    "did not find expected <stream-start>",
    "found unknown anchor",
    "the handle wasn't declared",
];

/// yaml-rust2's text → go-yaml's: libyaml's *problem* only (no "while parsing …" context), with
/// go-yaml's line convention.
fn syntax_error(err: ScanError) -> YamlSyntaxError {
    let line = err.marker().line();
    let info = err.info();
    let problem = info
        .split_once(", ")
        .filter(|(context, _)| context.starts_with("while "))
        .map_or(info, |(_, p)| p);
    let problem = match problem {
        "expected ',' or ']'" => "did not find expected ',' or ']'",
        // yaml-rust2 notices a key spanning lines inside `[...]` while scanning; libyaml's parser
        // reports the same input as an unterminated flow sequence.
        "illegal placement of ':' indicator" => "did not find expected ',' or ']'",
        p if p.starts_with("tabs disallowed") => "found character that cannot start any token",
        p => p,
    };
    let reported = if PARSER_PROBLEMS.contains(&problem) {
        line.saturating_sub(1)
    } else {
        line
    };
    let message = if reported == 0 {
        format!("yaml: {problem}")
    } else {
        format!("yaml: line {reported}: {problem}")
    };
    YamlSyntaxError {
        message,
        line: (line > 0).then_some(line),
    }
}

enum Flow {
    Continue,
    Done,
}

struct Frame {
    kind: FrameKind,
    line: usize,
    anchor: usize,
    /// `decoded` when the collection opened: its own decode count is the difference at its end.
    decoded_before: usize,
}

enum FrameKind {
    Seq(Vec<Node>),
    Map {
        entries: Vec<Entry>,
        pending_key: Option<Node>,
        duplicate_guard: HashMap<String, ()>,
        /// Positions in `entries` of repeated keys: each replaces the entries before it with the
        /// same JSON key (applied once, when the map ends, so repeats cost linear time).
        replacing: Vec<usize>,
    },
}

struct TreeBuilder {
    stack: Vec<Frame>,
    /// Anchored node and how many nodes decoding it counts (its expansion's cost).
    anchors: HashMap<usize, (Node, usize)>,
    root: Option<Node>,
    duplicates: Vec<(usize, String)>,
    /// go-yaml's `decodeCount`: nodes decoded so far, alias expansions included.
    decoded: usize,
    /// go-yaml's `aliasCount`: the part of `decoded` that came from alias expansion.
    from_aliases: usize,
    /// The budget was exceeded: aliases are no longer expanded (so memory stays bounded), and the
    /// error is reported once the document has parsed.
    excessive_aliasing: bool,
    /// Nodes built so far (expanded aliases included), and the most allowed.
    built: usize,
    node_limit: usize,
}

impl TreeBuilder {
    fn new(node_limit: usize) -> Self {
        TreeBuilder {
            stack: Vec::new(),
            anchors: HashMap::new(),
            root: None,
            duplicates: Vec::new(),
            // The document node itself.
            decoded: 1,
            from_aliases: 0,
            excessive_aliasing: false,
            built: 0,
            node_limit,
        }
    }

    /// Counts `n` more nodes built; past the limit the document is refused at once.
    fn build(&mut self, n: usize) -> Result<(), YamlSyntaxError> {
        self.built = self.built.saturating_add(n);
        if self.built > self.node_limit {
            return Err(YamlSyntaxError {
                message: format!(
                    "document has more than {} YAML nodes (atrest's limit, to bound memory)",
                    self.node_limit
                ),
                line: None,
            });
        }
        Ok(())
    }

    fn on_event(&mut self, event: Event, mark: Marker) -> Result<Flow, YamlSyntaxError> {
        let line = mark.line();
        match event {
            Event::StreamStart | Event::DocumentStart | Event::Nothing => Ok(Flow::Continue),
            // Only the first document counts, as with go-yaml's Unmarshal.
            Event::DocumentEnd | Event::StreamEnd => Ok(Flow::Done),
            Event::Scalar(text, style, anchor, tag) => {
                self.build(1)?;
                let node = Node::new(resolve_scalar(text, style, tag.as_ref()), Some(line));
                self.decoded += 1;
                if anchor != 0 {
                    self.anchors.insert(anchor, (node.clone(), 1));
                }
                self.complete(node)
            }
            Event::Alias(anchor) => {
                let Some((anchored, size)) = self.anchors.get(&anchor) else {
                    return Err(YamlSyntaxError {
                        message: format!("yaml: line {line}: unknown anchor referenced"),
                        line: Some(line),
                    });
                };
                // The alias node, then its target decoded again.
                self.decoded = self.decoded.saturating_add(1).saturating_add(*size);
                self.from_aliases = self.from_aliases.saturating_add(*size);
                if self.excessive_aliasing || excessive_aliasing(self.decoded, self.from_aliases) {
                    self.excessive_aliasing = true;
                    return self.complete(Node::new(Value::Null, Some(line)));
                }
                let (node, size) = (anchored.clone(), *size);
                self.build(size)?;
                self.complete(node)
            }
            Event::SequenceStart(anchor, _) => self.open(FrameKind::Seq(Vec::new()), line, anchor),
            Event::MappingStart(anchor, _) => self.open(
                FrameKind::Map {
                    entries: Vec::new(),
                    pending_key: None,
                    duplicate_guard: HashMap::new(),
                    replacing: Vec::new(),
                },
                line,
                anchor,
            ),
            Event::SequenceEnd | Event::MappingEnd => {
                let Some(frame) = self.stack.pop() else {
                    return Ok(Flow::Continue);
                };
                let value = match frame.kind {
                    FrameKind::Seq(items) => Value::Seq(items),
                    FrameKind::Map {
                        mut entries,
                        replacing,
                        ..
                    } => {
                        drop_replaced(&mut entries, &replacing);
                        // sigs.k8s.io/yaml marshals a Go map, so JSON sees keys sorted bytewise.
                        entries.sort_by(|a, b| a.key.as_bytes().cmp(b.key.as_bytes()));
                        Value::Map(entries)
                    }
                };
                let node = Node::new(value, Some(frame.line));
                if frame.anchor != 0 {
                    let size = self.decoded - frame.decoded_before;
                    self.anchors.insert(frame.anchor, (node.clone(), size));
                }
                self.complete(node)
            }
        }
    }

    fn open(
        &mut self,
        kind: FrameKind,
        line: usize,
        anchor: usize,
    ) -> Result<Flow, YamlSyntaxError> {
        if self.stack.len() >= MAX_DEPTH {
            return Err(YamlSyntaxError {
                message: format!("yaml: line {line}: exceeded max depth of {MAX_DEPTH}"),
                line: Some(line),
            });
        }
        self.build(1)?;
        let decoded_before = self.decoded;
        self.decoded += 1;
        self.stack.push(Frame {
            kind,
            line,
            anchor,
            decoded_before,
        });
        Ok(Flow::Continue)
    }

    fn complete(&mut self, node: Node) -> Result<Flow, YamlSyntaxError> {
        let Some(frame) = self.stack.last_mut() else {
            self.root = Some(node);
            return Ok(Flow::Continue);
        };
        match &mut frame.kind {
            FrameKind::Seq(items) => items.push(node),
            FrameKind::Map {
                entries,
                pending_key,
                duplicate_guard,
                replacing,
            } => match pending_key.take() {
                None => *pending_key = Some(node),
                Some(key_node) => {
                    let key_line = key_node.line;
                    let (key, shown) = map_key(&key_node)?;
                    if duplicate_guard.insert(shown.clone(), ()).is_some() {
                        self.duplicates.push((key_line.unwrap_or(0), shown));
                        // Non-strict conversion keeps the last value.
                        replacing.push(entries.len());
                    }
                    entries.push(Entry {
                        key,
                        key_line,
                        value: node,
                    });
                }
            },
        }
        Ok(Flow::Continue)
    }
}

/// Removes every entry that a later repeated key (at a position in `replacing`) replaces.
fn drop_replaced(entries: &mut Vec<Entry>, replacing: &[usize]) {
    let Some(&last) = replacing.last() else {
        return;
    };
    // Walking backwards: an entry goes when a repeat of its key comes after it.
    let mut replaced_keys: std::collections::HashSet<String> = std::collections::HashSet::new();
    let mut repeats = replacing.iter().rev().peekable();
    let mut keep = vec![true; entries.len()];
    for i in (0..=last).rev() {
        if replaced_keys.contains(&entries[i].key) {
            keep[i] = false;
        }
        if repeats.peek() == Some(&&i) {
            repeats.next();
            replaced_keys.insert(entries[i].key.clone());
        }
    }
    let mut flags = keep.into_iter();
    entries.retain(|_| flags.next().unwrap_or(true));
}

/// A mapping key as sigs.k8s.io/yaml turns it into a JSON key, and as go-yaml prints it (`%#v`).
fn map_key(node: &Node) -> Result<(String, String), YamlSyntaxError> {
    match &node.value {
        Value::Str(s) => Ok((s.to_string(), super::gotext::quote(s))),
        Value::Bool(b) => Ok((b.to_string(), b.to_string())),
        Value::Int(i) => Ok((i.to_string(), i.to_string())),
        Value::Float(f) => Ok((f.to_string(), f.to_string())),
        Value::Null => Ok(("null".to_owned(), "<nil>".to_owned())),
        Value::Seq(_) | Value::Map(_) => Err(YamlSyntaxError {
            message: format!(
                "yaml: line {}: unsupported map key: a key must be a scalar",
                node.line.unwrap_or(0)
            ),
            line: node.line,
        }),
    }
}

/// go-yaml v2's implicit typing of plain scalars (YAML 1.1: `yes`/`on` are booleans, `0x1f` is
/// an integer, …). Quoted and block scalars are always strings; `!!str` forces a string.
fn resolve_scalar(text: String, style: TScalarStyle, tag: Option<&Tag>) -> Value {
    let forced = tag.map(|t| (t.handle.as_str(), t.suffix.as_str()));
    if matches!(forced, Some(("!!", "str")) | Some(("!", _))) || style != TScalarStyle::Plain {
        return Value::Str(Zeroizing::new(text));
    }
    match text.as_str() {
        "y" | "Y" | "yes" | "Yes" | "YES" | "true" | "True" | "TRUE" | "on" | "On" | "ON" => {
            return Value::Bool(true)
        }
        "n" | "N" | "no" | "No" | "NO" | "false" | "False" | "FALSE" | "off" | "Off" | "OFF" => {
            return Value::Bool(false)
        }
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        ".nan" | ".NaN" | ".NAN" => return Value::Float(f64::NAN),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return Value::Float(f64::INFINITY)
        }
        "-.inf" | "-.Inf" | "-.INF" => return Value::Float(f64::NEG_INFINITY),
        _ => {}
    }
    if text.starts_with(|c: char| c.is_ascii_digit() || matches!(c, '+' | '-' | '.')) {
        let plain: String = text.chars().filter(|c| *c != '_').collect();
        if let Some(i) = parse_go_int(&plain) {
            return Value::Int(i);
        }
        if is_yaml_float(&plain) {
            if let Ok(f) = plain.parse::<f64>() {
                return Value::Float(f);
            }
        }
    }
    Value::Str(Zeroizing::new(text))
}

/// `strconv.ParseInt(s, 0, 64)` plus go-yaml's `0b` handling.
fn parse_go_int(s: &str) -> Option<i64> {
    let (negative, digits) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let (radix, body) = if let Some(b) = digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
    {
        (16, b)
    } else if let Some(b) = digits
        .strip_prefix("0b")
        .or_else(|| digits.strip_prefix("0B"))
    {
        (2, b)
    } else if let Some(b) = digits
        .strip_prefix("0o")
        .or_else(|| digits.strip_prefix("0O"))
    {
        (8, b)
    } else if digits.len() > 1 && digits.starts_with('0') {
        (8, &digits[1..])
    } else {
        (10, digits)
    };
    if body.is_empty() || !body.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let magnitude = i128::from_str_radix(body, radix).ok()?;
    i64::try_from(if negative { -magnitude } else { magnitude }).ok()
}

/// go-yaml's `^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$`.
fn is_yaml_float(s: &str) -> bool {
    let s = s.strip_prefix(['-', '+']).unwrap_or(s);
    let (mantissa, exponent) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    let mantissa_ok = match mantissa.split_once('.') {
        Some(("", frac)) => digits(frac),
        Some((int, frac)) => digits(int) && (frac.is_empty() || digits(frac)),
        None => digits(mantissa),
    };
    let exponent_ok = exponent.is_none_or(|e| digits(e.strip_prefix(['-', '+']).unwrap_or(e)));
    mantissa_ok && exponent_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scalar(s: &str) -> Value {
        resolve_scalar(s.to_owned(), TScalarStyle::Plain, None)
    }

    #[test]
    fn yaml11_scalars_resolve_like_go_yaml_v2() {
        assert!(matches!(scalar("on"), Value::Bool(true)));
        assert!(matches!(scalar("No"), Value::Bool(false)));
        assert!(matches!(scalar("~"), Value::Null));
        assert!(matches!(scalar("0x10"), Value::Int(16)));
        assert!(matches!(scalar("010"), Value::Int(8)));
        assert!(matches!(scalar("1_000"), Value::Int(1000)));
        assert!(matches!(scalar("-5"), Value::Int(-5)));
        assert!(matches!(scalar("1.5"), Value::Float(f) if f == 1.5));
        assert!(matches!(scalar("1e3"), Value::Float(f) if f == 1000.0));
        assert!(matches!(scalar("3s"), Value::Str(_)));
        assert!(matches!(scalar("1.2.3"), Value::Str(_)));
        assert!(matches!(
            resolve_scalar("123".into(), TScalarStyle::DoubleQuoted, None),
            Value::Str(_)
        ));
    }

    #[test]
    fn duplicate_keys_are_reported_with_their_line() {
        let doc = parse(b"a: 1\nb: 2\na: 3\n").unwrap();
        assert_eq!(doc.duplicate_keys, vec![(3, "\"a\"".to_owned())]);
        let root = doc.root.unwrap();
        assert!(matches!(
            root.get("a").map(|n| &n.value),
            Some(Value::Int(3))
        ));
    }

    fn syntax(text: &str) -> (String, Option<usize>) {
        let err = parse(text.as_bytes()).err().expect("a syntax error");
        (err.message, err.line)
    }

    #[test]
    fn syntax_errors_use_go_yaml_texts_and_line_conventions() {
        // Scanner problems: the 1-based line.
        assert_eq!(
            syntax("a: b: c\n").0,
            "yaml: line 1: mapping values are not allowed in this context"
        );
        assert_eq!(
            syntax("a:\n\tb: c\n").0,
            "yaml: line 2: found character that cannot start any token"
        );
        // Parser problems: go-yaml prints the 0-based line; `line` stays the real one.
        assert_eq!(
            syntax("a:\n  b: c\n d: e\n"),
            (
                "yaml: line 2: did not find expected key".to_owned(),
                Some(3)
            )
        );
        assert_eq!(
            syntax("- a\nb: c\n").0,
            "yaml: line 1: did not find expected '-' indicator"
        );
        assert_eq!(
            syntax("a: \"\\q\"\n").0,
            "yaml: line 1: found unknown escape character"
        );
    }

    #[test]
    fn repeated_keys_keep_the_last_value_in_linear_time() {
        let mut text = String::new();
        for round in 0..2 {
            for i in 0..50_000 {
                text.push_str(&format!("k{i}: {round}\n"));
            }
        }
        text.push_str("k7: 9\n1: int\n\"1\": str\n");
        let doc = parse(text.as_bytes()).unwrap();
        assert_eq!(doc.duplicate_keys.len(), 50_001);
        let root = doc.root.unwrap();
        let Value::Map(entries) = &root.value else {
            panic!("a map")
        };
        // `1` and `"1"` are different YAML keys with the same JSON key: both kept, as before.
        assert_eq!(entries.len(), 50_002);
        assert!(matches!(
            root.get("k7").map(|n| &n.value),
            Some(Value::Int(9))
        ));
        assert!(matches!(
            root.get("k49999").map(|n| &n.value),
            Some(Value::Int(1))
        ));
    }

    #[test]
    fn documents_past_the_node_limit_are_refused_while_parsing() {
        let list = format!("[{}]", vec!["a"; 999].join(","));
        assert!(parse_with_limit(list.as_bytes(), 1000).is_ok());
        let list = format!("[{}]", vec!["a"; 1000].join(","));
        let err = parse_with_limit(list.as_bytes(), 1000).err().unwrap();
        assert_eq!(
            err.message,
            "document has more than 1000 YAML nodes (atrest's limit, to bound memory)"
        );
        // Expanded aliases count as built nodes.
        let aliased = format!("a: &x [{}]\nb: [*x, *x]\n", vec!["a"; 400].join(","));
        assert!(parse_with_limit(aliased.as_bytes(), 1000).is_err());
    }

    #[test]
    fn deep_nesting_is_refused_not_overflowed() {
        let deep = "[".repeat(100_000);
        assert!(parse(deep.as_bytes()).is_err());
    }

    #[test]
    fn alias_bombs_are_refused() {
        let mut doc = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let prev = format!("*a{}", i - 1);
            doc.push_str(&format!("a{i}: &a{i} [{}]\n", vec![prev; 10].join(", ")));
        }
        assert!(parse(doc.as_bytes())
            .err()
            .unwrap()
            .message
            .contains("excessive aliasing"));
    }
}
