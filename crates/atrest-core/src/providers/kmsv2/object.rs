//! The KMS v2 `EncryptedObject` protobuf (WIRE-FORMAT.md §6.2.1), with a hand-written
//! `prost::Message` impl so decoding behaves like Go's protobuf-go:
//!
//! * a known field arriving with an unexpected wire type is skipped as an unknown field (prost's
//!   derived code would reject the message);
//! * proto3 `string`s (field 2 and map keys) must be UTF-8, reported with Go's text
//!   `string field contains invalid UTF-8`;
//! * map entries may repeat (last wins) and may omit key or value.

use std::collections::BTreeMap;

use prost::bytes::{Buf, BufMut};
use prost::encoding::{self, DecodeContext, WireType};
use prost::{DecodeError, Message};

use crate::transformer::TransformError;

/// `EncryptedDEKSourceType` values.
pub const AES_GCM_KEY: i32 = 0;
pub const HKDF_SHA256_XNONCE_AES_GCM_SEED: i32 = 1;

pub(crate) const PARSE_ERROR: &str = "proto: cannot parse invalid wire-format data";
pub(crate) const UTF8_ERROR: &str = "string field contains invalid UTF-8";

/// A decoded (or to-be-encoded) `EncryptedObject`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EncryptedObject {
    pub encrypted_data: Vec<u8>,
    pub key_id: String,
    pub encrypted_dek_source: Vec<u8>,
    pub annotations: BTreeMap<String, Vec<u8>>,
    pub encrypted_dek_source_type: i32,
}

impl EncryptedObject {
    /// Decodes like Go's `proto.Unmarshal` (validation is separate).
    pub fn decode(bytes: &[u8]) -> Result<Self, TransformError> {
        let wire = match WireObject::decode(bytes) {
            Ok(wire) if !wire.invalid_utf8 => wire,
            Ok(_) => return Err(TransformError::msg(UTF8_ERROR)),
            Err(_) => return Err(TransformError::msg(PARSE_ERROR)),
        };
        // The UTF-8 flag is also set when decoding stopped early because of it.
        let key_id = String::from_utf8(wire.key_id).map_err(|_| TransformError::msg(UTF8_ERROR))?;
        let mut annotations = BTreeMap::new();
        for (key, value) in wire.annotations {
            let key = String::from_utf8(key).map_err(|_| TransformError::msg(UTF8_ERROR))?;
            annotations.insert(key, value);
        }
        Ok(Self {
            encrypted_data: wire.encrypted_data,
            key_id,
            encrypted_dek_source: wire.encrypted_dek_source,
            annotations,
            encrypted_dek_source_type: wire.encrypted_dek_source_type,
        })
    }

    /// Encodes in field order 1..5, omitting proto3 defaults; annotations sorted by key. Written
    /// field by field (not through [`WireObject`]) so the data is copied once.
    pub fn encode(&self) -> Vec<u8> {
        let entries: Vec<WireEntry> = self
            .annotations
            .iter()
            .map(|(k, v)| WireEntry {
                key: k.clone().into_bytes(),
                value: v.clone(),
            })
            .collect();
        let mut len = encoding::bytes::encoded_len(1, &self.encrypted_data)
            + encoding::string::encoded_len(2, &self.key_id)
            + encoding::bytes::encoded_len(3, &self.encrypted_dek_source)
            + encoding::int32::encoded_len(5, &self.encrypted_dek_source_type);
        len += entries
            .iter()
            .map(|e| encoding::message::encoded_len(4, e))
            .sum::<usize>();
        let mut buf = Vec::with_capacity(len);
        if !self.encrypted_data.is_empty() {
            encoding::bytes::encode(1, &self.encrypted_data, &mut buf);
        }
        if !self.key_id.is_empty() {
            encoding::string::encode(2, &self.key_id, &mut buf);
        }
        if !self.encrypted_dek_source.is_empty() {
            encoding::bytes::encode(3, &self.encrypted_dek_source, &mut buf);
        }
        for entry in &entries {
            encoding::message::encode(4, entry, &mut buf);
        }
        if self.encrypted_dek_source_type != 0 {
            encoding::int32::encode(5, &self.encrypted_dek_source_type, &mut buf);
        }
        buf
    }
}

/// Writes the key and length of field 1 (`encryptedData`, `len` bytes follow).
pub(crate) fn encode_data_header(len: usize, out: &mut Vec<u8>) {
    encoding::encode_key(1, WireType::LengthDelimited, out);
    encoding::encode_varint(len as u64, out);
}

/// The wire view: strings as raw bytes, map entries in arrival order.
#[derive(Debug, Default)]
struct WireObject {
    encrypted_data: Vec<u8>,
    key_id: Vec<u8>,
    encrypted_dek_source: Vec<u8>,
    annotations: Vec<(Vec<u8>, Vec<u8>)>,
    encrypted_dek_source_type: i32,
    /// Set when a string field was not UTF-8; decoding is then cut short, as Go stops there.
    invalid_utf8: bool,
}

/// One `map<string, bytes>` entry: key = field 1, value = field 2.
#[derive(Debug, Default)]
struct WireEntry {
    key: Vec<u8>,
    value: Vec<u8>,
}

fn stop(buf: &mut impl Buf) {
    let remaining = buf.remaining();
    buf.advance(remaining);
}

impl Message for WireEntry {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        // Go writes both entry fields even when empty.
        encoding::bytes::encode(1, &self.key, buf);
        encoding::bytes::encode(2, &self.value, buf);
    }
    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        match (tag, wire_type) {
            (1, WireType::LengthDelimited) => {
                encoding::bytes::merge(wire_type, &mut self.key, buf, ctx)
            }
            (2, WireType::LengthDelimited) => {
                encoding::bytes::merge(wire_type, &mut self.value, buf, ctx)
            }
            _ => encoding::skip_field(wire_type, tag, buf, ctx),
        }
    }
    fn encoded_len(&self) -> usize {
        encoding::bytes::encoded_len(1, &self.key) + encoding::bytes::encoded_len(2, &self.value)
    }
    fn clear(&mut self) {
        *self = Self::default();
    }
}

impl Message for WireObject {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        if !self.encrypted_data.is_empty() {
            encoding::bytes::encode(1, &self.encrypted_data, buf);
        }
        if !self.key_id.is_empty() {
            encoding::bytes::encode(2, &self.key_id, buf);
        }
        if !self.encrypted_dek_source.is_empty() {
            encoding::bytes::encode(3, &self.encrypted_dek_source, buf);
        }
        for (key, value) in &self.annotations {
            let entry = WireEntry {
                key: key.clone(),
                value: value.clone(),
            };
            encoding::message::encode(4, &entry, buf);
        }
        if self.encrypted_dek_source_type != 0 {
            encoding::int32::encode(5, &self.encrypted_dek_source_type, buf);
        }
    }
    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        if self.invalid_utf8 {
            return encoding::skip_field(wire_type, tag, buf, ctx);
        }
        match (tag, wire_type) {
            (1, WireType::LengthDelimited) => {
                encoding::bytes::merge(wire_type, &mut self.encrypted_data, buf, ctx)
            }
            (2, WireType::LengthDelimited) => {
                encoding::bytes::merge(wire_type, &mut self.key_id, buf, ctx)?;
                if std::str::from_utf8(&self.key_id).is_err() {
                    self.invalid_utf8 = true;
                    stop(buf);
                }
                Ok(())
            }
            (3, WireType::LengthDelimited) => {
                encoding::bytes::merge(wire_type, &mut self.encrypted_dek_source, buf, ctx)
            }
            (4, WireType::LengthDelimited) => {
                let mut entry = WireEntry::default();
                encoding::message::merge(wire_type, &mut entry, buf, ctx)?;
                if std::str::from_utf8(&entry.key).is_err() {
                    self.invalid_utf8 = true;
                    stop(buf);
                }
                self.annotations.push((entry.key, entry.value));
                Ok(())
            }
            (5, WireType::Varint) => {
                encoding::int32::merge(wire_type, &mut self.encrypted_dek_source_type, buf, ctx)
            }
            _ => encoding::skip_field(wire_type, tag, buf, ctx),
        }
    }
    fn encoded_len(&self) -> usize {
        let mut len = 0;
        if !self.encrypted_data.is_empty() {
            len += encoding::bytes::encoded_len(1, &self.encrypted_data);
        }
        if !self.key_id.is_empty() {
            len += encoding::bytes::encoded_len(2, &self.key_id);
        }
        if !self.encrypted_dek_source.is_empty() {
            len += encoding::bytes::encoded_len(3, &self.encrypted_dek_source);
        }
        for (key, value) in &self.annotations {
            let entry = WireEntry {
                key: key.clone(),
                value: value.clone(),
            };
            len += encoding::message::encoded_len(4, &entry);
        }
        if self.encrypted_dek_source_type != 0 {
            len += encoding::int32::encoded_len(5, &self.encrypted_dek_source_type);
        }
        len
    }
    fn clear(&mut self) {
        *self = Self::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> Vec<u8> {
        hex::decode(s.replace(' ', "")).unwrap()
    }

    #[test]
    fn worked_example_8_5_mode0_encoding() {
        let object = EncryptedObject {
            encrypted_data: h(
                "deadbeef01ca9a3b000000006cff3c0ef7950f2e03abf6bdcea915bdae70ace521305a4d0e",
            ),
            key_id: "1".into(),
            encrypted_dek_source: b"EBESExQVFhcYGRobHB0eHyAhIiMkJSYnKCkqKywtLi8=".to_vec(),
            annotations: [("example.com".to_string(), b"v".to_vec())].into(),
            encrypted_dek_source_type: AES_GCM_KEY,
        };
        let expected = h("0a25deadbeef01ca9a3b000000006cff3c0ef7950f2e03abf6bdcea915bdae70ace521305a4d0e 120131 1a2c45424553457851564668635947526f62484230654879416849694d6b4a53596e4b436b714b7977744c69383d 2210 0a0b6578616d706c652e636f6d 120176");
        assert_eq!(object.encode(), expected);
        assert_eq!(EncryptedObject::decode(&expected).unwrap(), object);
    }

    #[test]
    fn go_decoding_rules() {
        // field 2 sent as a varint: skipped like an unknown field, so keyID stays empty.
        let obj = EncryptedObject::decode(&h("0a0101 1001 1a0101")).unwrap();
        assert_eq!(obj.key_id, "");
        assert_eq!(obj.encrypted_data, vec![1]);
        // unknown fields are tolerated
        assert!(EncryptedObject::decode(&h("0a0101 3a0100 4005")).is_ok());
        // truncated length
        assert_eq!(
            EncryptedObject::decode(&h("0a05 01"))
                .unwrap_err()
                .to_string(),
            PARSE_ERROR
        );
        // invalid UTF-8 key ID and map key
        assert_eq!(
            EncryptedObject::decode(&h("1201ff"))
                .unwrap_err()
                .to_string(),
            UTF8_ERROR
        );
        assert_eq!(
            EncryptedObject::decode(&h("2203 0a01ff"))
                .unwrap_err()
                .to_string(),
            UTF8_ERROR
        );
        // repeated map entries: last wins; missing value is empty
        let obj = EncryptedObject::decode(&h("2206 0a01611201 78 2203 0a0161")).unwrap();
        assert_eq!(obj.annotations.get("a").map(Vec::as_slice), Some(&b""[..]));
        // mode 1 ends with 28 01
        let obj = EncryptedObject {
            encrypted_dek_source_type: HKDF_SHA256_XNONCE_AES_GCM_SEED,
            ..Default::default()
        };
        assert_eq!(obj.encode(), h("2801"));
    }
}
