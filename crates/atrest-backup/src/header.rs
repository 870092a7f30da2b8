//! Bounds on the age header, checked before the age crate parses it: its parser re-reads the
//! header from the start after every line, so a hostile header of 20,000 recipient stanzas took
//! over a minute to reject. We read the header lines ourselves (at most [`MAX_HEADER_BYTES`],
//! at most [`MAX_STANZAS`] stanzas) and hand them to age only when they fit.

use std::io::{BufRead, Read};

use crate::error::{BackupError, Result};

/// Largest header accepted. A KMS stanza is under 2 KiB even with a 1 KiB key id and large
/// annotations; an X25519 stanza is about 110 bytes. Parsing the largest header we accept takes
/// milliseconds.
pub const MAX_HEADER_BYTES: usize = 128 << 10;

/// Most stanzas accepted: one per recipient (`--recipient`, `--kms-endpoint` or passphrase) plus
/// the grease stanza age adds. age itself sets no limit.
pub const MAX_STANZAS: usize = 1024;

/// The first line of an age v1 file.
const VERSION_LINE: &[u8] = b"age-encryption.org/v1\n";

/// Reads the header (through its `--- ` MAC line) from `input` and returns its bytes, to be put in
/// front of the rest of the stream. Input that does not start like an age v1 header is returned
/// as read so far, and age reports what is wrong with it.
pub(crate) fn read_bounded(input: &mut impl BufRead) -> Result<Vec<u8>> {
    let mut header = Vec::new();
    let mut stanzas = 0usize;
    loop {
        let start = header.len();
        let room = (MAX_HEADER_BYTES - start) as u64;
        let n = input
            .by_ref()
            .take(room)
            .read_until(b'\n', &mut header)
            .map_err(BackupError::Read)?;
        let line = &header[start..];
        if start == 0 && line != VERSION_LINE {
            if n as u64 == room && line.last() != Some(&b'\n') {
                // No line break in the first 128 KiB (`/dev/zero`, a raw snapshot): age would read
                // on until it finds one.
                return Err(BackupError::NotAge(
                    "no age header line at the start of the input".into(),
                ));
            }
            return Ok(header);
        }
        if n == 0 || line.starts_with(b"---") {
            return Ok(header);
        }
        if line.starts_with(b"-> ") {
            stanzas += 1;
            if stanzas > MAX_STANZAS {
                return Err(BackupError::HeaderTooLarge(format!(
                    "has more than {MAX_STANZAS} recipient stanzas"
                )));
            }
        }
        if header.len() >= MAX_HEADER_BYTES {
            return Err(BackupError::HeaderTooLarge(format!(
                "is larger than {MAX_HEADER_BYTES} bytes"
            )));
        }
        if line.last() != Some(&b'\n') {
            // End of input inside a line: age reports the truncated header.
            return Ok(header);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stanzas(n: usize) -> Vec<u8> {
        let mut h = VERSION_LINE.to_vec();
        for _ in 0..n {
            h.extend_from_slice(b"-> X25519 TEiF0ypqr+bpvcqXNyCVJpL7OuwPdVwPL7KQEbFDOCc\n");
            h.extend_from_slice(b"EmECAEcKN+n/Vs9SbWiV+Hu0r+E8R77DdWYyd83nw7U\n");
        }
        h.extend_from_slice(b"--- Vn+54jqiiUCE+WZcEVY3f1sqHjlu/z1LCQ/T7Xm7qI0\npayload");
        h
    }

    #[test]
    fn a_header_within_bounds_is_returned_whole_and_the_payload_left() {
        let input = stanzas(3);
        let mut reader = std::io::BufReader::new(input.as_slice());
        let header = read_bounded(&mut reader).unwrap();
        assert_eq!(header.len(), input.len() - b"payload".len());
        let mut rest = Vec::new();
        reader.read_to_end(&mut rest).unwrap();
        assert_eq!(rest, b"payload");
    }

    #[test]
    fn too_many_stanzas_or_bytes_are_refused_and_other_input_passed_on() {
        let err = read_bounded(&mut stanzas(MAX_STANZAS + 1).as_slice()).unwrap_err();
        assert!(
            err.to_string().contains("more than 1024 recipient stanzas"),
            "{err}"
        );
        assert!(read_bounded(&mut stanzas(MAX_STANZAS).as_slice()).is_ok());

        let mut huge = VERSION_LINE.to_vec();
        huge.extend_from_slice(b"-> X25519 ");
        huge.resize(MAX_HEADER_BYTES * 4, b'A');
        let err = read_bounded(&mut huge.as_slice()).unwrap_err();
        assert!(
            err.to_string().contains("larger than 131072 bytes"),
            "{err}"
        );

        let mut zeros = std::io::BufReader::new(std::io::repeat(0).take(1 << 30));
        let err = read_bounded(&mut zeros).unwrap_err();
        assert!(err.to_string().contains("no age header line"), "{err}");

        let other = b"not age at all\n-> x\n".repeat(100_000);
        assert_eq!(
            read_bounded(&mut other.as_slice()).unwrap(),
            b"not age at all\n"
        );
    }
}
