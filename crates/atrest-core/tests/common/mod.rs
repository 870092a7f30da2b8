//! Configs built in code (no loader), shared by the integration tests.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use atrest_core::config::{
    EncryptionConfiguration, Key, KeysConfiguration, KmsApiVersion, KmsConfiguration,
    ProviderConfiguration, ResourceConfiguration,
};
use atrest_core::kms::testing::{InProcessConnector, ReferenceKms};
use atrest_core::Transformers;
use zeroize::Zeroizing;

pub fn key(name: &str, secret: &[u8]) -> Key {
    Key {
        name: name.into(),
        secret: Zeroizing::new(secret.to_vec()),
    }
}

pub fn keys(list: &[(&str, &[u8])]) -> KeysConfiguration {
    KeysConfiguration {
        keys: list.iter().map(|(n, s)| key(n, s)).collect(),
    }
}

pub fn aescbc(list: &[(&str, &[u8])]) -> ProviderConfiguration {
    ProviderConfiguration::AesCbc(keys(list))
}
pub fn aesgcm(list: &[(&str, &[u8])]) -> ProviderConfiguration {
    ProviderConfiguration::AesGcm(keys(list))
}
pub fn secretbox(list: &[(&str, &[u8])]) -> ProviderConfiguration {
    ProviderConfiguration::Secretbox(keys(list))
}
pub fn kms(version: KmsApiVersion, name: &str) -> ProviderConfiguration {
    ProviderConfiguration::Kms(KmsConfiguration {
        api_version: version,
        name: name.into(),
        endpoint: format!("unix:///run/kms/{name}.sock"),
        cachesize: (version == KmsApiVersion::V1).then_some(1000),
        timeout: Duration::from_secs(3),
    })
}

pub fn config(entries: Vec<(Vec<&str>, Vec<ProviderConfiguration>)>) -> EncryptionConfiguration {
    EncryptionConfiguration {
        resources: entries
            .into_iter()
            .map(|(resources, providers)| ResourceConfiguration {
                resources: resources.into_iter().map(String::from).collect(),
                providers,
            })
            .collect(),
        content_hash: String::new(),
    }
}

pub fn build(config: &EncryptionConfiguration) -> Transformers {
    let kms = Arc::new(ReferenceKms::generate("key-1"));
    Transformers::build(config, Arc::new(InProcessConnector::new(kms))).unwrap()
}
