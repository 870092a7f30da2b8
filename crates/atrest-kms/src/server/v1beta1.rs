//! The deprecated `v1beta1.KeyManagementService` (KMS-PLUGIN-API.md §3), served with `--v1beta1`.
//!
//! v1 has no key id in Decrypt, so the ciphertext carries it:
//! `0x01 ‖ u16_be(len(key_id)) ‖ key_id ‖ backend ciphertext` (≤ 65535 bytes, the apiserver's
//! limit). Arbitrary plaintexts are accepted (the apiserver's health check encrypts `"ping"`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tonic::{Request, Response, Status};
use zeroize::Zeroizing;

use super::health::HealthState;
use super::metrics::{Method, Metrics};
use super::{backend_status, code_name};
use crate::backend::KeyBackend;
use crate::proto::v1beta1 as pb;

pub const MAX_PLAINTEXT: usize = 32 * 1024;
const MAX_CIPHER: usize = 65535;
const FRAME_VERSION: u8 = 1;

pub(crate) struct V1Service {
    pub backend: Arc<dyn KeyBackend>,
    pub health: Arc<HealthState>,
    pub metrics: Arc<Metrics>,
    pub timeout: Duration,
}

fn check_version(v: &str) -> Result<(), Status> {
    if v.is_empty() || v == "v1beta1" {
        Ok(())
    } else {
        Err(Status::invalid_argument(format!(
            "KMS provider api version {v} is not supported, only v1beta1 is supported now"
        )))
    }
}

/// Splits a framed v1 ciphertext into (key id, backend ciphertext).
fn unframe(cipher: &[u8]) -> Result<(&str, &[u8]), Status> {
    let bad = || Status::invalid_argument("ciphertext was not produced by this plugin");
    let (&ver, rest) = cipher.split_first().ok_or_else(bad)?;
    if ver != FRAME_VERSION || rest.len() < 2 {
        return Err(bad());
    }
    let n = u16::from_be_bytes([rest[0], rest[1]]) as usize;
    let rest = &rest[2..];
    if rest.len() < n {
        return Err(bad());
    }
    let key_id = std::str::from_utf8(&rest[..n]).map_err(|_| bad())?;
    Ok((key_id, &rest[n..]))
}

impl V1Service {
    fn done<T>(&self, m: Method, start: Instant, r: Result<T, Status>) -> Result<T, Status> {
        self.metrics.observe(
            m,
            start.elapsed(),
            r.as_ref().err().map(|s| code_name(s.code())),
        );
        r
    }

    async fn encrypt_inner(&self, req: pb::EncryptRequest) -> Result<pb::EncryptResponse, Status> {
        check_version(&req.version)?;
        let plain = Zeroizing::new(req.plain);
        if plain.is_empty() {
            return Err(Status::invalid_argument("plaintext is empty"));
        }
        if plain.len() > MAX_PLAINTEXT {
            return Err(Status::invalid_argument(format!(
                "plaintext is {} bytes, limit {MAX_PLAINTEXT}",
                plain.len()
            )));
        }
        let w = match tokio::time::timeout(self.timeout, self.backend.wrap(&plain)).await {
            Err(_) => return Err(Status::deadline_exceeded("backend did not answer in time")),
            Ok(Err(e)) => {
                self.health.report_call_error(&e);
                return Err(backend_status(&e));
            }
            Ok(Ok(w)) => w,
        };
        let id = w.key_id.as_bytes();
        let mut cipher = Vec::with_capacity(3 + id.len() + w.ciphertext.len());
        cipher.push(FRAME_VERSION);
        cipher.extend_from_slice(
            &(u16::try_from(id.len()).map_err(|_| Status::internal("key id too long"))?)
                .to_be_bytes(),
        );
        cipher.extend_from_slice(id);
        cipher.extend_from_slice(&w.ciphertext);
        if cipher.len() > MAX_CIPHER {
            return Err(Status::invalid_argument(
                "ciphertext would exceed 65535 bytes",
            ));
        }
        Ok(pb::EncryptResponse { cipher })
    }

    async fn decrypt_inner(&self, req: pb::DecryptRequest) -> Result<pb::DecryptResponse, Status> {
        check_version(&req.version)?;
        let (key_id, ct) = unframe(&req.cipher)?;
        let plain = match tokio::time::timeout(
            self.timeout,
            self.backend.unwrap(key_id, ct, &BTreeMap::new()),
        )
        .await
        {
            Err(_) => return Err(Status::deadline_exceeded("backend did not answer in time")),
            Ok(Err(e)) => {
                self.health.report_call_error(&e);
                return Err(backend_status(&e));
            }
            Ok(Ok(p)) => p,
        };
        Ok(pb::DecryptResponse {
            plain: plain.to_vec(),
        })
    }
}

#[tonic::async_trait]
impl pb::key_management_service_server::KeyManagementService for V1Service {
    async fn version(
        &self,
        request: Request<pb::VersionRequest>,
    ) -> Result<Response<pb::VersionResponse>, Status> {
        let start = Instant::now();
        let r = check_version(&request.get_ref().version).map(|()| pb::VersionResponse {
            version: "v1beta1".into(),
            runtime_name: "atrest-kms".into(),
            runtime_version: env!("CARGO_PKG_VERSION").into(),
        });
        self.done(Method::V1Version, start, r).map(Response::new)
    }

    async fn encrypt(
        &self,
        request: Request<pb::EncryptRequest>,
    ) -> Result<Response<pb::EncryptResponse>, Status> {
        let start = Instant::now();
        let r = self.encrypt_inner(request.into_inner()).await;
        self.done(Method::V1Encrypt, start, r).map(Response::new)
    }

    async fn decrypt(
        &self,
        request: Request<pb::DecryptRequest>,
    ) -> Result<Response<pb::DecryptResponse>, Status> {
        let start = Instant::now();
        let r = self.decrypt_inner(request.into_inner()).await;
        self.done(Method::V1Decrypt, start, r).map(Response::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unframe_refuses_garbage() {
        assert!(unframe(b"").is_err());
        assert!(unframe(b"\x02\x00\x00").is_err());
        assert!(unframe(b"\x01\x00\x09abc").is_err());
        assert!(unframe(b"\x01\x00").is_err());
        let (id, ct) = unframe(b"\x01\x00\x02idCT").unwrap();
        assert_eq!((id, ct), ("id", &b"CT"[..]));
    }
}
