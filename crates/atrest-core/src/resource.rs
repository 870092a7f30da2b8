//! Group/resource names as an `EncryptionConfiguration` writes them (`secrets`, `deployments.apps`,
//! `*.`, `*.apps`, `*.*`) and the runtime lookup order: exact, then `*.<group>`, then `*.*`.

use std::fmt;

/// A parsed `resource.group` string. The core group is `""`; wildcards are `"*"`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupResource {
    pub group: String,
    pub resource: String,
}

impl GroupResource {
    pub fn new(group: impl Into<String>, resource: impl Into<String>) -> Self {
        Self {
            group: group.into(),
            resource: resource.into(),
        }
    }

    /// Parses a config string by splitting at the **first** `.` (no dot: core group).
    pub fn parse(s: &str) -> Self {
        match s.split_once('.') {
            Some((resource, group)) => Self::new(group, resource),
            None => Self::new("", s),
        }
    }
}

/// Prints the way the config and kube-apiserver's errors print it: `secrets`, `deployments.apps`,
/// `*.`, `*.apps`, `*.*`.
impl fmt::Display for GroupResource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.group.is_empty() {
            if self.resource == "*" {
                write!(f, "*.")
            } else {
                write!(f, "{}", self.resource)
            }
        } else {
            write!(f, "{}.{}", self.resource, self.group)
        }
    }
}

/// The storage group/resources kube-apiserver v1.36 itself serves (core group `""`), the names
/// an `EncryptionConfiguration` can cover without a CRD or an aggregated apiserver. Used to catch
/// typos (`secret`, `deployments` without `.apps`); a name not listed may still be a custom
/// resource (`<plural>.<group>`).
pub const BUILTIN_RESOURCES: &[(&str, &[&str])] = &[
    (
        "",
        &[
            "configmaps",
            "endpoints",
            "events",
            "limitranges",
            "namespaces",
            "nodes",
            "persistentvolumeclaims",
            "persistentvolumes",
            "pods",
            "podtemplates",
            "replicationcontrollers",
            "resourcequotas",
            "secrets",
            "serviceaccounts",
            "services",
        ],
    ),
    (
        "admissionregistration.k8s.io",
        &[
            "mutatingadmissionpolicies",
            "mutatingadmissionpolicybindings",
            "mutatingwebhookconfigurations",
            "validatingadmissionpolicies",
            "validatingadmissionpolicybindings",
            "validatingwebhookconfigurations",
        ],
    ),
    ("apiextensions.k8s.io", &["customresourcedefinitions"]),
    ("apiregistration.k8s.io", &["apiservices"]),
    (
        "apps",
        &[
            "controllerrevisions",
            "daemonsets",
            "deployments",
            "replicasets",
            "statefulsets",
        ],
    ),
    ("autoscaling", &["horizontalpodautoscalers"]),
    ("batch", &["cronjobs", "jobs"]),
    (
        "certificates.k8s.io",
        &["certificatesigningrequests", "clustertrustbundles"],
    ),
    ("coordination.k8s.io", &["leasecandidates", "leases"]),
    ("discovery.k8s.io", &["endpointslices"]),
    ("events.k8s.io", &["events"]),
    (
        "flowcontrol.apiserver.k8s.io",
        &["flowschemas", "prioritylevelconfigurations"],
    ),
    ("internal.apiserver.k8s.io", &["storageversions"]),
    (
        "networking.k8s.io",
        &[
            "ingressclasses",
            "ingresses",
            "ipaddresses",
            "networkpolicies",
            "servicecidrs",
        ],
    ),
    ("node.k8s.io", &["runtimeclasses"]),
    ("policy", &["poddisruptionbudgets"]),
    (
        "rbac.authorization.k8s.io",
        &[
            "clusterrolebindings",
            "clusterroles",
            "rolebindings",
            "roles",
        ],
    ),
    (
        "resource.k8s.io",
        &[
            "deviceclasses",
            "resourceclaims",
            "resourceclaimtemplates",
            "resourceslices",
        ],
    ),
    ("scheduling.k8s.io", &["priorityclasses"]),
    (
        "storage.k8s.io",
        &[
            "csidrivers",
            "csinodes",
            "csistoragecapacities",
            "storageclasses",
            "volumeattachments",
            "volumeattributesclasses",
        ],
    ),
    ("storagemigration.k8s.io", &["storageversionmigrations"]),
];

impl GroupResource {
    /// Whether kube-apiserver itself serves this group/resource ([`BUILTIN_RESOURCES`]).
    pub fn is_builtin(&self) -> bool {
        BUILTIN_RESOURCES
            .iter()
            .any(|(g, rs)| *g == self.group && rs.contains(&self.resource.as_str()))
    }

    /// Whether the group is one kube-apiserver serves itself (so an unknown resource in it is a
    /// typo, not a custom resource).
    pub fn is_builtin_group(&self) -> bool {
        BUILTIN_RESOURCES.iter().any(|(g, _)| *g == self.group)
    }
}
