//! The provider and key a stored value names in its prefix (`k8s:enc:aescbc:v1:key1:…`,
//! `k8s:enc:kms:v2:plugin:…`), read without any key: what a config must contain to read it.
//! Used to group the values a candidate config cannot read ("212 secrets under aescbc key1").

use crate::model::KeyLabel;

/// `identity` for plaintext, `unknown` for an unrecognised `k8s:enc:` prefix.
pub fn label_of(value: &[u8]) -> KeyLabel {
    let Some(rest) = value.strip_prefix(atrest_core::providers::ENCRYPTED_MARKER) else {
        return KeyLabel::new("identity", None);
    };
    let name_after = |prefix: &[u8]| -> Option<String> {
        let body = rest.strip_prefix(prefix)?;
        let end = body.iter().position(|b| *b == b':')?;
        Some(String::from_utf8_lossy(&body[..end]).into_owned())
    };
    for (prefix, provider) in [
        (&b"aescbc:v1:"[..], "aescbc"),
        (b"aesgcm:v1:", "aesgcm"),
        (b"secretbox:v1:", "secretbox"),
        (b"kms:v1:", "kms v1"),
        (b"kms:v2:", "kms v2"),
    ] {
        if let Some(name) = name_after(prefix) {
            return KeyLabel::new(provider, Some(&name));
        }
    }
    KeyLabel::new("unknown", None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert_eq!(
            label_of(b"k8s:enc:aescbc:v1:key1:xyz").to_string(),
            "aescbc key1"
        );
        assert_eq!(label_of(b"k8s:enc:kms:v2:p:\n").to_string(), "kms v2 p");
        assert_eq!(label_of(b"k8s\x00abc").to_string(), "identity");
        assert_eq!(label_of(b"k8s:enc:rot13:v1:a:").to_string(), "unknown");
        assert_eq!(label_of(b"k8s:enc:aesgcm:v1:").to_string(), "unknown");
    }
}
