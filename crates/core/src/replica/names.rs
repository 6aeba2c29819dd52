//! Names as the operator writes them: object selectors ([`Selector`]), version selectors
//! ([`VersionSel`]) and their resolution, the rules for names, element paths and texts (no
//! control characters), and name lookups inside a transaction that see its own writes.

use crate::codec::Dec;
use crate::error::{CoreError, Result};
use crate::ids::ObjId;
use crate::model::ObjectRef;
use crate::store::{KeyRange, Keyspace, ReadView, Store};
use crate::txn::Txn;
use crate::vob::{NameKind, View};

use super::Replica;

/// A parsed object selector (`replica:NAME`, `brtype:NAME`, `lbtype:NAME`, `elem:PATH`,
/// `branch:PATH@@BRTYPE`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selector {
    /// A replica.
    Replica(String),
    /// A branch type.
    BrType(String),
    /// A label type.
    LbType(String),
    /// An element.
    Elem(String),
    /// An element's branch.
    Branch(String, String),
}

impl Selector {
    /// Parses a selector.
    pub fn parse(s: &str) -> Result<Selector> {
        let (kind, name) = s.split_once(':').ok_or_else(|| {
            CoreError::Invalid(format!(
                "`{s}` is not a selector; write replica:NAME, brtype:NAME, lbtype:NAME, elem:PATH or branch:PATH@@BRTYPE"
            ))
        })?;
        if name.is_empty() {
            return Err(CoreError::Invalid(format!(
                "selector `{s}` has no name after the colon"
            )));
        }
        Ok(match kind {
            "replica" => Selector::Replica(name.into()),
            "brtype" => Selector::BrType(name.into()),
            "lbtype" => Selector::LbType(name.into()),
            "elem" => Selector::Elem(name.into()),
            "branch" => {
                let (p, b) = name.split_once("@@").ok_or_else(|| {
                    CoreError::Invalid(format!("branch selector `{s}` needs the form branch:PATH@@BRTYPE"))
                })?;
                Selector::Branch(p.into(), b.into())
            }
            other => {
                return Err(CoreError::Invalid(format!(
                    "unknown selector kind `{other}` in `{s}`; use replica, brtype, lbtype, elem or branch"
                )))
            }
        })
    }
}

/// A version selector `PATH[@@BRTYPE[/N]]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VersionSel {
    /// Element path.
    pub path: String,
    /// Branch type (default `main`).
    pub brtype: String,
    /// Version (default: latest).
    pub number: Option<u64>,
}

impl VersionSel {
    /// Parses `PATH`, `PATH@@BRTYPE` or `PATH@@BRTYPE/N`.
    pub fn parse(s: &str) -> Result<VersionSel> {
        match s.split_once("@@") {
            None => Ok(VersionSel {
                path: s.into(),
                brtype: "main".into(),
                number: None,
            }),
            Some((p, rest)) => {
                let (b, n) = match rest.rsplit_once('/') {
                    Some((b, n)) if n.eq_ignore_ascii_case("latest") => (b, None),
                    Some((b, n)) => {
                        let n: u64 = n.parse().map_err(|_| {
                            CoreError::Invalid(format!("`{n}` in `{s}` is not a version number"))
                        })?;
                        (b, Some(n))
                    }
                    None => (rest, None),
                };
                Ok(VersionSel {
                    path: p.into(),
                    brtype: b.into(),
                    number: n,
                })
            }
        }
    }
}

impl<S: Store> Replica<S> {
    /// Resolves a selector to the object it names.
    pub fn resolve_selector(&self, sel: &Selector) -> Result<ObjectRef> {
        let v = self.view();
        Ok(match sel {
            Selector::Replica(n) => ObjectRef::Replica(v.replica_by_name(n)?),
            Selector::BrType(n) => ObjectRef::BrType(v.resolve(NameKind::BrType, n)?),
            Selector::LbType(n) => ObjectRef::LbType(v.resolve(NameKind::LbType, n)?),
            Selector::Elem(p) => ObjectRef::Element(v.element_by_path(p)?.id),
            Selector::Branch(p, b) => {
                let el = v.element_by_path(p)?;
                let bt = v.resolve(NameKind::BrType, b)?;
                if v.branch(&el.id, &bt)?.is_none() {
                    return Err(CoreError::NotFound(format!("branch:{p}@@{b}")));
                }
                ObjectRef::Branch {
                    elem: el.id,
                    brtype: bt,
                }
            }
        })
    }

    /// Resolves a version selector to (element, branch type, version number).
    pub fn resolve_version(&self, sel: &VersionSel) -> Result<(ObjId, ObjId, u64)> {
        let v = self.view();
        let el = v.element_by_path(&sel.path)?;
        let bt = v.resolve(NameKind::BrType, &sel.brtype)?;
        let br = v
            .branch(&el.id, &bt)?
            .ok_or_else(|| CoreError::NotFound(format!("branch {}@@{}", sel.path, sel.brtype)))?;
        let n = sel.number.unwrap_or(br.latest);
        if n == 0 || v.version(&el.id, &bt, n)?.is_none() {
            return Err(CoreError::NotFound(format!(
                "version {}@@{}/{}",
                sel.path,
                sel.brtype,
                if n == 0 {
                    "(no version checked in yet)".to_string()
                } else {
                    n.to_string()
                }
            )));
        }
        Ok((el.id, bt, n))
    }
}

pub(super) fn validate_name(what: &str, name: &str) -> Result<()> {
    no_control(&format!("{what} name"), name)?;
    if name.is_empty() || name.contains("@@") {
        return Err(CoreError::Invalid(format!(
            "`{name}` is not a valid {what} name (empty, or containing `@@`)"
        )));
    }
    Ok(())
}

/// Refuses a text the operator gives (a name, a path, a comment) that holds a control
/// character other than those `allowed`: every site would print it, and a terminal obeys
/// escape sequences. The message shows the text and the character escaped.
pub(crate) fn no_control_but(what: &str, text: &str, allowed: &[char]) -> Result<()> {
    match text
        .chars()
        .find(|c| c.is_control() && !allowed.contains(c))
    {
        None => Ok(()),
        Some(c) => {
            let shown: String = text.chars().take(80).collect();
            Err(CoreError::Invalid(format!(
                "the {what} \"{}\" contains the control character {}; use printable characters only",
                shown.escape_debug(),
                c.escape_debug()
            )))
        }
    }
}

/// [`no_control_but`] with no exception: names and paths are one line of printable text.
pub(crate) fn no_control(what: &str, text: &str) -> Result<()> {
    no_control_but(what, text, &[])
}

/// Refuses an author or a comment of a check-in with control characters (a comment may span
/// lines and hold tabs).
pub(super) fn check_text(author: &str, comment: &str) -> Result<()> {
    no_control("author name", author)?;
    no_control_but("comment", comment, &['\n', '\t'])
}

/// Normalises an element path: forward slashes, no leading `./` or `/`, no empty or `..`
/// components.
pub fn normalize_path(p: &str) -> Result<String> {
    no_control("element path", p)?;
    let parts: Vec<&str> = p
        .split(['/', '\\'])
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    if parts.is_empty() || parts.iter().any(|c| *c == ".." || c.contains('\0')) || p.contains("@@")
    {
        return Err(CoreError::Invalid(format!(
            "`{p}` is not a valid element path (use a relative path like src/main.c, without `..` or `@@`)"
        )));
    }
    Ok(parts.join("/"))
}

pub(super) fn txn_resolve<S: Store>(txn: &Txn<'_, S>, kind: NameKind, name: &str) -> Result<ObjId> {
    let tag = match kind {
        NameKind::Replica => b'R',
        NameKind::BrType => b'B',
        NameKind::LbType => b'L',
        NameKind::Element => b'E',
    };
    let mut p = vec![b'N', tag];
    p.extend_from_slice(name.as_bytes());
    p.push(0);
    for (k, _) in txn.scan_prefix(Keyspace::State, &p)? {
        if let Some(id) = ObjId::from_bytes(&k[p.len()..]) {
            return Ok(id);
        }
    }
    // NAME@REPLICA falls back to the read-only resolver (no new types are made in a txn).
    View::new(txn.store()).resolve(kind, name)
}

/// The live (not removed) element named `path` in `r`, if any.
pub(super) fn live_element_by_path<R: ReadView + ?Sized>(
    r: &R,
    path: &str,
) -> Result<Option<ObjId>> {
    let mut p = vec![b'N', b'E'];
    p.extend_from_slice(path.as_bytes());
    p.push(0);
    for kv in r.scan(Keyspace::State, KeyRange::prefix(&p))? {
        let (k, _) = kv?;
        if let Some(id) = ObjId::from_bytes(&k[p.len()..]) {
            let mut ek = vec![b'E'];
            ek.extend_from_slice(&id.to_bytes());
            if let Some(v) = r.get(Keyspace::State, &ek)? {
                let mut d = Dec::new(&v, "element");
                d.str()?;
                d.rid()?;
                if !d.bool()? {
                    return Ok(Some(id));
                }
            }
        }
    }
    Ok(None)
}

#[cfg(all(test, feature = "testkit"))]
mod tests {
    use std::sync::Arc;

    use crate::testkit::MemStore;
    use crate::{CoreError, Env, Replica, SimEnv};

    /// Every local change that names something refuses control characters, naming the
    /// character as an escape; a comment may span lines.
    #[test]
    fn names_with_control_characters_are_refused_at_creation() {
        let env: Arc<dyn Env> = Arc::new(SimEnv::new(3));
        let bad = Replica::init(MemStore::new(), env.clone(), "fam", "r\u{1b}[2J");
        assert!(
            matches!(bad, Err(CoreError::Invalid(m)) if m.contains("control character \\u{1b}"))
        );
        let r = Replica::init(MemStore::new(), env, "fam", "r0").unwrap();
        let before = r.digest().unwrap();
        let errors = [
            r.mkbrtype("dev\n").unwrap_err(),
            r.mklbtype("REL\r").unwrap_err(),
            r.mkelem("src/\u{7}.c").unwrap_err(),
            r.checkin("a.c", "main", b"x", "me\u{1b}", "c").unwrap_err(),
            r.checkin("a.c", "main", b"x", "me", "c\u{1b}[31m")
                .unwrap_err(),
            r.plan_mkreplica("tok\tyo", &[7; 32]).unwrap_err(),
        ];
        for (e, shown) in errors
            .iter()
            .zip(["\\n", "\\r", "\\u{7}", "\\u{1b}", "\\u{1b}", "\\t"])
        {
            let m = e.to_string();
            assert!(
                m.contains(&format!("the control character {shown};")),
                "{m}"
            );
            assert!(!m.chars().any(char::is_control), "{m:?}");
        }
        assert_eq!(r.digest().unwrap(), before);
        r.checkin("a.c", "main", b"x", "me", "two\nlines\tand a tab")
            .unwrap();
    }
}
