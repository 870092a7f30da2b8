//! # atrest-rotate
//!
//! The rotation procedure of `atrest rotate`, as a library the CLI drives:
//!
//! * [`model`]: a rotation's view of an `EncryptionConfiguration` (what the core loader returns),
//!   compared field by field and rendered canonically when a file cannot be edited in place;
//! * [`splice`]: edits of the operator's YAML text that touch only the provider and key lists a
//!   rotation changes, so every other byte of CURRENT survives;
//! * [`plan`]: from CURRENT to the three configs of a rotation — *stage* (new key read-only),
//!   *promote* (new key writes), *retire* (old keys gone) — each checked with the core's loader;
//! * [`files`]: the plan directory (0700), its files (0600), the plan and state documents written
//!   atomically (temp file `O_EXCL` + rename);
//! * [`gates`]: the etcd scan behind the retire gate and the "not in this config" grouping;
//! * [`metrics`]: what an apiserver reports on `/metrics` about its loaded config and KMS key IDs;
//! * [`leases`]: kube-apiserver identity leases, to notice a live apiserver nobody watches;
//! * [`stored`]: the provider and key named by a stored value's prefix, for grouping values a
//!   config cannot read.
//!
//! I/O beyond local files (etcd, HTTP, running the install command) lives in the CLI.
#![forbid(unsafe_code)]

pub mod files;
pub mod gates;
pub mod leases;
pub mod metrics;
pub mod model;
pub mod plan;
pub mod splice;
pub mod stored;

/// Why a plan could not be made or a plan directory not be used.
#[derive(Debug, thiserror::Error)]
pub enum RotateError {
    /// Bad input: flags, CURRENT's content, an existing directory.
    #[error("{0}")]
    Invalid(String),
    /// A generated config that the core loader refuses (a bug or an unsupported CURRENT).
    #[error("generated {step} config does not load: {detail}")]
    Generated { step: &'static str, detail: String },
    /// Reading or writing a file.
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl RotateError {
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        RotateError::Io {
            path: path.display().to_string(),
            source,
        }
    }
}
