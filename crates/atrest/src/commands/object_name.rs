//! `RESOURCE[.GROUP] [NAMESPACE/]NAME` as kubectl takes them → the etcd key, shared by `get` and
//! `snapshot get`. A name without a group that is no built-in resource gets a "did you mean"
//! from the CustomResourceDefinitions the caller lists.

use anyhow::bail;
use atrest_core::GroupResource;
use atrest_store::{keymap, resources};

/// Where the CRD objects live (their names are `<plural>.<group>`).
pub fn crd_prefix(etcd_prefix: &str) -> String {
    format!(
        "{}apiextensions.k8s.io/customresourcedefinitions/",
        keymap::normalize_prefix(etcd_prefix)
    )
}

/// The object an argument pair names.
pub struct Target {
    pub resource: GroupResource,
    pub namespace: Option<String>,
    pub name: String,
    pub key: String,
}

/// Resolves the arguments; `crd_names` is called only when the resource is unknown, for the hint.
pub fn resolve(
    etcd_prefix: &str,
    resource: &str,
    name: &str,
    crd_names: impl FnOnce() -> Vec<String>,
) -> anyhow::Result<Target> {
    let Some(r) = resources::resolve(resource) else {
        let hints = resources::suggest(resource, &crd_names());
        if hints.is_empty() {
            bail!(
                "the server doesn't have a resource type {resource:?} (no built-in resource of that \
                 name; give custom resources as PLURAL.GROUP, e.g. widgets.example.com)"
            );
        }
        bail!(
            "the server doesn't have a resource type {resource:?}: did you mean {}?",
            hints.join(" or ")
        );
    };
    let (namespace, object) = match name.split_once('/') {
        Some((ns, n)) => (Some(ns), n),
        None => (None, name),
    };
    if object.is_empty() || namespace.is_some_and(str::is_empty) || object.contains('/') {
        bail!("NAME must be NAMESPACE/NAME or NAME, got {name:?}");
    }
    match (r.namespaced, namespace) {
        (Some(true), None) => bail!(
            "{} is namespaced: give NAMESPACE/NAME (e.g. default/{object})",
            r.resource
        ),
        (Some(false), Some(ns)) => bail!(
            "{} is cluster-scoped: give NAME alone ({object}, not {ns}/{object})",
            r.resource
        ),
        _ => {}
    }
    Ok(Target {
        key: keymap::key_for(etcd_prefix, &r.resource, namespace, object),
        resource: r.resource,
        namespace: namespace.map(str::to_string),
        name: object.to_string(),
    })
}

/// CRD names from their etcd keys.
pub fn crd_names_from_keys<'a>(
    etcd_prefix: &str,
    keys: impl IntoIterator<Item = &'a [u8]>,
) -> Vec<String> {
    let prefix = crd_prefix(etcd_prefix);
    keys.into_iter()
        .filter_map(|k| {
            std::str::from_utf8(k)
                .ok()?
                .strip_prefix(&prefix)
                .map(str::to_string)
        })
        .collect()
}
