//! Running cargo as a child process: echo the command, stream its output, time it.
//!
//! One stream (stdout for `cargo test`, stderr for libFuzzer) is piped through us line by
//! line, so the caller can parse it while the user still sees everything as it happens.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// The cargo that runs us (`$CARGO`, set by `cargo run`), or `cargo` from `PATH`.
pub fn cargo() -> OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

/// Which output stream of the child to pass through the line callback.
#[derive(Debug, Clone, Copy)]
pub enum Watch {
    /// Pipe stdout through the callback and echo it to our stdout; stderr is inherited.
    Stdout,
    /// Pipe stderr through the callback and echo it to our stderr; stdout is inherited.
    Stderr,
}

/// How a command ended.
#[derive(Debug)]
pub struct Finished {
    /// Whether it exited with status 0.
    pub success: bool,
    /// Wall-clock time it took.
    pub duration: Duration,
}

/// Runs `cargo <args>` in `dir` with extra `env`, echoing the command line first and
/// calling `on_line` for each line of the watched stream.
pub fn run_cargo(
    dir: &Path,
    args: &[String],
    env: &[(String, String)],
    watch: Watch,
    mut on_line: impl FnMut(&str),
) -> Result<Finished> {
    let shown = display_command(args, env);
    println!("$ {shown}");
    flush();
    let mut cmd = Command::new(cargo());
    cmd.args(args).current_dir(dir).stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    match watch {
        Watch::Stdout => cmd.stdout(Stdio::piped()),
        Watch::Stderr => cmd.stderr(Stdio::piped()),
    };
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("could not start `{shown}`"))?;
    let pipe: Box<dyn Read> = match watch {
        Watch::Stdout => Box::new(child.stdout.take().context("child stdout was not piped")?),
        Watch::Stderr => Box::new(child.stderr.take().context("child stderr was not piped")?),
    };
    let mut reader = BufReader::new(pipe);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let n = reader
            .read_until(b'\n', &mut buf)
            .with_context(|| format!("reading the output of `{shown}`"))?;
        if n == 0 {
            break;
        }
        // Echo the raw bytes (they may not be UTF-8); parse a lossy copy.
        match watch {
            Watch::Stdout => echo(&mut std::io::stdout().lock(), &buf),
            Watch::Stderr => echo(&mut std::io::stderr().lock(), &buf),
        }
        on_line(String::from_utf8_lossy(&buf).trim_end());
    }
    let status = child
        .wait()
        .with_context(|| format!("waiting for `{shown}`"))?;
    Ok(Finished {
        success: status.success(),
        duration: start.elapsed(),
    })
}

/// `K=V cargo a b c`, for logs and `--list`.
pub fn display_command(args: &[String], env: &[(String, String)]) -> String {
    let mut parts: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    parts.push("cargo".to_string());
    parts.extend(args.iter().cloned());
    parts.join(" ")
}

fn echo(out: &mut impl Write, bytes: &[u8]) {
    // A closed terminal or pipe must not stop the build; there is nothing better to do.
    let _ = out.write_all(bytes);
    let _ = out.flush();
}

/// Flushes stdout so our lines and the child's lines appear in order.
pub fn flush() {
    let _ = std::io::stdout().flush();
}

/// The wall-clock time of day in UTC, `HH:MM:SSZ`, for CI logs.
pub fn utc_clock() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format!(
        "{:02}:{:02}:{:02}Z",
        secs / 3600 % 24,
        secs / 60 % 60,
        secs % 60
    )
}

/// `83.4s` or `2m03s`.
pub fn human(d: Duration) -> String {
    let secs = d.as_secs_f64();
    if secs < 60.0 {
        format!("{secs:.1}s")
    } else {
        let whole = d.as_secs();
        format!("{}m{:02}s", whole / 60, whole % 60)
    }
}
