//! Transformer-building rules kube-apiserver applies after validation (CONFIG.md §3.6): for each
//! entry in order, its providers are set up first (L2: the KMSv1 gate), then its resources are
//! registered, and a resource already covered by an earlier `*.<group>` or `*.*` is refused (L1).

use std::collections::{HashMap, HashSet};

use super::error::Problem;
use super::gotext::quote;
use super::{EncryptionConfiguration, KmsApiVersion, LoadOptions, ProviderConfiguration};
use crate::resource::GroupResource;

pub(crate) const KMS_V1_DISABLED: &str = "KMSv1 is deprecated and will only receive security updates going forward. Use KMSv2 instead.  Set --feature-gates=KMSv1=true to use the deprecated KMSv1 feature.";

/// A resource string that an earlier wildcard already covers (what L1 refuses).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Masking {
    /// Index of the entry in `resources`.
    pub entry: usize,
    /// Index of the string in that entry's `resources`.
    pub position: usize,
    /// The masked resource as kube-apiserver prints it (`secrets`, `*.`, `deployments.apps`).
    pub resource: String,
    /// The earlier wildcard that covers it (`*.`, `*.apps`, `*.*`).
    pub wildcard: String,
}

/// Every masked resource string, in file order (kube-apiserver stops at the first).
pub fn maskings(config: &EncryptionConfiguration) -> Vec<Masking> {
    let mut registered: HashSet<GroupResource> = HashSet::new();
    let any = GroupResource::new("*", "*");
    let mut found = Vec::new();
    for (entry, resources) in config.resources.iter().map(|r| &r.resources).enumerate() {
        for (position, resource) in resources.iter().enumerate() {
            let gr = GroupResource::parse(resource);
            let group_wildcard = GroupResource::new(gr.group.clone(), "*");
            if let Some(wildcard) = [group_wildcard, any.clone()]
                .into_iter()
                .find(|w| registered.contains(w))
            {
                found.push(Masking {
                    entry,
                    position,
                    resource: gr.to_string(),
                    wildcard: wildcard.to_string(),
                });
            }
            registered.insert(gr);
        }
    }
    found
}

pub(crate) fn check(
    config: &EncryptionConfiguration,
    opts: &LoadOptions,
    lines: &HashMap<String, usize>,
) -> Result<(), Problem> {
    let first_masking = maskings(config).into_iter().next();
    for (i, entry) in config.resources.iter().enumerate() {
        for (j, provider) in entry.providers.iter().enumerate() {
            if let ProviderConfiguration::Kms(kms) = provider {
                if kms.api_version == KmsApiVersion::V1 && !opts.kms_v1_enabled {
                    let field = format!("resources[{i}].providers[{j}].kms");
                    return Err(located(KMS_V1_DISABLED.to_owned(), field, lines));
                }
            }
        }
        if let Some(m) = first_masking.as_ref().filter(|m| m.entry == i) {
            let message = format!(
                "resource {} is masked by earlier rule {}",
                quote(&m.resource),
                quote(&m.wildcard)
            );
            return Err(located(
                message,
                format!("resources[{i}].resources[{}]", m.position),
                lines,
            ));
        }
    }
    Ok(())
}

fn located(message: String, field: String, lines: &HashMap<String, usize>) -> Problem {
    let line = lines.get(&field).copied();
    Problem {
        message,
        field: Some(field),
        line,
    }
}
