//! `status` on a live etcd: every key under the prefix, read in pages at one revision, into a
//! [`StatusReport`](crate::report::StatusReport).

use atrest_core::Transformers;

use super::scan::{prefetch, Scanner, PAGE_SIZE};
use super::{EtcdConnection, EtcdError};
use crate::keymap;
use crate::report::{ReportOptions, StatusReport, StatusReportBuilder};

/// Progress callbacks (the CLI draws a bar when stderr is a terminal).
pub trait ScanProgress: Send + Sync {
    /// Whether anyone looks: the total (an extra count request) is only fetched then.
    fn wants_total(&self) -> bool {
        false
    }
    fn set_total(&self, _total: u64) {}
    fn advance(&self, _n: u64) {}
}

/// No progress output.
pub struct NoProgress;
impl ScanProgress for NoProgress {}

/// Scans everything under `opts.etcd_prefix` and builds the report. Returns it with the revision read.
pub async fn status(
    conn: &EtcdConnection,
    transformers: Transformers,
    opts: ReportOptions,
    progress: &dyn ScanProgress,
) -> Result<(StatusReport, i64), EtcdError> {
    let prefix = keymap::normalize_prefix(&opts.etcd_prefix).into_bytes();
    let end = keymap::prefix_end(&prefix);
    let mut scanner = Scanner::new(conn.clone(), vec![(prefix, end)], PAGE_SIZE);
    if progress.wants_total() {
        progress.set_total(scanner.count_remaining().await?);
    }
    let mut revision = scanner.revision();
    let mut builder = StatusReportBuilder::new(transformers, opts);
    let mut pages = prefetch(scanner);
    while let Some(page) = pages.recv().await {
        let (page_revision, kvs) = page?;
        revision = page_revision;
        for kv in &kvs {
            builder.add(kv.key(), kv.value());
        }
        progress.advance(kvs.len() as u64);
    }
    Ok((builder.finish(), revision))
}
