//! The gauges' numbers: objects per (resource, state, provider, key, key_id) bucket.
//!
//! Every value is classified by `atrest-store`'s status report — the scan *is* `status`'s scan,
//! and a watched value goes through a one-value [`StatusReportBuilder`] — so a bucket is exactly a
//! `status` row and the gauges add up to `status`'s totals. Memory is one entry per distinct
//! bucket, independent of the number of objects: a watch event carries the previous value
//! (`prev_kv`), so it is classified again instead of remembered.

use std::collections::{BTreeMap, HashMap};

use atrest_core::{GroupResource, ProviderKind, Transformers};
use atrest_store::report::{ObjectState, ReportOptions, Row, StatusReportBuilder};

use crate::kms::KmsStates;

/// One bucket of objects.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Bucket {
    pub resource: String,
    pub state: ObjectState,
    /// As in `status`: `identity`, `aesgcm`, `kms v2`, … (`unknown`: no prefix matched).
    pub provider: String,
    /// Key name, KMS provider name; empty for identity.
    pub key: String,
    /// KMS v2: the key_id stored in the values; else empty.
    pub key_id: String,
    /// Set when the bucket's state depends on what this KMS v2 provider says its current key_id
    /// is (values written by the resource's KMS v2 write provider): reported `unknown` while the
    /// plugin cannot say.
    pub depends_on_kms: Option<String>,
}

/// The label value of `state`.
pub fn state_label(bucket: &Bucket, kms: &KmsStates) -> &'static str {
    match &bucket.depends_on_kms {
        Some(provider) if !kms.is_known(provider) => "unknown",
        _ => bucket.state.as_str(),
    }
}

/// Turns `status` rows into buckets for one loaded config.
pub struct Classifier {
    transformers: Transformers,
    opts: ReportOptions,
    /// resource → the name of its KMS v2 write provider, if it has one.
    write_kms: HashMap<String, Option<String>>,
}

impl Classifier {
    pub fn new(transformers: Transformers, etcd_prefix: &str) -> Self {
        Self {
            transformers,
            opts: ReportOptions {
                etcd_prefix: etcd_prefix.to_string(),
                verify: false,
                list: false,
            },
            write_kms: HashMap::new(),
        }
    }

    pub fn transformers(&self) -> Transformers {
        self.transformers.clone()
    }

    pub fn report_options(&self) -> ReportOptions {
        self.opts.clone()
    }

    /// The bucket of a `status` row.
    pub fn bucket(&mut self, row: &Row) -> Bucket {
        let state = row.state();
        let key = row.key_name.clone().unwrap_or_default();
        let depends_on_kms = (row.provider == ProviderKind::KmsV2.to_string()
            && matches!(state, ObjectState::Current | ObjectState::Stale)
            && self.write_kms(&row.resource).as_deref() == Some(key.as_str()))
        .then(|| key.clone());
        Bucket {
            resource: row.resource.clone(),
            state,
            provider: row.provider.clone(),
            key,
            key_id: row.key_id.clone().unwrap_or_default(),
            depends_on_kms,
        }
    }

    /// The bucket of one etcd key/value (a watch event's value or previous value).
    pub fn classify(&mut self, key: &[u8], value: &[u8]) -> Option<Bucket> {
        let mut builder = StatusReportBuilder::new(self.transformers.clone(), self.opts.clone());
        if let Err(outage) = builder.add(key, value) {
            // The value's staleness needs a KMS plugin that does not answer: its bucket depends
            // on that provider, so it is exported as `unknown` until the plugin answers again
            // (which triggers a rescan that files it correctly).
            let resource = atrest_store::keymap::parse_key(&self.opts.etcd_prefix, key)
                .map_or_else(|| "-".to_string(), |info| info.resource.to_string());
            return Some(Bucket {
                resource,
                state: ObjectState::Stale,
                provider: ProviderKind::KmsV2.to_string(),
                key: outage.provider.clone(),
                key_id: String::new(),
                depends_on_kms: Some(outage.provider),
            });
        }
        let report = builder.finish();
        report.rows.first().map(|row| self.bucket(row))
    }

    fn write_kms(&mut self, resource: &str) -> Option<String> {
        if let Some(hit) = self.write_kms.get(resource) {
            return hit.clone();
        }
        let found = (resource != "-")
            .then(|| {
                let gr = GroupResource::parse(resource);
                let write = self.transformers.for_resource(&gr).write_provider();
                (write.kind == ProviderKind::KmsV2)
                    .then_some(write.key_name)
                    .flatten()
            })
            .flatten();
        self.write_kms.insert(resource.to_string(), found.clone());
        found
    }
}

/// Objects per bucket. Zero buckets are dropped (a series disappears with its last object).
#[derive(Debug, Default, Clone)]
pub struct Counts {
    buckets: HashMap<Bucket, u64>,
}

/// A decrement found no object to take away: the counts no longer match etcd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Drift;

impl Counts {
    /// The counts of a finished scan.
    pub fn from_rows(rows: &[Row], classifier: &mut Classifier) -> Counts {
        let mut counts = Counts::default();
        for row in rows {
            *counts.buckets.entry(classifier.bucket(row)).or_insert(0) += row.count;
        }
        counts
    }

    pub fn add(&mut self, bucket: Bucket) {
        *self.buckets.entry(bucket).or_insert(0) += 1;
    }

    pub fn remove(&mut self, bucket: &Bucket) -> Result<(), Drift> {
        let Some(n) = self.buckets.get_mut(bucket) else {
            return Err(Drift);
        };
        *n -= 1;
        if *n == 0 {
            self.buckets.remove(bucket);
        }
        Ok(())
    }

    /// The gauge series: label values (resource, state, provider, key, key_id) → objects. Buckets
    /// that differ only in whether they depend on a KMS plugin can meet under one label set.
    pub fn series(&self, kms: &KmsStates) -> BTreeMap<[String; 5], u64> {
        let mut out = BTreeMap::new();
        for (b, n) in &self.buckets {
            let labels = [
                b.resource.clone(),
                state_label(b, kms).to_string(),
                b.provider.clone(),
                b.key.clone(),
                b.key_id.clone(),
            ];
            *out.entry(labels).or_insert(0) += n;
        }
        out
    }

    /// Objects per state label (for logs and tests).
    pub fn by_state(&self, kms: &KmsStates) -> BTreeMap<&'static str, u64> {
        let mut out = BTreeMap::new();
        for (b, n) in &self.buckets {
            *out.entry(state_label(b, kms)).or_insert(0) += n;
        }
        out
    }

    pub fn total(&self) -> u64 {
        self.buckets.values().sum()
    }

    /// Distinct buckets (what memory grows with).
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket(state: ObjectState, key_id: &str, kms: Option<&str>) -> Bucket {
        Bucket {
            resource: "secrets".into(),
            state,
            provider: "kms v2".into(),
            key: "p".into(),
            key_id: key_id.into(),
            depends_on_kms: kms.map(str::to_string),
        }
    }

    #[test]
    fn moves_objects_and_reports_drift_instead_of_going_negative() {
        let mut c = Counts::default();
        let a = bucket(ObjectState::Current, "k1", None);
        c.add(a.clone());
        c.add(a.clone());
        assert_eq!(c.total(), 2);
        c.remove(&a).unwrap();
        c.remove(&a).unwrap();
        assert!(c.is_empty(), "a bucket goes away with its last object");
        assert_eq!(c.remove(&a), Err(Drift));
    }

    #[test]
    fn objects_of_a_kms_provider_without_a_known_key_id_are_unknown_never_current() {
        let kms = KmsStates::default(); // no Status answered yet
        let mut c = Counts::default();
        c.add(bucket(ObjectState::Current, "k1", Some("p")));
        c.add(bucket(ObjectState::Stale, "k0", Some("p")));
        c.add(bucket(ObjectState::Stale, "k0", None));
        let by_state = c.by_state(&kms);
        assert_eq!(by_state.get("unknown"), Some(&2));
        assert_eq!(by_state.get("stale"), Some(&1));
        assert_eq!(by_state.get("current"), None);
        let series = c.series(&kms);
        assert_eq!(series.values().sum::<u64>(), 3);
        assert!(series.keys().all(|l| l[0] == "secrets" && l[2] == "kms v2"));
    }
}
