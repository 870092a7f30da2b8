//! The CSPRNG for every nonce, IV, DEK, seed and generated key: AWS-LC's `RAND_bytes`, a
//! CTR-DRBG seeded (and periodically reseeded) from the operating system, thread-local and
//! fork-safe, so a write costs no `getrandom` system call. In a FIPS build it is the module's
//! approved DRBG (SP 800-90A).

use crate::transformer::TransformError;

/// Fills `buf` with random bytes.
pub(crate) fn fill(buf: &mut [u8]) -> Result<(), TransformError> {
    aws_lc_rs::rand::fill(buf)
        .map_err(|_| TransformError::msg("unable to read sufficient random bytes"))
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
    fn fills_distinct_values() {
        let (mut a, mut b) = ([0u8; 32], [0u8; 32]);
        super::fill(&mut a).unwrap();
        super::fill(&mut b).unwrap();
        assert_ne!(a, [0u8; 32]);
        assert_ne!(a, b);
    }

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
