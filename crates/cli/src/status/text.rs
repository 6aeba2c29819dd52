//! The status document as lines for the terminal (`msite status`): the replica and its
//! restoration state, a table of siblings, then the packets that wait and those refused.
//! Every name and reason passes through [`util::esc`] (the document's packet texts are escaped
//! already; replica names are escaped here).

use super::{Exchange, StatusDoc};
use crate::util;

/// How many waiting or refused packets the terminal summary lists (the page lists more).
const SHOWN: usize = 10;

/// The summary, one line per element.
pub fn lines(doc: &StatusDoc) -> Vec<String> {
    let mut out = vec![header(doc)];
    out.extend(siblings(doc));
    for s in &doc.siblings {
        if let Some(note) = &s.retention.note {
            out.push(format!("Retention: {note}."));
        }
    }
    if !doc.retired.is_empty() {
        let names: Vec<String> = doc.retired.iter().map(|n| util::esc(n)).collect();
        out.push(format!(
            "Retired (msite rmreplica; their packets are refused): {}.",
            names.join(", ")
        ));
    }
    for d in &doc.mastership_denied {
        out.push(format!(
            "Mastership of {} was refused by {} at {} (its policy is deny); ask its operator.",
            d.object,
            util::esc(&d.by),
            d.time
        ));
    }
    out.push(format!(
        "Incoming bay: {}, {} waiting; outgoing bay: {}; refused bay: {}.",
        util::count(doc.incoming_total as u64, "packet", "packets"),
        doc.waiting_total,
        util::count(doc.outgoing_total as u64, "part file", "part files"),
        util::count(doc.refused_total as u64, "packet", "packets"),
    ));
    for p in doc.incoming.iter().filter(|p| p.waits()).take(SHOWN) {
        let from = p.sender.as_deref().map(util::esc).unwrap_or("?".into());
        out.push(format!("  waiting: {} from {from}: {}", p.packet, p.here));
    }
    for p in doc.refused.iter().take(SHOWN) {
        let from = p.sender.as_deref().map(util::esc).unwrap_or("?".into());
        out.push(format!(
            "  refused {}: {} from {from}: {}",
            p.time, p.file, p.reason
        ));
    }
    if doc.history_unreadable > 0 {
        out.push(format!(
            "warning: {} of the packet history cannot be read and were skipped",
            util::count(doc.history_unreadable as u64, "line", "lines")
        ));
    }
    out
}

/// The replica, its family and its restoration state.
fn header(doc: &StatusDoc) -> String {
    let r = &doc.restore;
    let state = match r.state.as_str() {
        "recovering" => format!(
            "recovering (incarnation {}), awaiting recovery updates from {}",
            r.incarnation
                .map(msite_core::incarnation_text)
                .unwrap_or_default(),
            if r.awaiting.is_empty() {
                "nobody".to_string()
            } else {
                util::esc(&r.awaiting.join(", "))
            }
        ),
        "rolled_back" => format!(
            "rolled back ({}); locked until `msite restorereplica`",
            r.reason.as_deref().unwrap_or("")
        ),
        "restored" => "restored from a backup; locked until `msite restorereplica`".into(),
        _ => "normal".into(),
    };
    let mut line = format!(
        "Replica {} of family {}: {state}.",
        util::esc(&doc.replica),
        util::esc(&doc.family)
    );
    if !r.siblings_restoring.is_empty() {
        line.push_str(&format!(
            " Restoring elsewhere: {}.",
            util::esc(&r.siblings_restoring.join(", "))
        ));
    }
    line
}

/// A table of siblings: last in, last out, entries behind both ways, waiting, refused, heard.
fn siblings(doc: &StatusDoc) -> Vec<String> {
    if doc.siblings.is_empty() {
        return vec!["No siblings yet.".into()];
    }
    let w = doc
        .siblings
        .iter()
        .map(|s| util::esc(&s.name).chars().count())
        .max()
        .unwrap_or(7)
        .max(7);
    let mut out = vec![format!(
        "{:w$}  {:34}  {:34}  {:>9}  {:>7}  {:>7}  {:>7}  heard",
        "sibling", "last in", "last out", "they lack", "we lack", "waiting", "refused"
    )];
    for s in &doc.siblings {
        let heard = match (s.heard.as_str(), s.awaited) {
            (h, true) => format!("{h}, awaited"),
            (h, false) => h.to_string(),
        };
        out.push(format!(
            "{:w$}  {:34}  {:34}  {:>9}  {:>7}  {:>7}  {:>7}  {heard}",
            util::esc(&s.name),
            exchange(s.last_in.as_ref()),
            exchange(s.last_out.as_ref()),
            s.they_lack,
            s.we_lack,
            s.waiting,
            s.refused,
        ));
    }
    out
}

/// `2026-12-03T01:02:03Z applied 1.2 KiB`, or `-`.
pub fn exchange(x: Option<&Exchange>) -> String {
    match x {
        None => "-".into(),
        Some(x) => format!("{} {} {}", x.time, x.result, util::human_size(x.bytes)),
    }
}
