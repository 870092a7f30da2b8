//! Buckets and in-order traversal (etcd-io/bbolt `bucket.go`, `cursor.go`), defensive: depth is
//! limited, every page is visited at most once per traversal (a bitset of one bit per page, so a
//! page-id cycle or shared subtree is an error instead of a hang), and keys must increase.

use std::sync::Arc;

use super::page::{Page, BUCKET_HEADER_SIZE, BUCKET_LEAF_FLAG};
use super::{Db, MAX_DEPTH};
use crate::snapshot::error::{Result, SnapshotError};

/// Where a bucket's tree lives.
#[derive(Debug, Clone)]
pub enum Bucket {
    /// Root page id of the bucket's tree.
    Page(u64),
    /// A small bucket stored in its parent's leaf value.
    Inline(Page),
}

/// A key/value found in a leaf: the page plus the element index (slices borrow the page).
#[derive(Debug, Clone)]
pub struct Entry {
    page: Page,
    index: usize,
}

impl Entry {
    pub fn page_id(&self) -> u64 {
        self.page.id()
    }
    pub fn key(&self) -> &[u8] {
        // Validated when the page was read.
        self.page
            .leaf(self.index)
            .map(|e| e.key)
            .unwrap_or_default()
    }
    pub fn value(&self) -> &[u8] {
        self.page
            .leaf(self.index)
            .map(|e| e.value)
            .unwrap_or_default()
    }
    pub fn flags(&self) -> u32 {
        self.page
            .leaf(self.index)
            .map(|e| e.flags)
            .unwrap_or_default()
    }
    pub fn is_bucket(&self) -> bool {
        self.flags() & BUCKET_LEAF_FLAG != 0
    }
}

impl Bucket {
    fn root_page(&self, db: &Db) -> Result<Page> {
        match self {
            Bucket::Page(id) => db.read_page(*id),
            Bucket::Inline(p) => Ok(p.clone()),
        }
    }

    /// The leaf entry with exactly `key`, if any.
    pub fn get(&self, db: &Db, key: &[u8]) -> Result<Option<Entry>> {
        let mut page = self.root_page(db)?;
        let mut path: Vec<u64> = Vec::new();
        loop {
            if page.is_leaf() {
                let i = page.search(key)?;
                if i < page.count() && page.leaf(i)?.key == key {
                    return Ok(Some(Entry { page, index: i }));
                }
                return Ok(None);
            }
            if path.len() >= MAX_DEPTH || path.contains(&page.id()) {
                return Err(SnapshotError::corrupt(
                    page.id(),
                    "branch pages form a cycle or are nested too deep",
                ));
            }
            path.push(page.id());
            let i = page.search(key)?;
            // The child whose range holds `key`: exact match, else the element before.
            let i = if i < page.count() && page.branch(i)?.0 == key {
                i
            } else {
                i.saturating_sub(1)
            };
            let child = page.branch(i)?.1;
            page = db.read_page(child)?;
        }
    }

    /// The nested bucket stored under `name`.
    pub fn bucket(&self, db: &Db, name: &[u8]) -> Result<Option<Bucket>> {
        let Some(entry) = self.get(db, name)? else {
            return Ok(None);
        };
        if !entry.is_bucket() {
            return Err(SnapshotError::corrupt(
                entry.page_id(),
                format!(
                    "{:?} is a plain value, not a bucket",
                    String::from_utf8_lossy(name)
                ),
            ));
        }
        let value = entry.value();
        if value.len() < BUCKET_HEADER_SIZE {
            return Err(SnapshotError::corrupt(
                entry.page_id(),
                "bucket header shorter than 16 bytes",
            ));
        }
        let root = u64::from_le_bytes(value[..8].try_into().unwrap_or_default());
        if root != 0 {
            return Ok(Some(Bucket::Page(root)));
        }
        let inline = Page::new(
            entry.page_id(),
            Arc::new(value[BUCKET_HEADER_SIZE..].to_vec()),
        )?;
        if !inline.is_leaf() {
            return Err(SnapshotError::corrupt(
                entry.page_id(),
                "inline bucket is not a leaf page",
            ));
        }
        Ok(Some(Bucket::Inline(inline)))
    }

    /// Every entry of the bucket, in key order.
    pub fn cursor<'a>(&self, db: &'a Db) -> Cursor<'a> {
        Cursor::new(db, self.clone())
    }

    /// Entries with keys `>= start`, in key order.
    pub fn cursor_from<'a>(&self, db: &'a Db, start: &[u8]) -> Cursor<'a> {
        let mut c = Cursor::new(db, self.clone());
        c.start = Some(start.to_vec());
        c
    }
}

/// In-order iterator over a bucket's leaf entries.
pub struct Cursor<'a> {
    db: &'a Db,
    root: Option<Bucket>,
    stack: Vec<(Page, usize)>,
    visited: Vec<u64>,
    last_key: Option<Vec<u8>>,
    start: Option<Vec<u8>>,
    inline_root: bool,
    failed: bool,
}

impl<'a> Cursor<'a> {
    fn new(db: &'a Db, root: Bucket) -> Self {
        let inline_root = matches!(root, Bucket::Inline(_));
        Cursor {
            db,
            root: Some(root),
            stack: Vec::new(),
            visited: Vec::new(),
            last_key: None,
            start: None,
            inline_root,
            failed: false,
        }
    }

    fn enter(&mut self, page: Page) -> Result<()> {
        if self.stack.len() >= MAX_DEPTH {
            return Err(SnapshotError::corrupt(
                page.id(),
                format!("tree deeper than {MAX_DEPTH} levels"),
            ));
        }
        // Inline bucket pages live inside their parent's value: only file pages are tracked.
        if !(self.stack.is_empty() && self.inline_root) {
            let id = page.id();
            let (word, bit) = ((id / 64) as usize, id % 64);
            if self.visited.is_empty() {
                self.visited = vec![0u64; (self.db.page_count() / 64 + 1) as usize];
            }
            // read_page checked id < page_count, so `word` is in range.
            let w = self
                .visited
                .get_mut(word)
                .ok_or_else(|| SnapshotError::corrupt(id, "page id out of range"))?;
            if *w & (1 << bit) != 0 {
                return Err(SnapshotError::corrupt(
                    id,
                    "page referenced twice (page-id cycle or shared subtree)",
                ));
            }
            *w |= 1 << bit;
        }
        // Start position: with a start key, descend towards it.
        let index = match &self.start {
            Some(start) if page.is_leaf() => page.search(start)?,
            Some(start) => {
                let i = page.search(start)?;
                if i < page.count() && page.branch(i)?.0 == start.as_slice() {
                    i
                } else {
                    i.saturating_sub(1)
                }
            }
            None => 0,
        };
        self.stack.push((page, index));
        Ok(())
    }

    fn step(&mut self) -> Result<Option<Entry>> {
        if let Some(root) = self.root.take() {
            let page = root.root_page(self.db)?;
            self.enter(page)?;
        }
        loop {
            let Some((page, index)) = self.stack.last_mut() else {
                return Ok(None);
            };
            if *index >= page.count() {
                self.stack.pop();
                continue;
            }
            let i = *index;
            *index += 1;
            if page.is_leaf() {
                let entry = Entry {
                    page: page.clone(),
                    index: i,
                };
                let key = entry.key();
                match &mut self.last_key {
                    Some(last) if key <= last.as_slice() => {
                        return Err(SnapshotError::corrupt(
                            entry.page_id(),
                            format!("keys out of order at element {i}"),
                        ));
                    }
                    Some(last) => {
                        last.clear();
                        last.extend_from_slice(key);
                    }
                    None => self.last_key = Some(key.to_vec()),
                }
                return Ok(Some(entry));
            }
            let child = page.branch(i)?.1;
            let child = self.db.read_page(child)?;
            self.enter(child)?;
        }
    }
}

impl Iterator for Cursor<'_> {
    type Item = Result<Entry>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        match self.step() {
            Ok(Some(e)) => Some(Ok(e)),
            Ok(None) => None,
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

impl Bucket {
    /// The entry with the greatest key (rightmost path), `None` for an empty bucket.
    pub fn last(&self, db: &Db) -> Result<Option<Entry>> {
        let mut page = self.root_page(db)?;
        let mut path: Vec<u64> = Vec::new();
        loop {
            if page.is_leaf() {
                return Ok(page
                    .count()
                    .checked_sub(1)
                    .map(|index| Entry { page, index }));
            }
            if path.len() >= MAX_DEPTH || path.contains(&page.id()) {
                return Err(SnapshotError::corrupt(
                    page.id(),
                    "branch pages form a cycle or are nested too deep",
                ));
            }
            path.push(page.id());
            let child = page.branch(page.count() - 1)?.1; // branch pages have >= 1 element
            page = db.read_page(child)?;
        }
    }
}
