//! One audit finding and how findings are printed.

use std::io::Write;

use serde::Serialize;

use crate::commands::terminal_text::escape_control as esc;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Warn,
    Fail,
}

impl Status {
    fn label(self) -> &'static str {
        match self {
            Status::Pass => "PASS",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        }
    }
}

/// `{"id": "config-mode", "status": "fail", "message": "...", "fix": "..."}`.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// Stable identifier for scripts.
    pub id: &'static str,
    pub status: Status,
    pub message: String,
    /// What to do; absent for passes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Check {
    pub fn pass(id: &'static str, message: impl Into<String>) -> Check {
        Check {
            id,
            status: Status::Pass,
            message: message.into(),
            fix: None,
        }
    }
    pub fn warn(id: &'static str, message: impl Into<String>, fix: impl Into<String>) -> Check {
        Check {
            id,
            status: Status::Warn,
            message: message.into(),
            fix: Some(fix.into()),
        }
    }
    pub fn fail(id: &'static str, message: impl Into<String>, fix: impl Into<String>) -> Check {
        Check {
            id,
            status: Status::Fail,
            message: message.into(),
            fix: Some(fix.into()),
        }
    }
}

/// `STATUS  CHECK  MESSAGE` with the fix indented below, then a summary line.
pub fn render_table(checks: &[Check], out: &mut dyn Write) -> std::io::Result<()> {
    let width = checks.iter().map(|c| c.id.len()).max().unwrap_or(5).max(5);
    writeln!(out, "{:<6} {:<width$} MESSAGE", "STATUS", "CHECK")?;
    for c in checks {
        writeln!(
            out,
            "{:<6} {:<width$} {}",
            c.status.label(),
            c.id,
            // Messages quote etcd keys, file contents and plugin errors.
            esc(&c.message)
        )?;
        if let Some(fix) = &c.fix {
            writeln!(out, "{:<6} {:<width$}   fix: {}", "", "", esc(fix))?;
        }
    }
    let n = |s: Status| checks.iter().filter(|c| c.status == s).count();
    writeln!(
        out,
        "\n{} passed, {} warnings, {} failed",
        n(Status::Pass),
        n(Status::Warn),
        n(Status::Fail)
    )
}
