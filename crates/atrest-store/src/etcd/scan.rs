//! Paged range reads: `limit` keys per page, continuing after the last key, every page at the
//! revision of the first (so a scan sees one consistent state of etcd). Transient errors are
//! retried; a page too large for one gRPC message is fetched again with half the limit.

use std::future::Future;
use std::time::{Duration, Instant};

use etcd_client::{GetOptions, KeyValue};
use tokio::sync::mpsc;

use super::client::{describe, is_compacted, is_too_large, is_transient};
use super::{EtcdConnection, EtcdError};

/// Default page size.
pub const PAGE_SIZE: i64 = 1000;

/// Runs `f` until it succeeds, retrying transient errors with back-off for up to
/// max(3 × command timeout, 15 s).
pub async fn with_retry<T, F, Fut>(
    conn: &EtcdConnection,
    op: &str,
    mut f: F,
) -> Result<T, EtcdError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, etcd_client::Error>>,
{
    let budget = (conn.settings.command_timeout * 3).max(Duration::from_secs(15));
    let started = Instant::now();
    let mut backoff = Duration::from_millis(50);
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if is_transient(&e) && started.elapsed() < budget => {
                tracing::debug!(op, error = %describe(&e), "retrying etcd request");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
            Err(e) => {
                let detail = describe(&e);
                return Err(if is_transient(&e) {
                    EtcdError::Unreachable {
                        endpoints: conn.endpoints(),
                        detail,
                    }
                } else {
                    EtcdError::Request {
                        op: op.to_string(),
                        detail,
                    }
                });
            }
        }
    }
}

/// Walks sorted, disjoint key ranges page by page.
pub struct Scanner {
    conn: EtcdConnection,
    ranges: Vec<(Vec<u8>, Vec<u8>)>,
    index: usize,
    next_start: Option<Vec<u8>>,
    revision: i64,
    page_size: i64,
}

impl Scanner {
    /// `ranges`: `[start, end)` pairs; they are sorted here.
    pub fn new(
        conn: EtcdConnection,
        mut ranges: Vec<(Vec<u8>, Vec<u8>)>,
        page_size: i64,
    ) -> Scanner {
        ranges.sort();
        Scanner {
            conn,
            ranges,
            index: 0,
            next_start: None,
            revision: 0,
            page_size: page_size.max(1),
        }
    }

    /// Continues strictly after `key` (resuming from a checkpoint).
    pub fn start_after(mut self, key: &[u8]) -> Scanner {
        let mut next = key.to_vec();
        next.push(0);
        while self.index < self.ranges.len()
            && self.ranges[self.index].1.as_slice() <= next.as_slice()
        {
            self.index += 1;
        }
        if self.index < self.ranges.len() && self.ranges[self.index].0 < next {
            self.next_start = Some(next);
        }
        self
    }

    /// Reads every page at `revision` (0: the first page's revision).
    pub fn at_revision(mut self, revision: i64) -> Scanner {
        self.revision = revision;
        self
    }

    /// The revision the scan is pinned to (0 before the first page).
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// Re-pins the scan to the newest revision (after a compaction), keeping its position.
    pub fn unpin(&mut self) {
        self.revision = 0;
    }

    /// The next page, `None` when every range is exhausted.
    pub async fn next_page(&mut self) -> Result<Option<Vec<KeyValue>>, EtcdError> {
        while self.index < self.ranges.len() {
            let (start, end) = &self.ranges[self.index];
            let from = self.next_start.clone().unwrap_or_else(|| start.clone());
            let mut resp = loop {
                let mut opts = GetOptions::new()
                    .with_range(end.clone())
                    .with_limit(self.page_size);
                if self.revision > 0 {
                    opts = opts.with_revision(self.revision);
                }
                let conn = &self.conn;
                let result = with_retry(conn, "range", || {
                    let mut kv = conn.kv();
                    let (from, opts) = (from.clone(), opts.clone());
                    async move {
                        match kv.get(from, Some(opts)).await {
                            Err(e) if is_too_large(&e) || is_compacted(&e) => Ok(Err(e)),
                            other => other.map(Ok),
                        }
                    }
                })
                .await?;
                match result {
                    Ok(resp) => break resp,
                    Err(e) if is_compacted(&e) => {
                        return Err(EtcdError::Compacted {
                            revision: self.revision,
                        })
                    }
                    Err(e) if self.page_size > 1 => {
                        tracing::debug!(error = %describe(&e), "page too large, halving");
                        self.page_size /= 2;
                    }
                    Err(e) => {
                        return Err(EtcdError::Request {
                            op: "range".into(),
                            detail: describe(&e),
                        })
                    }
                }
            };
            if self.revision == 0 {
                self.revision = resp.header().map(|h| h.revision()).unwrap_or(0);
            }
            let more = resp.more();
            let kvs = resp.take_kvs();
            match kvs.last() {
                Some(last) if more => {
                    let mut next = last.key().to_vec();
                    next.push(0);
                    self.next_start = Some(next);
                }
                _ => {
                    self.index += 1;
                    self.next_start = None;
                }
            }
            if !kvs.is_empty() {
                return Ok(Some(kvs));
            }
        }
        Ok(None)
    }

    /// Number of keys in the remaining ranges (a `count_only` request per range, at the scan's revision).
    pub async fn count_remaining(&mut self) -> Result<u64, EtcdError> {
        let mut total = 0u64;
        for (i, (start, end)) in self.ranges.iter().enumerate().skip(self.index) {
            let from = if i == self.index {
                self.next_start.clone().unwrap_or_else(|| start.clone())
            } else {
                start.clone()
            };
            let mut opts = GetOptions::new().with_range(end.clone()).with_count_only();
            if self.revision > 0 {
                opts = opts.with_revision(self.revision);
            }
            let conn = &self.conn;
            let resp = with_retry(conn, "count", || {
                let mut kv = conn.kv();
                let (from, opts) = (from.clone(), opts.clone());
                async move { kv.get(from, Some(opts)).await }
            })
            .await?;
            if self.revision == 0 {
                self.revision = resp.header().map(|h| h.revision()).unwrap_or(0);
            }
            total += resp.count().max(0) as u64;
        }
        Ok(total)
    }
}

/// Runs each scanner in its own task, fetching the next page while the caller works on the
/// current one; pages of all scanners arrive on one channel (in no particular order across scanners).
pub fn prefetch(scanners: Vec<Scanner>) -> mpsc::Receiver<Result<(i64, Vec<KeyValue>), EtcdError>> {
    let (tx, rx) = mpsc::channel(2 * scanners.len().max(1));
    for mut scanner in scanners {
        let tx = tx.clone();
        tokio::spawn(async move {
            loop {
                match scanner.next_page().await {
                    Ok(Some(page)) => {
                        if tx.send(Ok((scanner.revision(), page))).await.is_err() {
                            return;
                        }
                    }
                    Ok(None) => return,
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                }
            }
        });
    }
    rx
}

/// The cluster's current revision (header of a one-key read).
pub async fn current_revision(conn: &EtcdConnection) -> Result<i64, EtcdError> {
    let resp = with_retry(conn, "get", || {
        let mut kv = conn.kv();
        async move { kv.get("/atrest-revision-probe", None).await }
    })
    .await?;
    Ok(resp.header().map(|h| h.revision()).unwrap_or(0))
}

/// Byte-wise midpoint of `a < b` (as big-endian fractions): a key strictly between them, if any.
fn midpoint(a: &[u8], b: &[u8]) -> Option<Vec<u8>> {
    let len = a.len().max(b.len()) + 1;
    let digit = |s: &[u8], i: usize| u16::from(s.get(i).copied().unwrap_or(0));
    let mut sum = vec![0u16; len];
    let mut carry = 0u16;
    for i in (0..len).rev() {
        let v = digit(a, i) + digit(b, i) + carry;
        sum[i] = v % 256;
        carry = v / 256;
    }
    let mut half = Vec::with_capacity(len);
    let mut rem = carry;
    for v in sum {
        let cur = rem * 256 + v;
        half.push((cur / 2) as u8);
        rem = cur % 2;
    }
    while half.last() == Some(&0) {
        half.pop();
    }
    (half.as_slice() > a && half.as_slice() < b).then_some(half)
}

/// Splits `[start, end)` into up to `parts` ranges of similar key-space width between its first and
/// last key (two small requests at `revision`), so several scanners can read in parallel.
pub async fn split_range(
    conn: &EtcdConnection,
    start: &[u8],
    end: &[u8],
    parts: usize,
    revision: i64,
) -> Result<Vec<(Vec<u8>, Vec<u8>)>, EtcdError> {
    use etcd_client::{SortOrder, SortTarget};
    let whole = vec![(start.to_vec(), end.to_vec())];
    if parts < 2 {
        return Ok(whole);
    }
    let edge = |order: SortOrder| {
        let opts = GetOptions::new()
            .with_range(end.to_vec())
            .with_limit(1)
            .with_keys_only()
            .with_revision(revision)
            .with_sort(SortTarget::Key, order);
        with_retry(conn, "range", move || {
            let mut kv = conn.kv();
            let opts = opts.clone();
            async move { kv.get(start.to_vec(), Some(opts)).await }
        })
    };
    let first = edge(SortOrder::Ascend).await?;
    let last = edge(SortOrder::Descend).await?;
    let (Some(first), Some(last)) = (first.kvs().first(), last.kvs().first()) else {
        return Ok(whole);
    };
    let mut points = vec![first.key().to_vec(), last.key().to_vec()];
    while points.len() <= parts {
        let mut next = vec![points[0].clone()];
        for w in points.windows(2) {
            if let Some(m) = midpoint(&w[0], &w[1]) {
                next.push(m);
            }
            next.push(w[1].clone());
        }
        if next.len() == points.len() {
            break;
        }
        points = next;
    }
    // Inner points become boundaries; the outer edges stay the original range.
    let inner = &points[1..points.len() - 1];
    let mut bounds = vec![start.to_vec()];
    bounds.extend(inner.iter().cloned());
    bounds.push(end.to_vec());
    Ok(bounds
        .windows(2)
        .map(|w| (w[0].clone(), w[1].clone()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::midpoint;

    #[test]
    fn midpoints_lie_between() {
        let m = midpoint(b"/registry/a", b"/registry/c").unwrap();
        assert!(m.as_slice() > &b"/registry/a"[..] && m.as_slice() < &b"/registry/c"[..]);
        assert_eq!(m, b"/registry/b");
        let m = midpoint(b"a", b"b").unwrap();
        assert!(m.as_slice() > &b"a"[..] && m.as_slice() < &b"b"[..]);
        let m = midpoint(
            b"/registry/secrets/ns-00/s-1",
            b"/registry/secrets/ns-99/s-9",
        )
        .unwrap();
        assert!(
            m.starts_with(b"/registry/secrets/ns-"),
            "{}",
            String::from_utf8_lossy(&m)
        );
        assert_eq!(midpoint(b"a", b"a\x00"), None);
        assert!(midpoint(b"\xff\xff", b"\xff\xff\xff").is_some());
    }
}
