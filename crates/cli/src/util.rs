//! Small helpers shared by the commands: exit codes, sizes, times, progress indicators.

use std::fmt;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use crate::site::Ctx;

/// Exit code: success.
pub const EXIT_OK: i32 = 0;
/// Exit code: an error, or a packet refused.
pub const EXIT_ERROR: i32 = 1;
/// Exit code: bad usage (clap's own).
pub const EXIT_USAGE: i32 = 2;
/// Exit code: some packets must wait for others.
pub const EXIT_WAITING: i32 = 3;

/// An error that carries its exit code; its message has already been printed unless
/// `message` is set.
#[derive(Debug)]
pub struct Exit {
    /// The exit code.
    pub code: i32,
    /// A last line for stderr, if any.
    pub message: Option<String>,
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.message {
            Some(m) => f.write_str(m),
            None => write!(f, "exit code {}", self.code),
        }
    }
}

impl std::error::Error for Exit {}

/// Parses a duration in milliseconds: `90s`, `30m`, `6h`, `2d` (a unit is required).
pub fn parse_duration_ms(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: u64 = num.parse().map_err(|_| {
        format!("`{s}` is not a duration; write a whole number with s, m, h or d, like 6h")
    })?;
    let mult: u64 = match unit.trim() {
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => {
            return Err(format!(
                "`{s}` has no time unit; write a whole number with s, m, h or d, like 6h"
            ))
        }
    };
    match value.checked_mul(mult) {
        Some(ms) if ms > 0 => Ok(ms),
        _ => Err(format!(
            "`{s}` is not a usable interval; give one from 1s up, like 6h"
        )),
    }
}

/// A duration in milliseconds in the largest unit that divides it: `6h`, `90m`, `1500ms`.
pub fn duration_text(ms: u64) -> String {
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
    ] {
        if ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

/// Parses a size: `1000`, `64K`, `10M`, `1G`, `2.5MiB`, `512kb` (K = 1024).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num.parse().map_err(|_| {
        format!("`{s}` is not a size; write a number with an optional unit, like 10M or 1G")
    })?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        other => {
            return Err(format!(
                "unknown size unit `{other}` in `{s}`; use K, M, G or T"
            ))
        }
    };
    let bytes = value * mult as f64;
    if !(bytes >= 1.0 && bytes < u64::MAX as f64) {
        return Err(format!(
            "`{s}` is not a usable size; give at least one byte"
        ));
    }
    Ok(bytes as u64)
}

/// `text` with every control character written as an escape (`\n`, `\u{1b}`): names and
/// texts that come from a packet or the store are printed through it in text output, so none
/// can move the cursor, recolour the terminal or forge a line of output.
pub fn esc(text: &str) -> String {
    if !text.chars().any(char::is_control) {
        return text.to_string();
    }
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_debug().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// A path for messages, through [`esc`].
pub fn esc_path(p: &std::path::Path) -> String {
    esc(&p.display().to_string())
}

/// `line` with the control characters a line of output may hold (tab) kept and every other one
/// escaped, then cut to `max` characters with a note of how much was left out: the last guard
/// of what reaches the terminal.
pub fn bounded_line(line: &str, max: usize) -> String {
    let mut out = String::new();
    let mut chars = line.chars();
    for (shown, c) in chars.by_ref().enumerate() {
        if shown >= max {
            let rest = 1 + chars.count();
            out.push_str(&format!("… ({rest} more characters)"));
            break;
        }
        if c.is_control() && c != '\t' {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    out
}

/// The first `max` of `items` joined with `sep`, then `and N more` (items from a packet can
/// number millions; a line of output lists a few).
pub fn bounded_list(items: impl IntoIterator<Item = String>, sep: &str, max: usize) -> String {
    let mut it = items.into_iter();
    let mut text = it.by_ref().take(max).collect::<Vec<_>>().join(sep);
    let rest = it.count();
    if rest > 0 {
        text.push_str(&format!("{sep}and {rest} more"));
    }
    text
}

/// Parses a duration: `90`, `90s`, `5m`, `2h`, `7d` (at least one second).
pub fn parse_duration(t: &str) -> Result<std::time::Duration, String> {
    let t = t.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{t}` is not a duration like 30s, 5m, 2h or 7d"))?;
    let mult = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("unknown unit in `{t}`; use s, m, h or d")),
    };
    if n == 0 {
        return Err("give a duration of at least 1s".into());
    }
    Ok(std::time::Duration::from_secs(n.saturating_mul(mult)))
}

/// `1 entry`, `3 entries`.
pub fn count(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// The bytes `files` hold together (what is there now; a file that cannot be read counts 0).
pub fn files_size(files: &[std::path::PathBuf]) -> u64 {
    files
        .iter()
        .filter_map(|f| std::fs::metadata(f).ok())
        .map(|m| m.len())
        .sum()
}

/// A size for people: `1.5 MiB`.
pub fn human_size(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Milliseconds since the Unix epoch as `YYYY-MM-DDTHH:MM:SSZ` (UTC).
pub fn utc_time(ms: u64) -> String {
    msite_core::utc_seconds(ms)
}

/// A spinner on stderr while a step runs (only when the context allows progress output).
pub fn spinner(ctx: &Ctx, message: impl Into<String>) -> ProgressBar {
    if !ctx.progress {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new_spinner();
    pb.set_style(
        ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    pb.set_message(message.into());
    pb.enable_steady_tick(Duration::from_millis(120));
    pb
}

/// A bar with `len` steps on stderr (only when the context allows progress output).
pub fn bar(ctx: &Ctx, len: u64, message: impl Into<String>) -> ProgressBar {
    if !ctx.progress {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} ({eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    pb.set_message(message.into());
    pb
}

/// The user name recorded as the author of versions.
pub fn author() -> String {
    std::env::var("MSITE_AUTHOR")
        .or_else(|_| std::env::var("USER"))
        .or_else(|_| std::env::var("USERNAME"))
        .unwrap_or_else(|_| "msite".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("10M"), Ok(10 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("512kb"), Ok(512 << 10));
        assert_eq!(parse_size("1.5K"), Ok(1536));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("ten").is_err());
        assert!(parse_size("0").is_err());
        assert!(parse_size("3X").is_err());
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(esc("plain name"), "plain name");
        assert_eq!(esc("a\nb\u{1b}[31m"), "a\\nb\\u{1b}[31m");
        assert_eq!(bounded_line("x\ty\rz", 100), "x\ty\\rz");
        let long = "é".repeat(1000);
        let cut = bounded_line(&long, 10);
        assert_eq!(cut, format!("{}… (990 more characters)", "é".repeat(10)));
    }

    #[test]
    fn lists_are_bounded() {
        let items = (1..=10).map(|i| i.to_string());
        assert_eq!(bounded_list(items, ", ", 3), "1, 2, 3, and 7 more");
        assert_eq!(bounded_list(["a".to_string()], ", ", 3), "a");
    }

    #[test]
    fn times() {
        assert_eq!(utc_time(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc_time(1_700_000_000_000), "2023-11-14T22:13:20Z");
    }
}
