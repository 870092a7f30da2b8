//! What a config does, per entry (write provider and key, read order), and the warnings an expert
//! reviewer would give. Never includes key material: reused keys are found by constant-time
//! comparison and reported by location only.

use serde::Serialize;
use subtle::ConstantTimeEq as _;

use super::build_rules::maskings;
use super::gotext::quote;
use super::lint::{governing_entry, lint};
use super::{EncryptionConfiguration, Key, KmsApiVersion, LoadOptions, ProviderConfiguration};
use crate::resource::GroupResource;

#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    pub content_hash: String,
    pub entries: Vec<EntryExplanation>,
    /// Findings that span entries: reused key material, resources listed in several entries,
    /// resource names that are likely typos.
    pub warnings: Vec<Warning>,
}

#[derive(Debug, Clone, Serialize)]
pub struct EntryExplanation {
    /// Index in `resources`.
    pub index: usize,
    /// The resources this entry really governs: those it is the first entry to list.
    pub resources: Vec<String>,
    /// Resources listed here that an earlier entry governs (it writes them; this entry's
    /// providers only follow its providers on reads).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub shadowed: Vec<Shadowed>,
    /// Governed resources whose read order later entries extend (kube-apiserver concatenates the
    /// provider lists of every entry naming a resource).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub extended_reads: Vec<ExtendedRead>,
    /// What new and updated objects are written with.
    pub write: Step,
    /// Every provider/key a read may use, in the order kube-apiserver tries them.
    pub read_order: Vec<Step>,
    pub warnings: Vec<Warning>,
}

/// A resource an entry lists but does not govern.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Shadowed {
    pub resource: String,
    /// The entry that governs (writes) it.
    pub written_by: usize,
}

/// The full read order of a resource that later entries list too.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ExtendedRead {
    pub resource: String,
    /// The later entries whose providers are appended.
    pub from_entries: Vec<usize>,
    pub read_order: Vec<Step>,
}

/// One provider (and key, for keyed providers) with the prefix it puts on stored values.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Step {
    /// `identity`, `aescbc`, `aesgcm`, `secretbox`, `kms v1`, `kms v2`.
    pub provider: String,
    /// Key name (local providers) or KMS provider name.
    pub name: Option<String>,
    /// Stored-value prefix, e.g. `k8s:enc:aesgcm:v1:key1:`; none for identity.
    pub prefix: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Warning {
    /// Stable identifier for scripts (`aescbc`, `no-identity`, ...).
    pub code: &'static str,
    pub message: String,
}

impl Warning {
    pub(crate) fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

pub fn explain(config: &EncryptionConfiguration, opts: &LoadOptions) -> Explanation {
    let masked = maskings(config);
    let entries = config
        .resources
        .iter()
        .enumerate()
        .map(|(index, entry)| {
            let read_order: Vec<Step> = entry.providers.iter().flat_map(steps).collect();
            let write = read_order.first().cloned().unwrap_or_else(identity_step);
            let mut resources: Vec<String> = Vec::new();
            let mut shadowed = Vec::new();
            let mut extended_reads = Vec::new();
            for name in &entry.resources {
                match governing_entry(config, name) {
                    Some(first) if first < index => shadowed.push(Shadowed {
                        resource: name.clone(),
                        written_by: first,
                    }),
                    _ if resources.contains(name) => {}
                    _ => {
                        resources.push(name.clone());
                        let gr = GroupResource::parse(name);
                        let later: Vec<usize> = config.resources[index + 1..]
                            .iter()
                            .enumerate()
                            .filter(|(_, e)| e.resources.iter().any(|r| GroupResource::parse(r) == gr))
                            .map(|(k, _)| index + 1 + k)
                            .collect();
                        if !later.is_empty() {
                            let mut order = read_order.clone();
                            for &k in &later {
                                order.extend(config.resources[k].providers.iter().flat_map(steps));
                            }
                            extended_reads.push(ExtendedRead {
                                resource: name.clone(),
                                from_entries: later,
                                read_order: order,
                            });
                        }
                    }
                }
            }
            // Identity anywhere in a governed resource's (possibly extended) read order counts.
            let has_identity = |order: &[Step]| order.iter().any(|s| s.provider == "identity");
            // Governed resources that cannot read plaintext (no identity in their read order).
            let without_identity: Vec<String> = if has_identity(&read_order) {
                Vec::new()
            } else {
                resources
                    .iter()
                    .filter(|r| {
                        !extended_reads
                            .iter()
                            .any(|x| &x.resource == *r && has_identity(&x.read_order))
                    })
                    .cloned()
                    .collect()
            };
            let identity = if without_identity.is_empty() {
                IdentityRead::All
            } else if without_identity.len() == resources.len() {
                IdentityRead::None
            } else {
                IdentityRead::NotFor(without_identity)
            };
            // An entry that governs nothing has no behaviour to warn about.
            let mut warnings = if resources.is_empty() {
                Vec::new()
            } else {
                provider_warnings(&entry.providers, &identity, opts)
            };
            for m in masked.iter().filter(|m| m.entry == index) {
                warnings.push(Warning::new(
                    "masked",
                    format!(
                        "resource {} is masked by earlier rule {}: kube-apiserver refuses this file. Put specific entries before wildcards.",
                        quote(&m.resource),
                        quote(&m.wildcard)
                    ),
                ));
            }
            EntryExplanation { index, resources, shadowed, extended_reads, write, read_order, warnings }
        })
        .collect();
    let mut warnings = reused_keys(config);
    warnings.extend(lint(config));
    Explanation {
        content_hash: config.content_hash.clone(),
        entries,
        warnings,
    }
}

fn identity_step() -> Step {
    Step {
        provider: "identity".to_owned(),
        name: None,
        prefix: None,
    }
}

fn steps(p: &ProviderConfiguration) -> Vec<Step> {
    let keyed = |kind: &str, keys: &[Key]| -> Vec<Step> {
        keys.iter()
            .map(|k| Step {
                provider: kind.to_owned(),
                name: Some(k.name.clone()),
                prefix: Some(format!("k8s:enc:{kind}:v1:{}:", k.name)),
            })
            .collect()
    };
    match p {
        ProviderConfiguration::Identity => vec![identity_step()],
        ProviderConfiguration::AesCbc(k) => keyed("aescbc", &k.keys),
        ProviderConfiguration::AesGcm(k) => keyed("aesgcm", &k.keys),
        ProviderConfiguration::Secretbox(k) => keyed("secretbox", &k.keys),
        ProviderConfiguration::Kms(k) => {
            let version = if k.api_version == KmsApiVersion::V2 {
                "v2"
            } else {
                "v1"
            };
            vec![Step {
                provider: format!("kms {version}"),
                name: Some(k.name.clone()),
                prefix: Some(format!("k8s:enc:kms:{version}:{}:", k.name)),
            }]
        }
    }
}

/// What a FIPS build of atrest does with a secretbox provider (it reads but never writes it).
pub fn fips_secretbox_message(writes: bool) -> &'static str {
    if writes {
        "this is a FIPS build of atrest: secretbox (XSalsa20-Poly1305) is not FIPS-approved, so atrest refuses to write with it (encrypt and rewrite fail) while it still reads secretbox values. kube-apiserver is not affected. Make aesgcm or kms v2 the first provider and run `atrest rewrite` to migrate."
    } else {
        "this is a FIPS build of atrest: secretbox is not FIPS-approved and is used for reading only; remove it once `atrest rewrite` has re-encrypted its data."
    }
}

/// Whether the governed resources read plaintext (identity in their, possibly extended, read order).
enum IdentityRead {
    All,
    None,
    /// Only these resources lack identity.
    NotFor(Vec<String>),
}

fn provider_warnings(
    providers: &[ProviderConfiguration],
    identity: &IdentityRead,
    opts: &LoadOptions,
) -> Vec<Warning> {
    let mut out = Vec::new();
    let first = providers.first();
    if matches!(first, Some(ProviderConfiguration::Identity)) {
        let tail = if providers.len() > 1 {
            " Fine while decrypting back to plaintext; otherwise move identity last."
        } else {
            ""
        };
        out.push(Warning::new(
            "identity-writes",
            format!("identity is first: nothing is encrypted, new writes are plaintext.{tail}"),
        ));
    } else if matches!(identity, IdentityRead::All) {
        out.push(Warning::new(
            "identity-reads",
            "identity is listed: plaintext values are still accepted on read. Remove it once `atrest status` \
             shows every object encrypted.",
        ));
    } else {
        out.push(Warning::new(
            "no-identity",
            format!(
                "identity is not listed{}, so objects still stored in plaintext cannot be read. That matters while \
                 existing data is being migrated to encryption: keep `- identity: {{}}` last until `atrest status` shows \
                 no plaintext objects, then remove it.",
                match identity {
                    IdentityRead::NotFor(list) => format!(" for {}", list.join(", ")),
                    _ => String::new(),
                }
            ),
        ));
    }
    for (j, p) in providers.iter().enumerate() {
        let writes = j == 0;
        match p {
            ProviderConfiguration::AesCbc(k) => {
                let message = if writes {
                    "aescbc writes: CBC without authentication is open to padding-oracle attacks and upstream rates it weak. Prefer kms v2 (or secretbox)."
                } else {
                    "aescbc is kept for reading only: remove it once `atrest rewrite` has re-encrypted its data."
                };
                out.push(Warning::new("aescbc", message));
                key_name_warnings("aescbc", &k.keys, &mut out);
            }
            ProviderConfiguration::AesGcm(k) => {
                if writes {
                    out.push(Warning::new(
                        "aesgcm-rotation",
                        "aesgcm uses random nonces: rotate the write key before about 200,000 writes (upstream advice), and automate rotation.",
                    ));
                }
                key_name_warnings("aesgcm", &k.keys, &mut out);
            }
            ProviderConfiguration::Secretbox(k) => {
                if crate::fips::FIPS_BUILD {
                    out.push(Warning::new(
                        "fips-secretbox",
                        fips_secretbox_message(writes),
                    ));
                }
                key_name_warnings("secretbox", &k.keys, &mut out)
            }
            ProviderConfiguration::Kms(k) if k.api_version == KmsApiVersion::V1 => {
                let gate = if opts.kms_v1_enabled {
                    ""
                } else {
                    " Without --feature-gates=KMSv1=true the file does not load."
                };
                out.push(Warning::new(
                    "kms-v1",
                    format!("kms {} has no `apiVersion: v2`: KMS v1 is deprecated.{gate} Migrate to apiVersion: v2.", quote(&k.name)),
                ));
                if k.name.contains(':') {
                    out.push(colon_warning(
                        "kms v1 name",
                        &k.name,
                        &format!("k8s:enc:kms:v1:{}:", k.name),
                    ));
                }
            }
            ProviderConfiguration::Kms(_) | ProviderConfiguration::Identity => {}
        }
    }
    out
}

fn key_name_warnings(kind: &str, keys: &[Key], out: &mut Vec<Warning>) {
    for (i, key) in keys.iter().enumerate() {
        if keys[..i].iter().any(|earlier| earlier.name == key.name) {
            out.push(Warning::new(
                "duplicate-key-name",
                format!(
                    "{kind} key name {} appears more than once: reads try each such key, only the first writes. Give every key its own name.",
                    quote(&key.name)
                ),
            ));
        }
        if key.name.contains(':') {
            out.push(colon_warning(
                &format!("{kind} key name"),
                &key.name,
                &format!("k8s:enc:{kind}:v1:{}:", key.name),
            ));
        }
    }
}

fn colon_warning(what: &str, name: &str, prefix: &str) -> Warning {
    Warning::new(
        "name-with-colon",
        format!("{what} {} contains ':': its prefix {prefix} also matches names cut at the ':'. Avoid ':' in names.", quote(name)),
    )
}

/// Where a key lives, for messages: `resources[0].providers[1].aescbc key "k1"`.
struct KeyPlace<'a> {
    entry: usize,
    provider: usize,
    kind: &'static str,
    key: &'a Key,
}

impl KeyPlace<'_> {
    fn describe(&self) -> String {
        format!(
            "resources[{}].providers[{}].{} key {}",
            self.entry,
            self.provider,
            self.kind,
            quote(&self.key.name)
        )
    }
}

/// The same secret under a different provider type or a different name. Using one key for the
/// same provider and name in several entries is ordinary and not reported.
fn reused_keys(config: &EncryptionConfiguration) -> Vec<Warning> {
    let mut places: Vec<KeyPlace<'_>> = Vec::new();
    for (entry, r) in config.resources.iter().enumerate() {
        for (provider, p) in r.providers.iter().enumerate() {
            let (kind, keys) = match p {
                ProviderConfiguration::AesCbc(k) => ("aescbc", &k.keys),
                ProviderConfiguration::AesGcm(k) => ("aesgcm", &k.keys),
                ProviderConfiguration::Secretbox(k) => ("secretbox", &k.keys),
                _ => continue,
            };
            places.extend(keys.iter().map(|key| KeyPlace {
                entry,
                provider,
                kind,
                key,
            }));
        }
    }
    let mut out = Vec::new();
    for (i, a) in places.iter().enumerate() {
        for b in &places[i + 1..] {
            let same_role = a.kind == b.kind && a.key.name == b.key.name;
            let same_bytes = a.key.secret.len() == b.key.secret.len()
                && bool::from(a.key.secret.ct_eq(&b.key.secret));
            if same_bytes && !same_role {
                out.push(Warning::new(
                    "reused-key",
                    format!(
                        "{} and {} use the same key material. Generate a separate key for each (`atrest keygen`).",
                        a.describe(),
                        b.describe()
                    ),
                ));
            }
        }
    }
    out
}
