//! Validation rules V1–V28 (CONFIG.md §3), in kube-apiserver's order and with its texts. Every
//! problem is collected (the caller aggregates them); only V1 stops early.

use std::collections::{HashMap, HashSet};

use base64::Engine as _;
use zeroize::Zeroizing;

use super::endpoint::parse_scheme;
use super::error::Problem;
use super::gotext::{format_duration, json_string_list, quote};
use super::raw::{RawConfig, RawKey, RawKms, RawProvider};
use crate::resource::GroupResource;

const AES_KEY_SIZES: &[usize] = &[16, 24, 32];
const SECRETBOX_KEY_SIZES: &[usize] = &[32];
/// Internal objects with no REST API (V7).
const NON_REST_RESOURCES: &[&str] = &[
    "apiserveripinfo",
    "serviceipallocations",
    "servicenodeportallocations",
];

pub(crate) fn validate(config: &RawConfig, reload: bool) -> Vec<Problem> {
    let mut v = Validator {
        lines: &config.lines,
        problems: Vec::new(),
    };
    if config.resources.is_empty() {
        v.required("resources", "at least one resources is required");
        return v.problems;
    }
    let mut kms_names: HashSet<&str> = HashSet::new();
    for (i, entry) in config.resources.iter().enumerate() {
        let r = format!("resources[{i}].resources");
        let p = format!("resources[{i}].providers");
        if entry.resources.is_empty() {
            v.required(&r, &format!("at least one {r} is required"));
        }
        v.resource_overlap(&entry.resources, &r);
        v.resource_names(&entry.resources, &r);
        if entry.providers.is_empty() {
            v.required(&p, &format!("at least one {p} is required"));
        }
        for (j, provider) in entry.providers.iter().enumerate() {
            let path = format!("{p}[{j}]");
            v.single_provider(provider, &path);
            // Like upstream, only the first set field (in this order) is validated further.
            if let Some(kms) = &provider.kms {
                v.kms(kms, &format!("{path}.kms"), &kms_names, reload);
                kms_names.insert(&kms.name);
            } else if let Some(keys) = &provider.aesgcm {
                v.keys(
                    keys.keys.as_deref(),
                    &format!("{path}.aesgcm.keys"),
                    AES_KEY_SIZES,
                );
            } else if let Some(keys) = &provider.aescbc {
                v.keys(
                    keys.keys.as_deref(),
                    &format!("{path}.aescbc.keys"),
                    AES_KEY_SIZES,
                );
            } else if let Some(keys) = &provider.secretbox {
                v.keys(
                    keys.keys.as_deref(),
                    &format!("{path}.secretbox.keys"),
                    SECRETBOX_KEY_SIZES,
                );
            }
        }
    }
    v.problems
}

struct Validator<'a> {
    lines: &'a HashMap<String, usize>,
    problems: Vec<Problem>,
}

impl Validator<'_> {
    /// The line of `path`, else of its nearest recorded ancestor.
    fn line_of(&self, path: &str) -> Option<usize> {
        let mut p = path;
        loop {
            if let Some(line) = self.lines.get(p) {
                return Some(*line);
            }
            let cut = p.rfind(['.', '['])?;
            p = &p[..cut];
        }
    }

    fn push(&mut self, path: &str, message: String) {
        let line = self.line_of(path);
        self.problems.push(Problem {
            message,
            field: Some(path.to_owned()),
            line,
        });
    }

    fn required(&mut self, path: &str, detail: &str) {
        self.push(path, format!("{path}: Required value: {detail}"));
    }

    /// `value` is already printed the way Go's field errors print it.
    fn invalid(&mut self, path: &str, value: &str, detail: &str) {
        self.push(path, format!("{path}: Invalid value: {value}: {detail}"));
    }

    /// V3 and V4, each at most once per list. Upstream runs a pairwise loop whose `continue`s
    /// skip the overlap test only for the first duplicate pair; its mirror pair (an equal pair
    /// overlaps both ways, or neither) is still tested, so the loop's verdicts are exactly:
    /// duplicate = two equal entries; overlap = some entry is `*.*`, or a group has a `*` entry and
    /// another entry (e.g. `["*.", "*."]` is both). Computed in linear time, so a list of 200,000
    /// resources validates at once.
    fn resource_overlap(&mut self, resources: &[String], path: &str) {
        if resources.len() < 2 {
            return;
        }
        let parsed: Vec<GroupResource> =
            resources.iter().map(|r| GroupResource::parse(r)).collect();
        let (duplicate, overlap) = duplicate_and_overlap(&parsed);
        let shown = json_string_list(resources);
        if duplicate {
            self.invalid(
                path,
                &shown,
                "the same resource cannot be specified multiple times",
            );
        }
        if overlap {
            self.invalid(
                path,
                &shown,
                "using overlapping resources such as 'secrets' and '*.' in the same resource list is not allowed as they will be masked",
            );
        }
    }

    /// V5–V10: the first failing check per string.
    fn resource_names(&mut self, resources: &[String], path: &str) {
        for (j, res) in resources.iter().enumerate() {
            let detail = if res.to_lowercase() != *res {
                "resource name should not contain capital letters"
            } else if res == "*" {
                "use '*.' to encrypt all the resources from core API group or *.* to encrypt all resources"
            } else if NON_REST_RESOURCES.contains(&res.as_str()) {
                "resources which do not have REST API/s cannot be encrypted"
            } else {
                let gr = GroupResource::parse(res);
                if gr.group == "events.k8s.io" {
                    "'*.events.k8s.io' objects are stored using the 'events' API group in etcd. Use 'events' instead in the config file"
                } else if gr.group == "extensions" {
                    "'extensions' group has been removed and cannot be used for encryption"
                } else if gr.group == "*" && gr.resource != "*" {
                    "encrypting the same resource across groups is not supported"
                } else {
                    continue;
                }
            };
            self.invalid(&format!("{path}[{j}]"), &quote(res), detail);
        }
    }

    /// V12, V13.
    fn single_provider(&mut self, provider: &RawProvider, path: &str) {
        let detail = match provider.set_count() {
            0 => "provider does not contain any of the expected providers: KMS, AESGCM, AESCBC, Secretbox, Identity",
            1 => return,
            _ => "more than one provider specified in a single element, should split into different list elements",
        };
        self.invalid(path, &provider.to_go_json(), detail);
    }

    /// V14–V18.
    fn keys(&mut self, keys: Option<&[RawKey]>, path: &str, sizes: &[usize]) {
        let keys = keys.unwrap_or_default();
        if keys.is_empty() {
            self.required(path, "at least one keys is required");
            return;
        }
        for (k, key) in keys.iter().enumerate() {
            let at = format!("{path}[{k}]");
            if key.name.is_empty() {
                self.required(&format!("{at}.name"), "name is a mandatory field for a key");
            }
            let secret_path = format!("{at}.secret");
            if key.secret.is_empty() {
                self.required(&secret_path, "secret is a mandatory field for a key");
                continue;
            }
            let Some(len) = decoded_len(&key.secret) else {
                self.invalid(
                    &secret_path,
                    "\"REDACTED\"",
                    "secrets must be base64 encoded",
                );
                continue;
            };
            if !sizes.contains(&len) {
                let expected: Vec<String> = sizes.iter().map(usize::to_string).collect();
                let detail = format!(
                    "secret is not of the expected length, got {len}, expected one of [{}]",
                    expected.join(" ")
                );
                self.invalid(&secret_path, "\"REDACTED\"", &detail);
            }
        }
    }

    /// V19–V28, in upstream's order: name, timeout, endpoint, cachesize, apiVersion.
    fn kms(&mut self, kms: &RawKms, path: &str, earlier_names: &HashSet<&str>, reload: bool) {
        let name_path = format!("{path}.name");
        if kms.name.is_empty() {
            self.required(&name_path, "name is a mandatory field for a provider");
        }
        if kms.api_version != "v1" && kms.name.contains(':') {
            let detail = format!(
                "invalid KMS provider name {}, must not contain ':'",
                kms.name
            );
            self.invalid(&name_path, &quote(&kms.name), &detail);
        }
        if (reload || kms.api_version != "v1") && earlier_names.contains(kms.name.as_str()) {
            let detail = format!(
                "duplicate KMS provider name {}, names must be unique",
                kms.name
            );
            self.invalid(&name_path, &quote(&kms.name), &detail);
        }

        let timeout = kms.timeout.unwrap_or_default();
        if timeout <= 0 {
            self.invalid(
                &format!("{path}.timeout"),
                &quote(&format_duration(timeout)),
                "timeout should be a positive value",
            );
        }

        let endpoint_path = format!("{path}.endpoint");
        if kms.endpoint.is_empty() {
            self.invalid(
                &endpoint_path,
                "\"\"",
                "endpoint is a mandatory field for a kms",
            );
        } else {
            match parse_scheme(&kms.endpoint) {
                Err(err) => self.invalid(
                    &endpoint_path,
                    &quote(&kms.endpoint),
                    &format!("invalid endpoint for kms provider, error: {err}"),
                ),
                Ok(scheme) if scheme != "unix" => self.invalid(
                    &endpoint_path,
                    &quote(&kms.endpoint),
                    &format!(
                        "unsupported scheme {} for KMS provider, only unix is supported",
                        quote(&scheme)
                    ),
                ),
                Ok(_) => {}
            }
        }

        let cache_path = format!("{path}.cachesize");
        match kms.cachesize {
            Some(size) if kms.api_version != "v1" => self.invalid(
                &cache_path,
                &size.to_string(),
                "cachesize is not supported in v2",
            ),
            Some(0) => self.invalid(
                &cache_path,
                "0",
                "cachesize should be a positive value, or negative to disable",
            ),
            _ => {}
        }

        if kms.api_version != "v1" && kms.api_version != "v2" {
            self.invalid(
                &format!("{path}.apiVersion"),
                &quote(&kms.api_version),
                "unsupported apiVersion apiVersion for KMS provider, only v1 and v2 are supported",
            );
        }
    }
}

/// Go's `base64.StdEncoding`: standard alphabet, padding required, non-zero trailing bits allowed.
const GO_STD_BASE64: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::RequireCanonical),
);

/// Decoded length of a secret, or `None` if Go would refuse it. Only the length leaves here.
/// V3/V4's verdicts for one resource list (see `resource_overlap`).
fn duplicate_and_overlap(parsed: &[GroupResource]) -> (bool, bool) {
    let any = GroupResource::new("*", "*");
    let mut seen = HashSet::with_capacity(parsed.len());
    let duplicate = !parsed.iter().all(|r| seen.insert(r));
    // Per group: how many entries, and whether one of them is `*`.
    let mut groups: HashMap<&str, (usize, bool)> = HashMap::new();
    for r in parsed {
        let group = groups.entry(r.group.as_str()).or_default();
        group.0 += 1;
        group.1 |= r.resource == "*";
    }
    let overlap = (parsed.len() >= 2 && parsed.contains(&any))
        || groups.values().any(|&(count, star)| star && count >= 2);
    (duplicate, overlap)
}

fn decoded_len(secret: &str) -> Option<usize> {
    decode_secret(secret).map(|bytes| bytes.len())
}

/// Decodes a secret into key material, skipping CR and LF anywhere (as Go's decoder does).
pub(crate) fn decode_secret(secret: &str) -> Option<Zeroizing<Vec<u8>>> {
    let cleaned: Zeroizing<String> = Zeroizing::new(
        secret
            .chars()
            .filter(|c| *c != '\r' && *c != '\n')
            .collect(),
    );
    GO_STD_BASE64
        .decode(cleaned.as_bytes())
        .ok()
        .map(Zeroizing::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Upstream's pairwise loop, literally.
    fn pairwise(parsed: &[GroupResource]) -> (bool, bool) {
        let any = GroupResource::new("*", "*");
        let (mut duplicate, mut overlap) = (false, false);
        for (i, r1) in parsed.iter().enumerate() {
            for (j, r2) in parsed.iter().enumerate() {
                if i == j {
                    continue;
                }
                if r1 == r2 && !duplicate {
                    duplicate = true;
                    continue;
                }
                if overlap {
                    continue;
                }
                if *r1 == any {
                    overlap = true;
                    continue;
                }
                if r1.group != r2.group {
                    continue;
                }
                if r1.resource == "*" || r2.resource == "*" {
                    overlap = true;
                }
            }
        }
        (duplicate, overlap)
    }

    #[test]
    fn linear_overlap_check_agrees_with_upstreams_pairwise_loop() {
        let names = [
            "*.",
            "*.*",
            "secrets",
            "*.apps",
            "deployments.apps",
            "configmaps",
            "x.*",
        ];
        let parsed: Vec<GroupResource> = names.iter().map(|n| GroupResource::parse(n)).collect();
        let mut list = Vec::new();
        // Every list of up to four of these names (with repeats), in every order.
        for len in 2..=4u32 {
            for code in 0..names.len().pow(len) {
                list.clear();
                let mut c = code;
                for _ in 0..len {
                    list.push(parsed[c % names.len()].clone());
                    c /= names.len();
                }
                assert_eq!(duplicate_and_overlap(&list), pairwise(&list), "{list:?}");
            }
        }
    }
}
