//! The reader connections: a small pool, and [`Pooled`], a connection taken from it that goes
//! back when dropped (after ending its transaction, if it began one).

use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use msite_core::store::Result;

use crate::conn::Conn;
use crate::error::PgResultExt;
use crate::settings::ConnSettings;

/// Idle reader connections kept open for reuse (each is a server process).
const MAX_IDLE: usize = 8;

/// Locks `m`, whatever a panic under it left: the values kept under these locks (a writer
/// connection, idle connections) stay usable; an open transaction is ended before reuse.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Idle reader connections to one database.
pub(crate) struct Pool {
    settings: ConnSettings,
    idle: Mutex<Vec<Conn>>,
}

impl Pool {
    pub(crate) fn new(settings: ConnSettings) -> Arc<Pool> {
        Arc::new(Pool {
            settings,
            idle: Mutex::new(Vec::new()),
        })
    }

    /// A connection in autocommit mode: an idle one, or a new one.
    pub(crate) fn take(self: &Arc<Self>) -> Result<Pooled> {
        let idle = lock(&self.idle).pop();
        let conn = match idle {
            Some(c) => Box::new(c),
            None => Box::new(Conn::connect(&self.settings)?),
        };
        Ok(Pooled {
            conn: Some(conn),
            pool: Arc::clone(self),
            in_txn: false,
        })
    }
}

/// A connection taken from a [`Pool`].
pub(crate) struct Pooled {
    /// Always `Some` until dropped.
    conn: Option<Box<Conn>>,
    pool: Arc<Pool>,
    in_txn: bool,
}

impl Pooled {
    /// Begin a read-only `REPEATABLE READ` transaction and take its snapshot at once (the
    /// server takes it at the first query, not at `BEGIN`).
    pub(crate) fn begin_snapshot(&mut self) -> Result<()> {
        self.in_txn = true;
        self.client
            .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SELECT 1")
            .p2e()
    }
}

impl Deref for Pooled {
    type Target = Conn;

    fn deref(&self) -> &Conn {
        match &self.conn {
            Some(c) => c,
            None => unreachable!("pooled connection used after drop"),
        }
    }
}

impl DerefMut for Pooled {
    fn deref_mut(&mut self) -> &mut Conn {
        match &mut self.conn {
            Some(c) => c,
            None => unreachable!("pooled connection used after drop"),
        }
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        if conn.client.is_closed()
            || (self.in_txn && conn.client.batch_execute("ROLLBACK").is_err())
        {
            return; // A connection in an unknown state is closed, not reused.
        }
        let mut idle = lock(&self.pool.idle);
        if idle.len() < MAX_IDLE {
            idle.push(*conn);
        }
    }
}
