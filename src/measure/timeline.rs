//! A phase's traffic over time (pure): requests bucketed by when they started, with success,
//! mTLS and per-cluster answers per bucket, the actions taken while the traffic ran, and the
//! figures the change expectations are judged on (windows, recovery, convergence, calls after a
//! cluster left).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::change::{InventoryEvent, WorldChange};
use crate::record::RequestRecord;

use super::{UNREPORTED, is_mtls_verified};

/// The phase's traffic in time buckets, and the actions taken while it ran. Part of report.json.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Timeline {
    /// Width of every bucket in milliseconds.
    pub bucket_ms: u64,
    /// Buckets in time order; a bucket in which no request started is left out.
    pub buckets: Vec<Bucket>,
    /// The actions, in the order they were taken.
    pub actions: Vec<ActionRecord>,
}

/// The requests that started in `[start_ms, start_ms + bucket_ms)` of the traffic.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Bucket {
    /// Start of the bucket, in milliseconds from the start of the traffic.
    pub start_ms: u64,
    /// Requests started in the bucket.
    pub requests: u64,
    /// Of these, requests that succeeded.
    pub succeeded: u64,
    /// Of these, requests that succeeded with the caller's expected identity seen by the server.
    pub mtls: u64,
    /// Answered requests per answering cluster ([`UNREPORTED`] when a reply named a pod only).
    pub per_cluster: BTreeMap<String, u64>,
}

impl Bucket {
    /// `succeeded / requests` (0 for an empty bucket, which the timeline never holds).
    pub fn success_rate(&self) -> f64 {
        ratio(self.succeeded, self.requests)
    }

    /// `mtls / requests`.
    pub fn mtls_rate(&self) -> f64 {
        ratio(self.mtls, self.requests)
    }
}

/// One action taken while the traffic ran: when it was planned, started and completed (in
/// milliseconds from the start of the traffic) and what it did to the inventory.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ActionRecord {
    /// The action's `name`, or `<kind>@<atMillis>ms`.
    pub name: String,
    /// The change as the scenario spells it (`stopGateway`).
    pub kind: String,
    /// The cluster it changed.
    pub cluster: String,
    /// `atMillis`: when it was planned.
    pub at_ms: u64,
    /// When the provider was asked to make it.
    pub started_ms: u64,
    /// When the provider reported it done.
    pub completed_ms: u64,
    /// The change itself.
    pub change: WorldChange,
    /// What the provider reported it did to the inventory.
    pub events: Vec<InventoryEvent>,
}

impl ActionRecord {
    /// The pods that became ready through this action, as (cluster, pod).
    pub fn new_pods(&self) -> BTreeSet<(String, String)> {
        self.events
            .iter()
            .flat_map(|event| match event {
                InventoryEvent::PodReady { cluster, pod, .. } => vec![(cluster.clone(), pod.name.clone())],
                InventoryEvent::ClusterJoined { cluster, inventory } => inventory
                    .ready_pods
                    .values()
                    .flatten()
                    .map(|pod| (cluster.clone(), pod.name.clone()))
                    .collect(),
                _ => Vec::new(),
            })
            .collect()
    }
}

/// Requests counted over some stretch of the traffic.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Requests.
    pub requests: u64,
    /// Of these, succeeded.
    pub succeeded: u64,
    /// Of these, succeeded with the expected identity seen by the server.
    pub mtls: u64,
    /// Answered requests per answering cluster.
    pub per_cluster: BTreeMap<String, u64>,
}

impl Tally {
    fn add(&mut self, record: &RequestRecord, expected_identity: &str) {
        self.requests += 1;
        if record.succeeded() {
            self.succeeded += 1;
        }
        if is_mtls_verified(record, expected_identity) {
            self.mtls += 1;
        }
        if record.pod.is_some() || record.cluster.is_some() {
            let cluster = record.cluster.clone().unwrap_or_else(|| UNREPORTED.to_owned());
            *self.per_cluster.entry(cluster).or_default() += 1;
        }
    }

    /// `succeeded / requests`; 0 when empty.
    pub fn success_rate(&self) -> f64 {
        ratio(self.succeeded, self.requests)
    }

    /// `mtls / requests`; 0 when empty.
    pub fn mtls_rate(&self) -> f64 {
        ratio(self.mtls, self.requests)
    }

    /// Requests that did not succeed.
    pub fn failed(&self) -> u64 {
        self.requests - self.succeeded
    }
}

fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 { 0.0 } else { part as f64 / whole as f64 }
}

fn started_ms(record: &RequestRecord) -> u64 {
    record.started_us / 1000
}

/// Buckets `records` by start time into `bucket_ms`-wide buckets (at least 1 ms) and attaches
/// `actions`.
pub fn timeline(
    records: &[RequestRecord],
    bucket_ms: u64,
    expected_identity: &str,
    actions: Vec<ActionRecord>,
) -> Timeline {
    let bucket_ms = bucket_ms.max(1);
    let mut tallies: BTreeMap<u64, Tally> = BTreeMap::new();
    for record in records {
        let start_ms = started_ms(record) / bucket_ms * bucket_ms;
        tallies.entry(start_ms).or_default().add(record, expected_identity);
    }
    Timeline {
        bucket_ms,
        buckets: tallies
            .into_iter()
            .map(|(start_ms, tally)| Bucket {
                start_ms,
                requests: tally.requests,
                succeeded: tally.succeeded,
                mtls: tally.mtls,
                per_cluster: tally.per_cluster,
            })
            .collect(),
        actions,
    }
}

/// The requests started in `[from_ms, to_ms)`.
pub fn window(records: &[RequestRecord], from_ms: u64, to_ms: u64, expected_identity: &str) -> Tally {
    let mut tally = Tally::default();
    for record in records.iter().filter(|record| {
        let started = started_ms(record);
        from_ms <= started && started < to_ms
    }) {
        tally.add(record, expected_identity);
    }
    tally
}

/// How long success took to come back after an action.
#[derive(Clone, Debug, PartialEq)]
pub enum Recovery {
    /// From the bucket starting at `at_ms` on, every bucket up to the next action (or the end)
    /// reached the rate: `after_ms` after the action completed.
    Recovered {
        /// Start of the first bucket of the recovered stretch.
        at_ms: u64,
        /// `at_ms` minus the action's completion (0 when the bucket holding the completion held).
        after_ms: u64,
    },
    /// No bucket from the action's completion on (to the next action or the end) held requests.
    NoTraffic,
    /// Buckets held requests, but success stayed below the rate to the next action or the end;
    /// the best rate seen.
    Never {
        /// The best bucket success rate after the action.
        best: f64,
    },
}

/// When success came back to `rate` after the action named `after` (see [`Recovery`]); `None`
/// when the timeline has no such action.
pub fn recovery(timeline: &Timeline, after: &str, rate: f64) -> Option<Recovery> {
    let index = timeline.actions.iter().position(|action| action.name == after)?;
    let completed = timeline.actions[index].completed_ms;
    let until = timeline.actions.get(index + 1).map_or(u64::MAX, |next| next.started_ms);
    let from_bucket = completed / timeline.bucket_ms * timeline.bucket_ms;
    let after: Vec<&Bucket> = timeline
        .buckets
        .iter()
        .filter(|bucket| bucket.start_ms >= from_bucket && bucket.start_ms < until)
        .collect();
    if after.is_empty() {
        return Some(Recovery::NoTraffic);
    }
    // The recovered stretch is the longest tail of buckets that all reach the rate.
    let tail_start = after
        .iter()
        .rposition(|bucket| bucket.success_rate() < rate)
        .map_or(0, |last_bad| last_bad + 1);
    Some(match after.get(tail_start) {
        Some(bucket) => Recovery::Recovered {
            at_ms: bucket.start_ms,
            after_ms: bucket.start_ms.saturating_sub(completed),
        },
        None => Recovery::Never {
            best: after.iter().map(|bucket| bucket.success_rate()).fold(0.0, f64::max),
        },
    })
}

/// Convergence after one action that brought new pods: from its completion to the first reply
/// from one of them.
#[derive(Clone, Debug, PartialEq)]
pub struct Convergence {
    /// The action's name.
    pub action: String,
    /// How many pods became ready.
    pub new_pods: usize,
    /// Milliseconds from the action's completion to the first reply by a new pod; `None` when no
    /// new pod answered.
    pub millis: Option<u64>,
}

/// Convergence after every action that reported new ready pods (a scale-up, a cluster joining).
pub fn convergences(timeline: &Timeline, records: &[RequestRecord]) -> Vec<Convergence> {
    timeline
        .actions
        .iter()
        .filter_map(|action| {
            let new_pods = action.new_pods();
            if new_pods.is_empty() {
                return None;
            }
            let completed_us = action.completed_ms.saturating_mul(1000);
            let first_reply_us = records
                .iter()
                .filter(|record| match (&record.cluster, &record.pod) {
                    (Some(cluster), Some(pod)) => new_pods.contains(&(cluster.clone(), pod.clone())),
                    _ => false,
                })
                .map(|record| record.started_us.saturating_add(record.latency_us))
                .filter(|replied_us| *replied_us >= completed_us)
                .min();
            Some(Convergence {
                action: action.name.clone(),
                new_pods: new_pods.len(),
                millis: first_reply_us.map(|replied_us| (replied_us - completed_us) / 1000),
            })
        })
        .collect()
}

/// Requests answered by a cluster after its leaveCluster action completed.
#[derive(Clone, Debug, PartialEq)]
pub struct CallsAfterLeave {
    /// The action's name.
    pub action: String,
    /// The cluster that left.
    pub cluster: String,
    /// Requests whose reply came after the completion, whoever answered: the samples.
    pub replies_after: u64,
    /// Of these, replies from the cluster that left.
    pub from_cluster: u64,
}

/// For every leaveCluster action: the replies after it completed, and how many came from the
/// cluster that left.
pub fn calls_after_leave(timeline: &Timeline, records: &[RequestRecord]) -> Vec<CallsAfterLeave> {
    timeline
        .actions
        .iter()
        .filter(|action| matches!(action.change, WorldChange::LeaveCluster { .. }))
        .map(|action| {
            let completed_us = action.completed_ms.saturating_mul(1000);
            let after: Vec<&RequestRecord> = records
                .iter()
                .filter(|record| record.started_us.saturating_add(record.latency_us) >= completed_us)
                .collect();
            CallsAfterLeave {
                action: action.name.clone(),
                cluster: action.cluster.clone(),
                replies_after: after.len() as u64,
                from_cluster: after
                    .iter()
                    .filter(|record| record.cluster.as_deref() == Some(action.cluster.as_str()))
                    .count() as u64,
            }
        })
        .collect()
}
