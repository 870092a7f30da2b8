//! The document tree both front ends (YAML, JSON) produce: JSON-like values with the line each
//! node starts on, so later stages can name the field *and* the line of a problem.

use zeroize::Zeroizing;

/// Deepest nesting accepted. Far beyond any real config; keeps recursive walks off the stack limit.
pub(crate) const MAX_DEPTH: usize = 256;

/// A scalar or container as `encoding/json` would see it after sigs.k8s.io/yaml's conversion.
#[derive(Debug, Clone)]
pub(crate) enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    /// Zeroized on drop: strings may be key secrets.
    Str(Zeroizing<String>),
    Seq(Vec<Node>),
    Map(Vec<Entry>),
}

#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub value: Value,
    /// 1-based line; `None` for JSON input.
    pub line: Option<usize>,
}

#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub key: String,
    pub key_line: Option<usize>,
    pub value: Node,
}

impl Node {
    pub fn new(value: Value, line: Option<usize>) -> Self {
        Self { value, line }
    }

    /// The JSON type name `encoding/json` uses in "cannot unmarshal X into …".
    pub fn json_kind(&self) -> &'static str {
        match self.value {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Int(_) | Value::Float(_) => "number",
            Value::Str(_) => "string",
            Value::Seq(_) => "array",
            Value::Map(_) => "object",
        }
    }

    #[cfg(test)]
    /// The value of `key` in a mapping (the last one if repeated, as `encoding/json` keeps).
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.value {
            Value::Map(entries) => entries
                .iter()
                .rev()
                .find(|e| e.key == key)
                .map(|e| &e.value),
            _ => None,
        }
    }
}

impl Drop for Node {
    // Flatten the drop of deep trees iteratively so that no input can overflow the stack.
    fn drop(&mut self) {
        let mut stack: Vec<Node> = Vec::new();
        take_children(&mut self.value, &mut stack);
        while let Some(mut node) = stack.pop() {
            take_children(&mut node.value, &mut stack);
        }
    }
}

fn take_children(value: &mut Value, stack: &mut Vec<Node>) {
    match value {
        Value::Seq(items) => stack.append(items),
        Value::Map(entries) => stack.extend(std::mem::take(entries).into_iter().map(|mut e| {
            std::mem::replace(
                &mut e.value,
                Node {
                    value: Value::Null,
                    line: None,
                },
            )
        })),
        _ => {}
    }
}
