//! Finding PostgreSQL's programs (`pg_dump`, `pg_restore`, and for the scratch server
//! `initdb`, `pg_ctl`): `MSITE_PG_BINDIR` if set, then the directory `pg_config --bindir`
//! names, then every directory of `PATH`, then Debian's `/usr/lib/postgresql/N/bin` (newest
//! first), where the server packages put them without adding them to `PATH`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The environment variable naming the directory of PostgreSQL's programs.
pub const BINDIR_ENV: &str = "MSITE_PG_BINDIR";

/// The path of PostgreSQL's program `name`, or a message saying where it was looked for and
/// which package brings it.
pub fn find(name: &str) -> Result<PathBuf, String> {
    candidates()
        .into_iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            format!(
                "cannot find PostgreSQL's `{name}` (looked in ${BINDIR_ENV}, `pg_config --bindir`, PATH and /usr/lib/postgresql/*/bin); install the PostgreSQL server programs (Debian: `apt-get install postgresql`) or set {BINDIR_ENV}"
            )
        })
}

fn candidates() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(d) = std::env::var_os(BINDIR_ENV) {
        dirs.push(PathBuf::from(d));
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        if out.status.success() {
            let s = String::from_utf8_lossy(&out.stdout).trim().to_string();
            dirs.push(PathBuf::from(s));
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    dirs.extend(debian_bindirs(Path::new("/usr/lib/postgresql")));
    dirs
}

/// `/usr/lib/postgresql/N/bin`, the largest version `N` first.
fn debian_bindirs(root: &Path) -> Vec<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            Some((v, e.path().join("bin")))
        })
        .collect();
    versions.sort_by_key(|v| std::cmp::Reverse(v.0));
    versions.into_iter().map(|(_, p)| p).collect()
}
