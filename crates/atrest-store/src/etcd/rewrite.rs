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
use std::sync::Arc;
use std::time::{Duration, Instant};

use atrest_core::{GroupResource, ResourceTransformer, Transformers};
use etcd_client::{Compare, CompareOp, PutOptions, Txn, TxnOp};
use serde::Serialize;
use tokio::task::JoinSet;

use super::checkpoint::{Checkpoint, Watermark};
use super::scan::{with_retry, Scanner, PAGE_SIZE};
use super::space::{self, SpaceStatus};
use super::status::ScanProgress;
use super::write_check::WriteCheck;
use super::{describe, get_one, EtcdConnection, EtcdError};
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
    /// etcd's `--max-request-bytes`: objects whose write would be larger are skipped and listed.
    pub max_request_bytes: usize,
    /// The backend quota assumed when etcd does not report its own (`--quota-backend-bytes`).
    pub quota_bytes: u64,
}

/// etcd's default `--max-request-bytes` (1.5 MiB).
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 1536 * 1024;

/// Bytes one guarded put adds to a transaction beyond its value: the key twice (compare and put)
/// plus field framing, lease and revision.
fn request_cost(key_len: usize, value_len: usize) -> usize {
    2 * key_len + value_len + 64
}

/// Per-request errors that concern one object only (too large, invalid key): the object is skipped
/// and listed, the run goes on.
fn is_per_object(e: &etcd_client::Error) -> bool {
    matches!(e, etcd_client::Error::GRpcStatus(s) if s.code() == tonic::Code::InvalidArgument)
}

/// etcd's answer once its NOSPACE alarm is raised.
fn is_no_space(e: &etcd_client::Error) -> bool {
    matches!(e, etcd_client::Error::GRpcStatus(s) if s.message().contains("database space exceeded"))
}

fn no_space_error() -> EtcdError {
    EtcdError::Space(
        "etcd refused a write: database space exceeded (its NOSPACE alarm is raised); \
         compact, defragment (`etcdctl defrag`) and disarm it (`etcdctl alarm disarm`)"
            .into(),
    )
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
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            quota_bytes: space::DEFAULT_QUOTA_BYTES,
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
    /// Why `--resume` started from the beginning (a completed checkpoint).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resume_note: Option<String>,
    pub plan: Vec<PlanRow>,
    /// The first 1000 unreadable objects and why.
    pub unreadable_objects: Vec<Unreadable>,
    /// Keys matched only by a wildcard entry that are not objects of that resource (aggregated
    /// apiservers' layout, another apiVersion): never touched.
    pub skipped: u64,
    /// The first 1000 of them and why.
    pub skipped_objects: Vec<Unreadable>,
    /// Objects etcd refused (or would refuse: too large after re-encryption): left as they are.
    pub not_written: u64,
    /// The first 1000 of them and why.
    pub not_written_objects: Vec<Unreadable>,
    /// New values read back through the write provider without caches (KMS: the plugin's Decrypt).
    pub write_checks: u64,
    /// Compactions made between chunks so that etcd's backend quota is never reached.
    pub compactions: u64,
    /// etcd's space before the first write.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub space: Option<SpaceStatus>,
    /// Estimated backend bytes the rewritten objects add until compaction.
    pub write_bytes: u64,
}

/// Nominal etcd write throughput used for dry-run estimates without `--rate` (objects/s, measured by
/// `scripts/bench-etcd` on 2 cores; real clusters with network round trips are slower).
pub const NOMINAL_RATE: f64 = 5000.0;

enum Decision {
    Current,
    Rewrite(Vec<u8>),
    Unreadable(String),
    /// Re-encrypted, but the write would exceed etcd's request limit (bytes).
    TooLarge(usize),
    /// Matched only by a wildcard entry, but not an object of that resource: left alone.
    Foreign(String),
}

/// Why a key matched only by a wildcard entry is not the resource it seems to be, judged by its
/// layout alone: aggregated apiservers store `<prefix>/<group>/<group>/<resource>/…` under the
/// same etcd prefix, which reads as resource `<group>` of group `<group>` (a resource name never
/// contains a dot).
fn foreign_layout(gr: &GroupResource) -> Option<String> {
    gr.resource.contains('.').then(|| {
        format!(
            "key layout of an aggregated apiserver (resource name {:?} is an API group), matched only by a wildcard entry; left unchanged",
            gr.resource
        )
    })
}

/// Why the stored object is not of the group its key says (`None`: it is).
fn foreign_object(group: &str, plaintext: &[u8]) -> Option<String> {
    match crate::decode::type_of(plaintext) {
        Ok((api_version, kind)) => {
            let stored_group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
            (stored_group != group).then(|| {
                format!(
                    "stored object is {kind} of apiVersion {api_version:?}, not of API group {group:?} that the key's layout names; matched only by a wildcard entry, left unchanged"
                )
            })
        }
        Err(e) => Some(format!(
            "matched only by a wildcard entry and its apiVersion cannot be read ({e}); left unchanged"
        )),
    }
}

/// Decrypt; if stale, re-encrypt and verify the new value decrypts to the same plaintext, unstale
/// (and, for a new write state or a sample, without caches: see [`WriteCheck`]).
fn decide(
    rt: &ResourceTransformer,
    check: &WriteCheck,
    resource: &str,
    wildcard_group: Option<&str>,
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
    if let Some(why) = wildcard_group.and_then(|g| foreign_object(g, &outcome.plaintext)) {
        return Ok((Decision::Foreign(why), Some(outcome.provider)));
    }
    let key_str = || String::from_utf8_lossy(key).into_owned();
    let new = rt
        .write(&outcome.plaintext, key)
        .map_err(|e| match e.outage() {
            Some(outage) => EtcdError::Kms(outage.clone()),
            None => EtcdError::WriteCheck {
                key: key_str(),
                message: format!(
                    "re-encrypting with {} failed: {e}",
                    rt.describe_write_provider()
                ),
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
    check.check(rt, resource, key, &outcome.plaintext, &new)?;
    Ok((Decision::Rewrite(new), Some(outcome.provider)))
}

struct Item {
    key: Vec<u8>,
    new_value: Vec<u8>,
    mod_revision: i64,
    lease: i64,
    rt: ResourceTransformer,
    resource: Arc<str>,
}

/// What a commit needs besides the items.
#[derive(Clone)]
struct CommitCtx {
    conn: EtcdConnection,
    check: Arc<WriteCheck>,
    max_attempts: u32,
    max_request_bytes: usize,
}

#[derive(Default)]
struct BatchResult {
    rewritten: u64,
    current: u64,
    deleted: u64,
    conflicts: u64,
    unreadable: Vec<Unreadable>,
    not_written: Vec<Unreadable>,
}

fn put_op(key: &[u8], value: &[u8], lease: i64) -> TxnOp {
    let opts = (lease != 0).then(|| PutOptions::new().with_lease(lease));
    TxnOp::put(key, value, opts)
}

/// How etcd answered one transaction.
enum TxnOutcome {
    Done(bool),
    /// Refused for the request itself (too large, invalid): per object.
    Refused(String),
    NoSpace,
}

async fn commit_batch(ctx: CommitCtx, items: Vec<Item>) -> Result<BatchResult, EtcdError> {
    let conn = &ctx.conn;
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
        let outcome = with_retry(conn, "txn", || {
            let mut kv = conn.kv();
            let txn = txn.clone();
            async move {
                match kv.txn(txn).await {
                    // A refused transaction (an expired lease, one object too large) falls back
                    // to one per object, which names the object.
                    Err(etcd_client::Error::GRpcStatus(s)) if s.code() == tonic::Code::NotFound => {
                        Ok(None)
                    }
                    Err(e) if is_per_object(&e) => Ok(None),
                    Err(e) if is_no_space(&e) => Ok(Some(None)),
                    other => other.map(|r| Some(Some(r))),
                }
            }
        })
        .await?;
        match outcome {
            Some(None) => return Err(no_space_error()),
            Some(Some(resp)) if resp.succeeded() => {
                result.rewritten = items.len() as u64;
                return Ok(result);
            }
            _ => {}
        }
    }
    for item in items {
        commit_one(&ctx, item, &mut result).await?;
    }
    Ok(result)
}

/// One object: guarded put; on conflict re-read, re-decide and try again.
async fn commit_one(
    ctx: &CommitCtx,
    item: Item,
    result: &mut BatchResult,
) -> Result<(), EtcdError> {
    let (conn, max_attempts) = (&ctx.conn, ctx.max_attempts);
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
                Some((value, rev, lease)) => {
                    match decide(&item.rt, &ctx.check, &item.resource, None, &key, &value)?.0 {
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
                        Decision::TooLarge(size) => {
                            result
                                .not_written
                                .push(too_large(&key, size, ctx.max_request_bytes));
                            return Ok(());
                        }
                        // Not produced without a wildcard group; never written either way.
                        Decision::Foreign(_) => return Ok(()),
                    }
                }
            },
        };
        let size = request_cost(key.len(), new_value.len());
        if size > ctx.max_request_bytes {
            result
                .not_written
                .push(too_large(&key, size, ctx.max_request_bytes));
            return Ok(());
        }
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
                        Ok(TxnOutcome::Done(false))
                    }
                    Err(e) if is_per_object(&e) => Ok(TxnOutcome::Refused(describe(&e))),
                    Err(e) if is_no_space(&e) => Ok(TxnOutcome::NoSpace),
                    other => other.map(|r| TxnOutcome::Done(r.succeeded())),
                }
            }
        })
        .await?;
        match committed {
            TxnOutcome::Done(true) => {
                result.rewritten += 1;
                return Ok(());
            }
            TxnOutcome::Done(false) => {}
            TxnOutcome::Refused(why) => {
                result.not_written.push(Unreadable {
                    key: String::from_utf8_lossy(&key).into_owned(),
                    error: format!("etcd refused the write: {why}"),
                });
                return Ok(());
            }
            TxnOutcome::NoSpace => return Err(no_space_error()),
        }
        result.conflicts += 1;
    }
    Err(EtcdError::Value {
        key: String::from_utf8_lossy(&key).into_owned(),
        message: format!("still changing after {max_attempts} attempts; run rewrite again"),
    })
}

fn too_large(key: &[u8], size: usize, limit: usize) -> Unreadable {
    Unreadable {
        key: String::from_utf8_lossy(key).into_owned(),
        error: format!(
            "the re-encrypted write would be {size} bytes, over etcd's request limit of {limit} bytes (--max-request-bytes); left unchanged"
        ),
    }
}

/// The write key as recorded in checkpoints: provider, key name and (KMS v2) key ID.
fn write_key_text(rt: &ResourceTransformer) -> String {
    let mut text = rt.describe_write_provider();
    if let Some(id) = rt.write_provider().key_id {
        text.push_str(&format!(" key_id {id}"));
    }
    text
}

/// A resumed run must write with the keys the checkpoint's finished part was written with.
fn check_write_keys(
    path: &std::path::Path,
    saved: &Checkpoint,
    transformers: &Transformers,
) -> Result<(), EtcdError> {
    for (resource, recorded) in &saved.write_keys {
        let rt = transformers.for_resource(&GroupResource::parse(resource));
        // Establishes a KMS v2 write state (one Encrypt), so the key ID is the plugin's current one.
        rt.write(b"", b"/atrest/write-key-check")
            .map_err(|e| EtcdError::WriteCheck {
                key: resource.clone(),
                message: format!("{}: {e}", rt.describe_write_provider()),
            })?;
        let now = write_key_text(&rt);
        if &now != recorded {
            return Err(EtcdError::Checkpoint {
                path: path.display().to_string(),
                message: format!(
                    "{resource} was being rewritten with {recorded}, the write key is now {now} (rotated since?): \
                     the finished part would be stale; run rewrite without --resume to start over"
                ),
            });
        }
    }
    Ok(())
}

/// (resource, provider, key name, key id, action)
type PlanKey = (String, String, Option<String>, Option<String>, &'static str);

/// Space accounting between compactions (not in dry runs).
struct SpaceBudget {
    /// Bytes that may still be written before the next compaction.
    budget: u64,
    /// Estimated bytes dispatched since the last compaction.
    spent: u64,
}

struct Run<'a> {
    conn: EtcdConnection,
    ctx: CommitCtx,
    space: Option<SpaceBudget>,
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
    /// Resource → write key, for the checkpoint.
    write_keys: BTreeMap<String, String>,
}

impl Run<'_> {
    fn record_unreadable(&mut self, u: Unreadable) {
        self.summary.unreadable += 1;
        if self.summary.unreadable_objects.len() < crate::report::MAX_UNREADABLE_LISTED {
            self.summary.unreadable_objects.push(u);
        }
    }

    fn record_not_written(&mut self, u: Unreadable) {
        tracing::warn!(key = %u.key, error = %u.error, "object not rewritten");
        self.summary.not_written += 1;
        if self.summary.not_written_objects.len() < crate::report::MAX_UNREADABLE_LISTED {
            self.summary.not_written_objects.push(u);
        }
    }

    /// Bytes that may still be written before the next compaction (`None`: no limit, dry run).
    fn space_left(&self) -> Option<u64> {
        self.space
            .as_ref()
            .map(|s| s.budget.saturating_sub(s.spent))
    }

    /// Makes room for `cost` more bytes: within the budget, or after draining in-flight writes
    /// and compacting to the revision they finished; refuses when even that is not enough.
    async fn reserve_space(&mut self, cost: u64) -> Result<(), EtcdError> {
        let Some(space) = &mut self.space else {
            return Ok(());
        };
        if space.spent + cost <= space.budget {
            space.spent += cost;
            return Ok(());
        }
        let first_chunk = space.spent == 0 && self.dispatched == 0;
        if first_chunk {
            let status = self.summary.space.clone();
            return Err(EtcdError::Space(format!(
                    "{}: one batch of this rewrite needs about {cost} bytes, more than the {} bytes that stay free below the quota; \
                     compact and defragment etcd (`etcdctl compact`, `etcdctl defrag`), raise its --quota-backend-bytes, or use a smaller --batch",
                    status.map(|s| s.describe()).unwrap_or_default(),
                    self.space.as_ref().map_or(0, |s| s.budget)
                ))
            );
        }
        self.drain().await?;
        let revision = with_retry(&self.conn, "get", || {
            let mut kv = self.conn.kv();
            async move { kv.get("/atrest-connectivity-probe", None).await }
        })
        .await?
        .header()
        .map(|h| h.revision())
        .unwrap_or(0);
        tracing::info!(
            revision,
            "compacting etcd between rewrite chunks to stay below its backend quota"
        );
        space::compact(&self.conn, revision).await?;
        self.summary.compactions += 1;
        // The chunk's old revisions are free pages now, reused by the next chunk. etcd's in-use
        // figure only shows that after its next backend commit, so the budget stays the one
        // measured at the start; the file itself must not have reached the reserve (other
        // writers, fragmentation), else stop here, before etcd's alarm.
        let status = space::status(&self.conn, self.opts.quota_bytes).await?;
        tracing::debug!(
            revision,
            db_size = status.db_size,
            in_use = status.db_size_in_use,
            "compacted"
        );
        let budget = self.space.as_ref().map_or(0, |s| s.budget);
        if status.db_size + cost > status.usable() || cost > budget {
            return Err(EtcdError::Space(format!(
                    "{} after compacting to revision {revision}, too close to the quota for the next batch of about {cost} bytes. \
                     Defragment etcd (`etcdctl defrag`) or raise its --quota-backend-bytes, then run rewrite again with --resume",
                    status.describe()
                ))
            );
        }
        self.space = Some(SpaceBudget {
            budget,
            spent: cost,
        });
        Ok(())
    }

    fn absorb(&mut self, seq: u64, r: BatchResult) {
        for u in r.not_written {
            self.record_not_written(u);
        }
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
        let cost = items
            .iter()
            .map(|i| space::object_cost(i.key.len(), i.new_value.len()))
            .sum();
        self.reserve_space(cost).await?;
        while self.tasks.len() >= self.opts.in_flight.max(1) {
            self.join_one().await?;
        }
        self.dispatched += items.len() as u64;
        let seq = self.watermark.open(last);
        let ctx = self.ctx.clone();
        self.tasks
            .spawn(async move { (seq, commit_batch(ctx, items).await) });
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
            write_keys: self.write_keys.clone(),
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
    let mut resume_note = None;
    let mut write_keys = BTreeMap::new();
    if let Some(cp) = opts.checkpoint.as_ref().filter(|c| c.resume) {
        let saved = Checkpoint::load(&cp.path)?;
        saved.check_matches(
            &cp.path,
            &opts.etcd_prefix,
            &cp.config_hash,
            &opts.selection.names(),
        )?;
        if saved.complete {
            // A finished run resumed would do nothing, even when a KEK rotation made everything
            // stale since: start over instead.
            let note = format!(
                "checkpoint {} records a completed run; starting a fresh run from the beginning",
                cp.path.display()
            );
            tracing::warn!("{note}");
            resume_note = Some(note);
        } else {
            check_write_keys(&cp.path, &saved, &transformers)?;
            write_keys = saved.write_keys.clone();
            rewritten_before = saved.rewritten;
            if let Some(last) = &saved.last_key {
                scanner = scanner.start_after(last.as_bytes());
                resumed_after = Some(last.clone());
            }
        }
    }
    // etcd's space: an alarm already raised stops here; the budget bounds writes between
    // compactions (see `space`).
    space::check_alarms(conn)
        .await
        .map_err(EtcdError::before_any_write)?;
    let space_status = space::status(conn, opts.quota_bytes).await?;
    if progress.wants_total() {
        progress.set_total(scanner.count_remaining().await?);
    }

    let mut run = Run {
        conn: conn.clone(),
        ctx: CommitCtx {
            conn: conn.clone(),
            check: Arc::new(WriteCheck::default()),
            max_attempts: opts.max_attempts,
            max_request_bytes: opts.max_request_bytes,
        },
        space: (!opts.dry_run).then(|| SpaceBudget {
            budget: space_status.budget(),
            spent: 0,
        }),
        opts,
        progress,
        summary: RewriteSummary {
            dry_run: opts.dry_run,
            resumed_after,
            resume_note,
            space: Some(space_status),
            ..Default::default()
        },
        write_keys,
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
    // The checkpoint is written before the first object: an unwritable one stops the run here.
    run.save_checkpoint(0, false, true)
        .map_err(EtcdError::before_any_write)?;
    let result = scan_and_commit(&mut run, &mut scanner, &transformers).await;
    let drained = run.drain().await;
    let revision = scanner.revision();
    run.summary.revision = revision;
    let untouched = run.summary.rewritten == 0 && run.dispatched == 0;
    let outcome = result.and(drained).map_err(|e| match untouched {
        true => e.before_any_write(),
        false => e,
    });
    run.summary.write_checks = run
        .ctx
        .check
        .checked
        .load(std::sync::atomic::Ordering::Relaxed);
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
    // Per resource: its transformer, name, and (covered only by a wildcard) its API group.
    type Selected = (ResourceTransformer, Arc<str>, Option<String>);
    let mut cache: HashMap<GroupResource, Option<Selected>> = HashMap::new();
    let mut batch: Vec<Item> = Vec::new();
    let mut batch_bytes = 0usize;
    let mut batch_cost = 0u64;
    // One transaction stays below etcd's request limit (and 1 MiB, for latency).
    let batch_limit = opts.max_request_bytes.clamp(1, 1 << 20);
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
                        (selected && transformers.covers(&info.resource)).then(|| {
                            (
                                transformers.for_resource(&info.resource),
                                Arc::from(info.resource.to_string()),
                                transformers
                                    .covered_by_wildcard_only(&info.resource)
                                    .then(|| info.resource.group.clone()),
                            )
                        })
                    })
                    .clone()
            });
            let (Some(info), Some((rt, resource, wildcard_group))) = (info, rt) else {
                run.summary.not_selected += 1;
                continue;
            };
            let (mut decision, provider) = match wildcard_group
                .as_ref()
                .and_then(|_| foreign_layout(&info.resource))
            {
                Some(why) => (
                    Decision::Foreign(why),
                    rt.identify(kv.value()).ok().flatten().map(|i| i.provider),
                ),
                None => decide(
                    &rt,
                    &run.ctx.check,
                    &resource,
                    wildcard_group.as_deref(),
                    kv.key(),
                    kv.value(),
                )?,
            };
            if let Decision::Rewrite(new_value) = &decision {
                let size = request_cost(kv.key().len(), new_value.len());
                if size > opts.max_request_bytes {
                    decision = Decision::TooLarge(size);
                }
            }
            let action = match &decision {
                Decision::Current => "current",
                Decision::Rewrite(_) => "rewrite",
                Decision::Unreadable(_) => "unreadable",
                Decision::TooLarge(_) => "too large",
                Decision::Foreign(_) => "skipped",
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
                Decision::Foreign(why) => {
                    run.summary.skipped += 1;
                    if run.summary.skipped_objects.len() < crate::report::MAX_UNREADABLE_LISTED {
                        run.summary.skipped_objects.push(Unreadable {
                            key: String::from_utf8_lossy(kv.key()).into_owned(),
                            error: why,
                        });
                    }
                }
                Decision::TooLarge(size) => {
                    run.record_not_written(too_large(kv.key(), size, opts.max_request_bytes))
                }
                Decision::Rewrite(new_value) if opts.dry_run => {
                    run.summary.rewritten += 1;
                    run.summary.write_bytes += space::object_cost(kv.key().len(), new_value.len());
                }
                Decision::Rewrite(new_value) => {
                    if !run.write_keys.contains_key(resource.as_ref()) {
                        run.write_keys
                            .insert(resource.to_string(), write_key_text(&rt));
                    }
                    let size = request_cost(kv.key().len(), new_value.len());
                    let cost = space::object_cost(kv.key().len(), new_value.len());
                    run.summary.write_bytes += cost;
                    // A batch ends at etcd's request limit, and where etcd's space budget ends
                    // (the next one then starts after a compaction).
                    let over_budget = run
                        .space_left()
                        .is_some_and(|left| batch_cost + cost > left);
                    if !batch.is_empty() && (batch_bytes + size > batch_limit || over_budget) {
                        run.dispatch(std::mem::take(&mut batch)).await?;
                        batch_bytes = 0;
                        batch_cost = 0;
                    }
                    batch_bytes += size;
                    batch_cost += cost;
                    batch.push(Item {
                        key: kv.key().to_vec(),
                        new_value,
                        mod_revision: kv.mod_revision(),
                        lease: kv.lease(),
                        rt,
                        resource,
                    });
                    if batch.len() >= batch_size {
                        run.dispatch(std::mem::take(&mut batch)).await?;
                        batch_bytes = 0;
                        batch_cost = 0;
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
