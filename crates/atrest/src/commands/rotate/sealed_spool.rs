//! A decrypted snapshot kept off the disk in the clear and out of memory: its bytes are written to
//! an unnamed temporary file in 64 KiB chunks, each sealed with AES-256-GCM under a key that exists
//! only in this process (random, dropped with the spool), and opened again chunk by chunk when the
//! snapshot reader asks for a range. Memory stays at two chunks whatever the etcd database size;
//! the file is as large as the snapshot and disappears with the process.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Mutex;

use atrest_store::snapshot::bbolt;
use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use zeroize::Zeroizing;

const CHUNK: usize = 64 * 1024;
const TAG: usize = 16;
const SEALED: u64 = (CHUNK + TAG) as u64;

/// Writer first ([`Write`]), then a [`bbolt::Source`] once [`SealedSpool::finish`]ed.
pub struct SealedSpool {
    file: File,
    key: LessSafeKey,
    len: u64,
    pending: Zeroizing<Vec<u8>>,
    /// The chunk read last (index, plaintext): the reader walks pages mostly in order.
    cached: Mutex<Option<(u64, Zeroizing<Vec<u8>>)>>,
}

/// Chunk `index`'s nonce: the key is never reused across spools, so a counter is unique.
fn nonce(index: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&index.to_be_bytes());
    Nonce::assume_unique_for_key(n)
}

impl SealedSpool {
    /// An empty spool whose temporary file lives in `dir` (unnamed where the filesystem allows).
    pub fn new_in(dir: &Path) -> io::Result<SealedSpool> {
        let file = tempfile::tempfile_in(dir)?;
        let mut raw = Zeroizing::new([0u8; 32]);
        aws_lc_rs::rand::fill(&mut raw[..]).map_err(|_| io::Error::other("no random bytes"))?;
        let key =
            UnboundKey::new(&AES_256_GCM, &raw[..]).map_err(|_| io::Error::other("spool key"))?;
        Ok(SealedSpool {
            file,
            key: LessSafeKey::new(key),
            len: 0,
            pending: Zeroizing::new(Vec::with_capacity(CHUNK + TAG)),
            cached: Mutex::new(None),
        })
    }

    /// Plaintext bytes written so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    fn seal_pending(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let index = (self.len - self.pending.len() as u64) / CHUNK as u64;
        self.key
            .seal_in_place_append_tag(nonce(index), Aad::empty(), &mut *self.pending)
            .map_err(|_| io::Error::other("sealing a spool chunk"))?;
        self.file.write_all_at(&self.pending, index * SEALED)?;
        self.pending.clear();
        Ok(())
    }

    /// Seals the last partial chunk; the spool is then read-only.
    pub fn finish(mut self) -> io::Result<SealedSpool> {
        self.seal_pending()?;
        Ok(self)
    }

    fn chunk(&self, index: u64) -> io::Result<Zeroizing<Vec<u8>>> {
        let plain_len = (self.len - index * CHUNK as u64).min(CHUNK as u64) as usize;
        let mut buf = Zeroizing::new(vec![0u8; plain_len + TAG]);
        self.file.read_exact_at(&mut buf, index * SEALED)?;
        let opened = self
            .key
            .open_in_place(nonce(index), Aad::empty(), &mut buf)
            .map_err(|_| io::Error::other("a spool chunk changed on disk"))?
            .len();
        buf.truncate(opened);
        Ok(buf)
    }
}

impl Write for SealedSpool {
    fn write(&mut self, mut data: &[u8]) -> io::Result<usize> {
        let written = data.len();
        while !data.is_empty() {
            let room = CHUNK - self.pending.len();
            let (now, rest) = data.split_at(room.min(data.len()));
            self.pending.extend_from_slice(now);
            self.len += now.len() as u64;
            data = rest;
            if self.pending.len() == CHUNK {
                self.seal_pending()?;
            }
        }
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl bbolt::Source for SealedSpool {
    fn read_exact_at(&self, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
        if offset.saturating_add(buf.len() as u64) > self.len {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let mut cached = self.cached.lock().unwrap_or_else(|p| p.into_inner());
        while !buf.is_empty() {
            let index = offset / CHUNK as u64;
            if cached.as_ref().is_none_or(|(i, _)| *i != index) {
                *cached = Some((index, self.chunk(index)?));
            }
            let plain = &cached.as_ref().map(|(_, p)| p).expect("just filled")[..];
            let start = (offset % CHUNK as u64) as usize;
            let n = (plain.len() - start).min(buf.len());
            buf[..n].copy_from_slice(&plain[start..start + n]);
            buf = &mut buf[n..];
            offset += n as u64;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use atrest_store::snapshot::bbolt::Source;

    fn spool_of(data: &[u8], writes: usize) -> SealedSpool {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = SealedSpool::new_in(dir.path()).unwrap();
        for part in data.chunks(writes.max(1)) {
            spool.write_all(part).unwrap();
        }
        spool.finish().unwrap()
    }

    #[test]
    fn reads_back_any_range_across_chunks() {
        let data: Vec<u8> = (0..(3 * CHUNK + 1234))
            .map(|i| (i * 31 % 251) as u8)
            .collect();
        let spool = spool_of(&data, 10_000);
        assert_eq!(spool.len(), data.len() as u64);
        for (offset, len) in [
            (0, 10),
            (CHUNK - 5, 10),
            (2 * CHUNK - 1, CHUNK + 2),
            (3 * CHUNK, 1234),
            (7, 0),
        ] {
            let mut buf = vec![0u8; len];
            spool.read_exact_at(&mut buf, offset as u64).unwrap();
            assert_eq!(
                buf,
                &data[offset..offset + len],
                "offset {offset} len {len}"
            );
        }
        let mut past = [0u8; 2];
        let err = spool
            .read_exact_at(&mut past, data.len() as u64 - 1)
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn the_file_holds_no_plaintext_and_detects_tampering() {
        let data = b"apiVersion: v1\nkind: Secret\n".repeat(5000);
        let spool = spool_of(&data, 4096);
        let mut on_disk = Vec::new();
        let mut f = spool.file.try_clone().unwrap();
        std::io::Seek::rewind(&mut f).unwrap();
        std::io::Read::read_to_end(&mut f, &mut on_disk).unwrap();
        assert!(!on_disk.windows(14).any(|w| w == b"apiVersion: v1"));
        spool.file.write_all_at(&[on_disk[100] ^ 1], 100).unwrap();
        let mut buf = [0u8; 8];
        let err = spool.read_exact_at(&mut buf, 0).unwrap_err();
        assert!(err.to_string().contains("changed on disk"), "{err}");
    }
}
