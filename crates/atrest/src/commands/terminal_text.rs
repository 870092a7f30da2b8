//! Text from etcd or a KMS plugin (keys, key IDs, error messages) made safe for tables and logs:
//! control characters are escaped (`\n`, `\x1b`, `\u{85}`), so a crafted key can neither forge a
//! table row nor send terminal escape sequences.

use std::borrow::Cow;
use std::fmt::Write;

/// `text` with every control character escaped; borrowed when there is none.
pub fn escape_control(text: &str) -> Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
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
    }
}
