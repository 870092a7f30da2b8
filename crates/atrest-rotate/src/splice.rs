//! In-place edits of a block-style YAML config: find the byte ranges of the items of
//! `resources[i].providers` and of `providers[j].<kind>.keys`, then rebuild a list from existing
//! items (byte for byte) and new ones. Everything outside the edited lists is kept exactly.
//!
//! Only what yaml-rust2's event markers locate unambiguously is edited: every item must start on its
//! own line with `- `. Anything else (JSON, flow style `[...]`, `-` alone on a line) is reported as
//! [`Unsupported`]; the caller then renders the file canonically. Callers always load the result
//! with the core loader and compare it with the intended model, so an edit can never silently
//! change meaning.

use std::ops::Range;

use yaml_rust2::parser::{Event, Parser};

/// CURRENT cannot be edited in place (the reason is shown to the operator).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsupported(pub String);

/// A block sequence: each item's byte range (whole lines, trailing comments included) and the
/// columns new items copy.
#[derive(Debug, Clone)]
pub struct SeqLoc {
    pub items: Vec<Range<usize>>,
    /// Column of the items' `-`.
    pub dash_col: usize,
    /// Column of the items' content (after `- `).
    pub content_col: usize,
}

/// One piece of a rebuilt list.
pub enum Piece<'a> {
    /// Item `n` of the original list, unchanged.
    Keep(usize),
    /// New text (whole lines).
    Text(&'a str),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Key(String),
    Idx(usize),
}

enum Container {
    Seq {
        path: Vec<Seg>,
        next: usize,
    },
    Map {
        path: Vec<Seg>,
        key: Option<String>,
        awaiting_key: bool,
        /// Position in `starts` of this mapping's own start: a block mapping's event marker points
        /// past its first key, so the first key's marker corrects it.
        start: usize,
    },
}

struct NodeMark {
    path: Vec<Seg>,
    /// Char index of the node's first character.
    index: usize,
}

/// The located structure of a YAML document.
pub struct Located<'t> {
    text: &'t str,
    /// Char index → byte offset (one extra entry for the end).
    offsets: Vec<usize>,
    starts: Vec<NodeMark>,
    /// Sequence ends, by path.
    ends: Vec<NodeMark>,
}

impl<'t> Located<'t> {
    /// Parses `text` (which must end with a newline) and records where every node starts.
    pub fn parse(text: &'t str) -> Result<Located<'t>, Unsupported> {
        if !text.ends_with('\n') {
            return Err(Unsupported("the file does not end with a newline".into()));
        }
        let mut offsets: Vec<usize> = text.char_indices().map(|(i, _)| i).collect();
        offsets.push(text.len());
        let mut parser = Parser::new_from_str(text);
        let mut stack: Vec<Container> = Vec::new();
        let mut starts = Vec::new();
        let mut ends = Vec::new();
        loop {
            let (event, mark) = parser
                .next_token()
                .map_err(|e| Unsupported(format!("YAML: {e}")))?;
            let is_start = matches!(
                event,
                Event::Scalar(..)
                    | Event::SequenceStart(..)
                    | Event::MappingStart(..)
                    | Event::Alias(_)
            );
            if is_start {
                let path = match stack.last_mut() {
                    Some(Container::Seq { path: p, next }) => {
                        let mut full = p.clone();
                        full.push(Seg::Idx(*next));
                        *next += 1;
                        full
                    }
                    Some(Container::Map {
                        path: p,
                        key,
                        awaiting_key,
                        start,
                    }) => {
                        if *awaiting_key {
                            if let Some(s) = starts.get_mut(*start) {
                                let s: &mut NodeMark = s;
                                s.index = s.index.min(mark.index());
                            }
                            *key = match &event {
                                Event::Scalar(s, ..) => Some(s.clone()),
                                _ => None,
                            };
                            *awaiting_key = false;
                            if !matches!(event, Event::Scalar(..) | Event::Alias(_)) {
                                return Err(Unsupported("a complex mapping key".into()));
                            }
                            continue;
                        }
                        let mut full = p.clone();
                        full.push(Seg::Key(key.clone().unwrap_or_default()));
                        *awaiting_key = true;
                        full
                    }
                    None => Vec::new(),
                };
                starts.push(NodeMark {
                    path: path.clone(),
                    index: mark.index(),
                });
                match event {
                    Event::SequenceStart(..) => stack.push(Container::Seq { path, next: 0 }),
                    Event::MappingStart(..) => stack.push(Container::Map {
                        path,
                        key: None,
                        awaiting_key: true,
                        start: starts.len() - 1,
                    }),
                    _ => {}
                }
                continue;
            }
            match event {
                Event::SequenceEnd | Event::MappingEnd => {
                    if let Some(Container::Seq { path, .. }) = stack.pop() {
                        ends.push(NodeMark {
                            path,
                            index: mark.index(),
                        });
                    }
                }
                Event::DocumentEnd | Event::StreamEnd => break,
                _ => {}
            }
        }
        Ok(Located {
            text,
            offsets,
            starts,
            ends,
        })
    }

    fn byte(&self, char_index: usize) -> usize {
        self.offsets
            .get(char_index)
            .copied()
            .unwrap_or(self.text.len())
    }

    fn line_start(&self, byte: usize) -> usize {
        self.text[..byte].rfind('\n').map_or(0, |i| i + 1)
    }

    /// `resources[entry].providers`.
    pub fn providers(&self, entry: usize) -> Result<SeqLoc, Unsupported> {
        self.seq(&[
            Seg::Key("resources".into()),
            Seg::Idx(entry),
            Seg::Key("providers".into()),
        ])
    }

    /// `resources[entry].providers[provider].<kind>.keys`.
    pub fn keys(&self, entry: usize, provider: usize, kind: &str) -> Result<SeqLoc, Unsupported> {
        self.seq(&[
            Seg::Key("resources".into()),
            Seg::Idx(entry),
            Seg::Key("providers".into()),
            Seg::Idx(provider),
            Seg::Key(kind.into()),
            Seg::Key("keys".into()),
        ])
    }

    fn seq(&self, path: &[Seg]) -> Result<SeqLoc, Unsupported> {
        let shown = || {
            path.iter()
                .map(|s| match s {
                    Seg::Key(k) => k.clone(),
                    Seg::Idx(i) => format!("[{i}]"),
                })
                .collect::<Vec<_>>()
                .join(".")
                .replace(".[", "[")
        };
        let start = self
            .starts
            .iter()
            .find(|n| n.path == path)
            .ok_or_else(|| Unsupported(format!("{} not found", shown())))?;
        if self.text[self.byte(start.index)..].starts_with('[') {
            return Err(Unsupported(format!(
                "{} is a flow sequence `[...]`",
                shown()
            )));
        }
        let end = self
            .ends
            .iter()
            .find(|n| n.path == path)
            .ok_or_else(|| Unsupported(format!("{} has no end", shown())))?;
        let mut starts = Vec::new();
        let mut dash_col = None;
        let mut content_col = None;
        for (i, item) in self
            .starts
            .iter()
            .filter(|n| n.path.len() == path.len() + 1 && n.path.starts_with(path))
            .enumerate()
        {
            if item.path.last() != Some(&Seg::Idx(i)) {
                return Err(Unsupported(format!("{} items out of order", shown())));
            }
            let at = self.byte(item.index);
            let line = self.line_start(at);
            let before = &self.text[line..at];
            let trimmed = before.trim_end_matches(' ');
            let indent = trimmed
                .strip_suffix('-')
                .filter(|i| i.chars().all(|c| c == ' '));
            let Some(indent) = indent else {
                return Err(Unsupported(format!(
                    "{}[{i}] does not start its line with `- `",
                    shown()
                )));
            };
            let (d, c) = (indent.len(), before.chars().count());
            if dash_col.is_some_and(|x| x != d) || content_col.is_some_and(|x| x != c) {
                return Err(Unsupported(format!("{} items are not aligned", shown())));
            }
            dash_col = Some(d);
            content_col = Some(c);
            starts.push(line);
        }
        let (Some(dash_col), Some(content_col)) = (dash_col, content_col) else {
            return Err(Unsupported(format!("{} is empty", shown())));
        };
        let end_byte = self.byte(end.index);
        let end_line = self.line_start(end_byte);
        if !self.text[end_line..end_byte].chars().all(|c| c == ' ') {
            return Err(Unsupported(format!("{} ends mid-line", shown())));
        }
        let end_line = if end_byte == self.text.len() {
            self.text.len()
        } else {
            end_line
        };
        let mut items = Vec::with_capacity(starts.len());
        for (i, s) in starts.iter().enumerate() {
            let e = starts.get(i + 1).copied().unwrap_or(end_line);
            if e <= *s {
                return Err(Unsupported(format!("{} items overlap", shown())));
            }
            items.push(*s..e);
        }
        Ok(SeqLoc {
            items,
            dash_col,
            content_col,
        })
    }

    pub fn text(&self) -> &'t str {
        self.text
    }
}

/// `text` with the items of `seq` replaced by `pieces` (in order).
pub fn rebuild(text: &str, seq: &SeqLoc, pieces: &[Piece<'_>]) -> String {
    let (Some(first), Some(last)) = (seq.items.first(), seq.items.last()) else {
        return text.to_string();
    };
    let mut out = String::with_capacity(text.len() + 256);
    out.push_str(&text[..first.start]);
    for piece in pieces {
        match piece {
            Piece::Keep(n) => {
                let item = &text[seq.items[*n].clone()];
                out.push_str(item);
                if !item.ends_with('\n') {
                    out.push('\n');
                }
            }
            Piece::Text(t) => out.push_str(t),
        }
    }
    out.push_str(&text[last.end..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "# header comment\napiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources:\n      - secrets\n    providers:\n      - aescbc:\n          keys:\n            - name: key1\n              secret: c2VjcmV0IGlzIHNlY3VyZQ==\n      # keep reading plaintext\n      - identity: {}\n  - resources: [\"*.*\"]\n    providers:\n    - identity: {}\n";

    #[test]
    fn locates_providers_and_keys() {
        let loc = Located::parse(DOC).unwrap();
        let p = loc.providers(0).unwrap();
        assert_eq!(p.items.len(), 2);
        assert_eq!((p.dash_col, p.content_col), (6, 8));
        assert!(DOC[p.items[0].clone()].starts_with("      - aescbc:"));
        assert!(DOC[p.items[0].clone()].ends_with("# keep reading plaintext\n"));
        assert_eq!(&DOC[p.items[1].clone()], "      - identity: {}\n");
        let k = loc.keys(0, 0, "aescbc").unwrap();
        assert_eq!(k.items.len(), 1);
        assert_eq!((k.dash_col, k.content_col), (12, 14));
        let p1 = loc.providers(1).unwrap();
        assert_eq!((p1.dash_col, p1.content_col), (4, 6));
        assert_eq!(&DOC[p1.items[0].clone()], "    - identity: {}\n");
    }

    #[test]
    fn rebuild_keeps_everything_else() {
        let loc = Located::parse(DOC).unwrap();
        let p = loc.providers(0).unwrap();
        let out = rebuild(
            DOC,
            &p,
            &[
                Piece::Keep(1),
                Piece::Text("      - identity: {}\n"),
                Piece::Keep(0),
            ],
        );
        assert!(out.starts_with("# header comment\n"));
        assert!(out.contains(
            "    providers:\n      - identity: {}\n      - identity: {}\n      - aescbc:"
        ));
        assert!(out.ends_with("  - resources: [\"*.*\"]\n    providers:\n    - identity: {}\n"));
    }

    #[test]
    fn flow_style_is_unsupported() {
        let doc = "resources:\n  - resources: [secrets]\n    providers: [{identity: {}}]\n";
        let loc = Located::parse(doc).unwrap();
        assert!(loc.providers(0).is_err());
        let json = "{\"resources\": [{\"resources\": [\"secrets\"], \"providers\": [{\"identity\": {}}]}]}\n";
        let loc = Located::parse(json).unwrap();
        assert!(loc.providers(0).is_err());
    }
}
