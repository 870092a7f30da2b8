//! `atrest rotate status`: where a rotation stands — the recorded milestones, each gate's live
//! verdict per apiserver, the rotated entries' objects per key (one scan at one revision) and the
//! next action. Exit 0 finished, 3 in progress, 1 blocked (with why).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use atrest_rotate::files::{BackupRecord, Milestone};
use atrest_rotate::gates;
use atrest_rotate::plan::ConfigStep;
use serde::Serialize;

use super::apiserver::{ApiserverArgs, Apiservers};
use super::session::{unwatched_apiservers, PlanDir};
use crate::commands::etcd_args::{runtime, EtcdArgs};
use crate::commands::report_output::OutputFormat;
use crate::commands::terminal_text::escape_control;

#[derive(clap::Args)]
pub struct StatusArgs {
    /// The plan directory made by `atrest rotate plan`.
    #[arg(long, value_name = "DIR")]
    pub plan: PathBuf,
    #[command(flatten)]
    pub etcd: EtcdArgs,
    #[command(flatten)]
    pub apiservers: ApiserverArgs,
    #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
}

#[derive(Serialize)]
struct ApiserverView {
    url: String,
    /// The hash it reports, or why there is none.
    loaded: String,
    /// `CURRENT`, `stage`, `promote`, `retire`, or null.
    step: Option<&'static str>,
    /// Promote gate: it reads the new key (runs stage, promote or retire).
    reads_new_key: bool,
    /// Rewrite gate: it writes with the new key (runs promote or retire).
    writes_new_key: bool,
}

#[derive(Serialize)]
struct View {
    plan: String,
    /// `in progress`, `finished`, `blocked`.
    state: &'static str,
    done: Vec<Milestone>,
    next: Option<&'static str>,
    next_action: String,
    apiservers: Vec<ApiserverView>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    unwatched_apiservers: Vec<String>,
    scan_revision: i64,
    objects: Vec<gates::Count>,
    retire_blockers: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    blocked_because: Vec<String>,
    /// The `rotate apply --backup` record, if one was taken or started.
    #[serde(skip_serializing_if = "Option::is_none")]
    backup: Option<BackupRecord>,
}

pub fn run(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let pd = PlanDir::open(&args.plan)?;
    let state = pd.state()?;
    let apis = Apiservers::new(&args.apiservers)?;
    let (promote_config, promote_t) = pd.transformers(ConfigStep::Promote)?;
    let rt = runtime()?;
    let conn = args.etcd.connect(&rt)?;
    let observations = rt.block_on(apis.observe());
    let unwatched = rt.block_on(unwatched_apiservers(
        &conn,
        &promote_t,
        &args.etcd.etcd_prefix,
        &observations,
    ))?;
    let scan = rt.block_on(gates::scan_objects(
        &conn,
        &promote_config,
        promote_t,
        &args.etcd.etcd_prefix,
        false,
    ))?;
    let mut blocked = Vec::new();
    let views: Vec<ApiserverView> = apis
        .urls
        .iter()
        .zip(&observations)
        .map(|(url, obs)| {
            let step = obs.hash().and_then(|h| pd.step_of(h));
            if step.is_none() {
                blocked.push(format!("{url}: {}", pd.describe(obs)));
            }
            ApiserverView {
                url: url.clone(),
                loaded: obs.hash().map_or_else(|| obs.describe(), str::to_string),
                step,
                reads_new_key: matches!(step, Some("stage" | "promote" | "retire")),
                writes_new_key: matches!(step, Some("promote" | "retire")),
            }
        })
        .collect();
    for u in &unwatched {
        blocked.push(format!("live apiserver {u} is not among --apiserver"));
    }
    let objects: Vec<gates::Count> = scan
        .counts
        .iter()
        .filter(|c| pd.plan.entries.iter().any(|e| Some(e.index) == c.entry))
        .cloned()
        .collect();
    let retire_blockers = gates::retire_blockers(&scan, &pd.plan.entries);
    let after_rewrite = state.has(Milestone::Rewritten);
    for c in objects.iter().filter(|c| !c.readable) {
        // Before the rewrite, values of other keys are only a problem once they are unreadable.
        blocked.push(format!(
            "{} {} under {}: unreadable with the promote config{}",
            c.count,
            c.resource,
            c.label,
            if after_rewrite {
                "; they block retire"
            } else {
                ""
            }
        ));
    }
    let finished = state.has(Milestone::Finished);
    let next = state.next();
    let next_action = match next {
        None => "nothing: the rotation is finished".to_string(),
        Some(
            Milestone::StageInstalled | Milestone::PromoteInstalled | Milestone::RetireInstalled,
        ) => {
            format!(
                "`atrest rotate apply --plan {} …` installs the next config",
                pd.dir.display()
            )
        }
        Some(Milestone::StageLoaded | Milestone::PromoteLoaded | Milestone::RetireLoaded) => {
            let lagging: Vec<&str> = views
                .iter()
                .filter(|v| match next {
                    Some(Milestone::StageLoaded) => v.step != Some("stage"),
                    Some(Milestone::PromoteLoaded) => v.step != Some("promote"),
                    _ => v.step != Some("retire"),
                })
                .map(|v| v.url.as_str())
                .collect();
            format!(
                "wait for {} to load the installed config (rerun `rotate apply` to keep waiting)",
                if lagging.is_empty() {
                    "nobody".to_string()
                } else {
                    lagging.join(", ")
                }
            )
        }
        Some(Milestone::Rewritten) => "`rotate apply` rewrites the objects".into(),
        Some(Milestone::Verified) => "`rotate apply` verifies no object uses a retired key".into(),
        Some(Milestone::Finished) => "`rotate apply` writes the escrow file and finishes".into(),
    };
    let state_name = if finished {
        "finished"
    } else if blocked.is_empty() {
        "in progress"
    } else {
        "blocked"
    };
    let view = View {
        plan: pd.dir.display().to_string(),
        state: state_name,
        done: state.done.clone(),
        next: next.map(Milestone::name),
        next_action,
        apiservers: views,
        unwatched_apiservers: unwatched,
        scan_revision: scan.revision,
        objects,
        retire_blockers,
        blocked_because: blocked,
        backup: state.backup.clone(),
    };
    let code = ExitCode::from(match view.state {
        "finished" => crate::exit::SUCCESS,
        "blocked" => crate::exit::FAILURE,
        _ => crate::exit::NOT_CURRENT,
    });
    crate::commands::common::emit(code, |out| match args.output {
        OutputFormat::Json | OutputFormat::Yaml => {
            crate::commands::report_output::write_document(args.output, &view, out)
        }
        OutputFormat::Table => Ok(render(&view, out)?),
    })
}

fn render(v: &View, out: &mut dyn Write) -> std::io::Result<()> {
    writeln!(out, "rotation {}: {}", v.plan, v.state)?;
    let done: Vec<&str> = v.done.iter().map(|m| m.name()).collect();
    writeln!(
        out,
        "  done: {}",
        if done.is_empty() {
            "nothing yet".into()
        } else {
            done.join(", ")
        }
    )?;
    if let Some(n) = v.next {
        writeln!(out, "  next: {n}")?;
    }
    writeln!(out)?;
    writeln!(
        out,
        "APISERVER  LOADED  STEP  READS NEW KEY  WRITES NEW KEY"
    )?;
    for a in &v.apiservers {
        writeln!(
            out,
            "{}  {}  {}  {}  {}",
            escape_control(&a.url),
            escape_control(&a.loaded),
            a.step.unwrap_or("-"),
            if a.reads_new_key { "yes" } else { "no" },
            if a.writes_new_key { "yes" } else { "no" }
        )?;
    }
    writeln!(out)?;
    writeln!(
        out,
        "objects of the rotated entries (etcd revision {}):",
        v.scan_revision
    )?;
    for c in &v.objects {
        writeln!(
            out,
            "  {} {} under {}{}",
            c.count,
            escape_control(&c.resource),
            escape_control(&c.label.to_string()),
            if c.readable { "" } else { " (unreadable)" }
        )?;
    }
    if !v.retire_blockers.is_empty() {
        writeln!(out, "retire gate: not met")?;
        for b in &v.retire_blockers {
            writeln!(out, "  {}", escape_control(b))?;
        }
    } else {
        writeln!(out, "retire gate: met (nothing under a retired key)")?;
    }
    if let Some(b) = &v.backup {
        writeln!(out, "{}", super::backup::describe(b))?;
    }
    for b in &v.blocked_because {
        writeln!(out, "blocked: {}", escape_control(b))?;
    }
    writeln!(out, "next action: {}", v.next_action)?;
    Ok(())
}
