//! Whether each KMS v2 plugin of the config can say its current key_id right now.
//!
//! The monitor builds its transformers through [`ObservingConnector`], which wraps every KMS v2
//! service the core connects to: each `Status` answer — the core's own (for staleness) and the
//! monitor's periodic [`KmsStates::probe`] — is recorded. A provider is *known* only after a
//! `Status` that succeeded with `healthz: ok` and a key_id; until then, and whenever the plugin is
//! unreachable, unhealthy or its backend fails, its objects are exported as `state="unknown"`
//! (never guessed as current). Every change of a provider's (known, key_id) bumps a generation
//! counter, which makes the engine rescan: the classification of stored values depends on it.
//!
//! This is the one place that decides "KMS state unknown"; when the core grows its own notion of
//! it, this module is what to re-point.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use atrest_core::kms::{
    DecryptRequest, EncryptResponse, KmsConnector, KmsError, KmsV1Service, KmsV2Service,
    StatusResponse,
};
use zeroize::Zeroizing;

/// What the last `Status` of one provider said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KmsState {
    /// The plugin's current key_id.
    Known(String),
    /// Why it is not known (not asked yet, unreachable, unhealthy, invalid answer).
    Unknown(String),
}

struct Provider {
    endpoint: String,
    service: Arc<dyn KmsV2Service>,
    state: KmsState,
}

/// The KMS v2 providers of one loaded config and what their plugins last said.
#[derive(Default)]
pub struct KmsStates {
    providers: Mutex<BTreeMap<String, Provider>>,
    generation: AtomicU64,
}

impl std::fmt::Debug for KmsStates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KmsStates")
            .field("generation", &self.generation())
            .finish_non_exhaustive()
    }
}

impl KmsStates {
    /// Bumped whenever a provider's state changes.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Whether `provider`'s current key_id is known now.
    pub fn is_known(&self, provider: &str) -> bool {
        matches!(self.state(provider), Some(KmsState::Known(_)))
    }

    /// The state of `provider` (`None`: not a KMS v2 provider of this config).
    pub fn state(&self, provider: &str) -> Option<KmsState> {
        let providers = self.providers.lock().ok()?;
        providers.get(provider).map(|p| p.state.clone())
    }

    /// Every provider with its endpoint and state.
    pub fn all(&self) -> Vec<(String, String, KmsState)> {
        match self.providers.lock() {
            Ok(p) => p
                .iter()
                .map(|(name, p)| (name.clone(), p.endpoint.clone(), p.state.clone()))
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Asks every plugin for its Status once (blocking: call from a blocking thread).
    pub fn probe(&self) {
        let services: Vec<(String, Arc<dyn KmsV2Service>)> = match self.providers.lock() {
            Ok(p) => p
                .iter()
                .map(|(name, p)| (name.clone(), Arc::clone(&p.service)))
                .collect(),
            Err(_) => return,
        };
        for (name, service) in services {
            let answer = service.status();
            self.record(&name, &answer);
        }
    }

    fn register(&self, name: &str, endpoint: &str, service: Arc<dyn KmsV2Service>) {
        if let Ok(mut p) = self.providers.lock() {
            p.insert(
                name.to_string(),
                Provider {
                    endpoint: endpoint.to_string(),
                    service,
                    state: KmsState::Unknown("Status not called yet".into()),
                },
            );
        }
    }

    fn record(&self, name: &str, answer: &Result<StatusResponse, KmsError>) {
        let state = match answer {
            Ok(s) if s.healthz == "ok" && !s.key_id.is_empty() => KmsState::Known(s.key_id.clone()),
            Ok(s) if s.healthz != "ok" => KmsState::Unknown(format!("unhealthy: {}", s.healthz)),
            Ok(_) => KmsState::Unknown("Status returned an empty key_id".into()),
            Err(e) => KmsState::Unknown(e.to_string()),
        };
        let Ok(mut providers) = self.providers.lock() else {
            return;
        };
        let Some(p) = providers.get_mut(name) else {
            return;
        };
        let changed = match (&p.state, &state) {
            (KmsState::Known(a), KmsState::Known(b)) => a != b,
            (KmsState::Unknown(_), KmsState::Unknown(_)) => false,
            _ => true,
        };
        if changed {
            match &state {
                KmsState::Known(key_id) => {
                    tracing::info!(provider = name, endpoint = %p.endpoint, %key_id, "KMS plugin current key_id")
                }
                KmsState::Unknown(reason) => {
                    tracing::warn!(provider = name, endpoint = %p.endpoint, %reason, "KMS plugin cannot say its current key_id; its objects are reported as unknown")
                }
            }
            self.generation.fetch_add(1, Ordering::SeqCst);
        }
        p.state = state;
    }
}

/// A [`KmsConnector`] that records what every KMS v2 plugin's `Status` says into [`KmsStates`].
pub struct ObservingConnector {
    inner: Arc<dyn KmsConnector>,
    states: Arc<KmsStates>,
}

impl ObservingConnector {
    pub fn new(inner: Arc<dyn KmsConnector>) -> Self {
        Self {
            inner,
            states: Arc::new(KmsStates::default()),
        }
    }

    /// The states of the providers connected through this connector.
    pub fn states(&self) -> Arc<KmsStates> {
        Arc::clone(&self.states)
    }
}

impl KmsConnector for ObservingConnector {
    fn connect_v2(
        &self,
        name: &str,
        endpoint: &str,
        timeout: Duration,
    ) -> Result<Arc<dyn KmsV2Service>, KmsError> {
        let inner = self.inner.connect_v2(name, endpoint, timeout)?;
        self.states.register(name, endpoint, Arc::clone(&inner));
        Ok(Arc::new(Observed {
            name: name.to_string(),
            inner,
            states: Arc::clone(&self.states),
        }))
    }

    fn connect_v1(
        &self,
        name: &str,
        endpoint: &str,
        timeout: Duration,
    ) -> Result<Arc<dyn KmsV1Service>, KmsError> {
        // KMS v1 has no key_id: nothing to observe.
        self.inner.connect_v1(name, endpoint, timeout)
    }
}

struct Observed {
    name: String,
    inner: Arc<dyn KmsV2Service>,
    states: Arc<KmsStates>,
}

impl KmsV2Service for Observed {
    fn status(&self) -> Result<StatusResponse, KmsError> {
        let answer = self.inner.status();
        self.states.record(&self.name, &answer);
        answer
    }
    fn encrypt(&self, uid: &str, plaintext: &[u8]) -> Result<EncryptResponse, KmsError> {
        self.inner.encrypt(uid, plaintext)
    }
    fn decrypt(&self, request: &DecryptRequest) -> Result<Zeroizing<Vec<u8>>, KmsError> {
        self.inner.decrypt(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Scripted(Mutex<Result<StatusResponse, KmsError>>);
    impl KmsV2Service for Scripted {
        fn status(&self) -> Result<StatusResponse, KmsError> {
            match &*self.0.lock().unwrap() {
                Ok(s) => Ok(s.clone()),
                Err(e) => Err(KmsError::Rejected(e.to_string())),
            }
        }
        fn encrypt(&self, _: &str, _: &[u8]) -> Result<EncryptResponse, KmsError> {
            Err(KmsError::Rejected("no".into()))
        }
        fn decrypt(&self, _: &DecryptRequest) -> Result<Zeroizing<Vec<u8>>, KmsError> {
            Err(KmsError::Rejected("no".into()))
        }
    }

    fn status(healthz: &str, key_id: &str) -> Result<StatusResponse, KmsError> {
        Ok(StatusResponse {
            version: "v2".into(),
            healthz: healthz.into(),
            key_id: key_id.into(),
        })
    }

    #[test]
    fn known_only_after_a_healthy_status_and_every_change_bumps_the_generation() {
        let states = KmsStates::default();
        let plugin = Arc::new(Scripted(Mutex::new(status("ok", "k1"))));
        states.register("p", "unix:///x", plugin.clone());
        assert!(!states.is_known("p"), "never guessed before a Status");
        let g0 = states.generation();
        states.probe();
        assert_eq!(states.state("p"), Some(KmsState::Known("k1".into())));
        let g1 = states.generation();
        assert!(g1 > g0);
        states.probe();
        assert_eq!(states.generation(), g1, "same answer, same generation");
        *plugin.0.lock().unwrap() = status("local backend unhealthy: disk", "k1");
        states.probe();
        assert!(!states.is_known("p"));
        *plugin.0.lock().unwrap() = Err(KmsError::Unavailable {
            endpoint: "unix:///x".into(),
            reason: "connection refused".into(),
        });
        let g2 = states.generation();
        states.probe();
        assert_eq!(states.generation(), g2, "still unknown");
        match states.state("p") {
            Some(KmsState::Unknown(reason)) => assert!(reason.contains("connection refused")),
            other => panic!("{other:?}"),
        }
        *plugin.0.lock().unwrap() = status("ok", "k2");
        states.probe();
        assert_eq!(states.state("p"), Some(KmsState::Known("k2".into())));
        assert!(states.generation() > g2);
        assert_eq!(states.state("other"), None);
    }
}
