//! The KMS v2 write state and the plugin's current key ID (WIRE-FORMAT.md §6.2.4), driven
//! synchronously by the callers instead of upstream's background loop:
//!
//! * `Status` is (re)checked when an operation needs it and the last check is older than the
//!   status interval (60 s; 10 s after a failure, like upstream's negative interval).
//! * Reads only need the current key ID (for staleness), so they call `Status` but not `Encrypt`:
//!   a read-only tool never makes the plugin wrap a seed it will not use. Once a write state
//!   exists, its key ID is the reference, exactly as upstream (including "coasting" on the old
//!   state when a rotation fails).
//! * Writes establish the state lazily (new seed + `Encrypt`, accepted only if the response
//!   validates and its key ID equals `Status`'s), rotate it when `Status` reports a new key ID, and
//!   refuse to write once the state is 3 minutes past its last good `Status`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::digest;
use zeroize::Zeroizing;

use super::dek::{cache_key, DataKey};
use super::object::EncryptedObject;
use super::validate::{go_quote, validate_key_id, validate_object};
use crate::kms::KmsV2Service;
use crate::providers::random;
use crate::transformer::{KmsOutage, TransformError};

/// How long a write state may be used after its last successful `Status`.
const WRITE_TTL: Duration = Duration::from_secs(180);
/// Retry interval after a failed check.
const NEGATIVE_INTERVAL: Duration = Duration::from_secs(10);

/// A source of wall-clock time (tests substitute their own).
pub trait Clock: Send + Sync {
    fn now(&self) -> SystemTime;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// The seed (or DEK) this provider writes with, and the object fields every write carries.
pub(crate) struct WriteState {
    pub key: Arc<DataKey>,
    /// `keyID`, `encryptedDEKSource`, annotations and type; `encryptedData` empty.
    pub template: EncryptedObject,
    pub cache_key: [u8; 32],
    /// `template` encoded: fields 2–5, which follow field 1 (`encryptedData`) in every value.
    pub encoded_tail: Vec<u8>,
    pub expires: SystemTime,
}

#[derive(Default)]
struct Inner {
    write: Option<Arc<WriteState>>,
    /// The key ID of the last valid `Status`.
    status_key_id: Option<String>,
    last_check: Option<SystemTime>,
    last_check_ok: bool,
    last_error: Option<String>,
}

pub(crate) struct Tracker {
    name: String,
    endpoint: String,
    service: Arc<dyn KmsV2Service>,
    write_type: i32,
    interval: Duration,
    clock: Arc<dyn Clock>,
    inner: Mutex<Inner>,
}

/// `"sha256:<hex>"` of a key ID, as upstream logs it (key IDs are public but may be long).
fn key_id_hash(key_id: &str) -> String {
    if key_id.is_empty() {
        return String::new();
    }
    format!(
        "sha256:{}",
        hex::encode(digest::digest(&digest::SHA256, key_id.as_bytes()))
    )
}

impl Tracker {
    pub(crate) fn new(
        name: &str,
        endpoint: &str,
        service: Arc<dyn KmsV2Service>,
        write_type: i32,
        interval: Duration,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            name: name.to_string(),
            endpoint: endpoint.to_string(),
            service,
            write_type,
            interval,
            clock,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Inner>, TransformError> {
        self.inner
            .lock()
            .map_err(|_| TransformError::msg("KMS v2 state lock poisoned"))
    }

    /// The key ID and type a freshly written value would carry, for staleness.
    pub(crate) fn current(&self) -> Result<(String, i32), TransformError> {
        let mut inner = self.lock()?;
        self.refresh_if_due(&mut inner, false);
        if let Some(write) = &inner.write {
            return Ok((
                write.template.key_id.clone(),
                write.template.encrypted_dek_source_type,
            ));
        }
        match &inner.status_key_id {
            Some(key_id) => Ok((key_id.clone(), self.write_type)),
            None => Err(self.no_state(&inner)),
        }
    }

    /// The current state without calling the plugin (for cheap queries).
    pub(crate) fn peek(&self) -> Option<Arc<WriteState>> {
        self.inner.lock().ok()?.write.clone()
    }

    /// The key ID last seen, without calling the plugin.
    pub(crate) fn peek_key_id(&self) -> Option<String> {
        let inner = self.inner.lock().ok()?;
        inner
            .write
            .as_ref()
            .map(|w| w.template.key_id.clone())
            .or_else(|| inner.status_key_id.clone())
    }

    /// A write state usable now.
    pub(crate) fn for_write(&self) -> Result<Arc<WriteState>, TransformError> {
        let mut inner = self.lock()?;
        self.refresh_if_due(&mut inner, true);
        let write = inner.write.clone().ok_or_else(|| self.no_state(&inner))?;
        let now = self.clock.now();
        if now > write.expires {
            return Err(self.outage(format!(
                "encryptedDEKSource with keyID hash {} expired at {} (current time is {})",
                go_quote(&key_id_hash(&write.template.key_id)),
                rfc3339(write.expires),
                rfc3339(now)
            )));
        }
        Ok(write)
    }

    /// Every failure of the write state is the plugin's: it did not answer Status or Encrypt, or
    /// answered something unusable. None says anything about a stored value.
    fn outage(&self, message: String) -> TransformError {
        TransformError::Outage(KmsOutage {
            provider: self.name.clone(),
            endpoint: self.endpoint.clone(),
            message,
        })
    }

    fn no_state(&self, inner: &Inner) -> TransformError {
        self.outage(match &inner.last_error {
            Some(err) => err.clone(),
            None => format!(
                "kmsv2 Provider {} has no valid key ID and DEK/seed yet",
                self.name
            ),
        })
    }

    fn refresh_if_due(&self, inner: &mut Inner, for_write: bool) {
        let now = self.clock.now();
        let wait = if inner.last_check_ok {
            self.interval
        } else {
            NEGATIVE_INTERVAL.min(self.interval)
        };
        let due = inner
            .last_check
            .is_none_or(|t| now.duration_since(t).unwrap_or(Duration::ZERO) >= wait);
        if due {
            self.check(inner, for_write);
        } else if for_write && inner.write.is_none() {
            // Reads checked Status already; a first write still needs a seed.
            if let Some(key_id) = inner.status_key_id.clone() {
                let expires = now + WRITE_TTL;
                if let Err(err) = self.rotate(inner, &key_id, expires) {
                    inner.last_error = Some(err);
                }
            }
        }
    }

    /// One `Status` round: remember the key ID, then extend or rotate the write state.
    fn check(&self, inner: &mut Inner, for_write: bool) {
        inner.last_check = Some(self.clock.now());
        inner.last_check_ok = false;
        let status = match self.service.status() {
            Ok(status) => status,
            Err(err) => {
                inner.last_error = Some(format!(
                    "failed to perform status section of the healthz check for KMS Provider {}, error: {err}",
                    self.name
                ));
                return;
            }
        };
        // An unhealthy plugin's key ID may be outdated (its backend cannot tell it about a
        // rotation): unlike kube-apiserver, which still adopts it, atrest neither reports nor
        // writes with it (upstream's text).
        if status.healthz != "ok" {
            inner.last_error = Some(format!(
                "kmsv2 Provider {} is not healthy, error: got unexpected healthz status: {}",
                self.name, status.healthz
            ));
            return;
        }
        // Read after Status returns and before Encrypt, like upstream: a conservative bound.
        let expires = self.clock.now() + WRITE_TTL;
        if let Err(err) = validate_key_id(&status.key_id) {
            inner.last_error = Some(format!(
                "kmsv2 Provider {} is not healthy, error: got invalid KMSv2 KeyID hash {}: {err}",
                self.name,
                go_quote(&key_id_hash(&status.key_id))
            ));
            return;
        }
        inner.status_key_id = Some(status.key_id.clone());
        let unchanged = inner.write.as_ref().is_some_and(|w| {
            w.template.key_id == status.key_id
                && w.template.encrypted_dek_source_type == self.write_type
        });
        if unchanged {
            if let Some(write) = inner.write.take() {
                inner.write = Some(Arc::new(WriteState {
                    key: Arc::clone(&write.key),
                    template: write.template.clone(),
                    cache_key: write.cache_key,
                    encoded_tail: write.encoded_tail.clone(),
                    expires,
                }));
            }
        } else if for_write || inner.write.is_some() {
            if let Err(err) = self.rotate(inner, &status.key_id, expires) {
                inner.last_error = Some(err);
                return;
            }
        }
        inner.last_check_ok = true;
        inner.last_error = None;
    }

    /// New seed (or DEK) + `Encrypt`; installs it only if valid and under `status_key_id`.
    /// On failure the previous state stays (upstream "coasts" on it until it expires).
    fn rotate(
        &self,
        inner: &mut Inner,
        status_key_id: &str,
        expires: SystemTime,
    ) -> Result<(), String> {
        let uid = random::uuid_v4().map_err(|e| e.to_string())?;
        let generated = self.generate(&uid);
        let (key, template) = match generated {
            Ok(pair) if pair.1.key_id == status_key_id => pair,
            other => {
                let (err_gen, encrypt_key_id) = match &other {
                    Ok((_, template)) => (String::from("<nil>"), template.key_id.clone()),
                    Err(err) => (err.to_string(), String::new()),
                };
                return Err(format!(
                    "kmsv2 Provider {} is not healthy, error: failed to rotate DEK uid={}, useSeed={}, errGen={err_gen}, statusKeyIDHash={}, encryptKeyIDHash={}",
                    self.name,
                    go_quote(&uid),
                    self.write_type != super::object::AES_GCM_KEY,
                    go_quote(&key_id_hash(status_key_id)),
                    go_quote(&key_id_hash(&encrypt_key_id)),
                ));
            }
        };
        let cache_key = cache_key(&template);
        let encoded_tail = template.encode();
        inner.write = Some(Arc::new(WriteState {
            key: Arc::new(key),
            template,
            cache_key,
            encoded_tail,
            expires,
        }));
        Ok(())
    }

    fn generate(&self, uid: &str) -> Result<(DataKey, EncryptedObject), TransformError> {
        let mut source = Zeroizing::new([0u8; 32]);
        random::fill(source.as_mut())?;
        let key = DataKey::new(self.write_type, source.as_ref())?;
        let response = self
            .service
            .encrypt(uid, source.as_ref())
            .map_err(|e| TransformError::msg(format!("failed to encrypt DEK, error: {e}")))?;
        let mut template = EncryptedObject {
            encrypted_data: vec![0], // any non-empty value to pass validation
            key_id: response.key_id,
            encrypted_dek_source: response.ciphertext,
            annotations: response.annotations,
            encrypted_dek_source_type: self.write_type,
        };
        validate_object(&template)?;
        template.encrypted_data = Vec::new();
        Ok((key, template))
    }
}

/// RFC 3339 in UTC with second precision (Go's `time.RFC3339` for a UTC time).
pub(crate) fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_rfc3339() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(1_795_823_486)),
            "2026-11-27T23:51:26Z"
        );
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00Z"
        );
    }
}
