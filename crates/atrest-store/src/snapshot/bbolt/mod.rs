//! A read-only reader of the bbolt file format (etcd-io/bbolt, format version 2), enough to walk
//! buckets of a database that nothing else has open: meta pages, branch and leaf pages, overflow
//! pages and inline buckets. No memory map (the crate forbids `unsafe`): pages are read with
//! positioned reads, and only branch pages are cached (bounded), so memory does not grow with the
//! file size.

mod cursor;
mod meta;
mod page;

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

pub use cursor::{Bucket, Cursor, Entry};
pub use meta::{fnv64a, Meta};
pub use page::{LeafElement, Page, PageHeader};

use crate::snapshot::error::{Result, SnapshotError};

/// Branch pages kept in memory for lookups (at 4 KiB pages: at most 4 MiB).
const BRANCH_CACHE_PAGES: usize = 1024;
/// Deeper trees than this are treated as corrupt (bbolt trees of billions of keys stay below 10).
pub const MAX_DEPTH: usize = 64;

/// Where pages come from: a file (positioned reads) or bytes in memory (tests, fuzzing).
pub trait Source: Send + Sync {
    /// Fills `buf` from `offset`; `UnexpectedEof` when the source is shorter.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()>;
}

impl Source for File {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        FileExt::read_exact_at(self, buf, offset)
    }
}

impl Source for Vec<u8> {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        let start = usize::try_from(offset).map_err(|_| std::io::ErrorKind::UnexpectedEof)?;
        let src = start
            .checked_add(buf.len())
            .and_then(|end| self.get(start..end))
            .ok_or(std::io::ErrorKind::UnexpectedEof)?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

/// An open bbolt file.
pub struct Db {
    file: Box<dyn Source>,
    path: PathBuf,
    /// Bytes of the file that belong to the database (the file without a checksum trailer).
    data_len: u64,
    meta: Meta,
    branch_cache: Mutex<HashMap<u64, Page>>,
    pages_read: AtomicU64,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db")
            .field("path", &self.path)
            .field("data_len", &self.data_len)
            .field("meta", &self.meta)
            .finish()
    }
}

impl Db {
    /// Opens `file` (already open at `path`), of which the first `data_len` bytes are the database.
    pub fn open(file: Box<dyn Source>, path: &Path, data_len: u64) -> Result<Db> {
        let read_meta = |offset: u64| -> std::result::Result<Meta, String> {
            let mut buf = vec![0u8; meta::META_LEN];
            if offset + meta::META_LEN as u64 > data_len {
                return Err(format!(
                    "file too short ({data_len} bytes) for a meta page at byte {offset}"
                ));
            }
            file.read_exact_at(&mut buf, offset)
                .map_err(|e| e.to_string())?;
            Meta::parse(&buf)
        };
        let meta0 = read_meta(0);
        let sizes: Vec<u32> = match &meta0 {
            Ok(m) => vec![m.page_size],
            // Page 0 is damaged: look for page 1 at the usual page sizes.
            Err(_) => vec![4096, 8192, 16384, 65536, 32768, 2048, 1024, 512],
        };
        let mut meta1 = Err("not found at any usual page size".to_string());
        for size in sizes {
            match read_meta(u64::from(size)) {
                Ok(m) if m.page_size == size => {
                    meta1 = Ok(m);
                    break;
                }
                Ok(m) => {
                    meta1 = Err(format!(
                        "page size {} does not match its position {size}",
                        m.page_size
                    ))
                }
                Err(e) => meta1 = Err(e),
            }
        }
        let meta = match (&meta0, &meta1) {
            (Ok(a), Ok(b)) => {
                if b.txid > a.txid {
                    *b
                } else {
                    *a
                }
            }
            (Ok(a), Err(_)) => *a,
            (Err(_), Ok(b)) => *b,
            (Err(a), Err(b)) => {
                return Err(SnapshotError::NoValidMeta {
                    meta0: a.clone(),
                    meta1: b.clone(),
                })
            }
        };
        let ps = u64::from(meta.page_size);
        if meta.pgid < 3 {
            return Err(SnapshotError::corrupt(
                meta.txid % 2,
                format!("meta high-water mark {} too small", meta.pgid),
            ));
        }
        let needed = meta.pgid.saturating_mul(ps);
        if needed > data_len {
            return Err(SnapshotError::Truncated {
                page: meta.pgid - 1,
                needed,
                len: data_len,
            });
        }
        if meta.root < 2 || meta.root >= meta.pgid {
            return Err(SnapshotError::corrupt(
                meta.txid % 2,
                format!("root bucket page {} out of range", meta.root),
            ));
        }
        Ok(Db {
            file,
            path: path.to_path_buf(),
            data_len,
            meta,
            branch_cache: Mutex::new(HashMap::new()),
            pages_read: AtomicU64::new(0),
        })
    }

    pub fn meta(&self) -> &Meta {
        &self.meta
    }
    pub fn path(&self) -> &Path {
        &self.path
    }
    /// Pages in the database (the high-water mark).
    pub fn page_count(&self) -> u64 {
        self.meta.pgid
    }
    /// Pages (including overflow) read from disk so far: for progress displays.
    pub fn pages_read(&self) -> u64 {
        self.pages_read.load(Ordering::Relaxed)
    }

    /// The root bucket (whose keys are etcd's bucket names).
    pub fn root_bucket(&self) -> Bucket {
        Bucket::Page(self.meta.root)
    }

    fn read_exact(&self, buf: &mut [u8], offset: u64, page: u64) -> Result<()> {
        let end = offset + buf.len() as u64;
        if end > self.data_len {
            return Err(SnapshotError::Truncated {
                page,
                needed: end,
                len: self.data_len,
            });
        }
        self.file
            .read_exact_at(buf, offset)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::UnexpectedEof => SnapshotError::Truncated {
                    page,
                    needed: end,
                    len: self.data_len,
                },
                _ => SnapshotError::Io {
                    path: self.path.clone(),
                    source: e,
                },
            })
    }

    /// Reads and validates a branch or leaf page with its overflow pages.
    pub fn read_page(&self, id: u64) -> Result<Page> {
        if id < 2 || id >= self.meta.pgid {
            return Err(SnapshotError::corrupt(
                id,
                format!(
                    "page id out of range (database pages 2..{})",
                    self.meta.pgid
                ),
            ));
        }
        if let Some(p) = self
            .branch_cache
            .lock()
            .map_err(|_| SnapshotError::corrupt(id, "cache poisoned"))?
            .get(&id)
        {
            return Ok(p.clone());
        }
        let ps = u64::from(self.meta.page_size);
        let offset = id * ps; // id < pgid and pgid * ps <= data_len: no overflow
        let mut buf = vec![0u8; ps as usize];
        self.read_exact(&mut buf, offset, id)?;
        let header =
            PageHeader::parse(&buf).ok_or_else(|| SnapshotError::corrupt(id, "short header"))?;
        if header.id != id {
            return Err(SnapshotError::corrupt(
                id,
                format!("header names page {} (stale or misplaced page)", header.id),
            ));
        }
        if header.overflow > 0 {
            let last = id.checked_add(u64::from(header.overflow));
            match last {
                Some(last) if last < self.meta.pgid => {}
                _ => {
                    return Err(SnapshotError::corrupt(
                        id,
                        format!(
                            "{} overflow pages run past the last page {}",
                            header.overflow,
                            self.meta.pgid - 1
                        ),
                    ))
                }
            }
            let total = (u64::from(header.overflow) + 1) * ps;
            buf.resize(total as usize, 0);
            self.read_exact(&mut buf[ps as usize..], offset + ps, id)?;
        }
        self.pages_read
            .fetch_add(u64::from(header.overflow) + 1, Ordering::Relaxed);
        let page = Page::new(id, Arc::new(buf))?;
        if !page.is_leaf() {
            let mut cache = self
                .branch_cache
                .lock()
                .map_err(|_| SnapshotError::corrupt(id, "cache poisoned"))?;
            if cache.len() >= BRANCH_CACHE_PAGES {
                cache.clear();
            }
            cache.insert(id, page.clone());
        }
        Ok(page)
    }
}
