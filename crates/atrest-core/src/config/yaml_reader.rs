//! go-yaml's reader checks (libyaml's `yaml_parser_update_buffer`), applied to the whole input
//! before parsing: UTF-8 that does not decode, and characters YAML does not allow in a stream
//! (C0 controls other than tab/LF/CR, DEL, C1 controls other than NEL, U+FFFE/U+FFFF), give
//! go-yaml's texts, e.g. `control characters are not allowed` for a NUL byte.
//!
//! go-yaml decodes its input in 512-byte chunks as the scanner needs them, so in a file with both a
//! syntax error and, more than a chunk later, a forbidden character, it reports the syntax error;
//! we report the character. Both refuse the file.

/// The first problem the reader finds, and the byte offset it is at.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ReaderError {
    pub problem: &'static str,
    pub offset: usize,
}

/// `Ok` when every character of `bytes` (after a UTF-8 byte-order mark) is one go-yaml reads.
pub(crate) fn check(bytes: &[u8]) -> Result<(), ReaderError> {
    let mut pos = if bytes.starts_with(b"\xef\xbb\xbf") {
        3
    } else {
        0
    };
    let fail = |problem, offset| Err(ReaderError { problem, offset });
    while pos < bytes.len() {
        let lead = bytes[pos];
        if lead < 0x80 {
            // The common case: printable ASCII, tab, LF, CR.
            if !(lead == b'\t' || lead == b'\n' || lead == b'\r' || (0x20..=0x7e).contains(&lead)) {
                return fail("control characters are not allowed", pos);
            }
            pos += 1;
            continue;
        }
        let (width, initial) = match lead {
            b if b & 0xe0 == 0xc0 => (2, u32::from(b & 0x1f)),
            b if b & 0xf0 == 0xe0 => (3, u32::from(b & 0x0f)),
            b if b & 0xf8 == 0xf0 => (4, u32::from(b & 0x07)),
            _ => return fail("invalid leading UTF-8 octet", pos),
        };
        if pos + width > bytes.len() {
            return fail("incomplete UTF-8 octet sequence", pos);
        }
        let mut value = initial;
        for k in 1..width {
            let octet = bytes[pos + k];
            if octet & 0xc0 != 0x80 {
                return fail("invalid trailing UTF-8 octet", pos + k);
            }
            value = (value << 6) | u32::from(octet & 0x3f);
        }
        let shortest = match width {
            2 => value >= 0x80,
            3 => value >= 0x800,
            _ => value >= 0x10000,
        };
        if !shortest {
            return fail("invalid length of a UTF-8 sequence", pos);
        }
        if (0xd800..=0xdfff).contains(&value) || value > 0x10ffff {
            return fail("invalid Unicode character", pos);
        }
        let allowed = value == 0x85
            || (0xa0..=0xd7ff).contains(&value)
            || (0xe000..=0xfffd).contains(&value)
            || (0x10000..=0x10ffff).contains(&value);
        if !allowed {
            return fail("control characters are not allowed", pos);
        }
        pos += width;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(bytes: &[u8]) -> Option<(&'static str, usize)> {
        check(bytes).err().map(|e| (e.problem, e.offset))
    }

    #[test]
    fn what_go_yaml_reads_passes() {
        assert_eq!(
            problem(b"\xef\xbb\xbfa: b\r\n\tc: \"\xc3\xa9\xe2\x82\xac\xf0\x9f\x94\x91\"\n"),
            None
        );
        assert_eq!(
            problem("nel\u{85} nbsp\u{a0} bom-inside\u{feff}".as_bytes()),
            None
        );
    }

    #[test]
    fn controls_and_bad_utf8_get_go_yaml_texts_at_their_offset() {
        let control = "control characters are not allowed";
        assert_eq!(problem(b"a: b\0"), Some((control, 4)));
        assert_eq!(problem(b"a: \x1b[2J"), Some((control, 3)));
        assert_eq!(problem(b"\x7f"), Some((control, 0)));
        assert_eq!(problem("x\u{9f}".as_bytes()), Some((control, 1)));
        assert_eq!(problem("\u{fffe}".as_bytes()), Some((control, 0)));
        assert_eq!(problem(b"a\xff"), Some(("invalid leading UTF-8 octet", 1)));
        assert_eq!(
            problem(b"a\xc3"),
            Some(("incomplete UTF-8 octet sequence", 1))
        );
        assert_eq!(
            problem(b"\xe2\x28\xa1"),
            Some(("invalid trailing UTF-8 octet", 1))
        );
        assert_eq!(
            problem(b"\xc0\xaf"),
            Some(("invalid length of a UTF-8 sequence", 0))
        );
        assert_eq!(
            problem(b"\xed\xa0\x80"),
            Some(("invalid Unicode character", 0))
        );
        // The first problem wins.
        assert_eq!(problem(b"\x01\xff"), Some((control, 0)));
    }
}
