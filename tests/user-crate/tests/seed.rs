//! A user's integration tests: the seed scenario on the local provider, from libtest's
//! multi-threaded process and from `#[tokio::test]`, and a scenario built in code.

use std::path::PathBuf;

use meshfed::{Error, ProviderKind, Run, ScenarioSource};

fn seed() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scenarios/seed.yaml")
}

/// libtest runs this on a thread of a multi-threaded process.
#[test]
fn seed_passes_with_full_mtls_from_a_plain_test() {
    let report = Run::new(ScenarioSource::file(seed()))
        .provider(ProviderKind::Local)
        .run()
        .expect("the seed runs");
    report.assert_passed();
    let http = report.phase("foo-to-bar-http");
    assert_eq!(http.requests_sent(), 400);
    assert_eq!(http.mtls_rate(), 1.0);
    assert_eq!(http.cluster_shares().get("cluster2"), Some(&1.0));
    assert_eq!(http.pod_share("cluster2", "bar-0"), Some(1.0));
    assert_eq!(report.phase("bar-to-foo-http").clusters_reached(), ["cluster1"]);
    // The tests/user_crate.rs runner looks for this line: a skipped or empty test cannot print it.
    println!(
        "user-crate: seed passed from a plain test: {} phases, mtls {}",
        report.phases().count(),
        http.mtls_rate()
    );
}

#[tokio::test]
async fn seed_passes_from_a_tokio_test() {
    let report = Run::new(ScenarioSource::file(seed()))
        .run_async()
        .await
        .expect("the seed runs");
    report.assert_passed();
    assert_eq!(report.phase("foo-to-bar-tcp").mtls_rate(), 1.0);
    println!("user-crate: seed passed from a tokio test");
}

/// A scenario built in code whose expectation cannot hold: the report says so, and
/// `assert_passed` panics naming the failed check with its observed value.
#[test]
fn failed_expectation_is_reported_and_assert_passed_names_it() {
    let text = std::fs::read_to_string(seed()).unwrap().replacen(
        "clustersReached: [cluster2]",
        "clustersReached: [cluster1]",
        1,
    );
    let report = Run::new(ScenarioSource::yaml("wrong-cluster.yaml", text))
        .run()
        .expect("the run completes");
    assert!(!report.passed());
    assert!(!report.phase("foo-to-bar-http").passed());
    assert!(report.phase("foo-to-bar-tcp").passed());
    let failures = report.failures();
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert!(
        failures[0].contains("phase foo-to-bar-http") && failures[0].contains("cluster1"),
        "{failures:?}"
    );
    let panic = std::panic::catch_unwind(|| report.assert_passed()).expect_err("assert_passed panics");
    let message = panic.downcast_ref::<String>().expect("a formatted message");
    assert!(
        message.contains("failed 1 check(s)") && message.contains("foo-to-bar-http"),
        "{message}"
    );
    println!("user-crate: failed expectation reported");
}

#[test]
fn bad_scenario_is_bad_input_with_its_position() {
    let outcome = Run::new(ScenarioSource::yaml("typo.yaml", "name: seed\nclusterz: []\n")).run();
    match outcome {
        Err(Error::BadInput { message }) => assert!(message.starts_with("typo.yaml:2:"), "{message}"),
        other => panic!("expected bad input, got {other:?}"),
    }
    println!("user-crate: bad input reported");
}
