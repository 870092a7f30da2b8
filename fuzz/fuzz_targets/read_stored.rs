//! Arbitrary stored bytes through a provider list holding every provider (local ones, both KMS
//! versions with the in-process reference plugin, identity): reading and classifying must never
//! panic, whatever etcd holds.
#![no_main]

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use atrest_core::config::{
    EncryptionConfiguration, Key, KeysConfiguration, KmsApiVersion, KmsConfiguration,
    ProviderConfiguration, ResourceConfiguration,
};
use atrest_core::kms::testing::{InProcessConnector, ReferenceKms};
use atrest_core::{GroupResource, ResourceTransformer, Transformers};
use libfuzzer_sys::fuzz_target;

fn keys(list: &[(&str, u8, usize)]) -> KeysConfiguration {
    KeysConfiguration {
        keys: list
            .iter()
            .map(|(name, fill, len)| Key {
                name: (*name).into(),
                secret: zeroize::Zeroizing::new(vec![*fill; *len]),
            })
            .collect(),
    }
}

fn kms(version: KmsApiVersion, name: &str) -> ProviderConfiguration {
    ProviderConfiguration::Kms(KmsConfiguration {
        api_version: version,
        name: name.into(),
        endpoint: "unix:///fuzz".into(),
        cachesize: (version == KmsApiVersion::V1).then_some(10),
        timeout: Duration::from_secs(1),
    })
}

fn transformer() -> &'static ResourceTransformer {
    static T: OnceLock<ResourceTransformer> = OnceLock::new();
    T.get_or_init(|| {
        let config = EncryptionConfiguration {
            resources: vec![ResourceConfiguration {
                resources: vec!["secrets".into()],
                providers: vec![
                    ProviderConfiguration::AesCbc(keys(&[("a", 1, 32), ("b", 2, 16)])),
                    ProviderConfiguration::AesGcm(keys(&[("a", 3, 24), ("a:b", 4, 32)])),
                    ProviderConfiguration::Secretbox(keys(&[("s", 5, 32)])),
                    kms(KmsApiVersion::V1, "one"),
                    kms(KmsApiVersion::V2, "two"),
                    ProviderConfiguration::Identity,
                ],
            }],
            content_hash: String::new(),
        };
        let connector = Arc::new(InProcessConnector::new(Arc::new(ReferenceKms::new(
            "fuzz-key", [9; 32],
        ))));
        Transformers::build(&config, connector)
            .expect("fuzz config builds")
            .for_resource(&GroupResource::parse("secrets"))
    })
}

fuzz_target!(|data: &[u8]| {
    let t = transformer();
    let _ = t.read(data, b"/registry/secrets/default/fuzz");
    let _ = t.identify(data);
});
