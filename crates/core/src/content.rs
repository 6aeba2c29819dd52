//! Version content in the `Blobs` keyspace, kept in bounded chunks so that no value, no
//! transaction and no buffer grows with the size of a version.
//!
//! # Layout
//! Content of at most [`CHUNK_LEN`] bytes is one value under its 32-byte BLAKE3 hash (the
//! layout stores had before chunking, still read as is). Larger content is stored as chunks
//! under `hash ++ index` (index u32 big-endian, from 0): every chunk holds exactly
//! [`CHUNK_LEN`] bytes except the last, so the size follows from the last chunk.
//!
//! Chunk 0 is the **head**: content is present when its hash key or its chunk 0 exists.
//! Writers put chunks 1.. first (straight into the store, in bounded writes), then the head in
//! the transaction that commits the entry referring to the content. Chunks without a head are
//! invisible leftovers of an interrupted write: they are not in the state digest, and a writer
//! clears them before it writes the content again.
//!
//! Content of at most [`CHUNK_LEN`] bytes may instead be stored packed under `hash ++ 'z'`:
//! compressed whole, or as a delta against an earlier version of the same element (see
//! [`crate::packed`], which also keeps the marker keys `base ++ 'r' ++ dependent`). Chunked
//! content is never packed and never a delta's base.
//!
//! The content hash is always BLAKE3 of the whole content, computed as the bytes stream by.

use std::io::Read;
use std::path::Path;

use crate::error::{CoreError, Refusal, Result};
use crate::ids::Hash;
use crate::packed;
use crate::store::{KeyRange, Keyspace, ReadView, Store, WriteBatch, WriteOptions};
use crate::txn::Txn;

/// The size of a stored chunk (and of a content piece in a packet).
pub const CHUNK_LEN: usize = 1 << 20;

/// The default limit on one version's size: 4 GiB.
pub const DEFAULT_MAX_VERSION_BYTES: u64 = 4 << 30;

/// The key of chunk `index` of the content `hash`.
pub fn chunk_key(hash: &Hash, index: u32) -> [u8; 36] {
    let mut k = [0u8; 36];
    k[..32].copy_from_slice(hash);
    k[32..].copy_from_slice(&index.to_be_bytes());
    k
}

/// The content a `Blobs` key makes present (its hash key, its packed key or its chunk 0), if
/// any.
pub fn head_of(key: &[u8]) -> Option<Hash> {
    match key.len() {
        32 => key.try_into().ok(),
        33 if key[32] == packed::PACKED => key[..32].try_into().ok(),
        36 if key[32..] == [0, 0, 0, 0] => key[..32].try_into().ok(),
        _ => None,
    }
}

/// The index of a chunk key, if `key` is one.
fn index_of(key: &[u8]) -> Option<u32> {
    let b: [u8; 4] = key.get(32..36)?.try_into().ok()?;
    (key.len() == 36).then_some(u32::from_be_bytes(b))
}

/// The keys of the chunks of `hash` (the range after them holds only packed and marker keys,
/// whose suffixes sort above the first byte of any chunk index below `0x7200_0000`).
fn chunk_range(hash: &Hash, from: u32) -> KeyRange {
    let mut end = hash.to_vec();
    end.push(packed::DEPENDENT);
    KeyRange {
        start: std::ops::Bound::Included(chunk_key(hash, from).to_vec()),
        end: std::ops::Bound::Excluded(end),
    }
}

/// Whether the small content `hash` is present (plain or packed).
fn contains_small<R: ReadView + ?Sized>(r: &R, hash: &Hash) -> Result<bool> {
    Ok(r.get(Keyspace::Blobs, hash)?.is_some() || packed::get_packed(r, hash)?.is_some())
}

/// Whether the content `hash` is present.
pub fn contains<R: ReadView + ?Sized>(r: &R, hash: &Hash) -> Result<bool> {
    Ok(contains_small(r, hash)? || r.get(Keyspace::Blobs, &chunk_key(hash, 0))?.is_some())
}

/// Whether the content `hash` of `size` bytes is present: content of at most a chunk is only
/// ever stored under its hash or its packed key.
pub fn contains_sized<R: ReadView + ?Sized>(r: &R, hash: &Hash, size: u64) -> Result<bool> {
    if size <= CHUNK_LEN as u64 {
        return contains_small(r, hash);
    }
    contains(r, hash)
}

/// The size of the content `hash`, if present.
pub fn size<R: ReadView + ?Sized>(r: &R, hash: &Hash) -> Result<Option<u64>> {
    if let Some(v) = r.get(Keyspace::Blobs, hash)? {
        return Ok(Some(v.len() as u64));
    }
    if let Some(v) = packed::get_packed(r, hash)? {
        return packed::size_of(&v).map(Some);
    }
    if r.get(Keyspace::Blobs, &chunk_key(hash, 0))?.is_none() {
        return Ok(None);
    }
    chunked_size(r, hash).map(Some)
}

/// The size of chunked content known to be present, from its last chunk.
fn chunked_size<R: ReadView + ?Sized>(r: &R, hash: &Hash) -> Result<u64> {
    let last = r.last(Keyspace::Blobs, chunk_range(hash, 0))?;
    let bad = CoreError::Codec(crate::codec::CodecError {
        what: "content chunk key",
    });
    let Some((k, v)) = last else { return Err(bad) };
    let index = index_of(&k).ok_or(bad)?;
    Ok(u64::from(index) * CHUNK_LEN as u64 + v.len() as u64)
}

/// A reader of the content `hash`, chunk by chunk, if present.
pub fn open<'r, R: ReadView + ?Sized>(r: &'r R, hash: &Hash) -> Result<Option<Reader<'r, R>>> {
    if let Some(v) = r.get(Keyspace::Blobs, hash)? {
        return Ok(Some(Reader::new(r, *hash, v, None)));
    }
    if let Some(v) = packed::get_packed(r, hash)? {
        let whole = packed::decode(r, hash, &v, packed::MAX_DEPTH)?;
        return Ok(Some(Reader::new(r, *hash, whole, None)));
    }
    match r.get(Keyspace::Blobs, &chunk_key(hash, 0))? {
        Some(v) => Ok(Some(Reader::new(r, *hash, v, Some(1)))),
        None => Ok(None),
    }
}

/// The whole content `hash` in memory, if present (for content known to be small).
pub fn read_all<R: ReadView + ?Sized>(r: &R, hash: &Hash) -> Result<Option<Vec<u8>>> {
    let Some(mut rd) = open(r, hash)? else {
        return Ok(None);
    };
    let mut out = Vec::new();
    rd.read_to_end(&mut out)
        .map_err(|e| CoreError::io("reading content from the store", e))?;
    Ok(Some(out))
}

/// Streams one content from the store, holding one chunk at a time.
pub struct Reader<'r, R: ReadView + ?Sized> {
    r: &'r R,
    hash: Hash,
    buf: Vec<u8>,
    pos: usize,
    /// The next chunk to load (`None`: the content ends with `buf`).
    next: Option<u32>,
}

impl<'r, R: ReadView + ?Sized> Reader<'r, R> {
    fn new(r: &'r R, hash: Hash, buf: Vec<u8>, next: Option<u32>) -> Self {
        Reader {
            r,
            hash,
            buf,
            pos: 0,
            next,
        }
    }

    /// The whole content and its size: in memory when it is stored as one value, otherwise
    /// the reader to stream it with.
    pub fn whole_or_size(self) -> Result<std::result::Result<Vec<u8>, (Self, u64)>> {
        if self.next.is_none() {
            return Ok(Ok(self.buf));
        }
        let size = chunked_size(self.r, &self.hash)?;
        Ok(Err((self, size)))
    }

    /// The next chunk of the content, `None` at its end.
    pub fn next_chunk(&mut self) -> Result<Option<Vec<u8>>> {
        if self.pos < self.buf.len() {
            self.pos = self.buf.len();
            let first = std::mem::take(&mut self.buf);
            return Ok(Some(first));
        }
        let Some(i) = self.next else { return Ok(None) };
        match self.r.get(Keyspace::Blobs, &chunk_key(&self.hash, i))? {
            Some(v) => {
                // A chunk shorter than the chunk size is the last one.
                self.next = (v.len() == CHUNK_LEN).then(|| i.checked_add(1)).flatten();
                Ok(Some(v))
            }
            None => {
                self.next = None;
                Ok(None)
            }
        }
    }
}

impl<R: ReadView + ?Sized> Read for Reader<'_, R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.buf.len() {
            match self.next_chunk().map_err(std::io::Error::other)? {
                Some(v) if !v.is_empty() => {
                    self.buf = v;
                    self.pos = 0;
                }
                Some(_) => {}
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Removes the content `hash` (its hash key, its packed key and every chunk) in `txn`; content
/// stored as a delta against it is first stored whole.
pub(crate) fn delete_in<S: Store>(txn: &mut Txn<'_, S>, hash: &Hash) -> Result<()> {
    packed::delete_small(txn, hash)?;
    let last = ReadView::last(&*txn, Keyspace::Blobs, chunk_range(hash, 0))?;
    if let Some(n) = last.and_then(|(k, _)| index_of(&k)) {
        for i in 0..=n {
            txn.delete(Keyspace::Blobs, &chunk_key(hash, i));
        }
    }
    Ok(())
}

/// Removes every chunk after the head of `hash` left by an interrupted write, before the
/// content is written again.
fn clear_tail<S: Store>(store: &S, hash: &Hash) -> Result<()> {
    let mut end = hash.to_vec();
    end.push(packed::DEPENDENT);
    let mut b = store.batch();
    b.delete_range(Keyspace::Blobs, &chunk_key(hash, 1), &end);
    Ok(store.write(b, WriteOptions::NO_SYNC)?)
}

/// Writes chunk `index` (≥ 1) of `hash` straight into the store.
fn put_tail_chunk<S: Store>(store: &S, hash: &Hash, index: u32, bytes: &[u8]) -> Result<()> {
    let mut b = store.batch();
    b.put(Keyspace::Blobs, &chunk_key(hash, index), bytes);
    Ok(store.write(b, WriteOptions::NO_SYNC)?)
}

/// The operator's message for content over the site's limit.
pub fn too_large(what: &str, limit: u64) -> String {
    format!(
        "{what} is larger than this site's limit of {limit} bytes for one version (set by `msite init --max-version-size`); nothing was changed"
    )
}

/// Where checked-in content comes from: bytes in memory, or a file read twice (once to hash
/// it, once to store it), so that memory stays bounded whatever its size.
#[derive(Clone, Copy, Debug)]
pub enum Source<'a> {
    /// Content in memory.
    Bytes(&'a [u8]),
    /// A file (or anything that can be opened and read again, such as `/dev/zero`).
    File(&'a Path),
}

/// Content whose tail chunks are in the store: what a check-in still has to write.
#[derive(Debug)]
pub(crate) struct Staged {
    /// BLAKE3 of the whole content.
    pub hash: Hash,
    /// Its size.
    pub size: u64,
    /// The whole content (at most a chunk) or its chunk 0, to write with the entry.
    head: Vec<u8>,
}

impl Staged {
    /// Writes the head into `txn`, unless the content is present already.
    pub fn put_head<S: Store>(self, txn: &mut Txn<'_, S>) -> Result<()> {
        if contains_sized(&*txn, &self.hash, self.size)? {
            return Ok(());
        }
        if self.size as usize > CHUNK_LEN {
            txn.put_owned(
                Keyspace::Blobs,
                chunk_key(&self.hash, 0).to_vec(),
                self.head,
            );
            return Ok(());
        }
        packed::store_whole(txn, &self.hash, self.head)
    }
}

/// Where a pass writes chunk `index` (≥ 1) of the content.
type ChunkSink<'a> = &'a dyn Fn(u32, &[u8]) -> Result<()>;

/// A pass over a source: hash, size and the first chunk, reading at most `limit + 1` bytes;
/// with `store_to`, hands it chunks 1.. as they are read.
fn pass(
    rd: &mut dyn Read,
    limit: u64,
    store_to: Option<ChunkSink<'_>>,
) -> std::io::Result<(Hash, u64, Vec<u8>)> {
    let mut rd = rd.take(limit.saturating_add(1));
    let mut h = blake3::Hasher::new();
    // Grows with what arrives: a small file costs a small buffer.
    let mut buf = Vec::new();
    let (mut size, mut first, mut index) = (0u64, Vec::new(), 0u32);
    loop {
        buf.clear();
        (&mut rd).take(CHUNK_LEN as u64).read_to_end(&mut buf)?;
        let n = buf.len();
        if n == 0 && index > 0 {
            break;
        }
        h.update(&buf);
        size += n as u64;
        if index == 0 {
            first = std::mem::take(&mut buf);
        } else if let Some(put) = store_to {
            put(index, &buf).map_err(std::io::Error::other)?;
        }
        index = index.saturating_add(1);
        if n < CHUNK_LEN {
            break;
        }
    }
    Ok((*h.finalize().as_bytes(), size, first))
}

/// Hashes `src` and writes its chunks after the head into `store` (unless the content is
/// present already); refuses content over `limit` bytes without reading more than that.
pub(crate) fn stage<S: Store>(
    store: &S,
    src: Source<'_>,
    what: &str,
    limit: u64,
) -> Result<Staged> {
    let io = |e| CoreError::io(format!("reading {what}"), e);
    let open = |p: &Path| std::fs::File::open(p).map_err(io);
    let (hash, size, head) = match src {
        Source::Bytes(b) => pass(&mut &b[..], limit, None).map_err(io)?,
        Source::File(p) => pass(&mut open(p)?, limit, None).map_err(io)?,
    };
    if size > limit {
        return Err(CoreError::Invalid(too_large(what, limit)));
    }
    if size as usize > CHUNK_LEN && !contains(store, &hash)? {
        clear_tail(store, &hash)?;
        let put = |i: u32, b: &[u8]| put_tail_chunk(store, &hash, i, b);
        let again = match src {
            Source::Bytes(b) => pass(&mut &b[..], limit, Some(&put)),
            Source::File(p) => pass(&mut open(p)?, limit, Some(&put)),
        };
        let (h2, size2, _) = again.map_err(|e| from_io(what, e))?;
        if (h2, size2) != (hash, size) {
            clear_tail(store, &hash)?;
            return Err(CoreError::Invalid(format!(
                "{what} changed while it was being checked in; check it in again"
            )));
        }
    }
    Ok(Staged { hash, size, head })
}

/// An error of a pass over a source: the store's own error when writing a chunk failed,
/// otherwise the reading error.
fn from_io(what: &str, e: std::io::Error) -> CoreError {
    if !e.get_ref().is_some_and(|i| i.is::<CoreError>()) {
        return CoreError::io(format!("reading {what}"), e);
    }
    match e.into_inner().map(|i| i.downcast::<CoreError>()) {
        Some(Ok(core)) => *core,
        _ => CoreError::Invalid(format!("reading {what} failed")),
    }
}

/// Leftover chunks of a check-in that did not commit (its head never reached the store).
pub(crate) fn discard_staged<S: Store>(store: &S, hash: &Hash) -> Result<()> {
    if contains(store, hash)? {
        return Ok(());
    }
    clear_tail(store, hash)
}

/// One content arriving in a packet, as a whole record or as pieces.
struct Arriving {
    hash: Hash,
    total: u64,
    got: u64,
    hasher: blake3::Hasher,
    /// Whether the content is present already (its bytes are then only verified).
    present: bool,
    /// Chunk 0, kept until the whole content is verified.
    head: Option<Vec<u8>>,
    /// Bytes of the chunk being filled.
    buf: Vec<u8>,
    /// Index of the chunk being filled.
    index: u32,
}

/// Takes content records of a packet into a transaction, re-chunked to [`CHUNK_LEN`], holding
/// at most two chunks besides what the transaction holds until its owner commits a prefix
/// (chunks after the head go through the transaction, so that a deletion of the same content
/// earlier in the transaction cannot outlive them); refuses content over the site's limit from
/// its declared size.
pub(crate) struct Intake {
    limit: u64,
    source: String,
    cur: Option<Arriving>,
    /// Bases of deltas, and contents rebuilt from deltas (the next version's base).
    bases: packed::BaseCache,
}

impl Intake {
    /// An intake for the packet `source` (for messages) at a site with `limit`.
    pub fn new(limit: u64, source: &str) -> Self {
        Intake {
            limit,
            source: source.to_string(),
            cur: None,
            bases: packed::BaseCache::default(),
        }
    }

    fn malformed(&self, what: &str) -> CoreError {
        CoreError::Malformed(format!("{}: {what}", self.source))
    }

    /// Fails unless no content is half-way: an entry or the end of the packet must not come
    /// between the pieces of one content.
    pub fn idle(&self) -> Result<()> {
        match &self.cur {
            None => Ok(()),
            Some(_) => Err(self.malformed("a content ends before all its pieces arrived")),
        }
    }

    fn check_limit(&self, total: u64) -> Result<()> {
        if total > self.limit {
            return Err(CoreError::Refused(Refusal::Other(format!(
                "{}: the packet carries a version of {total} bytes, more than this site's limit of {} bytes for one version; nothing was applied",
                self.source, self.limit
            ))));
        }
        Ok(())
    }

    /// A whole-content record. Returns the hash once the content is in `txn`.
    pub fn blob<S: Store>(
        &mut self,
        txn: &mut Txn<'_, S>,
        hash: Hash,
        bytes: Vec<u8>,
    ) -> Result<Hash> {
        self.idle()?;
        self.check_limit(bytes.len() as u64)?;
        if bytes.len() <= CHUNK_LEN {
            if *blake3::hash(&bytes).as_bytes() != hash {
                return Err(self.malformed("a content record does not match its hash"));
            }
            // Content is keyed by its hash: writing it again is harmless, and cheaper than
            // reading first. Kept as the base a later delta of the packet may name.
            let kept = std::sync::Arc::new(bytes);
            self.bases.keep(hash, kept.clone());
            packed::store_whole(txn, &hash, kept.to_vec())?;
            return Ok(hash);
        }
        let total = bytes.len() as u64;
        let mut done = None;
        for (i, piece) in bytes.chunks(CHUNK_LEN).enumerate() {
            done = self.piece(txn, hash, total, (i * CHUNK_LEN) as u64, piece)?;
        }
        done.ok_or_else(|| self.malformed("a content record ends early"))
    }

    /// A content-delta record: the content `hash` of `size` bytes as a zstd `frame` against the
    /// content `base`, which must be here (or earlier in this packet). The content is rebuilt
    /// and its hash checked before anything of it goes into `txn`. Returns the hash.
    pub fn delta<S: Store>(
        &mut self,
        txn: &mut Txn<'_, S>,
        (hash, base): (Hash, Hash),
        size: u64,
        frame: &[u8],
    ) -> Result<Hash> {
        self.idle()?;
        self.check_limit(size)?;
        if size > CHUNK_LEN as u64 {
            return Err(self.malformed("a content delta is larger than one chunk"));
        }
        let Some(b) = self.bases.get(&*txn, &base)? else {
            return Err(CoreError::Refused(Refusal::Other(format!(
                "{}: version content {} arrives as a delta against content {}, which this replica does not hold; nothing was applied: if this replica was restored from a backup run `msite restorereplica`, otherwise send the sender a packet from here (so that it learns what this replica holds) and import its next packet",
                self.source,
                crate::ids::hex(&hash[..8]),
                crate::ids::hex(&base[..8])
            ))));
        };
        let Some(data) = packed::undelta(&hash, size as usize, &b, frame) else {
            return Err(self.malformed(&format!(
                "the delta of version content {} against {} does not rebuild content with that hash",
                crate::ids::hex(&hash[..8]),
                crate::ids::hex(&base[..8])
            )));
        };
        packed::store_received(txn, &hash, &data, (&base, frame))?;
        self.bases.keep(hash, std::sync::Arc::new(data));
        Ok(hash)
    }

    /// A content piece. Returns the hash once the whole content is verified and in `txn`.
    pub fn piece<S: Store>(
        &mut self,
        txn: &mut Txn<'_, S>,
        hash: Hash,
        total: u64,
        offset: u64,
        bytes: &[u8],
    ) -> Result<Option<Hash>> {
        if offset == 0 {
            self.start(txn, hash, total)?;
        }
        let source = &self.source;
        let cur = match self.cur.as_mut() {
            Some(c) if c.hash == hash && c.total == total && c.got == offset => c,
            _ => {
                return Err(CoreError::Malformed(format!(
                    "{source}: a content piece is out of order"
                )))
            }
        };
        if offset + bytes.len() as u64 > total {
            return Err(self.malformed("a content piece runs past its content"));
        }
        cur.hasher.update(bytes);
        cur.got += bytes.len() as u64;
        if !cur.present {
            cur.absorb(txn, bytes);
        }
        if cur.got < total {
            return Ok(None);
        }
        self.finish(txn).map(Some)
    }

    fn start<S: Store>(&mut self, txn: &mut Txn<'_, S>, hash: Hash, total: u64) -> Result<()> {
        self.idle()?;
        self.check_limit(total)?;
        let present = contains(&*txn, &hash)?;
        if !present {
            clear_tail(txn.store(), &hash)?;
        }
        self.cur = Some(Arriving {
            hash,
            total,
            got: 0,
            hasher: blake3::Hasher::new(),
            present,
            head: None,
            buf: Vec::new(),
            index: 0,
        });
        Ok(())
    }

    fn finish<S: Store>(&mut self, txn: &mut Txn<'_, S>) -> Result<Hash> {
        let Some(mut cur) = self.cur.take() else {
            return Err(self.malformed("a content piece is out of order"));
        };
        if *cur.hasher.finalize().as_bytes() != cur.hash {
            if !cur.present {
                clear_tail(txn.store(), &cur.hash)?;
            }
            return Err(self.malformed("a content record does not match its hash"));
        }
        if cur.present {
            return Ok(cur.hash);
        }
        let rest = std::mem::take(&mut cur.buf);
        match cur.head.take() {
            None => packed::store_whole(txn, &cur.hash, rest)?,
            Some(head) => {
                if !rest.is_empty() {
                    let key = chunk_key(&cur.hash, cur.index).to_vec();
                    txn.put_owned(Keyspace::Blobs, key, rest);
                }
                txn.put_owned(Keyspace::Blobs, chunk_key(&cur.hash, 0).to_vec(), head);
            }
        }
        Ok(cur.hash)
    }
}

impl Arriving {
    /// Adds bytes to the chunk being filled, writing each full chunk after the head into the
    /// transaction (whose owner commits prefixes to bound its size).
    fn absorb<S: Store>(&mut self, txn: &mut Txn<'_, S>, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let n = (CHUNK_LEN - self.buf.len()).min(bytes.len());
            self.buf.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            // A full chunk is written once more bytes follow: the last chunk, full or not,
            // is kept for `finish` (it is the whole content when that fits in one chunk).
            if self.buf.len() == CHUNK_LEN && (self.got < self.total || !bytes.is_empty()) {
                let full = std::mem::take(&mut self.buf);
                if self.index == 0 {
                    self.head = Some(full);
                } else {
                    let key = chunk_key(&self.hash, self.index).to_vec();
                    txn.put_owned(Keyspace::Blobs, key, full);
                }
                self.index += 1;
            }
        }
    }
}

#[cfg(all(test, feature = "testkit"))]
mod tests {
    use super::*;
    use crate::testkit::MemStore;

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 % 251) as u8).collect()
    }

    /// Feeds `bytes` as pieces of `piece` bytes; the last call's result.
    fn feed(s: &MemStore, intake: &mut Intake, bytes: &[u8], piece: usize) -> Result<Option<Hash>> {
        let hash = *blake3::hash(bytes).as_bytes();
        let mut txn = Txn::new(s);
        let mut out = None;
        for (i, p) in bytes.chunks(piece).enumerate() {
            out = intake.piece(&mut txn, hash, bytes.len() as u64, (i * piece) as u64, p)?;
        }
        txn.commit(WriteOptions::NO_SYNC)?;
        Ok(out)
    }

    #[test]
    fn pieces_of_any_size_are_stored_as_whole_chunks() {
        let s = MemStore::new();
        let bytes = data(2 * CHUNK_LEN + 100);
        let mut intake = Intake::new(u64::MAX, "p");
        let h = feed(&s, &mut intake, &bytes, 300_001)
            .unwrap()
            .expect("complete");
        intake.idle().unwrap();
        let lens: Vec<usize> = s
            .scan(Keyspace::Blobs, KeyRange::all())
            .unwrap()
            .map(|kv| kv.unwrap().1.len())
            .collect();
        assert_eq!(lens, vec![CHUNK_LEN, CHUNK_LEN, 100]);
        assert_eq!(read_all(&s, &h).unwrap(), Some(bytes));
    }

    #[test]
    fn content_deleted_and_arriving_again_in_one_transaction_stays_whole() {
        let s = MemStore::new();
        let bytes = data(3 * CHUNK_LEN + 5);
        let mut intake = Intake::new(u64::MAX, "p");
        let h = feed(&s, &mut intake, &bytes, CHUNK_LEN)
            .unwrap()
            .expect("complete");
        let mut txn = Txn::new(&s);
        delete_in(&mut txn, &h).unwrap();
        let total = bytes.len() as u64;
        for (i, p) in bytes.chunks(CHUNK_LEN).enumerate() {
            intake
                .piece(&mut txn, h, total, (i * CHUNK_LEN) as u64, p)
                .unwrap();
        }
        txn.commit(WriteOptions::NO_SYNC).unwrap();
        assert!(read_all(&s, &h).unwrap() == Some(bytes), "content differs");
    }

    #[test]
    fn content_over_the_limit_is_refused_at_its_first_piece() {
        let s = MemStore::new();
        let mut intake = Intake::new(CHUNK_LEN as u64, "p");
        let err = feed(&s, &mut intake, &data(CHUNK_LEN + 1), 1000).unwrap_err();
        assert!(matches!(err, CoreError::Refused(_)), "{err:?}");
        assert_eq!(s.scan(Keyspace::Blobs, KeyRange::all()).unwrap().count(), 0);
        let mut txn = Txn::new(&s);
        let err = intake
            .blob(&mut txn, [0; 32], vec![0; CHUNK_LEN + 1])
            .unwrap_err();
        assert!(matches!(err, CoreError::Refused(_)), "{err:?}");
    }

    #[test]
    fn a_wrong_hash_or_order_is_malformed_and_leaves_no_chunk() {
        let s = MemStore::new();
        let bytes = data(3 * CHUNK_LEN);
        let mut txn = Txn::new(&s);
        let mut intake = Intake::new(u64::MAX, "p");
        let total = bytes.len() as u64;
        let mut last = Ok(None);
        for (i, p) in bytes.chunks(CHUNK_LEN).enumerate() {
            last = intake.piece(&mut txn, [9; 32], total, (i * CHUNK_LEN) as u64, p);
        }
        assert!(matches!(last, Err(CoreError::Malformed(_))), "{last:?}");
        assert_eq!(s.scan(Keyspace::Blobs, KeyRange::all()).unwrap().count(), 0);
        let mut intake = Intake::new(u64::MAX, "p");
        intake
            .piece(&mut txn, [9; 32], total, 0, &bytes[..10])
            .unwrap();
        let gap = intake.piece(&mut txn, [9; 32], total, 20, &bytes[20..30]);
        assert!(matches!(gap, Err(CoreError::Malformed(_))), "{gap:?}");
        assert!(intake.idle().is_err(), "a half-way content is not idle");
    }
}
