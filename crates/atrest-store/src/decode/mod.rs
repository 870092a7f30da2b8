//! Decoding what kube-apiserver stores (after decryption) into the object the API serves.
//!
//! * `k8s\0` + protobuf `runtime.Unknown` (every built-in kind): the envelope names the storage
//!   apiVersion/kind; the payload is walked with the generated type table ([`schema`], from
//!   Kubernetes' `generated.proto` files via the `k8s-pb` crate, plus the Go facts protobuf does
//!   not carry) and rendered as Go's `encoding/json` would ([`render`]). A field the table does
//!   not know is an error, never silently dropped.
//! * JSON: custom resources as stored; CustomResourceDefinitions (stored as v1beta1) converted
//!   to the v1 object kube-apiserver serves ([`crd`]).
//! * CBOR (alpha `CBORServingAndStorage`): reported as unsupported.

mod crd;
mod render;
pub mod schema;
mod time;
mod wire;

use serde_json::{Map, Value};

pub use time::{format_rfc3339, format_rfc3339_micro};

/// The 4 magic bytes in front of protobuf-encoded objects.
pub const PROTOBUF_MAGIC: &[u8] = b"k8s\x00";
const CBOR_SELF_DESCRIBE: &[u8] = &[0xd9, 0xd9, 0xf7];

/// Why stored bytes could not be decoded (completely).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("invalid protobuf object: {0}")]
    Protobuf(String),
    #[error("invalid JSON object: {0}")]
    Json(String),
    #[error("CBOR-encoded objects are not supported")]
    Cbor,
    #[error("unrecognized storage encoding (neither k8s protobuf nor JSON)")]
    UnknownEncoding,
    #[error("no schema for {api_version} {kind} (not a kind kube-apiserver v1.36 stores)")]
    UnknownKind { api_version: String, kind: String },
}

/// The storage encoding of a plaintext value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Media {
    Protobuf,
    Json,
    Cbor,
    Unknown,
}

/// Classifies plaintext bytes by their first bytes.
pub fn media_of(plaintext: &[u8]) -> Media {
    if plaintext.starts_with(PROTOBUF_MAGIC) {
        Media::Protobuf
    } else if plaintext.starts_with(CBOR_SELF_DESCRIBE) {
        Media::Cbor
    } else if plaintext.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{') {
        Media::Json
    } else {
        Media::Unknown
    }
}

/// Decodes a stored (decrypted) object as the API serves it, without `metadata.resourceVersion`
/// (see [`decode_object_at`]).
pub fn decode_object(plaintext: &[u8]) -> Result<Value, DecodeError> {
    match media_of(plaintext) {
        Media::Protobuf => decode_protobuf(&plaintext[PROTOBUF_MAGIC.len()..]),
        Media::Json => {
            let v: Value =
                serde_json::from_slice(plaintext).map_err(|e| DecodeError::Json(e.to_string()))?;
            if !v.is_object() {
                return Err(DecodeError::Json("not a JSON object".into()));
            }
            Ok(if crd::is_stored_crd(&v) {
                crd::to_v1(v)
            } else {
                v
            })
        }
        Media::Cbor => Err(DecodeError::Cbor),
        Media::Unknown => Err(DecodeError::UnknownEncoding),
    }
}

/// [`decode_object`] with `metadata.resourceVersion` set to the key's etcd `mod_revision`, as
/// kube-apiserver serves it.
pub fn decode_object_at(plaintext: &[u8], mod_revision: i64) -> Result<Value, DecodeError> {
    let mut obj = decode_object(plaintext)?;
    if let Some(o) = obj.as_object_mut() {
        let meta = o
            .entry("metadata")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Some(m) = meta.as_object_mut() {
            m.insert(
                "resourceVersion".into(),
                Value::String(mod_revision.to_string()),
            );
        }
    }
    Ok(obj)
}

/// `apiVersion` and `kind` of a stored object (as stored) without decoding the rest.
pub fn type_of(plaintext: &[u8]) -> Result<(String, String), DecodeError> {
    match media_of(plaintext) {
        Media::Protobuf => {
            let (tm, _) = envelope(&plaintext[PROTOBUF_MAGIC.len()..])?;
            Ok(tm)
        }
        _ => {
            let v = decode_object(plaintext)?;
            let s = |k: &str| {
                v.get(k)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            };
            Ok((s("apiVersion"), s("kind")))
        }
    }
}

/// `runtime.Unknown`: field 1 TypeMeta {1 apiVersion, 2 kind}, field 2 the raw object, 3 and 4
/// content encoding/type (empty).
fn envelope(buf: &[u8]) -> Result<((String, String), &[u8]), DecodeError> {
    let text = |b: &[u8]| {
        std::str::from_utf8(b)
            .map(str::to_string)
            .map_err(|_| DecodeError::Protobuf("runtime.Unknown: TypeMeta is not UTF-8".into()))
    };
    let (mut api_version, mut kind, mut raw) = (String::new(), String::new(), &[][..]);
    let mut r = wire::Reader::new(buf);
    while let Some((tag, v)) = r.next_field()? {
        match (tag, v) {
            (1, wire::Value::Bytes(tm)) => {
                let mut t = wire::Reader::new(tm);
                while let Some((tag, v)) = t.next_field()? {
                    match (tag, v) {
                        (1, wire::Value::Bytes(b)) => api_version = text(b)?,
                        (2, wire::Value::Bytes(b)) => kind = text(b)?,
                        _ => {
                            return Err(DecodeError::Protobuf(
                                "runtime.Unknown: bad TypeMeta".into(),
                            ))
                        }
                    }
                }
            }
            (2, wire::Value::Bytes(b)) => raw = b,
            (3 | 4, wire::Value::Bytes([])) => {}
            (3 | 4, wire::Value::Bytes(_)) => {
                return Err(DecodeError::Protobuf(
                    "runtime.Unknown: a content encoding/type other than protobuf".into(),
                ))
            }
            _ => {
                return Err(DecodeError::Protobuf(
                    "runtime.Unknown: unexpected field".into(),
                ))
            }
        }
    }
    Ok(((api_version, kind), raw))
}

fn decode_protobuf(buf: &[u8]) -> Result<Value, DecodeError> {
    let ((api_version, kind), raw) = envelope(buf)?;
    let s = schema::schema();
    let resource = s
        .resource(&api_version, &kind)
        .ok_or_else(|| DecodeError::UnknownKind {
            api_version: api_version.clone(),
            kind: kind.clone(),
        })?;
    let body = render::message(s, &resource.message, raw, 0)?;
    let mut obj = Map::new();
    obj.insert("kind".into(), Value::String(kind.clone()));
    obj.insert(
        "apiVersion".into(),
        Value::String(s.served_version(&api_version, &kind).to_string()),
    );
    if let Value::Object(fields) = body {
        obj.extend(fields);
    }
    conversion_quirks(&api_version, &kind, &mut obj);
    Ok(Value::Object(obj))
}

/// What kube-apiserver's internal → served conversion adds that is not in the stored bytes.
fn conversion_quirks(api_version: &str, kind: &str, obj: &mut Map<String, Value>) {
    // apps/v1 StatefulSet: every volumeClaimTemplate gets apiVersion v1 / kind PVC.
    if (api_version, kind) == ("apps/v1", "StatefulSet") {
        if let Some(Value::Array(templates)) = obj
            .get_mut("spec")
            .and_then(|s| s.get_mut("volumeClaimTemplates"))
        {
            for t in templates.iter_mut().filter_map(Value::as_object_mut) {
                t.insert("apiVersion".into(), Value::String("v1".into()));
                t.insert("kind".into(), Value::String("PersistentVolumeClaim".into()));
            }
        }
    }
}

#[cfg(test)]
mod tests;
