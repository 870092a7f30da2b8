//! kubectl-style resource names → the storage group/resource and scope: `deployments`,
//! `deployments.apps`, `deployment`, `Deployment`, `customresourcedefinitions.apiextensions.k8s.io`,
//! `flunders.wardle.example.com`. Built-in kinds come from the decoder's type table (every kind
//! kube-apiserver stores, with its plural and scope); anything with an unknown group is taken as a
//! custom resource `<plural>.<group>`.

use atrest_core::GroupResource;

use crate::decode::schema::schema;

/// A resolved resource name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub resource: GroupResource,
    /// `None` for custom resources (the scope is in their CRD, not known here).
    pub namespaced: Option<bool>,
}

/// Singletons and storage-only resources that no API serves (keymap's `ranges/…`).
const STORAGE_ONLY: &[&str] = &["serviceipallocations", "servicenodeportallocations"];

fn group_of(api_version: &str) -> &str {
    api_version.rsplit_once('/').map_or("", |(g, _)| g)
}

/// Resolves `RESOURCE[.GROUP]`. `None`: a name without a group that is no built-in resource (see
/// [`suggest`]).
pub fn resolve(input: &str) -> Option<Resolved> {
    let input = input.trim().to_ascii_lowercase();
    if STORAGE_ONLY.contains(&input.as_str()) {
        return Some(Resolved {
            resource: GroupResource::new("", input),
            namespaced: Some(false),
        });
    }
    let (name, group) = match input.split_once('.') {
        Some((n, g)) => (n, Some(g)),
        None => (input.as_str(), None),
    };
    let matches = |plural: &str, kind: &str| plural == name || kind.to_ascii_lowercase() == name;
    let s = schema();
    // The core group first, as kubectl resolves `events` to v1 Events.
    let mut candidates: Vec<_> = s
        .resources
        .iter()
        .filter(|r| group.is_none_or(|g| group_of(&r.api_version) == g))
        .filter(|r| matches(&r.plural, &r.kind))
        .collect();
    candidates.sort_by_key(|r| !group_of(&r.api_version).is_empty());
    if let Some(r) = candidates.first() {
        return Some(Resolved {
            resource: GroupResource::new(group_of(&r.api_version), r.plural.clone()),
            namespaced: Some(r.namespaced),
        });
    }
    group.map(|g| Resolved {
        resource: GroupResource::new(g, name),
        namespaced: None,
    })
}

/// "did you mean …?" candidates for a name that resolved to nothing: custom resources (from the
/// names of the CRDs in etcd, `<plural>.<group>`) and built-ins whose plural or kind is close.
pub fn suggest(input: &str, crd_names: &[String]) -> Vec<String> {
    let input = input.trim().to_ascii_lowercase();
    let mut out: Vec<String> = crd_names
        .iter()
        .filter(|crd| {
            crd.split_once('.')
                .is_some_and(|(plural, _)| plural == input || plural.trim_end_matches('s') == input)
        })
        .cloned()
        .collect();
    for r in &schema().resources {
        let g = group_of(&r.api_version);
        let full = if g.is_empty() {
            r.plural.clone()
        } else {
            format!("{}.{g}", r.plural)
        };
        if r.plural.starts_with(&input) && !out.contains(&full) && input.len() >= 3 {
            out.push(full);
        }
    }
    out.truncate(5);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gr(input: &str) -> Option<(String, Option<bool>)> {
        resolve(input).map(|r| (r.resource.to_string(), r.namespaced))
    }

    #[test]
    fn kubectl_names() {
        assert_eq!(
            gr("deployments.apps"),
            Some(("deployments.apps".into(), Some(true)))
        );
        assert_eq!(
            gr("deployments"),
            Some(("deployments.apps".into(), Some(true)))
        );
        assert_eq!(
            gr("Deployment"),
            Some(("deployments.apps".into(), Some(true)))
        );
        assert_eq!(gr("secrets"), Some(("secrets".into(), Some(true))));
        assert_eq!(gr("events"), Some(("events".into(), Some(true))));
        assert_eq!(gr("nodes"), Some(("nodes".into(), Some(false))));
        assert_eq!(
            gr("customresourcedefinitions.apiextensions.k8s.io"),
            Some((
                "customresourcedefinitions.apiextensions.k8s.io".into(),
                Some(false)
            ))
        );
        assert_eq!(
            gr("flunders.wardle.example.com"),
            Some(("flunders.wardle.example.com".into(), None))
        );
        assert_eq!(gr("flunders"), None);
        assert_eq!(
            gr("serviceipallocations"),
            Some(("serviceipallocations".into(), Some(false)))
        );
    }

    #[test]
    fn suggestions() {
        let crds = vec![
            "flunders.wardle.example.com".to_string(),
            "widgets.example.com".into(),
        ];
        assert_eq!(
            suggest("flunders", &crds),
            vec!["flunders.wardle.example.com"]
        );
        assert_eq!(
            suggest("flunder", &crds),
            vec!["flunders.wardle.example.com"]
        );
        assert!(suggest("deploy", &[]).contains(&"deployments.apps".to_string()));
    }
}
