//! Config errors. `Display` is kube-apiserver's text, with secrets shown as `REDACTED`; the line
//! (YAML only) and field path of each problem are available separately so a CLI can point at them.

use std::fmt;

/// Why a config file would not load. `Display` equals kube-apiserver's message, e.g.
/// `error while parsing file: resources[0].providers[0].aesgcm.keys[0].secret: Invalid value: …`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A file/decoding/validation failure known only as text: `error while parsing file: …`.
    #[error("error while parsing file: {0}")]
    Parse(String),
    /// A transformer-building failure known only as text: `error while building transformers: …`.
    #[error("error while building transformers: {0}")]
    Build(String),
    /// What the loader returns: same texts as `Parse`/`Build`, plus each problem's place.
    #[error("{0}")]
    Rejected(Rejection),
}

/// Which of kube-apiserver's two outer messages applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Reading, decoding, defaulting, validating (F-rules and V-rules).
    Parse,
    /// Building transformers (L-rules).
    Build,
}

/// One problem: kube-apiserver's text for it, plus where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The upstream text of this one problem (for validation: `path: Invalid value: …: detail`).
    pub message: String,
    /// The field path (`resources[0].providers[1].kms.name`), when the problem has one.
    pub field: Option<String>,
    /// 1-based line in a YAML file, when known.
    pub line: Option<usize>,
}

impl Problem {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            field: None,
            line: None,
        }
    }

    pub(crate) fn at_line(mut self, line: Option<usize>) -> Self {
        self.line = line;
        self
    }
}

/// A rejected file: the stage and every problem, in kube-apiserver's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub stage: Stage,
    pub problems: Vec<Problem>,
}

impl Rejection {
    pub(crate) fn parse(problems: Vec<Problem>) -> Self {
        Self {
            stage: Stage::Parse,
            problems,
        }
    }

    pub(crate) fn build(problem: Problem) -> Self {
        Self {
            stage: Stage::Build,
            problems: vec![problem],
        }
    }

    /// The inner message, aggregated like Go's `utilerrors.NewAggregate`: one error alone, several
    /// as `[e1, e2]`, repeated texts once.
    pub fn detail(&self) -> String {
        let mut seen: Vec<&str> = Vec::new();
        for p in &self.problems {
            if !seen.contains(&p.message.as_str()) {
                seen.push(&p.message);
            }
        }
        match seen.as_slice() {
            [one] => (*one).to_owned(),
            many => format!("[{}]", many.join(", ")),
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.stage {
            Stage::Parse => write!(f, "error while parsing file: {}", self.detail()),
            Stage::Build => write!(f, "error while building transformers: {}", self.detail()),
        }
    }
}

impl ConfigError {
    pub fn stage(&self) -> Stage {
        match self {
            ConfigError::Parse(_) => Stage::Parse,
            ConfigError::Build(_) => Stage::Build,
            ConfigError::Rejected(r) => r.stage,
        }
    }

    /// Every problem with its place (a text-only error yields one problem without a place).
    pub fn problems(&self) -> Vec<Problem> {
        match self {
            ConfigError::Parse(m) | ConfigError::Build(m) => vec![Problem::new(m.clone())],
            ConfigError::Rejected(r) => r.problems.clone(),
        }
    }

    /// The line of the first problem, when known (YAML input only).
    pub fn line(&self) -> Option<usize> {
        match self {
            ConfigError::Rejected(r) => r.problems.iter().find_map(|p| p.line),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregates_like_go() {
        let one = Rejection::parse(vec![Problem::new("a")]);
        assert_eq!(one.to_string(), "error while parsing file: a");
        let two = Rejection::parse(vec![
            Problem::new("a"),
            Problem::new("b"),
            Problem::new("a"),
        ]);
        assert_eq!(two.to_string(), "error while parsing file: [a, b]");
        let same = Rejection::parse(vec![Problem::new("a"), Problem::new("a")]);
        assert_eq!(same.to_string(), "error while parsing file: a");
        let build = ConfigError::Rejected(Rejection::build(Problem::new("x").at_line(Some(3))));
        assert_eq!(build.to_string(), "error while building transformers: x");
        assert_eq!(build.line(), Some(3));
        assert_eq!(build.stage(), Stage::Build);
    }
}
