//! The second prefix level of the local-key providers: a provider's named keys, each behind the
//! prefix `<name>:`, tried with the same algorithm as the provider list ([`crate::prefix`]).

use super::{BodyRead, KeyRef, Provider};
use crate::prefix::{self, Prefixed};
use crate::transformer::{ProviderKind, TransformError};

/// A single-key cipher: the body format of aescbc, aesgcm or secretbox.
pub(crate) trait LocalCipher: Send + Sync {
    fn open(&self, body: &[u8], aad: &[u8]) -> Result<Vec<u8>, TransformError>;
    /// Appends the body for `plaintext` to `out`.
    fn seal_into(
        &self,
        out: &mut Vec<u8>,
        plaintext: &[u8],
        aad: &[u8],
    ) -> Result<(), TransformError>;
}

struct NamedKey<C> {
    name: String,
    /// `<name>:` (names are used verbatim, they may contain `:`).
    prefix: Vec<u8>,
    cipher: C,
}

impl<C> Prefixed for NamedKey<C> {
    fn prefix(&self) -> &[u8] {
        &self.prefix
    }
}

/// aescbc, aesgcm or secretbox with its ordered keys; `keys[0]` writes.
pub(crate) struct KeyedProvider<C> {
    kind: ProviderKind,
    prefix: &'static str,
    no_match: &'static str,
    keys: Vec<NamedKey<C>>,
}

impl<C: LocalCipher> KeyedProvider<C> {
    /// `keys` must not be empty (the config loader guarantees it); an empty list cannot write.
    pub(crate) fn new(
        kind: ProviderKind,
        prefix: &'static str,
        no_match: &'static str,
        keys: impl IntoIterator<Item = (String, C)>,
    ) -> Self {
        let keys = keys
            .into_iter()
            .map(|(name, cipher)| NamedKey {
                prefix: format!("{name}:").into_bytes(),
                name,
                cipher,
            })
            .collect();
        Self {
            kind,
            prefix,
            no_match,
            keys,
        }
    }

    fn key_ref(&self, index: usize) -> KeyRef {
        KeyRef {
            key_name: self.keys.get(index).map(|k| k.name.clone()),
            key_index: Some(index),
            key_id: None,
        }
    }
}

impl<C: LocalCipher> Provider for KeyedProvider<C> {
    fn kind(&self) -> ProviderKind {
        self.kind
    }
    fn prefix(&self) -> &[u8] {
        self.prefix.as_bytes()
    }
    fn read(&self, body: &[u8], aad: &[u8]) -> Result<BodyRead, TransformError> {
        let (index, plaintext) =
            prefix::read_first(&self.keys, body, self.no_match, |key, rest| {
                key.cipher.open(rest, aad)
            })?;
        Ok(BodyRead {
            plaintext,
            stale: index != 0,
            key: self.key_ref(index),
        })
    }
    fn write(&self, plaintext: &[u8], aad: &[u8], out: &mut Vec<u8>) -> Result<(), TransformError> {
        let key = self
            .keys
            .first()
            .ok_or_else(|| TransformError::msg(self.no_match))?;
        out.extend_from_slice(&key.prefix);
        key.cipher.seal_into(out, plaintext, aad)
    }
    fn write_key(&self) -> KeyRef {
        self.key_ref(0)
    }
    fn identify(&self, body: &[u8]) -> Result<Option<(KeyRef, bool)>, TransformError> {
        Ok(prefix::first_match(&self.keys, body, |_, _| true)
            .map(|(index, _, _)| (self.key_ref(index), index != 0)))
    }
}
