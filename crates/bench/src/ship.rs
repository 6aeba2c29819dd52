//! The shipping rows (issue 22), with real processes on loopback:
//!
//! * **Throughput**: one large packet (incompressible content) shipped by `msite`'s shipper
//!   (`serve::ship_now`, the code `export --ship` and the daemon run) to a receiving
//!   `msite serve`, which writes it to disk, syncs it and reads it through (every checksum)
//!   before it answers "kept"; beside `rsync` of the same file to a loopback `rsync --daemon`,
//!   in the same run. Both sides read a source file that was just copied (hot in the cache).
//! * **Idle cost**: a family of three `msite serve` daemons pushing to each other over HTTP,
//!   left alone once quiet: CPU time and resident memory per daemon.
//!
//! The daemons are this benchmark's own binary re-entered as `msite` (`__msite ARGS`), so no
//! second binary has to be built.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::util::{content, median, msite, timed};
use crate::workloads::Work;

const TOKEN: &str = "bench-token-0123456789abcdef";
/// The most polls of one wait, 100 ms apart.
const POLLS: usize = 6000;

/// A child process killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `msite -C site serve` in `dir`, its log in `site.log`.
fn daemon(dir: &Path, site: &str) -> Result<Proc> {
    let log = std::fs::File::create(dir.join(format!("{site}.log")))?;
    let child = Command::new(std::env::current_exe()?)
        .args(["__msite", "-C", site, "serve"])
        .current_dir(dir)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("starting msite serve")?;
    Ok(Proc(child))
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Polls `cond` every 100 ms until it holds.
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) -> Result<()> {
    for _ in 0..POLLS {
        if cond() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("gave up waiting for {what}")
}

fn packet_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "msp"))
        .collect();
    v.sort();
    v
}

/// A family `a`, `b` (and more) made at `a` in `dir`, on the default backend.
fn family(dir: &Path, names: &[&str]) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("token"), TOKEN)?;
    msite(
        dir,
        &["init", names[0], "--family", "bench", "--replica", names[0]],
    )?;
    for n in &names[1..] {
        let out = format!("transfer-{n}");
        msite(
            dir,
            &[
                "-C",
                names[0],
                "mkreplica",
                "export",
                n,
                "--out",
                &out,
                "--no-encrypt",
            ],
        )?;
        let pkt = packet_files(&dir.join(&out));
        let pkt = pkt.first().context("no creation packet")?;
        msite(dir, &["mkreplica", "import", &pkt.to_string_lossy(), n])?;
    }
    Ok(())
}

fn write_routes(
    dir: &Path,
    site: &str,
    listen: Option<u16>,
    siblings: &[(&str, String)],
) -> Result<()> {
    let listen = listen
        .map(|p| format!("listen = [\"127.0.0.1:{p}\"]\n"))
        .unwrap_or_default();
    let mut text = format!(
        "[serve]\n{listen}token_file = \"../token\"\nmax_packet_size = \"16G\"\nexport_every = \"60s\"\n"
    );
    for (name, way) in siblings {
        text.push_str(&format!("[sibling.{name}]\n{way}\n"));
    }
    std::fs::write(dir.join(site).join("routes.toml"), text)?;
    Ok(())
}

/// Writes `bytes` of incompressible content to `path`, 64 MiB at a time.
fn write_big(path: &Path, bytes: u64) -> Result<()> {
    use std::io::Write as _;
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut left = bytes;
    let mut seed = 0;
    while left > 0 {
        let n = left.min(64 << 20);
        f.write_all(&content(seed, n as usize))?;
        left -= n;
        seed += 1;
    }
    f.flush()?;
    Ok(())
}

/// The throughput row: `bytes` of content in one packet, `runs` times each way.
pub fn throughput(w: &Work, bytes: u64, runs: usize) -> Result<Value> {
    let dir = w.fresh("ship");
    family(&dir, &["a", "b"])?;
    write_big(&dir.join("big.bin"), bytes)?;
    msite(&dir, &["-C", "a", "checkin", "big.bin", "big.bin"])?;
    msite(&dir, &["-C", "a", "syncreplica", "export", "--to", "b"])?;
    let kept = dir.join("packets");
    std::fs::create_dir_all(&kept)?;
    let mut parts = Vec::new();
    for p in packet_files(&dir.join("a/bays/outgoing")) {
        let to = kept.join(p.file_name().context("a part name")?);
        std::fs::rename(&p, &to)?;
        parts.push(to);
    }
    let packet_bytes: u64 = parts
        .iter()
        .map(|p| p.metadata().map(|m| m.len()).unwrap_or(0))
        .sum();
    let port = free_port()?;
    write_routes(
        &dir,
        "a",
        None,
        &[("b", format!("url = \"http://127.0.0.1:{port}\""))],
    )?;
    std::fs::create_dir_all(dir.join("a-inbox"))?;
    write_routes(
        &dir,
        "b",
        Some(port),
        &[("a", "dir = \"../a-inbox\"".into())],
    )?;
    let receiver = daemon(&dir, "b")?;
    wait_until("the receiving daemon", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    })?;
    let msite_secs = ship_runs(&dir, &parts, runs)?;
    drop(receiver);
    let rsync_secs = rsync_runs(&dir, &parts, runs)?;
    Ok(json!({
        "packet_bytes": packet_bytes,
        "msite_secs": msite_secs,
        "rsync_secs": rsync_secs,
        "msite_mib_s": packet_bytes as f64 / msite_secs / (1 << 20) as f64,
        "rsync_mib_s": packet_bytes as f64 / rsync_secs / (1 << 20) as f64,
    }))
}

/// Ships the parts under new names `runs` times; the median wall time of one shipment.
fn ship_runs(dir: &Path, parts: &[PathBuf], runs: usize) -> Result<f64> {
    let ctx = msite_cli::Ctx::buffered(dir.join("a"));
    let incoming = dir.join("b/bays/incoming");
    let mut times = Vec::new();
    for run in 0..runs {
        wait_until("the receiver's import of the last run", || {
            packet_files(&incoming).is_empty()
        })?;
        for p in parts {
            let name = format!(
                "run{run}_{}",
                p.file_name().unwrap_or_default().to_string_lossy()
            );
            std::fs::copy(p, dir.join("a/bays/outgoing").join(name))?;
        }
        let ((), t) = timed(|| msite_cli::serve::ship_now(&ctx, None))?;
        if !packet_files(&dir.join("a/bays/outgoing")).is_empty() {
            bail!(
                "the shipment left parts in the outgoing bay: {}",
                ctx.take_output()
            );
        }
        times.push(t.as_secs_f64());
    }
    Ok(median(times))
}

/// rsync of the same files to a loopback rsync daemon, `runs` times; the median.
fn rsync_runs(dir: &Path, parts: &[PathBuf], runs: usize) -> Result<f64> {
    let dest = dir.join("rsync-dest");
    std::fs::create_dir_all(&dest)?;
    let port = free_port()?;
    let (uid, gid) = ids()?;
    let conf = dir.join("rsyncd.conf");
    std::fs::write(
        &conf,
        format!(
            "use chroot = false\nuid = {uid}\ngid = {gid}\n[bay]\npath = {}\nread only = false\n",
            dest.display()
        ),
    )?;
    let server = Proc(
        Command::new("rsync")
            .args([
                "--daemon",
                "--no-detach",
                "--address",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--config",
            ])
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting rsync --daemon (Debian package rsync)")?,
    );
    wait_until("the rsync daemon", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    })?;
    let mut times = Vec::new();
    for run in 0..runs {
        let src = dir.join(format!("rsync-src-{run}"));
        std::fs::create_dir_all(&src)?;
        for p in parts {
            std::fs::copy(p, src.join(p.file_name().unwrap_or_default()))?;
        }
        let start = Instant::now();
        let status = Command::new("rsync")
            .arg("-a")
            .arg(format!("{}/", src.display()))
            .arg(format!("rsync://127.0.0.1:{port}/bay/run{run}/"))
            .status()?;
        if !status.success() {
            bail!("rsync failed: {status}");
        }
        times.push(start.elapsed().as_secs_f64());
        let _ = std::fs::remove_dir_all(&src);
    }
    drop(server);
    Ok(median(times))
}

/// This process's real uid and gid (the rsync daemon writes as them).
fn ids() -> Result<(String, String)> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let field = |k: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .and_then(|v| v.split_whitespace().next())
            .map(str::to_string)
            .context("no uid in /proc/self/status")
    };
    Ok((field("Uid:")?, field("Gid:")?))
}

/// The idle row: three daemons pushing to each other, left alone for `secs` once quiet.
pub fn idle(w: &Work, secs: u64) -> Result<Value> {
    let dir = w.fresh("idle");
    let names = ["a", "b", "c"];
    family(&dir, &names)?;
    let ports = [free_port()?, free_port()?, free_port()?];
    for (i, site) in names.iter().enumerate() {
        let siblings: Vec<(&str, String)> = names
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(j, n)| (*n, format!("url = \"http://127.0.0.1:{}\"", ports[j])))
            .collect();
        write_routes(&dir, site, Some(ports[i]), &siblings)?;
    }
    let daemons: Vec<Proc> = names
        .iter()
        .map(|n| daemon(&dir, n))
        .collect::<Result<_>>()?;
    // Settle: the first rounds export and ship each replica's state to the others.
    std::thread::sleep(Duration::from_secs(10));
    let before: Vec<u64> = daemons
        .iter()
        .map(|d| cpu_ticks(d.0.id()))
        .collect::<Result<_>>()?;
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs(secs));
    let wall = start.elapsed().as_secs_f64();
    let after: Vec<u64> = daemons
        .iter()
        .map(|d| cpu_ticks(d.0.id()))
        .collect::<Result<_>>()?;
    let rss: Vec<u64> = daemons
        .iter()
        .map(|d| rss_kib(d.0.id()))
        .collect::<Result<_>>()?;
    let cpu_secs: f64 = after
        .iter()
        .zip(&before)
        .map(|(a, b)| (a - b) as f64 / 100.0)
        .sum();
    Ok(json!({
        "daemons": daemons.len(),
        "wall_secs": wall,
        "cpu_percent_per_daemon": 100.0 * cpu_secs / wall / daemons.len() as f64,
        "rss_mib_per_daemon": rss.iter().sum::<u64>() as f64 / 1024.0 / daemons.len() as f64,
    }))
}

/// utime + stime of process `pid`, in clock ticks (USER_HZ, 100 on Linux).
fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name may hold spaces: fields are counted after its closing parenthesis.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("no ) in stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11).context("no utime")?.parse()?;
    let stime: u64 = fields.get(12).context("no stime")?.parse()?;
    Ok(utime + stime)
}

fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmRSS")
}

/// The table rows of the two workloads.
pub fn rows(throughput: &Value, idle: Option<&Value>) -> Vec<Value> {
    let mut out = Vec::new();
    let f = |v: &Value, k: &str| v.get(k).and_then(Value::as_f64);
    if let (Some(m), Some(r)) = (f(throughput, "msite_mib_s"), f(throughput, "rsync_mib_s")) {
        let ratio = m / r;
        out.push(crate::table::row(
            &format!(
                "Shipping one {} MiB packet on loopback (ship_now to msite serve vs rsync to rsync --daemon), throughput",
                throughput["packet_bytes"].as_u64().unwrap_or(0) >> 20
            ),
            "-",
            format!("{m:.0} MiB/s"),
            format!("{r:.0} MiB/s"),
            Some(ratio),
            "≥ 0.8",
            Some(ratio >= 0.8),
        ));
    }
    if let Some(i) = idle {
        if let (Some(cpu), Some(rss)) = (f(i, "cpu_percent_per_daemon"), f(i, "rss_mib_per_daemon"))
        {
            out.push(crate::table::row(
                &format!(
                    "Idle daemon, family of 3, {:.0} s (CPU of one core, resident memory)",
                    f(i, "wall_secs").unwrap_or(0.0)
                ),
                "sqlite",
                format!("{cpu:.2} % CPU, {rss:.1} MiB"),
                "-".into(),
                None,
                "report",
                None,
            ));
        }
    }
    out
}
