//! The read-only status views of `msite serve`: `/` the status page, `/epoch` the epoch
//! matrix, `/history` the last packets, `/api/status` the status document as JSON and
//! `/metrics` in the Prometheus text format ([`crate::status`] computes them all).
//!
//! Rules kept: server-side HTML (maud) with no script at all, so the page works with
//! JavaScript off (it reloads itself every 30 s with a `<meta refresh>`); every text is
//! HTML-escaped by maud and was bounded when the document was made (packet names and reasons
//! come from disk and may be hostile); nothing here writes; the store is opened for the length
//! of one look, off the async threads, and a store busy for longer than a moment answers 503
//! (reload). No token is asked: the views show names, counts and reasons, never content.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use maud::{html, Markup, PreEscaped, DOCTYPE};

use super::Shared;
use crate::history::{self, Direction, Record};
use crate::status::{self, StatusDoc};
use crate::util;

/// How many history records `/history` shows, newest first.
pub const HISTORY_SHOWN: usize = 500;

/// Adds the status views to `r`.
pub fn routes(r: Router<Arc<Shared>>) -> Router<Arc<Shared>> {
    r.route("/", get(index))
        .route("/epoch", get(epoch))
        .route("/history", get(history_view))
        .route("/api/status", get(api))
        .route("/metrics", get(metrics))
}

/// How long a computed status document is served again: a dashboard and a scraper polling
/// together open the store at most once a second, leaving it to the worker's imports.
const FRESH: std::time::Duration = std::time::Duration::from_secs(1);

/// The status document, computed off the async threads (or the one computed less than
/// [`FRESH`] ago).
async fn doc(s: &Arc<Shared>) -> Result<StatusDoc, Response> {
    let s = s.clone();
    let res = tokio::task::spawn_blocking(move || {
        let mut cached = s.status.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, d)) = cached.as_ref().filter(|(at, _)| at.elapsed() < FRESH) {
            tracing::trace!(
                age_ms = at.elapsed().as_millis() as u64,
                "status served again"
            );
            return Ok(d.clone());
        }
        let ctx =
            crate::site::Ctx::buffered(s.paths.dir.clone()).with_lock_wait(super::DAEMON_LOCK_WAIT);
        let site = ctx.open()?;
        let d = status::collect(&site, &status::Options::now(s.routes.late_after))?;
        *cached = Some((std::time::Instant::now(), d.clone()));
        Ok(d)
    })
    .await;
    match res {
        Ok(Ok(d)) => Ok(d),
        Ok(Err(e)) => {
            let why = util::bounded_line(&crate::error_text(&e), 500);
            let text = format!("the status cannot be read now: {why}; reload in a moment\n");
            Err((StatusCode::SERVICE_UNAVAILABLE, text).into_response())
        }
        Err(e) => Err((StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response()),
    }
}

async fn index(State(s): State<Arc<Shared>>) -> Response {
    match doc(&s).await {
        Ok(d) => Html(render_status(&d)).into_response(),
        Err(r) => r,
    }
}

async fn epoch(State(s): State<Arc<Shared>>) -> Response {
    match doc(&s).await {
        Ok(d) => Html(render_epoch(&d)).into_response(),
        Err(r) => r,
    }
}

async fn api(State(s): State<Arc<Shared>>) -> Response {
    match doc(&s).await {
        Ok(d) => Json(d).into_response(),
        Err(r) => r,
    }
}

async fn metrics(State(s): State<Arc<Shared>>) -> Response {
    match doc(&s).await {
        Ok(d) => {
            let ct = "text/plain; version=0.0.4; charset=utf-8";
            ([(header::CONTENT_TYPE, ct)], status::metrics::render(&d)).into_response()
        }
        Err(r) => r,
    }
}

async fn history_view(State(s): State<Arc<Shared>>) -> Response {
    let (dir, me) = (s.paths.dir.clone(), s.me.1.clone());
    match tokio::task::spawn_blocking(move || history::read(&dir)).await {
        Ok((recs, bad)) => Html(render_history(&me, &recs, bad)).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

const STYLE: &str = "body{font-family:sans-serif;margin:1.5em;color:#222}\
table{border-collapse:collapse;margin:.5em 0 1.5em}\
th,td{border:1px solid #bbb;padding:.25em .6em;text-align:left;vertical-align:top}\
th{background:#eee}td.n{text-align:right}\
tr.late td{background:#fff3cd}tr.never td{background:#f8d7da}\
td.at_risk{background:#fff3cd}td.behind{background:#f8d7da}\
.state-normal{color:#155724}.state-locked{color:#721c24;font-weight:bold}\
nav a{margin-right:1em}small{color:#555}";

/// The frame of every view: title, navigation, the body.
fn frame(replica: &str, title: &str, body: Markup) -> String {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta http-equiv="refresh" content="30";
                title { "msite " (replica) ": " (title) }
                style { (PreEscaped(STYLE)) }
            }
            body {
                nav { a href="/" { "Status" } a href="/epoch" { "Epoch matrix" } a href="/history" { "History" } a href="/api/status" { "JSON" } a href="/metrics" { "Metrics" } }
                h1 { "msite " (replica) ": " (title) }
                (body)
            }
        }
    }
    .into_string()
}

/// The siblings' signing-key fingerprints as pinned here, for comparison out of band.
fn keys_note(d: &StatusDoc) -> Markup {
    html! {
        p #keys { small {
            "Signing keys pinned here (compare with `msite lsreplica --long` at each site): "
            @for (i, s) in d.siblings.iter().enumerate() {
                @if i > 0 { "; " }
                (s.name) " " (s.key_fingerprint.as_deref().unwrap_or("not known yet"))
            }
            "."
        } }
    }
}

/// The status page.
pub fn render_status(d: &StatusDoc) -> String {
    let body = html! {
        p #summary {
            "Replica " strong { (d.replica) } " of family " strong { (d.family) } ". "
            "Generated " (d.generated) "; a sibling is late after " (d.late_after_s) " s without a packet."
        }
        (restore_section(d))
        h2 { "Siblings" }
        (sibling_table(d))
        (keys_note(d))
        h2 { "Incoming bay" }
        p #incoming-summary { (d.incoming_total) " packet(s), " (d.waiting_total) " waiting; outgoing bay: " (d.outgoing_total) " part file(s)." }
        (incoming_table(d))
        h2 { "Refused" }
        p #refused-summary { (d.refused_total) " refused packet(s) in bays/refused." }
        (refused_table(d))
    };
    frame(&d.replica, "status", body)
}

fn restore_section(d: &StatusDoc) -> Markup {
    let r = &d.restore;
    let class = if r.locked {
        "state-locked"
    } else {
        "state-normal"
    };
    html! {
        h2 { "Restoration" }
        p #restore class=(class) {
            @match r.state.as_str() {
                "recovering" => {
                    "Recovering (incarnation " (r.incarnation.map(msite_core::incarnation_text).unwrap_or_default()) "): awaiting recovery updates from "
                    @if r.awaiting.is_empty() { "nobody" } @else { (r.awaiting.join(", ")) } "."
                }
                "rolled_back" => { "Rolled back: " (r.reason.as_deref().unwrap_or("")) ". Locked until msite restorereplica." }
                "restored" => { "Restored from a backup. Locked until msite restorereplica." }
                _ => { "Normal: not restoring, not locked." }
            }
        }
        @if !r.siblings_restoring.is_empty() {
            p #restoring-elsewhere { "Restoration in progress at: " (r.siblings_restoring.join(", ")) "." }
        }
    }
}

fn exchange_cell(x: Option<&status::Exchange>) -> Markup {
    html! {
        @match x {
            None => { "never" }
            Some(x) => { (x.time) br; (x.result) ", " (util::human_size(x.bytes)) br; small { (x.packet) } }
        }
    }
}

fn sibling_table(d: &StatusDoc) -> Markup {
    html! {
        @if d.siblings.is_empty() { p { "No siblings yet." } } @else {
            table #siblings {
                tr { th { "Sibling" } th { "Heard" } th { "Last in" } th { "Last out" } th { "They lack" } th { "We lack" } th { "Waiting" } th { "Refused" } th { "Restore" } th { "Retention" } }
                @for s in &d.siblings {
                    tr class=(s.heard) {
                        td { (s.name) }
                        td { (s.heard) }
                        td { (exchange_cell(s.last_in.as_ref())) }
                        td { (exchange_cell(s.last_out.as_ref())) }
                        td.n { (s.they_lack) }
                        td.n { (s.we_lack) }
                        td.n { (s.waiting) }
                        td.n { (s.refused) }
                        td { @if s.awaited { "awaited" } @else { "-" } }
                        td class=(s.retention.state) {
                            (s.retention.state)
                            @if let Some(note) = &s.retention.note { br; small { (note) } }
                        }
                    }
                }
            }
        }
    }
}

fn incoming_table(d: &StatusDoc) -> Markup {
    html! {
        @if !d.incoming.is_empty() {
            table #incoming {
                tr { th { "Packet" } th { "From" } th { "Size" } th { "State" } th { "Needs" } }
                @for p in &d.incoming {
                    tr { td { (p.packet) } td { (p.sender.as_deref().unwrap_or("?")) } td.n { (util::human_size(p.bytes)) } td { (p.verdict) } td { (p.here) } }
                }
            }
        }
    }
}

fn refused_table(d: &StatusDoc) -> Markup {
    html! {
        @if !d.refused.is_empty() {
            table #refused {
                tr { th { "Refused" } th { "File" } th { "From" } th { "Reason" } }
                @for p in &d.refused {
                    tr { td { (p.time) } td { (p.file) } td { (p.sender.as_deref().unwrap_or("?")) } td { (p.reason) } }
                }
            }
        }
    }
}

/// The epoch matrix view.
pub fn render_epoch(d: &StatusDoc) -> String {
    let body = html! {
        p { "Own row: the highest entry of each origin this replica holds (exact). Estimate rows: what this replica believes each sibling holds; exports send what is above them." }
        table #epoch {
            tr { th { "Row of" } @for o in &d.epoch.origins { th { (o) } } }
            @for r in &d.epoch.rows {
                tr { th { (r.replica) @if r.own { " (own)" } @else { " (estimate)" } } @for c in &r.cells { td.n { (c) } } }
            }
        }
    };
    frame(&d.replica, "epoch matrix", body)
}

/// The history view: the last [`HISTORY_SHOWN`] records, newest first.
pub fn render_history(replica: &str, recs: &[Record], unreadable: usize) -> String {
    let body = html! {
        p #history-summary { (recs.len()) " packet(s) recorded; the newest " (recs.len().min(HISTORY_SHOWN)) " shown, newest first."
            @if unreadable > 0 { " " (unreadable) " unreadable line(s) skipped." } }
        table #history {
            tr { th { "Time" } th { "Way" } th { "Sibling" } th { "Packet" } th { "Size" } th { "Result" } th { "Detail" } }
            @for r in recs.iter().rev().take(HISTORY_SHOWN) {
                tr {
                    td { (util::utc_time(r.at_ms)) }
                    td { @if r.dir == Direction::In { "in" } @else { "out" } }
                    td { (r.sibling.as_deref().unwrap_or("?")) }
                    td { (r.packet) }
                    td.n { (util::human_size(r.bytes)) }
                    td { (r.outcome.word()) }
                    td { (r.detail.as_deref().unwrap_or("")) }
                }
            }
        }
    };
    frame(replica, "packet history", body)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// A document whose every text is hostile markup.
    fn hostile() -> StatusDoc {
        let evil = "<script>alert(1)</script>";
        let x = json!({ "time": "t", "at_ms": 1, "packet": evil, "bytes": 1, "result": "refused", "detail": evil });
        serde_json::from_value(json!({
            "format": 1, "generated": "g", "generated_ms": 0, "family": evil, "family_id": "00",
            "replica": evil, "late_after_s": 1,
            "restore": { "state": "rolled_back", "locked": true, "reason": evil, "incarnation": null,
                         "awaiting": [evil], "siblings_restoring": [evil] },
            "siblings": [{ "name": evil, "id": "00", "last_in": x, "last_out": x, "last_ok": null,
                "last_ok_ms": null, "they_lack": 0, "we_lack": 0, "waiting": 0, "refused": 0,
                "awaited": true, "heard": "late", "key_fingerprint": null,
                "retention": { "state": "behind", "note": evil } }],
            "incoming": [{ "packet": evil, "sender": evil, "bytes": 0, "verdict": "waiting", "here": evil }],
            "incoming_total": 1, "waiting_total": 1,
            "refused": [{ "file": evil, "sender": evil, "reason": evil, "time": "t" }],
            "refused_total": 1, "outgoing_total": 0,
            "epoch": { "origins": [evil], "rows": [{ "replica": evil, "own": true, "cells": [1] }] },
            "history_unreadable": 0
        }))
        .expect("a status document")
    }

    #[test]
    fn every_text_from_disk_is_escaped() {
        let d = hostile();
        let rec = Record::now(
            Direction::In,
            Some("<b>x</b>"),
            "<script>",
            1,
            history::Outcome::Refused,
            Some("<i>"),
        );
        for page in [
            render_status(&d),
            render_epoch(&d),
            render_history("<r>", &[rec], 0),
        ] {
            assert!(!page.contains("<script>") && !page.contains("<b>") && !page.contains("<i>"));
            assert!(page.contains("&lt;script&gt;"), "{page}");
        }
        let page = render_status(&d);
        assert!(page.contains("Rolled back: &lt;script&gt;"), "{page}");
        assert!(page.contains("<tr class=\"late\">"), "{page}");
    }
}
