//! `atrest kms bench`: calls/s and latency percentiles of any KMS v2 plugin.
//!
//! `concurrency` tasks each loop on one RPC for `duration`, spread over `connections` gRPC
//! connections (HTTP/2 multiplexes the rest). Encrypt sends a fresh random 32-byte plaintext like
//! the apiserver's seed; Decrypt replays one ciphertext made at the start. Latency is measured per
//! call on the client side.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::endpoint::Endpoint;
use crate::proto::v2 as pb;

/// Which RPC to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BenchOp {
    Encrypt,
    Decrypt,
    Both,
}

#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub endpoint: Endpoint,
    pub concurrency: usize,
    pub duration: Duration,
    pub op: BenchOp,
    pub connections: usize,
}

/// One measured operation (one JSON object).
#[derive(Debug, Clone, Serialize)]
pub struct BenchResult {
    pub op: &'static str,
    pub concurrency: usize,
    pub connections: usize,
    pub duration_s: f64,
    pub calls: u64,
    pub errors: u64,
    pub calls_per_s: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
    pub key_id: String,
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("plugin at {endpoint}: {status}")]
    Rpc { endpoint: String, status: String },
    #[error("cannot start the benchmark runtime: {0}")]
    Runtime(std::io::Error),
}

type Client =
    pb::key_management_service_client::KeyManagementServiceClient<tonic::transport::Channel>;

fn seed() -> Vec<u8> {
    let mut p = vec![0u8; 32];
    let _ = aws_lc_rs::rand::fill(&mut p);
    p
}

async fn one(
    op: &'static str,
    c: &mut Client,
    dec: &pb::DecryptRequest,
) -> Result<(), tonic::Status> {
    if op == "encrypt" {
        c.encrypt(pb::EncryptRequest {
            plaintext: seed(),
            uid: uuid::Uuid::new_v4().to_string(),
        })
        .await
        .map(|_| ())
    } else {
        c.decrypt(dec.clone()).await.map(|_| ())
    }
}

async fn measure(
    opts: &BenchOptions,
    op: &'static str,
    clients: &[Client],
    dec: &pb::DecryptRequest,
    key_id: &str,
) -> BenchResult {
    let start = Instant::now();
    let until = start + opts.duration;
    let mut tasks = Vec::new();
    for i in 0..opts.concurrency.max(1) {
        let mut c = clients[i % clients.len()].clone();
        let dec = dec.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(4096);
            let mut errors = 0u64;
            while Instant::now() < until {
                let t = Instant::now();
                match one(op, &mut c, &dec).await {
                    Ok(()) => lat.push(t.elapsed().as_micros().min(u64::MAX as u128) as u64),
                    Err(_) => errors += 1,
                }
            }
            (lat, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        if let Ok((l, e)) = t.await {
            all.extend(l);
            errors += e;
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    all.sort_unstable();
    let pct = |p: f64| -> u64 {
        if all.is_empty() {
            0
        } else {
            all[(((all.len() as f64) * p).ceil() as usize)
                .saturating_sub(1)
                .min(all.len() - 1)]
        }
    };
    BenchResult {
        op,
        concurrency: opts.concurrency.max(1),
        connections: clients.len(),
        duration_s: elapsed,
        calls: all.len() as u64,
        errors,
        calls_per_s: all.len() as f64 / elapsed,
        p50_us: pct(0.50),
        p99_us: pct(0.99),
        max_us: all.last().copied().unwrap_or(0),
        key_id: key_id.to_string(),
    }
}

/// Runs the benchmark (inside a tokio runtime).
pub async fn run(opts: &BenchOptions) -> Result<Vec<BenchResult>, BenchError> {
    let ep = opts.endpoint.to_string();
    let rpc = |s: tonic::Status| BenchError::Rpc {
        endpoint: ep.clone(),
        status: format!("{:?}: {}", s.code(), s.message()),
    };
    let clients: Vec<Client> = (0..opts.connections.clamp(1, opts.concurrency.max(1)))
        .map(|_| Client::new(crate::client::channel(&opts.endpoint)))
        .collect();
    let mut c = clients[0].clone();
    let status = c
        .status(pb::StatusRequest {})
        .await
        .map_err(rpc)?
        .into_inner();
    let enc = c
        .encrypt(pb::EncryptRequest {
            plaintext: seed(),
            uid: uuid::Uuid::new_v4().to_string(),
        })
        .await
        .map_err(rpc)?
        .into_inner();
    let dec = pb::DecryptRequest {
        ciphertext: enc.ciphertext,
        uid: uuid::Uuid::new_v4().to_string(),
        key_id: enc.key_id,
        annotations: enc.annotations,
    };
    c.decrypt(dec.clone()).await.map_err(rpc)?;
    let mut out = Vec::new();
    if matches!(opts.op, BenchOp::Encrypt | BenchOp::Both) {
        out.push(measure(opts, "encrypt", &clients, &dec, &status.key_id).await);
    }
    if matches!(opts.op, BenchOp::Decrypt | BenchOp::Both) {
        out.push(measure(opts, "decrypt", &clients, &dec, &status.key_id).await);
    }
    Ok(out)
}

/// [`run`] on its own multi-threaded runtime (for the CLI).
pub fn run_blocking(opts: &BenchOptions) -> Result<Vec<BenchResult>, BenchError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(BenchError::Runtime)?;
    rt.block_on(run(opts))
}
