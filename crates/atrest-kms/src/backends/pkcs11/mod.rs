//! `pkcs11`: AES-256 keys inside a PKCS#11 token (an HSM, or SoftHSM2). The KEK never leaves the
//! token: wrapping is `CKM_AES_GCM` performed by the token.
//!
//! * Wrap: `C_Encrypt` with `CKM_AES_GCM`, a random 96-bit IV from this process, 128-bit tag and the
//!   key id as AAD. Ciphertext = `iv(12) ‖ ciphertext ‖ tag(16)`.
//! * Key selection: `--pkcs11-slot N` or `--pkcs11-token-label L` (first match), user PIN from a
//!   file or `ATREST_PKCS11_PIN`, one or more `--pkcs11-key-label`s: the first wraps, all unwrap
//!   (point the first at a new key to rotate; keep the old one listed to read old data).
//! * Key id: `pkcs11-<hex>` = first 16 bytes of SHA-256 over (key label, CKA_ID, key check value),
//!   where the key check value is the GCM tag of 16 zero bytes under a fixed IV computed by the
//!   token. It is the same on every node that sees the same key (including replicas in an HSM
//!   cluster whose token serials differ), and changes when the label points at other key material
//!   (a re-created key with the same label gets a new id), so it is never reused.
//! * Sessions: a small pool of logged-in sessions, each behind a mutex; calls run on tokio's
//!   blocking pool. A session that fails with a session/device error is reopened on next use.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use zeroize::Zeroizing;

use crate::backend::{derive_key_id, BackendError, KeyBackend, Wrapped};

const IV_LEN: usize = 12;
const TAG_LEN: usize = 16;

/// How to reach the token and key.
#[derive(Clone)]
pub struct Pkcs11Config {
    /// The PKCS#11 module (`.so`), e.g. `/usr/lib/softhsm/libsofthsm2.so`.
    pub module: PathBuf,
    /// Slot id; or
    pub slot: Option<u64>,
    /// token label (first token with this label).
    pub token_label: Option<String>,
    /// User PIN.
    pub pin: Zeroizing<String>,
    /// Key labels: the first wraps, all unwrap.
    pub key_labels: Vec<String>,
    /// Number of sessions in the pool (parallel HSM calls).
    pub sessions: usize,
}

impl std::fmt::Debug for Pkcs11Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkcs11Config")
            .field("module", &self.module)
            .field("slot", &self.slot)
            .field("token_label", &self.token_label)
            .field("pin", &"<redacted>")
            .field("key_labels", &self.key_labels)
            .finish()
    }
}

fn ck(step: &str) -> impl FnOnce(CkError) -> BackendError + '_ {
    move |e| match e {
        CkError::Pkcs11(RvError::PinIncorrect, _) => {
            BackendError::Config(format!("{step}: wrong PIN (CKR_PIN_INCORRECT)"))
        }
        CkError::Pkcs11(RvError::PinLocked, _) => {
            BackendError::Config(format!("{step}: the PIN is locked (CKR_PIN_LOCKED)"))
        }
        other => BackendError::Unavailable(format!("PKCS#11 {step}: {other}")),
    }
}

struct Key {
    label: String,
    key_id: String,
    handle: ObjectHandle,
}

/// The PKCS#11 backend.
pub struct Pkcs11Backend {
    inner: Arc<Inner>,
}

struct Inner {
    config: Pkcs11Config,
    ctx: Pkcs11,
    slot: Slot,
    pool: Vec<Mutex<Option<Session>>>,
    next: AtomicUsize,
    keys: Vec<Key>,
}

/// Loads the module and initializes it (tolerating "already initialized").
fn open_module(config: &Pkcs11Config) -> Result<Pkcs11, BackendError> {
    let ctx = Pkcs11::new(&config.module).map_err(|e| {
        BackendError::Config(format!(
            "cannot load PKCS#11 module {}: {e}",
            config.module.display()
        ))
    })?;
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => Ok(ctx),
        Err(e) => Err(ck("C_Initialize")(e)),
    }
}

fn find_slot(ctx: &Pkcs11, config: &Pkcs11Config) -> Result<Slot, BackendError> {
    let slots = ctx.get_slots_with_token().map_err(ck("listing slots"))?;
    if let Some(id) = config.slot {
        return slots.into_iter().find(|s| s.id() == id).ok_or_else(|| {
            BackendError::Config(format!(
                "PKCS#11 slot {id} has no token (module {})",
                config.module.display()
            ))
        });
    }
    let Some(label) = &config.token_label else {
        return Err(BackendError::Config(
            "give --pkcs11-slot or --pkcs11-token-label".into(),
        ));
    };
    for s in slots {
        let info = ctx.get_token_info(s).map_err(ck("reading token info"))?;
        if info.label().trim_end() == label {
            return Ok(s);
        }
    }
    Err(BackendError::Config(format!(
        "no PKCS#11 token labelled {label:?} (module {})",
        config.module.display()
    )))
}

fn login(session: &Session, pin: &str) -> Result<(), BackendError> {
    match session.login(UserType::User, Some(&AuthPin::from(pin.to_string()))) {
        Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(()),
        Err(e) => Err(ck("login")(e)),
    }
}

fn find_key(session: &Session, label: &str) -> Result<ObjectHandle, BackendError> {
    let template = [
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::Label(label.as_bytes().to_vec()),
    ];
    let found = session.find_objects(&template).map_err(ck("finding key"))?;
    match found.len() {
        0 => Err(BackendError::Config(format!(
            "no AES key labelled {label:?} in the token"
        ))),
        1 => Ok(found[0]),
        n => Err(BackendError::Config(format!(
            "{n} AES keys are labelled {label:?} in the token; labels must be unique"
        ))),
    }
}

fn gcm_encrypt(
    session: &Session,
    key: ObjectHandle,
    iv: &[u8; IV_LEN],
    aad: &[u8],
    data: &[u8],
) -> Result<Vec<u8>, CkError> {
    let mut iv = *iv;
    let params = GcmParams::new(&mut iv, aad, ((TAG_LEN * 8) as u64).into())?;
    session.encrypt(&Mechanism::AesGcm(params), key, data)
}

fn key_identity(
    session: &Session,
    label: &str,
    handle: ObjectHandle,
) -> Result<String, BackendError> {
    let ck_id = match session.get_attributes(handle, &[AttributeType::Id]) {
        Ok(attrs) => attrs
            .into_iter()
            .find_map(|a| {
                if let Attribute::Id(v) = a {
                    Some(v)
                } else {
                    None
                }
            })
            .unwrap_or_default(),
        Err(_) => Vec::new(),
    };
    let kcv = gcm_encrypt(
        session,
        handle,
        &[0u8; IV_LEN],
        b"atrest-kms key check value",
        &[0u8; 16],
    )
    .map_err(ck("computing key check value"))?;
    Ok(derive_key_id("pkcs11-", &[label.as_bytes(), &ck_id, &kcv]))
}

impl Pkcs11Backend {
    /// Loads the module, finds the token, logs in (a wrong PIN is a clear error) and finds the keys.
    pub fn open(config: Pkcs11Config) -> Result<Pkcs11Backend, BackendError> {
        if config.key_labels.is_empty() {
            return Err(BackendError::Config(
                "give at least one --pkcs11-key-label".into(),
            ));
        }
        let ctx = open_module(&config)?;
        let slot = find_slot(&ctx, &config)?;
        let first = ctx.open_ro_session(slot).map_err(ck("opening session"))?;
        login(&first, &config.pin)?;
        let mut keys = Vec::new();
        for label in &config.key_labels {
            let handle = find_key(&first, label)?;
            let key_id = key_identity(&first, label, handle)?;
            keys.push(Key {
                label: label.clone(),
                key_id,
                handle,
            });
        }
        let mut pool = vec![Mutex::new(Some(first))];
        for _ in 1..config.sessions.max(1) {
            pool.push(Mutex::new(None));
        }
        tracing::info!(slot = slot.id(), key_label = %keys[0].label, key_id = %keys[0].key_id, "PKCS#11 backend ready");
        Ok(Pkcs11Backend {
            inner: Arc::new(Inner {
                config,
                ctx,
                slot,
                pool,
                next: AtomicUsize::new(0),
                keys,
            }),
        })
    }
}

impl Inner {
    /// Runs `f` on a pooled session, reopening it (and logging in) when needed.
    fn with_session<T>(
        &self,
        f: impl FnOnce(&Session) -> Result<T, CkError>,
    ) -> Result<T, BackendError> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.pool.len();
        let mut guard = match self.pool[i].lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if guard.is_none() {
            let s = self
                .ctx
                .open_ro_session(self.slot)
                .map_err(ck("opening session"))?;
            login(&s, &self.config.pin)?;
            *guard = Some(s);
        }
        let Some(session) = guard.as_ref() else {
            return Err(BackendError::Unavailable("PKCS#11 session missing".into()));
        };
        match f(session) {
            Ok(v) => Ok(v),
            Err(e) => {
                if matches!(
                    e,
                    CkError::Pkcs11(
                        RvError::SessionHandleInvalid
                            | RvError::SessionClosed
                            | RvError::DeviceRemoved
                            | RvError::DeviceError
                            | RvError::TokenNotPresent
                            | RvError::UserNotLoggedIn,
                        _
                    )
                ) {
                    *guard = None;
                }
                Err(match e {
                    CkError::Pkcs11(
                        RvError::EncryptedDataInvalid | RvError::EncryptedDataLenRange,
                        _,
                    ) => BackendError::BadCiphertext("message authentication failed".into()),
                    other => BackendError::Unavailable(format!("PKCS#11: {other}")),
                })
            }
        }
    }
}

#[async_trait::async_trait]
impl KeyBackend for Pkcs11Backend {
    fn kind(&self) -> &'static str {
        "pkcs11"
    }

    fn current_key_id(&self) -> Result<String, BackendError> {
        Ok(self.inner.keys[0].key_id.clone())
    }

    async fn wrap(&self, plaintext: &[u8]) -> Result<Wrapped, BackendError> {
        let mut iv = [0u8; IV_LEN];
        aws_lc_rs::rand::fill(&mut iv)
            .map_err(|_| BackendError::Unavailable("random number generator failed".into()))?;
        let inner = Arc::clone(&self.inner);
        let data = Zeroizing::new(plaintext.to_vec());
        let ct = blocking(move || {
            let key = &inner.keys[0];
            inner.with_session(|s| gcm_encrypt(s, key.handle, &iv, key.key_id.as_bytes(), &data))
        })
        .await?;
        let key = &self.inner.keys[0];
        let mut out = Vec::with_capacity(IV_LEN + ct.len());
        out.extend_from_slice(&iv);
        out.extend_from_slice(&ct);
        Ok(Wrapped {
            key_id: key.key_id.clone(),
            ciphertext: out,
            annotations: BTreeMap::new(),
        })
    }

    async fn unwrap(
        &self,
        key_id: &str,
        ciphertext: &[u8],
        _annotations: &BTreeMap<String, Vec<u8>>,
    ) -> Result<Zeroizing<Vec<u8>>, BackendError> {
        let index = self
            .inner
            .keys
            .iter()
            .position(|k| k.key_id == key_id)
            .ok_or_else(|| BackendError::UnknownKeyId(key_id.to_string()))?;
        if ciphertext.len() < IV_LEN + TAG_LEN {
            return Err(BackendError::BadCiphertext(format!(
                "{} bytes is too short",
                ciphertext.len()
            )));
        }
        let mut iv = [0u8; IV_LEN];
        iv.copy_from_slice(&ciphertext[..IV_LEN]);
        let body = ciphertext[IV_LEN..].to_vec();
        let inner = Arc::clone(&self.inner);
        let pt = blocking(move || {
            let key = &inner.keys[index];
            inner.with_session(|s| {
                let params = GcmParams::new(
                    &mut iv,
                    key.key_id.as_bytes(),
                    ((TAG_LEN * 8) as u64).into(),
                )?;
                s.decrypt(&Mechanism::AesGcm(params), key.handle, &body)
            })
        })
        .await?;
        Ok(Zeroizing::new(pt))
    }
}

/// Runs a token call on tokio's blocking pool (PKCS#11 calls block).
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, BackendError> + Send + 'static,
) -> Result<T, BackendError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| BackendError::Unavailable(format!("PKCS#11 worker failed: {e}")))?
}

/// Result of [`generate_key`].
#[derive(Debug)]
pub struct GeneratedKey {
    pub label: String,
    pub key_id: String,
}

/// Creates a non-extractable, sensitive AES-256 token key labelled `label` (used by
/// `atrest kms pkcs11-keygen`). Refuses a label that already exists.
pub fn generate_key(config: &Pkcs11Config, label: &str) -> Result<GeneratedKey, BackendError> {
    let ctx = open_module(config)?;
    let slot = find_slot(&ctx, config)?;
    let session = ctx.open_rw_session(slot).map_err(ck("opening session"))?;
    login(&session, &config.pin)?;
    if find_key(&session, label).is_ok() {
        return Err(BackendError::Config(format!(
            "a key labelled {label:?} already exists in the token"
        )));
    }
    let mut id = [0u8; 16];
    aws_lc_rs::rand::fill(&mut id)
        .map_err(|_| BackendError::Unavailable("random number generator failed".into()))?;
    let template = [
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::ValueLen(32u64.into()),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Id(id.to_vec()),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Encrypt(true),
        Attribute::Decrypt(true),
    ];
    let handle = session
        .generate_key(&Mechanism::AesKeyGen, &template)
        .map_err(ck("generating key"))?;
    let key_id = key_identity(&session, label, handle)?;
    Ok(GeneratedKey {
        label: label.to_string(),
        key_id,
    })
}
