//! Raw etcd throughput for `scripts/bench-etcd`: the same shape of work as `atrest status` and
//! `atrest rewrite`, through the same client and scan code, without any crypto. Bench tooling
//! only; nothing in the product calls this.
//!
//! ```text
//! raw_etcd ENDPOINT range [PREFIX]   # status's reads: the key space split into PARALLEL_SCANS
//!                                    # ranges, paged (PAGE_SIZE) at one revision, prefetched
//! raw_etcd ENDPOINT put [PREFIX]     # rewrite's writes: pages read in order, every value put back
//!                                    # unchanged (same size) in Txns of `batch_size` puts, each
//!                                    # guarded by its key's mod_revision, `in_flight` Txns at once
//! ```
//! Prints one JSON object: `{"mode":…,"objects":…,"bytes":…,"seconds":…,"objects_per_second":…}`.

use std::time::Instant;

use atrest_store::etcd::rewrite::RewriteOptions;
use atrest_store::etcd::scan::{current_revision, prefetch, split_range, Scanner, PAGE_SIZE};
use atrest_store::etcd::status::PARALLEL_SCANS;
use atrest_store::etcd::{connect, EtcdConnection, EtcdSettings};
use atrest_store::keymap::{normalize_prefix, prefix_end};
use etcd_client::{Compare, CompareOp, PutOptions, Txn, TxnOp};
use tokio::task::JoinSet;

/// Every key and value under `prefix`, read like `status` reads them.
async fn range(conn: &EtcdConnection, prefix: &[u8]) -> (u64, u64) {
    let end = prefix_end(prefix);
    let revision = current_revision(conn).await.expect("revision");
    let ranges = split_range(conn, prefix, &end, PARALLEL_SCANS, revision)
        .await
        .expect("split");
    let scanners = ranges
        .into_iter()
        .map(|r| Scanner::new(conn.clone(), vec![r], PAGE_SIZE).at_revision(revision))
        .collect();
    let mut pages = prefetch(scanners);
    let (mut objects, mut bytes) = (0u64, 0u64);
    while let Some(page) = pages.recv().await {
        let (_, kvs) = page.expect("range");
        for kv in &kvs {
            objects += 1;
            bytes += (kv.key().len() + kv.value().len()) as u64;
        }
    }
    (objects, bytes)
}

/// Puts every value back unchanged, batched and guarded like `rewrite`'s transactions.
async fn put(conn: &EtcdConnection, prefix: &[u8]) -> (u64, u64) {
    let opts = RewriteOptions::default();
    let mut scanner = Scanner::new(
        conn.clone(),
        vec![(prefix.to_vec(), prefix_end(prefix))],
        PAGE_SIZE,
    );
    let mut tasks: JoinSet<u64> = JoinSet::new();
    let (mut objects, mut bytes) = (0u64, 0u64);
    let mut batch: Vec<(Vec<u8>, Vec<u8>, i64, i64)> = Vec::new();
    let send = |tasks: &mut JoinSet<u64>, batch: Vec<(Vec<u8>, Vec<u8>, i64, i64)>| {
        let conn = conn.clone();
        tasks.spawn(async move {
            let n = batch.len() as u64;
            let guards: Vec<Compare> = batch
                .iter()
                .map(|(k, _, rev, _)| Compare::mod_revision(k.clone(), CompareOp::Equal, *rev))
                .collect();
            let puts: Vec<TxnOp> = batch
                .into_iter()
                .map(|(k, v, _, lease)| {
                    TxnOp::put(
                        k,
                        v,
                        (lease != 0).then(|| PutOptions::new().with_lease(lease)),
                    )
                })
                .collect();
            let resp = conn
                .kv()
                .txn(Txn::new().when(guards).and_then(puts))
                .await
                .expect("txn");
            assert!(
                resp.succeeded(),
                "a guard failed: is something else writing?"
            );
            n
        });
    };
    while let Some(page) = scanner.next_page().await.expect("range") {
        for kv in page {
            bytes += (kv.key().len() + kv.value().len()) as u64;
            batch.push((
                kv.key().to_vec(),
                kv.value().to_vec(),
                kv.mod_revision(),
                kv.lease(),
            ));
            if batch.len() >= opts.batch_size {
                while tasks.len() >= opts.in_flight {
                    objects += tasks.join_next().await.expect("task").expect("txn task");
                }
                send(&mut tasks, std::mem::take(&mut batch));
            }
        }
    }
    if !batch.is_empty() {
        send(&mut tasks, batch);
    }
    while let Some(n) = tasks.join_next().await {
        objects += n.expect("txn task");
    }
    (objects, bytes)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: raw_etcd ENDPOINT range|put [PREFIX]";
    let endpoint = args.first().expect(usage).clone();
    let mode = args.get(1).expect(usage).clone();
    let prefix = normalize_prefix(args.get(2).map_or("/registry", String::as_str));
    // The same runtime shape as the CLI's etcd commands (two workers).
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let settings = EtcdSettings {
            endpoints: vec![endpoint],
            ..EtcdSettings::default()
        };
        let conn = connect(&settings).await.expect("connect");
        let started = Instant::now();
        let (objects, bytes) = match mode.as_str() {
            "range" => range(&conn, prefix.as_bytes()).await,
            "put" => put(&conn, prefix.as_bytes()).await,
            _ => panic!("{usage}"),
        };
        let seconds = started.elapsed().as_secs_f64();
        println!(
            "{}",
            serde_json::json!({
                "mode": mode,
                "objects": objects,
                "bytes": bytes,
                "seconds": seconds,
                "objects_per_second": objects as f64 / seconds,
            })
        );
    });
}
