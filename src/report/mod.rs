//! The run report: `report.json` (schema [`REPORT_SCHEMA`], documented in `docs/report.md`) and the
//! human summary printed at the end of `meshfed run` (pure rendering), `junit.xml` for CI and
//! `report.html` for people.

mod html;
mod junit;
mod markup;
mod summary;

pub use html::{HTML_FILE, html, write_html};
pub use junit::{JUNIT_FILE, junit, write_junit};
pub use summary::{TIMELINE_LINES, summary};

use serde::{Deserialize, Serialize};

use crate::measure::PhaseMeasurement;
use crate::measure::timeline::Timeline;
/// What a provider observed besides requests, as the report holds it.
pub use crate::observation::{IsolationProbe, ProviderInfo, TlsFailures};
use crate::verdict::ExpectationResult;

/// Schema identifier of `report.json`; bumped on any incompatible change.
pub const REPORT_SCHEMA: &str = "meshfed.report/v2";

/// Everything a run found.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// [`REPORT_SCHEMA`].
    pub schema: String,
    /// meshfed's version.
    pub meshfed_version: String,
    /// When the run started, RFC 3339 in UTC (`2026-11-29T18:39:19Z`).
    #[serde(default)]
    pub started_at: String,
    /// The host name of the machine meshfed ran on; absent when it could not be read.
    #[serde(default)]
    pub host: Option<String>,
    /// The exit code the run's verdict maps to: 0 passed, 1 an expectation or probe failed (runs
    /// that end with a bad input or an infrastructure error write no report).
    #[serde(default)]
    pub exit_code: u8,
    /// Each cluster and the Istio version it ran when the world was created.
    #[serde(default)]
    pub clusters: Vec<ClusterInfo>,
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

/// One cluster of the run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClusterInfo {
    /// Cluster name.
    pub name: String,
    /// Istio version `major.minor.patch` (emulated by `local`, installed by `kind`).
    pub istio_version: String,
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
    /// merged into the gateway's passthrough cluster: Istio 1.1-1.18); absent when the provider
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
    /// What the emulated Istio version makes unpredictable about this phase's shares (e.g. the
    /// 1.8-1.9 multi-zone gateway weight, docs/fidelity.md row 6b); absent when nothing is.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub caveats: Vec<String>,
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

/// `at` (seconds since the Unix epoch, UTC) as RFC 3339 (`2026-11-29T18:39:19Z`).
pub fn rfc3339_utc(at: std::time::SystemTime) -> String {
    let seconds = at
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    let days = (seconds / 86_400) as i64;
    let of_day = seconds % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        of_day / 3600,
        of_day / 60 % 60,
        of_day % 60
    )
}

#[cfg(test)]
mod tests {
    use super::rfc3339_utc;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn rfc3339_utc_matches_known_instants() {
        assert_eq!(rfc3339_utc(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339_utc(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00Z"
        );
        assert_eq!(
            rfc3339_utc(UNIX_EPOCH + Duration::from_secs(1_796_150_359)),
            "2026-12-01T18:39:19Z"
        );
    }
}
