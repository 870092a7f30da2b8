//! The CSPRNG for every nonce, IV, DEK, seed and generated key: AWS-LC's `RAND_bytes`, a
//! CTR-DRBG seeded (and periodically reseeded) from the operating system, thread-local and
//! fork-safe. In a FIPS build it is the module's approved DRBG (SP 800-90A).
//!
//! Values written next to the ciphertext in the clear (nonces, IVs, the KMS v2 KDF info) come
//! from [`public`]: the same DRBG's output drawn 4 KiB at a time into a per-thread buffer. One
//! `RAND_bytes` call costs about twice a `getrandom` system call on the build machine (~470 ns,
//! more than encrypting 1 KiB with AES-GCM); from the buffer a nonce costs a `getpid` (~70 ns).
//! Keys never come from the buffer: they are drawn directly and zeroized by their owners.

use std::cell::RefCell;

use crate::transformer::TransformError;

/// Fills `buf` with random bytes (for key material).
pub(crate) fn fill(buf: &mut [u8]) -> Result<(), TransformError> {
    aws_lc_rs::rand::fill(buf)
        .map_err(|_| TransformError::msg("unable to read sufficient random bytes"))
}

const POOL_LEN: usize = 4096;

/// Unused DRBG output of this thread. Bytes are wiped as they are handed out, so none is handed
/// out twice; `pid` detects a `fork`, whose child must not reuse the parent's bytes.
struct Pool {
    pid: u32,
    used: usize,
    bytes: [u8; POOL_LEN],
}

thread_local! {
    static POOL: RefCell<Pool> = const {
        RefCell::new(Pool { pid: 0, used: POOL_LEN, bytes: [0; POOL_LEN] })
    };
}

/// Fills `buf` with random bytes that are stored in the clear (nonces, IVs, KDF info).
pub(crate) fn public(buf: &mut [u8]) -> Result<(), TransformError> {
    if buf.len() > POOL_LEN / 4 {
        return fill(buf);
    }
    POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        let pid = std::process::id();
        if pool.pid != pid || POOL_LEN - pool.used < buf.len() {
            fill(&mut pool.bytes)?;
            pool.pid = pid;
            pool.used = 0;
        }
        let start = pool.used;
        let taken = &mut pool.bytes[start..start + buf.len()];
        buf.copy_from_slice(taken);
        taken.fill(0);
        pool.used += buf.len();
        Ok(())
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
    fn fills_distinct_values() {
        let (mut a, mut b) = ([0u8; 32], [0u8; 32]);
        super::fill(&mut a).unwrap();
        super::fill(&mut b).unwrap();
        assert_ne!(a, [0u8; 32]);
        assert_ne!(a, b);
    }

    #[test]
    fn public_values_never_repeat_across_refills() {
        let mut seen = std::collections::HashSet::new();
        // 24-byte nonces over several 4 KiB refills, and odd sizes that straddle a refill.
        for i in 0..2000 {
            let mut n = vec![0u8; if i % 7 == 0 { 13 } else { 24 }];
            super::public(&mut n).unwrap();
            assert!(seen.insert(n), "a nonce repeated after {i} draws");
        }
        let mut big = [0u8; 2048];
        super::public(&mut big).unwrap();
        assert_ne!(big, [0u8; 2048]);
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
