//! [`EarlySync`]: a file synced in the background while it is being written, so that its
//! final fsync waits for the last few megabytes instead of the whole file. A packet's part
//! files use it; so does SQLite's bulk load (through msite-core's `store` module), whose
//! commit syncs the new replica's whole database.

use std::fs::File;
use std::path::Path;
use std::sync::mpsc::{sync_channel, SyncSender};

/// Syncs a file on a thread of its own whenever it is kicked, so that the disk writes what
/// was written so far while the writer goes on (20 ms of a 34 MB snapshot's 130 ms export
/// went to the final fsync, BENCHMARKS.md stop 41).
///
/// Rules:
/// * The thread syncs through a descriptor of its own: Linux reports a write error once to
///   each open file description, so an error this thread meets still reaches the writer's
///   own fsync.
/// * It never replaces the writer's fsync: it may fail, lag or not start at all (`start`
///   then gives `None`) without harm.
/// * A kick while a sync is asked for already is dropped; dropping the `EarlySync` ends the
///   thread after the sync it is in.
pub struct EarlySync {
    kick: SyncSender<()>,
    #[cfg(test)]
    thread: std::thread::JoinHandle<u64>,
}

impl EarlySync {
    /// A thread syncing the file at `path` when kicked (None: it could not be started).
    pub fn start(path: &Path) -> Option<Self> {
        let f = File::open(path).ok()?;
        let (kick, kicked) = sync_channel::<()>(1);
        let _thread = std::thread::Builder::new()
            .name("msite-early-sync".into())
            .spawn(move || {
                let mut synced = 0u64;
                for () in kicked {
                    synced += u64::from(f.sync_data().is_ok());
                }
                synced
            })
            .ok()?;
        Some(EarlySync {
            kick,
            #[cfg(test)]
            thread: _thread,
        })
    }

    /// Ends the thread once it has done the syncs asked for; returns how many succeeded.
    #[cfg(test)]
    fn finish(self) -> u64 {
        drop(self.kick);
        self.thread.join().unwrap()
    }

    /// Asks for a sync of what was written so far, unless one is asked for already.
    pub fn kick(&self) {
        let _ = self.kick.try_send(());
    }
}

/// Kicks an [`EarlySync`] every time its writer has written `every` more bytes.
pub struct EarlySyncEvery {
    sync: Option<EarlySync>,
    every: u64,
    unsynced: u64,
}

impl EarlySyncEvery {
    /// Early syncs of the file at `path` every `every` bytes written.
    pub fn start(path: &Path, every: u64) -> Self {
        EarlySyncEvery {
            sync: EarlySync::start(path),
            every,
            unsynced: 0,
        }
    }

    /// Counts `n` more bytes written, kicking a sync when `every` have gathered.
    pub fn wrote(&mut self, n: u64) {
        self.unsynced += n;
        if self.unsynced >= self.every {
            self.unsynced = 0;
            if let Some(s) = &self.sync {
                s.kick();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    /// A kick is a sync done before the thread ends; a file that cannot be opened gives no
    /// thread, and counting the bytes written goes on without it.
    #[test]
    fn kicks_become_syncs_and_a_missing_file_gives_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("part");
        let mut f = File::create(&path).unwrap();
        f.write_all(&[7; 4096]).unwrap();
        let sync = EarlySync::start(&path).unwrap();
        sync.kick();
        assert_eq!(sync.finish(), 1);
        assert!(EarlySync::start(&dir.path().join("missing")).is_none());
        let mut every = EarlySyncEvery::start(&dir.path().join("missing"), 10);
        every.wrote(100);
        assert!(every.sync.is_none());
    }

    /// `EarlySyncEvery` kicks once `every` bytes have gathered, not before.
    #[test]
    fn every_kicks_once_enough_bytes_are_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("part");
        File::create(&path).unwrap();
        let mut every = EarlySyncEvery::start(&path, 1000);
        every.wrote(999);
        assert_eq!(every.unsynced, 999);
        every.wrote(1);
        assert_eq!(every.unsynced, 0);
        assert_eq!(every.sync.take().unwrap().finish(), 1);
    }
}
