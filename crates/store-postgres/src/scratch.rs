//! [`ScratchServer`]: a throwaway PostgreSQL server for tests, the simulator and the bench.
//!
//! `initdb` into a new temporary directory (data checksums on, trust authentication), then
//! `pg_ctl start` with no TCP listener at all (`listen_addresses = ''`): clients reach it only
//! through the Unix socket in that directory. Dropping it stops the server (`pg_ctl stop
//! -m fast`) and removes the directory. PostgreSQL refuses to run as root, so when this
//! process is root the directory is handed to the `postgres` user and the server programs run
//! as that user (`runuser -u postgres`); otherwise they run as the current user.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::settings::ConnSettings;
use crate::tools;

/// The user the server runs as when this process is root.
const SERVER_USER: &str = "postgres";
/// The port number (it only names the socket file: there is no TCP listener).
const PORT: u16 = 5432;

/// Settings of a [`ScratchServer`].
#[derive(Clone, Copy, Debug, Default)]
pub struct ScratchOptions {
    /// Run every transaction that does not choose its isolation level at `SERIALIZABLE`
    /// (`default_transaction_isolation`), as distributed engines do.
    pub serializable: bool,
    /// Skip the server's fsyncs (`fsync = off`): for tests, where no power fails and a
    /// synced commit costs a disk flush per write on a busy shared disk. Synchronous and
    /// asynchronous commits still take their own paths through the server.
    pub no_fsync: bool,
}

/// A running throwaway server; see the [module documentation](self).
pub struct ScratchServer {
    /// The server's directory (data directory, socket, log); removed on drop.
    root: PathBuf,
    run_as: Option<&'static str>,
    user: String,
    running: bool,
}

impl ScratchServer {
    /// `initdb` and start a server.
    pub fn start(opts: ScratchOptions) -> io::Result<ScratchServer> {
        let root = tempfile::Builder::new().prefix("msite-pg-").tempdir()?;
        let mut server = ScratchServer::handle(root.keep(), running_as_root()?);
        if let Some(user) = server.run_as {
            run(Command::new("chown")
                .arg(format!("{user}:"))
                .arg(&server.root))?;
        }
        server.initdb(opts)?;
        server.start_server()?;
        Ok(server)
    }

    /// Take charge of the running server in `root`, a directory that [`ScratchServer::start`]
    /// made in another process (one that was killed, so it never stopped its server): dropping
    /// the result stops that server and removes the directory. Fails unless `root` holds a
    /// scratch server's data directory.
    pub fn adopt(root: &Path) -> io::Result<ScratchServer> {
        let name = root.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if !name.starts_with("msite-pg-") || !root.join("data/PG_VERSION").is_file() {
            return Err(io::Error::other(format!(
                "{} is not a scratch PostgreSQL server's directory",
                root.display()
            )));
        }
        let mut server = ScratchServer::handle(root.to_path_buf(), running_as_root()?);
        server.running = true;
        Ok(server)
    }

    fn handle(root: PathBuf, as_root: bool) -> ScratchServer {
        let run_as = as_root.then_some(SERVER_USER);
        let user = match run_as {
            Some(u) => u.to_string(),
            None => std::env::var("USER").unwrap_or_else(|_| "postgres".to_string()),
        };
        ScratchServer {
            root,
            run_as,
            user,
            running: false,
        }
    }

    /// The server's directory (its socket is there).
    pub fn dir(&self) -> &Path {
        &self.root
    }

    /// `initdb` (data checksums on, trust authentication, C locale), then the settings: no
    /// TCP listener, the socket in the server's directory.
    fn initdb(&self, opts: ScratchOptions) -> io::Result<()> {
        let data = self.data_dir();
        self.pg(
            "initdb",
            &[
                "--no-sync",
                "--data-checksums",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--username",
                &self.user,
                "-D",
                &data.display().to_string(),
            ],
        )?;
        let sock = self.root.display().to_string();
        let mut conf = format!(
            "\nlisten_addresses = ''\nunix_socket_directories = '{sock}'\nport = {PORT}\n\
             max_connections = 200\nshared_buffers = '32MB'\nlogging_collector = off\n"
        );
        if opts.no_fsync {
            conf.push_str("fsync = off\n");
        }
        if opts.serializable {
            conf.push_str("default_transaction_isolation = 'serializable'\n");
        }
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))?;
        io::Write::write_all(&mut f, conf.as_bytes())
    }

    /// The server's data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }

    /// A connection string for database `dbname` (over the Unix socket).
    pub fn conninfo(&self, dbname: &str) -> String {
        self.server_settings()
            .with_dbname(dbname)
            .conninfo()
            .to_string()
    }

    /// The connection string of the server, with no database (what `MSITE_PG_SERVER` takes).
    pub fn server_conninfo(&self) -> String {
        self.server_settings().server_conninfo()
    }

    fn server_settings(&self) -> ConnSettings {
        let text = format!(
            "host={} port={PORT} user={}",
            self.root.display(),
            self.user
        );
        ConnSettings::parse(&text).unwrap_or_else(|e| panic!("scratch server settings: {e}"))
    }

    /// Run `sql` (one or more statements) in database `dbname` as the server's superuser.
    pub fn execute(&self, dbname: &str, sql: &str) -> io::Result<()> {
        let mut client = self
            .server_settings()
            .with_dbname(dbname)
            .client_config()
            .connect(postgres::NoTls)
            .map_err(io::Error::other)?;
        client.batch_execute(sql).map_err(io::Error::other)
    }

    /// Stop the server (fast shutdown: sessions are ended, everything committed stays).
    pub fn stop(&mut self) -> io::Result<()> {
        if self.running {
            self.running = false;
            let data = self.data_dir().display().to_string();
            self.pg("pg_ctl", &["stop", "-m", "fast", "-w", "-D", &data])?;
        }
        Ok(())
    }

    /// Start the server again after [`ScratchServer::stop`].
    pub fn start_server(&mut self) -> io::Result<()> {
        let data = self.data_dir().display().to_string();
        let log = self.root.join("server.log").display().to_string();
        self.pg("pg_ctl", &["start", "-w", "-D", &data, "-l", &log])?;
        self.running = true;
        Ok(())
    }

    /// Run PostgreSQL's program `name` as the server's user.
    fn pg(&self, name: &str, args: &[&str]) -> io::Result<()> {
        let prog = tools::find(name).map_err(io::Error::other)?;
        let mut cmd = match self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(&prog);
                c
            }
            None => Command::new(&prog),
        };
        cmd.args(args).current_dir(&self.root);
        run(&mut cmd)
    }
}

impl Drop for ScratchServer {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("stopping the scratch PostgreSQL server failed: {e}");
        }
        let _ = fs::remove_dir_all(&self.root);
    }
}

/// Whether this process runs as root (the owner of a file it creates).
fn running_as_root() -> io::Result<bool> {
    Ok(tempfile::tempfile()?.metadata()?.uid() == 0)
}

/// Run `cmd`; an error with its output if it fails.
fn run(cmd: &mut Command) -> io::Result<()> {
    let out = cmd.output()?;
    if out.status.success() {
        return Ok(());
    }
    Err(io::Error::other(format!(
        "{:?} failed ({}): {}{}",
        cmd.get_program(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )))
}
