//! The monitor loop: connect, scan, watch; rescan when the gauges could be wrong.
//!
//! 1. One paged scan at one revision — `atrest-store`'s `status` scan itself — gives the counts.
//! 2. A watch from the next revision with previous values (`prev_kv`): a put takes its previous
//!    value's bucket down by one and its new value's up by one; a delete takes its previous value's
//!    down. Nothing per key is kept.
//! 3. Rescan when: the watch was compacted past (`compacted`), the connection broke
//!    (`disconnect`), the config file changed (`config`), a KMS plugin's known key_id changed or it
//!    started/stopped answering (`kms`), a decrement found nothing to take (`drift`), and every
//!    `--resync` (`periodic`).
//!
//! The engine runs on its own runtime thread (see [`crate::Monitor`]), so neither a scan nor a
//! blocking KMS call can delay `/metrics`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use atrest_store::etcd::status::{status, NoProgress};
use atrest_store::etcd::{connect, describe, EtcdConnection, EtcdError};
use atrest_store::keymap::{normalize_prefix, prefix_end};
use etcd_client::{EventType, WatchOptions};
use tokio::sync::watch;
use tokio::time::{interval_at, sleep, sleep_until, timeout, Interval};

use crate::config::{ConfigSource, Loaded};
use crate::counts::{Classifier, Counts};
use crate::metrics::{now_seconds, MonitorMetrics, Published};
use crate::MonitorOptions;

/// How often the watch is asked for progress (advances `atrest_watch_revision` on a quiet cluster).
const PROGRESS_INTERVAL: Duration = Duration::from_secs(5);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// What the HTTP side reads.
#[derive(Default)]
pub struct Readiness {
    pub ready: AtomicBool,
    /// Why the monitor is not current, for `/readyz` and logs.
    pub last_error: Mutex<Option<String>>,
}

impl Readiness {
    fn set_error(&self, e: Option<String>) {
        if let Ok(mut g) = self.last_error.lock() {
            *g = e;
        }
    }
}

/// Why a watch ended.
enum Next {
    Rescan(&'static str),
    Reconnect,
}

pub(crate) struct Engine {
    pub opts: MonitorOptions,
    pub source: ConfigSource,
    pub loaded: Loaded,
    pub classifier: Classifier,
    pub published: Arc<Mutex<Published>>,
    pub metrics: Arc<MonitorMetrics>,
    pub readiness: Arc<Readiness>,
    /// The KMS generation the published counts were classified under.
    pub generation: u64,
    /// The file hash that last failed to load (not retried until the file changes again).
    pub failed_hash: Option<String>,
}

fn interval(period: Duration) -> Interval {
    let mut i = interval_at(tokio::time::Instant::now() + period, period);
    i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    i
}

impl Engine {
    /// Runs until `stop` changes. `conn`: a connection made at start, if etcd answered then.
    pub async fn run(mut self, mut conn: Option<EtcdConnection>, mut stop: watch::Receiver<bool>) {
        let mut reason = "start";
        let mut backoff = Duration::from_millis(200);
        loop {
            let c = match conn.take() {
                Some(c) => c,
                None => {
                    let attempt = tokio::select! {
                        r = connect(&self.opts.etcd) => r,
                        _ = stop.changed() => return,
                    };
                    match attempt {
                        Ok(c) => c,
                        Err(e) => {
                            self.etcd_down(&e.to_string());
                            tokio::select! {
                                _ = sleep(backoff) => {}
                                _ = stop.changed() => return,
                            }
                            backoff = (backoff * 2).min(MAX_BACKOFF);
                            continue;
                        }
                    }
                }
            };
            backoff = Duration::from_millis(200);
            self.metrics.etcd_up.set(1);
            loop {
                let next = tokio::select! {
                    n = self.cycle(&c, reason) => n,
                    _ = stop.changed() => return,
                };
                match next {
                    Next::Rescan(r) => reason = r,
                    Next::Reconnect => {
                        reason = "disconnect";
                        break;
                    }
                }
            }
            // Give a restarting etcd a moment before dialing again.
            tokio::select! {
                _ = sleep(Duration::from_millis(200)) => {}
                _ = stop.changed() => return,
            }
        }
    }

    fn etcd_down(&self, error: &str) {
        if self.metrics.etcd_up.get() != 0 || !self.readiness.ready.load(Ordering::SeqCst) {
            tracing::warn!(%error, "etcd is not answering; retrying");
        }
        self.metrics.etcd_up.set(0);
        self.readiness.set_error(Some(format!("etcd: {error}")));
    }

    /// One scan and the watch after it.
    async fn cycle(&mut self, conn: &EtcdConnection, reason: &'static str) -> Next {
        self.metrics.resync(reason);
        if !self.reload_if_changed() {
            // Fresh KMS v2 trackers: the scan must use the key_ids the plugins say now.
            match self.source.build(self.loaded.config.clone()) {
                Ok(fresh) => self.use_config(fresh),
                Err(e) => tracing::error!(error = %e, "rebuilding the transformers failed"),
            }
        }
        self.probe_kms().await;
        let generation = self.loaded.kms.generation();
        let started = Instant::now();
        let scan = status(
            conn,
            self.classifier.transformers(),
            self.classifier.report_options(),
            &NoProgress,
        )
        .await;
        let (report, revision) = match scan {
            Ok(r) => r,
            Err(EtcdError::Compacted { .. }) => return Next::Rescan("compacted"),
            Err(e) => {
                self.etcd_down(&e.to_string());
                return Next::Reconnect;
            }
        };
        if self.loaded.kms.generation() != generation {
            // A plugin changed its mind while we scanned: the classification may be mixed.
            return Next::Rescan("kms");
        }
        let counts = Counts::from_rows(&report.rows, &mut self.classifier);
        let elapsed = started.elapsed();
        tracing::info!(
            reason,
            revision,
            objects = counts.total(),
            buckets = counts.len(),
            seconds = elapsed.as_secs_f64(),
            "scan finished"
        );
        if let Ok(mut p) = self.published.lock() {
            p.counts = counts;
            p.kms = Arc::clone(&self.loaded.kms);
        }
        self.generation = generation;
        self.metrics.etcd_up.set(1);
        self.metrics.watch_revision.set(revision);
        self.metrics.last_resync.set(now_seconds());
        self.metrics.last_resync_duration.set(elapsed.as_secs_f64());
        self.readiness.set_error(None);
        self.readiness.ready.store(true, Ordering::SeqCst);
        self.watch(conn, revision).await
    }

    async fn watch(&mut self, conn: &EtcdConnection, revision: i64) -> Next {
        let prefix = normalize_prefix(&self.opts.etcd_prefix).into_bytes();
        let end = prefix_end(&prefix);
        let mut client = conn
            .client
            .watch_client()
            .max_decoding_message_size(atrest_store::etcd::MAX_RESPONSE_BYTES);
        let options = WatchOptions::new()
            .with_range(end)
            .with_start_revision(revision + 1)
            .with_prev_key()
            .with_progress_notify()
            .with_fragment();
        let mut stream = match timeout(
            self.opts.etcd.command_timeout,
            client.watch(prefix, Some(options)),
        )
        .await
        {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                self.etcd_down(&describe(&e));
                return Next::Reconnect;
            }
            Err(_) => {
                self.etcd_down("watch request timed out");
                return Next::Reconnect;
            }
        };
        let resync_at = tokio::time::Instant::now() + self.opts.resync;
        let mut config_tick = interval(self.opts.config_poll);
        let mut kms_tick = interval(self.opts.kms_poll);
        let mut progress_tick = interval(PROGRESS_INTERVAL);
        loop {
            tokio::select! {
                message = stream.message() => match message {
                    Ok(Some(resp)) => {
                        self.metrics.etcd_up.set(1);
                        if resp.compact_revision() > 0 {
                            tracing::warn!(compact_revision = resp.compact_revision(), "watch revision was compacted; rescanning");
                            return Next::Rescan("compacted");
                        }
                        if resp.canceled() {
                            tracing::warn!(reason = %resp.cancel_reason(), "etcd canceled the watch; reconnecting");
                            return Next::Reconnect;
                        }
                        if let Err(next) = self.apply(resp.events()) {
                            return next;
                        }
                        if let Some(h) = resp.header() {
                            if h.revision() > self.metrics.watch_revision.get() {
                                self.metrics.watch_revision.set(h.revision());
                            }
                        }
                        if self.loaded.kms.generation() != self.generation {
                            return Next::Rescan("kms");
                        }
                    }
                    Ok(None) => {
                        self.etcd_down("watch stream closed");
                        return Next::Reconnect;
                    }
                    Err(e) => {
                        self.etcd_down(&describe(&e));
                        return Next::Reconnect;
                    }
                },
                _ = sleep_until(resync_at) => return Next::Rescan("periodic"),
                _ = config_tick.tick() => {
                    if self.reload_if_changed() {
                        return Next::Rescan("config");
                    }
                }
                _ = kms_tick.tick() => {
                    self.probe_kms().await;
                    if self.loaded.kms.generation() != self.generation {
                        return Next::Rescan("kms");
                    }
                }
                _ = progress_tick.tick() => {
                    // A dead connection is found by the client's HTTP/2 keep-alive (the stream
                    // errors); the answer to this only moves atrest_watch_revision on.
                    if let Err(e) = stream.request_progress().await {
                        self.etcd_down(&describe(&e));
                        return Next::Reconnect;
                    }
                }
            }
        }
    }

    /// Moves each event's object between buckets. Values are classified outside the lock.
    fn apply(&mut self, events: &[etcd_client::Event]) -> Result<(), Next> {
        let drift = || Next::Rescan("drift");
        let mut moves = Vec::with_capacity(events.len());
        for event in events {
            let Some(kv) = event.kv() else {
                return Err(drift());
            };
            let old = match event.prev_kv() {
                Some(prev) => Some(
                    self.classifier
                        .classify(prev.key(), prev.value())
                        .ok_or_else(drift)?,
                ),
                // A create has no previous value; anything else without one cannot be counted.
                None if event.event_type() == EventType::Put && kv.version() == 1 => None,
                None => return Err(drift()),
            };
            let new = match event.event_type() {
                EventType::Put => {
                    self.metrics.event("put");
                    Some(
                        self.classifier
                            .classify(kv.key(), kv.value())
                            .ok_or_else(drift)?,
                    )
                }
                EventType::Delete => {
                    self.metrics.event("delete");
                    None
                }
            };
            moves.push((old, new));
        }
        let Ok(mut p) = self.published.lock() else {
            return Err(drift());
        };
        for (old, new) in moves {
            if let Some(old) = old {
                if p.counts.remove(&old).is_err() {
                    tracing::warn!(
                        ?old,
                        "watch event for an object the counts do not have; rescanning"
                    );
                    return Err(drift());
                }
            }
            if let Some(new) = new {
                p.counts.add(new);
            }
        }
        Ok(())
    }

    /// Asks every KMS v2 plugin of the config for its Status (on a blocking thread).
    async fn probe_kms(&self) {
        let kms = Arc::clone(&self.loaded.kms);
        let _ = tokio::task::spawn_blocking(move || kms.probe()).await;
    }

    fn use_config(&mut self, loaded: Loaded) {
        self.classifier = Classifier::new(loaded.transformers.clone(), &self.opts.etcd_prefix);
        self.loaded = loaded;
    }

    /// Applies the config file if its hash changed; `true` when a new config is in force.
    fn reload_if_changed(&mut self) -> bool {
        let hash = match self.source.current_hash() {
            Ok(h) => h,
            Err(e) => {
                let marker = format!("unreadable:{e}");
                if self.failed_hash.as_deref() != Some(marker.as_str()) {
                    tracing::error!(error = %e, "cannot read the config file; keeping the config in force");
                    self.metrics.reload("failure");
                    self.failed_hash = Some(marker);
                }
                return false;
            }
        };
        if hash == self.loaded.hash || self.failed_hash.as_deref() == Some(hash.as_str()) {
            return false;
        }
        match self.source.load() {
            Ok(loaded) => {
                tracing::info!(old = %self.loaded.hash, new = %loaded.hash, file = %self.source.path().display(), "config changed; applying it");
                self.metrics.set_config_hash(&loaded.hash);
                self.metrics.reload("success");
                self.use_config(loaded);
                self.failed_hash = None;
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "changed config file does not load; keeping the config in force");
                self.metrics.reload("failure");
                self.failed_hash = Some(hash);
                false
            }
        }
    }
}
