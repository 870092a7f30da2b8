//! What `rotate apply` and `rotate status` share: the opened plan directory (plan, step files
//! checked against the plan's hashes, state), the observations of the apiservers interpreted
//! against the plan, the identity-lease check and the object scan.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use atrest_core::config::{load_file, EncryptionConfiguration, LoadOptions};
use atrest_core::{GroupResource, Transformers};
use atrest_rotate::files::{self, PlanDoc, StateDoc, PLAN_FILE, STATE_FILE};
use atrest_rotate::leases;
use atrest_rotate::metrics::id_hash;
use atrest_rotate::plan::ConfigStep;
use atrest_store::etcd::scan::{Scanner, PAGE_SIZE};
use atrest_store::etcd::EtcdConnection;
use atrest_store::keymap;

use super::apiserver::{Apiservers, Observation};

/// An opened, checked plan directory.
pub struct PlanDir {
    pub dir: PathBuf,
    pub plan: PlanDoc,
    pub plan_hash: String,
    pub load: LoadOptions,
}

impl PlanDir {
    /// Opens `dir`: refuses a directory others can read, a missing or edited step file, or one the
    /// core loader refuses.
    pub fn open(dir: &Path) -> anyhow::Result<PlanDir> {
        files::check_plan_dir(dir)?;
        let dir =
            std::fs::canonicalize(dir).with_context(|| format!("resolving {}", dir.display()))?;
        let (plan, bytes): (PlanDoc, Vec<u8>) = files::read_json(&dir.join(PLAN_FILE))?;
        if plan.version != 1 {
            bail!(
                "{}: plan version {} is not supported by this atrest",
                dir.join(PLAN_FILE).display(),
                plan.version
            );
        }
        let load = LoadOptions {
            kms_v1_enabled: plan.load.kms_v1,
            automatic_reload: plan.load.automatic_reload,
        };
        let pd = PlanDir {
            plan_hash: atrest_core::config::content_hash(&bytes),
            dir,
            plan,
            load,
        };
        for step in ConfigStep::ALL {
            let config = pd.config(step)?;
            if config.content_hash != pd.plan.file(step).hash {
                bail!(
                    "{} changed since the plan was made ({} now, {} planned): plans are never edited; make a new one",
                    pd.path(step).display(),
                    config.content_hash,
                    pd.plan.file(step).hash
                );
            }
        }
        Ok(pd)
    }

    pub fn path(&self, step: ConfigStep) -> PathBuf {
        self.dir.join(&self.plan.file(step).path)
    }

    /// A step's config, loaded with the apiservers' flags.
    pub fn config(&self, step: ConfigStep) -> anyhow::Result<EncryptionConfiguration> {
        let path = self.path(step);
        load_file(&path, &self.load).with_context(|| format!("loading {}", path.display()))
    }

    /// A step's config with its transformers (KMS through the plugin sockets it names).
    pub fn transformers(
        &self,
        step: ConfigStep,
    ) -> anyhow::Result<(EncryptionConfiguration, Transformers)> {
        crate::commands::common::load_transformers(&self.path(step), &self.load)
    }

    /// The saved state, or a fresh one. A state of another plan is refused.
    pub fn state(&self) -> anyhow::Result<StateDoc> {
        let path = self.dir.join(STATE_FILE);
        if !path.exists() {
            return Ok(StateDoc::new(self.plan_hash.clone()));
        }
        let (state, _): (StateDoc, _) = files::read_json(&path)?;
        if state.plan_hash != self.plan_hash {
            bail!(
                "{} belongs to another plan (plan.json changed?); refusing to continue",
                path.display()
            );
        }
        Ok(state)
    }

    pub fn save(&self, state: &StateDoc) -> anyhow::Result<()> {
        files::write_atomic(&self.dir.join(STATE_FILE), &files::to_json(state))?;
        Ok(())
    }

    /// `CURRENT`, `stage`, `promote`, `retire`, or `None` for a hash this plan does not know.
    pub fn step_of(&self, hash: &str) -> Option<&'static str> {
        if hash == self.plan.current.hash {
            return Some("CURRENT");
        }
        ConfigStep::ALL
            .into_iter()
            .find(|s| self.plan.file(*s).hash == hash)
            .map(ConfigStep::name)
    }

    /// `sha256:… (promote)` for messages.
    pub fn describe(&self, obs: &Observation) -> String {
        match obs.hash() {
            Some(h) => match self.step_of(h) {
                Some(step) => format!("{h} ({step})"),
                None => format!("{h} (not a config of this plan)"),
            },
            None => obs.describe(),
        }
    }

    /// Every resource of the rotated entries, for the rewrite (`None`: a wildcard entry, so every
    /// covered resource).
    pub fn rewrite_resources(&self) -> Option<Vec<GroupResource>> {
        let names = self.plan.resources();
        if names.iter().any(|r| r.contains('*')) {
            return None;
        }
        Some(names.iter().map(|r| GroupResource::parse(r)).collect())
    }
}

/// Live identity leases whose apiserver is not among the watched ones (empty when the apiservers
/// report no `apiserver_id_hash`, i.e. nothing to compare with).
pub async fn unwatched_apiservers(
    conn: &EtcdConnection,
    transformers: &Transformers,
    etcd_prefix: &str,
    observations: &[Observation],
) -> anyhow::Result<Vec<String>> {
    let watched: Vec<String> = observations.iter().flat_map(|o| o.id_hashes()).collect();
    if watched.is_empty() {
        return Ok(Vec::new());
    }
    let start = format!(
        "{}leases/kube-system/apiserver-",
        keymap::normalize_prefix(etcd_prefix)
    )
    .into_bytes();
    let end = keymap::prefix_end(&start);
    let mut scanner = Scanner::new(conn.clone(), vec![(start, end)], PAGE_SIZE);
    let t = transformers.for_resource(&GroupResource::new("coordination.k8s.io", "leases"));
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let mut missing = Vec::new();
    while let Some(page) = scanner.next_page().await? {
        for kv in page {
            let Ok(read) = t.read(kv.value(), kv.key()) else {
                tracing::warn!(key = %String::from_utf8_lossy(kv.key()), "identity lease unreadable");
                continue;
            };
            let Some(lease) = leases::parse(&read.plaintext) else {
                continue;
            };
            if lease.is_live(now) && !watched.contains(&id_hash(&lease.name)) {
                missing.push(format!(
                    "{}{}",
                    lease.name,
                    lease
                        .hostname
                        .map(|h| format!(" (host {h})"))
                        .unwrap_or_default()
                ));
            }
        }
    }
    Ok(missing)
}

/// Refuses to go on while a live kube-apiserver is not watched.
pub async fn require_all_watched(
    conn: &EtcdConnection,
    transformers: &Transformers,
    etcd_prefix: &str,
    apis: &Apiservers,
) -> anyhow::Result<()> {
    let observations = apis.observe().await;
    let missing = unwatched_apiservers(conn, transformers, etcd_prefix, &observations).await?;
    if !missing.is_empty() {
        bail!(
            "live kube-apiserver identity leases under {}leases/kube-system/ belong to apiservers not given with --apiserver: {} (watched: {}). Add every control-plane apiserver; a rotation gated on some of them can break reads on the others",
            keymap::normalize_prefix(etcd_prefix),
            missing.join(", "),
            apis.urls.join(", ")
        );
    }
    Ok(())
}
