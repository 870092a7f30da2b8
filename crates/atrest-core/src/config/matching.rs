//! Runtime matching (CONFIG.md §4): which providers serve a storage group/resource.

use super::{EncryptionConfiguration, ProviderConfiguration};
use crate::resource::GroupResource;

impl EncryptionConfiguration {
    /// The ordered provider list kube-apiserver uses for `gr`: every entry naming exactly `gr`
    /// (lists concatenated in file order), else the `*.<group>` entry, else the `*.*` entry.
    /// `None`: not covered, the stand-alone identity transformer applies.
    pub fn providers_for(&self, gr: &GroupResource) -> Option<Vec<&ProviderConfiguration>> {
        let entries = self.entries_for(gr);
        if entries.is_empty() {
            return None;
        }
        Some(
            entries
                .into_iter()
                .flat_map(|i| self.resources[i].providers.iter())
                .collect(),
        )
    }

    /// The positions (in `resources`) of the entries whose providers serve `gr`, with the same
    /// precedence as [`providers_for`](Self::providers_for); empty when not covered.
    pub fn entries_for(&self, gr: &GroupResource) -> Vec<usize> {
        let wanted = [
            gr.clone(),
            GroupResource::new(gr.group.clone(), "*"),
            GroupResource::new("*", "*"),
        ];
        for candidate in &wanted {
            let list: Vec<usize> = self
                .resources
                .iter()
                .enumerate()
                .filter(|(_, entry)| {
                    entry
                        .resources
                        .iter()
                        .any(|r| &GroupResource::parse(r) == candidate)
                })
                .map(|(i, _)| i)
                .collect();
            if !list.is_empty() {
                return list;
            }
        }
        Vec::new()
    }
}

impl EncryptionConfiguration {
    /// Whether any entry (exact or wildcard) applies to `gr`; `false` means kube-apiserver stores it
    /// with the stand-alone identity transformer.
    pub fn covers(&self, gr: &GroupResource) -> bool {
        self.providers_for(gr).is_some()
    }

    /// Whether an entry names `gr` itself (not only a `*.<group>` or `*.*` wildcard).
    pub fn names_exactly(&self, gr: &GroupResource) -> bool {
        self.resources.iter().any(|entry| {
            entry
                .resources
                .iter()
                .any(|r| &GroupResource::parse(r) == gr)
        })
    }

    /// The provider that writes `gr` (the first of its list), if the config covers it.
    pub fn write_provider_for(&self, gr: &GroupResource) -> Option<&ProviderConfiguration> {
        self.providers_for(gr)
            .and_then(|list| list.first().copied())
    }
}
