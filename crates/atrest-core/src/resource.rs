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
