//! The git baselines: plain `git` CLI in temporary directories, with a fixed identity.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::util::{content, median, timed, tree_path};

/// `git` with a fixed identity and no user or system configuration. Automatic gc runs in the
/// foreground (`gc.autoDetach=false`): it still packs a repository that many loose objects
/// were committed to, as the baselines have always measured, but it is over when the command
/// returns, so it neither overlaps a timed command nor makes a baseline's own `git gc` fail
/// ("gc is already running", the long history at full size). Turning it off instead
/// (`gc.auto=0`) left the tree baseline's 10,000 objects loose and made its bundle 15 times
/// slower.
pub(crate) fn git(dir: &Path) -> Command {
    let mut c = Command::new("git");
    c.current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .args([
            "-c",
            "user.name=msite bench",
            "-c",
            "user.email=bench@msite.invalid",
            "-c",
            "init.defaultBranch=main",
            "-c",
            "gc.autoDetach=false",
        ]);
    c
}

/// Runs a git command and fails with its stderr if it fails.
pub(crate) fn run(dir: &Path, args: &[&str]) -> Result<()> {
    let out = git(dir)
        .args(args)
        .stdout(Stdio::null())
        .output()
        .with_context(|| format!("running git {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "git {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// The installed git's version line (the benchmarks need one).
pub fn version() -> Result<String> {
    let out = Command::new("git")
        .arg("--version")
        .output()
        .context("running `git --version`: the baselines need git on PATH")?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Tree replication: `tree` committed in one commit; each run times `git bundle create`
/// plus `git clone --bare` from the bundle. Returns the median seconds.
pub fn tree(work: &Path, tree: &Path, runs: usize) -> Result<f64> {
    let repo = work.join("git-tree");
    std::fs::create_dir_all(&repo).with_context(|| format!("creating {}", repo.display()))?;
    run(&repo, &["init", "-q", "--bare", "."])?;
    let wt = tree.to_str().context("tree path is not UTF-8")?;
    run(&repo, &["--work-tree", wt, "add", "-A"])?;
    run(&repo, &["--work-tree", wt, "commit", "-q", "-m", "tree"])?;
    bundle_and_clone(work, &repo, "git-tree", runs)
}

/// Times `git bundle create --all` of `repo` plus `git clone --bare` from the bundle, `runs`
/// times (the files named after `tag` under `work`, removed after each run). Returns the
/// median seconds.
pub(crate) fn bundle_and_clone(work: &Path, repo: &Path, tag: &str, runs: usize) -> Result<f64> {
    let mut times = Vec::new();
    for k in 0..runs {
        let bundle = work.join(format!("{tag}-{k}.bundle"));
        let dest = work.join(format!("{tag}-clone-{k}"));
        let b = bundle.to_str().context("path is not UTF-8")?.to_string();
        let d = dest.to_str().context("path is not UTF-8")?.to_string();
        crate::util::settle_disk()?;
        let ((), t) = timed(|| {
            run(repo, &["bundle", "create", "-q", &b, "--all"])?;
            run(work, &["clone", "-q", "--bare", &b, &d])
        })?;
        times.push(t.as_secs_f64());
        let _ = std::fs::remove_file(&bundle);
        let _ = std::fs::remove_dir_all(&dest);
    }
    Ok(median(times))
}

/// Incremental sync: a base commit of `base` (cloned bare into one receiver per run), then
/// `n` commits each adding one file of `size` bytes, made with `git fast-import`; each run
/// times `git bundle create base..main` plus `git fetch` from the bundle at a receiver.
pub fn incremental(work: &Path, base: &Path, n: u64, size: usize, runs: usize) -> Result<f64> {
    let repo = work.join("git-inc");
    std::fs::create_dir_all(&repo).with_context(|| format!("creating {}", repo.display()))?;
    run(&repo, &["init", "-q", "--bare", "."])?;
    let wt = base.to_str().context("base path is not UTF-8")?;
    run(&repo, &["--work-tree", wt, "add", "-A"])?;
    run(&repo, &["--work-tree", wt, "commit", "-q", "-m", "base"])?;
    run(&repo, &["tag", "base"])?;
    let mut receivers = Vec::new();
    for k in 0..runs {
        let r = work.join(format!("git-inc-recv-{k}"));
        let rs = r.to_str().context("path is not UTF-8")?.to_string();
        let src = repo.to_str().context("path is not UTF-8")?.to_string();
        run(work, &["clone", "-q", "--bare", &src, &rs])?;
        receivers.push(r);
    }
    // n commits, one new file each.
    let mut stream = Vec::new();
    for i in 0..n {
        let data = content(0xfa57 << 32 | i, size);
        let path = format!("inc/{}", tree_path(i));
        write!(
            stream,
            "commit refs/heads/main\ncommitter msite bench <bench@msite.invalid> {} +0000\ndata 0\n",
            1_700_000_000 + i
        )?;
        if i == 0 {
            stream.extend_from_slice(b"from refs/heads/main^0\n");
        }
        write!(stream, "M 100644 inline {path}\ndata {}\n", data.len())?;
        stream.extend_from_slice(&data);
        stream.push(b'\n');
    }
    let mut child = git(&repo)
        .args(["fast-import", "--quiet"])
        .stdin(Stdio::piped())
        .spawn()
        .context("running git fast-import")?;
    child
        .stdin
        .take()
        .context("git fast-import stdin")?
        .write_all(&stream)
        .context("feeding git fast-import")?;
    if !child
        .wait()
        .context("waiting for git fast-import")?
        .success()
    {
        bail!("git fast-import failed");
    }
    let mut times = Vec::new();
    for (k, r) in receivers.iter().enumerate() {
        let bundle = work.join(format!("git-inc-{k}.bundle"));
        let b = bundle.to_str().context("path is not UTF-8")?.to_string();
        let ((), t) = timed(|| {
            run(&repo, &["bundle", "create", "-q", &b, "base..main"])?;
            run(r, &["fetch", "-q", &b, "main:main"])
        })?;
        times.push(t.as_secs_f64());
        let _ = std::fs::remove_file(&bundle);
    }
    Ok(median(times))
}

/// Runs a git command and returns its standard output, failing with its stderr if it fails.
pub(crate) fn output(dir: &Path, args: &[&str]) -> Result<String> {
    let out = git(dir)
        .args(args)
        .output()
        .with_context(|| format!("running git {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "git {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
