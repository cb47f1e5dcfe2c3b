//! The run report: `report.json` (schema [`REPORT_SCHEMA`], documented in `docs/report.md`) and the
//! human summary printed at the end of `meshfed run` (pure rendering).

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::measure::PhaseMeasurement;
use crate::measure::timeline::{Bucket, Timeline};
use crate::provider::{IsolationProbe, ProviderInfo, TlsFailures};
use crate::verdict::ExpectationResult;

/// Schema identifier of `report.json`; bumped on any incompatible change.
pub const REPORT_SCHEMA: &str = "meshfed.report/v1";

/// Everything a run found.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// [`REPORT_SCHEMA`].
    pub schema: String,
    /// meshfed's version.
    pub meshfed_version: String,
    /// The scenario.
    pub scenario: ScenarioInfo,
    /// The provider.
    pub provider: ProviderInfo,
    /// How long the steps took.
    pub timings: Timings,
    /// The ServiceEntries the plan gave each cluster (the seed's "route traffic for remote
    /// services to remote cluster gateway"), as first applied.
    pub service_entries: Vec<ServiceEntrySummary>,
    /// Cross-cluster isolation probes.
    pub isolation: Vec<IsolationProbe>,
    /// The phases, in order.
    pub phases: Vec<PhaseReport>,
    /// Every expectation held and every isolation probe passed.
    pub passed: bool,
}

/// Which scenario ran.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScenarioInfo {
    /// Its name.
    pub name: String,
    /// The file it came from.
    pub file: String,
    /// Its description.
    pub description: Option<String>,
}

/// One planned ServiceEntry: in `cluster`, `host` goes to these remote gateways.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServiceEntrySummary {
    /// The cluster it is applied in.
    pub cluster: String,
    /// The replicated service's host.
    pub host: String,
    /// `address:port` of each remote gateway, with ` weight N` when weighted.
    pub endpoints: Vec<String>,
}

/// Step durations in milliseconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Timings {
    /// Creating the world until the proxies and apps were ready.
    pub world_ms: u64,
    /// From the start of the run to the first request of the first phase.
    pub to_first_request_ms: u64,
    /// The whole run, teardown excluded.
    pub total_ms: u64,
}

/// One phase's setting, measurements and verdicts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PhaseReport {
    /// Phase name.
    pub name: String,
    /// `foo.ns1@cluster1`.
    pub from: String,
    /// `bar.ns2:80 (http)`.
    pub to: String,
    /// Requests sent.
    pub requests: u64,
    /// Concurrency.
    pub concurrency: u32,
    /// `pooled` or `new-connection-per-request`.
    pub connections: String,
    /// `equal` or `ready-pods`.
    pub endpoint_weights: String,
    /// Faults applied, as written in the scenario.
    pub faults: Vec<String>,
    /// The caller identity the servers were expected to see.
    pub expected_identity: String,
    /// The measurements.
    pub measurement: PhaseMeasurement,
    /// Growth of the server-side TLS failure counters during the phase.
    pub tls_failures: TlsFailures,
    /// Connections gateways opened to other gateways during the phase (a same-host ServiceEntry
    /// merged into the gateway's passthrough cluster: Istio 1.5-1.18); absent when the provider
    /// cannot count them.
    #[serde(default)]
    pub gateway_hops: Option<u64>,
    /// Proxy configuration refused by the proxies at the end of the phase, with their reasons
    /// (e.g. a gateway's 15443 listener with duplicated filter chains: Istio 1.10-1.21).
    #[serde(default)]
    pub config_rejections: Vec<String>,
    /// The traffic over time and the actions taken while it ran; absent for a phase without
    /// actions or change expectations.
    #[serde(default)]
    pub timeline: Option<Timeline>,
    /// Every expectation, judged.
    pub expectations: Vec<ExpectationResult>,
    /// All expectations held.
    pub passed: bool,
}

impl Report {
    /// Number of expectations and isolation probes that failed.
    pub fn failures(&self) -> usize {
        let expectations: usize = self
            .phases
            .iter()
            .map(|phase| phase.expectations.iter().filter(|result| !result.passed).count())
            .sum();
        expectations + self.isolation.iter().filter(|probe| !probe.isolated).count()
    }
}

fn percent(share: f64) -> String {
    format!("{:.1}%", share * 100.0)
}

fn millis(micros: u64) -> String {
    format!("{:.2}ms", micros as f64 / 1000.0)
}

/// The summary printed after a run: one table per phase and every verdict.
pub fn summary(report: &Report) -> String {
    let mut out = String::new();
    let provider = &report.provider;
    let _ = writeln!(
        out,
        "\nscenario {} on provider {} ({}{}, {})",
        report.scenario.name,
        provider.name,
        provider
            .emulates
            .as_deref()
            .map(|what| format!("emulates {what}; "))
            .unwrap_or_default(),
        provider.mode,
        provider.proxy
    );
    if let Some(description) = &report.scenario.description {
        let _ = writeln!(out, "{description}");
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
                entry.cluster,
                entry.host,
                entry.endpoints.join(", ")
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
                "  {} {}/{} -> {}: pod {} {}, gateway {} {}",
                if probe.isolated { "PASS" } else { "FAIL" },
                probe.from_cluster,
                probe.from_pod,
                probe.to_cluster,
                probe.pod_address,
                probe.pod_connect,
                probe.gateway_address,
                probe.gateway_connect
            );
        }
    }
    for phase in &report.phases {
        phase_summary(&mut out, phase);
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
                        phase.name, result.expectation, result.bound, result.observed
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

fn phase_summary(out: &mut String, phase: &PhaseReport) {
    let m = &phase.measurement;
    let _ = writeln!(
        out,
        "\nphase {}: {} -> {}, {} requests, concurrency {}, {}, endpoint weights {}{}",
        phase.name,
        phase.from,
        phase.to,
        phase.requests,
        phase.concurrency,
        phase.connections,
        phase.endpoint_weights,
        if phase.faults.is_empty() {
            String::new()
        } else {
            format!(", faults: {}", phase.faults.join(", "))
        }
    );
    let _ = writeln!(
        out,
        "  {:<22} {:<12} {:>8} {:>8} {:>9} {:>6} {:>10}",
        "pod", "cluster", "requests", "share", "expected", "conns", "conn share"
    );
    for pod in &m.pods {
        let _ = writeln!(
            out,
            "  {:<22} {:<12} {:>8} {:>8} {:>9} {:>6} {:>10}",
            pod.pod,
            pod.cluster,
            pod.requests,
            percent(pod.request_share),
            percent(pod.expected_share),
            pod.connections,
            percent(pod.connection_share)
        );
    }
    for pod in &m.unexpected_responders {
        let _ = writeln!(
            out,
            "  {:<22} {:<12} {:>8}  (not expected to answer)",
            pod.pod, pod.cluster, pod.requests
        );
    }
    let _ = writeln!(
        out,
        "  mTLS with the caller's identity ({}): {} of {} (rate {:.3}); success rate {:.3}",
        phase.expected_identity, m.mtls_verified, m.attempted, m.mtls_rate, m.success_rate
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
    if let Some(note) = &m.connection_note {
        let _ = writeln!(out, "  note: {note}");
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
        let _ = writeln!(out, "  error x{}: {}", error.count, error.message);
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
        let _ = writeln!(out, "  config rejected: {rejection}");
    }
    if let Some(timeline) = &phase.timeline {
        timeline_summary(out, timeline);
    }
    for result in &phase.expectations {
        let _ = writeln!(
            out,
            "  {} {} {} (observed {}){}",
            if result.passed { "PASS" } else { "FAIL" },
            result.expectation,
            result.bound,
            result.observed,
            if result.passed || result.detail.is_empty() {
                String::new()
            } else {
                format!(": {}", result.detail)
            }
        );
    }
}

/// Most lines the summary gives a timeline: longer timelines group neighbouring buckets.
pub const TIMELINE_LINES: usize = 24;

/// The timeline as at most [`TIMELINE_LINES`] lines (neighbouring buckets grouped), each with
/// its time range, requests, success and mTLS rates, the clusters that answered, and the actions
/// taken in it.
fn timeline_summary(out: &mut String, timeline: &Timeline) {
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
        "  timeline ({} ms per line; ok = success, mtls = verified identity, answered per cluster):",
        line_ms
    );
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
            .map(|(cluster, answered)| format!("{cluster} {answered}"))
            .collect();
        let marks: Vec<String> = timeline
            .actions
            .iter()
            .filter(|action| action.started_ms >= start && action.started_ms < stop)
            .map(|action| {
                format!(
                    "<- {} ({} {} at {} ms, done at {} ms)",
                    action.name, action.kind, action.cluster, action.started_ms, action.completed_ms
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
}
