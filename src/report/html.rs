//! `report.html`: one self-contained page for people (pure rendering, plus one atomic write).
//! Inline CSS and SVG only: no script, no font, no image or link that leaves the file, so it reads
//! the same offline and with scripts disabled. Per phase: share bars per pod and per cluster with
//! the fair share marked, mTLS and success rates, latency percentiles and, where the phase has one,
//! the timeline with its actions.

use std::fmt::Write as _;

use super::markup::escape;
use super::{PhaseReport, Report};
use crate::atomic_files;
use crate::measure::timeline::Timeline;

/// File name of the page, next to `report.json`.
pub const HTML_FILE: &str = "report.html";

/// Colour of the observed-share bars (`scripts/check-html-report` looks for it in the rendering).
pub const BAR_COLOUR: &str = "#1f6fd0";
/// Colour of the predicted-share mark.
const PREDICTED_COLOUR: &str = "#e08a00";
/// Colour of the fair-share mark.
const FAIR_COLOUR: &str = "#111111";
/// Colour of a timeline bucket's succeeded requests (not [`BAR_COLOUR`]: the check counts bar pixels).
const SUCCEEDED_COLOUR: &str = "#2f5a3a";
/// Colour of the action marks on a timeline.
const ACTION_COLOUR: &str = "#d0361f";
/// Width of a full (100%) share bar in CSS pixels.
const BAR_WIDTH: f64 = 320.0;

fn percent(share: f64) -> String {
    format!("{:.1}%", share * 100.0)
}

fn optional_percent(share: Option<f64>) -> String {
    share.map_or_else(|| "-".to_owned(), percent)
}

/// The page for a report.
pub fn html(report: &Report) -> String {
    let mut out = String::new();
    let verdict = if report.passed { "PASS" } else { "FAIL" };
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; img-src data:\">\
         <title>meshfed {} — {verdict}</title>\n<style>\n{}</style></head><body>\n",
        escape(&report.scenario.name),
        STYLE
    );
    let _ = writeln!(
        out,
        "<h1>scenario {} <span class=\"{}\">{verdict}</span></h1>",
        escape(&report.scenario.name),
        verdict.to_ascii_lowercase()
    );
    if let Some(description) = &report.scenario.description {
        let _ = writeln!(out, "<p>{}</p>", escape(description));
    }
    let _ = writeln!(
        out,
        "<p>provider {} ({}, {}); meshfed {}; {} of {} checks failed; world ready in {} ms, total {} ms</p>",
        escape(&report.provider.name),
        escape(&report.provider.mode),
        escape(&report.provider.proxy),
        escape(&report.meshfed_version),
        report.failures(),
        report
            .phases
            .iter()
            .map(|phase| phase.expectations.len())
            .sum::<usize>()
            + report.isolation.len(),
        report.timings.world_ms,
        report.timings.total_ms
    );
    let _ = writeln!(
        out,
        "<p class=\"legend\"><svg width=\"14\" height=\"10\"><rect width=\"14\" height=\"10\" fill=\"{BAR_COLOUR}\"/></svg> observed share \
         <svg width=\"6\" height=\"12\"><rect width=\"3\" height=\"12\" fill=\"{FAIR_COLOUR}\"/></svg> fair share (equal over the ready pods) \
         <svg width=\"6\" height=\"12\"><rect width=\"4\" height=\"6\" fill=\"{PREDICTED_COLOUR}\"/></svg> predicted share (from the plan's endpoint weights)</p>"
    );
    if !report.isolation.is_empty() {
        out.push_str(
            "<h2>isolation</h2>\n<table><tr><th></th><th>from</th><th>to</th><th>pod</th><th>gateway</th></tr>\n",
        );
        for probe in &report.isolation {
            let _ = writeln!(
                out,
                "<tr><td class=\"{}\">{}</td><td>{}/{}</td><td>{}</td><td>{} {}</td><td>{} {}</td></tr>",
                if probe.isolated { "pass" } else { "fail" },
                if probe.isolated { "PASS" } else { "FAIL" },
                escape(&probe.from_cluster),
                escape(&probe.from_pod),
                escape(&probe.to_cluster),
                escape(&probe.pod_address),
                escape(&probe.pod_connect),
                escape(&probe.gateway_address),
                escape(&probe.gateway_connect)
            );
        }
        out.push_str("</table>\n");
    }
    for phase in &report.phases {
        phase_section(&mut out, phase);
    }
    out.push_str("</body></html>\n");
    out
}

const STYLE: &str = "body{font-family:sans-serif;margin:1.5em;color:#111;max-width:72em}\n\
table{border-collapse:collapse;margin:.5em 0}\n\
td,th{padding:2px 8px;text-align:left;border-bottom:1px solid #ddd;vertical-align:middle}\n\
td:first-child,td:nth-child(2){white-space:nowrap}\n\
td.num{text-align:right}\n\
.pass{color:#176b2c;font-weight:bold}.fail{color:#b0201a;font-weight:bold}\n\
svg{vertical-align:middle}\n";

/// One share bar: the observed share filled, the fair share and (when known) the predicted share
/// marked.
fn share_bar(observed: f64, fair: f64, predicted: Option<f64>) -> String {
    let clamp = |share: f64| if share.is_finite() { share.clamp(0.0, 1.0) } else { 0.0 };
    let observed_px = clamp(observed) * BAR_WIDTH;
    let fair_px = (clamp(fair) * BAR_WIDTH).min(BAR_WIDTH - 2.0);
    let predicted_mark = predicted.map_or_else(String::new, |predicted| {
        format!(
            "<rect class=\"predicted\" x=\"{:.1}\" y=\"0\" width=\"4\" height=\"6\" fill=\"{PREDICTED_COLOUR}\"/>",
            (clamp(predicted) * BAR_WIDTH).min(BAR_WIDTH - 4.0)
        )
    });
    format!(
        "<svg class=\"share\" width=\"{w}\" height=\"16\" role=\"img\"><rect width=\"{w}\" height=\"16\" fill=\"#eeeeee\"/>\
         <rect class=\"bar\" width=\"{observed_px:.1}\" height=\"16\" fill=\"{BAR_COLOUR}\"/>\
         <rect class=\"fair\" x=\"{fair_px:.1}\" width=\"2\" height=\"16\" fill=\"{FAIR_COLOUR}\"/>{predicted_mark}</svg>",
        w = BAR_WIDTH
    )
}

fn phase_section(out: &mut String, phase: &PhaseReport) {
    let m = &phase.measurement;
    let _ = writeln!(
        out,
        "<h2>phase {} <span class=\"{}\">{}</span></h2>\n<p>{} &rarr; {}, {} requests, concurrency {}, {}, endpoint weights {}{}</p>",
        escape(&phase.name),
        if phase.passed { "pass" } else { "fail" },
        if phase.passed { "PASS" } else { "FAIL" },
        escape(&phase.from),
        escape(&phase.to),
        phase.requests,
        phase.concurrency,
        escape(&phase.connections),
        escape(&phase.endpoint_weights),
        if phase.faults.is_empty() {
            String::new()
        } else {
            format!(", faults: {}", escape(&phase.faults.join(", ")))
        }
    );
    out.push_str(
        "<table><tr><th>pod</th><th>cluster</th><th>requests</th><th>share</th><th>fair share</th><th>predicted share</th><th>connections</th><th>request share</th></tr>\n",
    );
    for pod in &m.pods {
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td></tr>",
            escape(&pod.pod),
            escape(&pod.cluster),
            pod.requests,
            percent(pod.request_share),
            percent(pod.expected_share),
            optional_percent(pod.predicted_share),
            pod.connections,
            share_bar(pod.request_share, pod.expected_share, pod.predicted_share)
        );
    }
    for pod in &m.unexpected_responders {
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td>{}</td><td class=\"num\">{}</td><td colspan=\"5\">not expected to answer</td></tr>",
            escape(&pod.pod),
            escape(&pod.cluster),
            pod.requests
        );
    }
    out.push_str("</table>\n<table><tr><th>cluster</th><th>pods</th><th>requests</th><th>share</th><th>fair share</th><th>predicted share</th><th>request share</th></tr>\n");
    for cluster in &m.clusters {
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td></tr>",
            escape(&cluster.cluster),
            cluster.pods,
            cluster.requests,
            percent(cluster.request_share),
            percent(cluster.expected_share),
            optional_percent(cluster.predicted_share),
            share_bar(cluster.request_share, cluster.expected_share, cluster.predicted_share)
        );
    }
    out.push_str("</table>\n");
    let _ = writeln!(
        out,
        "<p>mTLS with the caller's identity ({}): {} of {} (rate {:.3}); success rate {:.3} ({} of {})</p>",
        escape(&phase.expected_identity),
        m.mtls_verified,
        m.attempted,
        m.mtls_rate,
        m.success_rate,
        m.succeeded,
        m.attempted
    );
    if let Some(latency) = &m.latency {
        let _ = writeln!(
            out,
            "<p>latency over {} successful requests: p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms</p>",
            latency.samples,
            latency.p50_us as f64 / 1000.0,
            latency.p90_us as f64 / 1000.0,
            latency.p99_us as f64 / 1000.0
        );
    }
    if let Some(timeline) = &phase.timeline {
        timeline_svg(out, timeline);
    }
    out.push_str("<table><tr><th></th><th>expectation</th><th>bound</th><th>observed</th><th>detail</th></tr>\n");
    for result in &phase.expectations {
        let _ = writeln!(
            out,
            "<tr><td class=\"{}\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            if result.passed { "pass" } else { "fail" },
            if result.passed { "PASS" } else { "FAIL" },
            escape(&result.expectation),
            escape(&result.bound_text()),
            escape(&result.observed_text()),
            escape(&result.detail)
        );
    }
    out.push_str("</table>\n");
}

/// Requests started per bucket (succeeded part filled darker) with a mark at each action's start.
fn timeline_svg(out: &mut String, timeline: &Timeline) {
    const WIDTH: f64 = 640.0;
    const HEIGHT: f64 = 120.0;
    let Some(last) = timeline.buckets.last() else {
        out.push_str("<p>timeline: no request started</p>\n");
        return;
    };
    let end_ms = (last.start_ms + timeline.bucket_ms)
        .max(
            timeline
                .actions
                .iter()
                .map(|action| action.started_ms + 1)
                .max()
                .unwrap_or(0),
        )
        .max(1) as f64;
    let most = timeline
        .buckets
        .iter()
        .map(|bucket| bucket.requests)
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let bucket_px = (timeline.bucket_ms as f64 / end_ms * WIDTH).max(1.0);
    let _ = writeln!(
        out,
        "<p>timeline ({} ms buckets, by request start, a request in flight when an action started at that action; light: requests started, dark: succeeded; red: actions)</p>\n\
         <svg class=\"timeline\" width=\"{WIDTH}\" height=\"{}\" role=\"img\"><rect width=\"{WIDTH}\" height=\"{HEIGHT}\" fill=\"#f6f6f6\"/>",
        timeline.bucket_ms,
        HEIGHT + 16.0
    );
    for bucket in &timeline.buckets {
        let x = bucket.start_ms as f64 / end_ms * WIDTH;
        let started = bucket.requests as f64 / most * HEIGHT;
        let succeeded = bucket.succeeded as f64 / most * HEIGHT;
        let _ = write!(
            out,
            "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{bucket_px:.1}\" height=\"{started:.1}\" fill=\"#9cc3ef\"/>\
             <rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{bucket_px:.1}\" height=\"{succeeded:.1}\" fill=\"{SUCCEEDED_COLOUR}\"/>",
            HEIGHT - started,
            HEIGHT - succeeded
        );
    }
    for action in &timeline.actions {
        let x = (action.started_ms as f64 / end_ms * WIDTH).min(WIDTH - 2.0);
        let _ = write!(
            out,
            "<rect x=\"{x:.1}\" width=\"2\" height=\"{HEIGHT}\" fill=\"{ACTION_COLOUR}\"><title>{}</title></rect>\
             <text x=\"{:.1}\" y=\"{}\" font-size=\"11\" fill=\"{ACTION_COLOUR}\">{}</text>",
            escape(&format!(
                "{} ({} {} at {} ms, done at {} ms)",
                action.name, action.kind, action.cluster, action.started_ms, action.completed_ms
            )),
            (x + 3.0).min(WIDTH - 60.0),
            HEIGHT + 12.0,
            escape(&action.name)
        );
    }
    out.push_str("</svg>\n");
}

/// Writes [`html`] of `report` to `dir/report.html` in one step (temp file, fsync, rename).
///
/// # Errors
/// When the file cannot be created, written, synced or renamed into place (e.g. the disk is full
/// or `dir` is read-only); an earlier `report.html` there is then left as it was.
pub fn write_html(dir: &atomic_files::Dir, report: &Report) -> std::io::Result<()> {
    dir.write_file_atomic(HTML_FILE, html(report).as_bytes(), 0o644)
}
