//! JSON front end (files whose first non-blank byte is `{`, as kube-apiserver's decoder decides):
//! serde_json's parser → [`Node`] tree, keeping repeated keys so strict mode can report them.
//! JSON nodes carry no line numbers.

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use zeroize::Zeroizing;

use super::node::{Entry, Node, Value, MAX_DEPTH};

/// kube-apiserver picks its JSON decoder when the data starts with `{` after blanks.
pub(crate) fn looks_like_json(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
        == Some(&b'{')
}

/// Parses `bytes`; the error is serde_json's description of the syntax problem.
pub(crate) fn parse(bytes: &[u8]) -> Result<Node, String> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let node = NodeSeed { depth: 0 }
        .deserialize(&mut de)
        .map_err(|e| e.to_string())?;
    de.end().map_err(|e| e.to_string())?;
    Ok(node)
}

struct NodeSeed {
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for NodeSeed {
    type Value = Node;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Node, D::Error> {
        deserializer.deserialize_any(NodeVisitor { depth: self.depth })
    }
}

struct NodeVisitor {
    depth: usize,
}

fn node(value: Value) -> Node {
    Node::new(value, None)
}

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> Result<Node, E> {
        Ok(node(Value::Null))
    }

    fn visit_bool<E>(self, v: bool) -> Result<Node, E> {
        Ok(node(Value::Bool(v)))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Node, E> {
        Ok(node(Value::Int(v)))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Node, E> {
        Ok(node(
            i64::try_from(v)
                .map(Value::Int)
                .unwrap_or(Value::Float(v as f64)),
        ))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Node, E> {
        Ok(node(Value::Float(v)))
    }

    fn visit_str<E>(self, v: &str) -> Result<Node, E> {
        Ok(node(Value::Str(Zeroizing::new(v.to_owned()))))
    }

    fn visit_string<E>(self, v: String) -> Result<Node, E> {
        Ok(node(Value::Str(Zeroizing::new(v))))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let depth = self.child_depth::<A::Error>()?;
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(NodeSeed { depth })? {
            items.push(item);
        }
        Ok(node(Value::Seq(items)))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let depth = self.child_depth::<A::Error>()?;
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            let value = map.next_value_seed(NodeSeed { depth })?;
            entries.push(Entry {
                key,
                key_line: None,
                value,
            });
        }
        Ok(node(Value::Map(entries)))
    }
}

impl NodeVisitor {
    fn child_depth<E: serde::de::Error>(&self) -> Result<usize, E> {
        if self.depth >= MAX_DEPTH {
            return Err(E::custom(format!("exceeded max depth of {MAX_DEPTH}")));
        }
        Ok(self.depth + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_keys_are_kept() {
        let n = parse(br#"{"a":1,"a":"x"}"#).unwrap();
        let Value::Map(entries) = &n.value else {
            panic!("not a map")
        };
        assert_eq!(entries.len(), 2);
    }

    #[test]
    fn json_detection_skips_blanks() {
        assert!(looks_like_json(b" \n{\"a\":1}"));
        assert!(!looks_like_json(b"a: {}"));
        assert!(!looks_like_json(b"[1]"));
    }

    #[test]
    fn trailing_garbage_and_deep_nesting_fail() {
        assert!(parse(b"{} x").is_err());
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(parse(format!("{{\"a\":{deep}}}").as_bytes()).is_err());
    }
}
