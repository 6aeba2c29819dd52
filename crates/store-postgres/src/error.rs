//! Mapping PostgreSQL's errors onto [`msite_core::store::Error`], and which of them a
//! transaction retries.

use msite_core::store::Error;
use postgres::error::SqlState;

/// The backend name used in errors and by [`Store::backend_name`](msite_core::store::Store).
pub(crate) const BACKEND: &str = "postgres";

/// Map a PostgreSQL error: damaged pages and indexes (SQLSTATE `XX001`, `XX002`) become
/// [`Error::Corruption`], the rest is boxed.
pub(crate) fn map(e: postgres::Error) -> Error {
    match e.code() {
        Some(c) if *c == SqlState::DATA_CORRUPTED || *c == SqlState::INDEX_CORRUPTED => {
            Error::Corruption(
                e.as_db_error()
                    .map_or_else(|| e.to_string(), |d| d.message().to_string()),
            )
        }
        _ => Error::Backend {
            backend: BACKEND,
            source: Box::new(e),
        },
    }
}

/// A backend error with a message of our own.
pub(crate) fn other(msg: impl Into<String>) -> Error {
    Error::Backend {
        backend: BACKEND,
        source: msg.into().into(),
    }
}

/// Whether `e` asks for the whole transaction to be run again: a serialization failure
/// (`40001`, what SERIALIZABLE engines such as CockroachDB answer to any conflict) or a
/// deadlock (`40P01`).
pub(crate) fn is_retryable(e: &postgres::Error) -> bool {
    matches!(e.code(), Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE || *c == SqlState::T_R_DEADLOCK_DETECTED)
}

/// `?`-friendly conversion of postgres results.
pub(crate) trait PgResultExt<T> {
    /// Map the error with [`map`].
    fn p2e(self) -> Result<T, Error>;
}

impl<T> PgResultExt<T> for Result<T, postgres::Error> {
    fn p2e(self) -> Result<T, Error> {
        self.map_err(map)
    }
}
