//! The file as decoded, before validation: every provider field optional, secrets still base64
//! text. Mirrors kube-apiserver's `apiserver.config.k8s.io/v1` types so that validation can see
//! exactly what it sees (e.g. two provider fields in one element).

use std::collections::HashMap;

use zeroize::Zeroizing;

use super::gotext::{format_duration, json_string};

#[derive(Debug, Default)]
pub(crate) struct RawConfig {
    pub resources: Vec<RawResource>,
    /// Field path → 1-based line (YAML only), for pointing at problems.
    pub lines: HashMap<String, usize>,
}

#[derive(Debug, Default)]
pub(crate) struct RawResource {
    pub resources: Vec<String>,
    pub providers: Vec<RawProvider>,
}

#[derive(Debug, Default)]
pub(crate) struct RawProvider {
    pub aesgcm: Option<RawKeys>,
    pub aescbc: Option<RawKeys>,
    pub secretbox: Option<RawKeys>,
    pub identity: Option<()>,
    pub kms: Option<RawKms>,
}

#[derive(Debug, Default)]
pub(crate) struct RawKeys {
    /// `None` when absent or null (Go: nil slice, printed `null`); `Some(vec![])` for `[]`.
    pub keys: Option<Vec<RawKey>>,
}

#[derive(Default)]
pub(crate) struct RawKey {
    pub name: String,
    pub secret: Zeroizing<String>,
}

impl std::fmt::Debug for RawKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawKey")
            .field("name", &self.name)
            .field("secret", &"REDACTED")
            .finish()
    }
}

#[derive(Debug, Default, Clone)]
pub(crate) struct RawKms {
    pub api_version: String,
    pub name: String,
    pub cachesize: Option<i32>,
    pub endpoint: String,
    /// Signed nanoseconds (a negative timeout must survive until validation rejects it).
    pub timeout: Option<i64>,
}

impl RawProvider {
    /// The provider as kube-apiserver prints it in V12/V13 messages (`json.Marshal` of the internal
    /// struct), except that secrets are `REDACTED`: upstream prints them, we never do.
    pub fn to_go_json(&self) -> String {
        let keys = |k: &Option<RawKeys>| match k {
            None => "null".to_owned(),
            Some(RawKeys { keys: None }) => "{\"Keys\":null}".to_owned(),
            Some(RawKeys { keys: Some(list) }) => {
                let items: Vec<String> = list
                    .iter()
                    .map(|key| {
                        format!(
                            "{{\"Name\":{},\"Secret\":\"REDACTED\"}}",
                            json_string(&key.name)
                        )
                    })
                    .collect();
                format!("{{\"Keys\":[{}]}}", items.join(","))
            }
        };
        let identity = if self.identity.is_some() {
            "{}"
        } else {
            "null"
        };
        let kms = match &self.kms {
            None => "null".to_owned(),
            Some(k) => format!(
                "{{\"APIVersion\":{},\"Name\":{},\"CacheSize\":{},\"Endpoint\":{},\"Timeout\":{}}}",
                json_string(&k.api_version),
                json_string(&k.name),
                k.cachesize.map_or("null".to_owned(), |c| c.to_string()),
                json_string(&k.endpoint),
                k.timeout
                    .map_or("null".to_owned(), |t| json_string(&format_duration(t))),
            ),
        };
        format!(
            "{{\"AESGCM\":{},\"AESCBC\":{},\"Secretbox\":{},\"Identity\":{},\"KMS\":{}}}",
            keys(&self.aesgcm),
            keys(&self.aescbc),
            keys(&self.secretbox),
            identity,
            kms
        )
    }

    pub fn set_count(&self) -> usize {
        [
            self.aesgcm.is_some(),
            self.aescbc.is_some(),
            self.secretbox.is_some(),
            self.identity.is_some(),
            self.kms.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count()
    }
}
