//! # atrest-kms
//!
//! The KMS plugin gRPC API (`v2.KeyManagementService`, and the deprecated `v1beta1`) over a unix
//! socket, both halves:
//!
//! * `server`: `atrest kms serve`, the plugin kube-apiserver calls, with one folder per key backend
//!   behind one `KeyBackend` trait: `backends/local/`, `backends/pkcs11/`, `backends/vault/`.
//! * `client`: implements `atrest_core::kms::KmsConnector`, so the core envelope providers can talk to
//!   any vendor's plugin socket.
//!
//! OWNER: kms helper.
#![forbid(unsafe_code)]
