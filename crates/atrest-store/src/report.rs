//! The status report shared by `status` (live etcd) and `snapshot status`: every value is mapped to
//! its resource and classified by the provider and key that wrote it, whether that is the current
//! write key, and (with `verify`) whether it actually decrypts.
//!
//! Classification of one value:
//! * resource not covered by the config → provider as seen by the stand-alone identity transformer,
//!   `stale: null` (values there are never rewritten by kube-apiserver);
//! * covered → the first provider/key whose prefix matches (no decryption; KMS v2: plugin name and the
//!   `keyID` stored in the EncryptedObject) and kube-apiserver's stale flag, or with `verify` the
//!   provider that actually decrypted it;
//! * no prefix matches, or (with `verify`) decryption fails → `unreadable`, `stale: null`.
//!
//! A KMS outage (plugin not answering, unhealthy, backend failing: [`KmsOutage`]) is never counted:
//! [`StatusReportBuilder::add`] returns it and the caller stops, since no verdict can be given.

use std::collections::{BTreeMap, HashMap};

use atrest_core::{GroupResource, KmsOutage, ProviderInfo, ResourceTransformer, Transformers};
use serde::Serialize;

use crate::keymap;

/// What the builder does besides counting.
#[derive(Debug, Clone)]
pub struct ReportOptions {
    /// kube-apiserver's `--etcd-prefix` (default `/registry`).
    pub etcd_prefix: String,
    /// Decrypt every value (slower; KMS values call the plugin) instead of classifying by prefix.
    pub verify: bool,
    /// Record the etcd key of every object in its row.
    pub list: bool,
}

impl Default for ReportOptions {
    fn default() -> Self {
        Self {
            etcd_prefix: "/registry".into(),
            verify: false,
            list: false,
        }
    }
}

/// One (resource, provider, key, stale, unreadable) bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Row {
    /// `secrets`, `deployments.apps`, `widgets.example.com`; `-` for keys that map to no resource
    /// (counted as not covered).
    pub resource: String,
    pub covered: bool,
    /// `identity`, `aescbc`, `aesgcm`, `secretbox`, `kms v1`, `kms v2`, or `unknown`.
    pub provider: String,
    /// Key name (local providers), KMS provider name; `null` for identity.
    pub key_name: Option<String>,
    /// The same as `key_name`, under the short name the JSON contract uses.
    pub key: Option<String>,
    /// KMS v2: the key ID stored in the value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// kube-apiserver's stale flag; `null` for uncovered resources and unreadable values.
    pub stale: Option<bool>,
    pub unreadable: bool,
    pub count: u64,
    /// With `list`: the etcd keys of the objects in this row, in key order.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub objects: Option<Vec<String>>,
}

/// What one object counts as in [`Totals`] — and in `atrest monitor`'s `state` label, so the
/// monitor's gauges add up to `status`'s totals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ObjectState {
    /// Covered, readable and written by the current write provider/key.
    Current,
    /// Covered, encrypted, but not by the current write provider/key.
    Stale,
    /// Covered by an encrypting provider but stored in plaintext.
    Unencrypted,
    /// The resource is not covered by the config (or the key maps to no resource).
    NotCovered,
    /// Matches no configured prefix (or, with `verify`, does not decrypt).
    Unreadable,
}

impl ObjectState {
    /// The one mapping from a classified value to its state (`plaintext`: read by identity).
    pub fn of(covered: bool, unreadable: bool, stale: Option<bool>, plaintext: bool) -> Self {
        if unreadable {
            ObjectState::Unreadable
        } else if !covered {
            ObjectState::NotCovered
        } else if stale == Some(true) {
            if plaintext {
                ObjectState::Unencrypted
            } else {
                ObjectState::Stale
            }
        } else {
            ObjectState::Current
        }
    }

    /// `current`, `stale`, `unencrypted`, `not_covered`, `unreadable`.
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectState::Current => "current",
            ObjectState::Stale => "stale",
            ObjectState::Unencrypted => "unencrypted",
            ObjectState::NotCovered => "not_covered",
            ObjectState::Unreadable => "unreadable",
        }
    }
}

impl Row {
    /// What the objects of this row count as.
    pub fn state(&self) -> ObjectState {
        let plaintext = self.provider == atrest_core::ProviderKind::Identity.to_string();
        ObjectState::of(self.covered, self.unreadable, self.stale, plaintext)
    }
}

/// Counts over all rows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    pub objects: u64,
    pub covered: u64,
    pub uncovered: u64,
    /// Covered, readable and written by the current write provider/key.
    pub current: u64,
    /// Covered and readable but not written by the current write provider/key.
    pub stale: u64,
    /// Stale values that are encrypted (by an older provider or key).
    pub stale_encrypted: u64,
    /// Stale values stored in plaintext although the resource is covered by an encrypting provider.
    pub unencrypted_covered: u64,
    pub unreadable: u64,
}

/// An unreadable value and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unreadable {
    pub key: String,
    pub error: String,
}

/// What a report means for the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ExitClass {
    /// Every covered object uses its resource's current write provider/key.
    AllCurrent,
    /// Stale or plaintext objects in covered resources, nothing unreadable.
    NotCurrent,
    /// Some values cannot be decrypted (or match no configured prefix).
    Unreadable,
}

/// The finished report: `{"rows": [...], "totals": {...}, "unreadable": [...]}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StatusReport {
    pub rows: Vec<Row>,
    pub totals: Totals,
    /// The first [`MAX_UNREADABLE_LISTED`] unreadable values with their errors.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unreadable: Vec<Unreadable>,
    /// Hints that the scan itself looks wrong (e.g. most keys do not fit `--etcd-prefix`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// How many unreadable values are listed with their error (all are counted).
pub const MAX_UNREADABLE_LISTED: usize = 1000;

impl StatusReport {
    pub fn exit_class(&self) -> ExitClass {
        if self.totals.unreadable > 0 {
            ExitClass::Unreadable
        } else if self.totals.stale > 0 {
            ExitClass::NotCurrent
        } else {
            ExitClass::AllCurrent
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct RowKey {
    resource: String,
    provider: String,
    key_name: Option<String>,
    key_id: Option<String>,
    stale: Option<bool>,
    unreadable: bool,
}

struct Bucket {
    covered: bool,
    count: u64,
    objects: Vec<String>,
}

/// Accumulates values into a [`StatusReport`]. Memory is bounded by the number of distinct rows
/// (plus the object keys with `list`).
pub struct StatusReportBuilder {
    transformers: Transformers,
    opts: ReportOptions,
    resources: HashMap<GroupResource, (ResourceTransformer, bool, String)>,
    rows: BTreeMap<RowKey, Bucket>,
    totals: Totals,
    unreadable: Vec<Unreadable>,
    layout: layout::LayoutCheck,
}

/// How one value classifies (also used by `rewrite --dry-run` and `get`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classification {
    pub resource: Option<GroupResource>,
    pub covered: bool,
    /// `None`: no provider prefix matches.
    pub provider: Option<ProviderInfo>,
    pub stale: Option<bool>,
    /// Set when the value is unreadable.
    pub error: Option<String>,
}

impl StatusReportBuilder {
    pub fn new(transformers: Transformers, opts: ReportOptions) -> Self {
        Self {
            transformers,
            opts,
            resources: HashMap::new(),
            rows: BTreeMap::new(),
            totals: Totals::default(),
            unreadable: Vec::new(),
            layout: layout::LayoutCheck::default(),
        }
    }

    /// Classifies one value without counting it; a KMS outage is returned, never classified.
    pub fn classify(&mut self, key: &[u8], value: &[u8]) -> Result<Classification, KmsOutage> {
        let Some(info) = keymap::parse_key(&self.opts.etcd_prefix, key) else {
            // Not an object key (kube-apiserver never reads it): counted as not covered.
            let provider = (!value.starts_with(b"k8s:enc:")).then_some(ProviderInfo {
                kind: atrest_core::ProviderKind::Identity,
                provider_index: 0,
                key_name: None,
                key_index: None,
                key_id: None,
            });
            return Ok(Classification {
                resource: None,
                covered: false,
                provider,
                stale: None,
                error: None,
            });
        };
        let transformers = &self.transformers;
        let (rt, covered, _) = self
            .resources
            .entry(info.resource.clone())
            .or_insert_with(|| {
                let name = info.resource.to_string();
                (
                    transformers.for_resource(&info.resource),
                    transformers.covers(&info.resource),
                    name,
                )
            });
        let covered = *covered;
        let mut c = Classification {
            resource: Some(info.resource),
            covered,
            provider: None,
            stale: None,
            error: None,
        };
        if self.opts.verify {
            match rt.read(value, key) {
                Ok(outcome) => {
                    c.provider = Some(outcome.provider);
                    c.stale = covered.then_some(outcome.stale);
                }
                Err(e) => {
                    if let Some(outage) = e.outage() {
                        return Err(outage.clone());
                    }
                    c.provider = rt.identify(value).ok().flatten().map(|i| i.provider);
                    c.error = Some(e.to_string());
                }
            }
        } else {
            match rt.identify(value) {
                Ok(Some(id)) => {
                    c.provider = Some(id.provider);
                    c.stale = covered.then_some(id.stale);
                }
                Ok(None) => c.error = Some("no matching prefix found".into()),
                Err(e) => return Err(outage_of(e)),
            }
        }
        Ok(c)
    }

    /// Counts one etcd key/value. A KMS outage counts nothing and is returned: stop the scan.
    pub fn add(&mut self, key: &[u8], value: &[u8]) -> Result<(), KmsOutage> {
        let c = self.classify(key, value)?;
        self.layout.add(&self.opts.etcd_prefix, key);
        let resource = match &c.resource {
            Some(gr) => self
                .resources
                .get(gr)
                .map(|r| r.2.clone())
                .unwrap_or_else(|| gr.to_string()),
            None => "-".to_string(),
        };
        let unreadable = c.error.is_some();
        let plaintext =
            matches!(&c.provider, Some(p) if p.kind == atrest_core::ProviderKind::Identity);
        let row_key = RowKey {
            resource,
            provider: c
                .provider
                .as_ref()
                .map_or_else(|| "unknown".to_string(), |p| p.kind.to_string()),
            key_name: c.provider.as_ref().and_then(|p| p.key_name.clone()),
            key_id: c.provider.as_ref().and_then(|p| p.key_id.clone()),
            stale: if unreadable { None } else { c.stale },
            unreadable,
        };
        let t = &mut self.totals;
        t.objects += 1;
        if c.covered {
            t.covered += 1;
        } else {
            t.uncovered += 1;
        }
        match ObjectState::of(c.covered, unreadable, c.stale, plaintext) {
            ObjectState::Unreadable => {
                t.unreadable += 1;
                if self.unreadable.len() < MAX_UNREADABLE_LISTED {
                    let error = c
                        .error
                        .unwrap_or_else(|| "key does not map to a resource".into());
                    self.unreadable.push(Unreadable {
                        key: String::from_utf8_lossy(key).into_owned(),
                        error,
                    });
                }
            }
            ObjectState::NotCovered => {}
            ObjectState::Unencrypted => {
                t.stale += 1;
                t.unencrypted_covered += 1;
            }
            ObjectState::Stale => {
                t.stale += 1;
                t.stale_encrypted += 1;
            }
            ObjectState::Current => t.current += 1,
        }
        let bucket = self.rows.entry(row_key).or_insert(Bucket {
            covered: c.covered,
            count: 0,
            objects: Vec::new(),
        });
        bucket.count += 1;
        if self.opts.list {
            bucket
                .objects
                .push(String::from_utf8_lossy(key).into_owned());
        }
        Ok(())
    }

    /// The report; object lists and unreadable values sorted by key (pages may arrive out of order).
    pub fn finish(mut self) -> StatusReport {
        let list = self.opts.list;
        self.unreadable.sort_by(|a, b| a.key.cmp(&b.key));
        for bucket in self.rows.values_mut() {
            bucket.objects.sort_unstable();
        }
        let rows = self
            .rows
            .into_iter()
            .map(|(k, b)| Row {
                resource: k.resource,
                covered: b.covered,
                provider: k.provider,
                key: k.key_name.clone(),
                key_name: k.key_name,
                key_id: k.key_id,
                stale: k.stale,
                unreadable: k.unreadable,
                count: b.count,
                objects: list.then_some(b.objects),
            })
            .collect();
        StatusReport {
            rows,
            totals: self.totals,
            unreadable: self.unreadable,
            warnings: self
                .layout
                .warning(&self.opts.etcd_prefix)
                .into_iter()
                .collect(),
        }
    }
}

/// `identify` only fails for an outage; anything else would be a core bug, reported as one.
fn outage_of(e: atrest_core::TransformError) -> KmsOutage {
    match e.outage() {
        Some(o) => o.clone(),
        None => KmsOutage {
            provider: "-".into(),
            endpoint: "-".into(),
            message: format!("internal error: {e}"),
        },
    }
}

mod layout;
#[cfg(test)]
mod tests;
