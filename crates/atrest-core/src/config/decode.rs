//! Decoding (rule F3/F4): bytes → [`RawConfig`], the way kube-apiserver's strict universal decoder
//! does it: pick JSON or YAML, find apiVersion/kind, check the type is registered, then decode with
//! unknown and duplicate fields as errors, type mismatches and bad durations as fatal errors.

use zeroize::Zeroizing;

use super::error::Problem;
use super::gotext::{parse_duration, quote};
use super::node::{Node, Value};
use super::raw::{RawConfig, RawKey, RawKeys, RawKms, RawProvider, RawResource};
use super::{json, typemeta, yaml};

/// A decoding failure: the text after `error decoding encryption provider configuration file "…": `
/// (or the complete F4 text), and the line of its first problem.
pub(crate) struct DecodeError {
    pub problem: Problem,
    /// F4 is not wrapped in "error decoding …".
    pub unexpected_type: bool,
}

impl DecodeError {
    pub(crate) fn decoding(message: String, line: Option<usize>) -> Self {
        Self {
            problem: Problem::new(message).at_line(line),
            unexpected_type: false,
        }
    }
}

pub(crate) fn decode(bytes: &[u8]) -> Result<RawConfig, DecodeError> {
    let is_json = json::looks_like_json(bytes);
    let (root, duplicate_keys) = if is_json {
        let root = json::parse(bytes).map_err(|e| {
            DecodeError::decoding(
                format!("couldn't get version/kind; json parse error: {e}"),
                None,
            )
        })?;
        (Some(root), Vec::new())
    } else {
        let doc = yaml::parse(bytes).map_err(|e| DecodeError::decoding(e.message, e.line))?;
        (doc.root, doc.duplicate_keys)
    };

    typemeta::check_type(root.as_ref(), bytes)?;

    let mut decoder = Decoder {
        is_json,
        ..Decoder::default()
    };
    let mut config = RawConfig::default();
    if let Some(root) = &root {
        decoder.config(root, &mut config);
    }
    config.lines = std::mem::take(&mut decoder.lines);
    if let Some(fatal) = decoder.fatal {
        return Err(DecodeError::decoding(fatal.message, fatal.line));
    }
    let mut strict: Vec<String> = Vec::new();
    let mut first_line = None;
    if !duplicate_keys.is_empty() {
        let lines: Vec<String> = duplicate_keys
            .iter()
            .map(|(line, key)| format!("  line {line}: key {key} already set in map"))
            .collect();
        strict.push(format!("yaml: unmarshal errors:\n{}", lines.join("\n")));
        first_line = duplicate_keys.first().map(|(line, _)| *line);
    }
    for (message, line) in &decoder.strict {
        strict.push(message.clone());
        first_line = first_line.or(*line);
    }
    if !strict.is_empty() {
        return Err(DecodeError::decoding(
            format!("strict decoding error: {}", strict.join(", ")),
            first_line,
        ));
    }
    Ok(config)
}

struct Located {
    message: String,
    line: Option<usize>,
}

/// Walks the tree into the typed raw model, collecting strict errors and the first fatal one.
#[derive(Default)]
struct Decoder {
    /// JSON input: repeated keys are reported here (YAML reports them while parsing), and
    /// numbers are decoded from their literal text.
    is_json: bool,
    strict: Vec<(String, Option<usize>)>,
    fatal: Option<Located>,
    /// A custom unmarshaler (durations) failing stops `encoding/json` at once.
    aborted: bool,
    lines: std::collections::HashMap<String, usize>,
}

/// Where a field sits, for error texts: the JSON path with indices (`resources[0].providers`) and
/// Go's struct-field notation (`ResourceConfiguration.resources.providers`).
#[derive(Clone)]
struct Place {
    path: String,
    dotted: String,
    go_struct: &'static str,
}

impl Place {
    fn child(&self, go_struct: &'static str, key: &str) -> Place {
        Place {
            path: if self.path.is_empty() {
                key.to_owned()
            } else {
                format!("{}.{key}", self.path)
            },
            dotted: if self.dotted.is_empty() {
                key.to_owned()
            } else {
                format!("{}.{key}", self.dotted)
            },
            go_struct,
        }
    }

    fn index(&self, i: usize) -> Place {
        Place {
            path: format!("{}[{i}]", self.path),
            dotted: self.dotted.clone(),
            go_struct: self.go_struct,
        }
    }
}

impl Decoder {
    fn record_line(&mut self, place: &Place, line: Option<usize>) {
        if let Some(line) = line {
            self.lines.entry(place.path.clone()).or_insert(line);
        }
    }

    fn type_error(&mut self, node: &Node, place: &Place, go_type: &str) {
        if self.fatal.is_none() {
            let message = if place.dotted.is_empty() {
                format!(
                    "json: cannot unmarshal {} into Go value of type {go_type}",
                    node.json_kind()
                )
            } else {
                // Only numeric targets name the offending number (`number 1.5`).
                let found = if go_type == "int32" {
                    number_detail(node)
                } else {
                    node.json_kind().to_owned()
                };
                format!(
                    "json: cannot unmarshal {found} into Go struct field {}.{} of type {go_type}",
                    place.go_struct, place.dotted
                )
            };
            self.fatal = Some(Located {
                message,
                line: node.line,
            });
        }
    }

    /// Iterates an object's fields: known ones go to `visit`, unknown and repeated ones become
    /// strict errors. A non-object is a type error; `null` leaves the target at its zero value.
    fn object(
        &mut self,
        node: &Node,
        place: &Place,
        go_type: &str,
        known: &[&str],
        mut visit: impl FnMut(&mut Self, &str, &Node, Option<usize>),
    ) {
        let entries = match &node.value {
            Value::Map(entries) => entries,
            Value::Null => return,
            _ => return self.type_error(node, place, go_type),
        };
        let mut seen: Vec<&str> = Vec::new();
        for entry in entries {
            if self.aborted {
                return;
            }
            let field_path = if place.path.is_empty() {
                entry.key.clone()
            } else {
                format!("{}.{}", place.path, entry.key)
            };
            if !known.contains(&entry.key.as_str()) {
                self.strict.push((
                    format!("unknown field {}", quote(&field_path)),
                    entry.key_line,
                ));
                continue;
            }
            if self.is_json && seen.contains(&entry.key.as_str()) {
                self.strict.push((
                    format!("duplicate field {}", quote(&field_path)),
                    entry.key_line,
                ));
            }
            seen.push(&entry.key);
            visit(self, &entry.key, &entry.value, entry.key_line);
        }
    }

    fn list<'n>(&mut self, node: &'n Node, place: &Place, go_type: &str) -> Option<&'n [Node]> {
        match &node.value {
            Value::Seq(items) => Some(items),
            Value::Null => None,
            _ => {
                self.type_error(node, place, go_type);
                None
            }
        }
    }

    fn string(&mut self, node: &Node, place: &Place) -> String {
        match &node.value {
            Value::Str(s) => s.to_string(),
            Value::Null => String::new(),
            _ => {
                self.type_error(node, place, "string");
                String::new()
            }
        }
    }

    fn config(&mut self, root: &Node, out: &mut RawConfig) {
        let top = Place {
            path: String::new(),
            dotted: String::new(),
            go_struct: "EncryptionConfiguration",
        };
        self.object(
            root,
            &top,
            "v1.EncryptionConfiguration",
            &["apiVersion", "kind", "resources"],
            |d, key, value, line| {
                if key == "resources" {
                    let place = top.child("EncryptionConfiguration", "resources");
                    d.record_line(&place, line);
                    out.resources = d
                        .list(value, &place, "[]v1.ResourceConfiguration")
                        .map(|items| {
                            items
                                .iter()
                                .enumerate()
                                .map(|(i, item)| {
                                    let place = place.index(i);
                                    d.record_line(&place, item.line);
                                    d.resource(item, &place)
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                }
            },
        );
    }

    fn resource(&mut self, node: &Node, place: &Place) -> RawResource {
        let mut out = RawResource::default();
        self.object(
            node,
            place,
            "v1.ResourceConfiguration",
            &["resources", "providers"],
            |d, key, value, line| {
                let field = place.child("ResourceConfiguration", key);
                d.record_line(&field, line);
                let Some(items) = d.list(
                    value,
                    &field,
                    if key == "resources" {
                        "[]string"
                    } else {
                        "[]v1.ProviderConfiguration"
                    },
                ) else {
                    return;
                };
                for (i, item) in items.iter().enumerate() {
                    let at = field.index(i);
                    d.record_line(&at, item.line);
                    if key == "resources" {
                        let s = d.string(item, &at);
                        out.resources.push(s);
                    } else {
                        let p = d.provider(item, &at);
                        out.providers.push(p);
                    }
                }
            },
        );
        out
    }

    fn provider(&mut self, node: &Node, place: &Place) -> RawProvider {
        let mut out = RawProvider::default();
        let known = ["aesgcm", "aescbc", "secretbox", "identity", "kms"];
        self.object(
            node,
            place,
            "v1.ProviderConfiguration",
            &known,
            |d, key, value, line| {
                let field = place.child("ProviderConfiguration", key);
                d.record_line(&field, line);
                // A null provider field stays unset (Go: nil pointer).
                if matches!(value.value, Value::Null) {
                    return;
                }
                match key {
                    "aesgcm" => {
                        out.aesgcm =
                            Some(d.keys(value, &field, "v1.AESConfiguration", "AESConfiguration"))
                    }
                    "aescbc" => {
                        out.aescbc =
                            Some(d.keys(value, &field, "v1.AESConfiguration", "AESConfiguration"))
                    }
                    "secretbox" => {
                        out.secretbox = Some(d.keys(
                            value,
                            &field,
                            "v1.SecretboxConfiguration",
                            "SecretboxConfiguration",
                        ))
                    }
                    "identity" => {
                        d.object(
                            value,
                            &field,
                            "v1.IdentityConfiguration",
                            &[],
                            |_, _, _, _| {},
                        );
                        out.identity = Some(());
                    }
                    _ => out.kms = Some(d.kms(value, &field)),
                }
            },
        );
        out
    }

    fn keys(
        &mut self,
        node: &Node,
        place: &Place,
        go_type: &str,
        go_struct: &'static str,
    ) -> RawKeys {
        let mut out = RawKeys::default();
        self.object(node, place, go_type, &["keys"], |d, _, value, line| {
            let field = place.child(go_struct, "keys");
            d.record_line(&field, line);
            out.keys = d.list(value, &field, "[]v1.Key").map(|items| {
                items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| {
                        let at = field.index(i);
                        d.record_line(&at, item.line);
                        d.key(item, &at)
                    })
                    .collect()
            });
        });
        out
    }

    fn key(&mut self, node: &Node, place: &Place) -> RawKey {
        let mut out = RawKey::default();
        self.object(
            node,
            place,
            "v1.Key",
            &["name", "secret"],
            |d, key, value, line| {
                let field = place.child("Key", key);
                d.record_line(&field, line);
                let text = d.string(value, &field);
                if key == "name" {
                    out.name = text;
                } else {
                    out.secret = Zeroizing::new(text);
                }
            },
        );
        out
    }

    fn kms(&mut self, node: &Node, place: &Place) -> RawKms {
        let mut out = RawKms::default();
        let known = ["apiVersion", "name", "cachesize", "endpoint", "timeout"];
        self.object(
            node,
            place,
            "v1.KMSConfiguration",
            &known,
            |d, key, value, line| {
                let field = place.child("KMSConfiguration", key);
                d.record_line(&field, line);
                match key {
                    "apiVersion" => out.api_version = d.string(value, &field),
                    "name" => out.name = d.string(value, &field),
                    "endpoint" => out.endpoint = d.string(value, &field),
                    "cachesize" => out.cachesize = d.int32(value, &field),
                    _ => out.timeout = d.duration(value),
                }
            },
        );
        out
    }

    fn int32(&mut self, node: &Node, place: &Place) -> Option<i32> {
        let whole = match node.value {
            Value::Null => return None,
            Value::Int(i) => i32::try_from(i).ok(),
            // A YAML float reaches Go's JSON decoder as its shortest text, so 100.0 becomes "100";
            // a JSON file's `100.0` is decoded from its literal text and refused.
            Value::Float(f)
                if !self.is_json
                    && f.fract() == 0.0
                    && f >= f64::from(i32::MIN)
                    && f <= f64::from(i32::MAX) =>
            {
                Some(f as i32)
            }
            _ => None,
        };
        if whole.is_none() {
            self.type_error(node, place, "int32");
        }
        whole
    }

    /// `metav1.Duration`'s unmarshaler: a JSON string parsed by `time.ParseDuration`.
    fn duration(&mut self, node: &Node) -> Option<i64> {
        let text = match &node.value {
            Value::Null => return None,
            Value::Str(s) => s.to_string(),
            _ => {
                self.abort(
                    format!(
                        "json: cannot unmarshal {} into Go value of type string",
                        node.json_kind()
                    ),
                    node.line,
                );
                return None;
            }
        };
        match parse_duration(&text) {
            Ok(nanos) => Some(nanos),
            Err(err) => {
                self.abort(err.to_string(), node.line);
                None
            }
        }
    }

    fn abort(&mut self, message: String, line: Option<usize>) {
        self.fatal = Some(Located { message, line });
        self.aborted = true;
    }
}

/// Go names a number that does not fit its target with its text: `number 1.5`.
fn number_detail(node: &Node) -> String {
    match node.value {
        Value::Int(i) => format!("number {i}"),
        Value::Float(f) => format!("number {f}"),
        _ => node.json_kind().to_owned(),
    }
}
