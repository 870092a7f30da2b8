//! A rotation's view of an `EncryptionConfiguration`: built from what the core loader returns (never
//! parsed a second time), compared field by field with a generated file's loaded form, and rendered
//! canonically when CURRENT's text cannot be edited in place (JSON, flow style).

use std::fmt;
use std::time::Duration;

use atrest_core::config::{
    EncryptionConfiguration, KmsApiVersion, ProviderConfiguration, ResourceConfiguration,
};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// The local-key providers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeysKind {
    Aescbc,
    Aesgcm,
    Secretbox,
}

impl KeysKind {
    /// The config's field name.
    pub fn name(self) -> &'static str {
        match self {
            KeysKind::Aescbc => "aescbc",
            KeysKind::Aesgcm => "aesgcm",
            KeysKind::Secretbox => "secretbox",
        }
    }

    /// `aescbc`, `aesgcm` or `secretbox`.
    pub fn parse(s: &str) -> Option<KeysKind> {
        match s {
            "aescbc" => Some(KeysKind::Aescbc),
            "aesgcm" => Some(KeysKind::Aesgcm),
            "secretbox" => Some(KeysKind::Secretbox),
            _ => None,
        }
    }
}

/// One named key (material zeroized on drop, never printed).
#[derive(Clone, PartialEq, Eq)]
pub struct KeySpec {
    pub name: String,
    pub secret: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for KeySpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeySpec({:?}, REDACTED)", self.name)
    }
}

/// A `kms` provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KmsSpec {
    pub v2: bool,
    pub name: String,
    pub endpoint: String,
    pub cachesize: Option<i32>,
    pub timeout: Duration,
}

/// One provider of a resource entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prov {
    Keys { kind: KeysKind, keys: Vec<KeySpec> },
    Identity,
    Kms(KmsSpec),
}

impl Prov {
    /// Every (provider, key) this provider can read with, as reports name them.
    pub fn labels(&self) -> Vec<KeyLabel> {
        match self {
            Prov::Keys { kind, keys } => keys
                .iter()
                .map(|k| KeyLabel::new(kind.name(), Some(&k.name)))
                .collect(),
            Prov::Identity => vec![KeyLabel::new("identity", None)],
            Prov::Kms(k) => vec![KeyLabel::new(
                if k.v2 { "kms v2" } else { "kms v1" },
                Some(&k.name),
            )],
        }
    }

    /// The label of the key this provider writes with.
    pub fn write_label(&self) -> KeyLabel {
        self.labels()
            .into_iter()
            .next()
            .unwrap_or_else(|| KeyLabel::new("identity", None))
    }

    pub fn is_identity(&self) -> bool {
        matches!(self, Prov::Identity)
    }
}

/// A provider and key as status reports and stored prefixes name them: `aescbc key1`,
/// `kms v2 my-plugin`, `identity`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct KeyLabel {
    /// `identity`, `aescbc`, `aesgcm`, `secretbox`, `kms v1`, `kms v2` (the report's names).
    pub provider: String,
    /// Key name (local providers) or KMS provider name; `None` for identity.
    pub key: Option<String>,
}

impl KeyLabel {
    pub fn new(provider: &str, key: Option<&str>) -> KeyLabel {
        KeyLabel {
            provider: provider.to_string(),
            key: key.map(str::to_string),
        }
    }
}

impl fmt::Display for KeyLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.key {
            Some(k) => write!(f, "{} {k}", self.provider),
            None => f.write_str(&self.provider),
        }
    }
}

/// One `resources:` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntrySpec {
    pub resources: Vec<String>,
    pub providers: Vec<Prov>,
}

/// A whole configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigSpec {
    pub entries: Vec<EntrySpec>,
}

impl From<&EncryptionConfiguration> for ConfigSpec {
    fn from(config: &EncryptionConfiguration) -> ConfigSpec {
        ConfigSpec {
            entries: config.resources.iter().map(entry_spec).collect(),
        }
    }
}

fn entry_spec(entry: &ResourceConfiguration) -> EntrySpec {
    EntrySpec {
        resources: entry.resources.clone(),
        providers: entry.providers.iter().map(prov_spec).collect(),
    }
}

fn prov_spec(p: &ProviderConfiguration) -> Prov {
    let keys = |kind, k: &atrest_core::config::KeysConfiguration| Prov::Keys {
        kind,
        keys: k
            .keys
            .iter()
            .map(|key| KeySpec {
                name: key.name.clone(),
                secret: key.secret.clone(),
            })
            .collect(),
    };
    match p {
        ProviderConfiguration::AesGcm(k) => keys(KeysKind::Aesgcm, k),
        ProviderConfiguration::AesCbc(k) => keys(KeysKind::Aescbc, k),
        ProviderConfiguration::Secretbox(k) => keys(KeysKind::Secretbox, k),
        ProviderConfiguration::Identity => Prov::Identity,
        ProviderConfiguration::Kms(k) => Prov::Kms(KmsSpec {
            v2: k.api_version == KmsApiVersion::V2,
            name: k.name.clone(),
            endpoint: k.endpoint.clone(),
            cachesize: k.cachesize,
            timeout: k.timeout,
        }),
    }
}

/// A YAML scalar that reads back as exactly `s`: plain when that is unambiguous, else a JSON string
/// (JSON strings are YAML double-quoted scalars).
pub fn scalar(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
        && s.starts_with(|c: char| c.is_ascii_alphabetic())
        && !matches!(
            s.to_ascii_lowercase().as_str(),
            "y" | "n" | "yes" | "no" | "on" | "off" | "true" | "false" | "null"
        );
    if plain {
        s.to_string()
    } else {
        serde_json::to_string(s).unwrap_or_else(|_| format!("{s:?}"))
    }
}

/// Go's `time.Duration` text for whole units (`3s`, `500ms`, `1500us`): what `metav1.Duration` reads.
pub fn go_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos.is_multiple_of(1_000_000_000) {
        format!("{}s", nanos / 1_000_000_000)
    } else if nanos.is_multiple_of(1_000_000) {
        format!("{}ms", nanos / 1_000_000)
    } else if nanos.is_multiple_of(1_000) {
        format!("{}us", nanos / 1_000)
    } else {
        format!("{nanos}ns")
    }
}

/// The YAML of one provider list item. `dash` is the column of its `-`, `content` the column of
/// its first key (what follows `- `).
pub fn render_provider(p: &Prov, dash: usize, content: usize) -> Zeroizing<String> {
    let d = " ".repeat(dash);
    let c = " ".repeat(content);
    let mut out = Zeroizing::new(String::new());
    let pad = content.saturating_sub(dash + 1).max(1);
    let lead = format!("{d}-{}", " ".repeat(pad));
    match p {
        Prov::Identity => out.push_str(&format!("{lead}identity: {{}}\n")),
        Prov::Keys { kind, keys } => {
            out.push_str(&format!("{lead}{}:\n{c}  keys:\n", kind.name()));
            for key in keys {
                out.push_str(&render_key(key, content + 4, content + 6));
            }
        }
        Prov::Kms(k) => {
            out.push_str(&format!("{lead}kms:\n"));
            out.push_str(&format!(
                "{c}  apiVersion: {}\n",
                if k.v2 { "v2" } else { "v1" }
            ));
            out.push_str(&format!("{c}  name: {}\n", scalar(&k.name)));
            out.push_str(&format!("{c}  endpoint: {}\n", scalar(&k.endpoint)));
            if let Some(size) = k.cachesize {
                out.push_str(&format!("{c}  cachesize: {size}\n"));
            }
            out.push_str(&format!("{c}  timeout: {}\n", go_duration(k.timeout)));
        }
    }
    out
}

/// The YAML of one `keys:` item.
pub fn render_key(key: &KeySpec, dash: usize, content: usize) -> Zeroizing<String> {
    let pad = content.saturating_sub(dash + 1).max(1);
    let secret = Zeroizing::new(B64.encode(key.secret.as_slice()));
    Zeroizing::new(format!(
        "{}-{}name: {}\n{}secret: {}\n",
        " ".repeat(dash),
        " ".repeat(pad),
        scalar(&key.name),
        " ".repeat(content),
        secret.as_str()
    ))
}

/// The whole file in the layout of kubernetes.io's examples (used when CURRENT is JSON or uses flow
/// style, which cannot be edited in place).
pub fn render(spec: &ConfigSpec) -> Zeroizing<String> {
    let mut out = Zeroizing::new(String::from(
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n",
    ));
    for entry in &spec.entries {
        out.push_str("  - resources:\n");
        for r in &entry.resources {
            out.push_str(&format!("      - {}\n", scalar(r)));
        }
        out.push_str("    providers:\n");
        for p in &entry.providers {
            out.push_str(&render_provider(p, 6, 8));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use atrest_core::config::{load_bytes, LoadOptions};

    #[test]
    fn scalars_read_back() {
        assert_eq!(scalar("key1"), "key1");
        assert_eq!(scalar("*.*"), "\"*.*\"");
        assert_eq!(scalar("yes"), "\"yes\"");
        assert_eq!(scalar("unix:///run/k.sock"), "\"unix:///run/k.sock\"");
        assert_eq!(go_duration(Duration::from_secs(3)), "3s");
        assert_eq!(go_duration(Duration::from_millis(1500)), "1500ms");
    }

    #[test]
    fn canonical_render_loads_to_the_same_model() {
        let yaml = b"apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources: [secrets, \"*.apps\"]\n    providers: [{aescbc: {keys: [{name: a, secret: MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MDE=}]}}, {kms: {apiVersion: v2, name: p, endpoint: 'unix:///tmp/p.sock', timeout: 2s}}, {identity: {}}]\n";
        let config = load_bytes(yaml, "in.yaml", &LoadOptions::default()).unwrap();
        let spec = ConfigSpec::from(&config);
        let text = render(&spec);
        let again = load_bytes(text.as_bytes(), "out.yaml", &LoadOptions::default()).unwrap();
        assert_eq!(ConfigSpec::from(&again), spec);
    }
}
