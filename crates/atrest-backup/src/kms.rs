//! Envelope encryption of the age file key by a KMS v2 plugin.
//!
//! The recipient calls the plugin's `Encrypt` with the 16-byte age file key and stores the answer in
//! a custom stanza:
//!
//! ```text
//! -> atrest-kms <base64(key_id)> [<base64(annotation key)>.<base64(annotation value)>]...
//! <base64(ciphertext from the plugin)>
//! ```
//! (base64 = standard alphabet without padding, as age writes stanzas). The identity hands the stanza
//! back to the plugin's `Decrypt` with the same key_id and annotations. Before a backup is written
//! the recipient makes that round trip once itself: a plugin that encrypts but cannot decrypt (a
//! lost KEK, an encrypt-only policy) would otherwise produce a backup nobody can open. Plugins are reached through
//! [`atrest_core::kms::KmsV2Service`], so this crate has no gRPC dependency.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};

use age::secrecy::ExposeSecret;
use age_core::format::{FileKey, Stanza};
use atrest_core::kms::{DecryptRequest, KmsV2Service};
use base64::engine::general_purpose::STANDARD_NO_PAD;
use base64::Engine;

pub const KMS_STANZA_TAG: &str = "atrest-kms";

/// Wraps the file key with a KMS v2 plugin.
#[derive(Clone)]
pub struct KmsRecipient {
    service: Arc<dyn KmsV2Service>,
    /// The plugin's socket, for messages.
    endpoint: String,
}

impl KmsRecipient {
    pub fn new(service: Arc<dyn KmsV2Service>) -> Self {
        KmsRecipient {
            service,
            endpoint: "KMS plugin".into(),
        }
    }

    /// Names the plugin's endpoint in errors.
    pub fn with_endpoint(mut self, endpoint: &str) -> Self {
        self.endpoint = format!("KMS plugin {endpoint}");
        self
    }

    /// The plugin's own Decrypt must give back the file key it just wrapped.
    fn check_round_trip(
        &self,
        file_key: &FileKey,
        key_id: &str,
        ciphertext: &[u8],
        annotations: &BTreeMap<String, Vec<u8>>,
    ) -> Result<(), String> {
        let request = DecryptRequest {
            ciphertext: ciphertext.to_vec(),
            uid: uuid::Uuid::new_v4().to_string(),
            key_id: key_id.to_string(),
            annotations: annotations.clone(),
        };
        let plain = self.service.decrypt(&request).map_err(|e| {
            format!(
                "{} encrypts but cannot decrypt what it just encrypted (key_id {key_id:?}): {e}; no backup was written",
                self.endpoint
            )
        })?;
        let same: bool =
            subtle::ConstantTimeEq::ct_eq(plain.as_slice(), file_key.expose_secret().as_slice())
                .into();
        if !same {
            return Err(format!(
                "{}: Decrypt of the file key it just wrapped returned other bytes (key_id {key_id:?}); no backup was written",
                self.endpoint
            ));
        }
        Ok(())
    }
}

impl age::Recipient for KmsRecipient {
    fn wrap_file_key(
        &self,
        file_key: &FileKey,
    ) -> Result<(Vec<Stanza>, HashSet<String>), age::EncryptError> {
        let uid = uuid::Uuid::new_v4().to_string();
        let err = |msg: String| age::EncryptError::Io(std::io::Error::other(msg));
        let resp = self
            .service
            .encrypt(&uid, file_key.expose_secret())
            .map_err(|e| err(format!("{} Encrypt: {e}", self.endpoint)))?;
        if resp.key_id.is_empty() {
            return Err(err(format!(
                "{} Encrypt returned an empty key_id",
                self.endpoint
            )));
        }
        if resp.ciphertext.is_empty() {
            return Err(err(format!(
                "{} Encrypt returned an empty ciphertext",
                self.endpoint
            )));
        }
        self.check_round_trip(file_key, &resp.key_id, &resp.ciphertext, &resp.annotations)
            .map_err(err)?;
        let mut args = vec![STANDARD_NO_PAD.encode(resp.key_id.as_bytes())];
        for (k, v) in &resp.annotations {
            args.push(format!(
                "{}.{}",
                STANDARD_NO_PAD.encode(k.as_bytes()),
                STANDARD_NO_PAD.encode(v)
            ));
        }
        Ok((
            vec![Stanza {
                tag: KMS_STANZA_TAG.to_string(),
                args,
                body: resp.ciphertext,
            }],
            HashSet::new(),
        ))
    }
}

/// Unwraps `atrest-kms` stanzas with the plugin's `Decrypt`. Remembers the last plugin error so the
/// caller can report it (age's error type has no room for it).
#[derive(Clone)]
pub struct KmsIdentity {
    service: Arc<dyn KmsV2Service>,
    last_error: Arc<Mutex<Option<String>>>,
}

impl KmsIdentity {
    pub fn new(service: Arc<dyn KmsV2Service>) -> Self {
        KmsIdentity {
            service,
            last_error: Arc::new(Mutex::new(None)),
        }
    }
    /// The plugin's error from the last failed unwrap.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().ok().and_then(|g| g.clone())
    }
    fn fail(&self, msg: String) -> Option<Result<FileKey, age::DecryptError>> {
        if let Ok(mut g) = self.last_error.lock() {
            *g = Some(msg);
        }
        Some(Err(age::DecryptError::KeyDecryptionFailed))
    }
}

/// Parses the stanza arguments: key_id and annotations.
pub fn parse_stanza_args(args: &[String]) -> Result<(String, BTreeMap<String, Vec<u8>>), String> {
    let (first, rest) = args.split_first().ok_or("missing key_id")?;
    let key_id = String::from_utf8(
        STANDARD_NO_PAD
            .decode(first)
            .map_err(|e| format!("key_id: {e}"))?,
    )
    .map_err(|_| "key_id is not UTF-8")?;
    let mut annotations = BTreeMap::new();
    for arg in rest {
        let (k, v) = arg.split_once('.').ok_or("annotation without '.'")?;
        let k = String::from_utf8(
            STANDARD_NO_PAD
                .decode(k)
                .map_err(|e| format!("annotation key: {e}"))?,
        )
        .map_err(|_| "annotation key is not UTF-8")?;
        let v = STANDARD_NO_PAD
            .decode(v)
            .map_err(|e| format!("annotation value: {e}"))?;
        annotations.insert(k, v);
    }
    Ok((key_id, annotations))
}

impl age::Identity for KmsIdentity {
    fn unwrap_stanza(&self, stanza: &Stanza) -> Option<Result<FileKey, age::DecryptError>> {
        if stanza.tag != KMS_STANZA_TAG {
            return None;
        }
        let (key_id, annotations) = match parse_stanza_args(&stanza.args) {
            Ok(v) => v,
            Err(e) => return self.fail(format!("malformed {KMS_STANZA_TAG} stanza: {e}")),
        };
        let request = DecryptRequest {
            ciphertext: stanza.body.clone(),
            uid: uuid::Uuid::new_v4().to_string(),
            key_id: key_id.clone(),
            annotations,
        };
        match self.service.decrypt(&request) {
            Ok(plain) => {
                if plain.len() != 16 {
                    return self.fail(format!(
                        "plugin Decrypt returned {} bytes, expected a 16-byte file key",
                        plain.len()
                    ));
                }
                // `plain` is zeroized on drop; the key goes straight into age's SecretBox.
                Some(Ok(FileKey::init_with_mut(|k| k.copy_from_slice(&plain))))
            }
            Err(e) => self.fail(format!("plugin Decrypt (key_id {key_id:?}): {e}")),
        }
    }
}
