//! [`MemStore`]: the in-memory reference implementation of [`Store`].
//!
//! # Model
//!
//! The state is one `Arc<BTreeMap<key, value>>` per keyspace behind an `RwLock`. A snapshot
//! (and every scan, which runs on an implicit snapshot) clones the six `Arc`s; a write mutates
//! the maps in place with [`Arc::make_mut`], which copies a keyspace's map only while a
//! snapshot still shares it. Writers are serialised by a mutex, so `expect` guards are checked
//! and the batch applied without any other writer in between. `BTreeMap<Vec<u8>, _>` orders
//! keys bytewise (`memcmp`, shorter prefix first), exactly the order the contract demands.
//! The price of cheap snapshots: the first write to a keyspace while a snapshot or a running
//! scan still shares its map copies that map, so hold them briefly on big stores.
//!
//! # Persistence
//!
//! [`MemStore::new`] keeps everything in memory: no files, no lock, nothing survives a drop;
//! the simulator creates thousands of these. [`MemStore::open`] makes the store a directory:
//!
//! ```text
//! DIR/LOCK            exclusive lock (std `File::try_lock`), held while the store is open
//! DIR/memstore.log    "msitemem" + u32 LE format version, then one record per write
//! ```
//!
//! A record is `len: u64 LE`, `!len: u64 LE`, `checksum: 16 bytes` (BLAKE3 of the length
//! and payload, truncated) and the payload: the batch's operations, each a tag byte (1 put,
//! 2 delete, 3 delete range), a keyspace byte and `u64 LE`-length-prefixed byte strings.
//! A record is appended with one `write` call (and `fsync`ed when the write is synced) before
//! the batch becomes visible. On open the log is replayed; a record cut short at the very end of
//! the file is an unfinished write and is dropped (truncated away), but a complete record whose
//! checksum or length check fails is [`Error::Corruption`]. When the log has grown well beyond
//! the live data, open rewrites it as one image record (written aside, then renamed).
//!
//! A backup is a directory holding just `memstore.log` with one image record, written from a
//! snapshot, so it is consistent while writes go on; [`Store::restore_backup`] verifies it and
//! copies it into the new store directory. [`Store::check_integrity`] re-reads the log, verifies
//! every checksum and compares the replayed state with the live one.

use std::collections::{BTreeMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::store::{
    dir_bytes, lock_dir, prepare_empty_dir, Error, KeyRange, KeyValue, Keyspace, PoisonFlag,
    ReadView, Result, ScanIter, Store, WriteBatch, WriteOptions,
};
use crate::store::{scan_each_by_scan, PairFn};

/// One keyspace's data.
type Map = BTreeMap<Vec<u8>, Vec<u8>>;
/// The whole state: one map per keyspace, indexed by `Keyspace as usize`.
type Maps = [Arc<Map>; 6];

const LOG_FILE: &str = "memstore.log";
const LOCK_FILE: &str = "LOCK";
const MAGIC: &[u8; 8] = b"msitemem";
const FORMAT_VERSION: u32 = 1;
const FILE_HEADER_LEN: usize = 12;
const RECORD_HEADER_LEN: usize = 32;
/// How many pairs a scan copies out of the map per refill.
const SCAN_CHUNK: usize = 64;

const TAG_PUT: u8 = 1;
const TAG_DELETE: u8 = 2;
const TAG_DELETE_RANGE: u8 = 3;

fn idx(ks: Keyspace) -> usize {
    ks as usize
}

fn empty_maps() -> Maps {
    std::array::from_fn(|_| Arc::new(Map::new()))
}

// Lock helpers. A panic while a lock is held cannot leave the maps half-updated in a way the
// type system does not already allow (the only panics possible under these locks are
// allocation failures, which abort), so a poisoned lock is simply taken over.
fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(PoisonError::into_inner)
}
fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(PoisonError::into_inner)
}
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One write of a batch, in the order it was added. Shared with the fault-injecting wrapper.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    Put(Keyspace, Vec<u8>, Vec<u8>),
    Delete(Keyspace, Vec<u8>),
    DeleteRange(Keyspace, Vec<u8>, Vec<u8>),
}

/// An `expect` guard: `key` in the keyspace must hold the value (`None`: be absent).
pub(crate) type Expect = (Keyspace, Vec<u8>, Option<Vec<u8>>);

/// The batch of a [`MemStore`]: the operations and guards, in order.
#[derive(Debug, Default)]
pub struct MemBatch {
    ops: Vec<Op>,
    expects: Vec<Expect>,
}

impl WriteBatch for MemBatch {
    fn put(&mut self, ks: Keyspace, key: &[u8], value: &[u8]) {
        self.ops.push(Op::Put(ks, key.to_vec(), value.to_vec()));
    }
    fn delete(&mut self, ks: Keyspace, key: &[u8]) {
        self.ops.push(Op::Delete(ks, key.to_vec()));
    }
    fn delete_range(&mut self, ks: Keyspace, start: &[u8], end: &[u8]) {
        self.ops
            .push(Op::DeleteRange(ks, start.to_vec(), end.to_vec()));
    }
    fn expect(&mut self, ks: Keyspace, key: &[u8], expected: Option<&[u8]>) {
        self.expects
            .push((ks, key.to_vec(), expected.map(<[u8]>::to_vec)));
    }
    fn len(&self) -> usize {
        self.ops.len()
    }
    fn reserve(&mut self, ops: usize, _bytes: usize) {
        self.ops.reserve(ops);
    }
}

/// Whether `(start, end)` selects no key at all. `BTreeMap::range` panics on such bounds when
/// `start > end` (or both are equal and excluded), so every range goes through this first.
pub(crate) fn range_is_empty(start: Bound<&[u8]>, end: Bound<&[u8]>) -> bool {
    match (start, end) {
        (Bound::Unbounded, _) | (_, Bound::Unbounded) => false,
        (Bound::Included(s), Bound::Included(e)) => s > e,
        (Bound::Included(s), Bound::Excluded(e))
        | (Bound::Excluded(s), Bound::Included(e))
        | (Bound::Excluded(s), Bound::Excluded(e)) => s >= e,
    }
}

fn as_ref_bound(b: &Bound<Vec<u8>>) -> Bound<&[u8]> {
    match b {
        Bound::Included(v) => Bound::Included(v.as_slice()),
        Bound::Excluded(v) => Bound::Excluded(v.as_slice()),
        Bound::Unbounded => Bound::Unbounded,
    }
}

fn apply(maps: &mut Maps, ops: Vec<Op>) {
    for op in ops {
        match op {
            Op::Put(ks, k, v) => {
                Arc::make_mut(&mut maps[idx(ks)]).insert(k, v);
            }
            Op::Delete(ks, k) => {
                if maps[idx(ks)].contains_key(&k) {
                    Arc::make_mut(&mut maps[idx(ks)]).remove(&k);
                }
            }
            Op::DeleteRange(ks, s, e) => {
                let bounds = (Bound::Included(s.as_slice()), Bound::Excluded(e.as_slice()));
                if range_is_empty(bounds.0, bounds.1) {
                    continue;
                }
                let doomed: Vec<Vec<u8>> = maps[idx(ks)]
                    .range::<[u8], _>(bounds)
                    .map(|(k, _)| k.clone())
                    .collect();
                if !doomed.is_empty() {
                    let map = Arc::make_mut(&mut maps[idx(ks)]);
                    for k in doomed {
                        map.remove(&k);
                    }
                }
            }
        }
    }
}

/// A scan over one keyspace's map as of the moment the scan started. It copies the pairs out
/// in small chunks, resuming after the last key it returned.
pub struct MemIter {
    map: Arc<Map>,
    next_start: Bound<Vec<u8>>,
    end: Bound<Vec<u8>>,
    buf: VecDeque<KeyValue>,
    done: bool,
}

impl MemIter {
    fn new(map: Arc<Map>, range: KeyRange) -> Self {
        let done = range_is_empty(as_ref_bound(&range.start), as_ref_bound(&range.end));
        MemIter {
            map,
            next_start: range.start,
            end: range.end,
            buf: VecDeque::new(),
            done,
        }
    }

    fn refill(&mut self) {
        let bounds = (as_ref_bound(&self.next_start), as_ref_bound(&self.end));
        if range_is_empty(bounds.0, bounds.1) {
            self.done = true;
            return;
        }
        self.buf.extend(
            self.map
                .range::<[u8], _>(bounds)
                .take(SCAN_CHUNK)
                .map(|(k, v)| (k.clone(), v.clone())),
        );
        match self.buf.back() {
            Some((k, _)) if self.buf.len() == SCAN_CHUNK => {
                self.next_start = Bound::Excluded(k.clone());
            }
            _ => self.done = true,
        }
    }
}

impl Iterator for MemIter {
    type Item = Result<KeyValue>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.buf.is_empty() && !self.done {
            self.refill();
        }
        self.buf.pop_front().map(Ok)
    }
}

/// A [`MemStore`] snapshot: the six maps as they were, shared copy-on-write with the store.
#[derive(Clone, Debug)]
pub struct MemSnapshot {
    maps: Maps,
}

impl ReadView for MemSnapshot {
    fn get(&self, ks: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.maps[idx(ks)].get(key).cloned())
    }

    fn scan(&self, ks: Keyspace, range: KeyRange) -> Result<ScanIter<'_>> {
        Ok(Box::new(MemIter::new(self.maps[idx(ks)].clone(), range)))
    }

    fn last(&self, ks: Keyspace, range: KeyRange) -> Result<Option<KeyValue>> {
        Ok(last_in(&self.maps[idx(ks)], &range))
    }

    fn scan_each(&self, ks: Keyspace, range: KeyRange, f: &mut PairFn<'_>) -> Result<()> {
        scan_each_by_scan(self, ks, range, f)
    }
}

/// The last pair of `map` in `range` (a seek from the range's end, as the engines do).
fn last_in(map: &Map, range: &KeyRange) -> Option<KeyValue> {
    let bounds = (as_ref_bound(&range.start), as_ref_bound(&range.end));
    if range_is_empty(bounds.0, bounds.1) {
        return None;
    }
    map.range::<[u8], _>(bounds)
        .next_back()
        .map(|(k, v)| (k.clone(), v.clone()))
}

/// The on-disk side of a persistent [`MemStore`]: the open log and the directory lock.
#[derive(Debug)]
struct Disk {
    dir: PathBuf,
    log: File,
    /// The lock on `DIR/LOCK`; released when the file is closed.
    _lock: File,
    /// Reused encoding buffer.
    buf: Vec<u8>,
}

/// The in-memory reference [`Store`]. See the [module documentation](self) for the design.
#[derive(Debug)]
pub struct MemStore {
    state: RwLock<Maps>,
    /// Serialises writers; holds the log of a persistent store.
    writer: Mutex<Option<Disk>>,
    poisoned: PoisonFlag,
}

impl Default for MemStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemStore {
    /// A new, empty store that lives only in memory.
    pub fn new() -> Self {
        Self::from_maps(empty_maps(), None)
    }

    fn from_maps(maps: Maps, disk: Option<Disk>) -> Self {
        MemStore {
            state: RwLock::new(maps),
            writer: Mutex::new(disk),
            poisoned: PoisonFlag::default(),
        }
    }

    /// Open (creating it if needed) the persistent store in directory `dir`.
    ///
    /// Fails with [`Error::Locked`] if the directory is open elsewhere (in this process or
    /// another), and with [`Error::Corruption`] if the log is damaged.
    pub fn open(dir: &Path) -> Result<Self> {
        fs::create_dir_all(dir)?;
        let lock = lock_dir(dir, LOCK_FILE)?;
        let path = dir.join(LOG_FILE);
        let mut maps = empty_maps();
        let mut log = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)?;
        let mut bytes = Vec::new();
        log.read_to_end(&mut bytes)?;
        if bytes.is_empty() {
            log.write_all(&file_header())?;
            log.sync_all()?;
            sync_dir(dir)?;
        } else {
            let good_len = replay(&bytes, &mut maps, false)?;
            if good_len < bytes.len() {
                // An unfinished last write: it was never acknowledged as durable; drop it.
                log.set_len(good_len as u64)?;
                if good_len == 0 {
                    // Even the file header was cut short: the store was never written to.
                    log.write_all(&file_header())?;
                }
                log.sync_all()?;
            }
            let live: usize = maps
                .iter()
                .flat_map(|m| m.iter())
                .map(|(k, v)| k.len() + v.len() + 20)
                .sum();
            if good_len > 2 * live + (1 << 20) {
                write_image_file(dir, &maps)?;
                log = OpenOptions::new().read(true).append(true).open(&path)?;
            }
        }
        let disk = Disk {
            dir: dir.to_path_buf(),
            log,
            _lock: lock,
            buf: Vec::new(),
        };
        Ok(Self::from_maps(maps, Some(disk)))
    }

    /// An independent copy of the current state, living only in memory (whatever `self` is).
    /// Cheap: the maps are shared copy-on-write. The simulator uses it as a file-system
    /// snapshot of a replica.
    pub fn deep_copy(&self) -> MemStore {
        Self::from_maps(read(&self.state).clone(), None)
    }

    /// The store directory, for a persistent store.
    pub fn dir(&self) -> Option<PathBuf> {
        lock(&self.writer).as_ref().map(|d| d.dir.clone())
    }

    fn maps(&self) -> Maps {
        read(&self.state).clone()
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)?.sync_all()?;
    Ok(())
}

fn file_header() -> Vec<u8> {
    let mut h = MAGIC.to_vec();
    h.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    h
}

fn checksum(len: u64, payload: &[u8]) -> [u8; 16] {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&len.to_le_bytes());
    hasher.update(payload);
    let mut out = [0u8; 16];
    out.copy_from_slice(&hasher.finalize().as_bytes()[..16]);
    out
}

fn put_bytes(buf: &mut Vec<u8>, b: &[u8]) {
    buf.extend_from_slice(&(b.len() as u64).to_le_bytes());
    buf.extend_from_slice(b);
}

fn encode_op(buf: &mut Vec<u8>, op: &Op) {
    match op {
        Op::Put(ks, k, v) => {
            buf.extend_from_slice(&[TAG_PUT, idx(*ks) as u8]);
            put_bytes(buf, k);
            put_bytes(buf, v);
        }
        Op::Delete(ks, k) => {
            buf.extend_from_slice(&[TAG_DELETE, idx(*ks) as u8]);
            put_bytes(buf, k);
        }
        Op::DeleteRange(ks, s, e) => {
            buf.extend_from_slice(&[TAG_DELETE_RANGE, idx(*ks) as u8]);
            put_bytes(buf, s);
            put_bytes(buf, e);
        }
    }
}

/// Append one record holding `ops` to `buf` (which is cleared first).
fn encode_record<'a>(buf: &mut Vec<u8>, ops: impl IntoIterator<Item = &'a Op>) {
    buf.clear();
    buf.resize(RECORD_HEADER_LEN, 0);
    for op in ops {
        encode_op(buf, op);
    }
    seal_record(buf, 0);
}

/// Fill in the header of the record that starts at `at` and runs to the end of `buf`.
fn seal_record(buf: &mut [u8], at: usize) {
    let len = (buf.len() - at - RECORD_HEADER_LEN) as u64;
    let sum = checksum(len, &buf[at + RECORD_HEADER_LEN..]);
    buf[at..at + 8].copy_from_slice(&len.to_le_bytes());
    buf[at + 8..at + 16].copy_from_slice(&(!len).to_le_bytes());
    buf[at + 16..at + 32].copy_from_slice(&sum);
}

fn corrupt(what: impl std::fmt::Display) -> Error {
    Error::Corruption(format!("memstore log: {what}"))
}

/// A little reader over a record payload.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| corrupt("truncated operation"))?;
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn bytes(&mut self) -> Result<Vec<u8>> {
        let mut len = [0u8; 8];
        len.copy_from_slice(self.take(8)?);
        let len =
            usize::try_from(u64::from_le_bytes(len)).map_err(|_| corrupt("oversized field"))?;
        Ok(self.take(len)?.to_vec())
    }
}

fn decode_ops(payload: &[u8]) -> Result<Vec<Op>> {
    let mut c = Cursor {
        bytes: payload,
        pos: 0,
    };
    let mut ops = Vec::new();
    while c.pos < payload.len() {
        let tag = c.u8()?;
        let ks = *Keyspace::ALL
            .get(usize::from(c.u8()?))
            .ok_or_else(|| corrupt("unknown keyspace"))?;
        ops.push(match tag {
            TAG_PUT => Op::Put(ks, c.bytes()?, c.bytes()?),
            TAG_DELETE => Op::Delete(ks, c.bytes()?),
            TAG_DELETE_RANGE => Op::DeleteRange(ks, c.bytes()?, c.bytes()?),
            other => return Err(corrupt(format!("unknown operation tag {other}"))),
        });
    }
    Ok(ops)
}

/// Replay a whole log file into `maps`. Returns the length of the well-formed part: shorter
/// than `bytes` when the last record is cut short, which `strict` turns into an error.
fn replay(bytes: &[u8], maps: &mut Maps, strict: bool) -> Result<usize> {
    if bytes.len() < FILE_HEADER_LEN {
        if strict || !file_header().starts_with(bytes) {
            return Err(corrupt("short file header"));
        }
        return Ok(0);
    }
    if &bytes[..8] != MAGIC {
        return Err(corrupt("not a memstore log"));
    }
    let mut version = [0u8; 4];
    version.copy_from_slice(&bytes[8..12]);
    if u32::from_le_bytes(version) != FORMAT_VERSION {
        return Err(corrupt("unknown format version"));
    }
    let mut pos = FILE_HEADER_LEN;
    while pos < bytes.len() {
        let rest = &bytes[pos..];
        if rest.len() < RECORD_HEADER_LEN {
            if strict {
                return Err(corrupt("cut-short record header"));
            }
            break;
        }
        let mut word = [0u8; 8];
        word.copy_from_slice(&rest[..8]);
        let len = u64::from_le_bytes(word);
        word.copy_from_slice(&rest[8..16]);
        if u64::from_le_bytes(word) != !len {
            return Err(corrupt(format!("damaged record header at offset {pos}")));
        }
        let available = (rest.len() - RECORD_HEADER_LEN) as u64;
        if len > available {
            if strict {
                return Err(corrupt("cut-short record"));
            }
            break;
        }
        // `len <= available`, which is a `usize`.
        let len = len as usize;
        let payload = &rest[RECORD_HEADER_LEN..RECORD_HEADER_LEN + len];
        if checksum(len as u64, payload) != rest[16..32] {
            return Err(corrupt(format!(
                "checksum mismatch in the record at offset {pos}"
            )));
        }
        apply(maps, decode_ops(payload)?);
        pos += RECORD_HEADER_LEN + len;
    }
    Ok(pos)
}

/// A complete log file holding `maps` as one image record.
fn image_bytes(maps: &Maps) -> Vec<u8> {
    let mut buf = file_header();
    let at = buf.len();
    buf.resize(at + RECORD_HEADER_LEN, 0);
    for (ks, map) in Keyspace::ALL.iter().zip(maps.iter()) {
        for (k, v) in map.iter() {
            buf.extend_from_slice(&[TAG_PUT, idx(*ks) as u8]);
            put_bytes(&mut buf, k);
            put_bytes(&mut buf, v);
        }
    }
    seal_record(&mut buf, at);
    buf
}

/// Atomically replace (or create) `dir/memstore.log` with `bytes`.
fn write_log_file(dir: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = dir.join(format!("{LOG_FILE}.tmp"));
    let mut f = File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, dir.join(LOG_FILE))?;
    sync_dir(dir)
}

fn write_image_file(dir: &Path, maps: &Maps) -> Result<()> {
    write_log_file(dir, &image_bytes(maps))
}

impl ReadView for MemStore {
    fn get(&self, ks: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(read(&self.state)[idx(ks)].get(key).cloned())
    }

    fn scan(&self, ks: Keyspace, range: KeyRange) -> Result<ScanIter<'_>> {
        let map = read(&self.state)[idx(ks)].clone();
        Ok(Box::new(MemIter::new(map, range)))
    }

    fn last(&self, ks: Keyspace, range: KeyRange) -> Result<Option<KeyValue>> {
        Ok(last_in(&read(&self.state)[idx(ks)], &range))
    }

    fn scan_each(&self, ks: Keyspace, range: KeyRange, f: &mut PairFn<'_>) -> Result<()> {
        scan_each_by_scan(self, ks, range, f)
    }
}

impl Store for MemStore {
    type Batch = MemBatch;
    type Snapshot<'a> = MemSnapshot;

    fn backend_name(&self) -> &'static str {
        "memory"
    }

    fn batch(&self) -> MemBatch {
        MemBatch::default()
    }

    fn write(&self, batch: MemBatch, opts: WriteOptions) -> Result<()> {
        let mut writer = lock(&self.writer);
        self.poisoned.check()?;
        {
            let maps = read(&self.state);
            for (ks, key, expected) in &batch.expects {
                if maps[idx(*ks)].get(key).map(Vec::as_slice) != expected.as_deref() {
                    return Err(Error::Precondition { keyspace: *ks });
                }
            }
        }
        if let Some(disk) = writer.as_mut() {
            if !batch.ops.is_empty() || opts.sync {
                let Disk { log, buf, .. } = disk;
                let res = (|| -> std::io::Result<()> {
                    if !batch.ops.is_empty() {
                        encode_record(buf, &batch.ops);
                        log.write_all(buf)?;
                    }
                    if opts.sync {
                        log.sync_data()?;
                    }
                    Ok(())
                })();
                if let Err(e) = res {
                    // Part of the record may be in the file: refuse further appends.
                    self.poisoned.set();
                    return Err(e.into());
                }
            }
        }
        apply(&mut write(&self.state), batch.ops);
        Ok(())
    }

    fn snapshot(&self) -> Result<MemSnapshot> {
        Ok(MemSnapshot { maps: self.maps() })
    }

    fn backup(&self, dest: &Path) -> Result<()> {
        let maps = self.maps();
        prepare_empty_dir(dest)?;
        write_image_file(dest, &maps)
    }

    fn check_integrity(&self) -> Result<()> {
        let writer = lock(&self.writer);
        let Some(disk) = writer.as_ref() else {
            return Ok(());
        };
        let bytes = fs::read(disk.dir.join(LOG_FILE))?;
        let mut replayed = empty_maps();
        replay(&bytes, &mut replayed, true)?;
        let live = self.maps();
        if replayed.iter().zip(live.iter()).any(|(a, b)| a != b) {
            return Err(corrupt("the log does not replay to the live state"));
        }
        Ok(())
    }

    /// Rewrites the log as one image record (what open does once the log has grown well
    /// beyond the live data). A store that lives only in memory has nothing to pack.
    fn compact(&self) -> Result<()> {
        let mut writer = lock(&self.writer);
        self.poisoned.check()?;
        let Some(disk) = writer.as_mut() else {
            return Ok(());
        };
        write_image_file(&disk.dir, &self.maps())?;
        disk.log = OpenOptions::new()
            .read(true)
            .append(true)
            .open(disk.dir.join(LOG_FILE))?;
        Ok(())
    }

    fn size_on_disk(&self) -> Result<u64> {
        match self.dir() {
            Some(dir) => dir_bytes(&dir),
            None => Ok(0),
        }
    }

    fn restore_backup(backup: &Path, dest: &Path) -> Result<()> {
        let bytes = fs::read(backup.join(LOG_FILE))?;
        replay(&bytes, &mut empty_maps(), true)?;
        prepare_empty_dir(dest)?;
        write_log_file(dest, &bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreExt;

    #[test]
    fn range_is_empty_matches_btreemap_panics() {
        let (a, b): (&[u8], &[u8]) = (b"a", b"b");
        assert!(range_is_empty(Bound::Included(b), Bound::Included(a)));
        assert!(range_is_empty(Bound::Excluded(a), Bound::Excluded(a)));
        assert!(range_is_empty(Bound::Included(a), Bound::Excluded(a)));
        assert!(!range_is_empty(Bound::Included(a), Bound::Included(a)));
        assert!(!range_is_empty(Bound::Unbounded, Bound::Excluded(a)));
    }

    #[test]
    fn deep_copy_is_independent() {
        let s = MemStore::new();
        s.put_one(Keyspace::Meta, b"k", b"1", WriteOptions::NO_SYNC)
            .unwrap();
        let copy = s.deep_copy();
        s.put_one(Keyspace::Meta, b"k", b"2", WriteOptions::NO_SYNC)
            .unwrap();
        copy.put_one(Keyspace::Meta, b"j", b"3", WriteOptions::NO_SYNC)
            .unwrap();
        assert_eq!(
            copy.get(Keyspace::Meta, b"k").unwrap().as_deref(),
            Some(&b"1"[..])
        );
        assert_eq!(s.get(Keyspace::Meta, b"j").unwrap(), None);
        assert_eq!(
            s.get(Keyspace::Meta, b"k").unwrap().as_deref(),
            Some(&b"2"[..])
        );
    }

    #[test]
    fn cut_short_last_record_is_dropped_on_open() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = MemStore::open(dir.path()).unwrap();
            s.put_one(Keyspace::Meta, b"a", b"1", WriteOptions::SYNC)
                .unwrap();
            s.put_one(Keyspace::Meta, b"b", b"2", WriteOptions::SYNC)
                .unwrap();
        }
        let path = dir.path().join(LOG_FILE);
        let len = fs::metadata(&path).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(len - 3)
            .unwrap();
        let s = MemStore::open(dir.path()).unwrap();
        assert_eq!(
            s.get(Keyspace::Meta, b"a").unwrap().as_deref(),
            Some(&b"1"[..])
        );
        assert_eq!(s.get(Keyspace::Meta, b"b").unwrap(), None);
        s.check_integrity().unwrap();
        s.put_one(Keyspace::Meta, b"c", b"3", WriteOptions::SYNC)
            .unwrap();
        drop(s);
        let s = MemStore::open(dir.path()).unwrap();
        assert_eq!(
            s.get(Keyspace::Meta, b"c").unwrap().as_deref(),
            Some(&b"3"[..])
        );
    }

    #[test]
    fn grown_log_is_compacted_on_open() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = MemStore::open(dir.path()).unwrap();
            for i in 0..300u32 {
                s.put_one(
                    Keyspace::Blobs,
                    b"same",
                    &vec![i as u8; 8192],
                    WriteOptions::NO_SYNC,
                )
                .unwrap();
            }
        }
        let before = fs::metadata(dir.path().join(LOG_FILE)).unwrap().len();
        let s = MemStore::open(dir.path()).unwrap();
        let after = fs::metadata(dir.path().join(LOG_FILE)).unwrap().len();
        assert!(after < before / 10, "{after} vs {before}");
        assert_eq!(
            s.get(Keyspace::Blobs, b"same").unwrap(),
            Some(vec![43u8; 8192])
        );
        s.check_integrity().unwrap();
    }
}
