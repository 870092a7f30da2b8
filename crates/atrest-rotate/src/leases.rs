//! kube-apiserver identity leases (`<prefix>/leases/kube-system/apiserver-…`, label
//! `apiserver.kubernetes.io/identity=kube-apiserver`): which apiservers are alive, so a rotation
//! can refuse to go on while one of them is not among the `--apiserver` URLs it watches.
//!
//! A lease is decoded from JSON or from kube-apiserver's protobuf (`k8s\0` + `runtime.Unknown`
//! holding a `coordination.k8s.io/v1` `Lease`); only the fields needed here are read.

use std::collections::BTreeMap;

use prost::Message;

/// The label kube-apiserver puts on its identity lease.
pub const IDENTITY_LABEL: &str = "apiserver.kubernetes.io/identity";
pub const IDENTITY_VALUE: &str = "kube-apiserver";

/// What a rotation needs from an identity lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiserverLease {
    /// The lease name = the apiserver ID (metrics label `apiserver_id_hash` is its hash).
    pub name: String,
    pub hostname: Option<String>,
    /// `renewTime` in unix seconds, and `leaseDurationSeconds`.
    pub renew_unix: Option<i64>,
    pub duration_seconds: Option<i64>,
}

impl ApiserverLease {
    /// Live at `now` (a lease without times counts as live: better a false alarm than a miss).
    pub fn is_live(&self, now_unix: i64) -> bool {
        match (self.renew_unix, self.duration_seconds) {
            (Some(r), Some(d)) => r + d > now_unix,
            _ => true,
        }
    }
}

#[derive(Clone, PartialEq, Message)]
struct Unknown {
    #[prost(bytes = "vec", optional, tag = "2")]
    raw: Option<Vec<u8>>,
}

#[derive(Clone, PartialEq, Message)]
struct Lease {
    #[prost(message, optional, tag = "1")]
    metadata: Option<ObjectMeta>,
    #[prost(message, optional, tag = "2")]
    spec: Option<LeaseSpec>,
}

#[derive(Clone, PartialEq, Message)]
struct ObjectMeta {
    #[prost(string, optional, tag = "1")]
    name: Option<String>,
    #[prost(btree_map = "string, string", tag = "11")]
    labels: BTreeMap<String, String>,
}

#[derive(Clone, PartialEq, Message)]
struct LeaseSpec {
    #[prost(int32, optional, tag = "2")]
    lease_duration_seconds: Option<i32>,
    #[prost(message, optional, tag = "4")]
    renew_time: Option<MicroTime>,
}

#[derive(Clone, PartialEq, Message)]
struct MicroTime {
    #[prost(int64, optional, tag = "1")]
    seconds: Option<i64>,
}

/// An identity lease from its decrypted value; `None` for other leases or undecodable bytes.
pub fn parse(plaintext: &[u8]) -> Option<ApiserverLease> {
    let (name, labels, renew, duration) = if let Some(pb) = plaintext.strip_prefix(b"k8s\x00") {
        let raw = Unknown::decode(pb).ok()?.raw?;
        let lease = Lease::decode(raw.as_slice()).ok()?;
        let meta = lease.metadata?;
        let spec = lease.spec.unwrap_or_default();
        (
            meta.name?,
            meta.labels,
            spec.renew_time.and_then(|t| t.seconds),
            spec.lease_duration_seconds.map(i64::from),
        )
    } else {
        let v: serde_json::Value = serde_json::from_slice(plaintext).ok()?;
        let labels = v["metadata"]["labels"]
            .as_object()
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        (
            v["metadata"]["name"].as_str()?.to_string(),
            labels,
            v["spec"]["renewTime"].as_str().and_then(parse_rfc3339),
            v["spec"]["leaseDurationSeconds"].as_i64(),
        )
    };
    if labels.get(IDENTITY_LABEL).map(String::as_str) != Some(IDENTITY_VALUE) {
        return None;
    }
    Some(ApiserverLease {
        name,
        hostname: labels.get("kubernetes.io/hostname").cloned(),
        renew_unix: renew,
        duration_seconds: duration,
    })
}

/// `2023-07-04T21:58:48.065888Z` → unix seconds (UTC `Z` only, as the API writes it).
fn parse_rfc3339(s: &str) -> Option<i64> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>());
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let time = time.split('.').next()?;
    let mut t = time.split(':').map(|p| p.parse::<i64>());
    let (hh, mm, ss) = (t.next()?.ok()?, t.next()?.ok()?, t.next()?.ok()?);
    // Days from civil (Howard Hinnant).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hh * 3600 + mm * 60 + ss)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_and_protobuf_leases() {
        let json = br#"{"metadata":{"name":"apiserver-07a5","labels":{"apiserver.kubernetes.io/identity":"kube-apiserver","kubernetes.io/hostname":"master-1"}},"spec":{"leaseDurationSeconds":3600,"renewTime":"2023-07-04T21:58:48.065888Z"}}"#;
        let l = parse(json).unwrap();
        assert_eq!(l.name, "apiserver-07a5");
        assert_eq!(l.hostname.as_deref(), Some("master-1"));
        assert_eq!(l.renew_unix, Some(1_688_507_928));
        assert!(l.is_live(1_688_507_928 + 3599));
        assert!(!l.is_live(1_688_507_928 + 3600));
        let lease = Lease {
            metadata: Some(ObjectMeta {
                name: Some("apiserver-x".into()),
                labels: [(IDENTITY_LABEL.to_string(), IDENTITY_VALUE.to_string())].into(),
            }),
            spec: Some(LeaseSpec {
                lease_duration_seconds: Some(3600),
                renew_time: Some(MicroTime { seconds: Some(100) }),
            }),
        };
        let mut pb = b"k8s\x00".to_vec();
        pb.extend(
            Unknown {
                raw: Some(lease.encode_to_vec()),
            }
            .encode_to_vec(),
        );
        let l = parse(&pb).unwrap();
        assert_eq!(
            (l.name.as_str(), l.renew_unix, l.duration_seconds),
            ("apiserver-x", Some(100), Some(3600))
        );
        assert!(parse(br#"{"metadata":{"name":"kube-scheduler"}}"#).is_none());
        assert!(parse(b"k8s\x00\xff\xff").is_none());
    }
}
