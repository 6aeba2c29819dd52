//! Tools generated from the clap definitions: `completions SHELL` and `man [DIR]`.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, CommandFactory};
use clap_complete::Shell;

use super::Cli;
use crate::site::Ctx;

/// `msite completions`.
#[derive(Debug, Args)]
#[command(
    long_about = "Prints a completion script for SHELL (bash, zsh, fish, elvish, powershell) on \
standard output.",
    after_help = "Example:\n  msite completions bash > /etc/bash_completion.d/msite\n  msite completions zsh > \"${fpath[1]}/_msite\""
)]
pub struct Completions {
    /// The shell.
    pub shell: Shell,
}

impl Completions {
    /// Runs the command.
    pub fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        let mut cmd = Cli::command();
        let mut buf = Vec::new();
        clap_complete::generate(self.shell, &mut cmd, "msite", &mut buf);
        ctx.write_raw(&buf);
        Ok(())
    }
}

/// `msite man`.
#[derive(Debug, Args)]
#[command(
    long_about = "Writes manual pages generated from this build's command definitions: with DIR, \
msite.1 and one page per command (msite-syncreplica-import.1, …) into DIR; without, msite.1 on \
standard output.",
    after_help = "Example:\n  msite man | man -l -\n  msite man /usr/local/share/man/man1"
)]
pub struct Man {
    /// Where to write the pages (default: msite.1 on standard output).
    pub dir: Option<PathBuf>,
}

fn render(cmd: &clap::Command) -> anyhow::Result<Vec<u8>> {
    let mut buf = Vec::new();
    clap_mangen::Man::new(cmd.clone())
        .render(&mut buf)
        .context("cannot render a manual page")?;
    Ok(buf)
}

impl Man {
    /// Runs the command.
    pub fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        let cmd = Cli::command();
        match self.dir {
            None => ctx.write_raw(&render(&cmd)?),
            Some(dir) => {
                std::fs::create_dir_all(&dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
                clap_mangen::generate_to(cmd, &dir)
                    .with_context(|| format!("cannot write manual pages into {}", dir.display()))?;
                let count = std::fs::read_dir(&dir)
                    .map(|d| {
                        d.flatten()
                            .filter(|e| e.file_name().to_string_lossy().ends_with(".1"))
                            .count()
                    })
                    .unwrap_or(0);
                ctx.say(format!(
                    "Wrote {count} manual pages into {}.",
                    dir.display()
                ));
            }
        }
        Ok(())
    }
}
