//! The S3 route: packets travel through an S3-compatible bucket (`object_store`). A site ships a
//! part for sibling X to `s3://BUCKET/PREFIX/X/NAME`; X's daemon lists `PREFIX/X/`, downloads
//! each object into its incoming bay, checks it exactly as a pushed part is checked
//! ([`super::receive::keep`]: envelope, every checksum, family, sender, target), and deletes the
//! object once the part is kept (or refused).
//!
//! Rules kept: an object is visible under its final name only when complete (a single PUT, or a
//! multipart upload that S3 completes atomically), so a reader never takes half a part; the
//! shipper removes its local part only after the bucket accepted the whole object, and the
//! receiver deletes the object only after the part is renamed into a bay and synced, so a crash
//! anywhere at worst carries a part twice (the import skips what it has applied); objects larger
//! than `max_packet_size` are refused without a download, and a download stops at that size
//! whatever the listing claimed; memory is bounded by one upload chunk and one download piece.
//! Each bucket has its own single-threaded async runtime, so the shipper and inbox threads stay
//! plain threads.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::Mutex;

use anyhow::{bail, Context as _};
use futures_util::StreamExt as _;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectMeta, ObjectStore as _, ObjectStoreExt as _, PutPayload, WriteMultipart};

use super::routes::S3Settings;
use super::Shared;

/// Parts up to this size go up in one PUT; larger ones as a multipart upload.
const SINGLE_PUT_MAX: u64 = 8 << 20;
/// The multipart upload's part size (S3 wants at least 5 MiB for every part but the last).
const CHUNK: usize = 8 << 20;
/// At most this many multipart chunks in flight (memory: `CHUNK` times this).
const IN_FLIGHT: usize = 2;
/// The read buffer of an upload.
const READ_PIECE: usize = 1 << 20;

/// A bucket (with its key prefix) and the runtime its requests run on.
pub struct Bucket {
    store: AmazonS3,
    prefix: ObjectPath,
    url: String,
    rt: tokio::runtime::Runtime,
    /// Objects already reported as not ours (bad names), so each is logged once.
    ignored: Mutex<BTreeSet<String>>,
}

/// What one look into the inbox did.
#[derive(Debug, Default)]
pub struct TakeReport {
    /// Parts kept in a bay: (name, bay).
    pub kept: Vec<(String, &'static str)>,
    /// Parts refused, with why (their objects are deleted: the sender's next export carries
    /// what they held).
    pub refused: Vec<(String, String)>,
    /// Why the inbox could not be read or an object not taken (all stay for the next look).
    pub errors: Vec<String>,
}

impl TakeReport {
    /// The report as lines for the terminal.
    pub fn lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (name, bay) in &self.kept {
            out.push(format!("Took {name} from the bucket into the {bay} bay."));
        }
        for (name, why) in &self.refused {
            out.push(format!("Refused {name} from the bucket: {why}."));
        }
        for e in &self.errors {
            out.push(format!("Bucket inbox: {e}; trying again next round."));
        }
        out
    }
}

impl Bucket {
    /// Opens the bucket of `url` (`s3://BUCKET/PREFIX`) with the `[s3]` settings; credentials
    /// come from the environment.
    pub fn open(url: &str, s3: &S3Settings) -> anyhow::Result<Bucket> {
        let rest = url.strip_prefix("s3://").unwrap_or(url);
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let mut b = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .with_allow_http(s3.allow_http);
        if let Some(e) = &s3.endpoint {
            b = b.with_endpoint(e);
        }
        if let Some(r) = &s3.region {
            b = b.with_region(r);
        }
        let store = b
            .build()
            .with_context(|| format!("cannot use the bucket {url}"))?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the bucket's async runtime")?;
        Ok(Bucket {
            store,
            prefix: ObjectPath::from(prefix),
            url: url.to_string(),
            rt,
            ignored: Mutex::default(),
        })
    }

    /// The object key of part `name` for replica `site`.
    fn key(&self, site: &str, name: &str) -> ObjectPath {
        self.prefix.clone().join(site).join(name)
    }

    /// Puts part file `file` for replica `site` (its first hop) into the bucket.
    pub fn put_part(&self, site: &str, file: &Path, shared: &Shared) -> anyhow::Result<()> {
        let name = super::ship::file_name(file);
        let key = self.key(site, &name);
        let size = std::fs::metadata(file)?.len();
        let f = std::fs::File::open(file)?;
        let res = if size <= SINGLE_PUT_MAX {
            self.put_small(&key, f, size)
        } else {
            self.put_multipart(&key, f, shared)
        };
        res.with_context(|| format!("cannot put {name} into {}/{site}/", self.url))
    }

    fn put_small(&self, key: &ObjectPath, mut f: std::fs::File, size: u64) -> anyhow::Result<()> {
        let mut bytes = Vec::with_capacity(size as usize);
        f.read_to_end(&mut bytes)?;
        self.rt
            .block_on(self.store.put(key, PutPayload::from(bytes)))?;
        Ok(())
    }

    /// A multipart upload, read in pieces, at most [`IN_FLIGHT`] chunks buffered; aborted
    /// (its parts dropped) on any error or when the daemon stops.
    fn put_multipart(&self, key: &ObjectPath, f: std::fs::File, s: &Shared) -> anyhow::Result<()> {
        self.rt.block_on(async {
            let upload = self.store.put_multipart(key).await?;
            let mut w = WriteMultipart::new_with_chunk_size(upload, CHUNK);
            match write_chunks(&mut w, f, s).await {
                Ok(()) => {
                    w.finish().await?;
                    Ok(())
                }
                Err(e) => {
                    let _ = w.abort().await;
                    Err(e)
                }
            }
        })
    }

    /// Takes every part addressed to this site from the inbox: each is downloaded into the
    /// incoming bay, checked and kept (or refused), and then deleted from the bucket.
    pub fn take_inbox(&self, s: &Shared) -> TakeReport {
        let mut report = TakeReport::default();
        let dir = self.prefix.clone().join(s.me.1.as_str());
        let listed: Result<Vec<ObjectMeta>, _> = self.rt.block_on(async {
            let mut out = Vec::new();
            let mut list = self.store.list(Some(&dir));
            while let Some(meta) = list.next().await {
                out.push(meta?);
            }
            Ok::<_, object_store::Error>(out)
        });
        let listed = match listed {
            Ok(l) => l,
            Err(e) => {
                report
                    .errors
                    .push(format!("cannot list {}/{}/: {e}", self.url, s.me.1));
                return report;
            }
        };
        for meta in listed {
            if s.stopping() {
                break;
            }
            self.take_one(s, &meta, &mut report);
        }
        report
    }

    fn take_one(&self, s: &Shared, meta: &ObjectMeta, report: &mut TakeReport) {
        let name = meta.location.filename().unwrap_or_default().to_string();
        if !super::receive::valid_name(&name) {
            let shown = crate::util::bounded_line(&crate::util::esc(meta.location.as_ref()), 200);
            if self.note_ignored(&shown) {
                tracing::warn!(object = %shown, "not a packet part name; left in the bucket");
            }
            return;
        }
        let taken = if super::receive::kept_size(s, &name).is_some() {
            // Kept before (a crash between keeping and deleting): only the delete is left.
            Taken::Already
        } else if meta.size > s.routes.max_packet_size {
            Taken::Refused(format!(
                "{} bytes, more than max_packet_size ({})",
                meta.size, s.routes.max_packet_size
            ))
        } else {
            self.download_and_keep(s, &meta.location, &name)
        };
        match taken {
            Taken::Kept(bay) => report.kept.push((name.clone(), bay)),
            Taken::Already => {}
            Taken::Retry(why) => {
                report.errors.push(format!("{name}: {why}"));
                return;
            }
            Taken::Refused(why) => {
                tracing::warn!(packet = %name, reason = %why, "refused a packet from the bucket");
                report.refused.push((name.clone(), why));
            }
        }
        if let Err(e) = self.rt.block_on(self.store.delete(&meta.location)) {
            report.errors.push(format!(
                "{name}: taken, but cannot delete it from the bucket: {e}"
            ));
        }
    }

    /// Whether `object` is reported for the first time.
    fn note_ignored(&self, object: &str) -> bool {
        let mut seen = self.ignored.lock().unwrap_or_else(|p| p.into_inner());
        seen.insert(object.to_string())
    }

    /// Downloads `key` to a hidden file of the incoming bay and keeps it (or refuses it).
    fn download_and_keep(&self, s: &Shared, key: &ObjectPath, name: &str) -> Taken {
        let tmp = s.paths.incoming().join(format!(".{name}.s3"));
        let taken = match self.download(key, &tmp, s.routes.max_packet_size) {
            Ok(Download::Complete) => match super::receive::keep(s, name, &tmp) {
                Ok(bay) => Taken::Kept(bay),
                Err(why) => Taken::Refused(why),
            },
            Ok(Download::TooLarge) => Taken::Refused(format!(
                "larger than max_packet_size ({} bytes)",
                s.routes.max_packet_size
            )),
            Err(e) => Taken::Retry(format!("cannot download it: {e:#}")),
        };
        let _ = std::fs::remove_file(&tmp);
        taken
    }

    /// Streams `key` into `tmp` (created afresh, synced), stopping past `max` bytes.
    fn download(&self, key: &ObjectPath, tmp: &Path, max: u64) -> anyhow::Result<Download> {
        self.rt.block_on(async {
            let file = std::fs::File::create(tmp)?;
            let mut out = std::io::BufWriter::with_capacity(READ_PIECE, file);
            let mut stream = self.store.get(key).await?.into_stream();
            let mut size = 0u64;
            while let Some(piece) = stream.next().await {
                let piece = piece?;
                size += piece.len() as u64;
                if size > max {
                    return Ok(Download::TooLarge);
                }
                out.write_all(&piece)?;
            }
            out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
            Ok(Download::Complete)
        })
    }
}

/// What became of one object of the inbox.
enum Taken {
    /// Kept in this bay (then deleted from the bucket).
    Kept(&'static str),
    /// Kept before; only deleted from the bucket now.
    Already,
    /// Refused, with why (deleted from the bucket: the sender's next export carries it).
    Refused(String),
    /// Not taken this time, with why (it stays in the bucket for the next look).
    Retry(String),
}

/// How a download ended.
enum Download {
    Complete,
    TooLarge,
}

/// Feeds `f` to the multipart writer piece by piece, waiting while [`IN_FLIGHT`] chunks are
/// being sent; gives up when the daemon stops.
async fn write_chunks(
    w: &mut WriteMultipart,
    mut f: std::fs::File,
    s: &Shared,
) -> anyhow::Result<()> {
    let mut buf = vec![0u8; READ_PIECE];
    loop {
        if s.stopping() {
            bail!("the daemon is stopping");
        }
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        w.wait_for_capacity(IN_FLIGHT).await?;
        w.write(&buf[..n]);
    }
}
