//! Measurements of one traffic phase, computed from its request records: success and mTLS rates,
//! where the load landed (per pod and per cluster, per request and per TCP connection) against
//! where it should have landed, how skewed that is, latency and which clusters answered.
//!
//! Why both requests and connections: a passthrough gateway balances TCP connections, not requests
//! (DESIGN.md §3). With a pooled client connection every remote request rides one connection to one
//! remote pod, so the request-level split is decided by where a handful of connections landed. The
//! measurement reports both, and flags the phase [`PhaseMeasurement::connection_limited`] when there
//! are too few connections for a connection-level verdict.
//!
//! Conventions, for every field below:
//! - A request is *answered* when its record names the pod or the cluster that replied (the echo
//!   workload reports both), whether or not the reply was a success: a 5xx from a pod is still load
//!   on that pod. Load, shares and skew count answered requests.
//! - Shares are over *all* answered requests (or connections), including those answered by pods
//!   that were not expected; so the expected pods' shares sum to less than 1 when unexpected pods
//!   answered, and the gap shows in [`Skew::total_variation_distance`].
//! - Rates and shares with nothing to divide by are 0, never NaN (report.json has no NaN).

mod load;
mod skew;
pub mod stats;
pub mod timeline;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::record::RequestRecord;
use load::Load;

pub use stats::share_tolerance;

/// Chi-square's usual validity rule: every cell should expect at least this many samples. Below it
/// a connection-level verdict is not possible and the phase is reported connection-limited.
pub const MIN_EXPECTED_COUNT_FOR_VERDICT: f64 = 5.0;
/// How many distinct error messages and unverified identities the measurement lists; the rest are
/// counted in the matching `*_not_listed` field.
pub const LISTED_GROUPS: usize = 5;
/// Stands in for a pod or cluster name that the answering workload did not report. Not a valid
/// Kubernetes name, so it cannot collide with a real one.
pub const UNREPORTED: &str = "(unreported)";

/// A pod that should answer the phase's requests, and the share of them it should get.
///
/// Shares are meant to sum to 1, but [`measure`] normalises them, so relative weights work too
/// (`share: 1.0` for every pod means uniform). Non-positive or non-finite shares count as 0: such a
/// pod is expected to get nothing, and is left out of ratios and the chi-square test.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExpectedPod {
    /// Pod name, as the echo workload reports it.
    pub pod: String,
    /// Cluster the pod runs in. Pods are identified by (cluster, pod): `bar-0` in two clusters is
    /// two pods.
    pub cluster: String,
    /// Expected share of the phase's requests and connections.
    pub share: f64,
}

/// Reads a rate or share from report.json: a number from 0 to 1. Anything else is not a value
/// meshfed wrote, and a comparison over it would mislead (`meshfed diff` once took an mTLS
/// rate of 5); serde_json puts the file's line and column in front of this message.
fn rate_or_share<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
    let value = f64::deserialize(deserializer)?;
    if (0.0..=1.0).contains(&value) {
        Ok(value)
    } else {
        Err(serde::de::Error::custom(format!(
            "{} is not a rate or share: use a number from 0 to 1",
            crate::printable::number(value)
        )))
    }
}

/// Everything measured about one traffic phase. Part of report.json: field names are schema.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PhaseMeasurement {
    /// Requests the client sent (one per record).
    pub attempted: u64,
    /// Requests that got a complete, successful reply ([`RequestRecord::succeeded`]).
    pub succeeded: u64,
    /// `succeeded / attempted`; 0 when nothing was attempted.
    #[serde(deserialize_with = "rate_or_share")]
    pub success_rate: f64,
    /// Requests that succeeded *and* whose server saw exactly the expected client SPIFFE identity.
    pub mtls_verified: u64,
    /// `mtls_verified / attempted` (failed requests count against it); 0 when nothing was attempted,
    /// so an empty phase never passes an mTLS bound.
    #[serde(deserialize_with = "rate_or_share")]
    pub mtls_rate: f64,
    /// Successful requests whose server saw a client certificate (any identity): mutual TLS.
    pub mtls_calls: u64,
    /// Successful requests whose server saw no client identity: plain text (a caller without a
    /// sidecar, or a sidecar that did not originate mTLS, accepted by a PERMISSIVE server).
    pub plaintext_calls: u64,
    /// Failed requests grouped by error message (`HTTP status N` for an error status without a
    /// message), most frequent first, at most [`LISTED_GROUPS`].
    pub errors: Vec<MessageCount>,
    /// Failed requests whose message is not among `errors`.
    pub errors_not_listed: u64,
    /// Successful requests whose server saw another identity (or none), grouped by the identity
    /// seen, most frequent first, at most [`LISTED_GROUPS`].
    pub unverified_identities: Vec<IdentityCount>,
    /// Successful requests not verified whose identity is not among `unverified_identities`.
    pub unverified_identities_not_listed: u64,
    /// Requests whose reply named the pod or cluster that answered.
    pub answered: u64,
    /// Successful requests whose reply named neither pod nor cluster: they are in no load figure.
    pub succeeded_without_responder: u64,
    /// Answered requests without a server-side connection: they are in request figures only.
    pub requests_without_server_connection: u64,
    /// One row per expected pod (including those that got nothing), sorted by cluster then pod.
    pub pods: Vec<PodLoad>,
    /// Expected pods aggregated per cluster, sorted by cluster. Unexpected responders are not in
    /// these rows (see `unexpected_responders`).
    pub clusters: Vec<ClusterLoad>,
    /// Pods that answered but were not expected, sorted by cluster then pod. Counted, never dropped.
    pub unexpected_responders: Vec<UnexpectedResponder>,
    /// How requests split over the expected pods versus `expected_share`.
    pub request_skew: Skew,
    /// How server-side connections split over the expected pods: the unit a passthrough gateway
    /// balances.
    pub connection_skew: Skew,
    /// `request_skew` with pods pooled per cluster (e.g. local versus remote).
    pub cluster_request_skew: Skew,
    /// `connection_skew` with pods pooled per cluster.
    pub cluster_connection_skew: Skew,
    /// True when some expected pod should have received fewer than
    /// [`MIN_EXPECTED_COUNT_FOR_VERDICT`] connections: there is no connection-level verdict, and the
    /// request-level split is decided by where those few connections landed.
    pub connection_limited: bool,
    /// Says why the phase is connection-limited and what that means for the request-level verdict;
    /// `None` when it is not.
    pub connection_note: Option<String>,
    /// Latency of successful requests; `None` when none succeeded.
    pub latency: Option<LatencyPercentiles>,
    /// Distinct clusters that answered at least one request, sorted.
    pub clusters_reached: Vec<String>,
}

/// How many failed requests share one error message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageCount {
    /// The error message.
    pub message: String,
    /// Failed requests with this message.
    pub count: u64,
}

/// How many successful requests the server attributed to one (wrong or missing) identity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityCount {
    /// The SPIFFE identity the server saw; `None` when it saw none (plaintext or no client cert).
    pub identity: Option<String>,
    /// Successful requests with this identity.
    pub count: u64,
}

/// The load one expected pod received.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PodLoad {
    /// Pod name.
    pub pod: String,
    /// Cluster the pod runs in.
    pub cluster: String,
    /// Answered requests this pod answered.
    pub requests: u64,
    /// `requests` ÷ all answered requests.
    pub request_share: f64,
    /// Distinct server-side connections (`server_connection`) that delivered this pod's requests.
    pub connections: u64,
    /// `connections` ÷ all server-side connections of the phase.
    pub connection_share: f64,
    /// The share this pod should get (normalised): the fair share, equal over the ready pods.
    #[serde(deserialize_with = "rate_or_share")]
    pub expected_share: f64,
    /// The share the endpoint weights the plan gave the caller's proxy predict (local pods 1 each,
    /// a remote gateway endpoint its weight split over the ready pods behind it); absent when the
    /// plan gives the caller no weighted endpoints for this service (filled in by the engine).
    #[serde(default)]
    pub predicted_share: Option<f64>,
    /// This pod's requests that succeeded with the expected client identity.
    pub mtls_verified: u64,
}

/// The load one cluster's expected pods received together.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClusterLoad {
    /// Cluster name.
    pub cluster: String,
    /// Expected pods in this cluster.
    pub pods: u64,
    /// Requests its expected pods answered.
    pub requests: u64,
    /// `requests` ÷ all answered requests.
    pub request_share: f64,
    /// Server-side connections to its expected pods.
    pub connections: u64,
    /// `connections` ÷ all server-side connections of the phase.
    pub connection_share: f64,
    /// Sum of its pods' expected shares.
    #[serde(deserialize_with = "rate_or_share")]
    pub expected_share: f64,
    /// Sum of its pods' predicted shares (see [`PodLoad::predicted_share`]).
    #[serde(default)]
    pub predicted_share: Option<f64>,
    /// Requests to its pods that succeeded with the expected client identity.
    pub mtls_verified: u64,
}

/// A pod that answered although it was not expected to (a stale endpoint, a pod of another
/// service, a pod that did not report its name).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnexpectedResponder {
    /// Pod name as reported, or [`UNREPORTED`].
    pub pod: String,
    /// Cluster as reported, or [`UNREPORTED`].
    pub cluster: String,
    /// Requests it answered.
    pub requests: u64,
    /// Distinct server-side connections that delivered them.
    pub connections: u64,
}

/// How far an observed split (of requests or of connections) is from the expected one.
///
/// The chi-square test is over expected cells with a positive share only, and conditional on the
/// samples those cells received (unexpected responders have no expected count). It assumes
/// independent samples: requests that ride one pooled connection are not independent, which is why
/// the connection-level skew exists; read `min_expected_count` before trusting `p_value`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Skew {
    /// Samples answered, including by unexpected responders.
    pub samples: u64,
    /// Of `samples`, those answered by pods (or clusters) not expected.
    pub unexpected_samples: u64,
    /// Max over cells with a positive expected share of observed share ÷ expected share: 1 is
    /// perfect, 2 means some pod got twice its share. 0 when no such cell exists.
    pub max_ratio: f64,
    /// The cell with `max_ratio`, as `cluster/pod` (or `cluster` for cluster-level skew).
    pub max_ratio_at: Option<String>,
    /// ½ Σ |observed share − expected share|, unexpected responders counted with expected share 0:
    /// the fraction of samples that would have to move to match the expectation. With no samples
    /// every observed share is 0 and this is ½ Σ expected shares.
    pub total_variation_distance: f64,
    /// Pearson's chi-square statistic over the tested cells.
    pub chi_square: f64,
    /// Tested cells − 1 (0 when fewer than two cells are tested).
    pub degrees_of_freedom: u64,
    /// Chance of a chi-square at least this large if samples really followed the expected split;
    /// small means skewed. 1 with no degrees of freedom or no samples.
    pub p_value: f64,
    /// Smallest expected count over the tested cells (0 when none): chi-square needs it ≥ 5.
    pub min_expected_count: f64,
}

/// Latency percentiles by the nearest-rank method (each is an observed latency, no interpolation).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LatencyPercentiles {
    /// Successful requests the percentiles are over.
    pub samples: u64,
    /// Median, in microseconds.
    pub p50_us: u64,
    /// 90th percentile, in microseconds.
    pub p90_us: u64,
    /// 99th percentile, in microseconds.
    pub p99_us: u64,
}

/// Measures one phase: `records` are every request the client sent in it, `expected` the pods that
/// should answer and their shares, `expected_identity` the client's SPIFFE identity as the server
/// must see it (e.g. `spiffe://cluster.local/ns/ns1/sa/foo`).
///
/// Records carry no source cluster: for DESIGN's per source→destination-cluster mTLS rate, measure
/// each source's records separately; destination clusters are the rows of `clusters`.
pub fn measure(records: &[RequestRecord], expected: &[ExpectedPod], expected_identity: &str) -> PhaseMeasurement {
    let attempted = records.len() as u64;
    let succeeded = records.iter().filter(|record| record.succeeded()).count() as u64;
    let mtls_verified = records
        .iter()
        .filter(|record| is_mtls_verified(record, expected_identity))
        .count() as u64;
    let plaintext_calls = records
        .iter()
        .filter(|record| record.succeeded() && is_plaintext(record))
        .count() as u64;
    let (errors, errors_not_listed) = error_groups(records);
    let (unverified_identities, unverified_identities_not_listed) =
        unverified_identity_groups(records, expected_identity);

    let load = Load::tally(records, expected, expected_identity);
    let request_skew = skew::skew(&load.pod_request_cells(), load.unexpected_requests());
    let connection_skew = skew::skew(&load.pod_connection_cells(), load.unexpected_connections());
    let cluster_request_skew = skew::skew(&load.cluster_request_cells(), load.unexpected_requests());
    let cluster_connection_skew = skew::skew(&load.cluster_connection_cells(), load.unexpected_connections());
    let connection_note = connection_note(&connection_skew, &request_skew);

    PhaseMeasurement {
        attempted,
        succeeded,
        success_rate: ratio(succeeded, attempted),
        mtls_verified,
        mtls_rate: ratio(mtls_verified, attempted),
        mtls_calls: succeeded - plaintext_calls,
        plaintext_calls,
        errors,
        errors_not_listed,
        unverified_identities,
        unverified_identities_not_listed,
        answered: load.total_requests,
        succeeded_without_responder: count_succeeded_without_responder(records),
        requests_without_server_connection: count_without_server_connection(records),
        pods: load.pods,
        clusters: load.clusters,
        unexpected_responders: load.unexpected,
        request_skew,
        connection_skew,
        cluster_request_skew,
        cluster_connection_skew,
        connection_limited: connection_note.is_some(),
        connection_note,
        latency: latency_percentiles(records),
        clusters_reached: clusters_reached(records),
    }
}

/// `part / whole`, 0 when `whole` is 0.
fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 { 0.0 } else { part as f64 / whole as f64 }
}

fn is_mtls_verified(record: &RequestRecord, expected_identity: &str) -> bool {
    record.succeeded() && record.peer_identity.as_deref() == Some(expected_identity)
}

/// No client identity reached the server: none at all, or Envoy's empty placeholder `-`.
fn is_plaintext(record: &RequestRecord) -> bool {
    record
        .peer_identity
        .as_deref()
        .is_none_or(|identity| identity.is_empty() || identity == "-")
}

fn is_answered(record: &RequestRecord) -> bool {
    record.pod.is_some() || record.cluster.is_some()
}

fn count_succeeded_without_responder(records: &[RequestRecord]) -> u64 {
    records
        .iter()
        .filter(|record| record.succeeded() && !is_answered(record))
        .count() as u64
}

fn count_without_server_connection(records: &[RequestRecord]) -> u64 {
    records
        .iter()
        .filter(|record| is_answered(record) && record.server_connection.is_none())
        .count() as u64
}

/// Why a request failed, or `None` if it succeeded.
fn failure_message(record: &RequestRecord) -> Option<String> {
    if record.succeeded() {
        return None;
    }
    match (&record.error, record.status) {
        (Some(message), _) => Some(message.clone()),
        (None, Some(status)) => Some(format!("HTTP status {status}")),
        (None, None) => Some("failed without an error message".to_owned()),
    }
}

fn error_groups(records: &[RequestRecord]) -> (Vec<MessageCount>, u64) {
    let (listed, not_listed) = most_frequent(records.iter().filter_map(failure_message));
    let listed = listed
        .into_iter()
        .map(|(message, count)| MessageCount { message, count })
        .collect();
    (listed, not_listed)
}

fn unverified_identity_groups(records: &[RequestRecord], expected_identity: &str) -> (Vec<IdentityCount>, u64) {
    let unverified = records
        .iter()
        .filter(|record| record.succeeded() && !is_mtls_verified(record, expected_identity))
        // Envoy's `-` placeholder (TCP) and an absent identity (HTTP) are the same thing: no
        // identity reached the server, so both group as none and read "seen as no identity".
        .map(|record| (!is_plaintext(record)).then(|| record.peer_identity.clone()).flatten());
    let (listed, not_listed) = most_frequent(unverified);
    let listed = listed
        .into_iter()
        .map(|(identity, count)| IdentityCount { identity, count })
        .collect();
    (listed, not_listed)
}

/// Groups equal values and returns the [`LISTED_GROUPS`] most frequent (ties in value order) and
/// how many values fell outside them.
fn most_frequent<K: Ord>(values: impl Iterator<Item = K>) -> (Vec<(K, u64)>, u64) {
    let mut counts = BTreeMap::new();
    for value in values {
        *counts.entry(value).or_insert(0_u64) += 1;
    }
    let mut groups: Vec<(K, u64)> = counts.into_iter().collect();
    groups.sort_by_key(|(_, count)| std::cmp::Reverse(*count));
    let not_listed = groups.iter().skip(LISTED_GROUPS).map(|group| group.1).sum();
    groups.truncate(LISTED_GROUPS);
    (groups, not_listed)
}

fn latency_percentiles(records: &[RequestRecord]) -> Option<LatencyPercentiles> {
    let mut latencies: Vec<u64> = records
        .iter()
        .filter(|record| record.succeeded())
        .map(|record| record.latency_us)
        .collect();
    latencies.sort_unstable();
    Some(LatencyPercentiles {
        samples: latencies.len() as u64,
        p50_us: stats::nearest_rank(&latencies, 50.0)?,
        p90_us: stats::nearest_rank(&latencies, 90.0)?,
        p99_us: stats::nearest_rank(&latencies, 99.0)?,
    })
}

fn clusters_reached(records: &[RequestRecord]) -> Vec<String> {
    let reached: BTreeSet<&String> = records.iter().filter_map(|record| record.cluster.as_ref()).collect();
    reached.into_iter().cloned().collect()
}

/// The explanation a connection-limited phase carries, or `None` when the connections suffice.
fn connection_note(connection_skew: &Skew, request_skew: &Skew) -> Option<String> {
    // The tolerance keeps an exact 5 computed from rounded shares (15 × ⅓) on the right side.
    if connection_skew.min_expected_count >= MIN_EXPECTED_COUNT_FOR_VERDICT - 1e-9 {
        return None;
    }
    let connections = connection_skew.samples;
    let requests = request_skew.samples;
    if connections == 0 {
        return Some(format!(
            "connection-limited: no server-side connection was recorded for the {requests} \
             answered request(s), so how connections were balanced cannot be judged"
        ));
    }
    Some(format!(
        "connection-limited: {requests} request(s) rode {connections} server-side connection(s); \
         the smallest expected connection count per pod is {:.1}, below the {} a connection-level \
         verdict needs, so the request-level split mostly shows where those few connections \
         landed, not how requests are balanced",
        connection_skew.min_expected_count, MIN_EXPECTED_COUNT_FOR_VERDICT
    ))
}

#[cfg(test)]
pub(crate) mod tests;
