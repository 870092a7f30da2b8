//! `ValidateEncryptedObject` (WIRE-FORMAT.md §6.2.1): applied on every KMS v2 encode and decode, and
//! to the plugin's Encrypt response. Texts are upstream's, including apimachinery's field errors.

use std::collections::BTreeMap;

use super::object::{EncryptedObject, AES_GCM_KEY, HKDF_SHA256_XNONCE_AES_GCM_SEED};
use crate::transformer::TransformError;

const KEY_ID_MAX: usize = 1024;
const EDS_MAX: usize = 1024;
const ANNOTATIONS_MAX: usize = 32 * 1024;

pub(crate) fn validate_object(o: &EncryptedObject) -> Result<(), TransformError> {
    let t = o.encrypted_dek_source_type;
    if t != AES_GCM_KEY && t != HKDF_SHA256_XNONCE_AES_GCM_SEED {
        return Err(TransformError::msg(format!(
            "unknown encryptedDEKSourceType: {t}"
        )));
    }
    if o.encrypted_data.is_empty() {
        return Err(TransformError::msg("encrypted data is empty"));
    }
    if let Err(e) = validate_eds(&o.encrypted_dek_source) {
        return Err(TransformError::msg(format!(
            "failed to validate encrypted DEK source: {e}"
        )));
    }
    if let Err(e) = validate_key_id(&o.key_id) {
        return Err(TransformError::msg(format!(
            "failed to validate key id: {e}"
        )));
    }
    if let Some(e) = validate_annotations(&o.annotations) {
        return Err(TransformError::msg(format!(
            "failed to validate annotations: {e}"
        )));
    }
    Ok(())
}

fn validate_eds(eds: &[u8]) -> Result<(), String> {
    if eds.is_empty() {
        return Err("encrypted DEK source is empty".into());
    }
    if eds.len() > EDS_MAX {
        return Err(format!(
            "encrypted DEK source is {} bytes, which exceeds the max size of {EDS_MAX}",
            eds.len()
        ));
    }
    Ok(())
}

/// `ValidateKeyID`; also applied to Status responses.
pub(crate) fn validate_key_id(key_id: &str) -> Result<(), String> {
    if key_id.is_empty() {
        return Err("keyID is empty".into());
    }
    if key_id.len() > KEY_ID_MAX {
        return Err(format!(
            "keyID is {} bytes, which exceeds the max size of {KEY_ID_MAX}",
            key_id.len()
        ));
    }
    Ok(())
}

/// Every key must be a fully qualified domain name; total size ≤ 32 KiB. Errors are aggregated
/// like apimachinery's (Go iterates the map in random order; we use key order).
fn validate_annotations(annotations: &BTreeMap<String, Vec<u8>>) -> Option<TransformError> {
    let mut errors: Vec<TransformError> = annotations
        .keys()
        .filter_map(|k| {
            fqdn_error(k).map(|text| TransformError::msg(format!("annotations: {text}")))
        })
        .collect();
    let total: usize = annotations.iter().map(|(k, v)| k.len() + v.len()).sum();
    if total > ANNOTATIONS_MAX {
        errors.push(TransformError::msg(format!(
            "total size of annotations is {total}, which exceeds the max size of {ANNOTATIONS_MAX}"
        )));
    }
    TransformError::reduce(errors).map(|e| TransformError::msg(e.to_string()))
}

const SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";

/// apimachinery's `IsFullyQualifiedDomainName`, as the body of a field error (`Required value`,
/// `Invalid value: "<v>": <detail>`). The rule kube-apiserver applies to annotation keys; the KMS
/// plugin server checks its own responses with it too.
pub fn fqdn_error(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("Required value".into());
    }
    let name = name.strip_suffix('.').unwrap_or(name);
    let mut errs = Vec::new();
    if name.len() > 253 {
        errs.push("must be no more than 253 characters".to_string());
    }
    if !is_subdomain(name) {
        errs.push(SUBDOMAIN_MSG.to_string());
    }
    if !errs.is_empty() {
        return Some(invalid(name, &errs.join(",")));
    }
    if name.split('.').count() < 2 {
        return Some(invalid(
            name,
            "should be a domain with at least two segments separated by dots",
        ));
    }
    for label in name.split('.') {
        let mut errs = Vec::new();
        if label.len() > 63 {
            errs.push("must be no more than 63 characters");
        }
        if !is_label(label) {
            errs.push(LABEL_MSG);
        }
        if !errs.is_empty() {
            return Some(invalid(label, &errs.join(",")));
        }
    }
    None
}

fn invalid(value: &str, detail: &str) -> String {
    format!("Invalid value: {}: {detail}", go_quote(value))
}

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?`
fn is_label(s: &str) -> bool {
    let b = s.as_bytes();
    let alnum = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    match (b.first(), b.last()) {
        (Some(first), Some(last)) => {
            alnum(first) && alnum(last) && b.iter().all(|c| alnum(c) || *c == b'-')
        }
        _ => false,
    }
}

/// `label(\.label)*`
fn is_subdomain(s: &str) -> bool {
    s.split('.').all(is_label)
}

/// Go's `%q` for a string: printable characters as they are, the rest escaped.
pub(crate) fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\u{07}' => out.push_str("\\a"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            '\u{0b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object() -> EncryptedObject {
        EncryptedObject {
            encrypted_data: vec![1],
            key_id: "k".into(),
            encrypted_dek_source: vec![2],
            annotations: BTreeMap::new(),
            encrypted_dek_source_type: HKDF_SHA256_XNONCE_AES_GCM_SEED,
        }
    }

    fn err(o: EncryptedObject) -> String {
        validate_object(&o).unwrap_err().to_string()
    }

    #[test]
    fn limits_and_texts() {
        assert!(validate_object(&object()).is_ok());
        assert_eq!(
            err(EncryptedObject {
                encrypted_dek_source_type: 2,
                ..object()
            }),
            "unknown encryptedDEKSourceType: 2"
        );
        assert_eq!(
            err(EncryptedObject {
                encrypted_data: vec![],
                ..object()
            }),
            "encrypted data is empty"
        );
        assert_eq!(
            err(EncryptedObject { encrypted_dek_source: vec![0; 1025], ..object() }),
            "failed to validate encrypted DEK source: encrypted DEK source is 1025 bytes, which exceeds the max size of 1024"
        );
        assert!(validate_object(&EncryptedObject {
            encrypted_dek_source: vec![0; 1024],
            key_id: "x".repeat(1024),
            ..object()
        })
        .is_ok());
        assert_eq!(
            err(EncryptedObject {
                key_id: String::new(),
                ..object()
            }),
            "failed to validate key id: keyID is empty"
        );
        let big = EncryptedObject {
            annotations: [("a.b".to_string(), vec![0; 32766])].into(),
            ..object()
        };
        assert_eq!(err(big), "failed to validate annotations: total size of annotations is 32769, which exceeds the max size of 32768");
    }

    #[test]
    fn annotation_keys_must_be_fqdns() {
        for ok in ["version.encryption.remote.io", "a.b", "a.b.", "x-1.y2"] {
            assert_eq!(fqdn_error(ok), None, "{ok}");
        }
        assert_eq!(fqdn_error("").as_deref(), Some("Required value"));
        assert_eq!(
            fqdn_error("localhost").as_deref(),
            Some("Invalid value: \"localhost\": should be a domain with at least two segments separated by dots")
        );
        assert_eq!(
            fqdn_error("Not_A_Domain").unwrap(),
            format!("Invalid value: \"Not_A_Domain\": {SUBDOMAIN_MSG}")
        );
        let long_label = format!("{}.com", "a".repeat(64));
        assert_eq!(
            fqdn_error(&long_label).unwrap(),
            format!(
                "Invalid value: \"{}\": must be no more than 63 characters",
                "a".repeat(64)
            )
        );
        let two = EncryptedObject {
            annotations: [("A".to_string(), vec![]), ("b".to_string(), vec![])].into(),
            ..object()
        };
        assert!(err(two)
            .starts_with("failed to validate annotations: [annotations: Invalid value: \"A\""));
    }
}
