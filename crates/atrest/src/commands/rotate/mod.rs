//! `atrest rotate`: key and provider rotation across an HA control plane, gated by what every
//! apiserver (`/metrics`) and etcd (a scan at one revision) report. The procedure itself (configs,
//! plan and state files, gates) lives in `atrest-rotate`; these modules do the I/O.

pub mod apiserver;
pub mod apply;
mod backup;
pub mod kek;
pub mod plan;
mod sealed_spool;
mod session;
pub mod status;

use std::process::ExitCode;

#[derive(clap::Subcommand)]
pub enum RotateCommand {
    /// Generate new keys and the stage/promote/retire configs of a rotation in a new directory.
    Plan(plan::PlanArgs),
    /// Drive a plan to the end: install each config, wait for every apiserver, rewrite, retire.
    Apply(apply::ApplyArgs),
    /// Where a rotation stands: milestones, gates per apiserver, objects per key, next action.
    Status(status::StatusArgs),
    /// KMS v2 KEK rotation: wait until every apiserver uses the new key ID, rewrite, verify.
    Kek(kek::KekArgs),
}

pub fn run(cmd: RotateCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        RotateCommand::Plan(args) => plan::run(args),
        RotateCommand::Apply(args) => apply::run(args),
        RotateCommand::Status(args) => status::run(args),
        RotateCommand::Kek(args) => kek::run(args),
    }
}
