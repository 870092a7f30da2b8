//! Building every resource's transformer from a loaded config, the way kube-apiserver's
//! `getTransformerOverrides` does: one provider instance per `resources[]` entry and provider
//! (shared by all resources of that entry, so a KMS v2 provider has one write state), and per
//! resource the concatenation of its entries' lists. OWNER: core-providers helper.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::config::{
    ConfigError, EncryptionConfiguration, KeysConfiguration, KmsApiVersion, KmsConfiguration,
    ProviderConfiguration,
};
use crate::kms::KmsConnector;
use crate::list::{ProviderList, StandaloneIdentity};
use crate::providers::aescbc::CbcKey;
use crate::providers::aesgcm::GcmKey;
use crate::providers::identity::Identity;
use crate::providers::keys::{KeyedProvider, LocalCipher};
use crate::providers::kmsv1::KmsV1Provider;
use crate::providers::kmsv2::{KmsV2Options, KmsV2Provider};
use crate::providers::secretbox::SecretboxKey;
use crate::providers::{Provider, AESCBC_PREFIX, AESGCM_PREFIX, SECRETBOX_PREFIX};
use crate::resource::GroupResource;
use crate::transformer::{
    KmsOutage, ProviderKind, ResourceTransformer, TransformError, TransformerLookup, Transformers,
};

/// Knobs for [`Transformers::build_with`]; the default is kube-apiserver 1.36.
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    pub kms_v2: KmsV2Options,
}

impl Transformers {
    /// Builds the transformers kube-apiserver would build from `config` (already loaded and checked
    /// by [`crate::config::load_file`]). KMS providers connect through `kms`; no plugin call is
    /// made here (KMS v2 state is established on first use, see `providers::kmsv2`).
    pub fn build(
        config: &EncryptionConfiguration,
        kms: Arc<dyn KmsConnector>,
    ) -> Result<Transformers, ConfigError> {
        Self::build_with(config, kms, &BuildOptions::default())
    }

    /// [`build`](Self::build) with explicit options.
    pub fn build_with(
        config: &EncryptionConfiguration,
        kms: Arc<dyn KmsConnector>,
        options: &BuildOptions,
    ) -> Result<Transformers, ConfigError> {
        let config = Arc::new(config.clone());
        let mut instances = Vec::new();
        for entry in &config.resources {
            for provider in &entry.providers {
                let built = build_provider(provider, kms.as_ref(), options)?;
                instances.push((provider as *const ProviderConfiguration as usize, built));
            }
        }
        Ok(Transformers {
            inner: Arc::new(Lookup {
                config,
                instances,
                memo: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The transformers of a process without `--encryption-provider-config`: identity everywhere.
    pub fn identity() -> Transformers {
        let config = Arc::new(EncryptionConfiguration {
            resources: Vec::new(),
            content_hash: String::new(),
        });
        Transformers {
            inner: Arc::new(Lookup {
                config,
                instances: Vec::new(),
                memo: Mutex::new(HashMap::new()),
            }),
        }
    }
}

/// Resource lookup through the config's own matcher (`providers_for`), mapped back to the built
/// instances by the address of the provider entry inside our private copy of the config.
struct Lookup {
    config: Arc<EncryptionConfiguration>,
    instances: Vec<(usize, Arc<dyn Provider>)>,
    memo: Mutex<HashMap<GroupResource, ResourceTransformer>>,
}

impl TransformerLookup for Lookup {
    fn for_resource(&self, gr: &GroupResource) -> ResourceTransformer {
        if let Some(hit) = self.memo.lock().ok().and_then(|m| m.get(gr).cloned()) {
            return hit;
        }
        let built = match self.config.providers_for(gr) {
            Some(list) => {
                let providers = list
                    .into_iter()
                    .filter_map(|p| {
                        let address = p as *const ProviderConfiguration as usize;
                        self.instances
                            .iter()
                            .find(|(a, _)| *a == address)
                            .map(|(_, inst)| Arc::clone(inst))
                    })
                    .collect();
                ResourceTransformer {
                    inner: Arc::new(ProviderList::new(providers)),
                }
            }
            None => ResourceTransformer {
                inner: Arc::new(StandaloneIdentity),
            },
        };
        if let Ok(mut memo) = self.memo.lock() {
            memo.insert(gr.clone(), built.clone());
        }
        built
    }

    fn covers(&self, gr: &GroupResource) -> bool {
        self.config.providers_for(gr).is_some()
    }

    fn check_kms(&self) -> Result<(), KmsOutage> {
        self.instances.iter().try_for_each(|(_, p)| p.check_kms())
    }

    fn names_exactly(&self, gr: &GroupResource) -> bool {
        self.config.names_exactly(gr)
    }
}

fn build_err(err: TransformError) -> ConfigError {
    ConfigError::Build(err.to_string())
}

fn keyed<C: LocalCipher + 'static>(
    kind: ProviderKind,
    prefix: &'static str,
    no_match: &'static str,
    keys: &KeysConfiguration,
    make: impl Fn(&[u8]) -> Result<C, TransformError>,
) -> Result<Arc<dyn Provider>, ConfigError> {
    let keys = keys
        .keys
        .iter()
        .map(|k| {
            make(&k.secret)
                .map(|cipher| (k.name.clone(), cipher))
                .map_err(|e| {
                    build_err(TransformError::msg(format!(
                        "error while creating cipher for named key {}: {e}",
                        k.name
                    )))
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Arc::new(KeyedProvider::new(kind, prefix, no_match, keys)))
}

const AES_NO_MATCH: &str = "no matching key was found for the provided AES transformer";
const SECRETBOX_NO_MATCH: &str = "no matching key was found for the provided Secretbox transformer";

fn build_provider(
    p: &ProviderConfiguration,
    kms: &dyn KmsConnector,
    options: &BuildOptions,
) -> Result<Arc<dyn Provider>, ConfigError> {
    match p {
        ProviderConfiguration::Identity => Ok(Arc::new(Identity)),
        ProviderConfiguration::AesGcm(keys) => keyed(
            ProviderKind::AesGcm,
            AESGCM_PREFIX,
            AES_NO_MATCH,
            keys,
            GcmKey::new,
        ),
        ProviderConfiguration::AesCbc(keys) => keyed(
            ProviderKind::AesCbc,
            AESCBC_PREFIX,
            AES_NO_MATCH,
            keys,
            CbcKey::new,
        ),
        ProviderConfiguration::Secretbox(keys) => keyed(
            ProviderKind::Secretbox,
            SECRETBOX_PREFIX,
            SECRETBOX_NO_MATCH,
            keys,
            SecretboxKey::new,
        ),
        ProviderConfiguration::Kms(k) => build_kms(k, kms, options),
    }
}

fn build_kms(
    k: &KmsConfiguration,
    kms: &dyn KmsConnector,
    options: &BuildOptions,
) -> Result<Arc<dyn Provider>, ConfigError> {
    let probe_err = |version: &str, err: crate::kms::KmsError| {
        ConfigError::Build(format!(
            "could not configure KMS{version}-Plugin's probe {:?}, error: {err}",
            k.name
        ))
    };
    match k.api_version {
        KmsApiVersion::V1 => {
            let service = kms
                .connect_v1(&k.name, &k.endpoint, k.timeout)
                .map_err(|e| probe_err("v1", e))?;
            Ok(Arc::new(KmsV1Provider::new(
                &k.name,
                &k.endpoint,
                k.cachesize,
                service,
            )))
        }
        KmsApiVersion::V2 => {
            let service = kms
                .connect_v2(&k.name, &k.endpoint, k.timeout)
                .map_err(|e| probe_err("v2", e))?;
            Ok(Arc::new(KmsV2Provider::new(
                &k.name,
                &k.endpoint,
                service,
                &options.kms_v2,
            )))
        }
    }
}
