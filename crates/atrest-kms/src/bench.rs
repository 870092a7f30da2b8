//! `atrest kms bench`: calls/s and latency percentiles of any KMS v2 plugin.
//!
//! `concurrency` tasks each loop on one RPC for `duration`, spread over `connections` gRPC
//! connections (HTTP/2 multiplexes the rest). Encrypt sends a fresh random 32-byte plaintext like
//! the apiserver's seed; Decrypt replays one ciphertext made at the start. Latency is measured per
//! call on the client side. Given the plugin's pid (same host), the plugin's own CPU time (user +
//! system, all threads, from `/proc/PID/stat`) over each measurement is reported per call.

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
    /// The plugin's process id, to report its CPU time per call.
    pub server_pid: Option<u32>,
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
    /// The plugin's CPU time (user + system) during the measurement, when its pid was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_cpu_s: Option<f64>,
    /// `server_cpu_s` per successful call, in microseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_cpu_us_per_call: Option<f64>,
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("plugin at {endpoint}: {status}")]
    Rpc { endpoint: String, status: String },
    #[error("cannot start the benchmark runtime: {0}")]
    Runtime(std::io::Error),
    #[error("cannot read the CPU time of process {pid} from /proc/{pid}/stat: {detail}")]
    ServerCpu { pid: u32, detail: String },
}

/// Linux reports `/proc/PID/stat` times in USER_HZ ticks, 100 per second on every architecture
/// Rust supports (the kernel ABI fixes it, independent of CONFIG_HZ).
const USER_HZ: f64 = 100.0;

/// User + system CPU seconds of process `pid` so far (all its threads, live and exited).
pub fn process_cpu_seconds(pid: u32) -> Result<f64, BenchError> {
    let err = |detail: String| BenchError::ServerCpu { pid, detail };
    let stat =
        std::fs::read_to_string(format!("/proc/{pid}/stat")).map_err(|e| err(e.to_string()))?;
    parse_cpu_seconds(&stat).ok_or_else(|| err("unexpected format".into()))
}

/// utime and stime are fields 14 and 15; field 2 (the command name, in parentheses) may contain
/// spaces and parentheses, so fields are counted after its last `)`.
fn parse_cpu_seconds(stat: &str) -> Option<f64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / USER_HZ)
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
) -> Result<BenchResult, BenchError> {
    let cpu_before = opts.server_pid.map(process_cpu_seconds).transpose()?;
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
    let server_cpu_s = match (opts.server_pid, cpu_before) {
        (Some(pid), Some(before)) => Some(process_cpu_seconds(pid)? - before),
        _ => None,
    };
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
    Ok(BenchResult {
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
        server_cpu_s,
        server_cpu_us_per_call: server_cpu_s
            .filter(|_| !all.is_empty())
            .map(|cpu| cpu * 1e6 / all.len() as f64),
    })
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
        out.push(measure(opts, "encrypt", &clients, &dec, &status.key_id).await?);
    }
    if matches!(opts.op, BenchOp::Decrypt | BenchOp::Both) {
        out.push(measure(opts, "decrypt", &clients, &dec, &status.key_id).await?);
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

#[cfg(test)]
mod tests {
    use super::parse_cpu_seconds;

    #[test]
    fn cpu_time_is_utime_plus_stime() {
        // pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime ...
        let stat = "4242 (atrest (kms) x) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 9 0";
        assert_eq!(parse_cpu_seconds(stat), Some(3.25));
        assert_eq!(parse_cpu_seconds("4242 (x) S 1"), None);
        let own = super::process_cpu_seconds(std::process::id()).unwrap();
        assert!(own >= 0.0);
        assert!(super::process_cpu_seconds(u32::MAX).is_err());
    }
}
