//! `meshfed diff A B` end to end: real `local` runs compared (identical runs diff clean; equal
//! against ready-pods weights is flagged with the pods, their shares and the p-value), and reports
//! that cannot be compared (another scenario, another schema, malformed, missing) exit 2 saying why.
//! The real runs need what `meshfed setup` needs; without it they are skipped (never under CI).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::support::marker;
use crate::support::meshfed_command::MESHFED;
use crate::support::skip;
use crate::support::temp_dir::{TempDir, temp_dir};
use marker::{MARKER_ENV, processes_with_marker, unique_marker};

use meshfed::measure::{ExpectedPod, measure};
use meshfed::provider::{ProviderInfo, TlsFailures};
use meshfed::record::RequestRecord;
use meshfed::report::{PhaseReport, REPORT_SCHEMA, Report, ScenarioInfo, Timings};

/// `meshfed run` of the small scenarios here takes 5–15 s on a loaded 2-core machine.
const RUN_DEADLINE: Duration = Duration::from_secs(180);
/// `meshfed diff` reads two small files.
const DIFF_DEADLINE: Duration = Duration::from_secs(30);

/// One real run at a time: the runs share two cores with the rest of the suite.
static REAL_RUNS: Mutex<()> = Mutex::new(());

/// What a meshfed process did.
struct Outcome {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs meshfed with `args` and the marker, output to files in `dir`; kills it (by its own pid)
/// and fails the test if it is still running at `deadline`.
fn meshfed(args: &[&str], dir: &Path, label: &str, marker: &str, deadline: Duration) -> Outcome {
    let stdout_path = dir.join(format!("{label}.stdout"));
    let stderr_path = dir.join(format!("{label}.stderr"));
    let mut child = Command::new(MESHFED)
        .args(args)
        .env(MARKER_ENV, marker)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout_path).unwrap())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .expect("start meshfed");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for meshfed") {
            break status;
        }
        if started.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "meshfed {} did not finish within {deadline:?}; stderr:\n{}",
                args.join(" "),
                std::fs::read_to_string(&stderr_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Outcome {
        code: status.code(),
        stdout: std::fs::read_to_string(&stdout_path).unwrap(),
        stderr: std::fs::read_to_string(&stderr_path).unwrap(),
    }
}

fn diff(a: &Path, b: &Path, extra: &[&str], dir: &Path, label: &str) -> Outcome {
    let mut args = vec!["diff", a.to_str().unwrap(), b.to_str().unwrap()];
    args.extend_from_slice(extra);
    let marker = unique_marker(label);
    let outcome = meshfed(&args, dir, label, &marker, DIFF_DEADLINE);
    assert!(
        processes_with_marker(&marker).is_empty(),
        "meshfed diff left processes behind"
    );
    outcome
}

/// `meshfed setup` works here; otherwise the calling test is skipped (a failure under CI).
fn local_provider_available(dir: &Path) -> bool {
    let outcome = meshfed(
        &["setup"],
        dir,
        "setup",
        &unique_marker("diff-setup"),
        Duration::from_secs(900),
    );
    if outcome.code == Some(0) {
        true
    } else {
        skip::skip(&format!(
            "the local provider cannot run here (`meshfed setup` failed):\n{}{}",
            outcome.stdout, outcome.stderr
        ));
        false
    }
}

/// `meshfed run scenario --report-dir dir/<label>`: exit 0 expected; nothing of it may remain.
fn run_scenario(scenario: &Path, dir: &Path, label: &str) -> PathBuf {
    let report_dir = dir.join(label);
    let marker = unique_marker(label);
    let outcome = meshfed(
        &[
            "run",
            scenario.to_str().unwrap(),
            "--report-dir",
            report_dir.to_str().unwrap(),
        ],
        dir,
        label,
        &marker,
        RUN_DEADLINE,
    );
    assert_eq!(
        outcome.code,
        Some(0),
        "meshfed run {} failed:\n{}{}",
        scenario.display(),
        outcome.stdout,
        outcome.stderr
    );
    assert!(
        processes_with_marker(&marker).is_empty(),
        "meshfed run {label} left processes behind"
    );
    report_dir
}

#[test]
fn the_same_scenario_run_twice_diffs_clean_with_exit_0() {
    let dir = temp_dir("twice");
    let _one_at_a_time = REAL_RUNS.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if !local_provider_available(dir.path()) {
        return;
    }
    let seed = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/seed.yaml");
    let first = run_scenario(&seed, dir.path(), "first");
    let second = run_scenario(&seed, dir.path(), "second");

    // Report directories are accepted as well as report files.
    let text = diff(&first, &second, &[], dir.path(), "diff-text");
    assert_eq!(text.code, Some(0), "{}{}", text.stdout, text.stderr);
    assert!(text.stdout.contains("meshfed diff of scenario seed"), "{}", text.stdout);
    for phase in ["foo-to-bar-http", "foo-to-bar-tcp", "bar-to-foo-http"] {
        assert!(text.stdout.contains(&format!("\nphase {phase}\n")), "{}", text.stdout);
    }
    assert!(
        text.stdout.contains("no difference beyond the thresholds"),
        "{}",
        text.stdout
    );

    let json = diff(
        &first.join("report.json"),
        &second.join("report.json"),
        &["--format", "json"],
        dir.path(),
        "diff-json",
    );
    assert_eq!(json.code, Some(0), "{}", json.stderr);
    let value: serde_json::Value = serde_json::from_str(&json.stdout).expect("--format json prints JSON");
    assert_eq!(value["schema"], "meshfed.diff/v1");
    assert_eq!(value["differs"], false);
    assert_eq!(value["differences"].as_array().map(Vec::len), Some(0));
    assert_eq!(value["phases"].as_array().map(Vec::len), Some(3));
}

/// The skew topology (bar: 1 pod in cluster1, 3 in cluster2) with one phase named `weights`
/// using `weights` endpoint weights, one request at a time, each on its own connection.
fn weights_scenario(weights: &str) -> String {
    format!(
        "name: weights
clusters:
  - {{ name: cluster1, region: region1, zone: zone1a, podCidr: 10.10.0.0/16, serviceCidr: 10.96.0.0/16 }}
  - {{ name: cluster2, region: region2, zone: zone2a, podCidr: 10.20.0.0/16, serviceCidr: 10.97.0.0/16 }}
services:
  - name: foo
    namespace: ns1
    ports: [{{ name: http, number: 80, protocol: http }}]
    replicas: {{ cluster1: 1 }}
  - name: bar
    namespace: ns2
    ports: [{{ name: http, number: 80, protocol: http }}]
    replicas: {{ cluster1: 1, cluster2: 3 }}
federation:
  mode: serviceentry
  endpointWeights: equal
  locality: false
  mtls: PERMISSIVE
phases:
  - name: weights
    from: {{ service: foo.ns1, cluster: cluster1 }}
    to: {{ service: bar.ns2, port: http }}
    endpointWeights: {weights}
    requests: 600
    concurrency: 1
    connections: new-connection-per-request
    expect:
      mtlsRateAtLeast: 1.0
      successRateAtLeast: 1.0
"
    )
}

#[test]
fn equal_against_ready_pods_weights_on_an_uneven_topology_is_flagged_with_the_pods_shares_and_p_value() {
    let dir = temp_dir("weights");
    let _one_at_a_time = REAL_RUNS.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if !local_provider_available(dir.path()) {
        return;
    }
    let equal = dir.path().join("equal.yaml");
    let ready_pods = dir.path().join("ready-pods.yaml");
    std::fs::write(&equal, weights_scenario("equal")).unwrap();
    std::fs::write(&ready_pods, weights_scenario("ready-pods")).unwrap();
    let equal_run = run_scenario(&equal, dir.path(), "equal");
    let ready_pods_run = run_scenario(&ready_pods, dir.path(), "ready-pods");

    let text = diff(&equal_run, &ready_pods_run, &[], dir.path(), "diff-text");
    assert_eq!(text.code, Some(1), "{}{}", text.stdout, text.stderr);
    assert!(
        text.stdout
            .contains("settings differ: endpoint_weights equal -> ready-pods"),
        "{}",
        text.stdout
    );
    let flagged = text
        .stdout
        .lines()
        .find(|line| line.contains("phase weights: pod shares by requests:"))
        .unwrap_or_else(|| panic!("the pod split is not flagged:\n{}", text.stdout));
    // The local pod goes from about a half to about a quarter: named with both shares.
    assert!(flagged.contains("cluster1/bar-0 "), "{flagged}");
    assert!(flagged.contains("p = "), "{flagged}");
    assert!(
        flagged.ends_with("[crossed: share tolerance 5.0 points and alpha 0.001]"),
        "{flagged}"
    );
    assert!(
        text.stderr.contains("difference(s) beyond the thresholds"),
        "{}",
        text.stderr
    );

    let json = diff(
        &equal_run,
        &ready_pods_run,
        &["--format", "json"],
        dir.path(),
        "diff-json",
    );
    assert_eq!(json.code, Some(1), "{}", json.stderr);
    let value: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(value["differs"], true);
    let pods = &value["phases"][0]["pod_shares"];
    assert_eq!(pods["flagged"], true);
    assert_eq!(pods["unit"], "requests");
    let p_value = pods["test"]["p_value"].as_f64().unwrap();
    assert!(p_value < 0.001, "p = {p_value}");
    let local = pods["cells"]
        .as_array()
        .unwrap()
        .iter()
        .find(|cell| cell["cluster"] == "cluster1")
        .unwrap();
    // 600 one-at-a-time requests: a half and a quarter, each within 4.4 standard errors.
    let (share_a, share_b) = (local["share_a"].as_f64().unwrap(), local["share_b"].as_f64().unwrap());
    assert!(
        (share_a - 0.5).abs() < 0.09,
        "equal weights gave the local pod {share_a}"
    );
    assert!(
        (share_b - 0.25).abs() < 0.08,
        "ready-pods weights gave the local pod {share_b}"
    );
    assert_eq!(local["beyond_tolerance"], true);
}

// ---- Reports that cannot be compared: built in code, so these run everywhere. ----

fn built_report(scenario: &str) -> Report {
    let identity = "spiffe://cluster.local/ns/ns1/sa/foo";
    let records: Vec<RequestRecord> = (0..100)
        .map(|seq| RequestRecord {
            seq,
            target: "10.97.0.10:80".into(),
            status: Some(200),
            error: None,
            pod: Some("bar-0".into()),
            cluster: Some("cluster2".into()),
            peer_identity: Some(identity.into()),
            started_us: 0,
            latency_us: 1_500,
            connection: seq,
            server_connection: Some(format!("10.20.0.2:{seq}")),
        })
        .collect();
    let expected = [ExpectedPod {
        pod: "bar-0".into(),
        cluster: "cluster2".into(),
        share: 1.0,
    }];
    Report {
        schema: REPORT_SCHEMA.into(),
        meshfed_version: "0.1.0".into(),
        started_at: "2026-11-29T18:00:00Z".into(),
        host: None,
        exit_code: 0,
        clusters: Vec::new(),
        scenario: ScenarioInfo {
            name: scenario.into(),
            file: format!("scenarios/{scenario}.yaml"),
            description: None,
        },
        provider: ProviderInfo {
            name: "local".into(),
            emulates: Some("istio-gateway-connectivity".into()),
            mode: "root".into(),
            proxy: "envoy 1.40.0".into(),
        },
        timings: Timings::default(),
        service_entries: Vec::new(),
        isolation: Vec::new(),
        phases: vec![PhaseReport {
            name: "foo-to-bar-http".into(),
            from: "foo.ns1@cluster1".into(),
            to: "bar.ns2:80 (http)".into(),
            requests: 100,
            concurrency: 1,
            connections: "new-connection-per-request".into(),
            endpoint_weights: "equal".into(),
            faults: Vec::new(),
            expected_identity: identity.into(),
            measurement: measure(&records, &expected, identity),
            tls_failures: TlsFailures::default(),
            gateway_hops: Some(0),
            config_rejections: Vec::new(),
            timeline: None,
            caveats: Vec::new(),
            expectations: Vec::new(),
            passed: true,
        }],
        passed: true,
    }
}

fn write_report(dir: &TempDir, name: &str, report: &Report) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, serde_json::to_string_pretty(report).unwrap()).unwrap();
    path
}

#[test]
fn reports_of_two_different_scenarios_exit_2_naming_both() {
    let dir = temp_dir("scenarios");
    let seed = write_report(&dir, "seed.json", &built_report("seed"));
    let skew = write_report(&dir, "skew.json", &built_report("skew"));
    let outcome = diff(&seed, &skew, &[], dir.path(), "diff");
    assert_eq!(outcome.code, Some(2), "{}", outcome.stderr);
    assert!(outcome.stdout.is_empty(), "{}", outcome.stdout);
    assert!(
        outcome.stderr.contains("different scenarios (\"seed\" in")
            && outcome.stderr.contains("\"skew\" in")
            && outcome.stderr.contains("skew.json"),
        "{}",
        outcome.stderr
    );
}

#[test]
fn reports_of_two_schema_versions_exit_2_naming_both_schemas() {
    let dir = temp_dir("schemas");
    let current = write_report(&dir, "current.json", &built_report("seed"));
    // A future schema whose fields this meshfed cannot read: the schema is the message, not a
    // missing field.
    let future = dir.path().join("future.json");
    std::fs::write(&future, "{\"schema\": \"meshfed.report/v99\", \"runs\": []}\n").unwrap();
    let outcome = diff(&current, &future, &[], dir.path(), "diff");
    assert_eq!(outcome.code, Some(2), "{}", outcome.stderr);
    assert!(
        outcome
            .stderr
            .contains(&format!("different schema versions ({REPORT_SCHEMA:?} in"))
            && outcome.stderr.contains("\"meshfed.report/v99\" in"),
        "{}",
        outcome.stderr
    );
    let both_future = diff(&future, &future, &[], dir.path(), "diff-future");
    assert_eq!(both_future.code, Some(2));
    assert!(
        both_future
            .stderr
            .contains(&format!("compares {REPORT_SCHEMA:?} reports only")),
        "{}",
        both_future.stderr
    );
}

#[test]
fn a_malformed_report_exits_2_with_its_file_line_and_column() {
    let dir = temp_dir("malformed");
    let good = write_report(&dir, "good.json", &built_report("seed"));
    let broken = dir.path().join("broken.json");
    std::fs::write(
        &broken,
        format!("{{\n  \"schema\": {REPORT_SCHEMA:?},\n  \"phases\": [1,,]\n}}\n"),
    )
    .unwrap();
    let outcome = diff(&good, &broken, &[], dir.path(), "diff-syntax");
    assert_eq!(outcome.code, Some(2), "{}", outcome.stderr);
    assert!(
        outcome.stderr.contains(&format!("{}:3:16: ", broken.display())),
        "{}",
        outcome.stderr
    );

    // Valid JSON, right schema, wrong shape: the position of the offending value.
    let mut value = serde_json::to_value(built_report("seed")).unwrap();
    value["phases"][0]["requests"] = serde_json::json!("many");
    let wrong = dir.path().join("wrong.json");
    std::fs::write(&wrong, serde_json::to_string_pretty(&value).unwrap()).unwrap();
    let outcome = diff(&good, &wrong, &[], dir.path(), "diff-shape");
    assert_eq!(outcome.code, Some(2), "{}", outcome.stderr);
    let line = serde_json::to_string_pretty(&value)
        .unwrap()
        .lines()
        .position(|line| line.contains("\"many\""))
        .unwrap()
        + 1;
    assert!(
        outcome.stderr.contains(&format!("{}:{line}:", wrong.display()))
            && outcome
                .stderr
                .contains(&format!("does not match the report schema {REPORT_SCHEMA}")),
        "{}",
        outcome.stderr
    );
}

#[test]
fn a_missing_report_or_a_directory_without_one_exits_2() {
    let dir = temp_dir("missing");
    let good = write_report(&dir, "good.json", &built_report("seed"));
    let outcome = diff(&good, &dir.path().join("nowhere.json"), &[], dir.path(), "diff-missing");
    assert_eq!(outcome.code, Some(2));
    assert!(
        outcome.stderr.contains("nowhere.json: cannot read the report"),
        "{}",
        outcome.stderr
    );
    let empty = dir.path().join("empty-dir");
    std::fs::create_dir(&empty).unwrap();
    let outcome = diff(&empty, &good, &[], dir.path(), "diff-empty-dir");
    assert_eq!(outcome.code, Some(2));
    assert!(
        outcome.stderr.contains(&format!(
            "{}: cannot read the report",
            empty.join("report.json").display()
        )),
        "{}",
        outcome.stderr
    );
}

#[test]
fn thresholds_out_of_range_exit_2_saying_what_is_allowed() {
    let dir = temp_dir("thresholds");
    let good = write_report(&dir, "good.json", &built_report("seed"));
    let outcome = diff(&good, &good, &["--alpha", "1.5"], dir.path(), "diff-alpha");
    assert_eq!(outcome.code, Some(2));
    assert!(outcome.stderr.contains("outside 0 < alpha < 1"), "{}", outcome.stderr);
    let outcome = diff(&good, &good, &["--share-tolerance", "5"], dir.path(), "diff-share");
    assert_eq!(outcome.code, Some(2));
    assert!(outcome.stderr.contains("outside 0..=1"), "{}", outcome.stderr);
    // The same report against itself is clean: the flags, not the reports, were the problem.
    let outcome = diff(&good, &good, &[], dir.path(), "diff-clean");
    assert_eq!(outcome.code, Some(0), "{}", outcome.stderr);
}

#[test]
fn a_tighter_rate_tolerance_turns_a_small_change_into_a_difference_and_says_so() {
    let dir = temp_dir("rate");
    let a = built_report("seed");
    let mut b = a.clone();
    b.phases[0].measurement.success_rate = 0.995;
    let (a, b) = (write_report(&dir, "a.json", &a), write_report(&dir, "b.json", &b));
    let default = diff(&a, &b, &[], dir.path(), "diff-default");
    assert_eq!(default.code, Some(0), "{}", default.stdout);
    let tight = diff(&a, &b, &["--rate-tolerance", "0.001"], dir.path(), "diff-tight");
    assert_eq!(tight.code, Some(1), "{}", tight.stdout);
    assert!(
        tight.stdout.contains(
            "phase foo-to-bar-http: success_rate: 1.000 in A, 0.995 in B (-0.005) [crossed: rate tolerance 0.001]"
        ),
        "{}",
        tight.stdout
    );
}

/// `run --compare-to` used to ignore SIGINT/SIGTERM during the comparison (exit 1 after it,
/// or running on after `timeout`'s SIGTERM), though the README promises 130 at any moment. The
/// baseline has thousands of phases the new run lacks, so the comparison's output is far larger
/// than a pipe holds: meshfed blocks writing it while this test holds off reading, and the
/// SIGTERM arrives exactly during the comparison, whatever the machine's speed.
#[test]
fn run_compare_to_exits_130_on_a_sigterm_during_the_comparison() {
    use std::io::Read as _;

    let _one_at_a_time = REAL_RUNS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let dir = temp_dir("compare-sigterm");
    if !local_provider_available(dir.path()) {
        return;
    }
    let mut baseline = built_report("seed");
    let template = baseline.phases[0].clone();
    baseline.phases = (0..3000)
        .map(|index| PhaseReport {
            name: format!("baseline-only-{index:04}-{}", "x".repeat(60)),
            ..template.clone()
        })
        .collect();
    let baseline_path = write_report(&dir, "baseline.json", &baseline);
    let scenario = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/seed.yaml");
    let marker = unique_marker("compare-sigterm");
    let stderr_path = dir.path().join("compare.stderr");
    let mut child = Command::new(MESHFED)
        .args([
            "run",
            scenario.to_str().unwrap(),
            "--compare-to",
            baseline_path.to_str().unwrap(),
        ])
        .env(MARKER_ENV, &marker)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .expect("start meshfed");
    let mut stdout = child.stdout.take().unwrap();
    let mut seen = Vec::new();
    let mut chunk = [0_u8; 4096];
    while !String::from_utf8_lossy(&seen).contains("\ncompared to ") {
        let read = stdout.read(&mut chunk).expect("read meshfed's output");
        assert!(
            read > 0,
            "meshfed ended before comparing:\n{}\n{}",
            String::from_utf8_lossy(&seen),
            std::fs::read_to_string(&stderr_path).unwrap_or_default()
        );
        seen.extend_from_slice(&chunk[..read]);
    }
    // meshfed is now writing the comparison into a full pipe.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap()),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("signal meshfed");
    let mut rest = Vec::new();
    stdout.read_to_end(&mut rest).expect("drain meshfed's output");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for meshfed") {
            break status;
        }
        assert!(started.elapsed() < RUN_DEADLINE, "meshfed did not end after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    assert_eq!(status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    assert!(
        processes_with_marker(&marker).is_empty(),
        "meshfed left processes behind"
    );
}

/// Characters that rewrite a terminal or make text read other than it is: an escape sequence
/// (clear screen), a C1 CSI, a carriage return, bidi overrides and isolates, the line separator,
/// an invisible character and noncharacters.
const HOSTILE: &str = "\u{1b}[2J\u{9b}31m\r\u{202e}\u{2066}\u{2028}\u{200b}\u{fdd0}\u{10fffe}";

/// The first character of `text` (outside its own line breaks) that must never reach a terminal.
fn raw_hostile_character(text: &str) -> Option<(usize, char)> {
    text.char_indices()
        .find(|(_, c)| *c != '\n' && meshfed::printable::is_escaped(*c))
}

/// A report whose every string a stranger controls carries [`HOSTILE`]: pod, cluster, identity,
/// error, phase, rejection, expectation, provider, description, isolation and ServiceEntry text.
fn hostile_report(rejection: &str, passed: bool) -> Report {
    let hostile = |what: &str| format!("{what}{HOSTILE}");
    let identity = hostile("spiffe://");
    let records: Vec<RequestRecord> = (0..100)
        .map(|seq| RequestRecord {
            seq,
            target: "10.97.0.10:80".into(),
            status: Some(if seq % 10 == 0 { 503 } else { 200 }),
            error: (seq % 10 == 0).then(|| hostile("error")),
            pod: Some(hostile("pod")),
            cluster: Some(hostile("cluster")),
            peer_identity: Some(if seq % 3 == 0 {
                hostile("mallory")
            } else {
                identity.clone()
            }),
            started_us: seq * 1_000,
            latency_us: 1_500,
            connection: seq,
            server_connection: Some(format!("10.20.0.2:{seq}")),
        })
        .collect();
    let expected = [ExpectedPod {
        pod: hostile("pod"),
        cluster: hostile("cluster"),
        share: 1.0,
    }];
    let mut report = built_report("seed");
    report.scenario.description = Some(hostile("description"));
    report.provider.mode = hostile("mode");
    report.provider.proxy = hostile(if passed { "proxy-a" } else { "proxy-b" });
    report.meshfed_version = hostile("version");
    report.service_entries = vec![meshfed::report::ServiceEntrySummary {
        cluster: hostile("cluster"),
        host: hostile("host"),
        endpoints: vec![hostile("endpoint")],
    }];
    report.isolation = vec![meshfed::provider::IsolationProbe {
        from_cluster: hostile("from"),
        from_pod: hostile("pod"),
        to_cluster: hostile("to"),
        pod_address: hostile("address"),
        pod_connect: hostile("connect"),
        gateway_address: hostile("gateway"),
        gateway_connect: hostile("connect"),
        isolated: passed,
    }];
    let phase = &mut report.phases[0];
    phase.name = hostile("phase");
    phase.from = hostile("from");
    phase.to = hostile("to");
    phase.faults = vec![hostile("fault")];
    phase.expected_identity = identity.clone();
    phase.measurement = measure(&records, &expected, &identity);
    phase.config_rejections = vec![hostile(rejection)];
    phase.expectations = vec![meshfed::verdict::ExpectationResult {
        key: hostile("key"),
        expectation: hostile("expectation"),
        unit: meshfed::verdict::Unit::Clusters,
        observed: meshfed::verdict::Value::Clusters(vec![hostile("observed")]),
        bound: meshfed::verdict::Value::Clusters(vec![hostile("bound")]),
        passed,
        detail: hostile("detail"),
    }];
    report
}

/// `diff` used to print pod names, proxies, expectations and rejections from
/// a report raw, and descriptions could carry bidi overrides, U+2028 and noncharacters. Every text
/// output (the run summary, the diff for people, error messages) goes through one escaper.
#[test]
fn no_hostile_character_from_a_report_reaches_any_text_output_raw() {
    let dir = temp_dir("hostile");
    let a = hostile_report("rejected-a", true);
    let b = hostile_report("rejected-b", false);
    for report in [&a, &b] {
        let summary = meshfed::report::summary(report);
        assert_eq!(raw_hostile_character(&summary), None, "run summary:\n{summary}");
        assert!(summary.contains("\\u{1b}[2J\\u{9b}31m\\r\\u{202e}"), "{summary}");
    }
    let (path_a, path_b) = (write_report(&dir, "a.json", &a), write_report(&dir, "b.json", &b));
    let text = diff(&path_a, &path_b, &[], dir.path(), "diff-hostile");
    assert_eq!(text.code, Some(1), "{}", text.stderr);
    for (what, output) in [("stdout", &text.stdout), ("stderr", &text.stderr)] {
        assert_eq!(raw_hostile_character(output), None, "diff {what}:\n{output}");
    }
    for shown in [
        "config rejected in A only: rejected-a\\u{1b}[2J",
        "pod\\u{1b}[2J\\u{9b}31m\\r\\u{202e}\\u{2066}\\u{2028}\\u{200b}\\u{fdd0}\\u{10fffe}",
        "phase phase\\u{1b}[2J",
    ] {
        assert!(text.stdout.contains(shown), "{shown} in:\n{}", text.stdout);
    }
    let json = diff(&path_a, &path_b, &["--format", "json"], dir.path(), "diff-hostile-json");
    assert_eq!(json.code, Some(1), "{}", json.stderr);
    for (what, output) in [("stdout", &json.stdout), ("stderr", &json.stderr)] {
        assert_eq!(
            raw_hostile_character(output),
            None,
            "diff --format json {what}:\n{output}"
        );
    }
    let parsed: serde_json::Value = serde_json::from_str(&json.stdout).expect("the JSON stays valid");
    assert_eq!(
        parsed["phases"][0]["name"],
        format!("phase{HOSTILE}"),
        "the JSON escapes, it does not change the value"
    );
    // Error messages: two scenarios whose names are hostile, and a report whose error quotes a
    // hostile value.
    let mut other = built_report("seed");
    other.scenario.name = format!("other{HOSTILE}");
    let other = write_report(&dir, "other.json", &other);
    let refused = diff(&path_a, &other, &[], dir.path(), "diff-hostile-names");
    assert_eq!(refused.code, Some(2), "{}", refused.stderr);
    assert_eq!(raw_hostile_character(&refused.stderr), None, "{}", refused.stderr);
    let malformed = dir.path().join("malformed.json");
    let text_a = std::fs::read_to_string(&path_a).unwrap();
    std::fs::write(
        &malformed,
        text_a.replacen("\"unit\": \"clusters\"", "\"unit\": \"\\u202e\\u001b[2J\"", 1),
    )
    .unwrap();
    let refused = diff(&path_a, &malformed, &[], dir.path(), "diff-hostile-malformed");
    assert_eq!(refused.code, Some(2), "{}", refused.stderr);
    assert!(refused.stderr.contains("unknown variant"), "{}", refused.stderr);
    assert_eq!(raw_hostile_character(&refused.stderr), None, "{}", refused.stderr);
}

/// `diff` used to take rates outside 0..1, printed 1e308 as 309 digits, reported
/// invalid UTF-8 as `file: 4:36` and an empty file at column 0.
#[test]
fn rates_out_of_range_huge_numbers_bad_bytes_and_empty_files_are_reported_sanely() {
    let dir = temp_dir("sanity");
    let good = write_report(&dir, "good.json", &built_report("seed"));

    let mut value = serde_json::to_value(built_report("seed")).unwrap();
    value["phases"][0]["measurement"]["mtls_rate"] = serde_json::json!(5.0);
    let text = serde_json::to_string_pretty(&value).unwrap();
    let line = text
        .lines()
        .position(|line| line.contains("\"mtls_rate\": 5.0"))
        .unwrap()
        + 1;
    let column = text.lines().nth(line - 1).unwrap().len() - 1;
    let out_of_range = dir.path().join("rate.json");
    std::fs::write(&out_of_range, &text).unwrap();
    let outcome = diff(&good, &out_of_range, &[], dir.path(), "diff-rate");
    assert_eq!(outcome.code, Some(2), "{}", outcome.stderr);
    assert!(
        outcome.stderr.contains(&format!(
            "{}:{line}:{column}: does not match the report schema {REPORT_SCHEMA} (docs/report.md): 5 is not a rate or share: use a number from 0 to 1",
            out_of_range.display()
        )),
        "{}",
        outcome.stderr
    );

    let mut huge = built_report("seed");
    huge.phases[0].expectations = vec![meshfed::verdict::ExpectationResult {
        key: "serverTlsFailuresAtLeast".into(),
        expectation: "server_tls_failures >=".into(),
        unit: meshfed::verdict::Unit::Count,
        observed: meshfed::verdict::Value::Number(1e308),
        bound: meshfed::verdict::Value::Number(1.0),
        passed: true,
        detail: String::new(),
    }];
    let mut failed = huge.clone();
    failed.phases[0].expectations[0].passed = false;
    let (huge, failed) = (
        write_report(&dir, "huge.json", &huge),
        write_report(&dir, "failed.json", &failed),
    );
    let outcome = diff(&huge, &failed, &[], dir.path(), "diff-huge");
    assert_eq!(outcome.code, Some(1), "{}", outcome.stderr);
    assert!(
        outcome
            .stdout
            .contains("PASS -> FAIL server_tls_failures >= 1 (observed 1e308 -> 1e308) *"),
        "{}",
        outcome.stdout
    );
    assert!(!outcome.stdout.contains("00000000000000000000"), "{}", outcome.stdout);

    let bad_bytes = dir.path().join("bytes.json");
    let mut bytes = b"{\n\n\n  \"schema\": \"meshfed.report/v2\", \"\xc3\xa9t\xc3\xa9\": \"".to_vec();
    bytes.extend_from_slice(b"\xff\"}\n");
    std::fs::write(&bad_bytes, &bytes).unwrap();
    let outcome = diff(&good, &bad_bytes, &[], dir.path(), "diff-bytes");
    assert_eq!(outcome.code, Some(2), "{}", outcome.stderr);
    assert!(
        outcome.stderr.contains(&format!(
            "{}:4:42: not UTF-8: invalid byte 0xff here",
            bad_bytes.display()
        )),
        "{}",
        outcome.stderr
    );

    let empty = dir.path().join("empty.json");
    std::fs::write(&empty, "").unwrap();
    let outcome = diff(&good, &empty, &[], dir.path(), "diff-empty-file");
    assert_eq!(outcome.code, Some(2), "{}", outcome.stderr);
    assert!(
        outcome
            .stderr
            .contains(&format!("{}:1:1: not a meshfed report", empty.display())),
        "{}",
        outcome.stderr
    );
    assert!(!outcome.stderr.contains("column 0"), "{}", outcome.stderr);
}
