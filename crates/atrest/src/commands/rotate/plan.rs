//! `atrest rotate plan`: fresh keys, the stage/promote/retire configs and `plan.json` in a new 0700
//! directory; with `--endpoints`, the objects each rotated entry holds today.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use atrest_core::config::content_hash;
use atrest_rotate::files::{self, FileRef, LoadFlags, PlanDoc, PLAN_FILE};
use atrest_rotate::gates;
use atrest_rotate::model::KeysKind;
use atrest_rotate::plan::{generate, ConfigStep, PlanRequest, Target};
use serde::Serialize;
use zeroize::Zeroizing;

use crate::commands::common::parse_duration;
use crate::commands::etcd_args::{endpoints_given, runtime, ConfigArgs, EtcdArgs};
use crate::commands::report_output::OutputFormat;
use crate::commands::terminal_text::escape_control;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlanProvider {
    Aescbc,
    Aesgcm,
    Secretbox,
    Kms,
}

#[derive(clap::Args)]
pub struct PlanArgs {
    /// CURRENT: the config every apiserver runs today (`--config`), with the apiservers' loading
    /// flags.
    #[command(flatten)]
    pub config: ConfigArgs,
    /// New directory (0700) for the plan; must not exist or be empty.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Provider to rotate to (default: a new key for each entry's current local provider).
    #[arg(long, value_enum)]
    pub provider: Option<PlanProvider>,
    /// `--provider kms`: the new KMS v2 provider's name.
    #[arg(long, value_name = "NAME")]
    pub kms_name: Option<String>,
    /// `--provider kms`: the plugin socket, `unix:///path`.
    #[arg(long, value_name = "URL")]
    pub kms_endpoint: Option<String>,
    /// `--provider kms`: per-call timeout.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub kms_timeout: Duration,
    /// Rotate only the entries naming these resources (as CURRENT writes them). Default: every
    /// entry that encrypts.
    #[arg(long, value_delimiter = ',', value_name = "R")]
    pub resources: Vec<String>,
    /// Retire without `identity` (apply then requires a scan showing no plaintext left).
    #[arg(long)]
    pub drop_identity: bool,
    /// Name of the new keys (default `key-<UTC date>`).
    #[arg(long, value_name = "NAME")]
    pub key_name: Option<String>,
    /// With `--endpoints`: count the objects each rotated entry holds.
    #[command(flatten)]
    pub etcd: EtcdArgs,
    #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
}

#[derive(Serialize)]
struct PlanOutput<'a> {
    dir: String,
    #[serde(flatten)]
    plan: &'a PlanDoc,
    #[serde(skip_serializing_if = "Option::is_none")]
    objects: Option<Vec<EntryObjects>>,
}

#[derive(Serialize)]
struct EntryObjects {
    index: usize,
    total: u64,
    counts: Vec<gates::Count>,
}

pub fn run(args: PlanArgs) -> anyhow::Result<ExitCode> {
    let target = match args.provider {
        None => None,
        Some(PlanProvider::Aescbc) => Some(Target::Keys(KeysKind::Aescbc)),
        Some(PlanProvider::Aesgcm) => Some(Target::Keys(KeysKind::Aesgcm)),
        Some(PlanProvider::Secretbox) => Some(Target::Keys(KeysKind::Secretbox)),
        Some(PlanProvider::Kms) => {
            let (Some(name), Some(endpoint)) = (&args.kms_name, &args.kms_endpoint) else {
                bail!("--provider kms needs --kms-name and --kms-endpoint unix:///…");
            };
            Some(Target::Kms {
                name: name.clone(),
                endpoint: endpoint.clone(),
                timeout: args.kms_timeout,
            })
        }
    };
    if args.provider != Some(PlanProvider::Kms)
        && (args.kms_name.is_some() || args.kms_endpoint.is_some())
    {
        bail!("--kms-name and --kms-endpoint go with --provider kms");
    }
    let opts = args.config.load_options()?;
    let path = &args.config.config;
    let bytes =
        Zeroizing::new(std::fs::read(path).with_context(|| format!("reading {}", path.display()))?);
    let current = atrest_core::config::load_bytes(&bytes, &path.display().to_string(), &opts)
        .with_context(|| format!("CURRENT {} does not load", path.display()))?;
    let text = Zeroizing::new(
        String::from_utf8(bytes.to_vec())
            .with_context(|| format!("{} is not UTF-8", path.display()))?,
    );
    let request = PlanRequest {
        target,
        resources: args
            .resources
            .iter()
            .map(|r| r.trim().to_string())
            .collect(),
        drop_identity: args.drop_identity,
        key_name: args
            .key_name
            .clone()
            .unwrap_or_else(crate::commands::keygen::default_name),
    };
    let generated = generate(&text, &current, &request, &opts)?;

    // Everything is checked; only now touch the disk.
    files::create_plan_dir(&args.out)?;
    let dir = std::fs::canonicalize(&args.out)
        .with_context(|| format!("resolving {}", args.out.display()))?;
    let mut refs = Vec::new();
    for step in ConfigStep::ALL {
        let text = generated.text(step);
        files::write_new(&dir.join(step.file_name()), text.as_bytes())?;
        refs.push(FileRef {
            path: step.file_name().into(),
            hash: content_hash(text.as_bytes()),
        });
    }
    let mut refs = refs.into_iter();
    let mut next = || refs.next().unwrap_or_else(|| unreachable!("three steps"));
    let plan = PlanDoc {
        version: 1,
        created_unix: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        current: FileRef {
            path: std::fs::canonicalize(path)
                .unwrap_or_else(|_| path.clone())
                .display()
                .to_string(),
            hash: current.content_hash.clone(),
        },
        stage: next(),
        promote: next(),
        retire: next(),
        entries: generated.entries.clone(),
        drop_identity: args.drop_identity,
        load: LoadFlags {
            kms_v1: opts.kms_v1_enabled,
            automatic_reload: opts.automatic_reload,
        },
        rendered_canonically: generated.canonical.clone(),
    };
    files::write_new(&dir.join(PLAN_FILE), &files::to_json(&plan))?;

    let objects = if endpoints_given() {
        Some(count_objects(&args)?)
    } else {
        None
    };
    crate::commands::common::emit(ExitCode::SUCCESS, |out| match args.output {
        OutputFormat::Json | OutputFormat::Yaml => {
            let doc = PlanOutput {
                dir: dir.display().to_string(),
                plan: &plan,
                objects,
            };
            crate::commands::report_output::write_document(args.output, &doc, out)
        }
        OutputFormat::Table => Ok(render(&dir, &plan, objects.as_deref(), out)?),
    })
}

/// The objects of every entry today, counted at one revision with CURRENT.
fn count_objects(args: &PlanArgs) -> anyhow::Result<Vec<EntryObjects>> {
    let (config, transformers) = args.config.load()?;
    let rt = runtime()?;
    let conn = args.etcd.connect(&rt)?;
    let scan = rt.block_on(gates::scan_objects(
        &conn,
        &config,
        transformers,
        &args.etcd.etcd_prefix,
        false,
    ))?;
    Ok(per_entry(&scan))
}

fn per_entry(scan: &gates::ObjectScan) -> Vec<EntryObjects> {
    let mut indices: Vec<usize> = scan.counts.iter().filter_map(|c| c.entry).collect();
    indices.sort_unstable();
    indices.dedup();
    indices
        .into_iter()
        .map(|index| {
            let counts: Vec<gates::Count> = gates::entry_counts(scan, index)
                .into_iter()
                .cloned()
                .collect();
            EntryObjects {
                index,
                total: counts.iter().map(|c| c.count).sum(),
                counts,
            }
        })
        .collect()
}

fn render(
    dir: &Path,
    plan: &PlanDoc,
    objects: Option<&[EntryObjects]>,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    writeln!(out, "plan written to {}", dir.display())?;
    for step in ConfigStep::ALL {
        writeln!(out, "  {:<13} {}", step.file_name(), plan.file(step).hash)?;
    }
    writeln!(out, "  {PLAN_FILE:<13} (no key material)")?;
    if let Some(why) = &plan.rendered_canonically {
        writeln!(
            out,
            "note: CURRENT could not be edited in place ({why}); the files use the canonical layout"
        )?;
    }
    writeln!(out)?;
    for e in &plan.entries {
        let retired: Vec<String> = e.retired.iter().map(|l| l.to_string()).collect();
        writeln!(
            out,
            "resources[{}] {}: {} → {}",
            e.index,
            e.resources.join(", "),
            e.from,
            e.to
        )?;
        writeln!(out, "  stage:   {} added as a read-only provider/key", e.to)?;
        writeln!(out, "  promote: {} writes, {} still reads", e.to, e.from)?;
        writeln!(out, "  rewrite: every object to {}", e.to)?;
        writeln!(
            out,
            "  retire:  {}{}",
            if retired.is_empty() {
                "nothing removed".to_string()
            } else {
                format!("{} removed", retired.join(", "))
            },
            if e.identity_kept {
                "; identity kept for reads"
            } else {
                ""
            }
        )?;
        if let Some(objs) = objects {
            match objs.iter().find(|o| o.index == e.index) {
                Some(o) => {
                    let parts: Vec<String> = o
                        .counts
                        .iter()
                        .map(|c| {
                            format!(
                                "{} {} under {}{}",
                                c.count,
                                escape_control(&c.resource),
                                escape_control(&c.label.to_string()),
                                if c.readable { "" } else { " (unreadable)" }
                            )
                        })
                        .collect();
                    writeln!(out, "  objects: {} ({})", o.total, parts.join(", "))?;
                }
                None => writeln!(out, "  objects: 0")?,
            }
        }
    }
    writeln!(out)?;
    writeln!(
        out,
        "next: atrest rotate apply --plan {} --endpoints … --apiserver https://NODE:6443 … --install 'CMD'",
        dir.display()
    )?;
    Ok(())
}
