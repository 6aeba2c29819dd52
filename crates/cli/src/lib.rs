//! `msite-cli`: the `msite` command line, a thin layer over `msite-core`.
//!
//! Each command group lives in its own module under [`cmd`], as a clap `Args` struct with a
//! `run(self, ctx)` method that parses input, calls `msite-core`, and prints the result. Storage
//! engines come from `msite-backends` through [`backend`] (cargo features `sqlite`, `rocks`,
//! `mem`); no other module names one. [`site`] knows the layout of a site directory.
//! `msite demo` runs the same command functions in-process.
//!
//! Exit codes: 0 ok, 1 error or refused packet, 2 usage error, 3 some packets must wait, 4 a
//! packet past its route's expiry (`serve --once`, `export --ship`).
//!
//! [`serve`] (cargo feature `serve`, default on) is `msite serve`, the site daemon.

// A build without any backend (`--no-default-features`) compiles, with every store match
// empty; the lints below would only flag that emptiness.
#![cfg_attr(
    not(any(feature = "sqlite", feature = "rocks", feature = "mem")),
    allow(
        unused_variables,
        unreachable_code,
        unused_imports,
        dead_code,
        irrefutable_let_patterns
    )
)]

pub mod backend;
pub mod cmd;
pub mod history;
pub mod packets;
pub mod seal;
#[cfg(feature = "serve")]
pub mod serve;
pub mod site;
pub mod status;
pub mod util;

use std::sync::LazyLock;

use clap::{CommandFactory, FromArgMatches};

pub use crate::site::Ctx;
pub use crate::util::{Exit, EXIT_ERROR, EXIT_OK, EXIT_USAGE, EXIT_WAITING};

/// `msite --version`: the version and the storage engines of this build.
pub static VERSION: LazyLock<String> = LazyLock::new(|| {
    format!(
        "{} (backends: {})",
        env!("CARGO_PKG_VERSION"),
        backend::BackendKind::available_list()
    )
});

/// Runs `msite` with `args` (the first is the program name) and returns the exit code.
/// Errors are printed on stderr as `msite: error: …`.
pub fn main_with_args<I, T>(args: I) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let command = cmd::Cli::command();
    let matches = match command.try_get_matches_from(args) {
        Ok(m) => m,
        Err(e) => {
            // Help and version go to stdout with code 0; usage errors to stderr with code 2.
            let _ = e.print();
            return e.exit_code();
        }
    };
    let cli = match cmd::Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return EXIT_USAGE;
        }
    };
    init_logging(cli.verbose, cli.is_daemon());
    match cli.run() {
        Ok(()) => EXIT_OK,
        Err(e) => report(&e),
    }
}

/// The longest error line printed (in characters); the rest is summarised.
const MAX_ERROR_LINE: usize = 1000;

/// Prints an error the way every command does, and returns its exit code. The line is bounded
/// and holds no raw control character, whatever text a packet put into the message.
pub fn report(e: &anyhow::Error) -> i32 {
    if let Some(exit) = e.downcast_ref::<Exit>() {
        if let Some(m) = &exit.message {
            eprintln!("msite: {}", util::bounded_line(m, MAX_ERROR_LINE));
        }
        return exit.code;
    }
    eprintln!(
        "msite: error: {}",
        util::bounded_line(&error_text(e), MAX_ERROR_LINE)
    );
    EXIT_ERROR
}

/// An error and its causes as one line, without repeating a cause the message already quotes.
pub fn error_text(e: &anyhow::Error) -> String {
    let mut text = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !text.contains(&c) {
            text.push_str(": ");
            text.push_str(&c);
        }
    }
    text
}

/// Logging on stderr: warnings only, unless -v or RUST_LOG say more; a daemon (`msite serve`)
/// logs its steps (info) with time stamps.
fn init_logging(verbose: u8, daemon: bool) {
    use tracing_subscriber::EnvFilter;
    let default = match verbose {
        0 if daemon => "msite=info,msite_cli=info,warn",
        0 => "warn",
        1 => "msite=info,msite_cli=info,warn",
        _ => "debug",
    };
    let filter = match std::env::var("RUST_LOG") {
        Ok(s) if !s.is_empty() && verbose == 0 => EnvFilter::new(s),
        _ => EnvFilter::new(default),
    };
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false);
    let _ = if daemon {
        fmt.try_init()
    } else {
        fmt.without_time().try_init()
    };
}
