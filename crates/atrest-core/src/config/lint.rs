//! Mistakes kube-apiserver loads without a word: a resource listed in more than one entry (the
//! first entry writes it; later ones only extend its read order) and resource names that are
//! neither a built-in resource nor `resource.group` (typos such as `secret`, which leave Secrets in
//! plaintext). `config check` prints these; `config explain` adds them to its warnings.

use super::explain::Warning;
use super::{EncryptionConfiguration, ProviderConfiguration};
use crate::resource::{GroupResource, BUILTIN_RESOURCES};

/// Every such mistake in `config`, in file order.
pub fn lint(config: &EncryptionConfiguration) -> Vec<Warning> {
    let mut out = duplicate_resources(config);
    for entry in &config.resources {
        for name in &entry.resources {
            if let Some(w) = resource_name_warning(name) {
                if !out.contains(&w) {
                    out.push(w);
                }
            }
        }
    }
    out
}

/// Whether the file holds key material (aescbc, aesgcm or secretbox keys); a KMS-only or
/// identity-only file holds none.
pub fn holds_key_material(config: &EncryptionConfiguration) -> bool {
    config.resources.iter().any(|entry| {
        entry.providers.iter().any(|p| match p {
            ProviderConfiguration::AesCbc(k)
            | ProviderConfiguration::AesGcm(k)
            | ProviderConfiguration::Secretbox(k) => !k.keys.is_empty(),
            ProviderConfiguration::Identity | ProviderConfiguration::Kms(_) => false,
        })
    })
}

/// The index of the entry that writes `name` (the first entry listing the same group/resource),
/// as kube-apiserver concatenates the lists of every entry naming it exactly.
pub(crate) fn governing_entry(config: &EncryptionConfiguration, name: &str) -> Option<usize> {
    let gr = GroupResource::parse(name);
    config
        .resources
        .iter()
        .position(|e| e.resources.iter().any(|r| GroupResource::parse(r) == gr))
}

fn write_description(p: Option<&ProviderConfiguration>) -> String {
    match p {
        Some(ProviderConfiguration::AesCbc(k)) => keyed("aescbc", k),
        Some(ProviderConfiguration::AesGcm(k)) => keyed("aesgcm", k),
        Some(ProviderConfiguration::Secretbox(k)) => keyed("secretbox", k),
        Some(ProviderConfiguration::Kms(k)) => format!("kms {:?}", k.name),
        Some(ProviderConfiguration::Identity) | None => "identity, plaintext".into(),
    }
}

fn keyed(kind: &str, k: &super::KeysConfiguration) -> String {
    match k.keys.first() {
        Some(key) => format!("{kind} key {:?}", key.name),
        None => kind.to_string(),
    }
}

fn duplicate_resources(config: &EncryptionConfiguration) -> Vec<Warning> {
    let mut out = Vec::new();
    for (j, entry) in config.resources.iter().enumerate() {
        for (k, name) in entry.resources.iter().enumerate() {
            let gr = GroupResource::parse(name);
            let Some(first) = governing_entry(config, name) else {
                continue;
            };
            let earlier_in_entry = entry.resources[..k]
                .iter()
                .any(|r| GroupResource::parse(r) == gr);
            let writer = write_description(config.resources[first].providers.first());
            if first == j && earlier_in_entry {
                out.push(Warning::new(
                    "duplicate-resource",
                    format!("{name} is listed twice in resources[{j}]: list it once."),
                ));
            } else if first < j && !earlier_in_entry {
                out.push(Warning::new(
                    "duplicate-resource",
                    format!(
                        "{name} is listed in resources[{first}] and resources[{j}]: resources[{first}] wins and writes it ({writer}); resources[{j}] is never used to write {name}, its providers are only tried after resources[{first}]'s when reading. List {name} in one entry only."
                    ),
                ));
            }
        }
    }
    out
}

/// The warning for a resource name kube-apiserver accepts but that is likely a typo.
fn resource_name_warning(name: &str) -> Option<Warning> {
    let gr = GroupResource::parse(name);
    if gr.resource == "*" || gr.group == "*" || gr.is_builtin() {
        return None;
    }
    if !gr.group.is_empty() && !gr.is_builtin_group() {
        // `<plural>.<group>` of a custom resource or an aggregated API: nothing to check.
        return None;
    }
    let message = match suggestion(&gr) {
        Some(better) => {
            format!("`{name}` is not a built-in resource; did you mean `{better}`?")
        }
        None if gr.group.is_empty() => format!(
            "`{name}` has no group: it only matches a core resource of that name, and kube-apiserver has none. Custom resources are named `<plural>.<group>` (e.g. `{name}.example.com`)."
        ),
        None => format!(
            "`{name}` is not a resource of the built-in group {}: it matches nothing kube-apiserver stores.",
            gr.group
        ),
    };
    Some(Warning::new("unknown-resource", message))
}

/// The closest built-in resource: the same resource in another group (`deployments` →
/// `deployments.apps`), else one within two edits (`secret` → `secrets`).
fn suggestion(gr: &GroupResource) -> Option<String> {
    let candidates = BUILTIN_RESOURCES
        .iter()
        .flat_map(|(g, rs)| rs.iter().map(|r| GroupResource::new(*g, *r)));
    let mut best: Option<(usize, GroupResource)> = None;
    for c in candidates {
        // Suggest only within the group that was written, or any group if none was.
        if !gr.group.is_empty() && c.group != gr.group {
            continue;
        }
        let d = edit_distance(&gr.resource, &c.resource);
        let group_penalty = usize::from(c.group != gr.group);
        let score = d * 2 + group_penalty;
        if d <= 2 && best.as_ref().is_none_or(|(s, _)| score < *s) {
            best = Some((score, c));
        }
    }
    best.map(|(_, c)| c.to_string())
}

/// Levenshtein distance (names are short ASCII).
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = if ca == *cb {
                prev
            } else {
                1 + prev.min(row[j]).min(row[j + 1])
            };
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(name: &str) -> Option<String> {
        resource_name_warning(name).map(|w| w.message)
    }

    #[test]
    fn typos_and_missing_groups() {
        assert_eq!(
            message("secret").as_deref(),
            Some("`secret` is not a built-in resource; did you mean `secrets`?")
        );
        assert_eq!(
            message("deployments").as_deref(),
            Some("`deployments` is not a built-in resource; did you mean `deployments.apps`?")
        );
        assert_eq!(
            message("deployment.apps").as_deref(),
            Some("`deployment.apps` is not a built-in resource; did you mean `deployments.apps`?")
        );
        assert!(message("flunders")
            .unwrap()
            .starts_with("`flunders` has no group: it only matches a core resource of that name"));
        for fine in [
            "secrets",
            "configmaps",
            "events.events.k8s.io",
            "flunders.wardle.example.com",
            "*.",
            "*.apps",
            "*.*",
        ] {
            assert_eq!(message(fine), None, "{fine}");
        }
    }

    #[test]
    fn distances() {
        assert_eq!(edit_distance("secret", "secrets"), 1);
        assert_eq!(edit_distance("", "ab"), 2);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
