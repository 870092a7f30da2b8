//! From CURRENT to the three configs of a rotation, per resource entry:
//!
//! | step | same provider, new key | another provider (or start encrypting) |
//! |---|---|---|
//! | stage | `keys: [old, NEW, …]` | `[old, NEW, …rest]` |
//! | promote | `keys: [NEW, old, …]` | `[NEW, old, …rest]` |
//! | retire | `keys: [NEW]` (+ identity) | `[NEW]` (+ identity) |
//!
//! *stage* lets every apiserver read the new key before any writes with it; *promote* makes it the
//! write key; *retire* drops every other key of the entry (they are unused once the rewrite and its
//! verification scan are done), keeping `identity` for reads unless `drop_identity`. Entries not
//! rotated are not touched. Each file is produced by editing CURRENT's text in place
//! ([`crate::splice`]) and checked with the core loader against the intended model; when CURRENT
//! cannot be edited in place the file is rendered canonically ([`crate::model::render`]).

use std::time::Duration;

use atrest_core::config::{load_bytes, EncryptionConfiguration, LoadOptions};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::model::{
    render, render_key, render_provider, ConfigSpec, KeyLabel, KeySpec, KeysKind, KmsSpec, Prov,
};
use crate::splice::{rebuild, Located, Piece, SeqLoc, Unsupported};
use crate::RotateError;

/// The provider to rotate to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Keys(KeysKind),
    /// KMS v2.
    Kms {
        name: String,
        endpoint: String,
        timeout: Duration,
    },
}

/// What the operator asked for.
#[derive(Debug, Clone)]
pub struct PlanRequest {
    /// `None`: a new key for the entry's current local provider.
    pub target: Option<Target>,
    /// Entries naming any of these (as written in CURRENT). Empty: every entry that has a
    /// non-identity provider.
    pub resources: Vec<String>,
    /// Retire drops `identity` (apply then requires a scan showing no plaintext).
    pub drop_identity: bool,
    /// Name for new local keys (made unique per entry and provider), e.g. `key-20261201`.
    pub key_name: String,
}

/// The three steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConfigStep {
    Stage,
    Promote,
    Retire,
}

impl ConfigStep {
    pub const ALL: [ConfigStep; 3] = [ConfigStep::Stage, ConfigStep::Promote, ConfigStep::Retire];

    /// `stage`, `promote`, `retire` (the value of `ATREST_ROTATE_STEP`).
    pub fn name(self) -> &'static str {
        match self {
            ConfigStep::Stage => "stage",
            ConfigStep::Promote => "promote",
            ConfigStep::Retire => "retire",
        }
    }

    /// The file name in the plan directory.
    pub fn file_name(self) -> &'static str {
        match self {
            ConfigStep::Stage => "stage.yaml",
            ConfigStep::Promote => "promote.yaml",
            ConfigStep::Retire => "retire.yaml",
        }
    }
}

/// One rotated entry, as the plan file records it (no key material).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryPlan {
    /// Position in `resources:`.
    pub index: usize,
    pub resources: Vec<String>,
    /// Writes today.
    pub from: KeyLabel,
    /// Writes after promote.
    pub to: KeyLabel,
    /// Read by promote, gone in retire: must hold no objects before retire.
    pub retired: Vec<KeyLabel>,
    /// Whether retire still reads plaintext.
    pub identity_kept: bool,
}

/// The generated files (key material inside; zeroized on drop).
pub struct Generated {
    pub stage: Zeroizing<String>,
    pub promote: Zeroizing<String>,
    pub retire: Zeroizing<String>,
    pub entries: Vec<EntryPlan>,
    /// Why the files were rendered canonically instead of edited in place.
    pub canonical: Option<String>,
}

impl Generated {
    pub fn text(&self, step: ConfigStep) -> &str {
        match step {
            ConfigStep::Stage => &self.stage,
            ConfigStep::Promote => &self.promote,
            ConfigStep::Retire => &self.retire,
        }
    }
}

enum KItem {
    Orig(usize),
    New,
}

enum PItem {
    Orig(usize),
    OrigKeys(usize, Vec<KItem>),
    New,
}

/// The new provider (or key) of one entry and its three layouts.
struct EntryEdit {
    index: usize,
    new: NewThing,
    layouts: [Vec<PItem>; 3],
}

enum NewThing {
    Key(KeysKind, KeySpec),
    Provider(Prov),
}

/// Builds the rotation. `current_text` is CURRENT's bytes, `current` what the core loader made of
/// them; `opts` are the apiservers' loading flags (every generated file must load with them).
pub fn generate(
    current_text: &str,
    current: &EncryptionConfiguration,
    req: &PlanRequest,
    opts: &LoadOptions,
) -> Result<Generated, RotateError> {
    let spec = ConfigSpec::from(current);
    let current_text: Zeroizing<String> = Zeroizing::new(if current_text.ends_with('\n') {
        current_text.to_string()
    } else {
        format!("{current_text}\n")
    });
    let current_text = current_text.as_str();
    let selected = select_entries(&spec, &req.resources)?;
    let mut edits = Vec::new();
    let mut entries = Vec::new();
    for index in selected {
        let (edit, plan) = plan_entry(&spec, index, req)?;
        edits.push(edit);
        entries.push(plan);
    }
    let mut canonical = None;
    let mut texts = Vec::new();
    for (n, step) in ConfigStep::ALL.iter().enumerate() {
        let intended = apply_model(&spec, &edits, n);
        let edited = edit_text(current_text, &spec, &edits, n)
            .and_then(|t| matches_intent(&t, &intended, opts).map(|()| t));
        let text = match edited {
            Ok(t) => t,
            Err(Unsupported(why)) => {
                canonical.get_or_insert(why);
                let t = render(&intended);
                check_loads(&t, &intended, opts).map_err(|detail| RotateError::Generated {
                    step: step.name(),
                    detail,
                })?;
                t
            }
        };
        texts.push(text);
    }
    // A file edited in place next to a canonical one would make the diffs misleading: if any step
    // needed the canonical layout, all three use it.
    if canonical.is_some() {
        for (n, text) in texts.iter_mut().enumerate() {
            *text = render(&apply_model(&spec, &edits, n));
        }
    }
    let mut texts = texts.into_iter();
    let mut next = || texts.next().unwrap_or_default();
    Ok(Generated {
        stage: next(),
        promote: next(),
        retire: next(),
        entries,
        canonical,
    })
}

fn select_entries(spec: &ConfigSpec, resources: &[String]) -> Result<Vec<usize>, RotateError> {
    if resources.is_empty() {
        let chosen: Vec<usize> = spec
            .entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.providers.iter().any(|p| !p.is_identity()))
            .map(|(i, _)| i)
            .collect();
        if chosen.is_empty() {
            return Err(RotateError::Invalid(
                "CURRENT encrypts nothing: name the resources to start encrypting with --resources \
                 (and the provider with --provider)"
                    .into(),
            ));
        }
        return Ok(chosen);
    }
    let mut chosen = Vec::new();
    for r in resources {
        let hits: Vec<usize> = spec
            .entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.resources.iter().any(|x| x == r))
            .map(|(i, _)| i)
            .collect();
        if hits.is_empty() {
            return Err(RotateError::Invalid(format!(
                "--resources {r}: no resources entry of CURRENT names it (add an entry with \
                 `identity: {{}}` first, install it, then plan the rotation)"
            )));
        }
        for h in hits {
            if !chosen.contains(&h) {
                chosen.push(h);
            }
        }
    }
    chosen.sort_unstable();
    Ok(chosen)
}

fn unique_name(base: &str, taken: &[String]) -> String {
    if !taken.iter().any(|t| t == base) {
        return base.to_string();
    }
    (2..)
        .map(|n| format!("{base}-{n}"))
        .find(|c| !taken.iter().any(|t| t == c))
        .unwrap_or_else(|| base.to_string())
}

fn fresh_key(kind: KeysKind, name: String) -> Result<KeySpec, RotateError> {
    // 32 bytes: AES-256 for aescbc/aesgcm, the only size secretbox takes.
    let secret = atrest_core::providers::generate_key(32)
        .map_err(|e| RotateError::Invalid(format!("generating a {} key: {e}", kind.name())))?;
    Ok(KeySpec { name, secret })
}

fn plan_entry(
    spec: &ConfigSpec,
    index: usize,
    req: &PlanRequest,
) -> Result<(EntryEdit, EntryPlan), RotateError> {
    let entry = &spec.entries[index];
    let shown = format!("resources[{index}] ({})", entry.resources.join(", "));
    let providers = &entry.providers;
    let first = providers
        .first()
        .ok_or_else(|| RotateError::Invalid(format!("{shown} has no providers")))?;
    let names_of = |kind: KeysKind| -> Vec<String> {
        providers
            .iter()
            .filter_map(|p| match p {
                Prov::Keys { kind: k, keys } if *k == kind => {
                    Some(keys.iter().map(|k| k.name.clone()).collect::<Vec<_>>())
                }
                _ => None,
            })
            .flatten()
            .collect()
    };
    let target = match &req.target {
        Some(t) => t.clone(),
        None => match first {
            Prov::Keys { kind, .. } => Target::Keys(*kind),
            Prov::Identity => providers
                .iter()
                .find_map(|p| match p {
                    Prov::Keys { kind, .. } => Some(Target::Keys(*kind)),
                    _ => None,
                })
                .ok_or_else(|| {
                    RotateError::Invalid(format!(
                        "{shown} writes with identity and reads no local provider: say what to \
                         encrypt with (--provider aescbc|aesgcm|secretbox|kms)"
                    ))
                })?,
            Prov::Kms(k) => {
                return Err(RotateError::Invalid(format!(
                "{shown} writes with kms {:?}: a new KEK needs no config change (`atrest rotate \
                     kek`); to move to another provider pass --provider",
                k.name
            )))
            }
        },
    };
    let same_key =
        matches!((&target, first), (Target::Keys(t), Prov::Keys { kind, .. }) if t == kind);
    let keep_identity = !req.drop_identity;
    let identity_items: Vec<PItem> = providers
        .iter()
        .enumerate()
        .filter(|(_, p)| p.is_identity() && keep_identity)
        .map(|(j, _)| PItem::Orig(j))
        .collect();
    let (new, layouts, to) = if same_key {
        let Prov::Keys { kind, keys } = first else {
            unreachable!("same_key implies a local first provider")
        };
        let key = fresh_key(*kind, unique_name(&req.key_name, &names_of(*kind)))?;
        let to = KeyLabel::new(kind.name(), Some(&key.name));
        let n = keys.len();
        let rest = || (1..providers.len()).map(PItem::Orig);
        let stage_keys: Vec<KItem> = std::iter::once(KItem::Orig(0))
            .chain(std::iter::once(KItem::New))
            .chain((1..n).map(KItem::Orig))
            .collect();
        let promote_keys: Vec<KItem> = std::iter::once(KItem::New)
            .chain((0..n).map(KItem::Orig))
            .collect();
        let stage: Vec<PItem> = std::iter::once(PItem::OrigKeys(0, stage_keys))
            .chain(rest())
            .collect();
        let promote: Vec<PItem> = std::iter::once(PItem::OrigKeys(0, promote_keys))
            .chain(rest())
            .collect();
        let retire: Vec<PItem> = std::iter::once(PItem::OrigKeys(0, vec![KItem::New]))
            .chain(identity_items)
            .collect();
        (NewThing::Key(*kind, key), [stage, promote, retire], to)
    } else {
        let prov = match &target {
            Target::Keys(kind) => Prov::Keys {
                kind: *kind,
                keys: vec![fresh_key(
                    *kind,
                    unique_name(&req.key_name, &names_of(*kind)),
                )?],
            },
            Target::Kms {
                name,
                endpoint,
                timeout,
            } => {
                if let Prov::Kms(k) = first {
                    if &k.name == name {
                        return Err(RotateError::Invalid(format!(
                            "{shown} already writes with kms {name:?}: give the new provider \
                             another --kms-name (a KEK rotation is `atrest rotate kek`)"
                        )));
                    }
                }
                Prov::Kms(KmsSpec {
                    v2: true,
                    name: name.clone(),
                    endpoint: endpoint.clone(),
                    cachesize: None,
                    timeout: *timeout,
                })
            }
        };
        let to = prov.write_label();
        let stage: Vec<PItem> = std::iter::once(PItem::Orig(0))
            .chain(std::iter::once(PItem::New))
            .chain((1..providers.len()).map(PItem::Orig))
            .collect();
        let promote: Vec<PItem> = std::iter::once(PItem::New)
            .chain((0..providers.len()).map(PItem::Orig))
            .collect();
        let retire: Vec<PItem> = std::iter::once(PItem::New).chain(identity_items).collect();
        (NewThing::Provider(prov), [stage, promote, retire], to)
    };
    let edit = EntryEdit {
        index,
        new,
        layouts,
    };
    let promote = providers_of(entry, &edit, 1);
    let retire = providers_of(entry, &edit, 2);
    let retire_labels: Vec<KeyLabel> = retire.iter().flat_map(Prov::labels).collect();
    let mut retired: Vec<KeyLabel> = Vec::new();
    for l in promote.iter().flat_map(Prov::labels) {
        if !retire_labels.contains(&l) && !retired.contains(&l) {
            retired.push(l);
        }
    }
    let plan = EntryPlan {
        index,
        resources: entry.resources.clone(),
        from: first.write_label(),
        to,
        retired,
        identity_kept: retire.iter().any(Prov::is_identity),
    };
    Ok((edit, plan))
}

/// The providers of `entry` in layout `n` (0 stage, 1 promote, 2 retire).
fn providers_of(entry: &crate::model::EntrySpec, edit: &EntryEdit, n: usize) -> Vec<Prov> {
    edit.layouts[n]
        .iter()
        .map(|item| match item {
            PItem::Orig(j) => entry.providers[*j].clone(),
            PItem::New => match &edit.new {
                NewThing::Provider(p) => p.clone(),
                NewThing::Key(kind, key) => Prov::Keys {
                    kind: *kind,
                    keys: vec![key.clone()],
                },
            },
            PItem::OrigKeys(j, kitems) => match (&entry.providers[*j], &edit.new) {
                (Prov::Keys { kind, keys }, NewThing::Key(_, new)) => Prov::Keys {
                    kind: *kind,
                    keys: kitems
                        .iter()
                        .map(|k| match k {
                            KItem::Orig(i) => keys[*i].clone(),
                            KItem::New => new.clone(),
                        })
                        .collect(),
                },
                (other, _) => other.clone(),
            },
        })
        .collect()
}

fn apply_model(spec: &ConfigSpec, edits: &[EntryEdit], n: usize) -> ConfigSpec {
    let mut out = spec.clone();
    for edit in edits {
        out.entries[edit.index].providers = providers_of(&spec.entries[edit.index], edit, n);
    }
    out
}

fn shifted(seq: &SeqLoc, by: usize) -> SeqLoc {
    SeqLoc {
        items: seq.items.iter().map(|r| r.start - by..r.end - by).collect(),
        dash_col: seq.dash_col,
        content_col: seq.content_col,
    }
}

/// CURRENT's text with layout `n` spliced into every rotated entry.
fn edit_text(
    text: &str,
    spec: &ConfigSpec,
    edits: &[EntryEdit],
    n: usize,
) -> Result<Zeroizing<String>, Unsupported> {
    let located = Located::parse(text)?;
    let mut out = Zeroizing::new(text.to_string());
    // Later entries first: their edits never move the byte offsets of earlier ones.
    let mut order: Vec<&EntryEdit> = edits.iter().collect();
    order.sort_by_key(|e| std::cmp::Reverse(e.index));
    for edit in order {
        let seq = located.providers(edit.index)?;
        if seq.items.len() != spec.entries[edit.index].providers.len() {
            return Err(Unsupported(format!(
                "resources[{}].providers: the YAML and the loaded config disagree",
                edit.index
            )));
        }
        let mut new_texts: Vec<Zeroizing<String>> = Vec::new();
        for item in &edit.layouts[n] {
            match item {
                PItem::New => {
                    let prov = match &edit.new {
                        NewThing::Provider(p) => p.clone(),
                        NewThing::Key(kind, key) => Prov::Keys {
                            kind: *kind,
                            keys: vec![key.clone()],
                        },
                    };
                    new_texts.push(render_provider(&prov, seq.dash_col, seq.content_col));
                }
                PItem::OrigKeys(j, kitems) => {
                    let (NewThing::Key(kind, key), Prov::Keys { .. }) =
                        (&edit.new, &spec.entries[edit.index].providers[*j])
                    else {
                        return Err(Unsupported("key edit of a non-key provider".into()));
                    };
                    let keys = located.keys(edit.index, *j, kind.name())?;
                    let item_range = seq.items[*j].clone();
                    let item_text = &text[item_range.clone()];
                    let rel = shifted(&keys, item_range.start);
                    let new_key = render_key(key, keys.dash_col, keys.content_col);
                    let pieces: Vec<Piece<'_>> = kitems
                        .iter()
                        .map(|k| match k {
                            KItem::Orig(i) => Piece::Keep(*i),
                            KItem::New => Piece::Text(new_key.as_str()),
                        })
                        .collect();
                    new_texts.push(Zeroizing::new(rebuild(item_text, &rel, &pieces)));
                }
                PItem::Orig(_) => {}
            }
        }
        let mut texts = new_texts.iter();
        let pieces: Vec<Piece<'_>> = edit.layouts[n]
            .iter()
            .map(|item| match item {
                PItem::Orig(j) => Piece::Keep(*j),
                _ => Piece::Text(texts.next().map(|t| t.as_str()).unwrap_or_default()),
            })
            .collect();
        // `seq` offsets refer to the original text; everything after this entry was already
        // replaced, so rebuild the prefix up to the list's end and append the edited tail.
        let end = seq.items.last().map_or(0, |r| r.end);
        let mut next = Zeroizing::new(rebuild(&text[..end], &seq, &pieces));
        next.push_str(&out[end..]);
        out = next;
    }
    Ok(out)
}

fn matches_intent(
    text: &str,
    intended: &ConfigSpec,
    opts: &LoadOptions,
) -> Result<(), Unsupported> {
    check_loads(text, intended, opts).map_err(Unsupported)
}

fn check_loads(text: &str, intended: &ConfigSpec, opts: &LoadOptions) -> Result<(), String> {
    let loaded = load_bytes(text.as_bytes(), "generated", opts).map_err(|e| e.to_string())?;
    if &ConfigSpec::from(&loaded) != intended {
        return Err("the edited file does not load to the intended providers".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests;

/// The keys retire removes, as a config that reads what they wrote (then `identity`): kept in the
/// plan directory for etcd snapshots and backups taken before the rotation. `None` when retire
/// removes no key (e.g. encryption was only started).
pub fn escrow_config(
    promote: &EncryptionConfiguration,
    entries: &[EntryPlan],
    opts: &LoadOptions,
) -> Result<Option<Zeroizing<String>>, RotateError> {
    let spec = ConfigSpec::from(promote);
    let mut out = ConfigSpec {
        entries: Vec::new(),
    };
    for e in entries {
        let Some(entry) = spec.entries.get(e.index) else {
            continue;
        };
        let mut providers: Vec<Prov> = Vec::new();
        for p in &entry.providers {
            match p {
                Prov::Identity => {}
                Prov::Keys { kind, keys } => {
                    let kept: Vec<KeySpec> = keys
                        .iter()
                        .filter(|k| {
                            e.retired
                                .contains(&KeyLabel::new(kind.name(), Some(&k.name)))
                        })
                        .cloned()
                        .collect();
                    if !kept.is_empty() {
                        providers.push(Prov::Keys {
                            kind: *kind,
                            keys: kept,
                        });
                    }
                }
                Prov::Kms(_) => {
                    if e.retired.contains(&p.write_label()) {
                        providers.push(p.clone());
                    }
                }
            }
        }
        if providers.is_empty() {
            continue;
        }
        providers.push(Prov::Identity);
        out.entries.push(crate::model::EntrySpec {
            resources: entry.resources.clone(),
            providers,
        });
    }
    if out.entries.is_empty() {
        return Ok(None);
    }
    let text = render(&out);
    check_loads(&text, &out, opts).map_err(|detail| RotateError::Generated {
        step: "escrow",
        detail,
    })?;
    Ok(Some(text))
}
