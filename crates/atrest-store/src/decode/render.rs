//! Protobuf message bytes + the schema → the JSON Go's `encoding/json` writes for that type.
//!
//! Go's rules, with what the wire tells: a non-pointer scalar is always on the wire (gogo writes
//! zero values), so a zero one is left out exactly when the field is `omitempty`; a pointer is on
//! the wire exactly when it is set, and then written even when zero. Empty lists and maps cannot be
//! told from nil: left out with `omitempty`, `null` without. Structs are always written, except
//! `omitzero` ones; inline structs are merged into their parent. The special types (`Time`,
//! `MicroTime`, `Duration`, `Quantity`, `IntOrString`, `RawExtension`, `FieldsV1`, `JSON`) have
//! their own JSON forms. A field number the schema does not know is an error: nothing is dropped.

use base64::Engine;
use serde_json::{Map, Number, Value};

use super::schema::{Field, Kind, Label, Message, Schema};
use super::time::{format_rfc3339, format_rfc3339_micro};
use super::wire::{self, Reader};
use super::DecodeError;

/// Nesting deeper than this is refused (real objects stay far below; JSONSchemaProps in
/// protobuf-stored CRDs is the deepest, and those are stored as JSON).
const MAX_DEPTH: usize = 100;

const TIME: &str = "apimachinery.pkg.apis.meta.v1.Time";
const MICRO_TIME: &str = "apimachinery.pkg.apis.meta.v1.MicroTime";
const DURATION: &str = "apimachinery.pkg.apis.meta.v1.Duration";
const QUANTITY: &str = "apimachinery.pkg.api.resource.Quantity";
const INT_OR_STRING: &str = "apimachinery.pkg.util.intstr.IntOrString";
const RAW_EXTENSION: &str = "apimachinery.pkg.runtime.RawExtension";
const FIELDS_V1: &str = "apimachinery.pkg.apis.meta.v1.FieldsV1";
const CRD_JSON_V1: &str = "apiextensions_apiserver.pkg.apis.apiextensions.v1.Json";
const CRD_JSON_V1BETA1: &str = "apiextensions_apiserver.pkg.apis.apiextensions.v1beta1.Json";

/// What one field collected on the wire.
enum Slot<'a> {
    Absent,
    One(wire::Value<'a>),
    Many(Vec<wire::Value<'a>>),
}

/// Renders `buf` as message `name`; returns a JSON object (or, for special types, their form).
pub fn message(
    schema: &Schema,
    name: &str,
    buf: &[u8],
    depth: usize,
) -> Result<Value, DecodeError> {
    if depth > MAX_DEPTH {
        return Err(DecodeError::Protobuf(format!(
            "messages nested deeper than {MAX_DEPTH}"
        )));
    }
    match name {
        TIME | MICRO_TIME => return time(buf, name == MICRO_TIME),
        DURATION => return duration(buf),
        QUANTITY => return quantity(buf),
        INT_OR_STRING => return int_or_string(buf),
        RAW_EXTENSION | FIELDS_V1 | CRD_JSON_V1 | CRD_JSON_V1BETA1 => return raw_json(buf, name),
        _ => {}
    }
    let msg = schema
        .messages
        .get(name)
        .ok_or_else(|| DecodeError::Protobuf(format!("no schema for message {name}")))?;
    let mut slots: Vec<Slot> = msg.fields.iter().map(|_| Slot::Absent).collect();
    let mut r = Reader::new(buf);
    while let Some((tag, value)) = r.next_field().map_err(|e| at(e, name))? {
        let Some(idx) = msg.index(tag) else {
            return Err(DecodeError::Protobuf(format!(
                "{name}: unknown field number {tag} (not in the schema)"
            )));
        };
        let slot = &mut slots[idx];
        if msg.fields[idx].label == Label::Single {
            *slot = Slot::One(value);
        } else {
            match slot {
                Slot::Many(v) => v.push(value),
                _ => *slot = Slot::Many(vec![value]),
            }
        }
    }
    if msg.named_slice {
        return named_slice(schema, name, msg, slots, depth);
    }
    let mut out = Map::new();
    for (f, slot) in msg.fields.iter().zip(slots) {
        field(schema, name, f, slot, depth, &mut out)?;
    }
    Ok(Value::Object(out))
}

fn at(e: DecodeError, name: &str) -> DecodeError {
    match e {
        DecodeError::Protobuf(m) => DecodeError::Protobuf(format!("{name}: {m}")),
        other => other,
    }
}

fn named_slice(
    schema: &Schema,
    name: &str,
    msg: &Message,
    slots: Vec<Slot>,
    depth: usize,
) -> Result<Value, DecodeError> {
    let (Some(f), Some(slot)) = (msg.fields.first(), slots.into_iter().next()) else {
        return Ok(Value::Array(Vec::new()));
    };
    let items = match slot {
        Slot::Many(v) => v,
        Slot::One(v) => vec![v],
        Slot::Absent => Vec::new(),
    };
    Ok(Value::Array(repeated(schema, name, f, items, depth)?))
}

fn field(
    schema: &Schema,
    owner: &str,
    f: &Field,
    slot: Slot,
    depth: usize,
    out: &mut Map<String, Value>,
) -> Result<(), DecodeError> {
    let put = |out: &mut Map<String, Value>, v: Value| {
        out.insert(f.json.clone(), v);
    };
    match (f.label, slot) {
        (Label::Single, Slot::One(v)) => {
            if f.kind == Kind::Message {
                let rendered = message(schema, &f.type_name, bytes_of(owner, f, v)?, depth + 1)?;
                if f.inline {
                    if let Value::Object(m) = rendered {
                        out.extend(m);
                    }
                } else if !(f.omitzero && is_zero_struct(&rendered)) {
                    put(out, rendered);
                }
            } else {
                let value = scalar(owner, f, v)?;
                if !(f.omitempty && !f.pointer && is_zero(&value)) {
                    put(out, value);
                }
            }
        }
        (Label::Single, _) => {
            // Not on the wire: a nil pointer (or a struct gogo did not write).
            if f.kind == Kind::Message {
                if f.null_when_absent {
                    put(out, Value::Null);
                }
            } else if !f.omitempty {
                put(out, if f.pointer { Value::Null } else { zero(f.kind) });
            }
        }
        (Label::Repeated, slot) => {
            let items = match slot {
                Slot::Many(v) => repeated(schema, owner, f, v, depth)?,
                _ => Vec::new(),
            };
            if !items.is_empty() {
                put(out, Value::Array(items));
            } else if !f.omitempty {
                put(out, Value::Null);
            }
        }
        (Label::Map, slot) => {
            let mut m = Map::new();
            if let Slot::Many(entries) = slot {
                for e in entries {
                    let (k, v) = map_entry(schema, owner, f, bytes_of(owner, f, e)?, depth)?;
                    m.insert(k, v);
                }
            }
            if !m.is_empty() {
                put(out, Value::Object(m));
            } else if !f.omitempty {
                put(out, Value::Null);
            }
        }
    }
    Ok(())
}

fn repeated(
    schema: &Schema,
    owner: &str,
    f: &Field,
    values: Vec<wire::Value>,
    depth: usize,
) -> Result<Vec<Value>, DecodeError> {
    let mut out = Vec::with_capacity(values.len().min(1024));
    for v in values {
        match (f.kind, v) {
            (Kind::Message, v) => out.push(message(
                schema,
                &f.type_name,
                bytes_of(owner, f, v)?,
                depth + 1,
            )?),
            // Packed numbers (proto3 style); gogo writes them unpacked, but both are valid.
            (Kind::Int32 | Kind::Int64 | Kind::Bool, wire::Value::Bytes(b)) => {
                for n in wire::packed_varints(b)? {
                    out.push(scalar(owner, f, wire::Value::Varint(n))?);
                }
            }
            (Kind::Double, wire::Value::Bytes(b)) => {
                for chunk in b.chunks(8) {
                    let bits: [u8; 8] = chunk.try_into().map_err(|_| {
                        mismatch(owner, f, "a packed double run not a multiple of 8 bytes")
                    })?;
                    out.push(scalar(
                        owner,
                        f,
                        wire::Value::Fixed64(u64::from_le_bytes(bits)),
                    )?);
                }
            }
            (_, v) => out.push(scalar(owner, f, v)?),
        }
    }
    Ok(out)
}

fn map_entry(
    schema: &Schema,
    owner: &str,
    f: &Field,
    buf: &[u8],
    depth: usize,
) -> Result<(String, Value), DecodeError> {
    let mut key = String::new();
    let mut value = None;
    let mut r = Reader::new(buf);
    while let Some((tag, v)) = r.next_field().map_err(|e| at(e, owner))? {
        match tag {
            1 => {
                key = std::str::from_utf8(bytes_of(owner, f, v)?)
                    .map_err(|_| mismatch(owner, f, "a map key that is not UTF-8"))?
                    .to_string()
            }
            2 => value = Some(v),
            _ => return Err(mismatch(owner, f, "a map entry field other than key/value")),
        }
    }
    let value = match (f.kind, value) {
        (Kind::Message, v) => {
            let b = match v {
                Some(v) => bytes_of(owner, f, v)?,
                None => &[],
            };
            message(schema, &f.type_name, b, depth + 1)?
        }
        // A value missing from the entry is the type's zero (`""` for bytes and strings).
        (Kind::Bytes, None) => Value::String(String::new()),
        (k, None) => zero(k),
        (_, Some(v)) => scalar(owner, f, v)?,
    };
    Ok((key, value))
}

fn bytes_of<'a>(owner: &str, f: &Field, v: wire::Value<'a>) -> Result<&'a [u8], DecodeError> {
    match v {
        wire::Value::Bytes(b) => Ok(b),
        _ => Err(mismatch(owner, f, "a non-length-delimited value")),
    }
}

fn mismatch(owner: &str, f: &Field, what: &str) -> DecodeError {
    DecodeError::Protobuf(format!("{owner}.{}: {what}", f.json))
}

fn scalar(owner: &str, f: &Field, v: wire::Value) -> Result<Value, DecodeError> {
    Ok(match (f.kind, v) {
        (Kind::String, wire::Value::Bytes(b)) => Value::String(
            std::str::from_utf8(b)
                .map_err(|_| mismatch(owner, f, "a string that is not UTF-8"))?
                .to_string(),
        ),
        (Kind::Bytes, wire::Value::Bytes(b)) => {
            Value::String(base64::engine::general_purpose::STANDARD.encode(b))
        }
        (Kind::Bool, wire::Value::Varint(n)) => Value::Bool(n != 0),
        (Kind::Int32, wire::Value::Varint(n)) => Value::from(n as i32),
        (Kind::Int64, wire::Value::Varint(n)) => Value::from(n as i64),
        (Kind::Double, wire::Value::Fixed64(bits)) => Number::from_f64(f64::from_bits(bits))
            .map(Value::Number)
            .ok_or_else(|| mismatch(owner, f, "a NaN or infinite number"))?,
        _ => return Err(mismatch(owner, f, "a value of the wrong wire type")),
    })
}

fn zero(kind: Kind) -> Value {
    match kind {
        Kind::String => Value::String(String::new()),
        Kind::Bool => Value::Bool(false),
        Kind::Int32 | Kind::Int64 | Kind::Double => Value::from(0),
        Kind::Bytes | Kind::Message => Value::Null,
    }
}

fn is_zero(v: &Value) -> bool {
    match v {
        Value::String(s) => s.is_empty(),
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::Null => true,
        _ => false,
    }
}

/// `omitzero` on a struct: a zero `Time` renders as `null`, any other zero struct as `{}`.
fn is_zero_struct(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Object(m) => m.values().all(is_zero),
        _ => false,
    }
}

/// The fields of a small special message, by number.
fn small_fields<'a>(buf: &'a [u8], name: &str) -> Result<Vec<(u32, wire::Value<'a>)>, DecodeError> {
    let mut r = Reader::new(buf);
    let mut out = Vec::new();
    while let Some(f) = r.next_field().map_err(|e| at(e, name))? {
        out.push(f);
    }
    Ok(out)
}

fn special_err(name: &str, what: &str) -> DecodeError {
    DecodeError::Protobuf(format!("{name}: {what}"))
}

fn varint_of(name: &str, v: wire::Value) -> Result<u64, DecodeError> {
    match v {
        wire::Value::Varint(n) => Ok(n),
        _ => Err(special_err(name, "a value of the wrong wire type")),
    }
}

fn time(buf: &[u8], micro: bool) -> Result<Value, DecodeError> {
    let name = if micro { MICRO_TIME } else { TIME };
    let (mut seconds, mut nanos) = (0i64, 0i32);
    for (tag, v) in small_fields(buf, name)? {
        match tag {
            1 => seconds = varint_of(name, v)? as i64,
            2 => nanos = varint_of(name, v)? as i32,
            t => return Err(special_err(name, &format!("unknown field number {t}"))),
        }
    }
    if seconds == 0 && nanos == 0 {
        return Ok(Value::Null);
    }
    // Go's Time.UTC() normalizes nanos into [0, 1e9).
    let seconds = seconds.saturating_add(i64::from(nanos.div_euclid(1_000_000_000)));
    let nanos = nanos.rem_euclid(1_000_000_000);
    Ok(Value::String(if micro {
        format_rfc3339_micro(seconds, nanos)
    } else {
        format_rfc3339(seconds)
    }))
}

fn duration(buf: &[u8]) -> Result<Value, DecodeError> {
    let mut ns = 0i64;
    for (tag, v) in small_fields(buf, DURATION)? {
        match tag {
            1 => ns = varint_of(DURATION, v)? as i64,
            t => return Err(special_err(DURATION, &format!("unknown field number {t}"))),
        }
    }
    Ok(Value::String(super::time::format_go_duration(ns)))
}

fn string_field(name: &str, v: wire::Value) -> Result<String, DecodeError> {
    match v {
        wire::Value::Bytes(b) => std::str::from_utf8(b)
            .map(str::to_string)
            .map_err(|_| special_err(name, "a string that is not UTF-8")),
        _ => Err(special_err(name, "a value of the wrong wire type")),
    }
}

fn quantity(buf: &[u8]) -> Result<Value, DecodeError> {
    let mut s = String::new();
    for (tag, v) in small_fields(buf, QUANTITY)? {
        match tag {
            1 => s = string_field(QUANTITY, v)?,
            t => return Err(special_err(QUANTITY, &format!("unknown field number {t}"))),
        }
    }
    // The zero Quantity marshals as "0".
    Ok(Value::String(if s.is_empty() { "0".into() } else { s }))
}

fn int_or_string(buf: &[u8]) -> Result<Value, DecodeError> {
    let (mut ty, mut int_val, mut str_val) = (0u64, 0i32, String::new());
    for (tag, v) in small_fields(buf, INT_OR_STRING)? {
        match tag {
            1 => ty = varint_of(INT_OR_STRING, v)?,
            2 => int_val = varint_of(INT_OR_STRING, v)? as i32,
            3 => str_val = string_field(INT_OR_STRING, v)?,
            t => {
                return Err(special_err(
                    INT_OR_STRING,
                    &format!("unknown field number {t}"),
                ))
            }
        }
    }
    Ok(match ty {
        0 => Value::from(int_val),
        1 => Value::String(str_val),
        t => return Err(special_err(INT_OR_STRING, &format!("unknown type {t}"))),
    })
}

fn raw_json(buf: &[u8], name: &str) -> Result<Value, DecodeError> {
    let mut raw: &[u8] = &[];
    for (tag, v) in small_fields(buf, name)? {
        match (tag, v) {
            (1, wire::Value::Bytes(b)) => raw = b,
            (t, _) => return Err(special_err(name, &format!("unexpected field number {t}"))),
        }
    }
    if raw.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_slice(raw)
        .map_err(|e| special_err(name, &format!("raw bytes are not JSON: {e}")))
}
