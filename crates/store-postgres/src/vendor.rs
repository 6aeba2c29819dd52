//! The vendor tools: `backup` is `pg_dump` (custom format, streamed through msite into the
//! backup directory), `restore_backup` is `pg_restore` into a new database, `check_integrity` runs amcheck's `verify_heapam` and
//! `bt_index_check` (the functions `pg_amcheck` runs) over every table and index.
//!
//! Why `pg_dump` and not `pg_basebackup`: a store is one database, not a cluster. `pg_dump`
//! copies exactly that database, consistently (one `REPEATABLE READ` snapshot, taken without
//! blocking msite's writers), needs no replication privilege or `pg_hba.conf` entry, and
//! restores with `pg_restore` into a new database on the same server or any other, of this
//! version or a later one. `pg_basebackup` copies every database of the cluster and is
//! restored by starting a new server on the copy: the operator's tool for the whole server,
//! which msite does not own.
//!
//! Why the dump streams through msite: `pg_dump` writes to its standard output and msite
//! writes the file. A backup killed half-way (`kill -9` of msite) then stops `pg_dump` too, at
//! its next write into the closed pipe; it never writes into the backup directory itself, so
//! no orphaned `pg_dump` can keep filling a partial backup that the next `msite backup` is
//! removing or making again.

use std::io::Read as _;
use std::path::Path;
use std::process::{Command, ExitStatus, Output, Stdio};

use msite_core::store::{prepare_empty_dir, Error, Keyspace, Result};
use postgres::error::SqlState;

use crate::conn::{table, Conn};
use crate::error::{other, PgResultExt};
use crate::settings::ConnSettings;
use crate::store::{create_database, quote_ident};
use crate::tools;

/// The dump inside a backup directory (`pg_dump --format=custom`).
const DUMP_FILE: &str = "dump.pgdump";
/// The dump of backups made before the dump was streamed (`pg_dump --format=directory`);
/// still restored.
const DUMP_DIR: &str = "dump";
/// The connection settings of the backed-up store, inside a backup directory.
const SOURCE_FILE: &str = "source-conninfo";
/// Longest part of a tool's error output quoted in a message.
const MAX_QUOTED: usize = 2000;

/// Write a `pg_dump` of the store's tables and its connection settings into `dest`.
pub(crate) fn backup(settings: &ConnSettings, dest: &Path) -> Result<()> {
    prepare_empty_dir(dest)?;
    let dump = dest.join(DUMP_FILE);
    let mut child = Command::new(tools::find("pg_dump").map_err(Error::Invalid)?)
        .arg("--format=custom")
        .arg("--no-owner")
        .arg("--no-privileges")
        .arg("--table=kv_*")
        .arg("--dbname")
        .arg(settings.conninfo())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut stderr = child.stderr.take().expect("piped");
    let errors = std::thread::spawn(move || {
        let mut text = Vec::new();
        let _ = stderr.read_to_end(&mut text);
        text
    });
    let copied = copy_synced(child.stdout.as_mut().expect("piped"), &dump);
    let status = child.wait()?;
    let stderr = errors.join().unwrap_or_default();
    if !status.success() {
        let _ = std::fs::remove_file(&dump);
        return Err(tool_failed("pg_dump", status, &stderr));
    }
    copied?;
    settings.write_as(dest, SOURCE_FILE)
}

/// Copy `from` into a new file `to` and sync it.
fn copy_synced(from: &mut impl std::io::Read, to: &Path) -> Result<()> {
    let mut file = std::fs::File::create(to)?;
    std::io::copy(from, &mut file)?;
    file.sync_all()?;
    Ok(())
}

/// The dump in backup directory `backup`: the streamed file, or an older backup's directory.
fn dump_in(backup: &Path) -> Option<std::path::PathBuf> {
    let file = backup.join(DUMP_FILE);
    let dir = backup.join(DUMP_DIR);
    if file.is_file() {
        Some(file)
    } else if dir.join("toc.dat").is_file() {
        Some(dir)
    } else {
        None
    }
}

/// Restore the backup in `backup` into a new database and write the new store's connection
/// settings into `dest`. The database is on `server` (default: the server of the backed-up
/// store), named as `server` names it if it does, else after the backed-up one with `_r_` and
/// a random suffix; it must not exist yet.
pub(crate) fn restore(backup: &Path, dest: &Path, server: Option<&ConnSettings>) -> Result<()> {
    let (source, dump) = match (
        ConnSettings::read_from(backup, SOURCE_FILE)?,
        dump_in(backup),
    ) {
        (Some(s), Some(dump)) => (s, dump),
        _ => {
            return Err(Error::Invalid(format!(
                "{} holds no PostgreSQL store backup",
                backup.display()
            )))
        }
    };
    prepare_empty_dir(dest)?;
    let name = match server.and_then(ConnSettings::explicit_dbname) {
        Some(named) => named,
        None => fresh_name(&source),
    };
    let server = server.unwrap_or(&source);
    if database_exists(server, &name) {
        return Err(Error::Invalid(format!(
            "the database {name} exists already on that server; name a new one (dbname=… in --url) or drop it first"
        )));
    }
    create_database(server, &name)?;
    let target = server.with_dbname(&name);
    let out = Command::new(tools::find("pg_restore").map_err(Error::Invalid)?)
        .args([
            "--no-owner",
            "--no-privileges",
            "--exit-on-error",
            "--single-transaction",
        ])
        .arg("--dbname")
        .arg(target.conninfo())
        .arg(dump)
        .output()?;
    if !out.status.success() {
        let err = tool_failed_output("pg_restore", &out);
        if let Ok(mut admin) = Conn::connect(&server.with_dbname("postgres")) {
            let _ = admin
                .client
                .batch_execute(&format!("DROP DATABASE {}", quote_ident(&name)));
        }
        return Err(err);
    }
    target.write(dest)
}

/// A new database name after the backed-up store's: `NAME_r_` and 12 random hex digits (a
/// restore of a restore keeps the original name).
fn fresh_name(source: &ConnSettings) -> String {
    let mut base: String = source.dbname().chars().take(40).collect();
    if let Some(cut) = base.find("_r_") {
        base.truncate(cut);
    }
    format!(
        "{base}_r_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

/// Whether database `name` exists on `server` (false when that cannot be told).
fn database_exists(server: &ConnSettings, name: &str) -> bool {
    let Ok(mut admin) = Conn::connect(&server.with_dbname("postgres")) else {
        return false;
    };
    admin
        .client
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
        .is_ok_and(|row| row.is_some())
}

/// Check every table and its index with amcheck; damage is [`Error::Corruption`]. On an
/// engine without amcheck (CockroachDB, YugabyteDB) every row is read instead, which
/// verifies what the engine checksums on read.
pub(crate) fn check(conn: &mut Conn) -> Result<()> {
    match conn.client.batch_execute("CREATE EXTENSION IF NOT EXISTS amcheck") {
        Ok(()) => {}
        Err(e) if e.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE) => {
            return Err(other(format!(
                "the amcheck extension is not installed in this database and this user may not install it; run `CREATE EXTENSION amcheck` in it as a superuser (what `pg_amcheck --install-missing` does): {e}"
            )))
        }
        Err(e) if e.code() == Some(&SqlState::UNDEFINED_FILE) || e.code() == Some(&SqlState::FEATURE_NOT_SUPPORTED) || e.code() == Some(&SqlState::SYNTAX_ERROR) => {
            return read_everything(conn)
        }
        Err(e) => return Err(crate::error::map(e)),
    }
    for ks in Keyspace::ALL {
        let t = table(ks);
        let found = conn
            .client
            .query(
                &format!("SELECT blkno, offnum, msg FROM verify_heapam('{t}', check_toast => true) LIMIT 5"),
                &[],
            )
            .p2e()?;
        if !found.is_empty() {
            let msgs: Vec<String> = found
                .iter()
                .map(|r| {
                    let block: i64 = r.get(0);
                    let msg: Option<String> = r.get(2);
                    format!("{t} block {block}: {}", msg.unwrap_or_default())
                })
                .collect();
            return Err(Error::Corruption(msgs.join("; ")));
        }
        conn.client
            .batch_execute(&format!("SELECT bt_index_check('{t}_pkey', true)"))
            .p2e()?;
    }
    Ok(())
}

/// Read every row of every table (the check of engines without amcheck).
fn read_everything(conn: &mut Conn) -> Result<()> {
    for ks in Keyspace::ALL {
        conn.client
            .batch_execute(&format!(
                "SELECT count(*), sum(length(k) + length(v)) FROM {}",
                table(ks)
            ))
            .p2e()?;
    }
    Ok(())
}

/// [`tool_failed`] of a finished program's output.
fn tool_failed_output(name: &str, out: &Output) -> Error {
    tool_failed(name, out.status, &out.stderr)
}

/// The error of a PostgreSQL program that failed: its name, exit status and (bounded,
/// control characters escaped) error output.
fn tool_failed(name: &str, status: ExitStatus, stderr: &[u8]) -> Error {
    let text = String::from_utf8_lossy(stderr);
    let text = text.trim();
    let mut quoted: String = text
        .chars()
        .take(MAX_QUOTED)
        .flat_map(|c| {
            if c == '\n' || !c.is_control() {
                vec![c]
            } else {
                c.escape_default().collect()
            }
        })
        .collect();
    if text.chars().count() > MAX_QUOTED {
        quoted.push('…');
    }
    other(format!("{name} failed ({status}): {quoted}"))
}
