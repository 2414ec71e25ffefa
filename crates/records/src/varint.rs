//! A bounds-checked reader of big-endian integers, zigzag varints and byte slices.
//!
//! Every read either succeeds or returns [`RecordError::Corrupt`]; nothing here can
//! panic on input. Slices borrow the underlying buffer.

use crate::RecordError;

/// A cursor over a byte slice.
#[derive(Debug, Clone)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    /// Bytes not yet read.
    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// The unread bytes.
    pub(crate) fn rest(&self) -> &'a [u8] {
        &self.buf[self.pos..]
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    /// The next `n` bytes.
    pub(crate) fn bytes(&mut self, n: usize, what: &str) -> Result<&'a [u8], RecordError> {
        if n > self.remaining() {
            return Err(RecordError::Corrupt(format!(
                "truncated {what}: needs {n} bytes, {} left",
                self.remaining()
            )));
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], RecordError> {
        let rest = self.rest();
        match rest.get(..N).and_then(|s| <[u8; N]>::try_from(s).ok()) {
            Some(a) => {
                self.pos += N;
                Ok(a)
            }
            None => Err(RecordError::Corrupt(format!(
                "truncated {what}: needs {N} bytes, {} left",
                rest.len()
            ))),
        }
    }

    pub(crate) fn u8(&mut self, what: &str) -> Result<u8, RecordError> {
        Ok(self.array::<1>(what)?[0])
    }

    pub(crate) fn i16(&mut self, what: &str) -> Result<i16, RecordError> {
        self.array(what).map(i16::from_be_bytes)
    }

    pub(crate) fn i32(&mut self, what: &str) -> Result<i32, RecordError> {
        self.array(what).map(i32::from_be_bytes)
    }

    pub(crate) fn u32(&mut self, what: &str) -> Result<u32, RecordError> {
        self.array(what).map(u32::from_be_bytes)
    }

    pub(crate) fn i64(&mut self, what: &str) -> Result<i64, RecordError> {
        self.array(what).map(i64::from_be_bytes)
    }

    /// An unsigned LEB128 value of at most `max_bytes` bytes and `bits` significant bits.
    #[inline(always)]
    fn unsigned_varint(&mut self, max_bytes: u32, bits: u32, what: &str) -> Result<u64, RecordError> {
        let rest = self.rest();
        // Most lengths and deltas fit one or two bytes (and `bits` is at least 14).
        match *rest {
            [b0, ..] if b0 & 0x80 == 0 => {
                self.pos += 1;
                Ok(u64::from(b0))
            }
            [b0, b1, ..] if b1 & 0x80 == 0 => {
                self.pos += 2;
                Ok(u64::from(b0 & 0x7f) | u64::from(b1) << 7)
            }
            _ => self.unsigned_varint_long(max_bytes, bits, what),
        }
    }

    /// [`Self::unsigned_varint`] of three bytes or more, or of input that ends or overflows.
    #[cold]
    #[inline(never)]
    fn unsigned_varint_long(&mut self, max_bytes: u32, bits: u32, what: &str) -> Result<u64, RecordError> {
        let rest = self.rest();
        let mut value: u64 = 0;
        for (i, &b) in (0..max_bytes).zip(rest) {
            let shift = 7 * i;
            let chunk = u64::from(b & 0x7f);
            // The last byte may only carry the bits that are left.
            if bits - shift < 7 && chunk >> (bits - shift) != 0 {
                return Err(RecordError::Corrupt(format!(
                    "{what}: varint overflows {bits} bits"
                )));
            }
            value |= chunk << shift;
            if b & 0x80 == 0 {
                self.pos += i as usize + 1;
                return Ok(value);
            }
        }
        if rest.len() < max_bytes as usize {
            return Err(RecordError::Corrupt(format!(
                "truncated {what}: needs 1 bytes, 0 left"
            )));
        }
        Err(RecordError::Corrupt(format!(
            "{what}: varint longer than {max_bytes} bytes"
        )))
    }

    /// A zigzag varint (int32, at most 5 bytes).
    #[inline]
    pub(crate) fn varint(&mut self, what: &str) -> Result<i32, RecordError> {
        let v = self.unsigned_varint(5, 32, what)? as u32;
        Ok((v >> 1) as i32 ^ -((v & 1) as i32))
    }

    /// A zigzag varlong (int64, at most 10 bytes).
    #[inline]
    pub(crate) fn varlong(&mut self, what: &str) -> Result<i64, RecordError> {
        let v = self.unsigned_varint(10, 64, what)?;
        Ok((v >> 1) as i64 ^ -((v & 1) as i64))
    }

    /// A varint length prefix followed by that many bytes; `-1` means null.
    #[inline]
    pub(crate) fn varint_bytes(&mut self, what: &str) -> Result<Option<&'a [u8]>, RecordError> {
        match self.varint(what)? {
            -1 => Ok(None),
            n if n < 0 => Err(RecordError::Corrupt(format!("{what}: negative length {n}"))),
            n => self.bytes(n as usize, what).map(Some),
        }
    }

    /// An int32 length prefix followed by that many bytes; `-1` means null.
    pub(crate) fn i32_bytes(&mut self, what: &str) -> Result<Option<&'a [u8]>, RecordError> {
        match self.i32(what)? {
            -1 => Ok(None),
            n if n < 0 => Err(RecordError::Corrupt(format!("{what}: negative length {n}"))),
            n => self.bytes(n as usize, what).map(Some),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_varint(bytes: &[u8]) -> Result<i32, RecordError> {
        Reader::new(bytes).varint("test")
    }

    fn read_varlong(bytes: &[u8]) -> Result<i64, RecordError> {
        Reader::new(bytes).varlong("test")
    }

    #[test]
    fn zigzag_values() {
        assert_eq!(read_varint(&[0x00]).unwrap(), 0);
        assert_eq!(read_varint(&[0x01]).unwrap(), -1);
        assert_eq!(read_varint(&[0x02]).unwrap(), 1);
        assert_eq!(read_varint(&[0x96, 0x01]).unwrap(), 75);
        assert_eq!(
            read_varint(&[0xfe, 0xff, 0xff, 0xff, 0x0f]).unwrap(),
            i32::MAX
        );
        assert_eq!(
            read_varint(&[0xff, 0xff, 0xff, 0xff, 0x0f]).unwrap(),
            i32::MIN
        );
        assert_eq!(read_varlong(&[0x01]).unwrap(), -1);
        let max = [0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
        assert_eq!(read_varlong(&max).unwrap(), i64::MAX);
        let min = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
        assert_eq!(read_varlong(&min).unwrap(), i64::MIN);
    }

    #[test]
    fn rejects_overlong_and_truncated() {
        assert!(read_varint(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x00]).is_err());
        assert!(read_varint(&[0xff, 0xff, 0xff, 0xff, 0x1f]).is_err());
        assert!(read_varint(&[0x80]).is_err());
        assert!(read_varint(&[]).is_err());
        let eleven = [0x80; 10];
        assert!(read_varlong(&eleven).is_err());
        assert!(
            read_varlong(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x03]).is_err()
        );
    }

    #[test]
    fn fixed_width_and_slices() {
        let mut r = Reader::new(&[0, 0, 0, 2, b'h', b'i', 0xff, 0xff, 0xff, 0xff, 7]);
        assert_eq!(r.i32_bytes("k").unwrap(), Some(&b"hi"[..]));
        assert_eq!(r.i32_bytes("v").unwrap(), None);
        assert_eq!(r.u8("b").unwrap(), 7);
        assert!(r.is_empty());
        assert!(r.i16("x").is_err());
    }
}
