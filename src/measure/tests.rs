//! Behaviour of [`measure`](super::measure) on hand-built request records.

use super::*;

/// The identity every answered record is verified with.
pub(crate) const FOO: &str = "spiffe://cluster.local/ns/ns1/sa/foo";

/// A request answered by `pod` in `cluster` over server-side connection `connection`, verified
/// with the expected identity, taking 1 ms.
pub(crate) fn answered(seq: u64, cluster: &str, pod: &str, connection: &str) -> RequestRecord {
    RequestRecord {
        started_us: 0,
        seq,
        target: "10.96.0.10:80".into(),
        status: Some(200),
        error: None,
        pod: Some(pod.into()),
        cluster: Some(cluster.into()),
        peer_identity: Some(FOO.into()),
        latency_us: 1_000,
        connection: seq,
        server_connection: Some(connection.into()),
    }
}

/// A request that got no reply, failing after 5 ms.
pub(crate) fn failed(seq: u64, message: &str) -> RequestRecord {
    RequestRecord {
        started_us: 0,
        seq,
        target: "10.96.0.10:80".into(),
        status: None,
        error: Some(message.into()),
        pod: None,
        cluster: None,
        peer_identity: None,
        latency_us: 5_000,
        connection: seq,
        server_connection: None,
    }
}

fn expect(cluster: &str, pod: &str, share: f64) -> ExpectedPod {
    ExpectedPod {
        pod: pod.into(),
        cluster: cluster.into(),
        share,
    }
}

/// `count` requests to one pod, each on its own server-side connection, numbered from `first_seq`.
fn spread(first_seq: u64, count: u64, cluster: &str, pod: &str) -> Vec<RequestRecord> {
    (first_seq..first_seq + count)
        .map(|seq| answered(seq, cluster, pod, &format!("{pod}-conn-{seq}")))
        .collect()
}

/// `count` requests to one pod, all on one server-side connection.
fn pooled(first_seq: u64, count: u64, cluster: &str, pod: &str) -> Vec<RequestRecord> {
    (first_seq..first_seq + count)
        .map(|seq| answered(seq, cluster, pod, &format!("{pod}-pooled")))
        .collect()
}

/// The seed's topology: one local bar pod, two remote ones, each expected to get a third.
fn one_local_two_remote() -> Vec<ExpectedPod> {
    vec![
        expect("cluster1", "bar-0", 1.0 / 3.0),
        expect("cluster2", "bar-0", 1.0 / 3.0),
        expect("cluster2", "bar-1", 1.0 / 3.0),
    ]
}

fn pod<'a>(measurement: &'a PhaseMeasurement, cluster: &str, name: &str) -> &'a PodLoad {
    measurement
        .pods
        .iter()
        .find(|pod| pod.cluster == cluster && pod.pod == name)
        .unwrap()
}

fn assert_close(actual: f64, expected: f64) {
    assert!((actual - expected).abs() < 1e-9, "expected {expected}, got {actual}");
}

#[test]
fn uniform_counts_have_tvd_zero_and_high_p_value() {
    let records = [
        spread(0, 200, "cluster1", "bar-0"),
        spread(200, 200, "cluster2", "bar-0"),
        spread(400, 200, "cluster2", "bar-1"),
    ]
    .concat();

    let measurement = measure(&records, &one_local_two_remote(), FOO);

    for skew in [&measurement.request_skew, &measurement.connection_skew] {
        assert_eq!(skew.samples, 600);
        assert_close(skew.total_variation_distance, 0.0);
        assert_close(skew.chi_square, 0.0);
        assert_close(skew.max_ratio, 1.0);
        assert_eq!(skew.degrees_of_freedom, 2);
        assert!(skew.p_value > 0.99, "p = {}", skew.p_value);
    }
    assert!(!measurement.connection_limited);
    assert_eq!(measurement.connection_note, None);
}

#[test]
fn all_requests_on_one_pod_of_two_gives_max_ratio_two() {
    let records = spread(0, 100, "cluster1", "bar-0");
    let expected = [expect("cluster1", "bar-0", 0.5), expect("cluster1", "bar-1", 0.5)];

    let measurement = measure(&records, &expected, FOO);

    let skew = &measurement.request_skew;
    assert_close(skew.max_ratio, 2.0);
    assert_eq!(skew.max_ratio_at.as_deref(), Some("cluster1/bar-0"));
    assert_close(skew.total_variation_distance, 0.5);
    assert_close(skew.chi_square, 100.0);
    assert_eq!(skew.degrees_of_freedom, 1);
    assert!(skew.p_value < 1e-20, "p = {}", skew.p_value);
    assert_eq!(pod(&measurement, "cluster1", "bar-1").requests, 0);
}

#[test]
fn gateway_weight_one_skew_is_detected_at_the_local_pod() {
    // DESIGN §3 measured 300 / 150 / 150 with a connection per request and gateway weight 1.
    let records = [
        spread(0, 300, "cluster1", "bar-0"),
        spread(300, 150, "cluster2", "bar-0"),
        spread(450, 150, "cluster2", "bar-1"),
    ]
    .concat();

    let measurement = measure(&records, &one_local_two_remote(), FOO);

    let skew = &measurement.connection_skew;
    assert_close(skew.max_ratio, 1.5);
    assert_eq!(skew.max_ratio_at.as_deref(), Some("cluster1/bar-0"));
    assert_close(skew.total_variation_distance, 0.5 - 1.0 / 3.0);
    assert!(skew.p_value < 1e-10, "p = {}", skew.p_value);
    let cluster_skew = &measurement.cluster_connection_skew;
    assert_close(cluster_skew.max_ratio, 1.5);
    assert_eq!(cluster_skew.max_ratio_at.as_deref(), Some("cluster1"));
}

#[test]
fn mtls_rate_counts_only_expected_identity() {
    let mut wrong_identity = answered(1, "cluster2", "bar-0", "c1");
    wrong_identity.peer_identity = Some("spiffe://cluster.local/ns/ns9/sa/mallory".into());
    let mut no_identity = answered(2, "cluster2", "bar-0", "c2");
    no_identity.peer_identity = None;
    let mut failed_with_identity = answered(3, "cluster2", "bar-0", "c3");
    failed_with_identity.status = Some(503);
    let records = [
        answered(0, "cluster2", "bar-0", "c0"),
        wrong_identity,
        no_identity,
        failed_with_identity,
        answered(4, "cluster2", "bar-0", "c4"),
    ];

    let measurement = measure(&records, &[expect("cluster2", "bar-0", 1.0)], FOO);

    assert_eq!(measurement.attempted, 5);
    assert_eq!(measurement.succeeded, 4);
    assert_eq!(measurement.mtls_verified, 2);
    assert_close(measurement.mtls_rate, 0.4);
    assert_eq!(pod(&measurement, "cluster2", "bar-0").mtls_verified, 2);
    assert_eq!(measurement.clusters[0].mtls_verified, 2);
    assert_eq!(
        measurement.unverified_identities,
        vec![
            IdentityCount {
                identity: None,
                count: 1
            },
            IdentityCount {
                identity: Some("spiffe://cluster.local/ns/ns9/sa/mallory".into()),
                count: 1
            },
        ]
    );
}

/// A TCP call without a client identity used to read "seen as -" (Envoy's placeholder) where an
/// HTTP one read "seen as no identity"; both are the same fact and group together.
#[test]
fn envoys_dash_placeholder_and_a_missing_identity_group_as_no_identity() {
    let mut tcp_plain = answered(0, "cluster2", "bar-0", "c0");
    tcp_plain.peer_identity = Some("-".into());
    let mut http_plain = answered(1, "cluster2", "bar-0", "c1");
    http_plain.peer_identity = None;
    let mut empty = answered(2, "cluster2", "bar-0", "c2");
    empty.peer_identity = Some(String::new());

    let measurement = measure(
        &[tcp_plain, http_plain, empty],
        &[expect("cluster2", "bar-0", 1.0)],
        FOO,
    );

    assert_eq!(
        measurement.unverified_identities,
        vec![IdentityCount {
            identity: None,
            count: 3
        }]
    );
    assert_eq!(measurement.plaintext_calls, 3);
}

#[test]
fn pooled_connections_are_reported_connection_limited() {
    // DESIGN §3: with the client's pooled connection, 300 / 300 / 0.
    let records = [
        pooled(0, 300, "cluster1", "bar-0"),
        pooled(300, 300, "cluster2", "bar-0"),
    ]
    .concat();

    let measurement = measure(&records, &one_local_two_remote(), FOO);

    assert!(measurement.connection_limited);
    let note = measurement.connection_note.as_deref().unwrap();
    assert!(
        note.contains("600 request(s) rode 2 server-side connection(s)"),
        "{note}"
    );
    assert_eq!(measurement.connection_skew.samples, 2);
    assert_close(measurement.connection_skew.min_expected_count, 2.0 / 3.0);
    assert_eq!(pod(&measurement, "cluster2", "bar-0").connections, 1);
    assert_eq!(pod(&measurement, "cluster2", "bar-1").requests, 0);
    assert_close(measurement.request_skew.max_ratio, 1.5);
    assert!(measurement.request_skew.p_value < 1e-10);
}

#[test]
fn enough_connections_are_not_connection_limited() {
    // 15 connections over 3 equal pods: exactly 5 expected per pod, the rule's boundary.
    let records = [
        spread(0, 5, "cluster1", "bar-0"),
        spread(5, 5, "cluster2", "bar-0"),
        spread(10, 5, "cluster2", "bar-1"),
    ]
    .concat();

    let measurement = measure(&records, &one_local_two_remote(), FOO);

    assert_close(measurement.connection_skew.min_expected_count, 5.0);
    assert!(!measurement.connection_limited);
}

#[test]
fn missing_server_connections_are_reported_connection_limited() {
    let mut records = spread(0, 30, "cluster1", "bar-0");
    for record in &mut records {
        record.server_connection = None;
    }

    let measurement = measure(&records, &[expect("cluster1", "bar-0", 1.0)], FOO);

    assert!(measurement.connection_limited);
    assert_eq!(measurement.requests_without_server_connection, 30);
    let note = measurement.connection_note.unwrap();
    assert!(note.contains("no server-side connection"), "{note}");
}

#[test]
fn failed_requests_count_as_attempted_not_succeeded() {
    let mut server_error = answered(2, "cluster2", "bar-0", "c2");
    server_error.status = Some(503);
    let records = [
        answered(0, "cluster2", "bar-0", "c0"),
        failed(1, "connection refused"),
        server_error,
    ];

    let measurement = measure(&records, &[expect("cluster2", "bar-0", 1.0)], FOO);

    assert_eq!(measurement.attempted, 3);
    assert_eq!(measurement.succeeded, 1);
    assert_close(measurement.success_rate, 1.0 / 3.0);
    assert_close(measurement.mtls_rate, 1.0 / 3.0);
    // The 503 came from the pod: it is load on that pod.
    assert_eq!(measurement.answered, 2);
    assert_eq!(pod(&measurement, "cluster2", "bar-0").requests, 2);
    let messages: Vec<&str> = measurement.errors.iter().map(|error| error.message.as_str()).collect();
    assert_eq!(messages, ["HTTP status 503", "connection refused"]);
    assert_eq!(measurement.latency.unwrap().samples, 1);
}

#[test]
fn errors_are_grouped_most_frequent_first_and_the_rest_counted() {
    let mut records = Vec::new();
    for message in ["a", "b", "c", "d", "e", "f", "g"] {
        let repeats = if message == "d" { 4 } else { 1 };
        for _ in 0..repeats {
            records.push(failed(records.len() as u64, message));
        }
    }

    let measurement = measure(&records, &[], FOO);

    assert_eq!(measurement.errors.len(), LISTED_GROUPS);
    assert_eq!(
        measurement.errors[0],
        MessageCount {
            message: "d".into(),
            count: 4
        }
    );
    let listed: u64 = measurement.errors.iter().map(|error| error.count).sum();
    assert_eq!(listed + measurement.errors_not_listed, 10);
    assert_eq!(measurement.errors_not_listed, 2);
}

#[test]
fn unexpected_responders_are_counted_and_enter_the_distance() {
    let records = [
        spread(0, 40, "cluster1", "bar-0"),
        spread(40, 40, "cluster1", "bar-1"),
        spread(80, 20, "cluster1", "stale-pod"),
    ]
    .concat();
    let expected = [expect("cluster1", "bar-0", 0.5), expect("cluster1", "bar-1", 0.5)];

    let measurement = measure(&records, &expected, FOO);

    assert_eq!(
        measurement.unexpected_responders,
        vec![UnexpectedResponder {
            pod: "stale-pod".into(),
            cluster: "cluster1".into(),
            requests: 20,
            connections: 20,
        }]
    );
    assert_eq!(measurement.request_skew.samples, 100);
    assert_eq!(measurement.request_skew.unexpected_samples, 20);
    // 0.4 / 0.4 observed against 0.5 / 0.5, plus 0.2 that should have gone nowhere.
    assert_close(measurement.request_skew.total_variation_distance, 0.2);
    // Between the expected pods the split is even.
    assert_close(measurement.request_skew.chi_square, 0.0);
    assert_close(pod(&measurement, "cluster1", "bar-0").request_share, 0.4);
    assert_eq!(measurement.clusters[0].requests, 80);
}

#[test]
fn responders_that_do_not_name_themselves_are_unexpected_not_dropped() {
    let mut nameless = answered(0, "cluster2", "bar-0", "c0");
    nameless.pod = None;
    let mut silent = answered(1, "cluster2", "bar-0", "c1");
    silent.pod = None;
    silent.cluster = None;

    let measurement = measure(&[nameless, silent], &[expect("cluster2", "bar-0", 1.0)], FOO);

    assert_eq!(measurement.unexpected_responders.len(), 1);
    assert_eq!(measurement.unexpected_responders[0].pod, UNREPORTED);
    assert_eq!(measurement.unexpected_responders[0].cluster, "cluster2");
    assert_eq!(measurement.succeeded_without_responder, 1);
    assert_eq!(measurement.answered, 1);
}

#[test]
fn connections_count_distinct_server_connections_per_pod() {
    let mut records = Vec::new();
    for seq in 0..10 {
        records.push(answered(seq, "cluster1", "bar-0", &format!("c{}", seq % 2)));
        records.push(answered(seq + 10, "cluster2", "bar-0", &format!("c{}", seq % 5)));
    }
    let expected = [expect("cluster1", "bar-0", 0.5), expect("cluster2", "bar-0", 0.5)];

    let measurement = measure(&records, &expected, FOO);

    let local = pod(&measurement, "cluster1", "bar-0");
    let remote = pod(&measurement, "cluster2", "bar-0");
    // The same peer address seen by two pods is two connections.
    assert_eq!((local.connections, remote.connections), (2, 5));
    assert_close(local.connection_share, 2.0 / 7.0);
    assert_close(local.request_share, 0.5);
}

#[test]
fn same_pod_name_in_two_clusters_is_two_pods() {
    let records = [spread(0, 3, "cluster1", "bar-0"), spread(3, 1, "cluster2", "bar-0")].concat();
    let expected = [expect("cluster1", "bar-0", 0.5), expect("cluster2", "bar-0", 0.5)];

    let measurement = measure(&records, &expected, FOO);

    assert_eq!(pod(&measurement, "cluster1", "bar-0").requests, 3);
    assert_eq!(pod(&measurement, "cluster2", "bar-0").requests, 1);
    assert!(measurement.unexpected_responders.is_empty());
}

#[test]
fn cluster_rows_aggregate_their_pods() {
    let records = [
        spread(0, 300, "cluster1", "bar-0"),
        pooled(300, 200, "cluster2", "bar-0"),
        pooled(500, 100, "cluster2", "bar-1"),
    ]
    .concat();

    let measurement = measure(&records, &one_local_two_remote(), FOO);

    let remote = &measurement.clusters[1];
    assert_eq!(remote.cluster, "cluster2");
    assert_eq!(remote.pods, 2);
    assert_eq!(remote.requests, 300);
    assert_close(remote.request_share, 0.5);
    assert_eq!(remote.connections, 2);
    assert_close(remote.connection_share, 2.0 / 302.0);
    assert_close(remote.expected_share, 2.0 / 3.0);
    assert_close(measurement.cluster_request_skew.max_ratio, 1.5);
}

#[test]
fn expected_weights_are_normalised_to_shares() {
    let records = [
        spread(0, 200, "cluster1", "bar-0"),
        spread(200, 400, "cluster2", "bar-0"),
    ]
    .concat();
    let weights = [expect("cluster1", "bar-0", 1.0), expect("cluster2", "bar-0", 2.0)];

    let measurement = measure(&records, &weights, FOO);

    assert_close(pod(&measurement, "cluster2", "bar-0").expected_share, 2.0 / 3.0);
    assert_close(measurement.request_skew.total_variation_distance, 0.0);
}

#[test]
fn zero_share_pod_is_listed_but_not_tested() {
    let records = [
        spread(0, 50, "cluster1", "bar-0"),
        spread(50, 50, "cluster1", "draining"),
    ]
    .concat();
    let expected = [expect("cluster1", "bar-0", 1.0), expect("cluster1", "draining", 0.0)];

    let measurement = measure(&records, &expected, FOO);

    let skew = &measurement.request_skew;
    assert_eq!(skew.degrees_of_freedom, 0);
    assert_eq!(skew.max_ratio_at.as_deref(), Some("cluster1/bar-0"));
    assert_close(skew.max_ratio, 0.5);
    assert_close(skew.total_variation_distance, 0.5);
    assert_eq!(pod(&measurement, "cluster1", "draining").requests, 50);
}

#[test]
fn latency_percentiles_use_nearest_rank_over_successful_requests() {
    let mut records: Vec<RequestRecord> = (1..=100)
        .map(|seq| {
            let mut record = answered(seq, "cluster1", "bar-0", "c");
            record.latency_us = seq * 10;
            record
        })
        .collect();
    let mut timed_out = failed(101, "timeout");
    timed_out.latency_us = 10_000_000;
    records.push(timed_out);

    let measurement = measure(&records, &[expect("cluster1", "bar-0", 1.0)], FOO);

    assert_eq!(
        measurement.latency,
        Some(LatencyPercentiles {
            samples: 100,
            p50_us: 500,
            p90_us: 900,
            p99_us: 990,
        })
    );
}

#[test]
fn clusters_reached_are_sorted_and_distinct() {
    let records = [
        answered(0, "cluster3", "bar-0", "c0"),
        answered(1, "cluster1", "bar-0", "c1"),
        answered(2, "cluster3", "bar-1", "c2"),
        failed(3, "reset"),
    ];

    let measurement = measure(&records, &[], FOO);

    assert_eq!(measurement.clusters_reached, ["cluster1", "cluster3"]);
}

#[test]
fn empty_phase_has_zero_rates_and_no_latency() {
    let measurement = measure(&[], &one_local_two_remote(), FOO);

    assert_eq!(measurement.attempted, 0);
    assert_eq!(measurement.success_rate, 0.0);
    assert_eq!(measurement.mtls_rate, 0.0);
    assert_eq!(measurement.latency, None);
    assert_eq!(measurement.request_skew.p_value, 1.0);
    assert!(measurement.connection_limited);
    assert_eq!(measurement.pods.len(), 3);
}

#[test]
fn measurement_round_trips_through_json_with_snake_case_fields() {
    let records = [
        pooled(0, 10, "cluster1", "bar-0"),
        vec![failed(10, "connection refused")],
    ]
    .concat();
    let measurement = measure(&records, &one_local_two_remote(), FOO);

    let json = serde_json::to_value(&measurement).unwrap();
    for field in [
        "attempted",
        "success_rate",
        "mtls_verified",
        "mtls_rate",
        "connection_limited",
        "connection_note",
        "clusters_reached",
    ] {
        assert!(json.get(field).is_some(), "missing {field} in {json}");
    }
    assert!(json["request_skew"].get("total_variation_distance").is_some());
    assert!(json["pods"][0].get("connection_share").is_some());
    let back: PhaseMeasurement = serde_json::from_value(json).unwrap();
    assert_eq!(back, measurement);
}

#[test]
fn share_tolerance_accepts_the_measured_even_split_and_rejects_the_skewed_one() {
    // With a connection per request, 600 requests are 600 independent samples.
    let tolerance = share_tolerance(600, 1.0 / 3.0, 4.4);
    let even = [
        spread(0, 200, "cluster1", "bar-0"),
        spread(200, 200, "cluster2", "bar-0"),
        spread(400, 200, "cluster2", "bar-1"),
    ]
    .concat();
    let skewed = [
        spread(0, 300, "cluster1", "bar-0"),
        spread(300, 150, "cluster2", "bar-0"),
        spread(450, 150, "cluster2", "bar-1"),
    ]
    .concat();

    let within = |records: &[RequestRecord]| {
        measure(records, &one_local_two_remote(), FOO)
            .pods
            .iter()
            .all(|pod| (pod.connection_share - pod.expected_share).abs() <= tolerance)
    };

    assert!(within(&even));
    assert!(!within(&skewed));
}
