//! What the machine must have before a row runs: libclang, which `librocksdb-sys`'s bindgen
//! loads when a RocksDB row builds, and PostgreSQL's server programs, which the PostgreSQL
//! rows' tests start (scratch servers in temporary directories), and Chromium, in which the
//! `msite-cli` rows with the `serve` feature load the status page (headless).
//!
//! [`ensure_postgres`] looks for `initdb` where `msite-store-postgres` looks
//! (`MSITE_PG_BINDIR`, `PATH`, Debian's `/usr/lib/postgresql/N/bin`); when it is missing and we
//! are root on a Debian-like machine it installs `postgresql`, otherwise it stops naming it.
//!
//! [`ensure_libclang`] finds it the way clang-sys does (`LIBCLANG_PATH`, then the linker cache
//! and LLVM's usual directories). When it is missing and we are root on a Debian-like machine,
//! it installs `libclang-dev` with apt; otherwise it stops before any C++ build with one sentence
//! naming the package, so a fresh machine never spends minutes on a build that cannot finish.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

/// The Debian package that provides libclang for bindgen.
pub const LIBCLANG_PACKAGE: &str = "libclang-dev";

/// Makes sure libclang can be found, installing [`LIBCLANG_PACKAGE`] when we may.
pub fn ensure_libclang() -> Result<()> {
    if let Some(found) = find_libclang() {
        println!("libclang: {}", found.display());
        return Ok(());
    }
    if !is_root() || !has_command("apt-get") {
        bail!(
            "the RocksDB rows need libclang, which this machine lacks: install it (Debian/Ubuntu: `sudo apt-get install {LIBCLANG_PACKAGE}`) or skip those rows with MSITE_SKIP_ROCKS=1"
        );
    }
    println!("libclang is missing: installing {LIBCLANG_PACKAGE} with apt-get (we are root)");
    apt_install(LIBCLANG_PACKAGE)?;
    match find_libclang() {
        Some(found) => {
            println!("libclang: {}", found.display());
            Ok(())
        }
        None => bail!(
            "`apt-get install {LIBCLANG_PACKAGE}` succeeded but libclang is still not found; set LIBCLANG_PATH to the directory holding libclang.so"
        ),
    }
}

/// The Debian package that provides PostgreSQL's server programs (and amcheck).
pub const POSTGRES_PACKAGE: &str = "postgresql";

/// Makes sure PostgreSQL's server programs (`initdb`, `pg_ctl`, `pg_dump`, `pg_restore`) can
/// be found, installing [`POSTGRES_PACKAGE`] when we may.
pub fn ensure_postgres() -> Result<()> {
    if let Some(found) = find_initdb() {
        println!("PostgreSQL: {}", found.display());
        return Ok(());
    }
    if !is_root() || !has_command("apt-get") {
        bail!(
            "the PostgreSQL rows start PostgreSQL servers, and this machine has no `initdb`: install the server programs (Debian/Ubuntu: `sudo apt-get install {POSTGRES_PACKAGE}`) or set MSITE_PG_BINDIR to their directory"
        );
    }
    println!("PostgreSQL is missing: installing {POSTGRES_PACKAGE} with apt-get (we are root)");
    apt_install(POSTGRES_PACKAGE)?;
    match find_initdb() {
        Some(found) => {
            println!("PostgreSQL: {}", found.display());
            Ok(())
        }
        None => bail!(
            "`apt-get install {POSTGRES_PACKAGE}` succeeded but `initdb` is still not found; set MSITE_PG_BINDIR to the directory holding it"
        ),
    }
}

/// The Debian package that provides the headless browser of the status page tests.
pub const CHROMIUM_PACKAGE: &str = "chromium";

/// Makes sure a Chromium can be found where the status page tests look (`MSITE_CHROMIUM`,
/// or `chromium`, `chromium-browser`, `google-chrome` on `PATH`), installing
/// [`CHROMIUM_PACKAGE`] when we may; otherwise it stops naming the package (the tests would
/// fail, never skip).
pub fn ensure_chromium() -> Result<()> {
    if let Some(found) = find_chromium() {
        println!("Chromium: {}", found.display());
        return Ok(());
    }
    if !is_root() || !has_command("apt-get") {
        bail!(
            "the msite-cli rows with `serve` load the status page in headless Chromium, and this machine has none: install it (Debian/Ubuntu: `sudo apt-get install {CHROMIUM_PACKAGE}`) or set MSITE_CHROMIUM to the browser"
        );
    }
    println!("Chromium is missing: installing {CHROMIUM_PACKAGE} with apt-get (we are root)");
    apt_install(CHROMIUM_PACKAGE)?;
    match find_chromium() {
        Some(found) => {
            println!("Chromium: {}", found.display());
            Ok(())
        }
        None => bail!(
            "`apt-get install {CHROMIUM_PACKAGE}` succeeded but no `chromium` is on PATH; set MSITE_CHROMIUM to the browser"
        ),
    }
}

/// The browser the status page tests would run.
fn find_chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("MSITE_CHROMIUM") {
        return Some(PathBuf::from(p)).filter(|p| p.is_file());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|d| ["chromium", "chromium-browser", "google-chrome"].map(|n| d.join(n)))
        .find(|p| p.is_file())
}

/// `initdb` in `MSITE_PG_BINDIR`, on `PATH`, or in `/usr/lib/postgresql/N/bin`.
pub fn find_initdb() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("MSITE_PG_BINDIR")
        .map(PathBuf::from)
        .into_iter()
        .collect();
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    if let Ok(entries) = std::fs::read_dir("/usr/lib/postgresql") {
        dirs.extend(entries.flatten().map(|e| e.path().join("bin")));
    }
    dirs.into_iter()
        .map(|d| d.join("initdb"))
        .find(|p| p.is_file())
}

/// Whether a shared-library file name is libclang itself (`libclang.so`, `libclang-14.so.1`),
/// not one of its siblings such as `libclang-cpp.so.14`, which bindgen cannot load.
pub fn is_libclang_name(name: &str) -> bool {
    let Some(mut rest) = name.strip_prefix("libclang") else {
        return false;
    };
    if let Some(versioned) = rest.strip_prefix('-') {
        let Some(at) = versioned.find(".so") else {
            return false;
        };
        let version = &versioned[..at];
        let numeric = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
        if !version.split('.').all(numeric) {
            return false;
        }
        rest = &versioned[at..];
    }
    rest == ".so" || rest.starts_with(".so.")
}

/// The first libclang found, if any.
fn find_libclang() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("LIBCLANG_PATH") {
        if let Some(found) = libclang_in(Path::new(&dir)) {
            return Some(found);
        }
    }
    from_linker_cache().or_else(|| {
        llvm_lib_dirs()
            .into_iter()
            .find_map(|dir| libclang_in(&dir))
    })
}

fn libclang_in(dir: &Path) -> Option<PathBuf> {
    let entries = std::fs::read_dir(dir).ok()?;
    entries
        .filter_map(|e| e.ok())
        .find(|e| is_libclang_name(&e.file_name().to_string_lossy()))
        .map(|e| e.path())
}

/// libclang as `ldconfig -p` lists it (`\tlibclang-14.so.1 (libc6,x86-64) => /usr/lib/...`).
fn from_linker_cache() -> Option<PathBuf> {
    let out = Command::new("ldconfig")
        .arg("-p")
        .stderr(Stdio::null())
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|line| {
            let name = line.split_whitespace().next()?;
            let path = line.rsplit_once("=> ")?.1.trim();
            is_libclang_name(name).then(|| PathBuf::from(path))
        })
}

/// `/usr/lib/llvm-*/lib`, where Debian puts each LLVM version's libraries.
fn llvm_lib_dirs() -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir("/usr/lib") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("llvm-"))
        .map(|e| e.path().join("lib"))
        .collect()
}

/// The PyPI requirement of the S3 rows' local server.
pub const MOTO_REQUIREMENT: &str = "moto[server]";

/// The S3 route's tests start `moto_server` (an S3-compatible server from PyPI) with the
/// Python named by `MSITE_PYTHON` (default `python3`). When it lacks moto, moto is installed
/// with that Python's pip (into a virtualenv or the user's site when not root); otherwise this
/// stops naming what to install.
pub fn ensure_moto() -> Result<()> {
    let python = std::env::var("MSITE_PYTHON").unwrap_or_else(|_| "python3".into());
    if has_moto(&python) {
        println!("moto_server: {python} has moto");
        return Ok(());
    }
    println!("moto_server is missing: `{python} -m pip install '{MOTO_REQUIREMENT}'`");
    let status = Command::new(&python)
        .args(["-m", "pip", "install", "--quiet", MOTO_REQUIREMENT])
        .stdin(Stdio::null())
        .status();
    if !status.is_ok_and(|s| s.success()) || !has_moto(&python) {
        bail!(
            "the S3 rows start moto_server, and `{python} -m pip install '{MOTO_REQUIREMENT}'` did not install it: install it by hand (or point MSITE_PYTHON at a Python that has it)"
        );
    }
    Ok(())
}

fn has_moto(python: &str) -> bool {
    Command::new(python)
        .args(["-c", "import moto.server"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether this process runs as root (the `Uid:` line of `/proc/self/status`).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().next().map(|id| id == "0"))
        })
        .unwrap_or(false)
}

fn has_command(name: &str) -> bool {
    Command::new(name)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// `apt-get update`, then `apt-get install -y --no-install-recommends PACKAGE`.
fn apt_install(package: &str) -> Result<()> {
    apt_get(&["update"], package)?;
    apt_get(
        &["install", "-y", "--no-install-recommends", package],
        package,
    )
}

fn apt_get(args: &[&str], package: &str) -> Result<()> {
    println!("$ apt-get {}", args.join(" "));
    let status = Command::new("apt-get")
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null())
        .status()
        .context("cannot run apt-get")?;
    if !status.success() {
        bail!(
            "`apt-get {}` failed ({status}); install {package} by hand",
            args.join(" ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libclang_is_told_apart_from_its_siblings() {
        for yes in [
            "libclang.so",
            "libclang.so.1",
            "libclang-14.so",
            "libclang-14.so.1",
            "libclang-14.0.6.so.14",
        ] {
            assert!(is_libclang_name(yes), "{yes} is libclang");
        }
        for no in [
            "libclang-cpp.so.14",
            "libclang-cpp14.so",
            "libclangBasic.a",
            "libclang_rt.asan.so",
            "libllvm-14.so",
            "libclang-14.a",
        ] {
            assert!(!is_libclang_name(no), "{no} is not libclang");
        }
    }
}
