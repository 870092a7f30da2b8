//! A bounds-checked reader of the protobuf wire format: (field number, value) pairs, nothing
//! allocated. Lengths are checked against the bytes left before anything is sliced, so a hostile
//! length costs nothing.

use super::DecodeError;

/// One field's value on the wire.
#[derive(Debug, Clone, Copy)]
pub enum Value<'a> {
    Varint(u64),
    Fixed64(u64),
    /// 4 bytes (`float`, `fixed32`): no Kubernetes field uses them.
    Fixed32,
    Bytes(&'a [u8]),
}

/// Iterates over the fields of one message.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    fn varint(&mut self) -> Result<u64, DecodeError> {
        let mut out = 0u64;
        for shift in (0..70).step_by(7) {
            let Some(&b) = self.buf.get(self.pos) else {
                return Err(err("truncated varint"));
            };
            self.pos += 1;
            if shift == 63 && b > 1 {
                return Err(err("varint overflows 64 bits"));
            }
            out |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(out);
            }
        }
        Err(err("varint longer than 10 bytes"))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| err("length runs past the end of the message"))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    /// The next field, or `None` at the end of the message.
    pub fn next_field(&mut self) -> Result<Option<(u32, Value<'a>)>, DecodeError> {
        if self.pos >= self.buf.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        let tag = u32::try_from(key >> 3)
            .ok()
            .filter(|&t| t > 0)
            .ok_or_else(|| err("invalid field number"))?;
        let value = match key & 7 {
            0 => Value::Varint(self.varint()?),
            1 => {
                let b = self.take(8)?;
                Value::Fixed64(u64::from_le_bytes(b.try_into().unwrap_or_default()))
            }
            2 => {
                let len = usize::try_from(self.varint()?).map_err(|_| err("length too large"))?;
                Value::Bytes(self.take(len)?)
            }
            5 => {
                self.take(4)?;
                Value::Fixed32
            }
            w => return Err(err(&format!("unsupported wire type {w}"))),
        };
        Ok(Some((tag, value)))
    }
}

/// Reads a packed run of varints (`repeated int32 x = 1 [packed=true]`).
pub fn packed_varints(buf: &[u8]) -> Result<Vec<u64>, DecodeError> {
    let mut r = Reader::new(buf);
    let mut out = Vec::new();
    while r.pos < buf.len() {
        out.push(r.varint()?);
    }
    Ok(out)
}

fn err(msg: &str) -> DecodeError {
    DecodeError::Protobuf(msg.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_fields_and_rejects_hostile_lengths() {
        // field 1 varint 150, field 2 bytes "hi"
        let mut r = Reader::new(&[0x08, 0x96, 0x01, 0x12, 0x02, b'h', b'i']);
        assert!(matches!(r.next_field(), Ok(Some((1, Value::Varint(150))))));
        assert!(matches!(r.next_field(), Ok(Some((2, Value::Bytes(b"hi"))))));
        assert!(matches!(r.next_field(), Ok(None)));
        // a length of 2^63 with two bytes left
        let mut r = Reader::new(&[
            0x12, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 0, 0,
        ]);
        assert!(r.next_field().is_err());
        assert!(Reader::new(&[0x08]).next_field().is_err());
        assert!(Reader::new(&[0x0b]).next_field().is_err()); // group
        assert!(Reader::new(&[0x00, 0x00]).next_field().is_err()); // field 0
        assert!(
            Reader::new(&[0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f])
                .next_field()
                .is_err()
        );
    }
}
