//! Re-encryption on a live etcd, safe against concurrent writers.
//!
//! For every selected object whose stored value is stale (kube-apiserver's flag: not written by the
//! resource's current write provider/key), the value is decrypted, re-encrypted with the write
//! transformer, decrypted again and compared with the original plaintext, and only then written with
//! a transaction guarded by `mod_revision(key) == <revision read>`. Several objects go into one
//! transaction (each with its own guard; all-or-nothing); a failed guard falls back to one
//! transaction per object, which re-reads the current value and starts over (bounded retries).
//! Values that cannot be decrypted are never written. Leases (Events' TTL) are kept.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use atrest_core::{GroupResource, ResourceTransformer, Transformers};
use etcd_client::{Compare, CompareOp, PutOptions, Txn, TxnOp};
use serde::Serialize;
use tokio::task::JoinSet;

use super::checkpoint::{Checkpoint, Watermark};
use super::scan::{with_retry, Scanner, PAGE_SIZE};
use super::status::ScanProgress;
use super::{get_one, EtcdConnection, EtcdError};
use crate::keymap;
use crate::report::Unreadable;

/// Which resources a run touches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// Every resource the config covers (exact or wildcard entries).
    AllCovered,
    /// Only these (each must be covered; uncovered ones are skipped).
    Only(Vec<GroupResource>),
}

impl Selection {
    /// The names recorded in checkpoints.
    pub fn names(&self) -> Vec<String> {
        match self {
            Selection::AllCovered => vec!["*covered*".into()],
            Selection::Only(list) => {
                let mut names: Vec<String> = list.iter().map(|g| g.to_string()).collect();
                names.sort();
                names.dedup();
                names
            }
        }
    }
}

/// Where and whether to keep a checkpoint.
#[derive(Debug, Clone)]
pub struct CheckpointOptions {
    pub path: PathBuf,
    /// Continue after the checkpoint's last key.
    pub resume: bool,
    /// The config's `content_hash` (a checkpoint only resumes a run with the same config).
    pub config_hash: String,
}

#[derive(Debug, Clone)]
pub struct RewriteOptions {
    pub etcd_prefix: String,
    pub selection: Selection,
    /// Classify and re-encrypt in memory (verifying), write nothing.
    pub dry_run: bool,
    /// Objects per second at most.
    pub rate: Option<f64>,
    /// Objects per transaction (≤ 128, etcd's default `--max-txn-ops`).
    pub batch_size: usize,
    /// Transactions in flight.
    pub in_flight: usize,
    pub page_size: i64,
    pub checkpoint: Option<CheckpointOptions>,
    /// Attempts per object when concurrent writers keep changing it.
    pub max_attempts: u32,
}

impl Default for RewriteOptions {
    fn default() -> Self {
        Self {
            etcd_prefix: "/registry".into(),
            selection: Selection::AllCovered,
            dry_run: false,
            rate: None,
            batch_size: 64,
            in_flight: 16,
            page_size: PAGE_SIZE,
            checkpoint: None,
            max_attempts: 20,
        }
    }
}

/// One line of the plan: objects of a resource written by one provider/key, and what happens to them.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct PlanRow {
    pub resource: String,
    pub provider: String,
    pub key_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// `rewrite`, `current` or `unreadable`.
    pub action: &'static str,
    pub count: u64,
}

/// What a run did (or, with `dry_run`, would do).
#[derive(Debug, Clone, Default, Serialize)]
pub struct RewriteSummary {
    pub dry_run: bool,
    /// The revision the scan read at (the last one, if a compaction forced a re-pin).
    pub revision: i64,
    /// Keys read under the prefix / selected ranges.
    pub scanned: u64,
    /// Keys of resources not selected or not covered (never touched).
    pub not_selected: u64,
    /// Already written by the current write key.
    pub already_current: u64,
    /// Re-encrypted and written (dry run: would be).
    pub rewritten: u64,
    /// Not decryptable with the config: left as they are.
    pub unreadable: u64,
    /// Deleted by someone else before they could be rewritten.
    pub deleted: u64,
    /// Guarded writes that failed because the object changed, then retried.
    pub conflicts: u64,
    pub elapsed_seconds: f64,
    /// `rewritten / elapsed` (dry run: re-encryptions verified per second).
    pub objects_per_second: f64,
    /// Dry run: expected duration of the real run (see `estimate_basis`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub estimate_seconds: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub estimate_basis: Option<String>,
    /// Resumed after this key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resumed_after: Option<String>,
    pub plan: Vec<PlanRow>,
    /// The first 1000 unreadable objects and why.
    pub unreadable_objects: Vec<Unreadable>,
}

/// Nominal etcd write throughput used for dry-run estimates without `--rate` (objects/s, measured by
/// `scripts/bench-etcd` on 2 cores; real clusters with network round trips are slower).
pub const NOMINAL_RATE: f64 = 5000.0;

enum Decision {
    Current,
    Rewrite(Vec<u8>),
    Unreadable(String),
}

/// Decrypt; if stale, re-encrypt and verify the new value decrypts to the same plaintext, unstale.
fn decide(
    rt: &ResourceTransformer,
    key: &[u8],
    value: &[u8],
) -> Result<(Decision, Option<atrest_core::ProviderInfo>), EtcdError> {
    let outcome = match rt.read(value, key) {
        Ok(o) => o,
        // A KMS outage stops the run: the value may be fine once the plugin answers again.
        Err(e) => match e.outage() {
            Some(outage) => return Err(EtcdError::Kms(outage.clone())),
            None => {
                return Ok((
                    Decision::Unreadable(e.to_string()),
                    rt.identify(value).ok().flatten().map(|i| i.provider),
                ))
            }
        },
    };
    if !outcome.stale {
        return Ok((Decision::Current, Some(outcome.provider)));
    }
    let key_str = || String::from_utf8_lossy(key).into_owned();
    let new = rt
        .write(&outcome.plaintext, key)
        .map_err(|e| match e.outage() {
            Some(outage) => EtcdError::Kms(outage.clone()),
            None => EtcdError::Value {
                key: key_str(),
                message: format!("re-encrypting failed: {e}"),
            },
        })?;
    match rt.read(&new, key) {
        Ok(check) if check.plaintext == outcome.plaintext && !check.stale => {}
        Ok(_) => {
            return Err(EtcdError::Value {
                key: key_str(),
                message: "verification failed: the new ciphertext does not decrypt to the same plaintext with the write key"
                    .into(),
            })
        }
        Err(e) => {
            if let Some(outage) = e.outage() {
                return Err(EtcdError::Kms(outage.clone()));
            }
            return Err(EtcdError::Value { key: key_str(), message: format!("verification failed: new ciphertext does not decrypt: {e}") })
        }
    }
    Ok((Decision::Rewrite(new), Some(outcome.provider)))
}

struct Item {
    key: Vec<u8>,
    new_value: Vec<u8>,
    mod_revision: i64,
    lease: i64,
    rt: ResourceTransformer,
}

#[derive(Default)]
struct BatchResult {
    rewritten: u64,
    current: u64,
    deleted: u64,
    conflicts: u64,
    unreadable: Vec<Unreadable>,
}

fn put_op(key: &[u8], value: &[u8], lease: i64) -> TxnOp {
    let opts = (lease != 0).then(|| PutOptions::new().with_lease(lease));
    TxnOp::put(key, value, opts)
}

async fn commit_batch(
    conn: EtcdConnection,
    items: Vec<Item>,
    max_attempts: u32,
) -> Result<BatchResult, EtcdError> {
    let mut result = BatchResult::default();
    if items.len() > 1 {
        let txn = Txn::new()
            .when(
                items
                    .iter()
                    .map(|i| Compare::mod_revision(i.key.clone(), CompareOp::Equal, i.mod_revision))
                    .collect::<Vec<_>>(),
            )
            .and_then(
                items
                    .iter()
                    .map(|i| put_op(&i.key, &i.new_value, i.lease))
                    .collect::<Vec<_>>(),
            );
        let outcome = with_retry(&conn, "txn", || {
            let mut kv = conn.kv();
            let txn = txn.clone();
            async move {
                match kv.txn(txn).await {
                    // A refused transaction (e.g. an expired lease) falls back to one per object.
                    Err(etcd_client::Error::GRpcStatus(s)) if s.code() == tonic::Code::NotFound => {
                        Ok(None)
                    }
                    other => other.map(Some),
                }
            }
        })
        .await?;
        if let Some(resp) = outcome {
            if resp.succeeded() {
                result.rewritten = items.len() as u64;
                return Ok(result);
            }
        }
    }
    for item in items {
        commit_one(&conn, item, max_attempts, &mut result).await?;
    }
    Ok(result)
}

/// One object: guarded put; on conflict re-read, re-decide and try again.
async fn commit_one(
    conn: &EtcdConnection,
    item: Item,
    max_attempts: u32,
    result: &mut BatchResult,
) -> Result<(), EtcdError> {
    let key = item.key;
    let mut state = Some((item.new_value, item.mod_revision, item.lease));
    for _ in 0..max_attempts.max(1) {
        let (new_value, mod_revision, lease) = match state.take() {
            Some(s) => s,
            None => match get_one(conn, &key).await? {
                None => {
                    result.deleted += 1;
                    return Ok(());
                }
                Some((value, rev, lease)) => match decide(&item.rt, &key, &value)?.0 {
                    Decision::Current => {
                        result.current += 1;
                        return Ok(());
                    }
                    Decision::Unreadable(error) => {
                        result.unreadable.push(Unreadable {
                            key: String::from_utf8_lossy(&key).into_owned(),
                            error,
                        });
                        return Ok(());
                    }
                    Decision::Rewrite(new) => (new, rev, lease),
                },
            },
        };
        let txn = Txn::new()
            .when([Compare::mod_revision(
                key.clone(),
                CompareOp::Equal,
                mod_revision,
            )])
            .and_then([put_op(&key, &new_value, lease)]);
        let committed = with_retry(conn, "txn", || {
            let mut kv = conn.kv();
            let txn = txn.clone();
            async move {
                match kv.txn(txn).await {
                    Err(etcd_client::Error::GRpcStatus(s)) if s.code() == tonic::Code::NotFound => {
                        Ok(false)
                    }
                    other => other.map(|r| r.succeeded()),
                }
            }
        })
        .await?;
        if committed {
            result.rewritten += 1;
            return Ok(());
        }
        result.conflicts += 1;
    }
    Err(EtcdError::Value {
        key: String::from_utf8_lossy(&key).into_owned(),
        message: format!("still changing after {max_attempts} attempts; run rewrite again"),
    })
}

/// (resource, provider, key name, key id, action)
type PlanKey = (String, String, Option<String>, Option<String>, &'static str);

struct Run<'a> {
    conn: EtcdConnection,
    opts: &'a RewriteOptions,
    progress: &'a dyn ScanProgress,
    summary: RewriteSummary,
    plan: BTreeMap<PlanKey, u64>,
    watermark: Watermark,
    tasks: JoinSet<(u64, Result<BatchResult, EtcdError>)>,
    dispatched: u64,
    started: Instant,
    checkpoint_saved: Instant,
    rewritten_before: u64,
}

impl Run<'_> {
    fn record_unreadable(&mut self, u: Unreadable) {
        self.summary.unreadable += 1;
        if self.summary.unreadable_objects.len() < crate::report::MAX_UNREADABLE_LISTED {
            self.summary.unreadable_objects.push(u);
        }
    }

    fn absorb(&mut self, seq: u64, r: BatchResult) {
        self.summary.rewritten += r.rewritten;
        self.summary.already_current += r.current;
        self.summary.deleted += r.deleted;
        self.summary.conflicts += r.conflicts;
        for u in r.unreadable {
            self.record_unreadable(u);
        }
        self.watermark.finish(seq);
    }

    async fn join_one(&mut self) -> Result<(), EtcdError> {
        if let Some(joined) = self.tasks.join_next().await {
            let (seq, result) = joined.map_err(|e| EtcdError::Request {
                op: "txn".into(),
                detail: e.to_string(),
            })?;
            self.absorb(seq, result?);
        }
        Ok(())
    }

    async fn dispatch(&mut self, items: Vec<Item>) -> Result<(), EtcdError> {
        let Some(last) = items.last().map(|i| i.key.clone()) else {
            return Ok(());
        };
        if let Some(rate) = self.opts.rate.filter(|r| *r > 0.0) {
            let wait =
                Duration::try_from_secs_f64(self.dispatched as f64 / rate).unwrap_or(Duration::MAX);
            if let Some(due) = self.started.checked_add(wait) {
                tokio::time::sleep_until(due.into()).await;
            }
        }
        while self.tasks.len() >= self.opts.in_flight.max(1) {
            self.join_one().await?;
        }
        self.dispatched += items.len() as u64;
        let seq = self.watermark.open(last);
        let (conn, attempts) = (self.conn.clone(), self.opts.max_attempts);
        self.tasks
            .spawn(async move { (seq, commit_batch(conn, items, attempts).await) });
        Ok(())
    }

    fn save_checkpoint(
        &mut self,
        revision: i64,
        complete: bool,
        force: bool,
    ) -> Result<(), EtcdError> {
        let Some(cp) = &self.opts.checkpoint else {
            return Ok(());
        };
        if self.opts.dry_run
            || (!force && self.checkpoint_saved.elapsed() < Duration::from_millis(500))
        {
            return Ok(());
        }
        self.checkpoint_saved = Instant::now();
        Checkpoint {
            version: Checkpoint::VERSION,
            etcd_prefix: self.opts.etcd_prefix.clone(),
            config_hash: cp.config_hash.clone(),
            resources: self.opts.selection.names(),
            revision,
            last_key: self
                .watermark
                .last_done()
                .map(|k| String::from_utf8_lossy(k).into_owned()),
            complete,
            rewritten: self.rewritten_before + self.summary.rewritten,
        }
        .save(&cp.path)
    }

    async fn drain(&mut self) -> Result<(), EtcdError> {
        let mut first_error = None;
        while !self.tasks.is_empty() {
            if let Err(e) = self.join_one().await {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// Runs a rewrite (or a dry run). Errors leave the checkpoint at the last fully finished key.
pub async fn rewrite(
    conn: &EtcdConnection,
    transformers: Transformers,
    opts: &RewriteOptions,
    progress: &dyn ScanProgress,
) -> Result<RewriteSummary, EtcdError> {
    // Nothing is read or written unless every KMS provider can say its current key ID.
    transformers.check_kms()?;
    let prefix = keymap::normalize_prefix(&opts.etcd_prefix);
    let ranges = match &opts.selection {
        Selection::AllCovered => vec![(
            prefix.clone().into_bytes(),
            keymap::prefix_end(prefix.as_bytes()),
        )],
        Selection::Only(list) => list
            .iter()
            .map(|gr| keymap::resource_range(&opts.etcd_prefix, gr))
            .collect(),
    };
    let mut scanner = Scanner::new(conn.clone(), ranges, opts.page_size);
    let mut resumed_after = None;
    let mut rewritten_before = 0;
    if let Some(cp) = opts.checkpoint.as_ref().filter(|c| c.resume) {
        let saved = Checkpoint::load(&cp.path)?;
        saved.check_matches(
            &cp.path,
            &opts.etcd_prefix,
            &cp.config_hash,
            &opts.selection.names(),
        )?;
        rewritten_before = saved.rewritten;
        if let Some(last) = &saved.last_key {
            scanner = scanner.start_after(last.as_bytes());
            resumed_after = Some(last.clone());
        }
    }
    if progress.wants_total() {
        progress.set_total(scanner.count_remaining().await?);
    }

    let mut run = Run {
        conn: conn.clone(),
        opts,
        progress,
        summary: RewriteSummary {
            dry_run: opts.dry_run,
            resumed_after,
            ..Default::default()
        },
        plan: BTreeMap::new(),
        watermark: Watermark::default(),
        tasks: JoinSet::new(),
        dispatched: 0,
        started: Instant::now(),
        checkpoint_saved: Instant::now(),
        rewritten_before,
    };
    if let Some(resumed) = &run.summary.resumed_after {
        let seq = run.watermark.open(resumed.clone().into_bytes());
        run.watermark.finish(seq);
    }
    let result = scan_and_commit(&mut run, &mut scanner, &transformers).await;
    let drained = run.drain().await;
    let revision = scanner.revision();
    run.summary.revision = revision;
    let outcome = result.and(drained);
    run.save_checkpoint(revision, outcome.is_ok(), true)?;
    outcome?;

    let elapsed = run.started.elapsed().as_secs_f64();
    let s = &mut run.summary;
    s.elapsed_seconds = elapsed;
    s.objects_per_second = if elapsed > 0.0 {
        s.rewritten as f64 / elapsed
    } else {
        0.0
    };
    if opts.dry_run {
        let rate = opts.rate.filter(|r| *r > 0.0);
        let basis_rate = rate
            .unwrap_or(NOMINAL_RATE)
            .min(s.objects_per_second.max(1.0));
        s.estimate_seconds = Some(s.rewritten as f64 / basis_rate);
        s.estimate_basis = Some(match rate {
            Some(r) => format!("--rate {r} objects/s (re-encryption measured at {:.0} objects/s)", s.objects_per_second),
            None => format!(
                "nominal {NOMINAL_RATE} objects/s etcd write throughput (re-encryption measured at {:.0} objects/s)",
                s.objects_per_second
            ),
        });
    }
    s.plan = run
        .plan
        .iter()
        .map(
            |((resource, provider, key_name, key_id, action), count)| PlanRow {
                resource: resource.clone(),
                provider: provider.clone(),
                key_name: key_name.clone(),
                key_id: key_id.clone(),
                action,
                count: *count,
            },
        )
        .collect();
    Ok(run.summary)
}

async fn scan_and_commit(
    run: &mut Run<'_>,
    scanner: &mut Scanner,
    transformers: &Transformers,
) -> Result<(), EtcdError> {
    let opts = run.opts;
    let batch_size = match opts.rate {
        // Small batches keep a low rate smooth.
        Some(rate) if rate > 0.0 => opts.batch_size.min((rate / 10.0).ceil().max(1.0) as usize),
        _ => opts.batch_size,
    }
    .clamp(1, 128);
    let mut cache: HashMap<GroupResource, Option<ResourceTransformer>> = HashMap::new();
    let mut batch: Vec<Item> = Vec::new();
    let mut batch_bytes = 0usize;
    loop {
        let page = match scanner.next_page().await {
            Ok(Some(page)) => page,
            Ok(None) => break,
            Err(EtcdError::Compacted { revision }) => {
                tracing::warn!(
                    revision,
                    "scan revision compacted; continuing at the newest revision"
                );
                scanner.unpin();
                continue;
            }
            Err(e) => return Err(e),
        };
        let page_last = page.last().map(|kv| kv.key().to_vec());
        for kv in &page {
            run.summary.scanned += 1;
            let info = keymap::parse_key(&opts.etcd_prefix, kv.key());
            let rt = info.as_ref().and_then(|info| {
                cache
                    .entry(info.resource.clone())
                    .or_insert_with(|| {
                        let selected = match &opts.selection {
                            Selection::AllCovered => true,
                            Selection::Only(list) => list.contains(&info.resource),
                        };
                        (selected && transformers.covers(&info.resource))
                            .then(|| transformers.for_resource(&info.resource))
                    })
                    .clone()
            });
            let (Some(info), Some(rt)) = (info, rt) else {
                run.summary.not_selected += 1;
                continue;
            };
            let (decision, provider) = decide(&rt, kv.key(), kv.value())?;
            let action = match &decision {
                Decision::Current => "current",
                Decision::Rewrite(_) => "rewrite",
                Decision::Unreadable(_) => "unreadable",
            };
            let plan_key = (
                info.resource.to_string(),
                provider
                    .as_ref()
                    .map_or_else(|| "unknown".to_string(), |p| p.kind.to_string()),
                provider.as_ref().and_then(|p| p.key_name.clone()),
                provider.as_ref().and_then(|p| p.key_id.clone()),
                action,
            );
            *run.plan.entry(plan_key).or_default() += 1;
            match decision {
                Decision::Current => run.summary.already_current += 1,
                Decision::Unreadable(error) => run.record_unreadable(Unreadable {
                    key: String::from_utf8_lossy(kv.key()).into_owned(),
                    error,
                }),
                Decision::Rewrite(_) if opts.dry_run => run.summary.rewritten += 1,
                Decision::Rewrite(new_value) => {
                    let size = kv.key().len() + new_value.len();
                    if !batch.is_empty() && batch_bytes + size > 1 << 20 {
                        run.dispatch(std::mem::take(&mut batch)).await?;
                        batch_bytes = 0;
                    }
                    batch_bytes += size;
                    batch.push(Item {
                        key: kv.key().to_vec(),
                        new_value,
                        mod_revision: kv.mod_revision(),
                        lease: kv.lease(),
                        rt,
                    });
                    if batch.len() >= batch_size {
                        run.dispatch(std::mem::take(&mut batch)).await?;
                        batch_bytes = 0;
                    }
                }
            }
        }
        run.progress.advance(page.len() as u64);
        if batch.is_empty() {
            if let Some(last) = page_last {
                let seq = run.watermark.open(last);
                run.watermark.finish(seq);
            }
        }
        // Collect finished transactions without waiting, then maybe save the checkpoint.
        while let Some(joined) = run.tasks.try_join_next() {
            let (seq, result) = joined.map_err(|e| EtcdError::Request {
                op: "txn".into(),
                detail: e.to_string(),
            })?;
            run.absorb(seq, result?);
        }
        run.save_checkpoint(scanner.revision(), false, false)?;
    }
    if !batch.is_empty() {
        run.dispatch(batch).await?;
    }
    Ok(())
}
