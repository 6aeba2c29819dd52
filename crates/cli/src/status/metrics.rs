//! The status document in the Prometheus text exposition format (`/metrics` of `msite
//! serve`): gauges labelled with this replica's name and, per sibling, the sibling's.
//!
//! Rules kept: label values are escaped as the format says (backslash, double quote, newline)
//! and bounded; every metric family is announced once with `# HELP` and `# TYPE`; a sibling
//! never exchanged with has no "last exchange" sample (absent, not zero).

use std::fmt::Write as _;

use super::StatusDoc;

/// The longest label value written.
const MAX_LABEL: usize = 200;

/// A label value, escaped for the text format.
pub fn label(v: &str) -> String {
    let mut out = String::new();
    for c in v.chars().take(MAX_LABEL) {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// Writes one metric family's header.
fn family(out: &mut String, name: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} gauge");
}

/// The metrics of `doc`.
pub fn render(doc: &StatusDoc) -> String {
    let me = label(&doc.replica);
    let mut out = String::new();
    family(
        &mut out,
        "msite_entries_behind",
        "Entries one side holds that the other lacks, per sibling, from the epoch matrix (direction they_lack: the sibling lacks them; we_lack: this replica lacks them).",
    );
    for s in &doc.siblings {
        let sib = label(&s.name);
        for (dir, n) in [("they_lack", s.they_lack), ("we_lack", s.we_lack)] {
            let _ = writeln!(
                out,
                "msite_entries_behind{{replica=\"{me}\",sibling=\"{sib}\",direction=\"{dir}\"}} {n}"
            );
        }
    }
    packets(&mut out, doc, &me);
    exchanges(&mut out, doc, &me);
    restoration(&mut out, doc, &me);
    out
}

/// Packets waiting (per sender and in all), refused and queued to ship.
fn packets(out: &mut String, doc: &StatusDoc, me: &str) {
    family(out, "msite_packets_waiting", "Packets in the incoming bay that must wait (for another packet, their other parts, or the end of a lock), per sender.");
    for s in &doc.siblings {
        let _ = writeln!(
            out,
            "msite_packets_waiting{{replica=\"{me}\",sibling=\"{}\"}} {}",
            label(&s.name),
            s.waiting
        );
    }
    family(
        out,
        "msite_packets_waiting_total",
        "Packets in the incoming bay that must wait.",
    );
    let _ = writeln!(
        out,
        "msite_packets_waiting_total{{replica=\"{me}\"}} {}",
        doc.waiting_total
    );
    family(
        out,
        "msite_packets_refused_total",
        "Packets in the refused bay (each with a .reason file).",
    );
    let _ = writeln!(
        out,
        "msite_packets_refused_total{{replica=\"{me}\"}} {}",
        doc.refused_total
    );
    family(
        out,
        "msite_packets_outgoing",
        "Part files in the outgoing bay, waiting to be shipped.",
    );
    let _ = writeln!(
        out,
        "msite_packets_outgoing{{replica=\"{me}\"}} {}",
        doc.outgoing_total
    );
}

/// The last successful exchange and the late flag, per sibling.
fn exchanges(out: &mut String, doc: &StatusDoc, me: &str) {
    family(out, "msite_last_exchange_timestamp_seconds", "Unix time of the last successful packet exchange with the sibling (either way); absent when none is recorded.");
    for s in &doc.siblings {
        if let Some(ms) = s.last_ok_ms {
            let _ = writeln!(
                out,
                "msite_last_exchange_timestamp_seconds{{replica=\"{me}\",sibling=\"{}\"}} {}",
                label(&s.name),
                ms / 1000
            );
        }
    }
    family(
        out,
        "msite_sibling_late",
        "1 when no packet from the sibling arrived within late_after (or none ever did), else 0.",
    );
    for s in &doc.siblings {
        let late = u8::from(s.heard != "ok");
        let _ = writeln!(
            out,
            "msite_sibling_late{{replica=\"{me}\",sibling=\"{}\"}} {late}",
            label(&s.name)
        );
    }
}

/// Restoration in progress: this replica's, whom it awaits, and siblings restoring.
fn restoration(out: &mut String, doc: &StatusDoc, me: &str) {
    let r = &doc.restore;
    family(out, "msite_restoration_in_progress", "1 while this replica recovers from a restore (restorereplica ran, recovery updates awaited), else 0.");
    let _ = writeln!(
        out,
        "msite_restoration_in_progress{{replica=\"{me}\"}} {}",
        u8::from(r.state == "recovering")
    );
    family(out, "msite_locked", "1 while this replica refuses local changes and exports (restored, recovering, rolled back), else 0.");
    let _ = writeln!(
        out,
        "msite_locked{{replica=\"{me}\"}} {}",
        u8::from(r.locked)
    );
    family(
        out,
        "msite_restoration_awaiting",
        "1 for each sibling whose recovery update this replica still awaits.",
    );
    for s in &doc.siblings {
        let _ = writeln!(
            out,
            "msite_restoration_awaiting{{replica=\"{me}\",sibling=\"{}\"}} {}",
            label(&s.name),
            u8::from(s.awaited)
        );
    }
    family(out, "msite_sibling_restoring", "1 for each sibling whose restoration is in progress (its restore request held here), else 0.");
    for s in &doc.siblings {
        let on = u8::from(r.siblings_restoring.contains(&s.name));
        let _ = writeln!(
            out,
            "msite_sibling_restoring{{replica=\"{me}\",sibling=\"{}\"}} {on}",
            label(&s.name)
        );
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn label_values_are_escaped_and_bounded() {
        assert_eq!(super::label("a\"b\\c\nd\u{1b}"), "a\\\"b\\\\c\\nd");
        assert_eq!(super::label(&"x".repeat(1000)).len(), super::MAX_LABEL);
    }
}
