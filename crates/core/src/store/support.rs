//! Building blocks for backends: pieces of the [`Store`](super::Store) contract that every
//! engine implements the same way, written once.
//!
//! * [`RecordedBatch`]: a [`WriteBatch`] that records its operations and guards in one byte
//!   arena, for engines whose native batch cannot be built without borrowing the database
//!   (a RocksDB `WriteBatch` needs column-family handles; a SQLite transaction needs the
//!   connection). `write` then replays [`RecordedBatch::ops`] into the engine.
//! * [`PoisonFlag`]: the poisoning rule (a failed synced write poisons the store).
//! * [`prepare_empty_dir`]: the target check of `backup` and `restore_backup`.
//! * [`dir_bytes`]: the size on disk of a store that is a directory.
//! * [`lock_dir`]: the exclusive open of a store directory.

use std::fs::{self, File, OpenOptions};
use std::ops::Range;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use super::{Error, Keyspace, Result, WriteBatch, WriteOptions};

/// What a recorded operation does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpKind {
    /// Put `key` = `value`.
    Put,
    /// Delete `key`.
    Delete,
    /// Delete the keys in `[key, value)` (start and end of the range).
    DeleteRange,
}

/// One recorded operation; its bytes live in the batch's arena ([`RecordedBatch::key`],
/// [`RecordedBatch::value`]).
#[derive(Clone, Debug)]
pub struct RecordedOp {
    /// What it does.
    pub kind: OpKind,
    /// The keyspace it writes.
    pub ks: Keyspace,
    a: Range<usize>,
    b: Range<usize>,
}

/// One recorded guard: in keyspace `ks`, a key must hold a value (or be absent).
#[derive(Clone, Debug)]
pub struct RecordedExpect {
    /// The keyspace of the guarded key.
    pub ks: Keyspace,
    key: Range<usize>,
    value: Option<Range<usize>>,
}

/// A [`WriteBatch`] that records operations and guards in order, with every key and value
/// copied into one growing buffer: a batch of a million puts makes a handful of allocations
/// rather than two million.
#[derive(Debug, Default)]
pub struct RecordedBatch {
    data: Vec<u8>,
    ops: Vec<RecordedOp>,
    expects: Vec<RecordedExpect>,
}

impl RecordedBatch {
    fn stash(&mut self, bytes: &[u8]) -> Range<usize> {
        let start = self.data.len();
        self.data.extend_from_slice(bytes);
        start..self.data.len()
    }

    /// The operations, in the order they were added.
    pub fn ops(&self) -> &[RecordedOp] {
        &self.ops
    }

    /// The guards, in the order they were added.
    pub fn expects(&self) -> &[RecordedExpect] {
        &self.expects
    }

    /// An operation's key (the range start for [`OpKind::DeleteRange`]).
    pub fn key(&self, op: &RecordedOp) -> &[u8] {
        &self.data[op.a.clone()]
    }

    /// An operation's value (the range end for [`OpKind::DeleteRange`]; empty for
    /// [`OpKind::Delete`]).
    pub fn value(&self, op: &RecordedOp) -> &[u8] {
        &self.data[op.b.clone()]
    }

    /// A guard's key and the value it requires (`None`: the key must be absent).
    pub fn guard(&self, e: &RecordedExpect) -> (&[u8], Option<&[u8]>) {
        (
            &self.data[e.key.clone()],
            e.value.as_ref().map(|v| &self.data[v.clone()]),
        )
    }

    fn push(&mut self, kind: OpKind, ks: Keyspace, a: &[u8], b: &[u8]) {
        let (a, b) = (self.stash(a), self.stash(b));
        self.ops.push(RecordedOp { kind, ks, a, b });
    }
}

impl WriteBatch for RecordedBatch {
    fn put(&mut self, ks: Keyspace, key: &[u8], value: &[u8]) {
        self.push(OpKind::Put, ks, key, value);
    }

    fn delete(&mut self, ks: Keyspace, key: &[u8]) {
        self.push(OpKind::Delete, ks, key, &[]);
    }

    fn delete_range(&mut self, ks: Keyspace, start: &[u8], end: &[u8]) {
        self.push(OpKind::DeleteRange, ks, start, end);
    }

    fn expect(&mut self, ks: Keyspace, key: &[u8], expected: Option<&[u8]>) {
        let key = self.stash(key);
        let value = expected.map(|v| self.stash(v));
        self.expects.push(RecordedExpect { ks, key, value });
    }

    fn len(&self) -> usize {
        self.ops.len()
    }

    fn reserve(&mut self, ops: usize, bytes: usize) {
        self.data.reserve(bytes);
        self.ops.reserve(ops);
    }
}

/// The contract's poisoning rule: once a synced write has failed, the store cannot know what
/// reached the disk, and every later write fails with [`Error::Poisoned`].
#[derive(Debug, Default)]
pub struct PoisonFlag(AtomicBool);

impl PoisonFlag {
    /// Whether the store is poisoned.
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    /// Poison the store (for engines with stricter rules of their own).
    pub fn set(&self) {
        self.0.store(true, Ordering::Release);
    }

    /// Fails with [`Error::Poisoned`] if the store is poisoned: call before writing.
    pub fn check(&self) -> Result<()> {
        if self.is_set() {
            return Err(Error::Poisoned);
        }
        Ok(())
    }

    /// Records a write's outcome: a synced write that failed poisons the store, unless it
    /// failed a precondition (then nothing was written).
    pub fn observe(&self, opts: WriteOptions, res: &Result<()>) {
        if let Err(e) = res {
            if opts.sync && !matches!(e, Error::Precondition { .. }) {
                self.set();
            }
        }
    }
}

/// Create `dir` if needed; refuse it if it holds anything (the target of a backup or restore).
pub fn prepare_empty_dir(dir: &Path) -> Result<()> {
    if dir.exists() {
        if fs::read_dir(dir)?.next().is_some() {
            return Err(Error::Invalid(format!(
                "{} exists and is not empty",
                dir.display()
            )));
        }
    } else {
        fs::create_dir_all(dir)?;
    }
    Ok(())
}

/// The bytes of the regular files in `dir` and its subdirectories (what
/// [`Store::size_on_disk`](super::Store::size_on_disk) reports for a store that is a
/// directory). A file removed while it is walked counts nothing.
pub fn dir_bytes(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let meta = match entry.metadata() {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e.into()),
        };
        if meta.is_dir() {
            total += dir_bytes(&entry.path())?;
        } else if meta.is_file() {
            total += meta.len();
        }
    }
    Ok(total)
}

/// Takes the exclusive lock on `dir/file` (created if missing; an OS file lock, released when
/// the returned file is closed): [`Error::Locked`] if another open store holds it, in this
/// process or another.
pub fn lock_dir(dir: &Path, file: &str) -> Result<File> {
    let lock = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(dir.join(file))?;
    match lock.try_lock() {
        Ok(()) => Ok(lock),
        Err(fs::TryLockError::WouldBlock) => Err(Error::Locked {
            path: dir.to_path_buf(),
        }),
        Err(fs::TryLockError::Error(e)) => Err(Error::Io(e)),
    }
}
