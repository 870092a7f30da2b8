//! # atrest-store
//!
//! Where values live and how to walk them: etcd key layout to Kubernetes resources, decoding the
//! Kubernetes storage encoding for display, live etcd (paged scans at one revision, compare-and-swap
//! rewrites with checkpoints), and read-only etcd snapshot (bbolt) files. One report type serves
//! `status` on a live cluster and on a snapshot.
#![forbid(unsafe_code)]

pub mod decode;
pub mod etcd;
pub mod keymap;
pub mod report;
pub mod resources;
pub mod snapshot;
pub mod state;
