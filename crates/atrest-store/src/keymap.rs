//! etcd key layout ⇄ Kubernetes resources (OPERATIONS.md §1.1).
//!
//! `<etcd-prefix>/<resource-prefix>/<namespace>/<name>` for namespaced objects and
//! `<etcd-prefix>/<resource-prefix>/<name>` for cluster-scoped ones. `<resource-prefix>` is the
//! plural resource name for built-in kinds (with historical exceptions such as `minions`,
//! `controllers`, `services/specs`, `services/endpoints`; no API group in the path), and
//! `<group>/<resource>` for custom resources and aggregated built-ins (`apiregistration.k8s.io`,
//! `apiextensions.k8s.io`). Object names and namespaces never contain `/`, so the number of path
//! segments after the resource prefix tells namespaced (2) from cluster-scoped (1) objects.

use atrest_core::GroupResource;

/// Where an etcd key points.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyInfo {
    /// The storage group/resource, as an EncryptionConfiguration names it.
    pub resource: GroupResource,
    /// `None` for cluster-scoped objects.
    pub namespace: Option<String>,
    pub name: String,
}

/// Singleton objects: the whole key names the object. kube-apiserver's service IP and node port
/// bitmap allocators store one RangeAllocation each, configured as these resources.
const SINGLETONS: &[(&str, &str, &str)] = &[
    ("ranges/serviceips", "", "serviceipallocations"),
    ("ranges/servicenodeports", "", "servicenodeportallocations"),
];

/// Built-in resources: (path segments after the etcd prefix, group, resource).
/// Paths with two segments come first so `services/specs` wins over a plain `services`.
const BUILTINS: &[(&str, &str, &str)] = &[
    ("services/specs", "", "services"),
    ("services/endpoints", "", "endpoints"),
    // core
    ("pods", "", "pods"),
    ("configmaps", "", "configmaps"),
    ("secrets", "", "secrets"),
    ("serviceaccounts", "", "serviceaccounts"),
    ("namespaces", "", "namespaces"),
    ("minions", "", "nodes"),
    ("controllers", "", "replicationcontrollers"),
    ("events", "", "events"),
    ("persistentvolumes", "", "persistentvolumes"),
    ("persistentvolumeclaims", "", "persistentvolumeclaims"),
    ("limitranges", "", "limitranges"),
    ("resourcequotas", "", "resourcequotas"),
    ("podtemplates", "", "podtemplates"),
    // apps
    ("deployments", "apps", "deployments"),
    ("replicasets", "apps", "replicasets"),
    ("daemonsets", "apps", "daemonsets"),
    ("statefulsets", "apps", "statefulsets"),
    ("controllerrevisions", "apps", "controllerrevisions"),
    // batch, autoscaling, policy
    ("jobs", "batch", "jobs"),
    ("cronjobs", "batch", "cronjobs"),
    (
        "horizontalpodautoscalers",
        "autoscaling",
        "horizontalpodautoscalers",
    ),
    ("poddisruptionbudgets", "policy", "poddisruptionbudgets"),
    ("podsecuritypolicy", "policy", "podsecuritypolicies"),
    // networking
    ("ingress", "networking.k8s.io", "ingresses"),
    ("ingressclasses", "networking.k8s.io", "ingressclasses"),
    ("networkpolicies", "networking.k8s.io", "networkpolicies"),
    ("ipaddresses", "networking.k8s.io", "ipaddresses"),
    ("servicecidrs", "networking.k8s.io", "servicecidrs"),
    ("endpointslices", "discovery.k8s.io", "endpointslices"),
    // rbac
    ("roles", "rbac.authorization.k8s.io", "roles"),
    ("rolebindings", "rbac.authorization.k8s.io", "rolebindings"),
    ("clusterroles", "rbac.authorization.k8s.io", "clusterroles"),
    (
        "clusterrolebindings",
        "rbac.authorization.k8s.io",
        "clusterrolebindings",
    ),
    // storage
    ("storageclasses", "storage.k8s.io", "storageclasses"),
    ("volumeattachments", "storage.k8s.io", "volumeattachments"),
    ("csidrivers", "storage.k8s.io", "csidrivers"),
    ("csinodes", "storage.k8s.io", "csinodes"),
    (
        "csistoragecapacities",
        "storage.k8s.io",
        "csistoragecapacities",
    ),
    (
        "volumeattributesclasses",
        "storage.k8s.io",
        "volumeattributesclasses",
    ),
    // misc groups
    ("leases", "coordination.k8s.io", "leases"),
    (
        "apiextensions.k8s.io/customresourcedefinitions",
        "apiextensions.k8s.io",
        "customresourcedefinitions",
    ),
    (
        "apiregistration.k8s.io/apiservices",
        "apiregistration.k8s.io",
        "apiservices",
    ),
    (
        "podcertificaterequests",
        "certificates.k8s.io",
        "podcertificaterequests",
    ),
    ("devicetaintrules", "resource.k8s.io", "devicetaintrules"),
    ("workloads", "scheduling.k8s.io", "workloads"),
    ("leasecandidates", "coordination.k8s.io", "leasecandidates"),
    ("priorityclasses", "scheduling.k8s.io", "priorityclasses"),
    (
        "certificatesigningrequests",
        "certificates.k8s.io",
        "certificatesigningrequests",
    ),
    (
        "clustertrustbundles",
        "certificates.k8s.io",
        "clustertrustbundles",
    ),
    ("runtimeclasses", "node.k8s.io", "runtimeclasses"),
    (
        "mutatingwebhookconfigurations",
        "admissionregistration.k8s.io",
        "mutatingwebhookconfigurations",
    ),
    (
        "validatingwebhookconfigurations",
        "admissionregistration.k8s.io",
        "validatingwebhookconfigurations",
    ),
    (
        "validatingadmissionpolicies",
        "admissionregistration.k8s.io",
        "validatingadmissionpolicies",
    ),
    (
        "validatingadmissionpolicybindings",
        "admissionregistration.k8s.io",
        "validatingadmissionpolicybindings",
    ),
    (
        "mutatingadmissionpolicies",
        "admissionregistration.k8s.io",
        "mutatingadmissionpolicies",
    ),
    (
        "mutatingadmissionpolicybindings",
        "admissionregistration.k8s.io",
        "mutatingadmissionpolicybindings",
    ),
    ("flowschemas", "flowcontrol.apiserver.k8s.io", "flowschemas"),
    (
        "prioritylevelconfigurations",
        "flowcontrol.apiserver.k8s.io",
        "prioritylevelconfigurations",
    ),
    (
        "storageversions",
        "internal.apiserver.k8s.io",
        "storageversions",
    ),
    (
        "storageversionmigrations",
        "storagemigration.k8s.io",
        "storageversionmigrations",
    ),
    ("resourceclaims", "resource.k8s.io", "resourceclaims"),
    (
        "resourceclaimtemplates",
        "resource.k8s.io",
        "resourceclaimtemplates",
    ),
    ("deviceclasses", "resource.k8s.io", "deviceclasses"),
    ("resourceslices", "resource.k8s.io", "resourceslices"),
];

/// `--etcd-prefix` as the store normalizes it: leading `/`, trailing `/` (`/registry` → `/registry/`).
pub fn normalize_prefix(etcd_prefix: &str) -> String {
    let trimmed = etcd_prefix.trim_matches('/');
    if trimmed.is_empty() {
        "/".to_string()
    } else {
        format!("/{trimmed}/")
    }
}

/// Maps an etcd key to its resource, namespace and name. `None` when the key is not under
/// `etcd_prefix`, is not UTF-8, or has no object name. `/registry/ranges/serviceips` and
/// `…/servicenodeports` map to `serviceipallocations` / `servicenodeportallocations` (named
/// `serviceips` / `servicenodeports`). Unknown built-in prefixes map to a core-group resource of
/// that name.
pub fn parse_key(etcd_prefix: &str, key: &[u8]) -> Option<KeyInfo> {
    let key = std::str::from_utf8(key).ok()?;
    let prefix = normalize_prefix(etcd_prefix);
    let rest = key.strip_prefix(prefix.as_str())?;
    if let Some((path, group, resource)) = SINGLETONS.iter().find(|(p, _, _)| *p == rest) {
        return Some(KeyInfo {
            resource: GroupResource::new(*group, *resource),
            namespace: None,
            name: path.rsplit('/').next().unwrap_or(path).to_string(),
        });
    }
    let segments: Vec<&str> = rest.split('/').collect();
    if segments.iter().any(|s| s.is_empty()) {
        return None;
    }
    let (resource, tail) = match_resource(&segments)?;
    match tail {
        [name] => Some(KeyInfo {
            resource,
            namespace: None,
            name: (*name).to_string(),
        }),
        [namespace, name] => Some(KeyInfo {
            resource,
            namespace: Some((*namespace).to_string()),
            name: (*name).to_string(),
        }),
        _ => None,
    }
}

fn match_resource<'a, 'b>(segments: &'b [&'a str]) -> Option<(GroupResource, &'b [&'a str])> {
    for (path, group, resource) in BUILTINS {
        let n = path.split('/').count();
        if segments.len() > n && path.split('/').zip(segments).all(|(p, s)| p == *s) {
            return Some((GroupResource::new(*group, *resource), &segments[n..]));
        }
    }
    let first = segments.first()?;
    if first.contains('.') {
        // `<group>/<resource>/...`: custom resources and aggregated built-ins.
        if segments.len() < 3 {
            return None;
        }
        return Some((GroupResource::new(*first, segments[1]), &segments[2..]));
    }
    if segments.len() < 2 {
        return None;
    }
    Some((GroupResource::new("", *first), &segments[1..]))
}

/// The etcd path segment(s) kube-apiserver uses for `gr` (without prefix, namespace or name).
pub fn resource_path(gr: &GroupResource) -> String {
    if let Some((path, _, _)) = SINGLETONS
        .iter()
        .find(|(_, g, r)| *g == gr.group && *r == gr.resource)
    {
        return path
            .rsplit_once('/')
            .map_or(*path, |(dir, _)| dir)
            .to_string();
    }
    if let Some((path, _, _)) = BUILTINS
        .iter()
        .find(|(_, g, r)| *g == gr.group && *r == gr.resource)
    {
        return (*path).to_string();
    }
    // events.k8s.io Events share the core Event storage.
    if gr.group == "events.k8s.io" && gr.resource == "events" {
        return "events".to_string();
    }
    if gr.group.is_empty() {
        gr.resource.clone()
    } else {
        format!("{}/{}", gr.group, gr.resource)
    }
}

/// The full etcd key of an object (the AAD of aesgcm / kms).
pub fn key_for(
    etcd_prefix: &str,
    gr: &GroupResource,
    namespace: Option<&str>,
    name: &str,
) -> String {
    let prefix = normalize_prefix(etcd_prefix);
    let path = resource_path(gr);
    match namespace {
        Some(ns) => format!("{prefix}{path}/{ns}/{name}"),
        None => format!("{prefix}{path}/{name}"),
    }
}

/// The etcd key range `[start, end)` holding every object of `gr` (all namespaces).
pub fn resource_range(etcd_prefix: &str, gr: &GroupResource) -> (Vec<u8>, Vec<u8>) {
    if let Some((path, _, _)) = SINGLETONS
        .iter()
        .find(|(_, g, r)| *g == gr.group && *r == gr.resource)
    {
        let start = format!("{}{path}", normalize_prefix(etcd_prefix)).into_bytes();
        let mut end = start.clone();
        end.push(0);
        return (start, end);
    }
    let start = format!("{}{}/", normalize_prefix(etcd_prefix), resource_path(gr)).into_bytes();
    let end = prefix_end(&start);
    (start, end)
}

/// The smallest key greater than every key starting with `prefix` (etcd's `--prefix` range end).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0] // whole keyspace
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(key: &str) -> Option<(String, Option<String>, String)> {
        parse_key("/registry", key.as_bytes())
            .map(|k| (k.resource.to_string(), k.namespace, k.name))
    }

    #[test]
    fn builtins_and_exceptions() {
        let ns = |s: &str| Some(s.to_string());
        assert_eq!(
            parse("/registry/secrets/default/s1"),
            Some(("secrets".into(), ns("default"), "s1".into()))
        );
        assert_eq!(
            parse("/registry/services/specs/kube-system/dns"),
            Some(("services".into(), ns("kube-system"), "dns".into()))
        );
        assert_eq!(
            parse("/registry/services/endpoints/default/k"),
            Some(("endpoints".into(), ns("default"), "k".into()))
        );
        assert_eq!(
            parse("/registry/minions/node-1"),
            Some(("nodes".into(), None, "node-1".into()))
        );
        assert_eq!(
            parse("/registry/controllers/ns/rc"),
            Some(("replicationcontrollers".into(), ns("ns"), "rc".into()))
        );
        assert_eq!(
            parse("/registry/deployments/ns/d"),
            Some(("deployments.apps".into(), ns("ns"), "d".into()))
        );
        assert_eq!(
            parse("/registry/events/ns/e.1"),
            Some(("events".into(), ns("ns"), "e.1".into()))
        );
        assert_eq!(
            parse("/registry/leases/ns/l"),
            Some(("leases.coordination.k8s.io".into(), ns("ns"), "l".into()))
        );
        assert_eq!(
            parse("/registry/namespaces/default"),
            Some(("namespaces".into(), None, "default".into()))
        );
        assert_eq!(
            parse("/registry/clusterroles/admin"),
            Some((
                "clusterroles.rbac.authorization.k8s.io".into(),
                None,
                "admin".into()
            ))
        );
    }

    #[test]
    fn custom_resources_and_unknown() {
        let ns = |s: &str| Some(s.to_string());
        assert_eq!(
            parse("/registry/example.com/widgets/team-a/w1"),
            Some(("widgets.example.com".into(), ns("team-a"), "w1".into()))
        );
        assert_eq!(
            parse("/registry/awesome.bears.com/pandas/cr3panda"),
            Some(("pandas.awesome.bears.com".into(), None, "cr3panda".into()))
        );
        assert_eq!(
            parse("/registry/apiregistration.k8s.io/apiservices/v1.apps"),
            Some((
                "apiservices.apiregistration.k8s.io".into(),
                None,
                "v1.apps".into()
            ))
        );
        assert_eq!(
            parse("/registry/somethingnew/ns/x"),
            Some(("somethingnew".into(), ns("ns"), "x".into()))
        );
        assert_eq!(
            parse("/registry/ranges/serviceips"),
            Some(("serviceipallocations".into(), None, "serviceips".into()))
        );
        assert_eq!(
            parse("/registry/ranges/servicenodeports"),
            Some((
                "servicenodeportallocations".into(),
                None,
                "servicenodeports".into()
            ))
        );
    }

    #[test]
    fn rejects_foreign_and_malformed_keys() {
        assert_eq!(parse("/other/secrets/default/s1"), None);
        assert_eq!(parse("/registry/secrets"), None);
        assert_eq!(parse("/registry/secrets/"), None);
        assert_eq!(parse("/registry/secrets/a/b/c"), None);
        assert_eq!(parse("/registry//x"), None);
        assert_eq!(parse("/registry/example.com/widgets"), None);
        assert!(parse_key("/registry", b"/registry/secrets/default/\xff").is_none());
        assert!(parse_key("/registry", b"").is_none());
    }

    #[test]
    fn prefix_normalization() {
        assert_eq!(normalize_prefix("/registry"), "/registry/");
        assert_eq!(normalize_prefix("registry/"), "/registry/");
        assert_eq!(normalize_prefix("/a/b"), "/a/b/");
        assert_eq!(normalize_prefix(""), "/");
        let k = parse_key("/43da/registry/", b"/43da/registry/secrets/ns/n").unwrap();
        assert_eq!(k.resource, GroupResource::new("", "secrets"));
    }

    #[test]
    fn key_for_round_trips() {
        for (gr, ns, name) in [
            (GroupResource::new("", "secrets"), Some("default"), "s1"),
            (
                GroupResource::new("", "services"),
                Some("kube-system"),
                "dns",
            ),
            (
                GroupResource::new("", "endpoints"),
                Some("default"),
                "kubernetes",
            ),
            (GroupResource::new("", "nodes"), None, "n1"),
            (GroupResource::new("apps", "deployments"), Some("ns"), "d"),
            (
                GroupResource::new("example.com", "widgets"),
                Some("ns"),
                "w",
            ),
            (
                GroupResource::new("example.com", "clusterwidgets"),
                None,
                "w",
            ),
        ] {
            let key = key_for("/registry", &gr, ns, name);
            let info = parse_key("/registry", key.as_bytes()).unwrap();
            assert_eq!(info.resource, gr, "{key}");
            assert_eq!(info.namespace.as_deref(), ns);
            assert_eq!(info.name, name);
        }
        assert_eq!(
            key_for(
                "/registry",
                &GroupResource::new("", "services"),
                Some("a"),
                "b"
            ),
            "/registry/services/specs/a/b"
        );
        assert_eq!(
            key_for(
                "/registry",
                &GroupResource::new("apps", "deployments"),
                Some("a"),
                "b"
            ),
            "/registry/deployments/a/b"
        );
        assert_eq!(
            key_for(
                "/registry",
                &GroupResource::new("events.k8s.io", "events"),
                Some("a"),
                "b"
            ),
            "/registry/events/a/b"
        );
    }

    /// Every record of testdata/decoding maps from its etcd key to its resource, namespace and
    /// name, and back.
    #[test]
    fn every_builtin_kind_key_round_trips() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../testdata/decoding/builtin-kinds.jsonl"
        );
        let text = std::fs::read_to_string(path).unwrap();
        for line in text.lines() {
            let r: serde_json::Value = serde_json::from_str(line).unwrap();
            let s = |k: &str| r[k].as_str().unwrap().to_string();
            let key = s("etcd_key");
            let info = parse_key("/registry", key.as_bytes()).unwrap_or_else(|| panic!("{key}"));
            let want = GroupResource::new(s("group"), s("resource"));
            assert_eq!(info.resource, want, "{key}");
            let ns = Some(s("namespace")).filter(|n| !n.is_empty());
            assert_eq!(info.namespace, ns, "{key}");
            if !s("name").is_empty() {
                assert_eq!(info.name, s("name"), "{key}");
            }
            assert_eq!(
                key_for("/registry", &want, ns.as_deref(), &info.name),
                key,
                "{key}"
            );
        }
    }

    #[test]
    fn ranges() {
        assert_eq!(prefix_end(b"/registry/"), b"/registry0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff"), vec![0]);
        let (s, e) = resource_range("/registry", &GroupResource::new("", "secrets"));
        assert_eq!(
            (s.as_slice(), e.as_slice()),
            (&b"/registry/secrets/"[..], &b"/registry/secrets0"[..])
        );
    }
}
