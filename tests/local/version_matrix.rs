//! `meshfed run --istio-version A --istio-version B` and `--compare-to` on the `local` provider
//! (real namespaces, real Envoy): a documented behaviour change between two Istio versions shows up
//! in the diff, versions with no emulated difference diff clean, and a baseline of another scenario
//! is refused before anything runs. Needs what `meshfed setup` checks; skips (counted) elsewhere.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::local_provider;
use crate::support::marker;
use crate::support::meshfed_command::MESHFED;
use crate::support::temp_dir::temp_dir;
use local_provider::local_provider_available;
use marker::{processes_with_marker, unique_marker};

/// Two short runs (400 requests per phase) and their teardown take seconds; this bounds a hang.
const RUN_DEADLINE: Duration = Duration::from_secs(300);

fn scenario(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios").join(name)
}

/// Runs meshfed with `args` under a unique marker, waits at most [`RUN_DEADLINE`] (then kills it
/// and fails naming the command), and checks that none of its processes outlived it.
fn meshfed(test: &str, args: &[&str]) -> Output {
    let marker = unique_marker(test);
    let out = temp_dir(&format!("{test}-out"));
    let stdout_path = out.path().join("stdout");
    let stderr_path = out.path().join("stderr");
    let mut child = Command::new(MESHFED)
        .args(args)
        .env("MESHFED_TEST_MARKER", &marker)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout_path).unwrap())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + RUN_DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "meshfed {args:?} did not finish within {RUN_DEADLINE:?}; stderr:\n{}",
                std::fs::read_to_string(&stderr_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let leftover_deadline = Instant::now() + Duration::from_secs(10);
    while !processes_with_marker(&marker).is_empty() && Instant::now() < leftover_deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        processes_with_marker(&marker),
        Vec::<u32>::new(),
        "nothing of meshfed {args:?} outlives it"
    );
    Output {
        status,
        stdout: std::fs::read(&stdout_path).unwrap(),
        stderr: std::fs::read(&stderr_path).unwrap(),
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// docs/fidelity.md 2b: from 1.1 to 1.18 a gateway's passthrough cluster for a host with a
/// same-host ServiceEntry also holds the other clusters' gateways, so connections bounce between
/// gateways; from 1.19 it holds local pods only. gateway-loop.yaml counts the hops.
#[test]
fn the_gateway_bounce_fixed_after_istio_1_18_shows_up_in_the_version_matrix_diff() {
    const TEST: &str = "the_gateway_bounce_fixed_after_istio_1_18_shows_up_in_the_version_matrix_diff";
    if !local_provider_available() {
        return;
    }
    let reports = temp_dir(TEST);
    let scenario = scenario("gateway-loop.yaml");
    let output = meshfed(
        TEST,
        &[
            "run",
            scenario.to_str().unwrap(),
            "--istio-version",
            "1.7.8",
            "--istio-version",
            "1.30.3",
            "--report-dir",
            reports.path().to_str().unwrap(),
        ],
    );
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    assert_eq!(
        output.status.code(),
        Some(1),
        "a flagged difference exits 1:\n{stdout}\n{stderr}"
    );
    for version in ["1.7.8", "1.30.3"] {
        assert!(
            reports.path().join(version).join("report.json").is_file(),
            "each version's report goes to <report-dir>/{version}/"
        );
        assert!(stdout.contains(&format!("=== Istio {version}")), "{stdout}");
    }
    assert!(stdout.contains("=== diff Istio 1.7.8 -> 1.30.3 ==="), "{stdout}");
    let flagged = stdout
        .lines()
        .find(|line| line.contains("gateway_hops:") && line.contains("[crossed: rate tolerance"))
        .unwrap_or_else(|| panic!("the gateway hops are flagged with the threshold they crossed:\n{stdout}"));
    assert!(
        flagged.contains(", 0 in B (0.000 per request)"),
        "1.30 does not bounce: {flagged}"
    );
    assert!(!flagged.contains(" 0 in A "), "1.7 bounces: {flagged}");
    assert!(
        stderr.contains("differences beyond the thresholds: 1.7.8 -> 1.30.3"),
        "{stderr}"
    );
    assert!(!stderr.contains("checks failed"), "both runs passed: {stderr}");
}

/// The local pod's share of a phase in `<reports>/<version>/report.json`, and the requests it
/// was measured over.
fn local_share(reports: &Path, version: &str, phase: &str) -> (f64, u64) {
    let text = std::fs::read_to_string(reports.join(version).join("report.json")).unwrap();
    let report: serde_json::Value = serde_json::from_str(&text).unwrap();
    let phase = report["phases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|candidate| candidate["name"] == phase)
        .unwrap_or_else(|| panic!("{version}: no phase {phase}"));
    let pods = phase["measurement"]["pods"].as_array().unwrap();
    let requests: u64 = pods.iter().map(|pod| pod["requests"].as_u64().unwrap()).sum();
    let local: u64 = pods
        .iter()
        .filter(|pod| pod["cluster"] == "cluster1")
        .map(|pod| pod["requests"].as_u64().unwrap())
        .sum();
    (local as f64 / requests.max(1) as f64, requests)
}

/// docs/fidelity.md row 5 (locality weights): 1.12-1.23 set `locality_weighted_lb_config` by
/// default (`pilot/pkg/networking/core/v1alpha3/cluster.go@1.12.0`), 1.24+ only on request
/// (`pilot/pkg/networking/core/cluster_traffic_policy.go@1.24.0`, istio/istio#52898). In
/// scenarios/locality-weights.yaml (local pod weight 1, gateway weight 3, remote replies 30 ms
/// slower, concurrency 4) 1.23 keeps the local pod at the weights' 25 % and 1.30's LEAST_REQUEST
/// favours it; the matrix's chi-square flags the split at the default alpha in each of three
/// repetitions.
#[test]
fn locality_weights_keep_the_split_on_1_23_and_1_30_favours_the_local_pod_in_the_matrix() {
    const TEST: &str = "locality_weights_keep_the_split_on_1_23_and_1_30_favours_the_local_pod_in_the_matrix";
    const PHASE: &str = "overlapping-requests-with-a-slower-remote";
    if !local_provider_available() {
        return;
    }
    let scenario = scenario("locality-weights.yaml");
    for repetition in 1..=3 {
        let reports = temp_dir(&format!("{TEST}-{repetition}"));
        let output = meshfed(
            TEST,
            &[
                "run",
                scenario.to_str().unwrap(),
                "--istio-version",
                "1.23.6",
                "--istio-version",
                "1.30.3",
                "--report-dir",
                reports.path().to_str().unwrap(),
            ],
        );
        let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
        assert_eq!(
            output.status.code(),
            Some(1),
            "repetition {repetition}: a flagged difference exits 1:\n{stdout}\n{stderr}"
        );
        assert!(!stderr.contains("checks failed"), "both runs passed: {stderr}");
        let (weighted, requests) = local_share(reports.path(), "1.23.6", PHASE);
        // Three standard errors of a 25 % share over the phase's requests.
        let bound = 3.0 * (0.25 * 0.75 / requests as f64).sqrt();
        assert!(
            (weighted - 0.25).abs() <= bound,
            "repetition {repetition}: 1.23 keeps the local pod at the weights' 25 % (within {bound:.3}): {weighted:.3}"
        );
        let (favoured, _) = local_share(reports.path(), "1.30.3", PHASE);
        assert!(
            favoured > 0.25 + bound,
            "repetition {repetition}: 1.30 favours the local pod: {favoured:.3}"
        );
        let flagged = stdout
            .lines()
            .find(|line| line.contains("shares by") && line.contains("chi-square"))
            .unwrap_or_else(|| panic!("repetition {repetition}: the matrix tests the shares:\n{stdout}"));
        assert!(
            stdout.contains("[crossed: share tolerance"),
            "repetition {repetition}: the share change is flagged at the default alpha ({flagged}):\n{stdout}"
        );
        eprintln!(
            "MEASURED repetition {repetition}: local share 1.23.6 {weighted:.3}, 1.30.3 {favoured:.3} over {requests} requests; {flagged}"
        );
    }
}

#[test]
fn versions_with_no_emulated_difference_diff_clean_in_the_matrix() {
    const TEST: &str = "versions_with_no_emulated_difference_diff_clean_in_the_matrix";
    if !local_provider_available() {
        return;
    }
    let scenario = scenario("gateway-loop.yaml");
    let output = meshfed(
        TEST,
        &[
            "run",
            scenario.to_str().unwrap(),
            "--istio-version",
            "1.29.0",
            "--istio-version",
            "1.30.3",
        ],
    );
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    assert_eq!(
        output.status.code(),
        Some(0),
        "clean matrix exits 0:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("=== diff Istio 1.29.0 -> 1.30.3 ==="), "{stdout}");
    assert!(
        stdout.contains("every run passed on 1.29.0, 1.30.3 and no neighbouring versions differ"),
        "{stdout}"
    );
}

#[test]
fn an_istio_version_outside_the_emulated_range_exits_2_saying_what_is_allowed() {
    let output = meshfed(
        "an_istio_version_outside_the_emulated_range_exits_2_saying_what_is_allowed",
        &[
            "run",
            scenario("seed.yaml").to_str().unwrap(),
            "--istio-version",
            "1.29.0",
            "--istio-version",
            "1.31.0",
        ],
    );
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("1.31"), "{stderr}");
    assert!(stderr.contains("use 1.1 to 1.30"), "{stderr}");
    assert!(output.stdout.is_empty(), "nothing ran");
}

#[test]
fn compare_to_a_report_of_another_scenario_exits_2_before_running() {
    const TEST: &str = "compare_to_a_report_of_another_scenario_exits_2_before_running";
    if !local_provider_available() {
        return;
    }
    let baseline = temp_dir(TEST);
    let seed = scenario("seed.yaml");
    let first = meshfed(
        TEST,
        &[
            "run",
            seed.to_str().unwrap(),
            "--report-dir",
            baseline.path().to_str().unwrap(),
        ],
    );
    assert_eq!(first.status.code(), Some(0), "{}", text(&first.stderr));
    // The same scenario compares (exit 0 or 1 by what changed); another scenario cannot.
    let other = meshfed(
        TEST,
        &[
            "run",
            scenario("gateway-loop.yaml").to_str().unwrap(),
            "--compare-to",
            baseline.path().to_str().unwrap(),
        ],
    );
    let stderr = text(&other.stderr);
    assert_eq!(other.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("cannot compare"), "{stderr}");
    assert!(
        stderr.contains("seed") && stderr.contains("gateway-loop"),
        "names both scenarios: {stderr}"
    );
    assert!(other.stdout.is_empty(), "nothing ran: {}", text(&other.stdout));
    let same = meshfed(
        TEST,
        &[
            "run",
            seed.to_str().unwrap(),
            "--compare-to",
            baseline.path().to_str().unwrap(),
        ],
    );
    let stdout = text(&same.stdout);
    assert!(stdout.contains("compared to "), "{stdout}");
    assert!(matches!(same.status.code(), Some(0 | 1)), "{}", text(&same.stderr));
}

/// The seed's topology with one phase that would run for a minute.
const LONG_SCENARIO: &str = "name: long-matrix
clusters:
  - { name: cluster1, region: region1, zone: zone1a, podCidr: 10.10.0.0/16, serviceCidr: 10.96.0.0/16 }
  - { name: cluster2, region: region2, zone: zone2a, podCidr: 10.20.0.0/16, serviceCidr: 10.97.0.0/16 }
services:
  - name: foo
    namespace: ns1
    ports: [{ name: http, number: 80, protocol: http }]
    replicas: { cluster1: 1 }
  - name: bar
    namespace: ns2
    ports: [{ name: http, number: 80, protocol: http }]
    replicas: { cluster2: 1 }
federation: { mode: serviceentry, endpointWeights: equal, locality: false, mtls: PERMISSIVE }
phases:
  - name: long-phase
    from: { service: foo.ns1, cluster: cluster1 }
    to: { service: bar.ns2, port: http }
    requests: 1000000
    concurrency: 2
    timeoutSeconds: 60
    expect:
      successRateAtLeast: 1.0
";

/// A SIGTERM to meshfed alone (a CI job cancelled, `kill PID`; not a terminal's Ctrl-C, which
/// reaches the whole process group) while a version's run is in its helper: the helper is stopped
/// and tears down, meshfed exits 130 at once, and the next version never starts.
#[test]
fn sigterm_to_meshfed_alone_stops_the_running_version_and_starts_no_other() {
    const TEST: &str = "sigterm_to_meshfed_alone_stops_the_running_version_and_starts_no_other";
    if !local_provider_available() {
        return;
    }
    let dir = temp_dir(TEST);
    let scenario = dir.path().join("long.yaml");
    std::fs::write(&scenario, LONG_SCENARIO).unwrap();
    let reports = dir.path().join("reports");
    let stderr_path = dir.path().join("stderr");
    let marker = unique_marker(TEST);
    let mut child = Command::new(MESHFED)
        .args(["run", scenario.to_str().unwrap()])
        .args(["--istio-version", "1.29.0", "--istio-version", "1.30.3"])
        .args(["--report-dir", reports.to_str().unwrap()])
        .env("MESHFED_TEST_MARKER", &marker)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap();
    let stderr = || std::fs::read_to_string(&stderr_path).unwrap_or_default();
    // The first version's world is up once its Envoys run (the helper carries the marker).
    let envoy_running = || {
        processes_with_marker(&marker).into_iter().any(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmdline| String::from_utf8_lossy(&cmdline).contains("bootstrap.json"))
        })
    };
    let world_deadline = Instant::now() + Duration::from_secs(60);
    while !envoy_running() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "meshfed ended before its first run's world was up:\n{}",
            stderr()
        );
        assert!(
            Instant::now() < world_deadline,
            "no Envoy of the first run within 60 s:\n{}",
            stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(stderr().contains("Istio 1.29.0 (1 of 2): running"), "{}", stderr());

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let signalled = Instant::now();
    // The phase alone would run for 60 s; the helper's teardown grace is 20 s.
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if signalled.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("meshfed went on for 30 s after SIGTERM:\n{}", stderr());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let took = signalled.elapsed();
    let stderr = stderr();
    assert_eq!(status.code(), Some(130), "{stderr}");
    assert!(!stderr.contains("(2 of 2)"), "the next version started: {stderr}");
    assert!(
        !reports.join("1.29.0").join("report.json").exists(),
        "the interrupted run was stopped, not finished"
    );
    let leftover_deadline = Instant::now() + Duration::from_secs(10);
    while !processes_with_marker(&marker).is_empty() && Instant::now() < leftover_deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(processes_with_marker(&marker), Vec::<u32>::new(), "{stderr}");
    eprintln!("SIGTERM to exit 130 with the helper torn down: {took:?}");
}
