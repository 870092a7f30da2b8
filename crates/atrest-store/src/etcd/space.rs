//! etcd backend space for writers: every rewritten object adds a revision that stays in etcd's
//! bbolt file until a compaction, and a file that reaches the backend quota raises the `NOSPACE`
//! alarm — after which etcd refuses every write, kube-apiserver's included. [`SpaceBudget`] keeps a
//! rewrite below that line: it reads the member's `dbSizeInUse` (Maintenance Status) and the quota
//! (etcd 3.6's Status field, else the `etcd_server_quota_backend_bytes` metric on the client URL,
//! else the caller's default), and says how many bytes may be written before a compaction to the
//! revision just finished frees the old versions again (freed pages are reused: the file stops
//! growing). An already raised alarm is reported, never worked around.

use std::time::Duration;

use etcd_client::{AlarmAction, AlarmType, CompactionOptions};

use super::scan::with_retry;
use super::{EtcdConnection, EtcdError};

/// etcd's default `--quota-backend-bytes` (2 GiB).
pub const DEFAULT_QUOTA_BYTES: u64 = 2 << 30;

/// Longer than etcd's default `--backend-batch-interval` (100 ms).
const COMMIT_SETTLE: Duration = Duration::from_millis(250);

/// Share of the quota a run keeps free for bbolt's own growth (freelist, half-full pages) and for
/// the writes of everybody else.
const RESERVE_PERCENT: u64 = 15;

/// Bytes of bbolt space one written object is assumed to take beyond key and value (revision key,
/// `mvccpb.KeyValue` framing, page fill): measured on etcd 3.4/3.5 about ×1.3 plus 100 bytes.
pub fn object_cost(key_len: usize, value_len: usize) -> u64 {
    ((key_len + value_len) as u64 * 13 / 10) + 100
}

/// What etcd reported about its space.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SpaceStatus {
    /// The bbolt file's high-water mark (what the quota is compared with).
    pub db_size: u64,
    /// Pages in use (the rest are free and reused before the file grows).
    pub db_size_in_use: u64,
    pub quota: u64,
    /// `status`, `metric` or `default`.
    pub quota_source: &'static str,
}

impl SpaceStatus {
    /// Bytes that may be written before a compaction must free old revisions: half of what is
    /// free below the reserve (free pages are reused first, so the in-use size is what grows; the
    /// other half absorbs fragmentation and other writers).
    pub fn budget(&self) -> u64 {
        self.usable().saturating_sub(self.db_size_in_use) / 2
    }

    /// The quota less the reserve: the file never grows past this.
    pub fn usable(&self) -> u64 {
        self.quota - self.quota * RESERVE_PERCENT / 100
    }

    pub fn describe(&self) -> String {
        format!(
            "etcd's database is {} (in use {}) of a {} quota ({})",
            mib(self.db_size),
            mib(self.db_size_in_use),
            mib(self.quota),
            match self.quota_source {
                "status" => "from etcd's status",
                "metric" => "from etcd_server_quota_backend_bytes",
                _ => "--etcd-quota-bytes",
            }
        )
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
}

/// Refuses when a member has the `NOSPACE` alarm raised (etcd then accepts no writes at all).
pub async fn check_alarms(conn: &EtcdConnection) -> Result<(), EtcdError> {
    let resp = with_retry(conn, "alarm list", || {
        let mut m = conn.client.maintenance_client();
        async move { m.alarm(AlarmAction::Get, AlarmType::None, None).await }
    })
    .await?;
    let raised: Vec<String> = resp
        .alarms()
        .iter()
        .filter(|a| a.alarm() == AlarmType::Nospace)
        .map(|a| format!("{:x}", a.member_id()))
        .collect();
    if raised.is_empty() {
        return Ok(());
    }
    Err(EtcdError::Space(format!(
            "etcd's NOSPACE alarm is raised (member {}): etcd accepts no writes until an operator compacts, \
             defragments (`etcdctl defrag`) and disarms it (`etcdctl alarm disarm`)",
            raised.join(", ")
        ))
    )
}

/// The member's space and quota. `default_quota` is used when neither etcd's Status (3.6+) nor
/// its metrics endpoint tell the quota.
pub async fn status(conn: &EtcdConnection, default_quota: u64) -> Result<SpaceStatus, EtcdError> {
    // etcd updates its size figures at each backend commit (every 100 ms by default): let the
    // last writes land first.
    tokio::time::sleep(COMMIT_SETTLE).await;
    let resp = with_retry(conn, "status", || {
        let mut m = conn.client.maintenance_client();
        async move { m.status().await }
    })
    .await?;
    let db_size = u64::try_from(resp.db_size()).unwrap_or(0);
    let in_use = match u64::try_from(resp.raft_used_db_size()).unwrap_or(0) {
        0 => db_size, // etcd < 3.4 does not report it
        n => n,
    };
    let (quota, quota_source) = match u64::try_from(resp.db_size_quota()).unwrap_or(0) {
        0 => match quota_metric(conn).await {
            Some(q) => (q, "metric"),
            None => (default_quota, "default"),
        },
        q => (q, "status"),
    };
    Ok(SpaceStatus {
        db_size,
        db_size_in_use: in_use,
        quota,
        quota_source,
    })
}

/// Compacts to `revision` and waits until the old revisions are physically removed.
pub async fn compact(conn: &EtcdConnection, revision: i64) -> Result<(), EtcdError> {
    with_retry(conn, "compact", || {
        let mut kv = conn.kv();
        async move {
            match kv
                .compact(revision, Some(CompactionOptions::new().with_physical()))
                .await
            {
                // Someone (kube-apiserver) compacted further already: fine.
                Err(e) if super::client::is_compacted(&e) => Ok(()),
                other => other.map(|_| ()),
            }
        }
    })
    .await?;
    Ok(())
}

/// `etcd_server_quota_backend_bytes` from the first endpoint's `/metrics`, if it answers.
async fn quota_metric(conn: &EtcdConnection) -> Option<u64> {
    let s = &conn.settings;
    let endpoint = s.endpoints.first()?;
    let mut builder = reqwest::Client::builder().timeout(s.command_timeout);
    if let Some(ca) = &s.cacert {
        let pem = std::fs::read(ca).ok()?;
        builder = builder.add_root_certificate(reqwest::Certificate::from_pem(&pem).ok()?);
    }
    if let (Some(cert), Some(key)) = (&s.cert, &s.key) {
        let mut pem = std::fs::read(cert).ok()?;
        pem.push(b'\n');
        pem.extend(std::fs::read(key).ok()?);
        builder = builder.identity(reqwest::Identity::from_pem(&pem).ok()?);
    }
    let client = builder.build().ok()?;
    let url = format!("{}/metrics", endpoint.trim_end_matches('/'));
    let text = client.get(url).send().await.ok()?.text().await.ok()?;
    parse_quota_metric(&text)
}

fn parse_quota_metric(text: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix("etcd_server_quota_backend_bytes")?;
        let value = rest.split_whitespace().last()?;
        let v: f64 = value.parse().ok()?;
        (v.is_finite() && v > 0.0).then_some(v as u64)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_quota_metric() {
        let text =
            "# HELP etcd_server_quota_backend_bytes Current backend storage quota size in bytes.\n\
                    # TYPE etcd_server_quota_backend_bytes gauge\n\
                    etcd_server_quota_backend_bytes 6.7108864e+07\n";
        assert_eq!(parse_quota_metric(text), Some(64 << 20));
        assert_eq!(parse_quota_metric("etcd_server_has_leader 1\n"), None);
    }

    #[test]
    fn budget_keeps_a_reserve() {
        let s = SpaceStatus {
            db_size: 40 << 20,
            db_size_in_use: 30 << 20,
            quota: 100 << 20,
            quota_source: "default",
        };
        assert_eq!(s.budget(), ((85 << 20) - (30 << 20)) / 2);
        let full = SpaceStatus {
            db_size_in_use: 90 << 20,
            ..s
        };
        assert_eq!(full.budget(), 0);
    }
}
