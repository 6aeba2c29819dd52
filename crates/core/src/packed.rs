//! Small content stored compressed: whole, or as a delta against an earlier version of the
//! same element, in zstd's prefix ("patch-from") mode. No hand-made diff format: a delta is
//! one zstd frame compressed with the base content as its reference prefix.
//!
//! # Rules
//! - Only content of at most [`CHUNK_LEN`] bytes is packed, and only against a base of at most
//!   [`CHUNK_LEN`] bytes, so that reading packed content holds at most two chunk-sized buffers
//!   per level of its chain (and chunked content keeps its streaming layout untouched).
//! - A packed content lives under `hash ++ 'z'` ([`packed_key`]), beside the plain layout
//!   (`hash` → raw bytes), which stays readable and is still written when packing does not pay.
//! - A delta is tried only when the version and its base share their first or last 16 bytes
//!   (versions of one file edited in between do); otherwise the whole form stays.
//! - A delta's chain (the delta, its base, the base's base, ...) is at most [`MAX_DEPTH`]
//!   deltas long. A version whose base is that deep *restarts* the chain: it is stored as a
//!   delta against the root of its base's chain (the whole content the chain leads to, so its
//!   depth is 1) when that delta costs at most 1/[`RESTART_SHARE`] of its whole form, else
//!   whole (a new root). Roots are the only whole versions of a file edited little by little;
//!   a file that drifted far from its root gets a new one.
//! - Every base knows its dependents by a marker key `base ++ 'r' ++ dependent` (empty
//!   value), so that deleting a base first stores its dependents whole.
//! - Decoding verifies the BLAKE3 hash of what it rebuilt at every level of the chain.
//! - The state digest covers which content is present, not how it is stored: a packed key is
//!   a head like the plain key (see [`crate::content::head_of`]); marker keys are not.

use crate::error::{CoreError, Result};
use crate::ids::Hash;
use crate::store::{Keyspace, ReadView, Store};
use crate::txn::Txn;

use crate::content::CHUNK_LEN;

/// The suffix of a packed content's key.
pub const PACKED: u8 = b'z';
/// The suffix of a base's dependent-marker keys.
pub const DEPENDENT: u8 = b'r';
/// The longest chain of deltas behind one packed content.
pub const MAX_DEPTH: u8 = 10;
/// zstd level for stored content (the level packets use).
const LEVEL: i32 = 3;
/// A restarting delta (against the root of a full chain, see the module rules) is kept only
/// when it is at most 1/`RESTART_SHARE` of the version's whole form: past that, a new whole
/// root serves the restarts that follow better than deltas that keep growing with the drift.
pub const RESTART_SHARE: usize = 2;

/// Tag of a whole packed value: `0, size u32, frame`.
const WHOLE: u8 = 0;
/// Tag of a delta value: `1, size u32, base hash, depth u8, frame`.
const DELTA: u8 = 1;

/// The key of the packed form of `hash`.
pub fn packed_key(hash: &Hash) -> [u8; 33] {
    let mut k = [0u8; 33];
    k[..32].copy_from_slice(hash);
    k[32] = PACKED;
    k
}

/// The marker key saying that `dep` is stored as a delta against `base`.
pub fn dependent_key(base: &Hash, dep: &Hash) -> [u8; 65] {
    let mut k = [0u8; 65];
    k[..32].copy_from_slice(base);
    k[32] = DEPENDENT;
    k[33..].copy_from_slice(dep);
    k
}

fn corrupt(what: &'static str) -> CoreError {
    CoreError::Codec(crate::codec::CodecError { what })
}

/// A decoded packed value's header.
struct Header<'v> {
    size: usize,
    /// The base and the chain depth of a delta.
    base: Option<(Hash, u8)>,
    frame: &'v [u8],
}

fn header(v: &[u8]) -> Result<Header<'_>> {
    let bad = || corrupt("packed content header");
    let (&tag, rest) = v.split_first().ok_or_else(bad)?;
    let size = u32::from_be_bytes(
        rest.get(..4)
            .ok_or_else(bad)?
            .try_into()
            .map_err(|_| bad())?,
    );
    let size = size as usize;
    if size > CHUNK_LEN {
        return Err(bad());
    }
    let rest = &rest[4..];
    match tag {
        WHOLE => Ok(Header {
            size,
            base: None,
            frame: rest,
        }),
        DELTA if rest.len() >= 33 => {
            let base: Hash = rest[..32].try_into().map_err(|_| bad())?;
            Ok(Header {
                size,
                base: Some((base, rest[32])),
                frame: &rest[33..],
            })
        }
        _ => Err(bad()),
    }
}

/// The size of the content a packed value holds.
pub(crate) fn size_of(v: &[u8]) -> Result<u64> {
    Ok(header(v)?.size as u64)
}

/// The chain depth of a stored small content: 0 unless it is a delta.
fn depth_of(packed: Option<&[u8]>) -> Result<u8> {
    match packed {
        Some(v) => Ok(header(v)?.base.map_or(0, |(_, d)| d)),
        None => Ok(0),
    }
}

/// Rebuilds the content `hash` from its packed value `v`, reading bases from `r`; checks the
/// hash of every level. `budget` bounds the recursion whatever the stored depths say.
pub(crate) fn decode<R: ReadView + ?Sized>(
    r: &R,
    hash: &Hash,
    v: &[u8],
    budget: u8,
) -> Result<Vec<u8>> {
    let h = header(v)?;
    let base = match h.base {
        None => None,
        Some((base, _)) => {
            let Some(b) = budget.checked_sub(1) else {
                return Err(corrupt("packed content chain longer than allowed"));
            };
            Some(read_small(r, &base, b)?.ok_or_else(|| corrupt("packed content base missing"))?)
        }
    };
    let mut out = Vec::with_capacity(h.size);
    let bad = |_| corrupt("packed content frame");
    let n = match &base {
        Some(b) => {
            let mut d = zstd::zstd_safe::DCtx::create();
            d.ref_prefix(b).map_err(bad)?;
            d.decompress(&mut out, h.frame).map_err(bad)?
        }
        None => WHOLE_DCTX.with(|d| d.borrow_mut().decompress(&mut out, h.frame).map_err(bad))?,
    };
    if n != h.size || *blake3::hash(&out).as_bytes() != *hash {
        return Err(corrupt("packed content does not match its hash"));
    }
    Ok(out)
}

/// The whole small content `hash`, plain or packed, if present (`budget`: chain levels left).
fn read_small<R: ReadView + ?Sized>(r: &R, hash: &Hash, budget: u8) -> Result<Option<Vec<u8>>> {
    if let Some(v) = r.get(Keyspace::Blobs, hash)? {
        return Ok(Some(v));
    }
    match r.get(Keyspace::Blobs, &packed_key(hash))? {
        Some(v) => decode(r, hash, &v, budget).map(Some),
        None => Ok(None),
    }
}

/// The packed value of `hash`, if it is stored packed.
pub(crate) fn get_packed<R: ReadView + ?Sized>(r: &R, hash: &Hash) -> Result<Option<Vec<u8>>> {
    Ok(r.get(Keyspace::Blobs, &packed_key(hash))?)
}

/// Compresses `data` (with `prefix` as reference, for a delta) into `out` after its header.
fn compress(data: &[u8], prefix: Option<&[u8]>, mut out: Vec<u8>) -> Result<Vec<u8>> {
    let fail = |_| CoreError::Invalid("zstd could not compress a version".to_string());
    let mut frame = Vec::with_capacity(zstd::zstd_safe::compress_bound(data.len()));
    match prefix {
        // A delta's context borrows its base: one per delta.
        Some(p) => {
            let mut c = zstd::zstd_safe::CCtx::create();
            c.set_parameter(zstd::zstd_safe::CParameter::CompressionLevel(LEVEL))
                .map_err(fail)?;
            c.ref_prefix(p).map_err(fail)?;
            c.compress2(&mut frame, data).map_err(fail)?;
        }
        // Whole content goes through one context per thread: creating one per version cost
        // more than compressing a small version.
        None => WHOLE_CCTX.with(|c| {
            let mut c = c.borrow_mut();
            c.compress(&mut frame, data, LEVEL)
                .map(|_| ())
                .map_err(fail)
        })?,
    }
    out.extend_from_slice(&frame);
    Ok(out)
}

thread_local! {
    static WHOLE_DCTX: std::cell::RefCell<zstd::zstd_safe::DCtx<'static>> =
        std::cell::RefCell::new(zstd::zstd_safe::DCtx::create());
    static WHOLE_CCTX: std::cell::RefCell<zstd::zstd_safe::CCtx<'static>> =
        std::cell::RefCell::new(zstd::zstd_safe::CCtx::create());
}

/// `data` compressed whole, when that is smaller than `data`.
fn encode_whole(data: &[u8]) -> Result<Option<Vec<u8>>> {
    let mut head = vec![WHOLE];
    head.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let v = compress(data, None, head)?;
    Ok((v.len() < data.len()).then_some(v))
}

/// `data` as a delta against `base` (hash, content, depth), unless the chain is full.
fn encode_delta(data: &[u8], (bh, b, depth): (&Hash, &[u8], u8)) -> Result<Option<Vec<u8>>> {
    if depth >= MAX_DEPTH {
        return Ok(None);
    }
    let mut head = vec![DELTA];
    head.extend_from_slice(&(data.len() as u32).to_be_bytes());
    head.extend_from_slice(bh);
    head.push(depth + 1);
    compress(data, Some(b), head).map(Some)
}

/// Writes the small content `hash` (`data`, at most [`CHUNK_LEN`] bytes, its hash checked by
/// the caller) whole: compressed under its packed key where that pays, else plain under its
/// hash. Every writer of content uses this; [`pack`] may later turn it into a delta.
pub(crate) fn store_whole<S: Store>(
    txn: &mut Txn<'_, S>,
    hash: &Hash,
    data: Vec<u8>,
) -> Result<()> {
    match encode_whole(&data)? {
        Some(v) => txn.put_owned(Keyspace::Blobs, packed_key(hash).to_vec(), v),
        None => txn.put_owned(Keyspace::Blobs, hash.to_vec(), data),
    }
    Ok(())
}

/// Stores the small content `hash` as a delta against `base` (the previous version of the
/// same element) where that is smaller than its whole form, when `base` is present, small and
/// not at the end of a chain, and nothing depends on `hash` (so that no chain can loop).
/// Content already a delta, absent, or larger than a chunk is left as it is; a plain copy
/// written again beside a packed one is dropped.
pub(crate) fn pack<S: Store>(txn: &mut Txn<'_, S>, hash: &Hash, base: Option<&Hash>) -> Result<()> {
    let Some(base) = base.filter(|b| *b != hash) else {
        return Ok(());
    };
    let plain = txn.get(Keyspace::Blobs, hash)?;
    let packed = get_packed(&*txn, hash)?;
    let (data, stored) = match (plain, packed) {
        (Some(_), Some(v)) => {
            txn.delete(Keyspace::Blobs, hash);
            return if header(&v)?.base.is_some() {
                Ok(())
            } else {
                pack(txn, hash, Some(base))
            };
        }
        (None, Some(v)) if header(&v)?.base.is_none() => (decode(&*txn, hash, &v, 0)?, v.len()),
        (Some(d), None) if d.len() <= CHUNK_LEN => {
            let n = d.len();
            (d, n)
        }
        _ => return Ok(()),
    };
    let Some(depth) = depth_at(&*txn, base)? else {
        return Ok(());
    };
    let delta = if depth >= MAX_DEPTH {
        restart_delta(&*txn, hash, &data, base, stored)?
    } else {
        let v = next_delta(&*txn, &data, base, depth)?;
        v.filter(|v| v.len() < stored).map(|v| (*base, v))
    };
    // The dependents' scan (a range read) only once the delta has paid.
    if let Some((b, v)) = delta {
        if !has_dependents(txn, hash)? {
            put_delta(txn, hash, &b, v);
        }
    }
    Ok(())
}

/// `data` as a delta against `base` (at `depth`, below [`MAX_DEPTH`]), when the two are
/// [`related`].
fn next_delta<R: ReadView + ?Sized>(
    r: &R,
    data: &[u8],
    base: &Hash,
    depth: u8,
) -> Result<Option<Vec<u8>>> {
    let Some(content) = small(r, base)? else {
        return Ok(None);
    };
    if !related(data, &content) {
        return Ok(None);
    }
    encode_delta(data, (base, &content, depth))
}

/// `data` (the content `hash`, whose whole form takes `stored` bytes) as a delta against the
/// root of the full chain behind `base`, when that costs at most 1/[`RESTART_SHARE`] of
/// `stored` (module rules).
fn restart_delta<R: ReadView + ?Sized>(
    r: &R,
    hash: &Hash,
    data: &[u8],
    base: &Hash,
    stored: usize,
) -> Result<Option<(Hash, Vec<u8>)>> {
    let Some((root, content)) = chain_root(r, base)?.filter(|(root, _)| root != hash) else {
        return Ok(None);
    };
    if !related(data, &content) {
        return Ok(None);
    }
    let v = encode_delta(data, (&root, &content, 0))?;
    let pays = |v: &Vec<u8>| v.len().saturating_mul(RESTART_SHARE) <= stored;
    Ok(v.filter(pays).map(|v| (root, v)))
}

/// The root of the chain behind `base` (the whole content its deltas lead to) with its content,
/// when it is present and small.
fn chain_root<R: ReadView + ?Sized>(r: &R, base: &Hash) -> Result<Option<(Hash, Vec<u8>)>> {
    let mut at = *base;
    for _ in 0..=MAX_DEPTH {
        let Some(v) = get_packed(r, &at)? else {
            let plain = r.get(Keyspace::Blobs, &at)?;
            return Ok(plain.filter(|p| p.len() <= CHUNK_LEN).map(|p| (at, p)));
        };
        match header(&v)?.base {
            Some((b, _)) => at = b,
            None => return Ok(Some((at, decode(r, &at, &v, 0)?))),
        }
    }
    Err(corrupt("packed content chain longer than allowed"))
}

/// Writes the delta value `v` (against `base`) as the packed form of `hash`, dropping a plain
/// copy, with the marker at `base`.
fn put_delta<S: Store>(txn: &mut Txn<'_, S>, hash: &Hash, base: &Hash, v: Vec<u8>) {
    txn.put(Keyspace::Blobs, &dependent_key(base, hash), &[]);
    txn.put_owned(Keyspace::Blobs, packed_key(hash).to_vec(), v);
    txn.delete(Keyspace::Blobs, hash);
}

/// The chain depth of the small content `hash` (0 when whole), when it is present and small.
fn depth_at<R: ReadView + ?Sized>(r: &R, hash: &Hash) -> Result<Option<u8>> {
    if let Some(v) = r.get(Keyspace::Blobs, hash)? {
        return Ok((v.len() <= CHUNK_LEN).then_some(0));
    }
    match get_packed(r, hash)? {
        Some(v) => depth_of(Some(&v)).map(Some),
        None => Ok(None),
    }
}

/// Whether a delta of `data` against `base` is worth trying: the two share their first or their
/// last [`EDGE`] bytes, as versions of one file edited in between do. A delta costs a new
/// zstd context and a compression; versions that share neither end (unrelated or regenerated
/// content) are stored whole without one.
fn related(data: &[u8], base: &[u8]) -> bool {
    let n = EDGE.min(data.len()).min(base.len());
    data[..n] == base[..n] || data[data.len() - n..] == base[base.len() - n..]
}

/// Bytes compared at each end by [`related`].
const EDGE: usize = 16;

/// Whether some content is stored as a delta against `hash`.
fn has_dependents<S: Store>(txn: &Txn<'_, S>, hash: &Hash) -> Result<bool> {
    let mut prefix = hash.to_vec();
    prefix.push(DEPENDENT);
    Ok(!txn.scan_prefix(Keyspace::Blobs, &prefix)?.is_empty())
}

/// Removes the small content `hash` (plain or packed) in `txn`: its dependents are first
/// stored whole, and its own marker at its base goes with it.
pub(crate) fn delete_small<S: Store>(txn: &mut Txn<'_, S>, hash: &Hash) -> Result<()> {
    let mut prefix = hash.to_vec();
    prefix.push(DEPENDENT);
    for (k, _) in txn.scan_prefix(Keyspace::Blobs, &prefix)? {
        let dep: Hash = k[33..].try_into().map_err(|_| corrupt("dependent key"))?;
        if let Some(v) = get_packed(&*txn, &dep)? {
            if header(&v)?.base.map(|(b, _)| b) == Some(*hash) {
                let data = decode(&*txn, &dep, &v, MAX_DEPTH)?;
                txn.delete(Keyspace::Blobs, &packed_key(&dep));
                store_whole(txn, &dep, data)?;
            }
        }
        txn.delete(Keyspace::Blobs, &k);
    }
    if let Some(v) = get_packed(&*txn, hash)? {
        if let Some((b, _)) = header(&v)?.base {
            txn.delete(Keyspace::Blobs, &dependent_key(&b, hash));
        }
        txn.delete(Keyspace::Blobs, &packed_key(hash));
    }
    txn.delete(Keyspace::Blobs, hash);
    Ok(())
}

/// The base and the zstd frame of the packed value `v`, when it is a delta: what a packet can
/// carry as is to a target that holds the base (the frame decompresses with the base content as
/// its prefix, whatever depth the base has here).
pub(crate) fn delta_of(v: &[u8]) -> Result<Option<(Hash, &[u8])>> {
    let h = header(v)?;
    Ok(h.base.map(|(b, _)| (b, h.frame)))
}

/// `data` as one zstd frame with `base` as its reference prefix (a packet's delta record).
pub(crate) fn delta_frame(data: &[u8], base: &[u8]) -> Result<Vec<u8>> {
    compress(data, Some(base), Vec::new())
}

/// Whether a delta of `data` against `base` is worth trying (see [`related`]).
pub(crate) fn worth_delta(data: &[u8], base: &[u8]) -> bool {
    data.len() <= CHUNK_LEN && base.len() <= CHUNK_LEN && related(data, base)
}

/// The whole small content `hash`, plain or packed, if present and at most [`CHUNK_LEN`] bytes.
pub(crate) fn small<R: ReadView + ?Sized>(r: &R, hash: &Hash) -> Result<Option<Vec<u8>>> {
    Ok(read_small(r, hash, MAX_DEPTH)?.filter(|v| v.len() <= CHUNK_LEN))
}

/// Rebuilds content of `size` bytes from the zstd `frame` and its `base` content; `None` when
/// the frame does not decompress to `size` bytes whose BLAKE3 hash is `hash`. The output
/// buffer is `size` bytes, which the caller has bounded.
pub(crate) fn undelta(hash: &Hash, size: usize, base: &[u8], frame: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(size);
    let mut d = zstd::zstd_safe::DCtx::create();
    d.ref_prefix(base).ok()?;
    let n = d.decompress(&mut out, frame).ok()?;
    (n == size && *blake3::hash(&out).as_bytes() == *hash).then_some(out)
}

/// Stores the received small content `hash` (`data`, verified by the caller), which arrived as
/// `frame`, a delta against `base`: as that delta when `base` is here and its chain has room;
/// when the chain is full, as a restarting delta where that pays (module rules); else whole
/// (see [`store_whole`]). Content already present is left as it is.
pub(crate) fn store_received<S: Store>(
    txn: &mut Txn<'_, S>,
    hash: &Hash,
    data: &[u8],
    (base, frame): (&Hash, &[u8]),
) -> Result<()> {
    if txn.get(Keyspace::Blobs, hash)?.is_some() || get_packed(&*txn, hash)?.is_some() {
        return Ok(());
    }
    let depth = depth_at(&*txn, base)?.filter(|_| base != hash);
    let Some(depth) = depth else {
        return store_whole(txn, hash, data.to_vec());
    };
    if has_dependents(txn, hash)? {
        return store_whole(txn, hash, data.to_vec());
    }
    if depth < MAX_DEPTH {
        let mut v = vec![DELTA];
        v.extend_from_slice(&(data.len() as u32).to_be_bytes());
        v.extend_from_slice(base);
        v.push(depth + 1);
        v.extend_from_slice(frame);
        put_delta(txn, hash, base, v);
        return Ok(());
    }
    // The base ends a full chain: restart it (module rules).
    let whole = encode_whole(data)?;
    let stored = whole.as_ref().map_or(data.len(), Vec::len);
    match (restart_delta(&*txn, hash, data, base, stored)?, whole) {
        (Some((root, v)), _) => put_delta(txn, hash, &root, v),
        (None, Some(w)) => txn.put_owned(Keyspace::Blobs, packed_key(hash).to_vec(), w),
        (None, None) => txn.put(Keyspace::Blobs, hash, data),
    }
    Ok(())
}

/// Whole small contents recently rebuilt or read, by hash, up to [`BaseCache::LIMIT`] bytes
/// (the oldest go first): the versions of one file in one packet are each other's bases, so an
/// import or export that keeps them decodes each base's chain once, not once per version.
#[derive(Default)]
pub(crate) struct BaseCache {
    map: std::collections::HashMap<Hash, std::sync::Arc<Vec<u8>>>,
    order: std::collections::VecDeque<Hash>,
    bytes: usize,
}

impl BaseCache {
    /// The bytes the cache holds at most.
    pub const LIMIT: usize = 8 << 20;

    /// The small content `hash`, from the cache or read from `r` (and then kept).
    pub(crate) fn get<R: ReadView + ?Sized>(
        &mut self,
        r: &R,
        hash: &Hash,
    ) -> Result<Option<std::sync::Arc<Vec<u8>>>> {
        if let Some(v) = self.map.get(hash) {
            return Ok(Some(v.clone()));
        }
        let Some(v) = small(r, hash)? else {
            return Ok(None);
        };
        let v = std::sync::Arc::new(v);
        self.keep(*hash, v.clone());
        Ok(Some(v))
    }

    /// Keeps `data` as the content `hash`.
    pub(crate) fn keep(&mut self, hash: Hash, data: std::sync::Arc<Vec<u8>>) {
        if data.len() > CHUNK_LEN || self.map.contains_key(&hash) {
            return;
        }
        self.bytes += data.len();
        self.map.insert(hash, data);
        self.order.push_back(hash);
        while self.bytes > Self::LIMIT {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if let Some(v) = self.map.remove(&old) {
                self.bytes -= v.len();
            }
        }
    }
}
