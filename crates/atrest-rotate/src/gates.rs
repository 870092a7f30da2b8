//! The etcd side of the gates: one scan at one revision counting every object of the covered
//! resources by the entry that serves it, the provider/key that wrote it, and whether the config
//! reads it. An unreadable value is named by the provider/key in its stored prefix ([`stored`]),
//! so a report says "212 secrets under aescbc key1: not in this config", not one line per object.
//!
//! [`stored`]: crate::stored

use std::collections::BTreeMap;

use atrest_core::config::EncryptionConfiguration;
use atrest_core::Transformers;
use atrest_store::etcd::scan::{current_revision, Scanner, PAGE_SIZE};
use atrest_store::etcd::{EtcdConnection, EtcdError};
use atrest_store::keymap;
use atrest_store::report::{ReportOptions, StatusReportBuilder};
use serde::Serialize;

use crate::model::KeyLabel;
use crate::plan::EntryPlan;

/// Objects of one resource written by one provider/key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Count {
    /// The config entry serving the resource (`None`: not covered).
    pub entry: Option<usize>,
    pub resource: String,
    #[serde(flatten)]
    pub label: KeyLabel,
    /// Whether the config reads these values.
    pub readable: bool,
    pub count: u64,
    /// The first few etcd keys (unreadable values only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub examples: Vec<String>,
}

/// A scan's result.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ObjectScan {
    pub revision: i64,
    pub counts: Vec<Count>,
}

const EXAMPLES: usize = 5;

/// Scans every key under the prefix at one revision. `verify`: decrypt every value (KMS values call
/// the plugin) instead of trusting prefixes.
pub async fn scan_objects(
    conn: &EtcdConnection,
    config: &EncryptionConfiguration,
    transformers: Transformers,
    etcd_prefix: &str,
    verify: bool,
) -> Result<ObjectScan, EtcdError> {
    let prefix = keymap::normalize_prefix(etcd_prefix).into_bytes();
    let end = keymap::prefix_end(&prefix);
    let revision = current_revision(conn).await?;
    let mut scanner =
        Scanner::new(conn.clone(), vec![(prefix, end)], PAGE_SIZE).at_revision(revision);
    let mut builder = StatusReportBuilder::new(
        transformers,
        ReportOptions {
            etcd_prefix: etcd_prefix.to_string(),
            verify,
            list: false,
        },
    );
    type Bucket = (u64, Vec<String>);
    let mut counts: BTreeMap<(Option<usize>, String, KeyLabel, bool), Bucket> = BTreeMap::new();
    while let Some(page) = scanner.next_page().await? {
        for kv in &page {
            let c = builder.classify(kv.key(), kv.value())?;
            let Some(gr) = c.resource else { continue };
            if !c.covered {
                continue;
            }
            let entry = config.entries_for(&gr).first().copied();
            let readable = c.error.is_none();
            let label = match (&c.provider, readable) {
                (Some(p), true) => KeyLabel::new(&p.kind.to_string(), p.key_name.as_deref()),
                _ => crate::stored::label_of(kv.value()),
            };
            let bucket = counts
                .entry((entry, gr.to_string(), label, readable))
                .or_default();
            bucket.0 += 1;
            if !readable && bucket.1.len() < EXAMPLES {
                bucket
                    .1
                    .push(String::from_utf8_lossy(kv.key()).into_owned());
            }
        }
    }
    Ok(ObjectScan {
        revision,
        counts: counts
            .into_iter()
            .map(
                |((entry, resource, label, readable), (count, examples))| Count {
                    entry,
                    resource,
                    label,
                    readable,
                    count,
                    examples,
                },
            )
            .collect(),
    })
}

/// Why retire may not happen yet, one line per (resource, key).
pub fn retire_blockers(scan: &ObjectScan, entries: &[EntryPlan]) -> Vec<String> {
    let mut out = Vec::new();
    for c in &scan.counts {
        let Some(plan) = entries.iter().find(|e| Some(e.index) == c.entry) else {
            continue;
        };
        if !c.readable {
            out.push(format!(
                "{} {} under {}: unreadable with the promote config (e.g. {})",
                c.count,
                c.resource,
                c.label,
                c.examples.join(", ")
            ));
        } else if plan.retired.contains(&c.label) {
            out.push(format!(
                "{} {} still under {}, which retire removes",
                c.count, c.resource, c.label
            ));
        }
    }
    out
}

/// Values a config cannot read, grouped by the provider/key of their stored prefix:
/// `212 secrets under aescbc key1: not in this config`.
pub fn unreadable_summary(scan: &ObjectScan) -> Vec<String> {
    scan.counts
        .iter()
        .filter(|c| !c.readable)
        .map(|c| {
            format!(
                "{} {} under {}: not in this config",
                c.count, c.resource, c.label
            )
        })
        .collect()
}

/// Objects of the rotated entries per written key: (resource, key, count).
pub fn entry_counts(scan: &ObjectScan, entry: usize) -> Vec<&Count> {
    scan.counts
        .iter()
        .filter(|c| c.entry == Some(entry))
        .collect()
}
