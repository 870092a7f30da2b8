//! What kube-apiserver (≥ 1.34) reports on `/metrics` about encryption, in the Prometheus text
//! format:
//!
//! * `apiserver_encryption_config_controller_last_config_info{apiserver_id_hash="sha256:…",
//!   hash="sha256:<hex sha256 of the config file's bytes>"} 1` — the config it has loaded (with
//!   or without automatic reload);
//! * `apiserver_envelope_encryption_key_id_hash_status_last_timestamp_seconds{apiserver_id_hash,
//!   key_id_hash, provider_name}` — the last time a KMS v2 plugin's Status returned that key ID
//!   (`key_id_hash` = `sha256:<hex sha256 of the key ID>`).

use std::collections::BTreeMap;

/// The loaded-config metric.
pub const LAST_CONFIG_INFO: &str = "apiserver_encryption_config_controller_last_config_info";
/// The KMS v2 Status key-ID metric.
pub const KEY_ID_STATUS: &str =
    "apiserver_envelope_encryption_key_id_hash_status_last_timestamp_seconds";

/// One sample: labels and value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Every sample of metric `name` in `text` (lines that do not parse are skipped).
pub fn samples(text: &str, name: &str) -> Vec<Sample> {
    text.lines()
        .filter_map(|line| {
            let rest = line.trim_start().strip_prefix(name)?;
            let (labels, rest) = if let Some(body) = rest.strip_prefix('{') {
                parse_labels(body)?
            } else if rest.starts_with(' ') {
                (BTreeMap::new(), rest)
            } else {
                return None; // another metric whose name starts with `name`
            };
            let value = rest.split_whitespace().next()?;
            let value = match value {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                v => v.parse().ok()?,
            };
            Some(Sample { labels, value })
        })
        .collect()
}

/// `k="v",k2="v2"} rest` → labels and `rest`.
fn parse_labels(body: &str) -> Option<(BTreeMap<String, String>, &str)> {
    let mut labels = BTreeMap::new();
    let mut chars = body.char_indices().peekable();
    loop {
        while chars.peek().is_some_and(|(_, c)| *c == ' ' || *c == ',') {
            chars.next();
        }
        let (start, c) = *chars.peek()?;
        if c == '}' {
            return Some((labels, &body[start + 1..]));
        }
        let eq = body[start..].find('=')? + start;
        let key = body[start..eq].trim().to_string();
        while chars.peek().is_some_and(|(i, _)| *i <= eq) {
            chars.next();
        }
        if chars.next()?.1 != '"' {
            return None;
        }
        let mut value = String::new();
        loop {
            let (_, c) = chars.next()?;
            match c {
                '"' => break,
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                other => value.push(other),
            }
        }
        labels.insert(key, value);
    }
}

/// The config an apiserver reports as loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedConfig {
    pub apiserver_id_hash: Option<String>,
    pub hash: String,
}

/// Every `last_config_info` sample with value 1.
pub fn loaded_configs(text: &str) -> Vec<LoadedConfig> {
    samples(text, LAST_CONFIG_INFO)
        .into_iter()
        .filter(|s| s.value == 1.0)
        .filter_map(|s| {
            Some(LoadedConfig {
                hash: s.labels.get("hash")?.clone(),
                apiserver_id_hash: s.labels.get("apiserver_id_hash").cloned(),
            })
        })
        .collect()
}

/// A key ID a KMS v2 provider's Status returned, and when (unix seconds).
#[derive(Debug, Clone, PartialEq)]
pub struct KeyIdSeen {
    pub provider_name: String,
    pub key_id_hash: String,
    pub apiserver_id_hash: Option<String>,
    pub last_seen: f64,
}

pub fn key_ids_seen(text: &str) -> Vec<KeyIdSeen> {
    samples(text, KEY_ID_STATUS)
        .into_iter()
        .filter_map(|s| {
            Some(KeyIdSeen {
                provider_name: s.labels.get("provider_name")?.clone(),
                key_id_hash: s.labels.get("key_id_hash")?.clone(),
                apiserver_id_hash: s.labels.get("apiserver_id_hash").cloned(),
                last_seen: s.value,
            })
        })
        .collect()
}

/// kube-apiserver's label value for an identifier (apiserver ID, key ID): `sha256:<hex>`.
pub fn id_hash(id: &str) -> String {
    atrest_core::config::content_hash(id.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_last_config_info() {
        let text = "# HELP apiserver_encryption_config_controller_last_config_info [ALPHA] Information about the last applied encryption configuration with hash as label, split by apiserver identity.\n# TYPE apiserver_encryption_config_controller_last_config_info gauge\napiserver_encryption_config_controller_last_config_info{apiserver_id_hash=\"sha256:14f9\",hash=\"sha256:6bc9\"} 1\napiserver_encryption_config_controller_last_config_info_other 2\n";
        assert_eq!(
            loaded_configs(text),
            vec![LoadedConfig {
                apiserver_id_hash: Some("sha256:14f9".into()),
                hash: "sha256:6bc9".into()
            }]
        );
        let kms = "apiserver_envelope_encryption_key_id_hash_status_last_timestamp_seconds{apiserver_id_hash=\"sha256:a\",key_id_hash=\"sha256:b\",provider_name=\"p\"} 1.674865558833728e+09\n";
        let seen = key_ids_seen(kms);
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].provider_name, "p");
        assert!(seen[0].last_seen > 1.6e9);
        assert_eq!(
            id_hash("x"),
            "sha256:2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881"
        );
    }

    #[test]
    fn escaped_labels() {
        let s = samples("m{a=\"x\\\"y\",b=\"z\"} 3\n", "m");
        assert_eq!(s[0].labels["a"], "x\"y");
        assert_eq!(s[0].labels["b"], "z");
        assert_eq!(s[0].value, 3.0);
        assert!(samples("m{a=\"unterminated} 3\n", "m").is_empty());
    }
}
