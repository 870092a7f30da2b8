//! Config errors. `Display` is kube-apiserver's text, with secrets shown as `REDACTED`.

/// Why a config file would not load. OWNER: core-config helper (extend freely; keep `Display`
/// equal to kube-apiserver's message, e.g. `error while parsing file: resources[0]...`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// F-rules and V-rules: `error while parsing file: …`.
    #[error("error while parsing file: {0}")]
    Parse(String),
    /// L-rules: `error while building transformers: …`.
    #[error("error while building transformers: {0}")]
    Build(String),
}
