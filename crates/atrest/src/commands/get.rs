//! `atrest get RESOURCE[.GROUP] [NAMESPACE/]NAME` (or `--etcd-key RAW_ETCD_KEY`): fetch one object
//! from etcd, decrypt it with the config and print it as kube-apiserver serves it (`-o json`: the
//! same object, `metadata.resourceVersion` = the key's mod revision; `-o yaml` like kubectl).

use std::io::Write;
use std::process::ExitCode;

use anyhow::{bail, Context};
use atrest_core::GroupResource;
use atrest_store::{decode, keymap};

use super::etcd_args::{runtime, ConfigArgs, EtcdArgs};
use super::object_name;
use super::terminal_text::escape_control as esc;

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum GetFormat {
    Yaml,
    Json,
    /// The decrypted storage bytes (protobuf or JSON) as they are.
    Raw,
}

#[derive(clap::Args)]
pub struct GetArgs {
    #[command(flatten)]
    pub etcd: EtcdArgs,
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Resource as kubectl names it: `secrets`, `deployments` or `deployments.apps`,
    /// `customresourcedefinitions.apiextensions.k8s.io`, `widgets.example.com`.
    #[arg(required_unless_present = "etcd_key")]
    pub resource: Option<String>,
    /// `NAMESPACE/NAME`, or `NAME` for cluster-scoped objects.
    #[arg(required_unless_present = "etcd_key")]
    pub name: Option<String>,
    /// The raw etcd key instead of RESOURCE and NAME (e.g. `/registry/secrets/default/token`).
    /// (`--key` is the client key file, as in etcdctl.)
    #[arg(long, value_name = "KEY", conflicts_with_all = ["resource", "name"])]
    pub etcd_key: Option<String>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = GetFormat::Yaml)]
    pub output: GetFormat,
}

fn etcd_key(
    args: &GetArgs,
    rt: &tokio::runtime::Runtime,
    conn: &atrest_store::etcd::EtcdConnection,
) -> anyhow::Result<(String, GroupResource)> {
    if let Some(key) = &args.etcd_key {
        let info =
            keymap::parse_key(&args.etcd.etcd_prefix, key.as_bytes()).with_context(|| {
                format!(
                    "--etcd-key {key} is not an object key under --etcd-prefix {}",
                    args.etcd.etcd_prefix
                )
            })?;
        return Ok((key.clone(), info.resource));
    }
    let (Some(resource), Some(name)) = (&args.resource, &args.name) else {
        bail!("give RESOURCE and NAME, or --etcd-key")
    };
    let prefix = &args.etcd.etcd_prefix;
    let target = object_name::resolve(prefix, resource, name, || {
        rt.block_on(crd_names(conn, prefix)).unwrap_or_default()
    })?;
    Ok((target.key, target.resource))
}

/// The names of the CRDs in etcd (keys only), for "did you mean".
async fn crd_names(
    conn: &atrest_store::etcd::EtcdConnection,
    etcd_prefix: &str,
) -> anyhow::Result<Vec<String>> {
    let prefix = object_name::crd_prefix(etcd_prefix);
    let keys = atrest_store::etcd::maintenance::list_keys(conn, prefix.as_bytes()).await?;
    Ok(object_name::crd_names_from_keys(
        etcd_prefix,
        keys.iter().map(Vec::as_slice),
    ))
}

pub fn run(args: GetArgs) -> anyhow::Result<ExitCode> {
    let (_, transformers) = args.config.load()?;
    let rt = runtime()?;
    let conn = args.etcd.connect(&rt)?;
    let (key, gr) = etcd_key(&args, &rt, &conn)?;
    super::common::check_kms_for(&transformers.for_resource(&gr))?;
    let Some((stored, mod_revision, _)) =
        rt.block_on(atrest_store::etcd::get_one(&conn, key.as_bytes()))?
    else {
        bail!("etcd key {key} not found");
    };
    let outcome = match transformers.for_resource(&gr).read(&stored, key.as_bytes()) {
        Ok(o) => o,
        Err(e) => {
            if let Some(outage) = super::common::outage_of(&e, "nothing was printed") {
                return Err(outage.context(format!("reading etcd key {key}")));
            }
            note!(
                "error: cannot decrypt etcd key {} (resource {gr}) with {}: {}",
                esc(&key),
                args.config.config.display(),
                esc(&e.to_string())
            );
            return Ok(ExitCode::from(crate::exit::UNREADABLE));
        }
    };
    let p = &outcome.provider;
    note!(
        "# {}: {}{}{}, {}, resourceVersion {mod_revision}",
        esc(&key),
        p.kind,
        p.key_name
            .as_deref()
            .map(|k| format!(" key {}", esc(k)))
            .unwrap_or_default(),
        p.key_id
            .as_deref()
            .map(|k| format!(" key_id {}", esc(k)))
            .unwrap_or_default(),
        if !transformers.covers(&gr) {
            "not covered by the config"
        } else if outcome.stale {
            "stale"
        } else {
            "current"
        }
    );
    let mut out = std::io::stdout().lock();
    if args.output == GetFormat::Raw {
        out.write_all(&outcome.plaintext)?;
        out.flush()?;
        return Ok(ExitCode::SUCCESS);
    }
    let object = decode::decode_object_at(&outcome.plaintext, mod_revision)
        .with_context(|| format!("decoding etcd key {key} (-o raw prints the stored bytes)"))?;
    match args.output {
        GetFormat::Json => {
            serde_json::to_writer_pretty(&mut out, &object)?;
            writeln!(out)?;
        }
        _ => out.write_all(super::yaml_output::single(&object)?.as_bytes())?,
    }
    Ok(ExitCode::SUCCESS)
}
