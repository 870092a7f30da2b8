//! `status` on a live etcd: every key under the prefix, read in pages at one revision, into a
//! [`StatusReport`](crate::report::StatusReport).

use atrest_core::Transformers;

use super::scan::{current_revision, prefetch, split_range, Scanner, PAGE_SIZE};
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

/// Ranges read in parallel (etcd serves concurrent reads on several cores).
pub const PARALLEL_SCANS: usize = 4;

/// Scans everything under `opts.etcd_prefix` and builds the report. Returns it with the revision read.
/// The key space is split into up to [`PARALLEL_SCANS`] ranges, each paged, all at one revision.
pub async fn status(
    conn: &EtcdConnection,
    transformers: Transformers,
    opts: ReportOptions,
    progress: &dyn ScanProgress,
) -> Result<(StatusReport, i64), EtcdError> {
    let prefix = keymap::normalize_prefix(&opts.etcd_prefix).into_bytes();
    let end = keymap::prefix_end(&prefix);
    // No verdict without every KMS provider's current key ID: ask before reading anything.
    transformers.check_kms()?;
    let revision = current_revision(conn).await?;
    if progress.wants_total() {
        let mut counter =
            Scanner::new(conn.clone(), vec![(prefix.clone(), end.clone())], PAGE_SIZE)
                .at_revision(revision);
        progress.set_total(counter.count_remaining().await?);
    }
    let ranges = split_range(conn, &prefix, &end, PARALLEL_SCANS, revision).await?;
    let scanners = ranges
        .into_iter()
        .map(|range| Scanner::new(conn.clone(), vec![range], PAGE_SIZE).at_revision(revision))
        .collect();
    let mut builder = StatusReportBuilder::new(transformers, opts);
    let mut pages = prefetch(scanners);
    while let Some(page) = pages.recv().await {
        let (_, kvs) = page?;
        for kv in &kvs {
            builder.add(kv.key(), kv.value())?;
        }
        progress.advance(kvs.len() as u64);
    }
    Ok((builder.finish(), revision))
}
