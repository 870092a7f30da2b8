//! Rules F3/F4 before any field is decoded: the object's apiVersion/kind must be present and be
//! one of the two type identifiers kube-apiserver registers for EncryptionConfiguration.

use super::decode::DecodeError;
use super::error::Problem;
use super::gotext::quote;
use super::node::{Entry, Node, Value};

const GROUP: &str = "apiserver.config.k8s.io";
/// The scheme name kube-apiserver's runtime prints in "not registered" errors (a Go call site).
const SCHEME: &str = "pkg/runtime/scheme.go:111";
/// Kinds the decoder knows but that are not an EncryptionConfiguration (rule F4).
const OTHER_KINDS_V1: &[&str] = &[
    "AdmissionConfiguration",
    "TracingConfiguration",
    "WatchEvent",
    "ListOptions",
    "GetOptions",
    "DeleteOptions",
    "CreateOptions",
    "UpdateOptions",
    "PatchOptions",
];
/// meta/v1 kinds registered for every version.
const UNVERSIONED_KINDS: &[&str] = &[
    "Status",
    "APIVersions",
    "APIGroupList",
    "APIGroup",
    "APIResourceList",
];
const FIND_KIND_TYPE: &str =
    "struct { APIVersion string \"json:\\\"apiVersion,omitempty\\\"\"; Kind string \"json:\\\"kind,omitempty\\\"\" }";

/// apiVersion/kind: present, and registered as an EncryptionConfiguration (F3/F4).
pub(crate) fn check_type(root: Option<&Node>, bytes: &[u8]) -> Result<(), DecodeError> {
    let fail = |m: String| Err(DecodeError::decoding(m, None));
    let (api_version, kind) = match root {
        None => (String::new(), String::new()),
        Some(node) => match &node.value {
            Value::Null => (String::new(), String::new()),
            Value::Map(entries) => (type_meta_field(entries, "apiVersion")?, type_meta_field(entries, "kind")?),
            _ => {
                return fail(format!(
                    "couldn't get version/kind; json parse error: json: cannot unmarshal {} into Go value of type {FIND_KIND_TYPE}",
                    node.json_kind()
                ))
            }
        },
    };
    let (group, version) = match api_version.as_str() {
        "" | "/" => ("", ""),
        gv => match gv.matches('/').count() {
            0 => ("", gv),
            1 => gv.split_once('/').unwrap_or(("", gv)),
            _ => return fail(format!("unexpected GroupVersion string: {gv}")),
        },
    };
    // Upstream echoes the whole file here, secrets included; we echo it with secrets redacted.
    let original = redact_secrets(&String::from_utf8_lossy(bytes), root);
    if kind.is_empty() {
        return fail(format!("Object 'Kind' is missing in '{original}'"));
    }
    if version.is_empty() {
        return fail(format!("Object 'apiVersion' is missing in '{original}'"));
    }
    let group_version = if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    };
    match (group, version, kind.as_str()) {
        (GROUP, "v1", "EncryptionConfiguration") | ("", "v1", "EncryptionConfig") => Ok(()),
        (GROUP, "v1", other) if OTHER_KINDS_V1.contains(&other) => {
            unexpected(group, version, other)
        }
        (_, _, other) if UNVERSIONED_KINDS.contains(&other) => unexpected(group, version, other),
        _ => fail(format!(
            "no kind {} is registered for version {} in scheme {}",
            quote(&kind),
            quote(&group_version),
            quote(SCHEME)
        )),
    }
}

fn unexpected(group: &str, version: &str, kind: &str) -> Result<(), DecodeError> {
    Err(DecodeError {
        problem: Problem::new(format!(
            "got unexpected config type: {group}/{version}, Kind={kind}"
        )),
        unexpected_type: true,
    })
}

/// `encoding/json` (case-insensitive) lookup of a TypeMeta string field.
fn type_meta_field(entries: &[Entry], name: &str) -> Result<String, DecodeError> {
    let found = entries.iter().rev().find(|e| e.key == name).or_else(|| {
        entries
            .iter()
            .rev()
            .find(|e| e.key.eq_ignore_ascii_case(name))
    });
    match found.map(|e| &e.value.value) {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::Str(s)) => Ok(s.to_string()),
        Some(_) => Err(DecodeError::decoding(
            format!(
                "couldn't get version/kind; json parse error: json: cannot unmarshal {} into Go struct field .{name} of type string",
                found.map_or("null", |e| e.value.json_kind())
            ),
            found.and_then(|e| e.key_line),
        )),
    }
}

/// `text` with every `secret:` value found in the tree replaced by `REDACTED`.
fn redact_secrets(text: &str, root: Option<&Node>) -> String {
    let mut secrets: Vec<&str> = Vec::new();
    let mut stack: Vec<&Node> = root.into_iter().collect();
    while let Some(node) = stack.pop() {
        match &node.value {
            Value::Seq(items) => stack.extend(items.iter()),
            Value::Map(entries) => {
                for entry in entries {
                    match &entry.value.value {
                        Value::Str(s) if entry.key == "secret" && !s.is_empty() => {
                            secrets.push(s.as_str())
                        }
                        _ => stack.push(&entry.value),
                    }
                }
            }
            _ => {}
        }
    }
    // Longest first, so that a secret containing another is replaced whole.
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    let mut out = text.to_owned();
    for secret in secrets {
        out = out.replace(secret, "REDACTED");
    }
    // The decoded value may be written differently (JSON `\/` escapes, YAML folding): also blank
    // whatever follows a `secret` key on its line.
    redact_after_secret_keys(&out)
}

/// Replaces the value written after every `secret:` / `"secret":` with `REDACTED`.
fn redact_after_secret_keys(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("secret") {
        let (before, after_key) = rest.split_at(at + "secret".len());
        out.push_str(before);
        let after_quote = after_key.strip_prefix(['"', '\'']).unwrap_or(after_key);
        let Some(value) = after_quote
            .trim_start_matches([' ', '\t'])
            .strip_prefix(':')
        else {
            rest = after_key;
            continue;
        };
        let value = value.trim_start_matches([' ', '\t']);
        let value_len = written_value_len(value);
        out.push_str(&after_key[..after_key.len() - value.len()]);
        match value.chars().next() {
            _ if value_len == 0 => {}
            Some(quote @ ('"' | '\'')) => {
                out.extend([quote.to_string(), "REDACTED".to_owned(), quote.to_string()])
            }
            _ => out.push_str("REDACTED"),
        }
        rest = &value[value_len..];
    }
    out.push_str(rest);
    out
}

/// Length of a quoted string (through its closing quote) or of a plain value (to the end of the
/// line or the next `,`/`}`).
fn written_value_len(value: &str) -> usize {
    let mut chars = value.char_indices();
    match chars.next() {
        Some((_, quote @ ('"' | '\''))) => {
            let mut escaped = false;
            for (i, c) in chars {
                if c == quote && !escaped {
                    return i + c.len_utf8();
                }
                escaped = quote == '"' && c == '\\' && !escaped;
            }
            value.len()
        }
        // Block scalars continue on later lines; the value-based pass has replaced them.
        Some((_, '|' | '>')) | None => 0,
        Some(_) => value.find(['\n', ',', '}']).unwrap_or(value.len()),
    }
}
