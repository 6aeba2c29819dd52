//! The local changes of the versioned object base, each one an entry of the own oplog:
//! branch and label types, elements, check-ins (one file or a whole tree), labels and name
//! removal; and reading a version's content back.

use std::path::Path;

use crate::content::{self, Source, Staged};
use crate::error::{CoreError, Result};
use crate::ids::{Hash, ObjId};
use crate::model::{ObjectRef, Op};
use crate::store::{ReadView, Store};
use crate::txn::Txn;
use crate::vob::{NameKind, View};

use super::names::{check_text, live_element_by_path, normalize_path, txn_resolve, validate_name};
use super::{Appender, Replica, VersionSel};

/// The result of [`Replica::import_tree`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TreeImport {
    /// Elements created.
    pub new_elements: u64,
    /// Versions checked in.
    pub new_versions: u64,
    /// Files whose content was unchanged.
    pub unchanged: u64,
}

/// The branch type of a check-in, resolved once per transaction (a check-in makes no
/// branch types, so every file of one `import_tree` shares it), with its name for messages.
pub(crate) struct BrType<'n> {
    id: ObjId,
    name: &'n str,
}

impl<'n> BrType<'n> {
    fn resolve<S: Store>(txn: &Txn<'_, S>, name: &'n str) -> Result<Self> {
        let id = txn_resolve(txn, NameKind::BrType, name)?;
        Ok(BrType { id, name })
    }
}

impl<S: Store> Replica<S> {
    /// Creates a branch type mastered here.
    pub fn mkbrtype(&self, name: &str) -> Result<ObjId> {
        self.check_writable()?;
        validate_name("branch type", name)?;
        if !self.view().named(NameKind::BrType, name)?.is_empty() {
            return Err(CoreError::Exists(format!("brtype:{name}")));
        }
        self.local_change(|r, t, ap| {
            Ok(r.append_local(t, ap, Op::MkBrType { name: name.into() })?
                .id())
        })
    }

    /// Creates a label type mastered here.
    pub fn mklbtype(&self, name: &str) -> Result<ObjId> {
        self.check_writable()?;
        validate_name("label type", name)?;
        if !self.view().named(NameKind::LbType, name)?.is_empty() {
            return Err(CoreError::Exists(format!("lbtype:{name}")));
        }
        self.local_change(|r, t, ap| {
            Ok(r.append_local(t, ap, Op::MkLbType { name: name.into() })?
                .id())
        })
    }

    fn main_brtype(&self) -> Result<ObjId> {
        self.view().resolve(NameKind::BrType, "main")
    }

    /// Creates an element with a `main` branch.
    pub fn mkelem(&self, path: &str) -> Result<ObjId> {
        self.check_writable()?;
        let path = normalize_path(path)?;
        if self.view().element_by_path(&path).is_ok() {
            return Err(CoreError::Exists(format!("elem:{path}")));
        }
        let main = self.main_brtype()?;
        self.local_change(|r, t, ap| {
            Ok(r.append_local(
                t,
                ap,
                Op::MkElem {
                    path: path.clone(),
                    main,
                },
            )?
            .id())
        })
    }

    /// Checks in `content` as a new version of `path` on branch type `brtype` (creating the
    /// element and the branch when needed). Returns the element and the version number.
    pub fn checkin(
        &self,
        path: &str,
        brtype: &str,
        content: &[u8],
        author: &str,
        comment: &str,
    ) -> Result<(ObjId, u64)> {
        self.checkin_from(path, brtype, Source::Bytes(content), author, comment)
    }

    /// Checks in the content of `src` like [`Replica::checkin`], streaming it: memory stays
    /// bounded whatever its size, and content over the site's limit is refused after reading
    /// no more than the limit.
    pub fn checkin_from(
        &self,
        path: &str,
        brtype: &str,
        src: Source<'_>,
        author: &str,
        comment: &str,
    ) -> Result<(ObjId, u64)> {
        let path = normalize_path(path)?;
        check_text(author, comment)?;
        self.check_writable()?;
        let what = match src {
            Source::Bytes(_) => format!("the content for {path}"),
            Source::File(f) => f.display().to_string(),
        };
        let staged = content::stage(&self.store, src, &what, self.max_version_bytes()?)?;
        let hash = staged.hash;
        let out = self.local_change(|r, t, ap| {
            let brtype = BrType::resolve(t, brtype)?;
            r.checkin_in(t, ap, &path, &brtype, staged, author, comment, false)
        });
        if out.is_err() {
            // Best effort: leftover chunks are invisible, this only frees their space.
            let _ = content::discard_staged(&self.store, &hash);
        }
        out.map(|(e, v, _)| (e, v))
    }

    /// Inside a transaction: check in one file. With `only_if_changed`, no version is made
    /// when the branch's latest version already has this content. Returns (element, version,
    /// what happened: 0 unchanged, 1 new version, 2 new element).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn checkin_in(
        &self,
        txn: &mut Txn<'_, S>,
        ap: &mut Appender,
        path: &str,
        brtype: &BrType<'_>,
        staged: Staged,
        author: &str,
        comment: &str,
        only_if_changed: bool,
    ) -> Result<(ObjId, u64, u8)> {
        let (brtype_name, brtype) = (brtype.name, brtype.id);
        let (elem, created) = self.element_for_checkin(txn, ap, path)?;
        let latest = self.latest_on_own_branch(txn, &elem, &brtype, path, brtype_name)?;
        let (hash, size) = (staged.hash, staged.size);
        if only_if_changed && latest > 0 {
            let held = View::new(&*txn).version(&elem, &brtype, latest)?;
            if held.is_some_and(|v| v.content == hash) {
                return Ok((elem, latest, 0));
            }
        }
        staged.put_head(txn)?;
        let version = latest + 1;
        self.append_local(
            txn,
            ap,
            Op::Checkin {
                elem,
                brtype,
                version,
                content: hash,
                size,
                author: author.into(),
                comment: comment.into(),
            },
        )?;
        Ok((elem, version, if created { 2 } else { 1 }))
    }

    /// The element at `path`, made (an `MkElem` entry) when there is none; whether it was made.
    fn element_for_checkin(
        &self,
        txn: &mut Txn<'_, S>,
        ap: &mut Appender,
        path: &str,
    ) -> Result<(ObjId, bool)> {
        if let Some(id) = live_element_by_path(&*txn, path)? {
            return Ok((id, false));
        }
        let main = txn_resolve(txn, NameKind::BrType, "main")?;
        let op = Op::MkElem {
            path: path.into(),
            main,
        };
        Ok((self.append_local(txn, ap, op)?.id(), true))
    }

    /// The latest version on the branch `brtype` of `elem` (0: the branch has none yet),
    /// refused unless this replica masters the branch or, for a branch not yet started, its
    /// branch type.
    fn latest_on_own_branch(
        &self,
        txn: &Txn<'_, S>,
        elem: &ObjId,
        brtype: &ObjId,
        path: &str,
        brtype_name: &str,
    ) -> Result<u64> {
        let view = View::new(txn);
        let (master, object, latest) = match view.branch(elem, brtype)? {
            Some(b) => (b.master, format!("branch {path}@@{brtype_name}"), b.latest),
            None => {
                let t = view
                    .type_obj(NameKind::BrType, brtype)?
                    .ok_or_else(|| CoreError::NotFound(format!("brtype:{brtype_name}")))?;
                let object = format!("brtype:{brtype_name} (needed to start a branch on {path})");
                (t.master, object, 0)
            }
        };
        if master != self.me {
            return Err(CoreError::NotMaster {
                object,
                master: self.replica_name(&master),
                me: self.name(),
            });
        }
        Ok(latest)
    }

    /// Checks in a whole directory tree in one transaction: new elements for new files, new
    /// versions where content changed.
    pub fn import_tree(
        &self,
        dir: &Path,
        brtype: &str,
        author: &str,
        comment: &str,
        mut progress: impl FnMut(u64),
    ) -> Result<TreeImport> {
        check_text(author, comment)?;
        let files = walk(dir)?;
        let limit = self.max_version_bytes()?;
        self.local_change(|r, t, ap| {
            let mut out = TreeImport::default();
            if files.is_empty() {
                return Ok(out);
            }
            let brtype = BrType::resolve(t, brtype)?;
            // The state before this import, read in one read transaction of the store: a file
            // it already holds as the latest version is skipped without the transaction's
            // lookups (which begin and end a read of the store each).
            let before = r.store.snapshot()?;
            for (i, (rel, abs)) in files.iter().enumerate() {
                let what = abs.display().to_string();
                let staged = content::stage(&r.store, Source::File(abs), &what, limit)?;
                if r.holds_as_latest(&before, rel, &brtype.id, &staged.hash)? {
                    out.unchanged += 1;
                    progress(i as u64 + 1);
                    continue;
                }
                match r
                    .checkin_in(t, ap, rel, &brtype, staged, author, comment, true)?
                    .2
                {
                    0 => out.unchanged += 1,
                    1 => out.new_versions += 1,
                    _ => {
                        out.new_elements += 1;
                        out.new_versions += 1;
                    }
                }
                progress(i as u64 + 1);
            }
            Ok(out)
        })
    }

    /// Whether `r` holds `hash` as the latest version of the live element at `path` on its
    /// branch `brtype`, a branch this replica masters: a check-in of `hash` there would change
    /// nothing. `false` sends the file through [`Replica::checkin_in`], which decides (and
    /// refuses where this replica is not the master).
    ///
    /// Sound inside a tree import from a view taken before it: the import changes a path's
    /// element and branch only when it checks that path in, and it checks each path in once.
    fn holds_as_latest<R: ReadView + ?Sized>(
        &self,
        r: &R,
        path: &str,
        brtype: &ObjId,
        hash: &Hash,
    ) -> Result<bool> {
        let Some(elem) = live_element_by_path(r, path)? else {
            return Ok(false);
        };
        let view = View::new(r);
        let Some(branch) = view.branch(&elem, brtype)? else {
            return Ok(false);
        };
        if branch.master != self.me || branch.latest == 0 {
            return Ok(false);
        }
        let latest = view.version(&elem, brtype, branch.latest)?;
        Ok(latest.is_some_and(|v| v.content == *hash))
    }

    /// Writes the content of a version to `out`, chunk by chunk; returns its size.
    pub fn cat_to(&self, sel: &VersionSel, out: &mut dyn std::io::Write) -> Result<u64> {
        let (e, b, n) = self.resolve_version(sel)?;
        let snap = self.store.snapshot()?;
        let v = View::new(&snap);
        let ver = v
            .version(&e, &b, n)?
            .ok_or_else(|| CoreError::NotFound("version".into()))?;
        let mut rd = v.blob_reader(&ver.content)?.ok_or_else(|| {
            CoreError::Codec(crate::codec::CodecError {
                what: "version content missing from the store",
            })
        })?;
        let mut written = 0u64;
        while let Some(chunk) = rd.next_chunk()? {
            out.write_all(&chunk)
                .map_err(|e| CoreError::io("writing the content", e))?;
            written += chunk.len() as u64;
        }
        Ok(written)
    }

    /// The content of a version.
    pub fn cat(&self, sel: &VersionSel) -> Result<Vec<u8>> {
        let (e, b, n) = self.resolve_version(sel)?;
        let v = self.view();
        let ver = v
            .version(&e, &b, n)?
            .ok_or_else(|| CoreError::NotFound("version".into()))?;
        v.blob(&ver.content)?.ok_or_else(|| {
            CoreError::Codec(crate::codec::CodecError {
                what: "version content missing from the store",
            })
        })
    }

    /// Attaches (or moves) a label of type `lbtype` to a version.
    pub fn mklabel(&self, lbtype: &str, sel: &VersionSel) -> Result<()> {
        self.check_writable()?;
        let lb = self.view().resolve(NameKind::LbType, lbtype)?;
        self.require_master(&ObjectRef::LbType(lb), &format!("lbtype:{lbtype}"))?;
        let (elem, brtype, version) = self.resolve_version(sel)?;
        self.local_change(|r, t, ap| {
            r.append_local(
                t,
                ap,
                Op::MkLabel {
                    lbtype: lb,
                    elem,
                    brtype,
                    version,
                },
            )?;
            Ok(())
        })
    }

    /// Removes a label from an element.
    pub fn rmlabel(&self, lbtype: &str, path: &str) -> Result<()> {
        self.check_writable()?;
        let v = self.view();
        let lb = v.resolve(NameKind::LbType, lbtype)?;
        self.require_master(&ObjectRef::LbType(lb), &format!("lbtype:{lbtype}"))?;
        let el = v.element_by_path(path)?;
        if !v.labels(&el.id)?.iter().any(|l| l.lbtype == lb) {
            return Err(CoreError::NotFound(format!("label {lbtype} on {path}")));
        }
        self.local_change(|r, t, ap| {
            r.append_local(
                t,
                ap,
                Op::RmLabel {
                    lbtype: lb,
                    elem: el.id,
                },
            )?;
            Ok(())
        })
    }

    /// Removes an element's name (history stays).
    pub fn rmname(&self, path: &str) -> Result<()> {
        self.check_writable()?;
        let el = self.view().element_by_path(path)?;
        self.require_master(&ObjectRef::Element(el.id), &format!("elem:{path}"))?;
        self.local_change(|r, t, ap| {
            r.append_local(t, ap, Op::RmName { elem: el.id })?;
            Ok(())
        })
    }
}

fn walk(dir: &Path) -> Result<Vec<(String, std::path::PathBuf)>> {
    let meta = std::fs::metadata(dir)
        .map_err(|e| CoreError::io(format!("reading {}", dir.display()), e))?;
    if !meta.is_dir() {
        return Err(CoreError::Invalid(format!(
            "{} is not a directory",
            dir.display()
        )));
    }
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let rd = std::fs::read_dir(&d)
            .map_err(|e| CoreError::io(format!("reading {}", d.display()), e))?;
        for ent in rd {
            let ent = ent.map_err(|e| CoreError::io(format!("reading {}", d.display()), e))?;
            let ft = ent
                .file_type()
                .map_err(|e| CoreError::io(format!("reading {}", ent.path().display()), e))?;
            let path = ent.path();
            if ft.is_dir() {
                stack.push(path);
            } else if ft.is_file() {
                let rel = path.strip_prefix(dir).map_err(|_| {
                    CoreError::Invalid(format!("{} is outside {}", path.display(), dir.display()))
                })?;
                let rel = rel.to_string_lossy().replace('\\', "/");
                out.push((normalize_path(&rel)?, path));
            }
        }
    }
    out.sort();
    Ok(out)
}
