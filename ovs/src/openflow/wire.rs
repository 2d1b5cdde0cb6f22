//! Bounds-checked big-endian reading and writing: every length that comes from the wire is
//! checked here, so no decoder can index out of range or underflow.

use super::error::DecodeError;

/// A cursor over a byte slice that refuses to read past its end.
#[derive(Debug, Clone)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8], what: &'static str) -> Self {
        Reader { buf, pos: 0, what }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    pub(crate) fn bytes(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let s = self.pos.checked_add(n).and_then(|end| self.buf.get(self.pos..end));
        let s = s.ok_or(DecodeError::Truncated { what: self.what, need: n, have: self.remaining() })?;
        self.pos += n;
        Ok(s)
    }

    /// Exactly `N` bytes, as an array.
    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let b = self.bytes(N)?;
        b.try_into().map_err(|_| DecodeError::Truncated { what: self.what, need: N, have: b.len() })
    }

    pub(crate) fn skip(&mut self, n: usize) -> Result<(), DecodeError> {
        self.bytes(n).map(|_| ())
    }

    pub(crate) fn rest(&mut self) -> &'a [u8] {
        let s = self.buf.get(self.pos..).unwrap_or_default();
        self.pos = self.buf.len();
        s
    }

    /// Splits off a sub-reader of `n` bytes (a nested structure with its own length).
    pub(crate) fn sub(&mut self, n: usize, what: &'static str) -> Result<Reader<'a>, DecodeError> {
        Ok(Reader::new(self.bytes(n)?, what))
    }

    pub(crate) fn peek_u16(&self) -> Result<u16, DecodeError> {
        self.clone().u16()
    }

    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(u8::from_be_bytes(self.array()?))
    }

    pub(crate) fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(((self.u32()? as u64) << 32) | self.u32()? as u64)
    }

    /// Reads an `n`-byte big-endian unsigned integer (n <= 16).
    pub(crate) fn uint(&mut self, n: usize) -> Result<u128, DecodeError> {
        let b = self.bytes(n)?;
        Ok(b.iter().fold(0u128, |acc, &x| (acc << 8) | x as u128))
    }
}

/// Appends big-endian values to a buffer.
pub(crate) trait Put {
    fn put_u8(&mut self, v: u8);
    fn put_u16(&mut self, v: u16);
    fn put_u32(&mut self, v: u32);
    fn put_u64(&mut self, v: u64);
    fn put_uint(&mut self, v: u128, n: usize);
    fn put_zeros(&mut self, n: usize);
    /// Pads with zeros to the next multiple of 8 counted from `start`.
    fn pad_to_8(&mut self, start: usize);
    /// Writes a u16 length at `at` (the length of everything from `at - offset` on).
    fn patch_u16(&mut self, at: usize, v: u16);
}

impl Put for Vec<u8> {
    fn put_u8(&mut self, v: u8) {
        self.push(v)
    }
    fn put_u16(&mut self, v: u16) {
        self.extend_from_slice(&v.to_be_bytes())
    }
    fn put_u32(&mut self, v: u32) {
        self.extend_from_slice(&v.to_be_bytes())
    }
    fn put_u64(&mut self, v: u64) {
        self.extend_from_slice(&v.to_be_bytes())
    }
    fn put_uint(&mut self, v: u128, n: usize) {
        let b = v.to_be_bytes();
        self.extend_from_slice(b.get(16usize.saturating_sub(n)..).unwrap_or(&b))
    }
    fn put_zeros(&mut self, n: usize) {
        self.resize(self.len() + n, 0)
    }
    fn pad_to_8(&mut self, start: usize) {
        let len = self.len() - start;
        self.put_zeros((8 - len % 8) % 8)
    }
    fn patch_u16(&mut self, at: usize, v: u16) {
        // Callers patch a length field they wrote themselves; out of range would be a bug,
        // which leaves the buffer as it is rather than panicking.
        if let Some(s) = self.get_mut(at..at + 2) {
            s.copy_from_slice(&v.to_be_bytes())
        }
    }
}

/// Converts a computed length to the u16 the wire carries, refusing what does not fit.
pub(crate) fn len16(n: usize, what: &'static str) -> Result<u16, super::error::EncodeError> {
    u16::try_from(n).map_err(|_| super::error::EncodeError::TooLong { what, len: n })
}
