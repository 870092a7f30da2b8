//! Decoding what kube-apiserver stores (after decryption) into the object the API would return.
//!
//! * `k8s\0` + protobuf `runtime.Unknown` (built-in kinds): `Secret` and `ConfigMap` are decoded in
//!   full (`data` as base64, `stringData` never stored, `type`, `immutable`, `binaryData`); any other
//!   kind is decoded to `apiVersion`, `kind` and `metadata` only — its `spec`, `status` and other
//!   kind-specific fields are **omitted** (the bytes are still available with `get -o raw`).
//! * JSON (custom resources): returned as stored.
//! * CBOR (alpha `CBORServingAndStorage`): reported as unsupported.
//!
//! The protobuf messages are hand-written prost structs (see [`proto`]) rather than the `k8s-pb`
//! crate: `k8s-pb` generates every Kubernetes type (hundreds of thousands of lines, minutes of
//! compile time on two cores) while we need seven small messages, whose field numbers are stable API.

mod json;
mod proto;
mod time;

use prost::Message;
use serde_json::{Map, Value};

pub use time::{format_rfc3339, format_rfc3339_micro};

/// The 4 magic bytes in front of protobuf-encoded objects.
pub const PROTOBUF_MAGIC: &[u8] = b"k8s\x00";
const CBOR_SELF_DESCRIBE: &[u8] = &[0xd9, 0xd9, 0xf7];

/// Why stored bytes could not be decoded.
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

/// Decodes a stored (decrypted) object as the API would return it (see the module docs for which
/// fields are decoded).
pub fn decode_object(plaintext: &[u8]) -> Result<Value, DecodeError> {
    match media_of(plaintext) {
        Media::Protobuf => decode_protobuf(&plaintext[PROTOBUF_MAGIC.len()..]),
        Media::Json => {
            serde_json::from_slice(plaintext).map_err(|e| DecodeError::Json(e.to_string()))
        }
        Media::Cbor => Err(DecodeError::Cbor),
        Media::Unknown => Err(DecodeError::UnknownEncoding),
    }
}

/// `apiVersion` and `kind` of a stored object without decoding the rest.
pub fn type_of(plaintext: &[u8]) -> Result<(String, String), DecodeError> {
    match media_of(plaintext) {
        Media::Protobuf => {
            let unknown =
                proto::Unknown::decode(&plaintext[PROTOBUF_MAGIC.len()..]).map_err(pb_err)?;
            let tm = unknown.type_meta.unwrap_or_default();
            Ok((
                tm.api_version.unwrap_or_default(),
                tm.kind.unwrap_or_default(),
            ))
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

fn pb_err(e: prost::DecodeError) -> DecodeError {
    DecodeError::Protobuf(e.to_string())
}

fn decode_protobuf(envelope: &[u8]) -> Result<Value, DecodeError> {
    let unknown = proto::Unknown::decode(envelope).map_err(pb_err)?;
    let tm = unknown.type_meta.unwrap_or_default();
    let api_version = tm.api_version.unwrap_or_default();
    let kind = tm.kind.unwrap_or_default();
    let raw = unknown.raw.unwrap_or_default();
    let mut obj = Map::new();
    obj.insert("kind".into(), Value::String(kind.clone()));
    obj.insert("apiVersion".into(), Value::String(api_version.clone()));
    match (api_version.as_str(), kind.as_str()) {
        ("v1", "Secret") => json::secret(
            proto::Secret::decode(raw.as_slice()).map_err(pb_err)?,
            &mut obj,
        ),
        ("v1", "ConfigMap") => json::config_map(
            proto::ConfigMap::decode(raw.as_slice()).map_err(pb_err)?,
            &mut obj,
        ),
        _ => {
            let only = proto::ObjectOnly::decode(raw.as_slice()).map_err(pb_err)?;
            obj.insert(
                "metadata".into(),
                json::object_meta(only.metadata.unwrap_or_default()),
            );
        }
    }
    Ok(Value::Object(obj))
}

#[cfg(test)]
mod tests;
