//! Mapping SQLite's errors onto [`msite_core::store::Error`].

use msite_core::store::Error;
use rusqlite::ErrorCode;

/// The backend name used in errors and by [`Store::backend_name`](msite_core::store::Store).
pub(crate) const BACKEND: &str = "sqlite";

/// Map a SQLite error: damaged files become [`Error::Corruption`], the rest is boxed.
pub(crate) fn map(e: rusqlite::Error) -> Error {
    if let rusqlite::Error::SqliteFailure(f, _) = &e {
        if matches!(f.code, ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) {
            return Error::Corruption(e.to_string());
        }
    }
    Error::Backend {
        backend: BACKEND,
        source: Box::new(e),
    }
}

/// `?`-friendly conversion of rusqlite results.
pub(crate) trait SqlResultExt<T> {
    /// Map the error with [`map`].
    fn r2e(self) -> Result<T, Error>;
}

impl<T> SqlResultExt<T> for rusqlite::Result<T> {
    fn r2e(self) -> Result<T, Error> {
        self.map_err(map)
    }
}
