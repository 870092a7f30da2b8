//! Defaulting (CONFIG.md §2.2), applied after decoding and before validation, as kube-apiserver's
//! decoder does.

use super::raw::RawConfig;

/// `kms.timeout` when absent: 3s.
pub(crate) const DEFAULT_KMS_TIMEOUT_NANOS: i64 = 3_000_000_000;
/// `kms.cachesize` for v1 when absent.
pub(crate) const DEFAULT_KMS_V1_CACHE_SIZE: i32 = 1000;

pub(crate) fn apply(config: &mut RawConfig) {
    let all_kms = config
        .resources
        .iter_mut()
        .flat_map(|r| r.providers.iter_mut())
        .filter_map(|p| p.kms.as_mut());
    for kms in all_kms {
        if kms.timeout.is_none() {
            kms.timeout = Some(DEFAULT_KMS_TIMEOUT_NANOS);
        }
        if kms.api_version.is_empty() {
            kms.api_version = "v1".to_owned();
        }
        // The cache only exists for v1; v2 keeps it absent so that V26 can flag a written one.
        if kms.cachesize.is_none() && kms.api_version == "v1" {
            kms.cachesize = Some(DEFAULT_KMS_V1_CACHE_SIZE);
        }
    }
}
