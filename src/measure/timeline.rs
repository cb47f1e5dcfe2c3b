//! A phase's traffic over time (pure): requests bucketed by when they started, with success,
//! mTLS and per-cluster answers per bucket, the actions taken while the traffic ran, and the
//! figures the change expectations are judged on (windows, recovery, convergence, calls after a
//! cluster left).
//!
//! A request that was still in flight when an action started straddles it: whether it succeeds
//! depends on how far it had got when the world changed, i.e. on the machine's load, not on the
//! mesh. Buckets and windows therefore count every request at the moment it started, except a
//! straddling one, which counts at the start of the (first) action it straddled: its outcome is
//! the action's ([`counted_at_ms`]). A window that ends where an action starts then holds only
//! requests that finished before the world changed, however slow the machine.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::change::WorldChange;
use crate::inventory::InventoryEvent;
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
    /// Requests still in flight when an action started, counted in buckets and windows at that
    /// action's start rather than at their own ([`counted_at_ms`]).
    #[serde(default)]
    pub straddling: u64,
}

/// The requests counted in `[start_ms, start_ms + bucket_ms)` of the traffic: started there, or
/// in flight when an action started there ([`counted_at_ms`]).
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
    /// When the federation the reconcile loop re-planned from its events was applied to every
    /// proxy; `None` when the re-plan changed nothing (or in reports written before this field).
    #[serde(default)]
    pub replanned_ms: Option<u64>,
    /// The change itself.
    pub change: WorldChange,
    /// What the provider reported it did to the inventory.
    pub events: Vec<InventoryEvent>,
    /// What makes the change unlike anything real Istio does, when something does: an upgrade
    /// that skips a minor version, which real Istio does not do in place and `local` emulates
    /// anyway. Absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
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

/// When a request counts for buckets and windows, in milliseconds from the start of the traffic:
/// when it started, or, when an action started while it was in flight (after it started and
/// before it ended, success or failure), when the first such action started. Action times are
/// whole milliseconds, rounded down, so a request that ended within the millisecond an action
/// started in counts as straddling it: the rule errs towards the action.
pub fn counted_at_ms(record: &RequestRecord, actions: &[ActionRecord]) -> u64 {
    straddled_action_ms(record, actions).unwrap_or(record.started_us / 1000)
}

/// The start of the first action `record` was in flight at, if any.
fn straddled_action_ms(record: &RequestRecord, actions: &[ActionRecord]) -> Option<u64> {
    let ended_us = record.started_us.saturating_add(record.latency_us);
    actions
        .iter()
        .map(|action| action.started_ms)
        .filter(|started_ms| {
            let started_us = started_ms.saturating_mul(1000);
            record.started_us < started_us && started_us < ended_us
        })
        .min()
}

/// Buckets `records` into `bucket_ms`-wide buckets (at least 1 ms) by [`counted_at_ms`] and
/// attaches `actions`.
pub fn timeline(
    records: &[RequestRecord],
    bucket_ms: u64,
    expected_identity: &str,
    actions: Vec<ActionRecord>,
) -> Timeline {
    let bucket_ms = bucket_ms.max(1);
    let mut tallies: BTreeMap<u64, Tally> = BTreeMap::new();
    let mut straddling = 0;
    for record in records {
        if straddled_action_ms(record, &actions).is_some() {
            straddling += 1;
        }
        let start_ms = counted_at_ms(record, &actions) / bucket_ms * bucket_ms;
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
        straddling,
    }
}

/// The requests counted in `[from_ms, to_ms)` ([`counted_at_ms`]): started there and not in
/// flight when a later action started, or in flight when an action started there.
pub fn window(
    records: &[RequestRecord],
    actions: &[ActionRecord],
    from_ms: u64,
    to_ms: u64,
    expected_identity: &str,
) -> Tally {
    let mut tally = Tally::default();
    for record in records.iter().filter(|record| {
        let counted = counted_at_ms(record, actions);
        from_ms <= counted && counted < to_ms
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

/// Convergence after one action that brought new pods: from its completion to the start of the
/// first request one of them answered (0 when one was answered already at the completion). The
/// start, not the reply: when traffic reaches the new pods is the mesh's convergence, how long
/// that request then took is the machine's (on a loaded machine calls took 150-350 ms, which
/// decided a 1 s bound).
#[derive(Clone, Debug, PartialEq)]
pub struct Convergence {
    /// The action's name.
    pub action: String,
    /// How many pods became ready.
    pub new_pods: usize,
    /// Milliseconds from the action's completion to the start of the first request a new pod
    /// answered (replied at or after the completion); `None` when no new pod answered.
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
            // Borrowed, so that matching a record allocates nothing.
            let is_new: BTreeSet<(&str, &str)> = new_pods
                .iter()
                .map(|(cluster, pod)| (cluster.as_str(), pod.as_str()))
                .collect();
            let first_start_us = records
                .iter()
                .filter(|record| match (&record.cluster, &record.pod) {
                    (Some(cluster), Some(pod)) => is_new.contains(&(cluster.as_str(), pod.as_str())),
                    _ => false,
                })
                .filter(|record| record.started_us.saturating_add(record.latency_us) >= completed_us)
                .map(|record| record.started_us)
                .min();
            Some(Convergence {
                action: action.name.clone(),
                new_pods: new_pods.len(),
                millis: first_start_us.map(|started_us| started_us.saturating_sub(completed_us) / 1000),
            })
        })
        .collect()
}

/// Requests answered by a cluster that left, among those started once the mesh knew: after the
/// federation re-planned without it was applied (after the leave completed when nothing was
/// re-planned). A request started before that may still reach the cluster and be answered while
/// its pods drain, as on Kubernetes; one started after it must not.
#[derive(Clone, Debug, PartialEq)]
pub struct CallsAfterLeave {
    /// The action's name.
    pub action: String,
    /// The cluster that left.
    pub cluster: String,
    /// From when requests count, in ms from the start of the traffic.
    pub from_ms: u64,
    /// Requests started from `from_ms` on, whoever answered (or none): the samples.
    pub requests_after: u64,
    /// Of these, requests answered by the cluster that left.
    pub from_cluster: u64,
}

/// For every leaveCluster action: the requests started once the federation without the cluster
/// was in force, and how many of them the cluster answered.
pub fn calls_after_leave(timeline: &Timeline, records: &[RequestRecord]) -> Vec<CallsAfterLeave> {
    timeline
        .actions
        .iter()
        .filter(|action| matches!(action.change, WorldChange::LeaveCluster { .. }))
        .map(|action| {
            let from_ms = action.replanned_ms.unwrap_or(action.completed_ms);
            let from_us = from_ms.saturating_mul(1000);
            let after: Vec<&RequestRecord> = records.iter().filter(|record| record.started_us >= from_us).collect();
            CallsAfterLeave {
                action: action.name.clone(),
                cluster: action.cluster.clone(),
                from_ms,
                requests_after: after.len() as u64,
                from_cluster: after
                    .iter()
                    .filter(|record| record.cluster.as_deref() == Some(action.cluster.as_str()))
                    .count() as u64,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::{ClusterInventory, GatewayAddress, ReadyPod};
    use crate::scenario::IstioVersion;

    const FOO: &str = "spiffe://cluster.local/ns/ns1/sa/foo";

    /// A request started at `started_ms`, answered by `pod@cluster` with the expected identity, or
    /// failed unanswered when `answered` is `None`.
    fn record(seq: u64, started_ms: u64, answered: Option<(&str, &str)>) -> RequestRecord {
        RequestRecord {
            seq,
            target: "10.96.0.11:80".into(),
            status: answered.map(|_| 200),
            error: answered.is_none().then(|| "connect refused".to_owned()),
            pod: answered.map(|(pod, _)| pod.to_owned()),
            cluster: answered.map(|(_, cluster)| cluster.to_owned()),
            peer_identity: answered.map(|_| FOO.to_owned()),
            started_us: started_ms * 1000,
            latency_us: 2000,
            connection: seq,
            server_connection: None,
        }
    }

    fn action(name: &str, change: WorldChange, started_ms: u64, completed_ms: u64) -> ActionRecord {
        ActionRecord {
            name: name.to_owned(),
            kind: change.kind().name().to_owned(),
            cluster: change.cluster().to_owned(),
            at_ms: started_ms,
            started_ms,
            completed_ms,
            replanned_ms: None,
            change,
            events: Vec::new(),
            note: None,
        }
    }

    fn stop(cluster: &str) -> WorldChange {
        WorldChange::StopGateway {
            cluster: cluster.to_owned(),
        }
    }

    #[test]
    fn buckets_count_requests_by_start_time_with_success_mtls_and_answering_clusters() {
        let records = [
            record(0, 0, Some(("bar-0", "cluster1"))),
            record(1, 99, Some(("bar-0", "cluster2"))),
            record(2, 100, None),
            record(3, 250, Some(("bar-1", "cluster2"))),
        ];
        let timeline = timeline(&records, 100, FOO, Vec::new());
        type Row<'a> = (u64, u64, u64, u64, Vec<(&'a str, u64)>);
        let rows: Vec<Row> = timeline
            .buckets
            .iter()
            .map(|bucket| {
                (
                    bucket.start_ms,
                    bucket.requests,
                    bucket.succeeded,
                    bucket.mtls,
                    bucket.per_cluster.iter().map(|(c, n)| (c.as_str(), *n)).collect(),
                )
            })
            .collect();
        assert_eq!(
            rows,
            [
                (0, 2, 2, 2, vec![("cluster1", 1), ("cluster2", 1)]),
                (100, 1, 0, 0, vec![]),
                (200, 1, 1, 1, vec![("cluster2", 1)]),
            ]
        );
    }

    #[test]
    fn a_window_holds_the_requests_started_in_its_half_open_range() {
        let records = [
            record(0, 9, Some(("bar-0", "cluster1"))),
            record(1, 10, None),
            record(2, 19, Some(("bar-0", "cluster2"))),
            record(3, 20, Some(("bar-0", "cluster2"))),
        ];
        let tally = window(&records, &[], 10, 20, FOO);
        assert_eq!((tally.requests, tally.succeeded, tally.failed()), (2, 1, 1));
        assert_eq!(tally.per_cluster.get("cluster2"), Some(&1));
        assert_eq!(window(&records, &[], 100, 200, FOO).requests, 0);
    }

    #[test]
    fn a_request_in_flight_when_an_action_starts_counts_at_that_action_in_windows_and_buckets() {
        let records = vec![
            // Ended at 992 ms, before the stop at 1000 ms.
            record(0, 990, Some(("bar-0", "cluster2"))),
            // In flight from 998 ms to 1010 ms: straddles the stop (and no later action).
            RequestRecord {
                latency_us: 12_000,
                ..record(1, 998, None)
            },
            record(2, 1001, Some(("bar-0", "cluster3"))),
            // In flight across both actions: counts at the first.
            RequestRecord {
                latency_us: 2_000_000,
                ..record(3, 999, None)
            },
            // Ended exactly when the stop started: not in flight at it.
            record(4, 998, Some(("bar-0", "cluster2"))),
        ];
        let actions = vec![
            action("gw-down", stop("cluster2"), 1000, 1003),
            action("again", stop("cluster3"), 1500, 1501),
        ];
        let before = window(&records, &actions, 0, 1000, FOO);
        assert_eq!((before.requests, before.failed()), (2, 0), "{before:?}");
        let after = window(&records, &actions, 1000, 1500, FOO);
        assert_eq!((after.requests, after.failed()), (3, 2), "{after:?}");
        assert_eq!(counted_at_ms(&records[3], &actions), 1000);
        assert_eq!(counted_at_ms(&records[2], &actions), 1001);
        let timeline = timeline(&records, 100, FOO, actions);
        let rows: Vec<(u64, u64, u64)> = timeline
            .buckets
            .iter()
            .map(|bucket| (bucket.start_ms, bucket.requests, bucket.succeeded))
            .collect();
        assert_eq!(rows, [(900, 2, 2), (1000, 3, 1)]);
        assert_eq!(timeline.straddling, 2);
    }

    /// 100 ms buckets of 10 requests each, `ok` of which succeed, from `from_ms` on.
    fn traffic(buckets: &[(u64, u64)]) -> Vec<RequestRecord> {
        let mut records = Vec::new();
        for (index, (start_ms, ok)) in buckets.iter().enumerate() {
            for i in 0..10 {
                let seq = index as u64 * 10 + i;
                let answered = (i < *ok).then_some(("bar-0", "cluster1"));
                records.push(record(seq, start_ms + i * 10, answered));
            }
        }
        records
    }

    #[test]
    fn recovery_is_the_start_of_the_last_stretch_of_buckets_at_the_rate_after_the_action() {
        let records = traffic(&[(0, 10), (100, 10), (200, 2), (300, 10), (400, 5), (500, 10), (600, 10)]);
        let actions = vec![action("gw-down", stop("cluster2"), 180, 210)];
        let timeline = timeline(&records, 100, FOO, actions);
        // Bucket 300 reached the rate but 400 fell again: success stayed up from 500 on.
        assert_eq!(
            recovery(&timeline, "gw-down", 0.9),
            Some(Recovery::Recovered {
                at_ms: 500,
                after_ms: 290
            })
        );
        assert_eq!(
            recovery(&timeline, "gw-down", 0.4),
            Some(Recovery::Recovered {
                at_ms: 300,
                after_ms: 90
            })
        );
        assert_eq!(
            recovery(&timeline, "gw-down", 0.2),
            Some(Recovery::Recovered {
                at_ms: 200,
                after_ms: 0
            }),
            "the bucket the action completed in already holds the lower rate"
        );
        assert_eq!(recovery(&timeline, "nothing", 0.9), None);
    }

    #[test]
    fn recovery_stops_at_the_next_action_and_says_when_it_never_came_or_nothing_ran() {
        let records = traffic(&[(0, 10), (100, 1), (200, 3), (300, 10)]);
        let actions = vec![
            action("gw-down", stop("cluster2"), 100, 100),
            action("again", stop("cluster3"), 300, 300),
            action("late", stop("cluster4"), 900, 900),
        ];
        let timeline = timeline(&records, 100, FOO, actions);
        assert_eq!(recovery(&timeline, "gw-down", 0.9), Some(Recovery::Never { best: 0.3 }));
        assert_eq!(recovery(&timeline, "late", 0.9), Some(Recovery::NoTraffic));
    }

    #[test]
    fn convergence_is_measured_from_the_action_to_the_start_of_the_first_request_a_new_pod_answered() {
        let mut scale_up = action(
            "scale-up",
            WorldChange::Scale {
                cluster: "cluster2".into(),
                service: "bar.ns2".into(),
                replicas: 2,
            },
            100,
            150,
        );
        scale_up.events = vec![InventoryEvent::PodReady {
            cluster: "cluster2".into(),
            service: "bar.ns2".into(),
            pod: ReadyPod {
                name: "bar-1".into(),
                region: "r".into(),
                zone: "z".into(),
            },
        }];
        let mut joined = action(
            "join",
            WorldChange::JoinCluster {
                cluster: "cluster3".into(),
            },
            300,
            320,
        );
        joined.events = vec![InventoryEvent::ClusterJoined {
            cluster: "cluster3".into(),
            inventory: ClusterInventory {
                gateway: GatewayAddress {
                    address: "192.0.2.3".into(),
                    port: 15443,
                    placeholder: false,
                },
                istio_version: IstioVersion::new(1, 30, 3),
                region: "r".into(),
                zone: "z".into(),
                ready_pods: [(
                    "bar.ns2".to_owned(),
                    vec![ReadyPod {
                        name: "bar-0".into(),
                        region: "r".into(),
                        zone: "z".into(),
                    }],
                )]
                .into(),
            },
        }];
        let records = [
            // bar-1 of cluster1 is not the new pod; bar-1 of cluster2 answers a request started
            // at 400 ms (replying at 402 ms, on a loaded machine it could be 750 ms).
            record(0, 200, Some(("bar-1", "cluster1"))),
            record(1, 400, Some(("bar-1", "cluster2"))),
            record(2, 500, Some(("bar-1", "cluster2"))),
        ];
        let timeline = timeline(&records, 100, FOO, vec![scale_up, joined]);
        assert_eq!(
            convergences(&timeline, &records),
            [
                Convergence {
                    action: "scale-up".into(),
                    new_pods: 1,
                    millis: Some(250),
                },
                Convergence {
                    action: "join".into(),
                    new_pods: 1,
                    millis: None,
                },
            ]
        );
    }

    #[test]
    fn calls_after_leave_count_requests_started_once_the_replanned_federation_was_applied() {
        let mut leave = action(
            "leave",
            WorldChange::LeaveCluster {
                cluster: "cluster2".into(),
            },
            100,
            120,
        );
        leave.replanned_ms = Some(200);
        let records = [
            // Started before the leave, answered by cluster2 after it completed: drained.
            record(0, 115, Some(("bar-0", "cluster2"))),
            // Started after the leave completed but before the re-plan reached the callers:
            // still routed to cluster2, which serves while it drains.
            record(1, 150, Some(("bar-0", "cluster2"))),
            record(2, 200, Some(("bar-0", "cluster2"))),
            record(3, 260, Some(("bar-0", "cluster1"))),
            record(4, 270, None),
        ];
        let timeline = timeline(&records, 100, FOO, vec![leave.clone()]);
        assert_eq!(
            calls_after_leave(&timeline, &records),
            [CallsAfterLeave {
                action: "leave".into(),
                cluster: "cluster2".into(),
                from_ms: 200,
                requests_after: 3,
                from_cluster: 1,
            }]
        );
        // Nothing re-planned: counted from the completion.
        leave.replanned_ms = None;
        let timeline = super::timeline(&records, 100, FOO, vec![leave]);
        let counted = &calls_after_leave(&timeline, &records)[0];
        assert_eq!(
            (counted.from_ms, counted.requests_after, counted.from_cluster),
            (120, 4, 2)
        );
    }
}
