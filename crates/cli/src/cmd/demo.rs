//! `msite demo`: the product at work, narrated, in a temporary directory.
//!
//! Three sites in a hub topology (boston the hub; sanfran and bangalore talk only to boston)
//! develop in parallel on branches they master and exchange packets through the hub; then
//! sanfran loses its storage, is restored from a backup taken earlier, runs `restorereplica`,
//! gets back what it lost from its siblings through the hub, is unlocked, and the family
//! converges to one digest.
//!
//! Every step is a real `msite` command line, parsed by the same clap definitions and run by the
//! same command functions as the binary (in this process); the only thing the demo does itself
//! is the courier's job: moving packet files from one site's outgoing bay to the incoming bay
//! of the replica each one is addressed to.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use clap::{Args, Parser};

use super::Cli;
use crate::backend::BackendKind;
use crate::packets;
use crate::site::{Ctx, SiteConfig};
use crate::util::Exit;

/// `msite demo`.
#[derive(Debug, Args)]
#[command(
    long_about = "Runs a narrated demonstration in a temporary directory: a family of three sites \
in a hub topology (boston the hub, sanfran and bangalore its spokes) working in parallel on \
branches each one masters, exchanging packets through the hub; then sanfran loses its storage, \
is restored from an earlier backup with `msite restore`, runs `msite restorereplica`, recovers \
what it lost from its siblings through the hub, and the family converges to one digest. Every \
step is printed as the msite command line it runs.",
    after_help = "Example:\n  msite demo\n  msite demo --backend rocks\n  msite demo --keep /tmp/msite-demo && msite -C /tmp/msite-demo/sanfran lsreplica --long"
)]
pub struct Demo {
    /// The storage engine of the three sites (default: the first one of this build).
    #[arg(long, value_name = "B")]
    pub backend: Option<BackendKind>,
    /// Keep the sites in DIR (which must not exist or be empty) to explore them afterwards.
    #[arg(long, value_name = "DIR")]
    pub keep: Option<PathBuf>,
}

const SITES: [&str; 3] = ["boston", "sanfran", "bangalore"];
const HUB: &str = "boston";
const SPOKES: [&str; 2] = ["sanfran", "bangalore"];

struct Script {
    root: PathBuf,
    narrator: Ctx,
    backend: Option<BackendKind>,
    step: usize,
}

impl Script {
    fn say(&self, text: impl AsRef<str>) {
        self.narrator.say(text);
    }

    fn section(&mut self, title: &str) {
        self.step += 1;
        self.say("");
        self.say(format!("== {}. {title}", self.step));
    }

    fn parse(&self, args: &[&str]) -> anyhow::Result<Cli> {
        self.say(format!("$ msite {}", shell_words(args)));
        Cli::try_parse_from(std::iter::once("msite").chain(args.iter().copied())).map_err(|e| {
            anyhow::anyhow!(
                "the demo built a bad command line `msite {}`: {e}",
                args.join(" ")
            )
        })
    }

    fn ctx_for(&self, cli: &Cli) -> Ctx {
        let mut ctx = self
            .narrator
            .at(cli.dir.clone().unwrap_or_else(|| PathBuf::from(".")));
        ctx.indent = "    ".into();
        ctx.progress = false;
        ctx
    }

    /// Runs `msite ARGS…` in this process, printing the command line and its output.
    fn msite(&self, args: &[&str]) -> anyhow::Result<()> {
        let cli = self.parse(args)?;
        let ctx = self.ctx_for(&cli);
        cli.command.run(&ctx)
    }

    /// Runs a command that is expected to fail, and shows its error as the binary prints it.
    fn msite_fails(&self, args: &[&str]) -> anyhow::Result<()> {
        let cli = self.parse(args)?;
        let ctx = self.ctx_for(&cli);
        match cli.command.run(&ctx) {
            Ok(()) => bail!(
                "`msite {}` was expected to be refused, and was not",
                args.join(" ")
            ),
            Err(e) => {
                ctx.say(format!("msite: error: {}", crate::error_text(&e)));
                Ok(())
            }
        }
    }

    /// Imports the incoming bay of `site`; packets that must wait are normal here.
    fn import(&self, site: &str) -> anyhow::Result<()> {
        let args = ["-C", site, "syncreplica", "import"];
        let cli = self.parse(&args)?;
        let ctx = self.ctx_for(&cli);
        match cli.command.run(&ctx) {
            Ok(()) => Ok(()),
            Err(e) => match e.downcast_ref::<Exit>() {
                Some(x) if x.code == crate::EXIT_WAITING => {
                    ctx.say("(exit code 3: a packet waits for another one; it is retried on the next import)");
                    Ok(())
                }
                _ => Err(e),
            },
        }
    }

    fn backend_args(&self) -> Vec<String> {
        match self.backend {
            Some(b) => vec!["--backend".into(), b.name().into()],
            None => Vec::new(),
        }
    }

    /// The courier: moves every packet in the outgoing bays to the incoming bay of the replica
    /// it is addressed to. Returns how many packets moved.
    fn courier(&self) -> anyhow::Result<usize> {
        let mut by_id = Vec::new();
        for s in SITES {
            if let Ok(cfg) = SiteConfig::read(&self.root.join(s)) {
                by_id.push((cfg.replica_id, s));
            }
        }
        let mut moved = 0;
        for from in SITES {
            let outgoing = self.root.join(from).join("bays").join("outgoing");
            let files = packets::bay_files(&outgoing)?;
            let (groups, bad) = packets::group_files(&files);
            if let Some((p, why)) = bad.first() {
                bail!("the courier cannot read {}: {why}", p.display());
            }
            for g in groups {
                for t in &g.header.targets {
                    let Some((_, to)) = by_id.iter().find(|(id, _)| *id == t.replica.to_hex())
                    else {
                        continue;
                    };
                    let incoming = PathBuf::from(to).join("bays").join("incoming");
                    for f in g.paths() {
                        let name = f.file_name().map(PathBuf::from).unwrap_or_default();
                        std::fs::copy(&f, self.root.join(&incoming).join(&name)).with_context(
                            || format!("the courier cannot deliver {}", f.display()),
                        )?;
                        self.say(format!(
                            "(courier) {from}/bays/outgoing/{} -> {}/",
                            name.display(),
                            incoming.display()
                        ));
                    }
                    moved += 1;
                }
                for f in g.paths() {
                    std::fs::remove_file(&f)
                        .with_context(|| format!("the courier cannot remove {}", f.display()))?;
                }
            }
        }
        Ok(moved)
    }

    /// One round through the hub: the spokes send to the hub, the hub imports and sends to
    /// both spokes, the spokes import. Returns how many packets travelled.
    fn sync_round(&self) -> anyhow::Result<usize> {
        let mut moved = 0;
        for s in SPOKES {
            self.msite(&["-C", s, "syncreplica", "export", "--to", HUB])?;
        }
        moved += self.courier()?;
        self.import(HUB)?;
        self.msite(&["-C", HUB, "syncreplica", "export", "--all"])?;
        moved += self.courier()?;
        for s in SPOKES {
            self.import(s)?;
        }
        Ok(moved)
    }

    fn write_file(&self, rel: &str, content: &str) -> anyhow::Result<()> {
        let p = self.root.join(rel);
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
        }
        std::fs::write(&p, content).with_context(|| format!("cannot write {}", p.display()))
    }

    fn make_tree(&self) -> anyhow::Result<usize> {
        let mut n = 0;
        for i in 1..=6 {
            self.write_file(
                &format!("src-tree/src/module{i}.c"),
                &format!("/* module {i} */\n#include \"module{i}.h\"\n\nint module{i}_run(int x) {{\n    return x * {i};\n}}\n"),
            )?;
            self.write_file(
                &format!("src-tree/include/module{i}.h"),
                &format!("int module{i}_run(int x);\n"),
            )?;
            n += 2;
        }
        self.write_file(
            "src-tree/src/main.c",
            "#include <stdio.h>\n\nint main(void) {\n    printf(\"hello from msite\\n\");\n    return 0;\n}\n",
        )?;
        self.write_file(
            "src-tree/Makefile",
            "all:\n\tcc -Iinclude src/*.c -o demo\n",
        )?;
        self.write_file(
            "src-tree/docs/README.md",
            "# The demo project\n\nReplicated by msite.\n",
        )?;
        Ok(n + 3)
    }

    fn unlocked(&self, site: &str) -> anyhow::Result<bool> {
        let s = crate::site::open_site(&self.root.join(site), self.narrator.env())?;
        let st = s.replica.status()?;
        Ok(!st.restored && st.rolled_back.is_none() && st.recovering.is_none())
    }
}

/// The command line as one would type it in a shell.
fn shell_words(args: &[&str]) -> String {
    args.iter()
        .map(|a| {
            if !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=@:+,".contains(c))
            {
                a.to_string()
            } else {
                format!("'{}'", a.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

struct Cwd(PathBuf);

impl Drop for Cwd {
    fn drop(&mut self) {
        let _ = std::env::set_current_dir(&self.0);
    }
}

impl Demo {
    /// Runs the command.
    pub fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        if let Some(b) = self.backend {
            b.ensure_compiled()?;
        }
        // A temporary root lives until the demo has run.
        let (root, _temp) = self.root()?;
        let previous = std::env::current_dir().context("cannot read the current directory")?;
        std::env::set_current_dir(&root)
            .with_context(|| format!("cannot enter {}", root.display()))?;
        let _back = Cwd(previous);
        let mut narrator = ctx.at(".");
        narrator.progress = false;
        let mut s = Script {
            root: root.clone(),
            narrator,
            backend: self.backend,
            step: 0,
        };
        run_script(&mut s)?;
        if self.keep.is_some() {
            say_kept(&s, &root);
        }
        Ok(())
    }

    /// The directory the demo's sites go in: --keep's, which must be new or empty, or a new
    /// temporary one (returned too, as it is removed when dropped).
    fn root(&self) -> anyhow::Result<(PathBuf, Option<tempfile::TempDir>)> {
        let Some(dir) = &self.keep else {
            let temp = tempfile::Builder::new()
                .prefix("msite-demo-")
                .tempdir()
                .context("cannot make a temporary directory")?;
            return Ok((temp.path().to_path_buf(), Some(temp)));
        };
        if dir.exists()
            && std::fs::read_dir(dir)
                .map(|mut d| d.next().is_some())
                .unwrap_or(true)
        {
            bail!(
                "{} is not empty; give --keep a new or empty directory",
                dir.display()
            );
        }
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let root = dir
            .canonicalize()
            .with_context(|| format!("cannot resolve {}", dir.display()))?;
        Ok((root, None))
    }
}

/// Where the kept sites are, and commands to explore them.
fn say_kept(s: &Script, root: &Path) {
    s.say("");
    s.say(format!(
        "The three sites are kept in {}. Explore them:",
        root.display()
    ));
    for (site, command) in [
        ("sanfran", "lsreplica --long"),
        ("boston", "lsepoch"),
        ("bangalore", "lshistory src/main.c"),
        ("boston", "cat src/main.c@@sanfran_dev/3"),
    ] {
        s.say(format!(
            "  msite -C {} {command}",
            root.join(site).display()
        ));
    }
}

/// The demo's story, act by act; each act leaves the family in the state the next one needs.
fn run_script(s: &mut Script) -> anyhow::Result<()> {
    let backend = s.backend_args();
    let b: Vec<&str> = backend.iter().map(String::as_str).collect();
    s.say("msite demo: three sites replicate one versioned database by exchanging packet files.");
    s.say(format!(
        "Working in {} (each site is a directory; commands run on it with -C).",
        s.root.display()
    ));
    create_family(s, &b)?;
    import_tree(s)?;
    parallel_work(s)?;
    backup_then_work(s)?;
    lose_and_restore(s)?;
    converge(s)
}

/// boston creates the family and sends a creation packet to each spoke.
fn create_family(s: &mut Script, b: &[&str]) -> anyhow::Result<()> {
    s.section(
        "A family of three sites: boston is the hub, sanfran and bangalore talk only to boston",
    );
    s.msite(
        &[
            &["init", "boston", "--family", "demo", "--replica", "boston"],
            b,
        ]
        .concat(),
    )?;
    for spoke in SPOKES {
        let out = format!("transfer/{spoke}");
        let id_file = format!("transfer/{spoke}.age");
        std::fs::create_dir_all(s.root.join("transfer"))?;
        s.msite(&["identity", "--new", &id_file])?;
        let key = new_site_key(&s.root.join(&id_file))?;
        s.msite(&[
            "-C",
            HUB,
            "mkreplica",
            "export",
            spoke,
            "--out",
            &out,
            "--no-encrypt",
            "--key",
            &key,
        ])?;
        let files = packets::bay_files(&s.root.join(&out))?;
        let Some(pkt) = files.first() else {
            bail!("mkreplica export wrote no packet into {out}")
        };
        let rel = format!(
            "{out}/{}",
            pkt.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        );
        let import = [
            "mkreplica",
            "import",
            rel.as_str(),
            spoke,
            "--identity",
            &id_file,
        ];
        s.msite(&[&import[..], b].concat())?;
    }
    s.msite(&["-C", "sanfran", "lsreplica"])
}

/// The public signing key (hex) of the identity file `msite identity --new` made at `path`.
fn new_site_key(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)?;
    let key = super::keys::signing_key_of(&text)
        .ok_or_else(|| anyhow::anyhow!("{} holds no signing key", path.display()))?;
    Ok(msite_core::ids::hex(&key.public()))
}

/// boston imports and labels a generated tree; one sync round carries it to the spokes.
fn import_tree(s: &mut Script) -> anyhow::Result<()> {
    s.section("boston imports a source tree on main, and labels it");
    let n = s.make_tree()?;
    s.say(format!("(a generated tree of {n} files in src-tree/)"));
    s.msite(&["-C", HUB, "import", "src-tree", "-m", "initial import"])?;
    s.msite(&["-C", HUB, "mklbtype", "REL1"])?;
    s.msite(&["-C", HUB, "mklabel", "REL1", "src/main.c"])?;

    s.section("Packets travel through the hub");
    s.sync_round()?;
    s.msite(&["-C", "bangalore", "ls", "src/"])
}

/// Each site checks in on the branches it masters; a check-in on another's branch is refused.
fn parallel_work(s: &mut Script) -> anyhow::Result<()> {
    s.section("Parallel work, each site on the branches it masters");
    s.write_file(
        "work/main-sanfran.c",
        "int main(void) { return 1; /* sanfran */ }\n",
    )?;
    s.write_file(
        "work/util-bangalore.c",
        "int util(void) { return 2; /* bangalore */ }\n",
    )?;
    s.write_file(
        "work/main-boston.c",
        "int main(void) { return 0; /* boston v2 */ }\n",
    )?;
    // Each spoke makes a branch type (which it then masters) and checks in on it.
    let spoke_work = [
        (
            "sanfran",
            "sanfran_dev",
            "src/main.c",
            "work/main-sanfran.c",
            "faster startup",
        ),
        (
            "bangalore",
            "bangalore_dev",
            "src/module1.c",
            "work/util-bangalore.c",
            "port to arm64",
        ),
    ];
    for (site, brtype, elem, file, comment) in spoke_work {
        s.msite(&["-C", site, "mkbrtype", brtype])?;
        let on_branch = ["--branch", brtype, "-m", comment];
        s.msite(&[&["-C", site, "checkin", elem, file][..], &on_branch].concat())?;
    }
    s.msite(&[
        "-C",
        HUB,
        "checkin",
        "src/main.c",
        "work/main-boston.c",
        "-m",
        "release prep",
    ])?;
    s.say("Only a branch's master adds versions to it: sanfran cannot check in on main, which boston masters.");
    s.msite_fails(&[
        "-C",
        "sanfran",
        "checkin",
        "src/main.c",
        "work/main-sanfran.c",
        "-m",
        "sneaky",
    ])?;
    s.sync_round()?;
    s.msite(&["-C", "bangalore", "lshistory", "src/main.c"])?;
    Ok(())
}

/// sanfran takes a backup, then makes changes the hub receives but the backup lacks.
fn backup_then_work(s: &mut Script) -> anyhow::Result<()> {
    s.section("sanfran takes a backup (with the storage engine's own online backup tool)");
    s.msite(&["-C", "sanfran", "backup", "backups/sanfran"])?;

    s.section("sanfran keeps working, and sends its work to the hub");
    for i in 2..=3 {
        let f = format!("work/main-sanfran-{i}.c");
        s.write_file(
            &f,
            &format!("int main(void) {{ return {i}; /* sanfran v{i} */ }}\n"),
        )?;
        s.msite(&[
            "-C",
            "sanfran",
            "checkin",
            "src/main.c",
            &f,
            "--branch",
            "sanfran_dev",
            "-m",
            &format!("sanfran step {i}"),
        ])?;
    }
    s.write_file("work/notes.txt", "sanfran's design notes\n")?;
    s.msite(&[
        "-C",
        "sanfran",
        "checkin",
        "docs/sanfran-notes.txt",
        "work/notes.txt",
        "-m",
        "notes",
    ])?;
    s.msite(&["-C", "sanfran", "syncreplica", "export", "--to", HUB])?;
    s.courier()?;
    s.import(HUB)?;
    Ok(())
}

/// sanfran loses its store, is restored from the backup and recovers through restorereplica.
fn lose_and_restore(s: &mut Script) -> anyhow::Result<()> {
    s.section("Disaster: sanfran loses its storage");
    s.say("$ rm -rf sanfran/store");
    std::fs::remove_dir_all(s.root.join("sanfran").join("store"))
        .context("cannot remove sanfran/store")?;
    s.msite_fails(&["-C", "sanfran", "lsreplica"])?;

    s.section(
        "sanfran is restored from its backup; the store refuses changes until restorereplica",
    );
    s.msite(&["restore", "backups/sanfran", "sanfran"])?;
    s.msite_fails(&[
        "-C",
        "sanfran",
        "checkin",
        "docs/sanfran-notes.txt",
        "work/notes.txt",
        "-m",
        "too early",
    ])?;
    s.msite(&["-C", "sanfran", "lsreplica", "--long"])?;

    s.section("restorereplica: sanfran asks its siblings for what the backup lacks");
    s.msite(&["-C", "sanfran", "restorereplica"])?;
    s.msite(&["-C", "sanfran", "lsreplica", "--long"])?;

    s.section("Recovery updates travel through the hub until sanfran is unlocked");
    let mut rounds = 0;
    while !s.unlocked("sanfran")? {
        rounds += 1;
        if rounds > 6 {
            bail!("sanfran was not unlocked after {} sync rounds; see `msite -C sanfran lsreplica --long`", rounds - 1);
        }
        s.say(format!("-- round {rounds}"));
        s.sync_round()?;
    }
    s.msite(&["-C", "sanfran", "lsreplica", "--long"])?;
    s.msite(&["-C", "sanfran", "lshistory", "src/main.c"])?;
    Ok(())
}

/// Sync rounds until nothing is left to send, then the three digests must be equal.
fn converge(s: &mut Script) -> anyhow::Result<()> {
    s.section("A final sync round, until no packet is left to send");
    let mut quiet = false;
    for round in 1..=6 {
        s.say(format!("-- round {round}"));
        if s.sync_round()? == 0 {
            quiet = true;
            break;
        }
    }
    if !quiet {
        bail!("the sites still had packets to exchange after 6 rounds");
    }

    s.section("Has the family converged?");
    let mut digests = Vec::new();
    for site in SITES {
        s.msite(&["-C", site, "digest"])?;
        digests.push(super::vob::digest_hex(&s.narrator.at(site))?);
    }
    if digests.iter().all(|d| *d == digests[0]) {
        s.say("");
        s.say(format!(
            "All three digests are equal ({}): the family has converged.",
            &digests[0][..16]
        ));
        Ok(())
    } else {
        bail!("the digests differ: the family has not converged — this is a bug, please report it")
    }
}
