//! Transformer-building rules kube-apiserver applies after validation (CONFIG.md §3.6): for each
//! entry in order, its providers are set up first (L2: the KMSv1 gate), then its resources are
//! registered, and a resource already covered by an earlier `*.<group>` or `*.*` is refused (L1).

use std::collections::{HashMap, HashSet};

use super::error::Problem;
use super::gotext::quote;
use super::{EncryptionConfiguration, KmsApiVersion, LoadOptions, ProviderConfiguration};
use crate::resource::GroupResource;

pub(crate) const KMS_V1_DISABLED: &str = "KMSv1 is deprecated and will only receive security updates going forward. Use KMSv2 instead.  Set --feature-gates=KMSv1=true to use the deprecated KMSv1 feature.";

pub(crate) fn check(config: &EncryptionConfiguration, opts: &LoadOptions, lines: &HashMap<String, usize>) -> Result<(), Problem> {
    let mut registered: HashSet<GroupResource> = HashSet::new();
    let any = GroupResource::new("*", "*");
    for (i, entry) in config.resources.iter().enumerate() {
        for (j, provider) in entry.providers.iter().enumerate() {
            if let ProviderConfiguration::Kms(kms) = provider {
                if kms.api_version == KmsApiVersion::V1 && !opts.kms_v1_enabled {
                    let field = format!("resources[{i}].providers[{j}].kms");
                    return Err(located(KMS_V1_DISABLED.to_owned(), field, lines));
                }
            }
        }
        for (j, resource) in entry.resources.iter().enumerate() {
            let gr = GroupResource::parse(resource);
            let group_wildcard = GroupResource::new(gr.group.clone(), "*");
            let masked_by = [group_wildcard, any.clone()].into_iter().find(|w| registered.contains(w));
            if let Some(wildcard) = masked_by {
                let message = format!(
                    "resource {} is masked by earlier rule {}",
                    quote(&gr.to_string()),
                    quote(&wildcard.to_string())
                );
                return Err(located(message, format!("resources[{i}].resources[{j}]"), lines));
            }
            registered.insert(gr);
        }
    }
    Ok(())
}

fn located(message: String, field: String, lines: &HashMap<String, usize>) -> Problem {
    let line = lines.get(&field).copied();
    Problem { message, field: Some(field), line }
}
