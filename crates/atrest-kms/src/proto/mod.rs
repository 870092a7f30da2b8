//! Generated gRPC code for the two KMS plugin APIs.
//!
//! Checked in so the crate builds without `protoc`. Regenerate from `proto/*.proto` with
//! `tonic-prost-build` (`build_transport(false)`) + `protox`; see `docs/kms.md`.

/// `package v2;` — the KMS v2 API (KMS-PLUGIN-API.md §2).
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod v2 {
    include!("v2.rs");
}

/// `package v1beta1;` — the deprecated KMS v1 API (KMS-PLUGIN-API.md §3).
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod v1beta1 {
    include!("v1beta1.rs");
}
