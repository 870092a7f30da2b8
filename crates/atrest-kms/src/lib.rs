//! # atrest-kms
//!
//! The KMS plugin gRPC API (`v2.KeyManagementService`, and the deprecated `v1beta1`) over a unix
//! socket, both halves:
//!
//! * [`server`]: `atrest kms serve`, the plugin kube-apiserver calls. Key material lives behind one
//!   [`KeyBackend`] trait with one folder per backend a newcomer can read alone:
//!   [`backends::local`] (versioned KEK files, optionally sealed by a passphrase),
//!   [`backends::pkcs11`] (the KEK never leaves the token), [`backends::vault`]
//!   (Vault/OpenBao Transit) and [`backends::aws`] (AWS KMS).
//! * [`client`]: implements [`atrest_core::kms::KmsConnector`], so the core envelope providers can
//!   talk to any vendor's plugin socket.
//! * [`bench`]: measures calls/s and latency of any KMS v2 plugin.
//!
//! Nothing in this crate logs plaintext, DEKs/seeds or KEKs; key material is held in
//! [`zeroize::Zeroizing`] buffers or inside aws-lc / the HSM.
#![forbid(unsafe_code)]

pub mod backend;
pub mod backends;
pub mod bench;
pub mod client;
pub mod endpoint;
pub mod proto;
pub mod server;

pub use backend::{BackendError, KeyBackend, Wrapped};
pub use endpoint::{Endpoint, EndpointError};
pub use zeroize::Zeroizing;
