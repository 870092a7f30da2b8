//! One module per command. Owners (while the first version is built): encrypt/decrypt/keygen/bench
//! core-providers; config core-config; kms kms; status/get/rewrite/etcd_args etcd; snapshot/backup
//! snapshot.

pub mod apiserver;
pub mod audit;
pub mod backup;
pub mod backup_snapshot;
pub mod bench;
pub mod common;
pub mod config;
pub mod decode;
pub mod decrypt;
pub mod encrypt;
pub mod etcd_args;
pub mod get;
pub mod keygen;
pub mod kms;
pub mod kms_deploy;
pub mod monitor;
pub mod object_name;
pub mod report_output;
pub mod rewrite;
pub mod rotate;
pub mod snapshot;
pub mod status;
pub mod terminal_text;
pub mod version;
pub mod yaml_output;
