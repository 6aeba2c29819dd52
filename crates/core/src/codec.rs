//! A small binary encoding for msite's local records (epoch rows, restore state, object-base
//! records). These bytes never leave the replica; packets use `msite-packet`'s format.
//!
//! Integers are LEB128 varints, byte strings are length-prefixed. A [`Dec`] checks every
//! length against what is left, so a damaged record gives [`CodecError`], never a panic.

use crate::ids::{Hash, ObjId, ReplicaId};

/// A local record could not be decoded: the store holds bytes this code did not write.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("damaged local record ({what})")]
pub struct CodecError {
    /// What was being decoded.
    pub what: &'static str,
}

/// Builds an encoded record.
#[derive(Default, Debug)]
pub struct Enc(pub Vec<u8>);

impl Enc {
    /// A new, empty encoder.
    pub fn new() -> Self {
        Enc(Vec::new())
    }
    /// A new encoder with room for `n` bytes (one allocation when `n` is enough).
    pub fn with_capacity(n: usize) -> Self {
        Enc(Vec::with_capacity(n))
    }
    /// Appends a byte.
    pub fn u8(mut self, v: u8) -> Self {
        self.0.push(v);
        self
    }
    /// Appends a varint.
    pub fn u64(mut self, mut v: u64) -> Self {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                self.0.push(b);
                return self;
            }
            self.0.push(b | 0x80);
        }
    }
    /// Appends a boolean.
    pub fn bool(self, v: bool) -> Self {
        self.u8(v as u8)
    }
    /// Appends length-prefixed bytes.
    pub fn bytes(self, v: &[u8]) -> Self {
        let mut s = self.u64(v.len() as u64);
        s.0.extend_from_slice(v);
        s
    }
    /// Appends a string.
    pub fn str(self, v: &str) -> Self {
        self.bytes(v.as_bytes())
    }
    /// Appends fixed-size bytes without a length.
    pub fn raw(mut self, v: &[u8]) -> Self {
        self.0.extend_from_slice(v);
        self
    }
    /// Appends a replica id.
    pub fn rid(self, v: &ReplicaId) -> Self {
        self.raw(&v.0)
    }
    /// Appends an object id.
    pub fn oid(self, v: &ObjId) -> Self {
        self.raw(&v.to_bytes())
    }
    /// The encoded bytes.
    pub fn done(self) -> Vec<u8> {
        self.0
    }
}

/// Reads an encoded record.
#[derive(Debug)]
pub struct Dec<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Dec<'a> {
    /// A decoder over `buf`; `what` names the record in errors.
    pub fn new(buf: &'a [u8], what: &'static str) -> Self {
        Dec { buf, what }
    }
    fn err(&self) -> CodecError {
        CodecError { what: self.what }
    }
    /// Reads a byte.
    pub fn u8(&mut self) -> Result<u8, CodecError> {
        let (&b, rest) = self
            .buf
            .split_first()
            .ok_or(CodecError { what: self.what })?;
        self.buf = rest;
        Ok(b)
    }
    /// Reads a varint.
    pub fn u64(&mut self) -> Result<u64, CodecError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            v |= ((b & 0x7f) as u64) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(self.err())
    }
    /// Reads a boolean.
    pub fn bool(&mut self) -> Result<bool, CodecError> {
        Ok(self.u8()? != 0)
    }
    /// Reads fixed-size bytes.
    pub fn raw(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        if self.buf.len() < n {
            return Err(self.err());
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }
    /// Reads the bytes not read yet.
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }
    /// Reads length-prefixed bytes.
    pub fn bytes(&mut self) -> Result<&'a [u8], CodecError> {
        let n = self.u64()?;
        let n = usize::try_from(n).map_err(|_| self.err())?;
        self.raw(n)
    }
    /// Reads a string.
    pub fn str(&mut self) -> Result<String, CodecError> {
        let b = self.bytes()?;
        String::from_utf8(b.to_vec()).map_err(|_| self.err())
    }
    /// Reads a replica id.
    pub fn rid(&mut self) -> Result<ReplicaId, CodecError> {
        let b = self.raw(16)?;
        Ok(ReplicaId(b.try_into().map_err(|_| self.err())?))
    }
    /// Reads an object id.
    pub fn oid(&mut self) -> Result<ObjId, CodecError> {
        let b = self.raw(24)?;
        ObjId::from_bytes(b).ok_or(self.err())
    }
    /// Reads a hash.
    pub fn hash(&mut self) -> Result<Hash, CodecError> {
        let b = self.raw(32)?;
        b.try_into().map_err(|_| self.err())
    }
    /// Whether everything was read.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
    /// Fails unless everything was read.
    pub fn end(self) -> Result<(), CodecError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(CodecError { what: self.what })
        }
    }
}

/// Reads a big-endian u64 from an 8-byte key suffix.
pub fn be_u64(b: &[u8]) -> Result<u64, CodecError> {
    let arr: [u8; 8] = b.try_into().map_err(|_| CodecError {
        what: "big-endian number",
    })?;
    Ok(u64::from_be_bytes(arr))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage() {
        let v = Enc::new()
            .u64(300)
            .str("héllo")
            .bool(true)
            .u64(u64::MAX)
            .done();
        let mut d = Dec::new(&v, "t");
        assert_eq!(d.u64().unwrap(), 300);
        assert_eq!(d.str().unwrap(), "héllo");
        assert!(d.bool().unwrap());
        assert_eq!(d.u64().unwrap(), u64::MAX);
        d.end().unwrap();
        for cut in 0..v.len() {
            let mut d = Dec::new(&v[..cut], "t");
            let r = (|| -> Result<(), CodecError> {
                d.u64()?;
                d.str()?;
                d.bool()?;
                d.u64()?;
                Ok(())
            })();
            assert!(r.is_err(), "cut at {cut} decoded");
        }
    }
}
