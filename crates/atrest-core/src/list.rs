//! A resource's transformer: its ordered provider list (WIRE-FORMAT.md §2–§3), or the stand-alone
//! identity transformer for resources no config entry covers.

use std::sync::Arc;

use crate::prefix;
use crate::providers::{identity, KeyRef, Provider};
use crate::transformer::{
    Identified, KmsOutage, ProviderInfo, ProviderKind, ReadOutcome, ResourceTransform,
    TransformError,
};

const NO_MATCHING_PREFIX: &str = "no matching prefix found";

fn info(kind: ProviderKind, provider_index: usize, key: KeyRef) -> ProviderInfo {
    ProviderInfo {
        kind,
        provider_index,
        key_name: key.key_name,
        key_index: key.key_index,
        key_id: key.key_id,
    }
}

/// The providers of one resource, concatenated in config order; `[0]` writes.
pub(crate) struct ProviderList {
    providers: Vec<Arc<dyn Provider>>,
}

impl ProviderList {
    pub(crate) fn new(providers: Vec<Arc<dyn Provider>>) -> Self {
        Self { providers }
    }
}

impl ResourceTransform for ProviderList {
    fn read(&self, stored: &[u8], aad: &[u8]) -> Result<ReadOutcome, TransformError> {
        let (index, body) =
            prefix::read_first(&self.providers, stored, NO_MATCHING_PREFIX, |p, rest| {
                p.read(rest, aad).map(|read| (p.kind(), read))
            })?;
        let (kind, read) = body;
        Ok(ReadOutcome {
            plaintext: read.plaintext,
            stale: read.stale || index != 0,
            provider: info(kind, index, read.key),
        })
    }

    fn write(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, TransformError> {
        let provider = self
            .providers
            .first()
            .ok_or_else(|| TransformError::msg(NO_MATCHING_PREFIX))?;
        // One buffer for the whole value; 192 bytes cover any prefix, key name, IV/nonce, tag,
        // padding and KMS header in practice (more is reserved on demand).
        let mut out = Vec::with_capacity(provider.prefix().len() + plaintext.len() + 192);
        out.extend_from_slice(provider.prefix());
        provider.write(plaintext, aad, &mut out)?;
        Ok(out)
    }

    fn write_provider(&self) -> ProviderInfo {
        match self.providers.first() {
            Some(p) => info(p.kind(), 0, p.write_key()),
            None => info(ProviderKind::Identity, 0, KeyRef::default()),
        }
    }

    fn verify_write(
        &self,
        written: &[u8],
        plaintext: &[u8],
        aad: &[u8],
    ) -> Result<(), TransformError> {
        let fail = |what: String| {
            TransformError::msg(format!("{}: {what}", self.describe_write_provider()))
        };
        let provider = self
            .providers
            .first()
            .ok_or_else(|| TransformError::msg(NO_MATCHING_PREFIX))?;
        let body = written.strip_prefix(provider.prefix()).ok_or_else(|| {
            fail("the value just written lacks the write provider's prefix".into())
        })?;
        let read = provider
            .read_uncached(body, aad)
            .map_err(|e| fail(format!("the value just written cannot be read back: {e}")))?;
        if read.plaintext != plaintext {
            return Err(fail(
                "the value just written reads back to another plaintext".into(),
            ));
        }
        if read.stale {
            return Err(fail(
                "the value just written reads back as stale (the plugin's key ID changed?)".into(),
            ));
        }
        Ok(())
    }

    fn write_state_id(&self, written: &[u8]) -> Vec<u8> {
        match self.providers.first() {
            Some(p) => {
                let mut id = p.prefix().to_vec();
                if let Some(body) = written.strip_prefix(p.prefix()) {
                    id.push(0);
                    // Local providers: the key name (up to its `:`); KMS v2: the seed's id.
                    let state = p.write_state_id(body);
                    if state.is_empty() {
                        id.extend(body.iter().take_while(|&&b| b != b':'));
                    } else {
                        id.extend_from_slice(&state);
                    }
                }
                id
            }
            None => Vec::new(),
        }
    }

    fn describe_write_provider(&self) -> String {
        let Some(p) = self.providers.first() else {
            return "identity".into();
        };
        let key = p.write_key();
        let mut text = match (p.kind(), &key.key_name) {
            (ProviderKind::KmsV1 | ProviderKind::KmsV2, Some(name)) => {
                format!("{} provider {name:?}", p.kind())
            }
            (kind, Some(name)) => format!("{kind} key {name:?}"),
            (kind, None) => kind.to_string(),
        };
        if let Some(endpoint) = p.endpoint() {
            text.push_str(&format!(" at {endpoint}"));
        }
        text
    }

    fn identify(&self, stored: &[u8]) -> Result<Option<Identified>, TransformError> {
        // The first provider whose prefix matches and that does not refuse the body outright.
        for (index, p) in self.providers.iter().enumerate() {
            let Some(body) = stored.strip_prefix(p.prefix()) else {
                continue;
            };
            if let Some((key, inner_stale)) = p.identify(body)? {
                return Ok(Some(Identified {
                    provider: info(p.kind(), index, key),
                    stale: inner_stale || index != 0,
                }));
            }
        }
        Ok(None)
    }

    fn check_kms(&self) -> Result<(), KmsOutage> {
        self.providers.iter().try_for_each(|p| p.check_kms())
    }
}

/// kube-apiserver's transformer for uncovered resources: identity *without* a prefix list, so
/// encrypted data fails with identity's own error rather than `no matching prefix found`.
pub(crate) struct StandaloneIdentity;

impl ResourceTransform for StandaloneIdentity {
    fn read(&self, stored: &[u8], _aad: &[u8]) -> Result<ReadOutcome, TransformError> {
        Ok(ReadOutcome {
            plaintext: identity::read(stored)?,
            stale: false,
            provider: info(ProviderKind::Identity, 0, KeyRef::default()),
        })
    }
    fn write(&self, plaintext: &[u8], _aad: &[u8]) -> Result<Vec<u8>, TransformError> {
        Ok(plaintext.to_vec())
    }
    fn write_provider(&self) -> ProviderInfo {
        info(ProviderKind::Identity, 0, KeyRef::default())
    }
    fn identify(&self, stored: &[u8]) -> Result<Option<Identified>, TransformError> {
        Ok(
            (!stored.starts_with(crate::providers::ENCRYPTED_MARKER)).then(|| Identified {
                provider: self.write_provider(),
                stale: false,
            }),
        )
    }

    fn check_kms(&self) -> Result<(), KmsOutage> {
        Ok(())
    }
}
