//! etcd's MVCC layout inside the bbolt file (etcd `server/storage/mvcc`):
//!
//! * bucket `key`: bbolt key = revision `main` (8 bytes big endian) `_` `sub` (8 bytes big endian),
//!   17 bytes, plus a trailing `t` for a tombstone (delete); value = protobuf `mvccpb.KeyValue`
//!   `{1: key bytes, 2: create_revision, 3: mod_revision, 4: version, 5: value bytes, 6: lease}`.
//!   Keys sort by revision, so the bucket is the history of every key, oldest first.
//! * bucket `meta`: `finishedCompactRev` / `scheduledCompactRev` (a 17-byte revision), `consistent_index`.

use crate::snapshot::error::{Result, SnapshotError};

/// An etcd revision: `main` is the transaction's revision, `sub` the change within it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Revision {
    pub main: i64,
    pub sub: i64,
}

impl Revision {
    /// The 17-byte bucket key.
    pub fn to_bytes(self) -> [u8; 17] {
        let mut b = [0u8; 17];
        b[..8].copy_from_slice(&self.main.to_be_bytes());
        b[8] = b'_';
        b[9..].copy_from_slice(&self.sub.to_be_bytes());
        b
    }

    /// Parses a `key` bucket key: the revision and whether it is a tombstone.
    pub fn parse_key(key: &[u8]) -> std::result::Result<(Revision, bool), String> {
        let tombstone = match key.len() {
            17 => false,
            18 if key[17] == b't' => true,
            18 => return Err(format!("unknown mark byte {:#04x}", key[17])),
            n => return Err(format!("{n} bytes, expected 17 or 18")),
        };
        if key[8] != b'_' {
            return Err("missing '_' separator".into());
        }
        let main = i64::from_be_bytes(key[..8].try_into().map_err(|_| "short")?);
        let sub = i64::from_be_bytes(key[9..17].try_into().map_err(|_| "short")?);
        Ok((Revision { main, sub }, tombstone))
    }
}

impl std::fmt::Display for Revision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}_{}", self.main, self.sub)
    }
}

/// `mvccpb.KeyValue`, borrowed from a page.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeyValueRef<'a> {
    pub key: &'a [u8],
    pub create_revision: i64,
    pub mod_revision: i64,
    pub version: i64,
    pub value: &'a [u8],
    pub lease: i64,
}

/// `mvccpb.KeyValue`, owned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyValue {
    pub key: Vec<u8>,
    pub create_revision: i64,
    pub mod_revision: i64,
    pub version: i64,
    pub value: Vec<u8>,
    pub lease: i64,
}

impl KeyValueRef<'_> {
    pub fn to_owned(&self) -> KeyValue {
        KeyValue {
            key: self.key.to_vec(),
            create_revision: self.create_revision,
            mod_revision: self.mod_revision,
            version: self.version,
            value: self.value.to_vec(),
            lease: self.lease,
        }
    }
}

fn varint(buf: &[u8], pos: &mut usize) -> std::result::Result<u64, String> {
    let mut v: u64 = 0;
    for shift in (0..70).step_by(7) {
        let b = *buf.get(*pos).ok_or("truncated varint")?;
        *pos += 1;
        if shift == 63 && b > 1 {
            return Err("varint overflows 64 bits".into());
        }
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err("varint longer than 10 bytes".into())
}

/// Decodes a protobuf `mvccpb.KeyValue` without copying (unknown fields are skipped, as protobuf does).
pub fn decode_key_value(buf: &[u8]) -> std::result::Result<KeyValueRef<'_>, String> {
    let mut kv = KeyValueRef::default();
    let mut pos = 0usize;
    while pos < buf.len() {
        let tag = varint(buf, &mut pos)?;
        let (field, wire) = (tag >> 3, tag & 7);
        match wire {
            0 => {
                let v = varint(buf, &mut pos)? as i64;
                match field {
                    2 => kv.create_revision = v,
                    3 => kv.mod_revision = v,
                    4 => kv.version = v,
                    6 => kv.lease = v,
                    1 | 5 => return Err(format!("field {field} has wire type 0, expected bytes")),
                    _ => {}
                }
            }
            2 => {
                let len = varint(buf, &mut pos)?;
                let end = (pos as u64)
                    .checked_add(len)
                    .filter(|&e| e <= buf.len() as u64)
                    .ok_or("length-delimited field runs past the end")?
                    as usize;
                let bytes = &buf[pos..end];
                pos = end;
                match field {
                    1 => kv.key = bytes,
                    5 => kv.value = bytes,
                    2 | 3 | 4 | 6 => {
                        return Err(format!("field {field} has wire type 2, expected varint"))
                    }
                    _ => {}
                }
            }
            1 => {
                pos = pos
                    .checked_add(8)
                    .filter(|&e| e <= buf.len())
                    .ok_or("fixed64 runs past the end")?
            }
            5 => {
                pos = pos
                    .checked_add(4)
                    .filter(|&e| e <= buf.len())
                    .ok_or("fixed32 runs past the end")?
            }
            w => return Err(format!("unsupported wire type {w}")),
        }
        if field == 0 {
            return Err("field number 0".into());
        }
    }
    Ok(kv)
}

/// Parses a `meta` bucket revision value (17 bytes, like a `key` bucket key).
pub fn parse_meta_revision(value: &[u8], page: u64) -> Result<i64> {
    Revision::parse_key(value)
        .map(|(r, _)| r.main)
        .map_err(|problem| SnapshotError::BadRevisionKey {
            page,
            key: hex_lossy(value),
            problem,
        })
}

pub(crate) fn hex_lossy(b: &[u8]) -> String {
    b.iter().take(32).map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(kv: &KeyValue) -> Vec<u8> {
        fn put_varint(out: &mut Vec<u8>, mut v: u64) {
            while v >= 0x80 {
                out.push((v as u8) | 0x80);
                v >>= 7;
            }
            out.push(v as u8);
        }
        let mut out = Vec::new();
        for (field, bytes) in [(1u64, &kv.key), (5, &kv.value)] {
            put_varint(&mut out, field << 3 | 2);
            put_varint(&mut out, bytes.len() as u64);
            out.extend_from_slice(bytes);
        }
        for (field, v) in [
            (2u64, kv.create_revision),
            (3, kv.mod_revision),
            (4, kv.version),
            (6, kv.lease),
        ] {
            put_varint(&mut out, field << 3);
            put_varint(&mut out, v as u64);
        }
        out
    }

    #[test]
    fn revision_keys() {
        let r = Revision { main: 300, sub: 2 };
        let mut b = r.to_bytes().to_vec();
        assert_eq!(Revision::parse_key(&b).unwrap(), (r, false));
        b.push(b't');
        assert_eq!(Revision::parse_key(&b).unwrap(), (r, true));
        assert!(Revision::parse_key(&b[..10]).is_err());
    }

    #[test]
    fn key_value_round_trip_and_errors() {
        let kv = KeyValue {
            key: b"/registry/secrets/a/b".to_vec(),
            create_revision: 5,
            mod_revision: 9,
            version: 3,
            value: vec![7; 300],
            lease: -1,
        };
        let enc = encode(&kv);
        assert_eq!(decode_key_value(&enc).unwrap().to_owned(), kv);
        for cut in 1..enc.len() {
            // every truncation either fails or yields a prefix of the fields, never panics
            let _ = decode_key_value(&enc[..cut]);
        }
        assert!(decode_key_value(&[0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f]).is_err());
    }
}
