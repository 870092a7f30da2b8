//! One module per command. Owners (while the first version is built): encrypt/decrypt/keygen/bench
//! core-providers; config core-config; kms kms; status/get/rewrite/etcd_args etcd; snapshot/backup
//! snapshot.

pub mod backup;
pub mod bench;
pub mod common;
pub mod config;
pub mod decrypt;
pub mod encrypt;
pub mod etcd_args;
pub mod get;
pub mod keygen;
pub mod kms;
pub mod report_output;
pub mod rewrite;
pub mod snapshot;
pub mod status;
pub mod terminal_text;
pub mod yaml_output;
