//! identity: no prefix, no transformation; refuses to read `k8s:enc:` data (WIRE-FORMAT.md §4).

use super::{BodyRead, KeyRef, Provider, ENCRYPTED_MARKER};
use crate::transformer::{ProviderKind, TransformError};

pub(crate) const ENCRYPTED_DATA_ERROR: &str = "identity transformer tried to read encrypted data";

#[derive(Debug, Default)]
pub(crate) struct Identity;

/// identity's read: the value itself, unless it is encrypted data.
pub(crate) fn read(data: &[u8]) -> Result<Vec<u8>, TransformError> {
    if data.starts_with(ENCRYPTED_MARKER) {
        return Err(TransformError::msg(ENCRYPTED_DATA_ERROR));
    }
    Ok(data.to_vec())
}

impl Provider for Identity {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Identity
    }
    fn prefix(&self) -> &[u8] {
        b""
    }
    fn read(&self, body: &[u8], _aad: &[u8]) -> Result<BodyRead, TransformError> {
        Ok(BodyRead {
            plaintext: read(body)?,
            stale: false,
            key: KeyRef::default(),
        })
    }
    fn write(
        &self,
        plaintext: &[u8],
        _aad: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), TransformError> {
        out.extend_from_slice(plaintext);
        Ok(())
    }
    fn write_key(&self) -> KeyRef {
        KeyRef::default()
    }
    fn identify(&self, body: &[u8]) -> Result<Option<(KeyRef, bool)>, TransformError> {
        Ok((!body.starts_with(ENCRYPTED_MARKER)).then(|| (KeyRef::default(), false)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_plain_data_and_refuses_encrypted() {
        assert_eq!(read(b"k8s\x00abc").unwrap(), b"k8s\x00abc");
        assert_eq!(read(b"{}").unwrap(), b"{}");
        assert_eq!(
            read(b"k8s:enc:").unwrap_err().to_string(),
            ENCRYPTED_DATA_ERROR
        );
        assert_eq!(
            read(b"k8s:enc:aescbc:v1:k:xx").unwrap_err().to_string(),
            ENCRYPTED_DATA_ERROR
        );
        assert!(read(b"k8s:en").is_ok());
    }
}
