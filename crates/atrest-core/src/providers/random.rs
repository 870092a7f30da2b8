//! The OS CSPRNG, for every nonce, IV, DEK and seed.

use crate::transformer::TransformError;

/// Fills `buf` from the operating system's CSPRNG.
pub(crate) fn fill(buf: &mut [u8]) -> Result<(), TransformError> {
    getrandom::fill(buf).map_err(|err| {
        TransformError::msg(format!("unable to read sufficient random bytes: {err}"))
    })
}

/// A random UUID v4 in canonical form (KMS v2 requests carry one for log correlation).
pub(crate) fn uuid_v4() -> Result<String, TransformError> {
    let mut b = [0u8; 16];
    fill(&mut b)?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    ))
}

#[cfg(test)]
mod tests {
    #[test]
    fn uuid_is_v4_canonical() {
        let a = super::uuid_v4().unwrap();
        let b = super::uuid_v4().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(a.as_bytes()[14], b'4');
        assert!(matches!(a.as_bytes()[19], b'8' | b'9' | b'a' | b'b'));
    }
}
