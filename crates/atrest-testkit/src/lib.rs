//! # atrest-testkit (dev-only)
//!
//! Real etcd servers for tests, started from the `etcd` binary on `PATH` (or `$ETCD_BIN`) on free
//! loopback ports in temporary directories: single members, TLS with client certificates made by
//! the test ([`tls`]), and three-member clusters whose members can be stopped, killed and restarted.
//! Dropping a server kills its process. A missing etcd binary makes the test **fail** (panic) with
//! a message saying how to install it — tests never silently skip.
//!
//! Also: apiserver stand-ins for rotation tests ([`apiserver`]), a real `atrest kms serve` plugin
//! ([`KmsPlugin`]), KMS plugins that look healthy but cannot decrypt or lie about their key ID
//! ([`hostile_kms`]), a real OpenBao dev server ([`OpenBao`]), a real AWS KMS API server ([`Moto`],
//! `moto_server`), the sample cluster (`testdata/clusters/sample`) and bulk loading of key/values.
#![forbid(unsafe_code)]

pub mod apiserver;
mod etcd;
pub mod hostile_kms;
mod kms_plugin;
pub mod load;
mod moto;
pub mod openbao;
pub mod sample;
pub mod tls;

pub use apiserver::{http, ApiserverOptions, ApiserverStandIn, TlsServing};
pub use etcd::{find_etcd, EtcdCluster, EtcdMember, EtcdServer};
pub use hostile_kms::{HostileKms, Misbehaviour, CONTROL_KEY_ID};
pub use kms_plugin::KmsPlugin;
pub use moto::{free_port, Moto};
pub use openbao::OpenBao;
pub use tls::TlsFiles;

/// The workspace root (for `testdata/`).
pub fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}
