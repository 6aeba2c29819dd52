//! Storage engines chosen at build time (cargo features) and at run time (`--backend`): the
//! CLI's name for `msite-backends`, which holds the one list of backends ([`BackendKind`]) and
//! the run-time dispatch ([`AnyStore`], with [`AnyBatch`] and [`AnySnapshot`]).
//!
//! The CLI's cargo features `sqlite`, `rocks`, `postgres` and `mem` turn on the features of the same names
//! in `msite-backends`. A build without any backend compiles but cannot open a site.

pub use msite_backends::{AnyBatch, AnySnapshot, AnyStore, BackendKind};
/// A throwaway PostgreSQL server (tests and `msite demo --backend postgres`).
#[cfg(feature = "postgres")]
pub use msite_backends::{ScratchOptions, ScratchServer};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_and_aliases() {
        assert_eq!("sqlite".parse::<BackendKind>(), Ok(BackendKind::Sqlite));
        assert_eq!("RocksDB".parse::<BackendKind>(), Ok(BackendKind::Rocks));
        assert!("oracle".parse::<BackendKind>().is_err());
    }

    #[test]
    fn a_missing_backend_names_the_available_ones() {
        for k in BackendKind::ALL {
            if !k.compiled() {
                let msg = k.ensure_compiled().unwrap_err().to_string();
                assert!(
                    msg.contains("not available in this build; this build has:"),
                    "{msg}"
                );
            }
        }
    }
}
