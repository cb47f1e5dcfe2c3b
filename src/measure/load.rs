//! Where a phase's answered requests and connections landed, per pod and per cluster, next to the
//! expected shares.

use std::collections::{BTreeMap, BTreeSet};

use super::{
    ClusterLoad, ExpectedPod, PodLoad, UNREPORTED, UnexpectedResponder, is_answered, is_mtls_verified, ratio,
    skew::SkewCell,
};
use crate::record::RequestRecord;

/// A pod as the measurements identify it. Field order gives the sort order: cluster, then pod.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct PodKey {
    cluster: String,
    pod: String,
}

impl PodKey {
    fn of_responder(record: &RequestRecord) -> Self {
        let reported = |name: &Option<String>| name.clone().unwrap_or_else(|| UNREPORTED.into());
        Self {
            cluster: reported(&record.cluster),
            pod: reported(&record.pod),
        }
    }

    fn label(&self) -> String {
        format!("{}/{}", self.cluster, self.pod)
    }
}

/// What one responding pod received.
#[derive(Default)]
struct ResponderTally {
    requests: u64,
    mtls_verified: u64,
    server_connections: BTreeSet<String>,
}

impl ResponderTally {
    fn connections(&self) -> u64 {
        self.server_connections.len() as u64
    }
}

/// Expected shares per pod, merged for duplicates and normalised to sum to 1.
fn normalised_expectation(expected: &[ExpectedPod]) -> BTreeMap<PodKey, f64> {
    let usable = |share: f64| {
        if share.is_finite() && share > 0.0 { share } else { 0.0 }
    };
    let mut shares = BTreeMap::new();
    for pod in expected {
        let key = PodKey {
            cluster: pod.cluster.clone(),
            pod: pod.pod.clone(),
        };
        *shares.entry(key).or_insert(0.0) += usable(pod.share);
    }
    let total: f64 = shares.values().sum();
    if total > 0.0 {
        shares.values_mut().for_each(|share| *share /= total);
    }
    shares
}

fn tally_responders(records: &[RequestRecord], expected_identity: &str) -> BTreeMap<PodKey, ResponderTally> {
    let mut tallies: BTreeMap<PodKey, ResponderTally> = BTreeMap::new();
    for record in records.iter().filter(|record| is_answered(record)) {
        let tally = tallies.entry(PodKey::of_responder(record)).or_default();
        tally.requests += 1;
        if is_mtls_verified(record, expected_identity) {
            tally.mtls_verified += 1;
        }
        if let Some(connection) = &record.server_connection {
            tally.server_connections.insert(connection.clone());
        }
    }
    tallies
}

/// Where the phase's answered requests and connections landed, against the expectation.
pub(super) struct Load {
    pub(super) pods: Vec<PodLoad>,
    pub(super) clusters: Vec<ClusterLoad>,
    pub(super) unexpected: Vec<UnexpectedResponder>,
    pub(super) total_requests: u64,
}

impl Load {
    pub(super) fn tally(records: &[RequestRecord], expected: &[ExpectedPod], expected_identity: &str) -> Self {
        let expectation = normalised_expectation(expected);
        let tallies = tally_responders(records, expected_identity);
        let total_requests = tallies.values().map(|tally| tally.requests).sum();
        let total_connections = tallies.values().map(ResponderTally::connections).sum();
        let pods: Vec<PodLoad> = expectation
            .iter()
            .map(|(key, share)| {
                let load = mk_pod_load(key, *share, tallies.get(key));
                with_pod_shares(load, total_requests, total_connections)
            })
            .collect();
        let unexpected = tallies
            .iter()
            .filter(|(key, _)| !expectation.contains_key(key))
            .map(|(key, tally)| UnexpectedResponder {
                pod: key.pod.clone(),
                cluster: key.cluster.clone(),
                requests: tally.requests,
                connections: tally.connections(),
            })
            .collect();
        Self {
            clusters: mk_cluster_loads(&pods, total_requests, total_connections),
            pods,
            unexpected,
            total_requests,
        }
    }

    pub(super) fn unexpected_requests(&self) -> u64 {
        self.unexpected.iter().map(|pod| pod.requests).sum()
    }

    pub(super) fn unexpected_connections(&self) -> u64 {
        self.unexpected.iter().map(|pod| pod.connections).sum()
    }

    pub(super) fn pod_request_cells(&self) -> Vec<SkewCell> {
        self.pods
            .iter()
            .map(|pod| SkewCell::new(pod_label(pod), pod.requests, pod.expected_share))
            .collect()
    }

    pub(super) fn pod_connection_cells(&self) -> Vec<SkewCell> {
        self.pods
            .iter()
            .map(|pod| SkewCell::new(pod_label(pod), pod.connections, pod.expected_share))
            .collect()
    }

    pub(super) fn cluster_request_cells(&self) -> Vec<SkewCell> {
        self.clusters
            .iter()
            .map(|cluster| SkewCell::new(&cluster.cluster, cluster.requests, cluster.expected_share))
            .collect()
    }

    pub(super) fn cluster_connection_cells(&self) -> Vec<SkewCell> {
        self.clusters
            .iter()
            .map(|cluster| SkewCell::new(&cluster.cluster, cluster.connections, cluster.expected_share))
            .collect()
    }
}

fn pod_label(pod: &PodLoad) -> String {
    PodKey {
        cluster: pod.cluster.clone(),
        pod: pod.pod.clone(),
    }
    .label()
}

fn mk_pod_load(key: &PodKey, expected_share: f64, tally: Option<&ResponderTally>) -> PodLoad {
    PodLoad {
        pod: key.pod.clone(),
        cluster: key.cluster.clone(),
        requests: tally.map_or(0, |tally| tally.requests),
        request_share: 0.0,
        connections: tally.map_or(0, ResponderTally::connections),
        connection_share: 0.0,
        expected_share,
        predicted_share: None,
        mtls_verified: tally.map_or(0, |tally| tally.mtls_verified),
    }
}

fn with_pod_shares(load: PodLoad, total_requests: u64, total_connections: u64) -> PodLoad {
    PodLoad {
        request_share: ratio(load.requests, total_requests),
        connection_share: ratio(load.connections, total_connections),
        ..load
    }
}

fn mk_cluster_loads(pods: &[PodLoad], total_requests: u64, total_connections: u64) -> Vec<ClusterLoad> {
    let mut clusters: BTreeMap<&str, ClusterLoad> = BTreeMap::new();
    for pod in pods {
        let cluster = clusters
            .entry(&pod.cluster)
            .or_insert_with(|| empty_cluster_load(&pod.cluster));
        cluster.pods += 1;
        cluster.requests += pod.requests;
        cluster.connections += pod.connections;
        cluster.expected_share += pod.expected_share;
        cluster.mtls_verified += pod.mtls_verified;
    }
    clusters
        .into_values()
        .map(|cluster| ClusterLoad {
            request_share: ratio(cluster.requests, total_requests),
            connection_share: ratio(cluster.connections, total_connections),
            ..cluster
        })
        .collect()
}

fn empty_cluster_load(cluster: &str) -> ClusterLoad {
    ClusterLoad {
        cluster: cluster.to_owned(),
        pods: 0,
        requests: 0,
        request_share: 0.0,
        connections: 0,
        connection_share: 0.0,
        expected_share: 0.0,
        predicted_share: None,
        mtls_verified: 0,
    }
}
