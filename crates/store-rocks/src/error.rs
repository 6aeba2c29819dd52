//! Mapping RocksDB's errors onto [`msite_core::store::Error`].

use std::path::Path;

use msite_core::store::Error;
use rocksdb::ErrorKind;

/// The backend name used in errors and by [`Store::backend_name`](msite_core::store::Store).
pub(crate) const BACKEND: &str = "rocksdb";

/// Map a RocksDB error: `Corruption` status becomes [`Error::Corruption`], the rest is boxed.
pub(crate) fn map(e: rocksdb::Error) -> Error {
    match e.kind() {
        ErrorKind::Corruption => Error::Corruption(e.into_string()),
        _ => Error::Backend {
            backend: BACKEND,
            source: Box::new(e),
        },
    }
}

/// Map an error of `DB::open` on `dir`: a failure to take RocksDB's `LOCK` file (held by
/// another process, or already by this one) is [`Error::Locked`].
pub(crate) fn map_open(e: rocksdb::Error, dir: &Path) -> Error {
    // The two messages of `PosixFileSystem::LockFile`: another process holds the lock
    // (`fcntl` failed), or this process does (RocksDB's own table of locked files).
    let msg: &str = e.as_ref();
    if e.kind() == ErrorKind::IOError
        && (msg.contains("While lock file") || msg.contains("lock hold by current process"))
    {
        return Error::Locked {
            path: dir.to_path_buf(),
        };
    }
    map(e)
}

/// `?`-friendly conversion of RocksDB results.
pub(crate) trait RocksResultExt<T> {
    /// Map the error with [`map`].
    fn r2e(self) -> Result<T, Error>;
}

impl<T> RocksResultExt<T> for Result<T, rocksdb::Error> {
    fn r2e(self) -> Result<T, Error> {
        self.map_err(map)
    }
}
