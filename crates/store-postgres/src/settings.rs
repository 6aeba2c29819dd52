//! The store directory's connection settings: `DIR/conninfo`, one libpq connection string
//! (`host=/run/postgresql dbname=site user=msite`, or a `postgresql://` URI) naming the
//! database that holds the store. It never holds a password: a connection string with one is
//! refused, and passwords come the PostgreSQL way, from the password file (`PGPASSFILE`, else
//! `~/.pgpass`, used only when no one but its owner can read it, as libpq does) or not at
//! all (peer or trust authentication over a Unix socket).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use msite_core::store::{Error, Result};
use postgres::config::Host;
use postgres::Config;

/// The settings file inside a store directory.
pub const CONNINFO_FILE: &str = "conninfo";
/// Longest connection string accepted (a settings file is one short line).
const MAX_CONNINFO: usize = 4096;

/// Parsed connection settings: the string as written and the client configuration.
#[derive(Clone, Debug)]
pub struct ConnSettings {
    conninfo: String,
    config: Config,
}

impl ConnSettings {
    /// Parse a connection string; refuses one that holds a password or control characters.
    pub fn parse(conninfo: &str) -> Result<Self> {
        let conninfo = conninfo.trim();
        if conninfo.is_empty() || conninfo.len() > MAX_CONNINFO {
            return Err(Error::Invalid(format!(
                "a PostgreSQL connection string must be 1 to {MAX_CONNINFO} bytes long"
            )));
        }
        if conninfo.chars().any(char::is_control) {
            return Err(Error::Invalid(
                "a PostgreSQL connection string must not hold control characters".into(),
            ));
        }
        let config = Config::from_str(conninfo).map_err(|e| {
            Error::Invalid(format!(
                "cannot parse the PostgreSQL connection string: {e}"
            ))
        })?;
        if config.get_password().is_some() {
            return Err(Error::Invalid(
                "the PostgreSQL connection string holds a password; msite never stores one: put it in the password file (~/.pgpass or $PGPASSFILE) or use peer authentication".into(),
            ));
        }
        Ok(ConnSettings {
            conninfo: conninfo.to_string(),
            config,
        })
    }

    /// Read `DIR/conninfo`; `Ok(None)` if the directory holds no settings file.
    pub fn read(dir: &Path) -> Result<Option<Self>> {
        Self::read_from(dir, CONNINFO_FILE)
    }

    /// Read the settings file `DIR/NAME`; `Ok(None)` if there is none.
    pub fn read_from(dir: &Path, name: &str) -> Result<Option<Self>> {
        let path = dir.join(name);
        match fs::read(&path) {
            Ok(bytes) => {
                let text = String::from_utf8(bytes).map_err(|_| {
                    Error::Corruption(format!("{} is not UTF-8 text", path.display()))
                })?;
                Self::parse(&text).map(Some)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Write `DIR/conninfo` (durably: written aside, synced, renamed).
    pub fn write(&self, dir: &Path) -> Result<()> {
        self.write_as(dir, CONNINFO_FILE)
    }

    /// Write the settings file `DIR/NAME` (durably: written aside, synced, renamed).
    pub fn write_as(&self, dir: &Path, name: &str) -> Result<()> {
        let tmp = dir.join(format!(".{name}.tmp"));
        let mut f = fs::File::create(&tmp)?;
        writeln!(f, "{}", self.conninfo)?;
        f.sync_all()?;
        fs::rename(&tmp, dir.join(name))?;
        fs::File::open(dir)?.sync_all()?;
        Ok(())
    }

    /// The connection string as written.
    pub fn conninfo(&self) -> &str {
        &self.conninfo
    }

    /// The database named (libpq's default: the user name).
    pub fn dbname(&self) -> String {
        self.config
            .get_dbname()
            .map(str::to_string)
            .unwrap_or_else(|| self.user())
    }

    /// The database the connection string names, if it names one.
    pub fn explicit_dbname(&self) -> Option<String> {
        self.config.get_dbname().map(str::to_string)
    }

    /// The user named (libpq's default: the operating-system user).
    pub fn user(&self) -> String {
        self.config
            .get_user()
            .map(str::to_string)
            .or_else(|| std::env::var("PGUSER").ok())
            .or_else(|| std::env::var("USER").ok())
            .unwrap_or_else(|| "postgres".to_string())
    }

    /// The directory of the Unix socket named first, if the first host is one.
    pub fn unix_socket_dir(&self) -> Option<PathBuf> {
        match self.config.get_hosts().first() {
            Some(Host::Unix(p)) => Some(p.clone()),
            _ => None,
        }
    }

    /// The same server and user, another database.
    pub fn with_dbname(&self, dbname: &str) -> Self {
        let mut config = self.config.clone();
        config.dbname(dbname);
        let conninfo = format!("{} dbname={}", self.server_conninfo(), quote_value(dbname));
        ConnSettings { conninfo, config }
    }

    /// The connection string without the database (hosts, ports, user, options).
    pub fn server_conninfo(&self) -> String {
        let mut parts = Vec::new();
        let hosts: Vec<String> = self.config.get_hosts().iter().map(host_text).collect();
        if !hosts.is_empty() {
            parts.push(format!("host={}", quote_value(&hosts.join(","))));
        }
        let ports: Vec<String> = self.config.get_ports().iter().map(u16::to_string).collect();
        if !ports.is_empty() {
            parts.push(format!("port={}", ports.join(",")));
        }
        if let Some(u) = self.config.get_user() {
            parts.push(format!("user={}", quote_value(u)));
        }
        if let Some(o) = self.config.get_options() {
            parts.push(format!("options={}", quote_value(o)));
        }
        parts.join(" ")
    }

    /// The client configuration, with the password from the password file if it has one for
    /// this connection.
    pub fn client_config(&self) -> Config {
        let mut config = self.config.clone();
        if let Some(pw) = self.password_from_file() {
            config.password(pw);
        }
        config
    }

    fn password_from_file(&self) -> Option<String> {
        let file = match std::env::var_os("PGPASSFILE") {
            Some(p) => PathBuf::from(p),
            None => PathBuf::from(std::env::var_os("HOME")?).join(".pgpass"),
        };
        let text = pgpass_text(&file)?;
        let host = match self.config.get_hosts().first() {
            Some(Host::Tcp(h)) => h.clone(),
            // libpq matches a Unix-socket connection against `localhost`.
            _ => "localhost".to_string(),
        };
        let port = self.config.get_ports().first().copied().unwrap_or(5432);
        lookup_pgpass(
            &text,
            &host,
            &port.to_string(),
            &self.dbname(),
            &self.user(),
        )
    }
}

fn host_text(h: &Host) -> String {
    match h {
        Host::Tcp(s) => s.clone(),
        Host::Unix(p) => p.display().to_string(),
    }
}

/// A value of a `key=value` connection string, quoted when it needs it.
fn quote_value(v: &str) -> String {
    if !v.is_empty() && !v.contains(|c: char| c.is_whitespace() || c == '\'' || c == '\\') {
        return v.to_string();
    }
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// The password file's text, if it exists and only its owner can read it (libpq ignores a
/// file that others can read, and so do we).
fn pgpass_text(file: &Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = fs::metadata(file).ok()?;
    if !meta.is_file() || meta.permissions().mode() & 0o077 != 0 {
        return None;
    }
    fs::read_to_string(file).ok()
}

/// The password of the first line of a password file that matches (`*` matches anything;
/// `\:` and `\\` are escapes), libpq's rule.
fn lookup_pgpass(text: &str, host: &str, port: &str, db: &str, user: &str) -> Option<String> {
    let want = [host, port, db, user];
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let fields = split_pgpass_line(line);
            if fields.len() < 5 {
                return None;
            }
            let matches = fields[..4]
                .iter()
                .zip(want)
                .all(|(f, w)| f == "*" || f == w);
            matches.then(|| fields[4].clone())
        })
}

fn split_pgpass_line(line: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => field.extend(chars.next()),
            ':' if fields.len() < 4 => fields.push(std::mem::take(&mut field)),
            c => field.push(c),
        }
    }
    fields.push(field);
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_is_refused_and_the_message_says_where_it_belongs() {
        for s in [
            "host=/tmp password=secret dbname=x",
            "postgresql://u:secret@localhost/db",
        ] {
            let err = ConnSettings::parse(s).unwrap_err().to_string();
            assert!(err.contains("~/.pgpass"), "{err}");
        }
        assert!(ConnSettings::parse("host=/tmp\u{1b}[2J").is_err());
        assert!(ConnSettings::parse("").is_err());
    }

    #[test]
    fn dbname_swaps_keep_server_and_user() {
        let s = ConnSettings::parse("host=/run/pg port=5433 user=msite dbname=a").unwrap();
        let t = s.with_dbname("b c");
        assert_eq!(
            t.conninfo(),
            "host=/run/pg port=5433 user=msite dbname='b c'"
        );
        assert_eq!(t.dbname(), "b c");
        assert_eq!(ConnSettings::parse(t.conninfo()).unwrap().dbname(), "b c");
    }

    #[test]
    fn pgpass_lines_match_like_libpq() {
        let text =
            "# comment\nother:5432:*:*:no\nlocalhost:5432:site:msite:pa\\:ss\n*:*:*:*:fallback\n";
        assert_eq!(
            lookup_pgpass(text, "localhost", "5432", "site", "msite").as_deref(),
            Some("pa:ss")
        );
        assert_eq!(
            lookup_pgpass(text, "db.example", "5432", "site", "msite").as_deref(),
            Some("fallback")
        );
        assert_eq!(lookup_pgpass("a:1:b:c:d\n", "a", "1", "b", "x"), None);
    }
}
