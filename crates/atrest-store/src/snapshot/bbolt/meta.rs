//! The two meta pages (ids 0 and 1) of a bbolt file (etcd-io/bbolt `internal/common/meta.go`).
//!
//! ```text
//! offset 16: magic u32 = 0xED0CDAED | version u32 = 2 | pageSize u32 | flags u32
//!            root bucket { root pgid u64, sequence u64 } | freelist pgid u64 | pgid (high-water mark) u64
//!            txid u64 | checksum u64 = FNV-64a of the 56 bytes before it
//! ```
//! bbolt writes the meta pages alternately (page `txid % 2`); the valid one with the higher txid wins.

use super::page::{u32_at, u64_at, PageHeader, META_PAGE, PAGE_HEADER_SIZE};

pub const MAGIC: u32 = 0xED0C_DAED;
pub const VERSION: u32 = 2;
const META_FIELDS_LEN: usize = 56;
/// Bytes of the file needed to parse one meta page.
pub const META_LEN: usize = PAGE_HEADER_SIZE + META_FIELDS_LEN + 8;

/// A parsed, checksummed meta page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    pub page_size: u32,
    pub flags: u32,
    pub root: u64,
    pub freelist: u64,
    /// High-water mark: pages `>= pgid` are not part of the database.
    pub pgid: u64,
    pub txid: u64,
}

/// FNV-1a, 64 bit (Go's `hash/fnv.New64a`).
pub fn fnv64a(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

impl Meta {
    /// Parses the meta page that starts at `buf[0]`; the error says what is wrong.
    pub fn parse(buf: &[u8]) -> Result<Meta, String> {
        let header = PageHeader::parse(buf).ok_or("file too short for a meta page")?;
        if header.flags & META_PAGE == 0 {
            return Err(format!("not a meta page (flags {:#06x})", header.flags));
        }
        let f = |off: usize| {
            u64_at(buf, PAGE_HEADER_SIZE + off).ok_or("file too short for a meta page")
        };
        let magic = u32_at(buf, PAGE_HEADER_SIZE).ok_or("file too short for a meta page")?;
        if magic != MAGIC {
            return Err(format!("bad magic {magic:#010x}"));
        }
        let version = u32_at(buf, PAGE_HEADER_SIZE + 4).ok_or("file too short")?;
        if version != VERSION {
            return Err(format!("unsupported bbolt version {version}"));
        }
        let checksum = f(META_FIELDS_LEN)?;
        let fields = &buf[PAGE_HEADER_SIZE..PAGE_HEADER_SIZE + META_FIELDS_LEN];
        if fnv64a(fields) != checksum {
            return Err("checksum mismatch".into());
        }
        let page_size = u32_at(buf, PAGE_HEADER_SIZE + 8).ok_or("file too short")?;
        if !(512..=1 << 20).contains(&page_size) || !page_size.is_power_of_two() {
            return Err(format!("implausible page size {page_size}"));
        }
        Ok(Meta {
            page_size,
            flags: u32_at(buf, PAGE_HEADER_SIZE + 12).ok_or("file too short")?,
            root: f(16)?,
            freelist: f(32)?,
            pgid: f(40)?,
            txid: f(48)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn meta_page(page_size: u32, root: u64, pgid: u64, txid: u64) -> Vec<u8> {
        let mut buf = vec![0u8; page_size as usize];
        buf[8..10].copy_from_slice(&META_PAGE.to_le_bytes());
        let m = PAGE_HEADER_SIZE;
        buf[m..m + 4].copy_from_slice(&MAGIC.to_le_bytes());
        buf[m + 4..m + 8].copy_from_slice(&VERSION.to_le_bytes());
        buf[m + 8..m + 12].copy_from_slice(&page_size.to_le_bytes());
        buf[m + 16..m + 24].copy_from_slice(&root.to_le_bytes());
        buf[m + 40..m + 48].copy_from_slice(&pgid.to_le_bytes());
        buf[m + 48..m + 56].copy_from_slice(&txid.to_le_bytes());
        let sum = fnv64a(&buf[m..m + 56]);
        buf[m + 56..m + 64].copy_from_slice(&sum.to_le_bytes());
        buf
    }

    #[test]
    fn fnv_matches_go() {
        // Go: fnv.New64a() of "" and "a".
        assert_eq!(fnv64a(b""), 0xcbf29ce484222325);
        assert_eq!(fnv64a(b"a"), 0xaf63dc4c8601ec8c);
    }

    #[test]
    fn parse_and_reject() {
        let buf = meta_page(4096, 3, 10, 42);
        let meta = Meta::parse(&buf).unwrap();
        assert_eq!(
            (meta.page_size, meta.root, meta.pgid, meta.txid),
            (4096, 3, 10, 42)
        );
        let mut bad = buf.clone();
        bad[PAGE_HEADER_SIZE + 50] ^= 1;
        assert_eq!(Meta::parse(&bad).unwrap_err(), "checksum mismatch");
        assert!(Meta::parse(&buf[..20]).is_err());
    }
}
