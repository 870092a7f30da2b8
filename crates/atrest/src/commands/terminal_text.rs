//! Text from etcd or a KMS plugin (keys, key IDs, error messages) made safe for tables and logs:
//! control characters are escaped (`\n`, `\x1b`, `\u{85}`), so a crafted key can neither forge a
//! table row nor send terminal escape sequences. JSON and YAML output stays raw: those formats
//! escape control characters themselves.

use std::borrow::Cow;
use std::fmt::Write;

/// `text` with every control character escaped; borrowed when there is none.
pub fn escape_control(text: &str) -> Cow<'_, str> {
    escape_where(text, char::is_control)
}

/// Like [`escape_control`] but keeps line breaks and tabs: for a command's final error, whose
/// text may span lines by design (go-yaml's `unmarshal errors:` list) while an etcd key or a
/// plugin message inside it must not reach the terminal as escape sequences.
pub fn escape_control_keep_lines(text: &str) -> Cow<'_, str> {
    escape_where(text, |c| c.is_control() && c != '\n' && c != '\t')
}

fn escape_where(text: &str, escaped: impl Fn(char) -> bool) -> Cow<'_, str> {
    if !text.chars().any(&escaped) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            c if !escaped(c) => out.push(c),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x80 && c.is_control() => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// The KEY column of status and rewrite tables: `name (key_id id)`, `name`, `key_id id` or `-`,
/// both parts escaped (the name comes from the stored prefix, the key id from the stored object).
pub fn key_cell(name: Option<&str>, key_id: Option<&str>) -> String {
    match (name, key_id) {
        (Some(n), Some(id)) => format!("{} (key_id {})", escape_control(n), escape_control(id)),
        (Some(n), None) => escape_control(n).into_owned(),
        (None, Some(id)) => format!("key_id {}", escape_control(id)),
        (None, None) => "-".into(),
    }
}

/// How text logs format an event's fields: as tracing-subscriber's default (`message`, then
/// `name=value`), with control characters escaped in every value, so a key or plugin error
/// logged with `%` cannot break a log line apart or reach a terminal raw.
pub fn log_fields() -> impl for<'w> tracing_subscriber::fmt::FormatFields<'w> + Send + Sync + 'static
{
    use tracing_subscriber::field::MakeExt;
    tracing_subscriber::fmt::format::debug_fn(|writer, field, value| {
        let text = format!("{value:?}");
        if field.name() == "message" {
            write!(writer, "{}", escape_control(&text))
        } else {
            write!(writer, "{}={}", field.name(), escape_control(&text))
        }
    })
    .delimited(" ")
}

#[cfg(test)]
mod tests {
    use super::escape_control;

    #[test]
    fn escapes_what_a_terminal_would_interpret() {
        assert_eq!(
            escape_control("/registry/secrets/a/b"),
            "/registry/secrets/a/b"
        );
        assert_eq!(
            escape_control("/registry/secrets/a/x\n  forged row\x1b[2J\u{85}"),
            "/registry/secrets/a/x\\n  forged row\\x1b[2J\\u{85}"
        );
        assert_eq!(
            super::escape_control_keep_lines("line 1\n\tline 2 \x1b[2J\r"),
            "line 1\n\tline 2 \\x1b[2J\\r"
        );
    }
}
