//! Does the key space under `--etcd-prefix` look like kube-apiserver's layout? A wrong prefix
//! does not fail: keys still parse, into nonsense resources (`wardle.example.com.wardle.example.com`,
//! core resources named after namespaces) that the config does not cover, and the report says
//! "not covered" with exit 0. This check counts keys that map to no plausible resource and, when
//! they are most of the scan, suggests the prefix under which the sampled keys do map.

use atrest_core::GroupResource;

use crate::keymap;

/// Keys kept to try other prefixes on.
const SAMPLES: usize = 256;

/// Core-group names kube-apiserver stores that are not API resources.
const CORE_NON_RESOURCES: &[&str] = &["ranges", "masterleases"];

#[derive(Debug, Default)]
pub(crate) struct LayoutCheck {
    objects: u64,
    odd: u64,
    samples: Vec<Vec<u8>>,
}

/// Whether `key` maps to a resource kube-apiserver (or a CRD / aggregated API) would store.
fn plausible(prefix: &str, key: &[u8]) -> bool {
    let Some(info) = keymap::parse_key(prefix, key) else {
        return false;
    };
    plausible_resource(&info.resource)
}

fn plausible_resource(gr: &GroupResource) -> bool {
    if gr.resource.contains('.') {
        // Resource names never contain dots: this is a group where a resource should be.
        return false;
    }
    if gr.group.is_empty() {
        gr.is_builtin() || CORE_NON_RESOURCES.contains(&gr.resource.as_str())
    } else {
        gr.is_builtin() || (gr.group.contains('.') && !gr.is_builtin_group())
    }
}

impl LayoutCheck {
    pub(crate) fn add(&mut self, prefix: &str, key: &[u8]) {
        self.objects += 1;
        if !plausible(prefix, key) {
            self.odd += 1;
            if self.samples.len() < SAMPLES {
                self.samples.push(key.to_vec());
            }
        }
    }

    /// The warning, if most keys do not fit the prefix (or there are none at all).
    pub(crate) fn warning(&self, prefix: &str) -> Option<String> {
        let normalized = keymap::normalize_prefix(prefix);
        let shown = match normalized.trim_end_matches('/') {
            "" => "/",
            trimmed => trimmed,
        };
        if self.objects == 0 {
            return Some(format!(
                "no keys under --etcd-prefix {shown}: a Kubernetes cluster always has some; is the prefix right?"
            ));
        }
        if self.odd * 2 <= self.objects {
            return None;
        }
        let mut text = format!(
            "{} of {} keys under --etcd-prefix {shown} do not map to Kubernetes resources",
            self.odd, self.objects
        );
        if let Some((better, fits)) = self.better_prefix(prefix) {
            text.push_str(&format!(
                "; they look like the layout under --etcd-prefix {better} ({fits} of {} sampled keys map there)",
                self.samples.len()
            ));
        }
        text.push_str(": is --etcd-prefix right?");
        Some(text)
    }

    /// The parent prefix, or the prefix plus the most common next segment, whichever maps more
    /// sampled keys to plausible resources (at least half of them).
    fn better_prefix(&self, prefix: &str) -> Option<(String, usize)> {
        let base = keymap::normalize_prefix(prefix);
        let mut counts: Vec<(String, usize)> = Vec::new();
        for key in &self.samples {
            let Some(rest) = std::str::from_utf8(key)
                .ok()
                .and_then(|k| k.strip_prefix(base.as_str()))
            else {
                continue;
            };
            let first = rest.split('/').next().unwrap_or_default().to_string();
            match counts.iter_mut().find(|(s, _)| *s == first) {
                Some((_, n)) => *n += 1,
                None => counts.push((first, 1)),
            }
        }
        let mut candidates = Vec::new();
        if let Some((segment, _)) = counts.iter().max_by_key(|(_, n)| *n) {
            candidates.push(format!("{base}{segment}"));
        }
        let trimmed = base.trim_end_matches('/');
        if let Some(cut) = trimmed.rfind('/') {
            candidates.push(if cut == 0 {
                "/".to_string()
            } else {
                trimmed[..cut].to_string()
            });
        }
        candidates
            .into_iter()
            .map(|c| {
                let fits = self.samples.iter().filter(|k| plausible(&c, k)).count();
                (c, fits)
            })
            .filter(|(_, fits)| *fits * 2 >= self.samples.len() && *fits > 0)
            .max_by_key(|(_, fits)| *fits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(prefix: &str, keys: &[&str]) -> Option<String> {
        let mut c = LayoutCheck::default();
        for k in keys {
            c.add(prefix, k.as_bytes());
        }
        c.warning(prefix)
    }

    #[test]
    fn right_prefix_no_warning() {
        let keys = [
            "/registry/secrets/default/a",
            "/registry/configmaps/default/b",
            "/registry/namespaces/default",
            "/registry/wardle.example.com/flunders/default/f1",
            "/registry/ranges/serviceips",
            "/registry/deployments/default/d",
        ];
        assert_eq!(check("/registry", &keys), None);
    }

    #[test]
    fn aggregated_apiserver_prefix() {
        let keys: Vec<String> = (0..10)
            .map(|i| format!("/registry/wardle.example.com/wardle.example.com/fischers/f{i}"))
            .collect();
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        assert_eq!(
            check("/registry", &keys).unwrap(),
            "10 of 10 keys under --etcd-prefix /registry do not map to Kubernetes resources; they look like the layout under --etcd-prefix /registry/wardle.example.com (10 of 10 sampled keys map there): is --etcd-prefix right?"
        );
    }

    #[test]
    fn too_long_and_too_short_prefixes() {
        let keys = [
            "/registry/secrets/default/a",
            "/registry/secrets/kube-system/b",
        ];
        let w = check("/registry/secrets", &keys).unwrap();
        assert!(w.contains("under --etcd-prefix /registry ("), "{w}");
        let w = check("/", &keys).unwrap();
        assert!(w.contains("under --etcd-prefix /registry ("), "{w}");
        assert!(check("/nothing", &[])
            .unwrap()
            .starts_with("no keys under --etcd-prefix /nothing"));
    }
}
