//! End-to-end tests of `meshfed run` on the `local` provider: real network namespaces, real Envoy,
//! meshfed's own workloads. They need root or user namespaces, `ip` and Envoy (`meshfed setup`
//! installs it). Outside CI a machine without them skips with a message; under `CI=true` that is a
//! failure.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

#[path = "support/skip.rs"]
mod skip;

use meshfed::measure::share_tolerance;
use meshfed::report::{PhaseReport, Report};

const MESHFED: &str = env!("CARGO_BIN_EXE_meshfed");
/// z for tolerances: a correct run fails a single share check with probability ~1e-5.
const Z: f64 = 4.4;

fn scenario(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios").join(name)
}

/// Runs `meshfed setup` once; `false` (with a printed reason) when the local provider cannot run
/// here and this is not CI.
fn local_provider_available() -> bool {
    static AVAILABLE: OnceLock<Result<(), String>> = OnceLock::new();
    let outcome = AVAILABLE.get_or_init(|| {
        let output = Command::new(MESHFED)
            .arg("setup")
            .output()
            .map_err(|error| error.to_string())?;
        if output.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ))
        }
    });
    match outcome {
        Ok(()) => true,
        Err(reason) => {
            skip::skip(&format!(
                "the local provider cannot run here (`meshfed setup` failed):\n{reason}"
            ));
            false
        }
    }
}

/// A directory removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(label: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!("meshfed-e2e-{label}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What one `meshfed run` did.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    report: Option<Report>,
}

fn run(scenario: &Path, label: &str, marker: &str) -> Run {
    let dir = TempDir::new(&format!("report-{label}"));
    let output = Command::new(MESHFED)
        .args([
            "run",
            scenario.to_str().unwrap(),
            "--report-dir",
            dir.0.to_str().unwrap(),
        ])
        .env(MARKER_ENV, test_marker(marker))
        .output()
        .expect("start meshfed");
    let report = std::fs::read_to_string(dir.0.join("report.json"))
        .ok()
        .map(|text| serde_json::from_str(&text).expect("report.json matches the report schema"));
    Run {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        report,
    }
}

fn shared_run(cell: &'static OnceLock<Run>, scenario_name: &str) -> &'static Run {
    cell.get_or_init(|| {
        run(
            &scenario(scenario_name),
            scenario_name.trim_end_matches(".yaml"),
            "shared",
        )
    })
}

fn seed_run() -> &'static Run {
    static RUN: OnceLock<Run> = OnceLock::new();
    shared_run(&RUN, "seed.yaml")
}

fn skew_run() -> &'static Run {
    static RUN: OnceLock<Run> = OnceLock::new();
    shared_run(&RUN, "skew.yaml")
}

fn three_clusters_run() -> &'static Run {
    static RUN: OnceLock<Run> = OnceLock::new();
    shared_run(&RUN, "three-clusters.yaml")
}

fn phase<'a>(run: &'a Run, name: &str) -> &'a PhaseReport {
    let report = run
        .report
        .as_ref()
        .unwrap_or_else(|| panic!("no report; stderr:\n{}", run.stderr));
    report
        .phases
        .iter()
        .find(|phase| phase.name == name)
        .unwrap_or_else(|| panic!("no phase {name}"))
}

fn assert_share(phase: &PhaseReport, cluster: &str, pod: &str, expected: f64) {
    let load = phase
        .measurement
        .pods
        .iter()
        .find(|load| load.cluster == cluster && load.pod == pod)
        .unwrap_or_else(|| panic!("{}: no load for {cluster}/{pod}", phase.name));
    let samples = phase.measurement.request_skew.samples;
    let tolerance = share_tolerance(samples, expected, Z);
    assert!(
        (load.request_share - expected).abs() <= tolerance,
        "{}: {cluster}/{pod} got {:.4} of {samples} requests, expected {expected:.4} ± {tolerance:.4}",
        phase.name,
        load.request_share
    );
}

#[test]
fn seed_http_and_tcp_cross_cluster_are_mtls_with_the_callers_identity() {
    if !local_provider_available() {
        return;
    }
    let run = seed_run();
    assert_eq!(run.code, Some(0), "stdout:\n{}\nstderr:\n{}", run.stdout, run.stderr);
    for (name, caller, remote) in [
        ("foo-to-bar-http", "spiffe://cluster.local/ns/ns1/sa/foo", "cluster2"),
        ("foo-to-bar-tcp", "spiffe://cluster.local/ns/ns1/sa/foo", "cluster2"),
        ("bar-to-foo-http", "spiffe://cluster.local/ns/ns2/sa/bar", "cluster1"),
    ] {
        let phase = phase(run, name);
        let m = &phase.measurement;
        assert_eq!(phase.expected_identity, caller);
        assert!(m.attempted > 0, "{name} sent nothing");
        assert_eq!(
            m.mtls_verified, m.attempted,
            "{name}: every call must carry the caller's identity: {m:?}"
        );
        assert_eq!(m.mtls_rate, 1.0, "{name}");
        assert_eq!(m.clusters_reached, [remote], "{name} must cross to {remote}");
        assert!(
            m.unverified_identities.is_empty(),
            "{name}: {:?}",
            m.unverified_identities
        );
    }
    assert!(run.stdout.contains("verdict: PASS"), "{}", run.stdout);
}

#[test]
fn direct_pod_ip_across_clusters_is_unreachable_while_the_gateway_answers() {
    if !local_provider_available() {
        return;
    }
    let report = seed_run().report.as_ref().expect("seed report");
    let directions: Vec<(String, String)> = report
        .isolation
        .iter()
        .map(|probe| (probe.from_cluster.clone(), probe.to_cluster.clone()))
        .collect();
    assert_eq!(
        directions,
        [
            ("cluster1".to_owned(), "cluster2".to_owned()),
            ("cluster2".to_owned(), "cluster1".to_owned())
        ],
        "both directions are probed"
    );
    for probe in &report.isolation {
        assert_ne!(probe.pod_connect, "connected", "{probe:?}");
        assert_eq!(probe.gateway_connect, "connected", "{probe:?}");
        assert!(probe.isolated);
    }
}

#[test]
fn equal_weights_give_the_local_pod_half_and_each_remote_pod_a_sixth() {
    if !local_provider_available() {
        return;
    }
    let run = skew_run();
    assert_eq!(run.code, Some(0), "stdout:\n{}\nstderr:\n{}", run.stdout, run.stderr);
    let phase = phase(run, "equal-weights");
    assert_eq!(phase.connections, "new-connection-per-request");
    assert_share(phase, "cluster1", "bar-0", 0.5);
    for pod in ["bar-0", "bar-1", "bar-2"] {
        assert_share(phase, "cluster2", pod, 1.0 / 6.0);
    }
    assert_eq!(phase.measurement.mtls_rate, 1.0);
}

#[test]
fn ready_pods_weights_give_every_pod_a_quarter() {
    if !local_provider_available() {
        return;
    }
    let phase = phase(skew_run(), "ready-pods-weights");
    assert_eq!(phase.endpoint_weights, "ready-pods");
    assert_share(phase, "cluster1", "bar-0", 0.25);
    for pod in ["bar-0", "bar-1", "bar-2"] {
        assert_share(phase, "cluster2", pod, 0.25);
    }
    assert_eq!(phase.measurement.mtls_rate, 1.0);
}

#[test]
fn pooled_connections_show_the_connection_distribution_and_say_the_skew_is_connection_limited() {
    if !local_provider_available() {
        return;
    }
    let phase = phase(skew_run(), "pooled-connections");
    let m = &phase.measurement;
    let connections: u64 = m.pods.iter().map(|pod| pod.connections).sum();
    assert!(
        connections >= 1 && connections < m.attempted / 10,
        "pooled: few connections carry all requests: {m:?}"
    );
    assert!(m.connection_limited, "{m:?}");
    let note = m.connection_note.as_deref().unwrap_or_default();
    assert!(note.contains("connection"), "{note}");
    assert!(m.pods.iter().any(|pod| pod.connection_share > 0.0));
    let summary = &skew_run().stdout;
    assert!(
        summary.contains("connection-limited"),
        "the summary must say so:\n{summary}"
    );
}

#[test]
fn three_clusters_with_ready_pods_weights_give_each_of_six_pods_a_sixth_by_request_and_by_connection() {
    if !local_provider_available() {
        return;
    }
    let run = three_clusters_run();
    assert_eq!(run.code, Some(0), "stdout:\n{}\nstderr:\n{}", run.stdout, run.stderr);
    let pods = [
        ("cluster1", "bar-0"),
        ("cluster2", "bar-0"),
        ("cluster2", "bar-1"),
        ("cluster3", "bar-0"),
        ("cluster3", "bar-1"),
        ("cluster3", "bar-2"),
    ];
    for name in ["http-new-connections", "tcp-connections"] {
        let phase = phase(run, name);
        for (cluster, pod) in pods {
            assert_share(phase, cluster, pod, 1.0 / 6.0);
        }
        assert_eq!(phase.measurement.mtls_rate, 1.0, "{name}");
    }
    // The same world with equal weights: the local pod 1/3, cluster2's pods 1/6, cluster3's 1/9.
    let equal = phase(run, "equal-weights-for-contrast");
    assert_share(equal, "cluster1", "bar-0", 1.0 / 3.0);
    assert_share(equal, "cluster2", "bar-1", 1.0 / 6.0);
    assert_share(equal, "cluster3", "bar-2", 1.0 / 9.0);
}

fn write_scenario(dir: &TempDir, name: &str, extra_phases: &str) -> PathBuf {
    let seed = std::fs::read_to_string(scenario("seed.yaml")).unwrap();
    let body = seed.split("phases:\n").next().unwrap();
    let path = dir.0.join(name);
    std::fs::write(&path, format!("{body}phases:\n{extra_phases}")).unwrap();
    path
}

#[test]
fn endpoint_discovery_mode_reaches_remote_pods_through_the_east_west_gateway_with_mtls() {
    if !local_provider_available() {
        return;
    }
    let dir = TempDir::new("endpoint-discovery");
    let text = std::fs::read_to_string(scenario("seed.yaml"))
        .unwrap()
        .replace("  mode: serviceentry", "  mode: endpoint-discovery");
    let path = dir.0.join("seed-endpoint-discovery.yaml");
    std::fs::write(&path, text).unwrap();
    let run = run(&path, "endpoint-discovery", "endpoint-discovery");
    assert_eq!(run.code, Some(0), "stdout:\n{}\nstderr:\n{}", run.stdout, run.stderr);
    let report = run.report.as_ref().unwrap();
    assert!(
        report.service_entries.is_empty(),
        "endpoint discovery plans no ServiceEntries"
    );
    for phase in &report.phases {
        assert_eq!(phase.measurement.mtls_rate, 1.0, "{}", phase.name);
    }
}

const FOREIGN_ROOT_PHASES: &str = "
  - name: impostor
    from: { service: foo.ns1, cluster: cluster1 }
    to: { service: bar.ns2, port: http }
    requests: 20
    connections: new-connection-per-request
    faults:
      - foreignClientCert: {}
    expect:
      successRateAtMost: 0.0
      serverTlsFailuresAtLeast: 1
  - name: genuine-again
    from: { service: foo.ns1, cluster: cluster1 }
    to: { service: bar.ns2, port: http }
    requests: 20
    expect:
      mtlsRateAtLeast: 1.0
";

#[test]
fn a_client_certificate_from_a_foreign_root_is_rejected_and_counted() {
    if !local_provider_available() {
        return;
    }
    let dir = TempDir::new("foreign");
    let run = run(
        &write_scenario(&dir, "foreign.yaml", FOREIGN_ROOT_PHASES),
        "foreign",
        "foreign",
    );
    assert_eq!(run.code, Some(0), "stdout:\n{}\nstderr:\n{}", run.stdout, run.stderr);
    let impostor = phase(&run, "impostor");
    assert_eq!(impostor.measurement.succeeded, 0, "{:?}", impostor.measurement);
    assert_eq!(impostor.measurement.mtls_verified, 0);
    assert!(
        impostor.tls_failures.fail_verify_error >= 1,
        "{:?}",
        impostor.tls_failures
    );
    let genuine = phase(&run, "genuine-again");
    assert_eq!(
        genuine.measurement.mtls_rate, 1.0,
        "the genuine certificate works again"
    );
    assert_eq!(genuine.tls_failures.fail_verify_error, 0);
}

const FAILING_PHASES: &str = "
  - name: wrong-cluster-expected
    from: { service: foo.ns1, cluster: cluster1 }
    to: { service: bar.ns2, port: http }
    requests: 20
    expect:
      mtlsRateAtLeast: 1.0
      clustersReached: [cluster1]
  - name: still-runs
    from: { service: foo.ns1, cluster: cluster1 }
    to: { service: bar.ns2, port: tcp }
    requests: 20
    expect:
      mtlsRateAtLeast: 1.0
";

#[test]
fn a_failed_expectation_exits_1_and_every_expectation_is_still_reported() {
    if !local_provider_available() {
        return;
    }
    let dir = TempDir::new("failing");
    let run = run(
        &write_scenario(&dir, "failing.yaml", FAILING_PHASES),
        "failing",
        "failing",
    );
    assert_eq!(run.code, Some(1), "stdout:\n{}\nstderr:\n{}", run.stdout, run.stderr);
    let first = phase(&run, "wrong-cluster-expected");
    let outcomes: Vec<(&str, bool)> = first
        .expectations
        .iter()
        .map(|result| (result.expectation.as_str(), result.passed))
        .collect();
    assert_eq!(outcomes, [("mtls_rate >=", true), ("clusters_reached includes", false)]);
    let failed = &first.expectations[1];
    assert_eq!(failed.observed, "[cluster2]");
    assert!(failed.detail.contains("cluster1"), "{failed:?}");
    assert!(
        phase(&run, "still-runs").passed,
        "later phases still run and are judged"
    );
    assert!(
        run.stdout
            .contains("FAIL clusters_reached includes [cluster1] (observed [cluster2])"),
        "{}",
        run.stdout
    );
}

/// The environment variable every process of a test's meshfed run inherits.
const MARKER_ENV: &str = "MESHFED_TEST_MARKER";

/// The marker value for `label` in this test process: unique on the machine (it carries this
/// process's pid), so two test runs at once never count each other's processes.
fn test_marker(label: &str) -> String {
    format!("{label}-{}", std::process::id())
}

/// PIDs of live processes whose environment carries this test process's marker for `label`.
fn processes_with_marker(label: &str) -> Vec<u32> {
    let needle = format!("{MARKER_ENV}={}", test_marker(label));
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        let alive = std::fs::read_to_string(entry.path().join("stat"))
            .map(|stat| !stat.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'))
            .unwrap_or(false);
        if alive && environ.split(|byte| *byte == 0).any(|var| var == needle.as_bytes()) {
            pids.push(pid);
        }
    }
    pids
}

/// What of the host a run could leave behind: namespaces, links, meshfed temp dirs.
fn host_state() -> (Vec<String>, Vec<String>, Vec<String>) {
    // Only meshfed's names (`mf<pid>-…`): other software may add namespaces meanwhile.
    let netns = std::fs::read_dir("/run/netns")
        .map(|entries| {
            entries
                .flatten()
                .map(|entry| entry.file_name().to_string_lossy().into_owned())
                .filter(|name| name.starts_with("mf"))
                .collect()
        })
        .unwrap_or_default();
    let links = Command::new("ip").args(["-o", "link", "show"]).output().unwrap();
    let links = String::from_utf8_lossy(&links.stdout)
        .lines()
        .map(|line| line.split(':').nth(1).unwrap_or("").trim().to_owned())
        .collect();
    let mut temp: Vec<String> = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| {
            name.starts_with("meshfed") && !name.starts_with("meshfed-e2e-") && !name.starts_with("meshfed-cli-test")
        })
        .collect();
    if Path::new("/run/meshfed").exists() {
        temp.push("/run/meshfed".to_owned());
    }
    (netns, links, temp)
}

fn assert_nothing_left(marker: &str, before: &(Vec<String>, Vec<String>, Vec<String>)) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !processes_with_marker(marker).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        processes_with_marker(marker),
        Vec::<u32>::new(),
        "{marker}: processes remain"
    );
    let after = host_state();
    assert_eq!(after.0, before.0, "{marker}: network namespaces changed");
    assert_eq!(after.1, before.1, "{marker}: host links (veth, bridge) changed");
    assert_eq!(after.2, before.2, "{marker}: temporary directories remain");
}

#[test]
fn nothing_remains_after_success_failure_or_sigint() {
    if !local_provider_available() {
        return;
    }
    let before = host_state();
    let dir = TempDir::new("leftovers");

    let succeeded = run(&scenario("seed.yaml"), "leftover-success", "leftover-success");
    assert_eq!(succeeded.code, Some(0), "{}", succeeded.stderr);
    assert_nothing_left("leftover-success", &before);

    let failed = run(
        &write_scenario(&dir, "failing.yaml", FAILING_PHASES),
        "leftover-failure",
        "leftover-failure",
    );
    assert_eq!(failed.code, Some(1), "{}", failed.stderr);
    assert_nothing_left("leftover-failure", &before);

    let mut child = Command::new(MESHFED)
        .args(["run", scenario("skew.yaml").to_str().unwrap()])
        .env(MARKER_ENV, test_marker("leftover-sigint"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let mut seen = String::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        seen.push_str(&line);
        seen.push('\n');
        if line.contains("phase equal-weights:") {
            break;
        }
    }
    assert!(
        seen.contains("phase equal-weights:"),
        "meshfed never started traffic:\n{seen}"
    );
    assert!(
        processes_with_marker("leftover-sigint").len() >= 3,
        "the world is up: meshfed, apps and envoys"
    );
    // SAFETY: kill(2) on the pid of a child this test started and has not reaped.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "stderr:\n{seen}{}", rest.join("\n"));
    assert!(rest.iter().any(|line| line.contains("interrupted")), "{rest:?}");
    assert_nothing_left("leftover-sigint", &before);
}

/// The Envoy `meshfed setup` found, from its first line (`envoy 1.40.0: /path/to/envoy`).
fn envoy_path() -> PathBuf {
    let output = Command::new(MESHFED).arg("setup").output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .find(|line| line.starts_with("envoy "))
        .expect("setup names envoy");
    PathBuf::from(line.split_once(": ").expect("envoy VERSION: PATH").1)
}

#[test]
fn the_report_says_whether_the_run_was_root_or_rootless() {
    if !local_provider_available() {
        return;
    }
    let report = seed_run().report.as_ref().expect("seed report");
    // SAFETY: geteuid has no preconditions.
    let expected = if unsafe { libc::geteuid() } == 0 {
        "root"
    } else {
        "rootless (user namespace)"
    };
    assert_eq!(report.provider.mode, expected);
    assert_eq!(report.provider.name, "local");
    assert_eq!(report.provider.emulates.as_deref(), Some("istio-gateway-connectivity"));
}

#[test]
fn a_run_as_an_unprivileged_user_works_in_a_user_namespace() {
    // SAFETY: geteuid has no preconditions.
    let is_root = unsafe { libc::geteuid() } == 0;
    if !local_provider_available() || !is_root || Command::new("setpriv").arg("--version").output().is_err() {
        skip::skip("needs root (to drop to an unprivileged user) and setpriv");
        return;
    }
    let dir = TempDir::new("rootless");
    std::fs::set_permissions(&dir.0, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    // The unprivileged user may not be able to reach root's cache or the build directory: give it
    // its own copies of Envoy, meshfed and the scenario.
    let envoy = dir.0.join("envoy");
    std::fs::copy(envoy_path(), &envoy).unwrap();
    let meshfed = dir.0.join("meshfed");
    std::fs::copy(MESHFED, &meshfed).unwrap();
    let seed = dir.0.join("seed.yaml");
    std::fs::copy(scenario("seed.yaml"), &seed).unwrap();
    let output = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&meshfed)
        .arg("run")
        .arg(&seed)
        .arg("--report-dir")
        .arg(&dir.0)
        .env("MESHFED_ENVOY", &envoy)
        .env("HOME", &dir.0)
        .env(MARKER_ENV, test_marker("rootless"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    if stderr.contains("user namespace") && output.status.code() == Some(3) {
        // The kernel forbids unprivileged user namespaces here; CI's machine allows them.
        skip::skip(&format!("unprivileged user namespaces are disabled here:\n{stderr}"));
        return;
    }
    assert_eq!(output.status.code(), Some(0), "stderr:\n{stderr}");
    let report: Report = serde_json::from_str(&std::fs::read_to_string(dir.0.join("report.json")).unwrap()).unwrap();
    assert_eq!(report.provider.mode, "rootless (user namespace)");
    assert!(report.passed);
    assert!(processes_with_marker("rootless").is_empty());
}
