//! A YAML document as a tree of nodes that remember where they start (and, for collections, where
//! the parser saw them end) in the source text. `apiserver enable/disable` locate what to change
//! with it and then edit the text line by line, so every byte outside the edited spots is kept —
//! re-serialising would reorder keys, drop comments and change quoting.

use yaml_rust2::parser::{Event, Parser};
use yaml_rust2::scanner::TScalarStyle;

/// A position in the source: 0-based line, 0-based character column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
}

#[derive(Debug, Clone)]
pub enum Kind {
    Scalar(String, TScalarStyle),
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
    /// An alias (`*name`); never edited.
    Alias,
}

#[derive(Debug, Clone)]
pub struct Node {
    pub kind: Kind,
    pub start: Pos,
    /// Collections: where the parser emitted the end event (start of the next token, or end of
    /// input). Scalars: same as `start`.
    pub end: Pos,
}

/// A parse error with its 1-based line, as editors show it.
#[derive(Debug, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct ParseError {
    pub line: usize,
    pub message: String,
}

impl Node {
    /// The value of `key` in a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.entry(key).map(|(_, v)| v)
    }

    /// The key node and value node of `key` in a mapping.
    pub fn entry(&self, key: &str) -> Option<(&Node, &Node)> {
        match &self.kind {
            Kind::Map(entries) => entries
                .iter()
                .find(|(k, _)| k.as_str() == Some(key))
                .map(|(k, v)| (k, v)),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.kind {
            Kind::Scalar(s, _) => Some(s),
            _ => None,
        }
    }

    pub fn items(&self) -> Option<&[Node]> {
        match &self.kind {
            Kind::Seq(items) => Some(items),
            _ => None,
        }
    }

    pub fn entries(&self) -> Option<&[(Node, Node)]> {
        match &self.kind {
            Kind::Map(entries) => Some(entries),
            _ => None,
        }
    }

    /// An empty plain scalar (`key:` with nothing after it): YAML null.
    pub fn is_null(&self) -> bool {
        matches!(&self.kind, Kind::Scalar(s, TScalarStyle::Plain) if s.is_empty() || s == "null" || s == "~")
    }
}

/// Parses exactly one document.
pub fn parse(text: &str) -> Result<Node, ParseError> {
    let mut parser = Parser::new_from_str(text);
    let mut stack: Vec<Partial> = Vec::new();
    let mut docs: Vec<Node> = Vec::new();
    loop {
        let (event, mark) = parser.next_token().map_err(|e| ParseError {
            line: e.marker().line(),
            message: e.info().to_string(),
        })?;
        let pos = Pos {
            line: mark.line().saturating_sub(1),
            col: mark.col(),
        };
        let done = match event {
            Event::StreamEnd => break,
            Event::Nothing | Event::StreamStart | Event::DocumentStart | Event::DocumentEnd => None,
            Event::Alias(_) => Some(Node {
                kind: Kind::Alias,
                start: pos,
                end: pos,
            }),
            Event::Scalar(value, style, _, _) => Some(Node {
                kind: Kind::Scalar(value, style),
                start: pos,
                end: pos,
            }),
            Event::SequenceStart(..) => {
                stack.push(Partial::Seq(pos, Vec::new()));
                None
            }
            Event::MappingStart(..) => {
                stack.push(Partial::Map(pos, Vec::new(), None));
                None
            }
            Event::SequenceEnd | Event::MappingEnd => match stack.pop() {
                Some(Partial::Seq(start, items)) => Some(Node {
                    kind: Kind::Seq(items),
                    start,
                    end: pos,
                }),
                Some(Partial::Map(start, entries, None)) => Some(Node {
                    // The parser reports a block mapping where it recognised it (after its first
                    // key); the first key is where it starts in the text.
                    start: entries.first().map(|(k, _)| k.start).unwrap_or(start),
                    kind: Kind::Map(entries),
                    end: pos,
                }),
                _ => {
                    return Err(ParseError {
                        line: pos.line + 1,
                        message: "unbalanced collection".into(),
                    })
                }
            },
        };
        if let Some(node) = done {
            match stack.last_mut() {
                Some(Partial::Seq(_, items)) => items.push(node),
                Some(Partial::Map(_, entries, pending)) => match pending.take() {
                    None => *pending = Some(node),
                    Some(key) => entries.push((key, node)),
                },
                None => docs.push(node),
            }
        }
    }
    match docs.len() {
        1 => Ok(docs.pop().expect("one document")),
        0 => Err(ParseError {
            line: 1,
            message: "the file is empty".into(),
        }),
        n => Err(ParseError {
            line: docs[1].start.line + 1,
            message: format!("{n} YAML documents; a static-pod manifest holds one Pod"),
        }),
    }
}

enum Partial {
    Seq(Pos, Vec<Node>),
    Map(Pos, Vec<(Node, Node)>, Option<Node>),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_where_nodes_start() {
        let text = "a:\n- hostPath:\n    path: /x\n  name: n\n- k: v\nb: [1, 2]\n";
        let root = parse(text).unwrap();
        let items = root.get("a").unwrap().items().unwrap();
        assert_eq!(items[0].start, Pos { line: 1, col: 2 }, "{:?}", items[0]);
        assert_eq!(items[1].start, Pos { line: 4, col: 2 });
        assert_eq!(root.get("a").unwrap().end.line, 5);
        assert_eq!(root.get("b").unwrap().start, Pos { line: 5, col: 3 });
        assert!(parse("a: 1\n---\nb: 2\n").is_err());
    }
}
