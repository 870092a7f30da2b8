//! `v2.KeyManagementService` (KMS-PLUGIN-API.md §2) on top of a [`KeyBackend`].

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tonic::{Request, Response, Status};
use zeroize::Zeroizing;

use super::health::{Health, HealthState};
use super::metrics::{Method, Metrics};
use super::{backend_status, code_name};
use crate::backend::KeyBackend;
use crate::proto::v2 as pb;

/// The apiserver sends 32 bytes; anything far larger cannot produce a ≤ 1024-byte ciphertext.
pub const MAX_PLAINTEXT: usize = 512;
/// Ciphertext and key id limit of the v2 API.
pub const MAX_CIPHERTEXT: usize = 1024;
pub const MAX_KEY_ID: usize = 1024;
pub const MAX_ANNOTATIONS: usize = 32 * 1024;

/// KMS v2 annotation keys must be fully qualified domain names (WIRE-FORMAT.md §6.2.1): one
/// optional trailing dot, then an RFC 1123 subdomain with at least two labels.
pub fn valid_annotation_key(key: &str) -> bool {
    atrest_core::providers::kmsv2::annotation_key_error(key).is_none()
}

pub(crate) struct V2Service {
    pub backend: Arc<dyn KeyBackend>,
    pub health: Arc<HealthState>,
    pub metrics: Arc<Metrics>,
    pub timeout: Duration,
}

impl V2Service {
    fn done<T>(&self, m: Method, start: Instant, r: Result<T, Status>) -> Result<T, Status> {
        self.metrics.observe(
            m,
            start.elapsed(),
            r.as_ref().err().map(|s| code_name(s.code())),
        );
        r
    }

    fn status_inner(&self) -> Result<pb::StatusResponse, Status> {
        let key_id = self
            .backend
            .current_key_id()
            .map_err(|e| Status::unavailable(format!("no current key: {e}")))?;
        let healthz = match self.health.get() {
            Health::Ok => "ok".to_string(),
            Health::Failing(reason) => {
                format!("{} backend unhealthy: {reason}", self.backend.kind())
            }
        };
        Ok(pb::StatusResponse {
            version: "v2".into(),
            healthz,
            key_id,
        })
    }

    async fn encrypt_inner(&self, req: pb::EncryptRequest) -> Result<pb::EncryptResponse, Status> {
        let plaintext = Zeroizing::new(req.plaintext);
        if plaintext.is_empty() {
            return Err(Status::invalid_argument("plaintext is empty"));
        }
        if plaintext.len() > MAX_PLAINTEXT {
            return Err(Status::invalid_argument(format!(
                "plaintext is {} bytes, more than the {MAX_PLAINTEXT} this plugin accepts",
                plaintext.len()
            )));
        }
        let wrapped = match tokio::time::timeout(self.timeout, self.backend.wrap(&plaintext)).await
        {
            Err(_) => {
                return Err(Status::deadline_exceeded(format!(
                    "{} backend did not answer within {:?}",
                    self.backend.kind(),
                    self.timeout
                )))
            }
            Ok(Err(e)) => {
                self.health.report_call_error(&e);
                return Err(backend_status(&e));
            }
            Ok(Ok(w)) => w,
        };
        if wrapped.ciphertext.is_empty() || wrapped.ciphertext.len() > MAX_CIPHERTEXT {
            return Err(Status::internal(format!(
                "backend produced a {}-byte ciphertext (limit {MAX_CIPHERTEXT})",
                wrapped.ciphertext.len()
            )));
        }
        if wrapped.key_id.is_empty() || wrapped.key_id.len() > MAX_KEY_ID {
            return Err(Status::internal("backend produced an invalid key id"));
        }
        let ann_size: usize = wrapped
            .annotations
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum();
        if ann_size > MAX_ANNOTATIONS
            || !wrapped.annotations.keys().all(|k| valid_annotation_key(k))
        {
            return Err(Status::internal("backend produced invalid annotations"));
        }
        tracing::debug!(uid = %req.uid, key_id = %wrapped.key_id, "encrypt");
        Ok(pb::EncryptResponse {
            ciphertext: wrapped.ciphertext,
            key_id: wrapped.key_id,
            annotations: wrapped.annotations.into_iter().collect::<HashMap<_, _>>(),
        })
    }

    async fn decrypt_inner(&self, req: pb::DecryptRequest) -> Result<pb::DecryptResponse, Status> {
        if req.key_id.is_empty() {
            return Err(Status::invalid_argument("key_id is empty"));
        }
        if req.key_id.len() > MAX_KEY_ID {
            return Err(Status::invalid_argument(format!(
                "key_id is {} bytes, limit {MAX_KEY_ID}",
                req.key_id.len()
            )));
        }
        if req.ciphertext.is_empty() {
            return Err(Status::invalid_argument("ciphertext is empty"));
        }
        if req.ciphertext.len() > MAX_CIPHERTEXT {
            return Err(Status::invalid_argument(format!(
                "ciphertext is {} bytes, limit {MAX_CIPHERTEXT}",
                req.ciphertext.len()
            )));
        }
        let ann_size: usize = req.annotations.iter().map(|(k, v)| k.len() + v.len()).sum();
        if ann_size > MAX_ANNOTATIONS {
            return Err(Status::invalid_argument(format!(
                "annotations total {ann_size} bytes, limit {MAX_ANNOTATIONS}"
            )));
        }
        let annotations: BTreeMap<String, Vec<u8>> = req.annotations.into_iter().collect();
        let plaintext = match tokio::time::timeout(
            self.timeout,
            self.backend
                .unwrap(&req.key_id, &req.ciphertext, &annotations),
        )
        .await
        {
            Err(_) => {
                return Err(Status::deadline_exceeded(format!(
                    "{} backend did not answer within {:?}",
                    self.backend.kind(),
                    self.timeout
                )))
            }
            Ok(Err(e)) => {
                self.health.report_call_error(&e);
                tracing::debug!(uid = %req.uid, key_id = %req.key_id, error = %e, "decrypt refused");
                return Err(backend_status(&e));
            }
            Ok(Ok(p)) => p,
        };
        tracing::debug!(uid = %req.uid, key_id = %req.key_id, "decrypt");
        Ok(pb::DecryptResponse {
            plaintext: plaintext.to_vec(),
        })
    }
}

#[tonic::async_trait]
impl pb::key_management_service_server::KeyManagementService for V2Service {
    async fn status(
        &self,
        _request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let start = Instant::now();
        let r = self.status_inner();
        self.done(Method::V2Status, start, r).map(Response::new)
    }

    async fn encrypt(
        &self,
        request: Request<pb::EncryptRequest>,
    ) -> Result<Response<pb::EncryptResponse>, Status> {
        let start = Instant::now();
        let r = self.encrypt_inner(request.into_inner()).await;
        self.done(Method::V2Encrypt, start, r).map(Response::new)
    }

    async fn decrypt(
        &self,
        request: Request<pb::DecryptRequest>,
    ) -> Result<Response<pb::DecryptResponse>, Status> {
        let start = Instant::now();
        let r = self.decrypt_inner(request.into_inner()).await;
        self.done(Method::V2Decrypt, start, r).map(Response::new)
    }
}

#[cfg(test)]
mod tests {
    use super::valid_annotation_key as ok;

    #[test]
    fn annotation_keys_are_fqdns() {
        assert!(ok("local-kek.kms.kubernetes.io"));
        assert!(ok("a.b."));
        assert!(!ok("nodots"));
        assert!(!ok("Upper.case"));
        assert!(!ok("-a.b"));
        assert!(!ok("a..b"));
        assert!(!ok(""));
        assert!(!ok(&format!("{}.io", "a".repeat(64))));
    }
}
