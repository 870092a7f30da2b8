//! bbolt page layout (etcd-io/bbolt `internal/common/page.go`), read with bounds checks.
//!
//! ```text
//! page header (16 bytes): id u64 | flags u16 | count u16 | overflow u32      (little endian)
//! branch element (16):    pos u32 | ksize u32 | pgid u64                      key at elem + pos
//! leaf element (16):      flags u32 | pos u32 | ksize u32 | vsize u32         key at elem + pos, value after key
//! ```
//! A page with `overflow = n` spans `n + 1` consecutive page-size blocks. Buckets small enough are
//! stored *inline*: the bucket value is a 16-byte bucket header with root 0, then a page (header and
//! elements) whose offsets are relative to that inline buffer.

use std::sync::Arc;

use crate::snapshot::error::{Result, SnapshotError};

pub const PAGE_HEADER_SIZE: usize = 16;
pub const ELEMENT_SIZE: usize = 16;
pub const BRANCH_PAGE: u16 = 0x01;
pub const LEAF_PAGE: u16 = 0x02;
pub const META_PAGE: u16 = 0x04;
pub const FREELIST_PAGE: u16 = 0x10;
/// Leaf element flag: the value is a nested bucket.
pub const BUCKET_LEAF_FLAG: u32 = 0x01;
/// Bucket header in a bucket's leaf value: root pgid u64 | sequence u64.
pub const BUCKET_HEADER_SIZE: usize = 16;

pub(crate) fn u16_at(buf: &[u8], off: usize) -> Option<u16> {
    buf.get(off..off.checked_add(2)?)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
}
pub(crate) fn u32_at(buf: &[u8], off: usize) -> Option<u32> {
    let b = buf.get(off..off.checked_add(4)?)?;
    Some(u32::from_le_bytes(b.try_into().ok()?))
}
pub(crate) fn u64_at(buf: &[u8], off: usize) -> Option<u64> {
    let b = buf.get(off..off.checked_add(8)?)?;
    Some(u64::from_le_bytes(b.try_into().ok()?))
}

/// Header fields of a page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageHeader {
    pub id: u64,
    pub flags: u16,
    pub count: u16,
    pub overflow: u32,
}

impl PageHeader {
    pub fn parse(buf: &[u8]) -> Option<PageHeader> {
        Some(PageHeader {
            id: u64_at(buf, 0)?,
            flags: u16_at(buf, 8)?,
            count: u16_at(buf, 10)?,
            overflow: u32_at(buf, 12)?,
        })
    }
}

/// A validated branch or leaf page (a file page with its overflow, or an inline bucket page).
#[derive(Clone)]
pub struct Page {
    /// The page id for messages: the page itself, or for inline pages the page holding the bucket.
    id: u64,
    header: PageHeader,
    buf: Arc<Vec<u8>>,
}

impl std::fmt::Debug for Page {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Page")
            .field("id", &self.id)
            .field("header", &self.header)
            .field("len", &self.buf.len())
            .finish()
    }
}

/// One element of a leaf page.
#[derive(Debug, Clone, Copy)]
pub struct LeafElement<'a> {
    pub flags: u32,
    pub key: &'a [u8],
    pub value: &'a [u8],
}

impl Page {
    /// Checks the header, the kind (branch or leaf) and that every element lies inside `buf`.
    pub fn new(id: u64, buf: Arc<Vec<u8>>) -> Result<Page> {
        let header = PageHeader::parse(&buf)
            .ok_or_else(|| SnapshotError::corrupt(id, "page shorter than its header"))?;
        let kind = header.flags & (BRANCH_PAGE | LEAF_PAGE | META_PAGE | FREELIST_PAGE);
        if kind != BRANCH_PAGE && kind != LEAF_PAGE {
            return Err(SnapshotError::corrupt(
                id,
                format!(
                    "expected a branch or leaf page, found flags {:#06x}",
                    header.flags
                ),
            ));
        }
        let elements_end = PAGE_HEADER_SIZE + usize::from(header.count) * ELEMENT_SIZE;
        if elements_end > buf.len() {
            return Err(SnapshotError::corrupt(
                id,
                format!(
                    "{} elements do not fit in {} bytes",
                    header.count,
                    buf.len()
                ),
            ));
        }
        if header.flags & BRANCH_PAGE != 0 && header.count == 0 {
            return Err(SnapshotError::corrupt(id, "branch page without elements"));
        }
        let page = Page { id, header, buf };
        // Validate every element once, so accessors can't fail later.
        for i in 0..usize::from(header.count) {
            if page.is_leaf() {
                page.leaf_checked(i)?;
            } else {
                page.branch_checked(i)?;
            }
        }
        Ok(page)
    }

    pub fn id(&self) -> u64 {
        self.id
    }
    pub fn is_leaf(&self) -> bool {
        self.header.flags & LEAF_PAGE != 0
    }
    pub fn count(&self) -> usize {
        usize::from(self.header.count)
    }

    fn slice(&self, i: usize, pos: u32, len: u64) -> Result<&[u8]> {
        let elem = PAGE_HEADER_SIZE + i * ELEMENT_SIZE;
        let start = (elem as u64).checked_add(u64::from(pos));
        let end = start.and_then(|s| s.checked_add(len));
        match (start, end) {
            (Some(s), Some(e)) if e <= self.buf.len() as u64 => {
                Ok(&self.buf[s as usize..e as usize])
            }
            _ => Err(SnapshotError::corrupt(
                self.id,
                format!(
                    "element {i} points outside the page (pos {pos}, length {len}, page {} bytes)",
                    self.buf.len()
                ),
            )),
        }
    }

    fn branch_checked(&self, i: usize) -> Result<(&[u8], u64)> {
        let elem = PAGE_HEADER_SIZE + i * ELEMENT_SIZE;
        let (pos, ksize, child) = match (
            u32_at(&self.buf, elem),
            u32_at(&self.buf, elem + 4),
            u64_at(&self.buf, elem + 8),
        ) {
            (Some(p), Some(k), Some(c)) => (p, k, c),
            _ => {
                return Err(SnapshotError::corrupt(
                    self.id,
                    format!("element {i} outside the page"),
                ))
            }
        };
        Ok((self.slice(i, pos, u64::from(ksize))?, child))
    }

    fn leaf_checked(&self, i: usize) -> Result<LeafElement<'_>> {
        let elem = PAGE_HEADER_SIZE + i * ELEMENT_SIZE;
        let fields = (
            u32_at(&self.buf, elem),
            u32_at(&self.buf, elem + 4),
            u32_at(&self.buf, elem + 8),
            u32_at(&self.buf, elem + 12),
        );
        let (flags, pos, ksize, vsize) = match fields {
            (Some(f), Some(p), Some(k), Some(v)) => (f, p, k, v),
            _ => {
                return Err(SnapshotError::corrupt(
                    self.id,
                    format!("element {i} outside the page"),
                ))
            }
        };
        let both = self.slice(i, pos, u64::from(ksize) + u64::from(vsize))?;
        let (key, value) = both.split_at(ksize as usize);
        Ok(LeafElement { flags, key, value })
    }

    /// Key and child page id of branch element `i` (`i < count`, validated in [`Page::new`]).
    pub fn branch(&self, i: usize) -> Result<(&[u8], u64)> {
        self.branch_checked(i)
    }

    /// Leaf element `i` (`i < count`, validated in [`Page::new`]).
    pub fn leaf(&self, i: usize) -> Result<LeafElement<'_>> {
        self.leaf_checked(i)
    }

    /// Index of the first element whose key is `>= key` (`count` if none).
    pub fn search(&self, key: &[u8]) -> Result<usize> {
        let (mut lo, mut hi) = (0usize, self.count());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let k = if self.is_leaf() {
                self.leaf(mid)?.key
            } else {
                self.branch(mid)?.0
            };
            if k < key {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        Ok(lo)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf_page(entries: &[(&[u8], &[u8])]) -> Vec<u8> {
        let mut buf = vec![0u8; PAGE_HEADER_SIZE + entries.len() * ELEMENT_SIZE];
        buf[8..10].copy_from_slice(&LEAF_PAGE.to_le_bytes());
        buf[10..12].copy_from_slice(&(entries.len() as u16).to_le_bytes());
        for (i, (k, v)) in entries.iter().enumerate() {
            let elem = PAGE_HEADER_SIZE + i * ELEMENT_SIZE;
            let pos = (buf.len() - elem) as u32;
            buf[elem + 4..elem + 8].copy_from_slice(&pos.to_le_bytes());
            buf[elem + 8..elem + 12].copy_from_slice(&(k.len() as u32).to_le_bytes());
            buf[elem + 12..elem + 16].copy_from_slice(&(v.len() as u32).to_le_bytes());
            buf.extend_from_slice(k);
            buf.extend_from_slice(v);
        }
        buf
    }

    #[test]
    fn leaf_elements_and_search() {
        let page = Page::new(7, Arc::new(leaf_page(&[(b"a", b"1"), (b"c", b"333")]))).unwrap();
        assert_eq!(page.count(), 2);
        assert_eq!(page.leaf(1).unwrap().value, b"333");
        assert_eq!(page.search(b"b").unwrap(), 1);
        assert_eq!(page.search(b"d").unwrap(), 2);
    }

    #[test]
    fn element_outside_page_is_an_error_naming_the_page() {
        let mut buf = leaf_page(&[(b"a", b"1")]);
        buf[PAGE_HEADER_SIZE + 12] = 200; // vsize beyond the buffer
        let err = Page::new(9, Arc::new(buf)).unwrap_err().to_string();
        assert!(
            err.starts_with("page 9: element 0 points outside the page"),
            "{err}"
        );
    }

    #[test]
    fn too_many_elements_is_an_error() {
        let mut buf = leaf_page(&[(b"a", b"1")]);
        buf[10] = 0xff;
        assert!(Page::new(3, Arc::new(buf))
            .unwrap_err()
            .to_string()
            .contains("elements do not fit"));
    }
}
