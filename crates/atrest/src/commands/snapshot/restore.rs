//! What makes an export restorable into a fresh cluster: the order objects are applied in, what a
//! fresh cluster re-creates by itself (or must not get back), and the server-set fields removed.

use std::collections::HashSet;

use atrest_store::keymap::KeyInfo;
use serde_json::Value;

/// Apply order: what later objects need comes first. Admission webhooks and policies come last: a
/// webhook whose service is not running yet would reject everything restored after it.
pub fn rank(info: &KeyInfo) -> u8 {
    let r = &info.resource;
    match (r.group.as_str(), r.resource.as_str()) {
        ("", "namespaces") => 0,
        ("apiextensions.k8s.io", "customresourcedefinitions") => 1,
        ("scheduling.k8s.io", _)
        | ("storage.k8s.io", "storageclasses" | "csidrivers" | "volumeattributesclasses")
        | ("node.k8s.io", _)
        | ("networking.k8s.io", "ingressclasses")
        | ("resource.k8s.io", "deviceclasses")
        | ("flowcontrol.apiserver.k8s.io", _)
        | ("apiregistration.k8s.io", _) => 2,
        ("rbac.authorization.k8s.io", "clusterroles" | "roles") => 3,
        ("rbac.authorization.k8s.io", _) => 4,
        ("", "serviceaccounts" | "secrets" | "configmaps" | "limitranges" | "resourcequotas") => 5,
        ("", "persistentvolumes") => 6,
        ("", "persistentvolumeclaims") => 7,
        ("", "services") => 8,
        ("", "endpoints") | ("discovery.k8s.io", _) => 9,
        ("admissionregistration.k8s.io", _) => 20,
        // Custom resources after the built-ins they may refer to.
        (g, _) if !g.is_empty() && !is_builtin_group(g) => 15,
        _ => 10,
    }
}

fn is_builtin_group(g: &str) -> bool {
    g.ends_with(".k8s.io") || !g.contains('.')
}

/// Services with a selector: their Endpoints are written by the endpoints controller.
pub type SelectorServices = HashSet<(String, String)>;

/// Records a decoded Service whose Endpoints the controller maintains.
pub fn note_service(info: &KeyInfo, object: &Value, services: &mut SelectorServices) {
    if info.resource.group.is_empty() && info.resource.resource == "services" {
        let has_selector = object
            .pointer("/spec/selector")
            .and_then(Value::as_object)
            .is_some_and(|m| !m.is_empty());
        if has_selector {
            services.insert((
                info.namespace.clone().unwrap_or_default(),
                info.name.clone(),
            ));
        }
    }
}

/// Whether the object is left out by default, and under which label in the summary.
pub fn left_out(info: &KeyInfo, object: &Value, services: &SelectorServices) -> Option<String> {
    let r = &info.resource;
    let always = match (r.group.as_str(), r.resource.as_str()) {
        ("", "events") | ("events.k8s.io", _) => true,
        ("coordination.k8s.io", _) => true, // leases, lease candidates: held by running components
        ("", "nodes") | ("storage.k8s.io", "csinodes" | "volumeattachments") => true,
        ("", "serviceipallocations" | "servicenodeportallocations") => true,
        ("networking.k8s.io", "ipaddresses") => true, // allocated for Services by the apiserver
        ("resource.k8s.io", "resourceslices") => true, // published by DRA drivers
        ("internal.apiserver.k8s.io", _) => true,
        _ => false,
    };
    if always {
        return Some(r.to_string());
    }
    if r.group.is_empty()
        && r.resource == "secrets"
        && object.get("type").and_then(Value::as_str) == Some("kubernetes.io/service-account-token")
    {
        return Some("secrets (service-account tokens)".into());
    }
    if r.group.is_empty() && r.resource == "endpoints" {
        let id = (
            info.namespace.clone().unwrap_or_default(),
            info.name.clone(),
        );
        if services.contains(&id) {
            return Some("endpoints (of Services with a selector)".into());
        }
    }
    let controlled = object
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .is_some_and(|refs| {
            refs.iter()
                .any(|o| o.get("controller").and_then(Value::as_bool) == Some(true))
        });
    if controlled {
        // Their controller re-creates them; restored without owner they would run twice.
        return Some(format!("{r} (controller-owned)"));
    }
    None
}

/// Removes what the server sets and a fresh cluster must assign anew: identity and bookkeeping
/// in `metadata`, `status`, a Service's allocated cluster IPs, a PersistentVolume's binding to the
/// old claim's UID.
pub fn strip_server_fields(object: &mut Value) {
    const META: &[&str] = &[
        "resourceVersion",
        "uid",
        "creationTimestamp",
        "generation",
        "managedFields",
        "selfLink",
        "ownerReferences",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
    ];
    let kind = object
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let api_version = object
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let Some(o) = object.as_object_mut() else {
        return;
    };
    if let Some(meta) = o.get_mut("metadata").and_then(Value::as_object_mut) {
        for f in META {
            meta.remove(*f);
        }
    }
    o.remove("status");
    let spec = o.get_mut("spec").and_then(Value::as_object_mut);
    match (api_version.as_str(), kind.as_str(), spec) {
        ("v1", "Service", Some(spec)) => {
            let headless = spec.get("clusterIP").and_then(Value::as_str) == Some("None");
            if !headless {
                spec.remove("clusterIP");
                spec.remove("clusterIPs");
            }
        }
        ("v1", "PersistentVolume", Some(spec)) => {
            if let Some(claim) = spec.get_mut("claimRef").and_then(Value::as_object_mut) {
                claim.remove("uid");
                claim.remove("resourceVersion");
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use atrest_core::GroupResource;
    use serde_json::json;

    fn info(group: &str, resource: &str, ns: Option<&str>, name: &str) -> KeyInfo {
        KeyInfo {
            resource: GroupResource::new(group, resource),
            namespace: ns.map(str::to_string),
            name: name.into(),
        }
    }

    #[test]
    fn order_and_left_out() {
        assert!(
            rank(&info("", "namespaces", None, "a"))
                < rank(&info(
                    "apiextensions.k8s.io",
                    "customresourcedefinitions",
                    None,
                    "a"
                ))
        );
        assert!(
            rank(&info("apps", "deployments", Some("a"), "b"))
                < rank(&info("example.com", "widgets", Some("a"), "b"))
        );
        assert!(
            rank(&info("example.com", "widgets", Some("a"), "b"))
                < rank(&info(
                    "admissionregistration.k8s.io",
                    "validatingwebhookconfigurations",
                    None,
                    "b"
                ))
        );
        let mut svcs = SelectorServices::new();
        let svc = json!({"spec": {"selector": {"app": "web"}}});
        note_service(&info("", "services", Some("shop"), "web"), &svc, &mut svcs);
        let none = json!({});
        assert_eq!(
            left_out(&info("", "endpoints", Some("shop"), "web"), &none, &svcs).as_deref(),
            Some("endpoints (of Services with a selector)")
        );
        assert_eq!(
            left_out(&info("", "endpoints", Some("shop"), "manual"), &none, &svcs),
            None
        );
        let owned = json!({"metadata": {"ownerReferences": [{"controller": true}]}});
        assert_eq!(
            left_out(&info("", "pods", Some("a"), "p"), &owned, &svcs).as_deref(),
            Some("pods (controller-owned)")
        );
        assert_eq!(
            left_out(&info("", "pods", Some("a"), "p"), &none, &svcs),
            None
        );
        let token = json!({"type": "kubernetes.io/service-account-token"});
        assert!(left_out(&info("", "secrets", Some("a"), "t"), &token, &svcs).is_some());
        assert!(left_out(
            &info("coordination.k8s.io", "leases", Some("a"), "l"),
            &none,
            &svcs
        )
        .is_some());
        assert!(left_out(&info("", "events", Some("a"), "e"), &none, &svcs).is_some());
    }

    #[test]
    fn strips_server_fields() {
        let mut svc = json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "uid": "u", "resourceVersion": "5", "creationTimestamp": "x"},
            "spec": {"clusterIP": "10.0.0.1", "clusterIPs": ["10.0.0.1"], "ports": [{"port": 80}]},
            "status": {"loadBalancer": {}}});
        strip_server_fields(&mut svc);
        assert_eq!(
            svc,
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
            "spec": {"ports": [{"port": 80}]}})
        );
        let mut headless =
            json!({"apiVersion": "v1", "kind": "Service", "spec": {"clusterIP": "None"}});
        strip_server_fields(&mut headless);
        assert_eq!(headless["spec"]["clusterIP"], "None");
    }
}
