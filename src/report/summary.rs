//! The human summary printed at the end of `meshfed run` (pure rendering).

use std::fmt::Write as _;

use super::{PhaseReport, Report};
use crate::measure::timeline::{Bucket, Timeline};
use crate::printable::printable;

fn percent(share: f64) -> String {
    format!("{:.1}%", share * 100.0)
}

fn millis(micros: u64) -> String {
    format!("{:.2}ms", micros as f64 / 1000.0)
}

/// The summary printed after a run: one table per phase and every verdict. Every string taken
/// from the report goes through [`printable`]: a report may come from a stranger (`--compare-to`,
/// a report.json attached to an issue), and pod names, errors and rejections come from the world.
pub fn summary(report: &Report) -> String {
    let mut out = String::new();
    let provider = &report.provider;
    let _ = writeln!(
        out,
        "\nscenario {} on provider {} ({}{}, {})",
        printable(&report.scenario.name),
        printable(&provider.name),
        provider
            .emulates
            .as_deref()
            .map(|what| format!("emulates {}; ", printable(what)))
            .unwrap_or_default(),
        printable(&provider.mode),
        printable(&provider.proxy)
    );
    if let Some(description) = &report.scenario.description {
        let _ = writeln!(out, "{}", printable(description));
    }
    if !report.service_entries.is_empty() {
        let _ = writeln!(
            out,
            "\nfederation (ServiceEntries sending remote services to remote gateways):"
        );
        for entry in &report.service_entries {
            let _ = writeln!(
                out,
                "  in {}: {} -> {}",
                printable(&entry.cluster),
                printable(&entry.host),
                printable(&entry.endpoints.join(", "))
            );
        }
    }
    if !report.isolation.is_empty() {
        let _ = writeln!(
            out,
            "\nisolation (pods may reach other clusters only through their gateways):"
        );
        for probe in &report.isolation {
            let _ = writeln!(
                out,
                "  {} {}: {}",
                if probe.isolated { "PASS" } else { "FAIL" },
                printable(&probe.route()),
                printable(&probe.observed())
            );
        }
    }
    // Each cluster's Istio version as the run goes: an `upgrade` action to an older version is a
    // downgrade, and the summary says so (it used to be accepted without a word).
    let mut versions: std::collections::BTreeMap<String, String> = report
        .clusters
        .iter()
        .map(|cluster| (cluster.name.clone(), cluster.istio_version.clone()))
        .collect();
    for phase in &report.phases {
        phase_summary(&mut out, phase, &mut versions);
    }
    let total: usize = report
        .phases
        .iter()
        .map(|phase| phase.expectations.len())
        .sum::<usize>()
        + report.isolation.len();
    let failed: Vec<String> = report
        .phases
        .iter()
        .flat_map(|phase| {
            phase
                .expectations
                .iter()
                .filter(|result| !result.passed)
                .map(move |result| {
                    format!(
                        "  phase {}: {} {} (observed {})",
                        printable(&phase.name),
                        printable(&result.expectation),
                        printable(&result.bound_text()),
                        printable(&result.observed_text())
                    )
                })
        })
        .collect();
    if !failed.is_empty() {
        let _ = writeln!(out, "\nfailed expectations:");
        for line in &failed {
            let _ = writeln!(out, "{line}");
        }
    }
    let unjudged: Vec<String> = report
        .phases
        .iter()
        .filter(|phase| phase.expectations.is_empty())
        .map(|phase| printable(&phase.name).into_owned())
        .collect();
    if !unjudged.is_empty() {
        // A PASS over a phase that checked nothing must not read as that phase holding.
        let _ = writeln!(
            out,
            "\njudged nothing (no expectations): phase {}; the verdict says nothing about them",
            unjudged.join(", ")
        );
    }
    let _ = writeln!(
        out,
        "\nverdict: {} ({} of {} checks failed); world ready in {} ms, first request at {} ms, total {} ms",
        if report.passed { "PASS" } else { "FAIL" },
        report.failures(),
        total,
        report.timings.world_ms,
        report.timings.to_first_request_ms,
        report.timings.total_ms
    );
    out
}

fn phase_summary(out: &mut String, phase: &PhaseReport, versions: &mut std::collections::BTreeMap<String, String>) {
    let m = &phase.measurement;
    let _ = writeln!(
        out,
        "\nphase {}: {} -> {}, {} requests, concurrency {}, {}, endpoint weights {}{}",
        printable(&phase.name),
        printable(&phase.from),
        printable(&phase.to),
        phase.requests,
        phase.concurrency,
        printable(&phase.connections),
        printable(&phase.endpoint_weights),
        if phase.faults.is_empty() {
            String::new()
        } else {
            format!(", faults: {}", printable(&phase.faults.join(", ")))
        }
    );
    let _ = writeln!(
        out,
        "  {:<22} {:<12} {:>8} {:>8} {:>10} {:>9} {:>6} {:>10}",
        "pod", "cluster", "requests", "share", "fair share", "predicted", "conns", "conn share"
    );
    for pod in &m.pods {
        let _ = writeln!(
            out,
            "  {:<22} {:<12} {:>8} {:>8} {:>10} {:>9} {:>6} {:>10}",
            printable(&pod.pod),
            printable(&pod.cluster),
            pod.requests,
            percent(pod.request_share),
            percent(pod.expected_share),
            pod.predicted_share.map_or_else(|| "-".to_owned(), percent),
            pod.connections,
            percent(pod.connection_share)
        );
    }
    for pod in &m.unexpected_responders {
        let _ = writeln!(
            out,
            "  {:<22} {:<12} {:>8}  (not expected to answer)",
            printable(&pod.pod),
            printable(&pod.cluster),
            pod.requests
        );
    }
    let _ = writeln!(
        out,
        "  mTLS with the caller's identity ({}): {} of {} (rate {:.3}); success rate {:.3}",
        printable(&phase.expected_identity),
        m.mtls_verified,
        m.attempted,
        m.mtls_rate,
        m.success_rate
    );
    let _ = writeln!(
        out,
        "  calls that succeeded: {} over mTLS, {} in plain text",
        m.mtls_calls, m.plaintext_calls
    );
    let _ = writeln!(
        out,
        "  skew: max observed/expected {:.2} by requests, {:.2} by connections; total variation {:.3}",
        m.request_skew.max_ratio, m.connection_skew.max_ratio, m.request_skew.total_variation_distance
    );
    if let Some(note) = connection_note_that_matters(phase) {
        let _ = writeln!(out, "  note: {}", printable(note));
    }
    if let Some(latency) = &m.latency {
        let _ = writeln!(
            out,
            "  latency p50 {} p90 {} p99 {}",
            millis(latency.p50_us),
            millis(latency.p90_us),
            millis(latency.p99_us)
        );
    }
    for error in &m.errors {
        let _ = writeln!(out, "  error x{}: {}", error.count, printable(&error.message));
    }
    let tls = &phase.tls_failures;
    let _ = writeln!(
        out,
        "  server-side TLS rejections: {} bad client cert, {} missing client cert; gateway unknown SNI: {}",
        tls.fail_verify_error, tls.fail_verify_no_cert, tls.gateway_no_filter_chain_match
    );
    if let Some(hops) = phase.gateway_hops {
        let _ = writeln!(out, "  gateway-to-gateway hops: {hops}");
    }
    for rejection in &phase.config_rejections {
        let _ = writeln!(out, "  config rejected: {}", printable(rejection));
    }
    for caveat in &phase.caveats {
        let _ = writeln!(out, "  note: {caveat}");
    }
    if let Some(timeline) = &phase.timeline {
        timeline_summary(out, timeline, versions);
    }
    if phase.expectations.is_empty() {
        let _ = writeln!(
            out,
            "  no expectations: this phase judged nothing (success rate {:.3} and mTLS rate {:.3} were not checked)",
            m.success_rate, m.mtls_rate
        );
    }
    for result in &phase.expectations {
        let _ = writeln!(
            out,
            "  {} {} {} (observed {}){}",
            if result.passed { "PASS" } else { "FAIL" },
            printable(&result.expectation),
            printable(&result.bound_text()),
            printable(&result.observed_text()),
            if result.passed || result.detail.is_empty() {
                String::new()
            } else {
                format!(": {}", printable(&result.detail))
            }
        );
    }
}

/// For an `upgrade` action: ` 1.22.0 -> 1.9.0, a downgrade` (or without the last part), keeping
/// `versions` current; nothing for other actions.
fn version_change(
    action: &crate::measure::timeline::ActionRecord,
    versions: &mut std::collections::BTreeMap<String, String>,
) -> String {
    let crate::change::WorldChange::Upgrade { cluster, to } = &action.change else {
        return String::new();
    };
    let before = versions.insert(cluster.clone(), to.to_string());
    match before.and_then(|before| Some((before.parse::<crate::scenario::IstioVersion>().ok()?, before))) {
        Some((from, text)) if from > *to => format!(" {} -> {to}, a downgrade", printable(&text)),
        Some((_, text)) => format!(" {} -> {to}", printable(&text)),
        None => format!(" -> {to}"),
    }
}

/// How far (observed ÷ fair share, at some pod) the request split must stray before an unjudged
/// phase's connection-limited note is worth a line: below it the split reads as even anyway.
pub const NOTE_SKEW_RATIO: f64 = 1.2;

/// The connection-limited note, only where it changes the reading: requests went over pooled
/// connections too few to spread them, and either the phase judges skew by requests or the request
/// split visibly strays from the fair share (max ratio at least [`NOTE_SKEW_RATIO`]), so the few
/// connections are what explains the skew.
fn connection_note_that_matters(phase: &PhaseReport) -> Option<&str> {
    let m = &phase.measurement;
    let judges_request_skew = phase
        .expectations
        .iter()
        .any(|result| result.key.starts_with("maxSkewRatio") && result.expectation.contains("by requests"));
    let visibly_skewed = m.request_skew.max_ratio >= NOTE_SKEW_RATIO;
    (phase.connections == "pooled" && m.connection_limited && (judges_request_skew || visibly_skewed))
        .then_some(m.connection_note.as_deref())
        .flatten()
}

/// Most lines the summary gives a timeline: longer timelines group neighbouring buckets.
pub const TIMELINE_LINES: usize = 24;

/// The timeline as at most [`TIMELINE_LINES`] lines (neighbouring buckets grouped), each with
/// its time range, requests, success and mTLS rates, the clusters that answered, and the actions
/// taken in it.
fn timeline_summary(out: &mut String, timeline: &Timeline, versions: &mut std::collections::BTreeMap<String, String>) {
    let version_changes: Vec<String> = timeline
        .actions
        .iter()
        .map(|action| version_change(action, versions))
        .collect();
    let Some(last) = timeline.buckets.last() else {
        let _ = writeln!(out, "  timeline: no request started");
        return;
    };
    let end_ms = last.start_ms + timeline.bucket_ms;
    let buckets_spanned = end_ms.div_ceil(timeline.bucket_ms).max(1);
    let group = buckets_spanned.div_ceil(TIMELINE_LINES as u64).max(1);
    let line_ms = group * timeline.bucket_ms;
    let _ = writeln!(
        out,
        "  timeline ({} ms per line, requests by start; ok = success, mtls = verified identity, answered per cluster):",
        line_ms
    );
    if !timeline.actions.is_empty() {
        let _ = writeln!(
            out,
            "  a request in flight when an action started counts at that action, in lines and windows: {} did",
            timeline.straddling
        );
    }
    let mut start = 0;
    while start < end_ms {
        let stop = start + line_ms;
        let in_line: Vec<&Bucket> = timeline
            .buckets
            .iter()
            .filter(|bucket| bucket.start_ms >= start && bucket.start_ms < stop)
            .collect();
        let requests: u64 = in_line.iter().map(|bucket| bucket.requests).sum();
        let succeeded: u64 = in_line.iter().map(|bucket| bucket.succeeded).sum();
        let mtls: u64 = in_line.iter().map(|bucket| bucket.mtls).sum();
        let mut per_cluster: std::collections::BTreeMap<&str, u64> = std::collections::BTreeMap::new();
        for bucket in &in_line {
            for (cluster, answered) in &bucket.per_cluster {
                *per_cluster.entry(cluster).or_default() += answered;
            }
        }
        let clusters: Vec<String> = per_cluster
            .iter()
            .map(|(cluster, answered)| format!("{} {answered}", printable(cluster)))
            .collect();
        let marks: Vec<String> = timeline
            .actions
            .iter()
            .zip(&version_changes)
            .filter(|(action, _)| action.started_ms >= start && action.started_ms < stop)
            .map(|(action, version_change)| {
                format!(
                    "<- {} ({} {}{} at {} ms, done at {} ms)",
                    printable(&action.name),
                    printable(&action.kind),
                    printable(&action.cluster),
                    version_change,
                    action.started_ms,
                    action.completed_ms
                )
            })
            .collect();
        let rates = if requests == 0 {
            "no request started".to_owned()
        } else {
            format!(
                "ok {:>6} mtls {:>6}",
                percent(succeeded as f64 / requests as f64),
                percent(mtls as f64 / requests as f64)
            )
        };
        let _ = writeln!(
            out,
            "  {:>7}-{:<7} {:>5} req  {rates}  {}{}{}",
            start,
            stop,
            requests,
            clusters.join(", "),
            if marks.is_empty() { "" } else { "  " },
            marks.join(" ")
        );
        start = stop;
    }
    for action in &timeline.actions {
        if let Some(note) = &action.note {
            let _ = writeln!(out, "  note: {}: {note}", action.name);
        }
    }
}
