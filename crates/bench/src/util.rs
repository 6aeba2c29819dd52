//! Helpers shared by the workloads: deterministic content, generated trees, timing, medians,
//! and the peak resident set size of this process.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// splitmix64: a fast deterministic generator for file content.
pub fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// `len` pseudo-random (incompressible) bytes determined by `seed`.
pub fn content(seed: u64, len: usize) -> Vec<u8> {
    let mut s = seed ^ 0x5151_1234_abcd_0001;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        out.extend_from_slice(&splitmix(&mut s).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Relative path of file `i` in a generated tree: 1000 files per directory.
pub fn tree_path(i: u64) -> String {
    format!("d{:04}/f{:07}.txt", i / 1000, i)
}

/// Writes files `0..n` of a tree under `dir`, file `i` holding `content(seed * 2^32 + i, size)`.
pub fn write_tree(dir: &Path, n: u64, size: usize, seed: u64) -> Result<()> {
    for i in 0..n {
        let p = dir.join(tree_path(i));
        if i % 1000 == 0 {
            if let Some(parent) = p.parent() {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("creating {}", parent.display()))?;
            }
        }
        std::fs::write(&p, content((seed << 32) + i, size))
            .with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}

/// Writes every dirty page of the machine to disk (`sync`) before a timed creation, on both
/// sides: the setup that comes before one (a long history checked in, a repository
/// committed and gc'd) leaves tens of megabytes for the kernel to write back, and that
/// writeback fell into whichever timing came next, moving it by a third from run to run.
pub fn settle_disk() -> Result<()> {
    let status = Command::new("sync").status().context("running sync")?;
    if !status.success() {
        bail!("sync failed: {status}");
    }
    Ok(())
}

/// Runs `f` and returns its result with the wall time it took.
pub fn timed<T>(f: impl FnOnce() -> Result<T>) -> Result<(T, Duration)> {
    let t = Instant::now();
    let v = f()?;
    Ok((v, t.elapsed()))
}

/// The median of some durations, in seconds.
pub fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Peak resident set size of this process (`VmHWM`), in KiB.
pub fn vm_hwm_kib() -> Result<u64> {
    let status =
        std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmHWM line in /proc/self/status")
}

/// The files of a directory (part files of a packet), sorted.
pub fn files_in(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let e = e.with_context(|| format!("reading {}", dir.display()))?;
        if e.file_type().map(|t| t.is_file()).unwrap_or(false) {
            v.push(e.path());
        }
    }
    v.sort();
    Ok(v)
}

/// Human-readable seconds.
pub fn secs(s: f64) -> String {
    if s < 0.0001 {
        format!("{:.1} µs", s * 1e6)
    } else if s < 0.01 {
        format!("{:.2} ms", s * 1e3)
    } else {
        format!("{s:.3} s")
    }
}

/// Runs this binary as `msite ARGS` in `dir`; must succeed.
pub fn msite(dir: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new(std::env::current_exe()?)
        .arg("__msite")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .context("running msite")?;
    if !out.status.success() {
        bail!(
            "msite {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The bytes of every file under `p` (a store directory, a git object directory).
pub fn dir_bytes(p: &Path) -> Result<u64> {
    msite_core::store::dir_bytes(p).with_context(|| format!("reading {}", p.display()))
}
