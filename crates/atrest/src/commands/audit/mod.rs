//! `atrest audit`: the checks an expert makes on a control-plane node for encryption at rest,
//! each pass / warn / fail with the fix to apply. Unlike a grep of the manifest (kube-bench's CIS
//! 1.2.x checks), it loads the config as kube-apiserver does, checks file and socket permissions,
//! and with etcd access reads every covered object to see that it is encrypted with its current
//! key (the same scan as `atrest status`).
//!
//! Exit code: 0 every check passed, 3 warnings (no failure), 1 a failure.

mod checks;
mod etcd;
mod files;

use std::path::PathBuf;
use std::process::ExitCode;

use serde::Serialize;

use super::apiserver::DEFAULT_MANIFEST;
use super::etcd_args::EtcdArgs;
use super::report_output::{write_document, OutputFormat};
pub use checks::{Check, Status};

#[derive(clap::Args)]
pub struct AuditArgs {
    /// kube-apiserver's static-pod manifest: its flags name the config and the etcd connection.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_MANIFEST)]
    pub manifest: PathBuf,
    /// The EncryptionConfiguration [default: --encryption-provider-config in the manifest].
    #[arg(long, alias = "encryption-provider-config", value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// etcd connection [default: kube-apiserver's --etcd-servers/--etcd-cafile/--etcd-certfile/
    /// --etcd-keyfile from the manifest].
    #[command(flatten)]
    pub etcd: EtcdArgs,
    /// Skip the checks that need etcd.
    #[arg(long)]
    pub no_etcd: bool,
    /// The local KMS plugin's key store to check [default: /var/lib/atrest/kms when it exists].
    #[arg(long, value_name = "DIR")]
    pub key_store: Option<PathBuf>,
    /// Require FIPS 140-approved providers [default: on when /proc/sys/crypto/fips_enabled is 1].
    #[arg(long)]
    pub fips: bool,
    /// kube-apiserver feature gates that change how the config loads, e.g. `KMSv1=true`
    /// [default: --feature-gates in the manifest].
    #[arg(long, value_name = "GATES")]
    pub feature_gates: Option<String>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
}

#[derive(Serialize)]
struct Summary {
    pass: usize,
    warn: usize,
    fail: usize,
}

#[derive(Serialize)]
struct Report<'a> {
    checks: &'a [Check],
    summary: Summary,
}

pub fn run(args: AuditArgs) -> anyhow::Result<ExitCode> {
    let mut out = Vec::new();
    let node = files::node_checks(&args, &mut out);
    if !args.no_etcd {
        etcd::etcd_checks(&args, &node, &mut out);
    }
    let count = |s: Status| out.iter().filter(|c| c.status == s).count();
    let summary = Summary {
        pass: count(Status::Pass),
        warn: count(Status::Warn),
        fail: count(Status::Fail),
    };
    let code = ExitCode::from(if summary.fail > 0 {
        crate::exit::FAILURE
    } else if summary.warn > 0 {
        crate::exit::NOT_CURRENT
    } else {
        crate::exit::SUCCESS
    });
    super::common::emit(code, |stdout| match args.output {
        OutputFormat::Table => Ok(checks::render_table(&out, stdout)?),
        document => write_document(
            document,
            &Report {
                checks: &out,
                summary,
            },
            stdout,
        ),
    })
}
