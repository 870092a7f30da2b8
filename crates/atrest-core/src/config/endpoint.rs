//! The part of Go's `net/url.Parse` that KMS endpoint validation (V24, V25) depends on: which
//! strings it rejects (with its texts) and the lower-cased scheme of the ones it accepts.

use super::gotext::quote;

/// Parses like `url.Parse`; `Ok` carries the scheme, `Err` Go's `parse "<url>": <reason>` text.
pub(crate) fn parse_scheme(raw: &str) -> Result<String, String> {
    let (before_fragment, fragment) = match raw.split_once('#') {
        Some((u, f)) => (u, Some(f)),
        None => (raw, None),
    };
    let wrap = |subject: &str, reason: String| format!("parse {}: {reason}", quote(subject));
    let scheme =
        parse_without_fragment(before_fragment).map_err(|reason| wrap(before_fragment, reason))?;
    if let Some(fragment) = fragment {
        check_escapes(fragment).map_err(|reason| wrap(raw, reason))?;
    }
    Ok(scheme)
}

fn parse_without_fragment(raw: &str) -> Result<String, String> {
    if raw.bytes().any(|b| b < 0x20 || b == 0x7f) {
        return Err("net/url: invalid control character in URL".to_owned());
    }
    if raw == "*" {
        return Ok(String::new());
    }
    let (scheme, rest) = split_scheme(raw)?;
    let scheme = scheme.to_ascii_lowercase();
    let rest = if rest.ends_with('?') && rest.matches('?').count() == 1 {
        &rest[..rest.len() - 1]
    } else {
        rest.split_once('?').map_or(rest, |(path, _query)| path)
    };
    if !rest.starts_with('/') {
        if !scheme.is_empty() {
            // Opaque URL such as `unix:foo`: nothing further is checked.
            return Ok(scheme);
        }
        let segment = rest.split('/').next().unwrap_or("");
        if segment.contains(':') {
            return Err("first path segment in URL cannot contain colon".to_owned());
        }
    }
    let mut path = rest;
    if (!scheme.is_empty() || !rest.starts_with("///")) && rest.starts_with("//") {
        let authority_and_path = &rest[2..];
        let (authority, tail) = match authority_and_path.find('/') {
            Some(i) => authority_and_path.split_at(i),
            None => (authority_and_path, ""),
        };
        check_authority(authority)?;
        path = tail;
    }
    check_escapes(path)?;
    Ok(scheme)
}

/// `getScheme`: letters then digits/`+-.`, ended by `:`; anything else means "no scheme".
fn split_scheme(raw: &str) -> Result<(&str, &str), String> {
    for (i, c) in raw.bytes().enumerate() {
        match c {
            b'a'..=b'z' | b'A'..=b'Z' => {}
            b'0'..=b'9' | b'+' | b'-' | b'.' if i > 0 => {}
            b':' if i == 0 => return Err("missing protocol scheme".to_owned()),
            b':' => return Ok((&raw[..i], &raw[i + 1..])),
            _ => return Ok(("", raw)),
        }
    }
    Ok(("", raw))
}

fn check_authority(authority: &str) -> Result<(), String> {
    let host = match authority.rfind('@') {
        Some(i) => &authority[i + 1..],
        None => authority,
    };
    if let Some(ipv6) = host.strip_prefix('[') {
        let Some(end) = ipv6.find(']') else {
            return Err("missing ']' in host".to_owned());
        };
        check_port(&ipv6[end + 1..])?;
        return Ok(());
    }
    if let Some(i) = host.rfind(':') {
        check_port(&host[i..])?;
    }
    for c in host.chars() {
        let allowed =
            c.is_ascii_alphanumeric() || !c.is_ascii() || "!$&'()*+,;=:[]<>\"-_.~%".contains(c);
        if !allowed {
            return Err(format!(
                "invalid character {} in host name",
                quote(&c.to_string())
            ));
        }
    }
    check_escapes(host)
}

/// `validOptionalPort`: empty, or `:` followed by digits only.
fn check_port(colon_port: &str) -> Result<(), String> {
    if colon_port.is_empty() {
        return Ok(());
    }
    match colon_port.strip_prefix(':') {
        Some(digits) if digits.bytes().all(|b| b.is_ascii_digit()) => Ok(()),
        _ => Err(format!("invalid port {} after host", quote(colon_port))),
    }
}

/// Every `%` must start a two-hex-digit escape: `invalid URL escape "%zz"`.
fn check_escapes(s: &str) -> Result<(), String> {
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let ok = bytes.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit);
            if !ok {
                let end = (i + 3).min(bytes.len());
                let shown = String::from_utf8_lossy(&bytes[i..end]);
                return Err(format!("invalid URL escape {}", quote(&shown)));
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes_come_out_lower_cased() {
        assert_eq!(parse_scheme("unix:///run/kms.sock").as_deref(), Ok("unix"));
        assert_eq!(parse_scheme("UNIX:///run/kms.sock").as_deref(), Ok("unix"));
        assert_eq!(parse_scheme("tcp://127.0.0.1:1234").as_deref(), Ok("tcp"));
        assert_eq!(parse_scheme("/run/kms.sock").as_deref(), Ok(""));
        assert_eq!(parse_scheme("unix:relative").as_deref(), Ok("unix"));
    }

    #[test]
    fn rejections_use_go_texts() {
        assert_eq!(
            parse_scheme("unix:///a\u{1}").unwrap_err(),
            "parse \"unix:///a\\x01\": net/url: invalid control character in URL"
        );
        assert_eq!(
            parse_scheme(":x").unwrap_err(),
            "parse \":x\": missing protocol scheme"
        );
        assert_eq!(
            parse_scheme("unix:///a%zz").unwrap_err(),
            "parse \"unix:///a%zz\": invalid URL escape \"%zz\""
        );
        assert_eq!(
            parse_scheme("tcp://h:x1/").unwrap_err(),
            "parse \"tcp://h:x1/\": invalid port \":x1\" after host"
        );
        assert_eq!(
            parse_scheme("1a:b").unwrap_err(),
            "parse \"1a:b\": first path segment in URL cannot contain colon"
        );
        assert_eq!(
            parse_scheme("tcp://a b/").unwrap_err(),
            "parse \"tcp://a b/\": invalid character \" \" in host name"
        );
    }
}
