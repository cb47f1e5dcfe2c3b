//! End-to-end tests of `meshfed run` on the `local` provider: real network namespaces, real Envoy,
//! meshfed's own workloads. They need root or user namespaces, `ip` and Envoy (`meshfed setup`
//! installs it). Outside CI a machine without them skips with a message; under `CI=true` that is a
//! failure.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use nix::sys::signal::{SigSet, SigmaskHow, Signal, kill};
use nix::unistd::Pid;

use crate::support::local_provider;
use crate::support::marker;
use crate::support::meshfed_command::MESHFED;
use crate::support::skip;
use crate::support::temp_dir::{TempDir, temp_dir};
use local_provider::local_provider_available;
use marker::{MARKER_ENV, assert_own_run_left_nothing, processes_with_marker, unique_marker};

use meshfed::measure::share_tolerance;
use meshfed::report::{PhaseReport, Report};

/// z for tolerances: a correct run fails a single share check with probability ~1e-5.
const Z: f64 = 4.4;

fn scenario(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios").join(name)
}

/// What one `meshfed run` did.
struct Run {
    /// The meshfed process's pid (for [`assert_own_run_left_nothing`]).
    pid: u32,
    code: Option<i32>,
    stdout: String,
    stderr: String,
    report: Option<Report>,
}

/// Runs meshfed on `scenario`; every process of the run carries `marker` (see [`unique_marker`]).
fn run(scenario: &Path, label: &str, marker: &str) -> Run {
    run_with(scenario, &[], label, marker)
}

/// [`run`] with `extra` arguments after the report directory (e.g. `--istio-version 1.20.8`).
fn run_with(scenario: &Path, extra: &[&str], label: &str, marker: &str) -> Run {
    let dir = temp_dir(&format!("report-{label}"));
    let child = Command::new(MESHFED)
        .args([
            "run",
            scenario.to_str().unwrap(),
            "--report-dir",
            dir.path().to_str().unwrap(),
        ])
        .args(extra)
        .env(MARKER_ENV, marker)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start meshfed");
    let pid = child.id();
    let output = child.wait_with_output().expect("wait for meshfed");
    let report = std::fs::read_to_string(dir.path().join("report.json"))
        .ok()
        .map(|text| serde_json::from_str(&text).expect("report.json matches the report schema"));
    Run {
        pid,
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
            &unique_marker("shared"),
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
    let path = dir.path().join(name);
    std::fs::write(&path, format!("{body}phases:\n{extra_phases}")).unwrap();
    path
}

#[test]
fn endpoint_discovery_mode_reaches_remote_pods_through_the_east_west_gateway_with_mtls() {
    if !local_provider_available() {
        return;
    }
    let dir = temp_dir("endpoint-discovery");
    let text = std::fs::read_to_string(scenario("seed.yaml"))
        .unwrap()
        .replace("  mode: serviceentry", "  mode: endpoint-discovery");
    let path = dir.path().join("seed-endpoint-discovery.yaml");
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
    let dir = temp_dir("foreign");
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
    let dir = temp_dir("failing");
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
    assert_eq!(
        failed.observed,
        meshfed::verdict::Value::Clusters(vec!["cluster2".to_owned()])
    );
    assert_eq!(failed.key, "clustersReached");
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

#[test]
fn nothing_remains_after_success_failure_or_sigint() {
    if !local_provider_available() {
        return;
    }
    let dir = temp_dir("leftovers");

    let marker = unique_marker("leftover-success");
    let succeeded = run(&scenario("seed.yaml"), "leftover-success", &marker);
    assert_eq!(succeeded.code, Some(0), "{}", succeeded.stderr);
    assert_own_run_left_nothing(&marker, succeeded.pid);

    let marker = unique_marker("leftover-failure");
    let failed = run(
        &write_scenario(&dir, "failing.yaml", FAILING_PHASES),
        "leftover-failure",
        &marker,
    );
    assert_eq!(failed.code, Some(1), "{}", failed.stderr);
    assert_own_run_left_nothing(&marker, failed.pid);

    let marker = unique_marker("leftover-sigint");
    let mut child = Command::new(MESHFED)
        .args(["run", scenario("skew.yaml").to_str().unwrap()])
        .env(MARKER_ENV, &marker)
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
        processes_with_marker(&marker).len() >= 3,
        "the world is up: meshfed, apps and envoys"
    );
    // SAFETY: kill(2) on the pid of a child this test started and has not reaped.
    kill(Pid::from_raw(child.id() as i32), Signal::SIGINT).unwrap();
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "stderr:\n{seen}{}", rest.join("\n"));
    assert!(rest.iter().any(|line| line.contains("interrupted")), "{rest:?}");
    assert_own_run_left_nothing(&marker, child.id());
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
    let expected = if nix::unistd::geteuid().is_root() {
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
    let is_root = nix::unistd::geteuid().is_root();
    if !local_provider_available() || !is_root || Command::new("setpriv").arg("--version").output().is_err() {
        skip::skip("needs root (to drop to an unprivileged user) and setpriv");
        return;
    }
    let dir = temp_dir("rootless");
    std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    // The unprivileged user may not be able to reach root's cache or the build directory: give it
    // its own copies of Envoy, meshfed and the scenario.
    let envoy = dir.path().join("envoy");
    std::fs::copy(envoy_path(), &envoy).unwrap();
    let meshfed = dir.path().join("meshfed");
    std::fs::copy(MESHFED, &meshfed).unwrap();
    let seed = dir.path().join("seed.yaml");
    std::fs::copy(scenario("seed.yaml"), &seed).unwrap();
    let marker = unique_marker("rootless");
    let output = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&meshfed)
        .arg("run")
        .arg(&seed)
        .arg("--report-dir")
        .arg(dir.path())
        .env("MESHFED_ENVOY", &envoy)
        .env("HOME", dir.path())
        .env(MARKER_ENV, &marker)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    if stderr.contains("user namespace") && output.status.code() == Some(3) {
        // The kernel forbids unprivileged user namespaces here; CI's machine allows them.
        skip::skip(&format!("unprivileged user namespaces are disabled here:\n{stderr}"));
        return;
    }
    assert_eq!(output.status.code(), Some(0), "stderr:\n{stderr}");
    let report: Report =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("report.json")).unwrap()).unwrap();
    assert_eq!(report.provider.mode, "rootless (user namespace)");
    assert!(report.passed);
    assert!(processes_with_marker(&marker).is_empty());
}

/// PIDs of this run's live processes (by marker) whose command line contains `needle`.
fn marked_processes_running(marker: &str, needle: &str) -> Vec<u32> {
    processes_with_marker(marker)
        .into_iter()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|cmdline| {
                    let cmdline: Vec<u8> = cmdline
                        .iter()
                        .map(|&byte| if byte == 0 { b' ' } else { byte })
                        .collect();
                    String::from_utf8_lossy(&cmdline).contains(needle)
                })
                .unwrap_or(false)
        })
        .collect()
}

/// A `meshfed run` in the background whose stderr is read line by line as it comes, so a test can
/// wait for a moment of the run (never sleeping blindly) and act on the world then. Dropping it
/// kills what is left of the run (SIGCONT first, for stopped processes).
struct LiveRun {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    stderr: Vec<String>,
    marker: String,
}

impl LiveRun {
    fn start(scenario: &Path, marker: &str) -> LiveRun {
        let mut child = Command::new(MESHFED)
            .args(["run", scenario.to_str().unwrap()])
            .env(MARKER_ENV, marker)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start meshfed");
        let (sender, lines) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        let stdout = child.stdout.take().unwrap();
        // Drained so meshfed never blocks on a full pipe; the summary is not needed here.
        std::thread::spawn(move || std::io::copy(&mut BufReader::new(stdout), &mut std::io::sink()));
        LiveRun {
            child,
            lines,
            stderr: Vec::new(),
            marker: marker.to_owned(),
        }
    }

    /// Waits up to `within` for a stderr line containing `needle`; the instant it came.
    fn await_line(&mut self, needle: &str, within: Duration) -> Option<Instant> {
        let deadline = Instant::now() + within;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let found = line.contains(needle);
                    self.stderr.push(line);
                    if found {
                        return Some(Instant::now());
                    }
                }
                Err(_) => return None,
            }
        }
        None
    }

    /// Waits up to `within` for meshfed to exit (reading its stderr meanwhile); its exit code.
    fn await_exit(&mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        loop {
            while let Ok(line) = self.lines.try_recv() {
                self.stderr.push(line);
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                // The rest of stderr, up to its end.
                while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(2)) {
                    self.stderr.push(line);
                }
                return Some(status.code().unwrap_or(-1));
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stderr(&self) -> String {
        self.stderr.join("\n")
    }
}

impl Drop for LiveRun {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        for pid in processes_with_marker(&self.marker) {
            // Processes this test's own run started (found by its marker).
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGCONT);
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
    }
}

/// Sends `signal` to the one process of this run whose command line contains `needle`.
fn signal_marked_process(marker: &str, needle: &str, signal: Signal) {
    let pids = marked_processes_running(marker, needle);
    assert_eq!(
        pids.len(),
        1,
        "exactly one process of the run runs `{needle}`: {pids:?}"
    );
    // A process this test's own run started (found by its marker).
    kill(Pid::from_raw(pids[0] as i32), signal).unwrap();
}

/// A phase long enough to act on the world while it runs (it would take minutes).
const LONG_PHASE: &str = "
  - name: long-phase
    from: { service: foo.ns1, cluster: cluster1 }
    to: { service: bar.ns2, port: http }
    requests: 1000000
    concurrency: 2
    timeoutSeconds: 20
    expect:
      successRateAtLeast: 1.0
";

#[test]
fn an_app_killed_during_a_phase_fails_the_run_with_exit_3_naming_the_app_its_pod_and_cluster() {
    if !local_provider_available() {
        return;
    }
    let dir = temp_dir("app-killed");
    let marker = unique_marker("app-killed");
    let mut run = LiveRun::start(&write_scenario(&dir, "long.yaml", LONG_PHASE), &marker);
    assert!(
        run.await_line("phase long-phase:", Duration::from_secs(60)).is_some(),
        "the phase never started:\n{}",
        run.stderr()
    );
    signal_marked_process(&marker, "workload echo --pod bar-0 --cluster cluster2", Signal::SIGKILL);
    let code = run.await_exit(Duration::from_secs(60));
    let stderr = run.stderr();
    assert_eq!(code, Some(3), "stderr:\n{stderr}");
    assert!(
        stderr.contains("app of pod bar-0 in cluster2 (pid ") && stderr.contains("exited with signal 9 (SIGKILL)"),
        "{stderr}"
    );
    assert!(
        stderr.contains("died or were stopped although no fault asked for it"),
        "{stderr}"
    );
    let meshfed_pid = run.child.id();
    drop(run);
    assert_own_run_left_nothing(&marker, meshfed_pid);
}

#[test]
fn a_gateway_envoy_stopped_during_a_phase_ends_the_run_within_the_phase_deadline_with_exit_3() {
    if !local_provider_available() {
        return;
    }
    let dir = temp_dir("gateway-stopped");
    let marker = unique_marker("gateway-stopped");
    let mut run = LiveRun::start(&write_scenario(&dir, "long.yaml", LONG_PHASE), &marker);
    let phase_started = run
        .await_line("phase long-phase:", Duration::from_secs(60))
        .unwrap_or_else(|| panic!("the phase never started:\n{}", run.stderr()));
    signal_marked_process(
        &marker,
        "cluster2/istio-ingressgateway/envoy/bootstrap.json",
        Signal::SIGSTOP,
    );
    // LONG_PHASE's timeoutSeconds is 20; a hang would show as no exit at all.
    let code = run.await_exit(Duration::from_secs(60));
    let ended = phase_started.elapsed();
    let stderr = run.stderr();
    assert_eq!(code, Some(3), "stderr:\n{stderr}");
    assert!(
        stderr.contains("envoy of gateway istio-ingressgateway in cluster2 is stopped"),
        "{stderr}"
    );
    assert!(
        ended < Duration::from_secs(20),
        "the run ended {ended:?} after the phase started, beyond its 20 s deadline:\n{stderr}"
    );
    let meshfed_pid = run.child.id();
    drop(run);
    assert_own_run_left_nothing(&marker, meshfed_pid);
}

const SKEW_ONLY_TOWARD_NO_PODS: &str = "
  - name: skew-only-toward-no-pods
    from: { service: foo.ns1, cluster: cluster1 }
    to: { service: baz.ns2, port: http }
    requests: 40
    expect:
      maxSkewRatioAtMost: 1.5
";

#[test]
fn a_skew_only_phase_toward_a_service_with_no_pods_fails_with_exit_1_and_says_why() {
    if !local_provider_available() {
        return;
    }
    let dir = temp_dir("no-pods");
    let seed = std::fs::read_to_string(scenario("seed.yaml")).unwrap();
    let world = &seed[..seed.find("\nphases:\n").expect("seed.yaml has phases")];
    let world = world.replace(
        "federation:",
        "  - name: baz\n    namespace: ns2\n    ports:\n      - { name: http, number: 80, protocol: http }\n    replicas: {}\nfederation:",
    );
    let path = dir.path().join("no-pods.yaml");
    std::fs::write(&path, format!("{world}\nphases:\n{SKEW_ONLY_TOWARD_NO_PODS}")).unwrap();
    let marker = unique_marker("no-pods");
    let run = run(&path, "no-pods", &marker);
    assert_eq!(run.code, Some(1), "stdout:\n{}\nstderr:\n{}", run.stdout, run.stderr);
    assert!(
        run.stdout
            .contains("FAIL max_skew_ratio by requests <= 1.500 (observed 0.000): no request was answered: 0 of 40"),
        "{}",
        run.stdout
    );
    let phase = phase(&run, "skew-only-toward-no-pods");
    assert_eq!(phase.measurement.answered, 0);
    assert!(!phase.passed);
}

#[test]
fn a_phase_that_overruns_its_deadline_exits_3_after_teardown_and_reports_progress_meanwhile() {
    if !local_provider_available() {
        return;
    }
    let dir = temp_dir("deadline");
    let marker = unique_marker("deadline");
    let phases = LONG_PHASE.replace("timeoutSeconds: 20", "timeoutSeconds: 5");
    let mut run = LiveRun::start(&write_scenario(&dir, "long.yaml", &phases), &marker);
    let code = run.await_exit(Duration::from_secs(90));
    let stderr = run.stderr();
    assert_eq!(code, Some(3), "stderr:\n{stderr}");
    assert!(
        stderr.contains(
            "phase long-phase did not finish within its deadline of 5 s; no process of the world was found stopped or silent"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("of 1000000 requests done"),
        "a long phase reports progress:\n{stderr}"
    );
    let teardown = stderr.find("tearing down").expect("meshfed tears down");
    assert!(teardown < stderr.find("did not finish").unwrap(), "{stderr}");
    let meshfed_pid = run.child.id();
    drop(run);
    assert_own_run_left_nothing(&marker, meshfed_pid);
}

#[test]
fn an_envoy_that_exits_during_start_up_is_reported_at_once_with_the_cause_from_its_log() {
    if !local_provider_available() {
        return;
    }
    let dir = temp_dir("envoy-dies");
    // A wrapper that answers --version like Envoy but starts it with a configuration it rejects.
    let wrapper = dir.path().join("envoy");
    let envoy = envoy_path();
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nfor a in \"$@\"; do [ \"$a\" = --version ] && exec '{envoy}' --version; done\n\
             exec '{envoy}' \"$@\" --config-yaml '{{bogus_field: 1}}'\n",
            envoy = envoy.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let marker = unique_marker("envoy-dies");
    let started = Instant::now();
    let output = Command::new(MESHFED)
        .args(["run", scenario("seed.yaml").to_str().unwrap()])
        .env("MESHFED_ENVOY", &wrapper)
        .env(MARKER_ENV, &marker)
        .output()
        .unwrap();
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("exited with status 1"), "{stderr}");
    assert!(
        stderr.contains("[critical]"),
        "the log line with the cause is quoted:\n{stderr}"
    );
    // Protobuf pads its error text with random spaces: only the field name is stable.
    assert!(stderr.contains("'bogus_field'"), "{stderr}");
    // Envoys get 20 s to become ready; a death must not wait for that.
    assert!(took < Duration::from_secs(10), "reported after {took:?}:\n{stderr}");
    assert!(processes_with_marker(&marker).is_empty());
}

// ---- Nothing outlives meshfed: SIGKILL and SIGINT at any moment. ----

/// `MESHFED_TEST_MARKER=<test>-<pid>-<nanos>`: unique to one meshfed started by one test run.
fn lifecycle_marker(test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{test}-{}-{nanos}", std::process::id())
}

/// Live (not zombie) processes whose environment has `MESHFED_TEST_MARKER=<marker>`.
fn lifecycle_processes(marker: &str) -> Vec<u32> {
    let needle = format!("MESHFED_TEST_MARKER={marker}");
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|environ| environ.split(|byte| *byte == 0).any(|var| var == needle.as_bytes()))
        })
        .filter(|pid| !lifecycle_is_zombie(*pid))
        .collect()
}

/// The namespaces (`net:[4026532…]`, `mnt:[…]`, `pid:[…]`) of `pid` that the test process itself is
/// not in: those meshfed created.
fn lifecycle_private_namespaces(pid: u32) -> std::collections::BTreeSet<String> {
    ["net", "mnt", "pid", "pid_for_children", "user"]
        .iter()
        .filter_map(|kind| {
            let theirs = std::fs::read_link(format!("/proc/{pid}/ns/{kind}")).ok()?;
            let ours = std::fs::read_link(format!("/proc/self/ns/{kind}")).ok()?;
            (theirs != ours).then(|| theirs.to_string_lossy().into_owned())
        })
        .collect()
}

/// Whether `pid` is a zombie: it runs nothing and holds no mount or network namespace any more
/// (the kernel drops those at exit); until its parent reaps it only its pid (and with it the id
/// of its PID namespace) remains. The sandbox's PID 1 ends so when its parent, the outer meshfed,
/// was SIGKILLed: the host's init reaps it, in its own time.
fn lifecycle_is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| stat.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'))
}

/// Everything on the host that still holds one of `namespaces`: a live process in it, or an open
/// descriptor of it.
fn lifecycle_namespace_holders(namespaces: &std::collections::BTreeSet<String>) -> Vec<String> {
    let mut holders = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return holders;
    };
    for pid in entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| !lifecycle_is_zombie(*pid))
    {
        for dir in ["ns", "fd"] {
            let Ok(links) = std::fs::read_dir(format!("/proc/{pid}/{dir}")) else {
                continue;
            };
            for link in links.flatten() {
                if let Ok(target) = std::fs::read_link(link.path()) {
                    let target = target.to_string_lossy().into_owned();
                    if namespaces.contains(&target) {
                        holders.push(format!("pid {pid} {dir}/{:?} -> {target}", link.file_name()));
                    }
                }
            }
        }
    }
    holders
}

/// Host mounts meshfed could have leaked: its /run tmpfs or `ip netns` bind mounts.
fn lifecycle_host_mounts() -> std::collections::BTreeSet<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter(|line| line.contains("meshfed") || line.contains("/run/netns/"))
        .map(str::to_owned)
        .collect()
}

/// Polls until no process carries `marker`, nothing holds `namespaces`, and the host's mounts
/// are as `mounts_before`; returns how long that took, or fails naming what is left.
fn lifecycle_await_nothing_left(
    marker: &str,
    namespaces: &std::collections::BTreeSet<String>,
    mounts_before: &std::collections::BTreeSet<String>,
    within: Duration,
) -> Duration {
    let started = Instant::now();
    loop {
        let processes = lifecycle_processes(marker);
        let holders = lifecycle_namespace_holders(namespaces);
        let mounts: Vec<String> = lifecycle_host_mounts().difference(mounts_before).cloned().collect();
        if processes.is_empty() && holders.is_empty() && mounts.is_empty() {
            return started.elapsed();
        }
        if started.elapsed() > within {
            let described: Vec<String> = processes
                .iter()
                .map(|pid| {
                    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                    format!("{pid}: {}", String::from_utf8_lossy(&cmdline).replace('\0', " "))
                })
                .collect();
            panic!(
                "{marker}: left after {within:?}: processes {described:?}, namespace holders {holders:?}, \
                 host mounts {mounts:?}"
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// stderr of a child, line by line, on a thread, so the test can wait for a line with a deadline.
fn lifecycle_stderr_lines(stderr: std::process::ChildStderr) -> std::sync::mpsc::Receiver<String> {
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if sender.send(line).is_err() {
                return;
            }
        }
    });
    receiver
}

/// Reads lines until one contains `wanted`; fails with all lines seen at the deadline or EOF.
fn lifecycle_await_line(lines: &std::sync::mpsc::Receiver<String>, wanted: &str, within: Duration) -> Vec<String> {
    let deadline = Instant::now() + within;
    let mut seen = Vec::new();
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(remaining) {
            Ok(line) => {
                let found = line.contains(wanted);
                seen.push(line);
                if found {
                    return seen;
                }
            }
            Err(error) => panic!(
                "no line with {wanted:?} ({error:?}); stderr so far:\n{}",
                seen.join("\n")
            ),
        }
    }
}

/// The parent pid of `pid`.
fn lifecycle_parent(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit(')').next()?.split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn sigkill_of_meshfed_with_a_wrapper_script_envoy_leaves_no_process_namespace_or_mount() {
    if !local_provider_available() {
        return;
    }
    let dir = temp_dir("sigkill-wrapper");
    let real_envoy = envoy_path();
    // Runs Envoy as its child (no exec): Envoy is meshfed's grandchild, out of reach of the death
    // signal the supervisor gives its direct children.
    let wrapper = dir.path().join("envoy-wrapper.sh");
    std::fs::write(&wrapper, format!("#!/bin/sh\n\"{}\" \"$@\"\n", real_envoy.display())).unwrap();
    std::fs::set_permissions(&wrapper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let marker = lifecycle_marker("sigkill-wrapper");
    let mounts_before = lifecycle_host_mounts();
    let mut meshfed = Command::new(MESHFED)
        .args(["run", scenario("skew.yaml").to_str().unwrap()])
        .env("MESHFED_ENVOY", &wrapper)
        .env("MESHFED_TEST_MARKER", &marker)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = lifecycle_stderr_lines(meshfed.stderr.take().unwrap());
    // The world is up once traffic flows.
    lifecycle_await_line(&lines, "phase equal-weights:", Duration::from_secs(120));

    let processes = lifecycle_processes(&marker);
    let is_real_envoy = |pid: &u32| std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|exe| exe == real_envoy);
    let envoys: Vec<u32> = processes.iter().copied().filter(is_real_envoy).collect();
    assert_eq!(envoys.len(), 7, "skew.yaml runs 7 Envoys: {envoys:?} of {processes:?}");
    for envoy in &envoys {
        let parent = lifecycle_parent(*envoy).unwrap();
        let parent_exe = std::fs::read_link(format!("/proc/{parent}/exe")).unwrap();
        assert!(
            !parent_exe.to_string_lossy().contains("meshfed"),
            "envoy {envoy} must be the wrapper's child, not meshfed's: parent {parent} is {parent_exe:?}"
        );
    }
    // Every namespace meshfed made: the worker's mount, network and PID namespaces, the pods'.
    let mut namespaces = std::collections::BTreeSet::new();
    for pid in &processes {
        namespaces.extend(lifecycle_private_namespaces(*pid));
    }
    assert!(
        namespaces.iter().filter(|ns| ns.starts_with("net:")).count() >= 8,
        "the sandbox's and the pods' network namespaces: {namespaces:?}"
    );
    assert!(namespaces.iter().any(|ns| ns.starts_with("mnt:")), "{namespaces:?}");

    meshfed.kill().unwrap(); // SIGKILL, to the process the user started
    let killed_at = Instant::now();
    let status = meshfed.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(Signal::SIGKILL as i32)
    );
    lifecycle_await_nothing_left(&marker, &namespaces, &mounts_before, Duration::from_secs(10));
    eprintln!(
        "SIGKILL_TO_NOTHING_LEFT {:.1} ms ({} processes, {} namespaces)",
        killed_at.elapsed().as_secs_f64() * 1e3,
        processes.len(),
        namespaces.len()
    );
}

#[test]
fn sigint_at_ten_moments_in_the_first_two_seconds_exits_130_and_leaves_nothing() {
    if !local_provider_available() {
        return;
    }
    let mut measured = Vec::new();
    for step in 0..10u32 {
        // The moment of the interrupt, counted from the spawn: an injection time, not a wait
        // for some condition.
        let moment = Duration::from_millis(200 * u64::from(step));
        let marker = lifecycle_marker(&format!("sigint-at-{}ms", moment.as_millis()));
        let mounts_before = lifecycle_host_mounts();
        let mut command = Command::new(MESHFED);
        command
            // Runs well past 2 s, so every moment falls inside the run.
            .args(["run", scenario("skew.yaml").to_str().unwrap()])
            .env("MESHFED_TEST_MARKER", &marker)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        #[allow(unsafe_code, reason = "pre_exec: SIGINT blocked between fork and exec")]
        // SIGINT starts blocked, as a signal that arrives while the dynamic loader still runs,
        // before meshfed has any code of its own running, would otherwise kill it outright:
        // meshfed's first instruction installs its handler and unblocks SIGINT, and a pending
        // one is then handled. (A shell reports such a death as 130 too, but it would skip the
        // path this test is about.)
        // SAFETY: only sigprocmask between fork and exec.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut command, || {
                let mut set = SigSet::empty();
                set.add(Signal::SIGINT);
                Ok(nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), None)?)
            });
        }
        let spawned = Instant::now();
        let mut meshfed = command.spawn().unwrap();
        let lines = lifecycle_stderr_lines(meshfed.stderr.take().unwrap());
        // Collect the namespaces meshfed makes until the moment comes.
        let mut namespaces = std::collections::BTreeSet::new();
        loop {
            for pid in lifecycle_processes(&marker) {
                namespaces.extend(lifecycle_private_namespaces(pid));
            }
            if spawned.elapsed() >= moment {
                break;
            }
            std::thread::sleep(Duration::from_millis(5).min(moment.saturating_sub(spawned.elapsed())));
        }
        // SAFETY: kill(2) on the pid of a child this test started and has not reaped.
        kill(Pid::from_raw(meshfed.id() as i32), Signal::SIGINT).unwrap();
        let signalled = Instant::now();
        let deadline = signalled + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = meshfed.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "SIGINT at {moment:?}: meshfed did not exit within 60 s"
            );
            std::thread::sleep(Duration::from_millis(5));
        };
        let to_exit = signalled.elapsed();
        // Everything it printed: the pipe closes once the last process of the run is gone.
        let mut stderr = Vec::new();
        loop {
            match lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) => stderr.push(line),
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
                Err(timeout) => panic!("SIGINT at {moment:?}: stderr still open: {timeout:?}; {stderr:?}"),
            }
        }
        assert_eq!(
            status.code(),
            Some(130),
            "SIGINT at {moment:?}: {status}; stderr:\n{}",
            stderr.join("\n")
        );
        assert!(
            stderr.iter().any(|line| line.contains("interrupted")),
            "SIGINT at {moment:?}: {stderr:?}"
        );
        let to_clean = lifecycle_await_nothing_left(&marker, &namespaces, &mounts_before, Duration::from_secs(10));
        let reached = stderr
            .iter()
            .rev()
            .find(|line| line.starts_with('[') && !line.contains("tearing down"))
            .cloned()
            .unwrap_or_else(|| "(before the first progress line)".to_owned());
        measured.push(format!(
            "at {:>4} ms: exit 130 after {:>6.1} ms, nothing left {:>5.1} ms later, {} namespaces seen; last step {reached}",
            moment.as_millis(),
            to_exit.as_secs_f64() * 1e3,
            to_clean.as_secs_f64() * 1e3,
            namespaces.len()
        ));
    }
    eprintln!("SIGINT_TO_EXIT\n{}", measured.join("\n"));
}

/// `meshfed setup` with `MESHFED_ENVOY=value`, an empty cache and a `python3` on `PATH` that
/// records being run: (exit code, stderr, whether pip was run).
fn lifecycle_setup_with_meshfed_envoy(dir: &TempDir, value: &Path) -> (Option<i32>, String, bool) {
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let pip_ran = dir.path().join("pip-ran");
    let python = bin.join("python3");
    std::fs::write(&python, format!("#!/bin/sh\ntouch {}\nexit 1\n", pip_ran.display())).unwrap();
    std::fs::set_permissions(&python, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let output = Command::new(MESHFED)
        .arg("setup")
        .env("MESHFED_ENVOY", value)
        .env("MESHFED_CACHE_DIR", dir.path().join("empty-cache"))
        .env("PATH", format!("{}:/usr/sbin:/usr/bin:/sbin:/bin", bin.display()))
        .env("MESHFED_TEST_MARKER", lifecycle_marker("meshfed-envoy"))
        .output()
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
        pip_ran.exists(),
    )
}

#[test]
fn an_unusable_meshfed_envoy_exits_3_saying_why_and_never_installs_from_pypi() {
    let dir = temp_dir("meshfed-envoy-unusable");
    let not_executable = dir.path().join("envoy-0644");
    std::fs::write(&not_executable, "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(&not_executable, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let not_envoy = dir.path().join("not-envoy");
    std::fs::write(&not_envoy, "#!/bin/sh\necho 'hello from a script'\n").unwrap();
    std::fs::set_permissions(&not_envoy, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let missing = dir.path().join("nonexistent/envoy");
    let cases = [
        (
            missing.clone(),
            format!("MESHFED_ENVOY={} does not exist", missing.display()),
        ),
        (
            not_executable.clone(),
            format!(
                "MESHFED_ENVOY={} is not an executable file (mode 0644, no execute permission)",
                not_executable.display()
            ),
        ),
        (
            dir.path().to_path_buf(),
            format!(
                "MESHFED_ENVOY={} is not an executable file (a directory)",
                dir.path().display()
            ),
        ),
        (
            not_envoy.clone(),
            format!(
                "MESHFED_ENVOY={} is not an envoy: `{} --version` printed no version",
                not_envoy.display(),
                not_envoy.display()
            ),
        ),
    ];
    for (value, reason) in cases {
        let (code, stderr, pip_ran) = lifecycle_setup_with_meshfed_envoy(&dir, &value);
        assert_eq!(code, Some(3), "{value:?}: {stderr}");
        assert!(stderr.contains(&reason), "{value:?}: want {reason:?} in:\n{stderr}");
        assert!(!stderr.contains("installing"), "{value:?}: {stderr}");
        assert!(!pip_ran, "{value:?}: pip was run although MESHFED_ENVOY was set");
    }
}

#[test]
fn a_meshfed_envoy_that_never_answers_its_version_is_stopped_after_10_s_and_named() {
    let dir = temp_dir("meshfed-envoy-sleeps");
    let sleeper = dir.path().join("sleeping-envoy");
    let marker = lifecycle_marker("sleeping-envoy");
    std::fs::write(&sleeper, "#!/bin/sh\nsleep 600\n").unwrap();
    std::fs::set_permissions(&sleeper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mounts_before = lifecycle_host_mounts();
    let output = Command::new(MESHFED)
        .arg("setup")
        .env("MESHFED_ENVOY", &sleeper)
        .env("MESHFED_TEST_MARKER", &marker)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "envoy --version ({}) did not answer within 10 s; it was killed",
            sleeper.display()
        )),
        "{stderr}"
    );
    // The script's `sleep` went with it.
    lifecycle_await_nothing_left(
        &marker,
        &std::collections::BTreeSet::new(),
        &mounts_before,
        Duration::from_secs(5),
    );
}

// ---- Istio fidelity end to end (docs/fidelity.md)

/// Answered requests per remote pod of `cluster` in a phase, pods that got none left out.
fn pods_answering_in(phase: &PhaseReport, cluster: &str) -> Vec<String> {
    phase
        .measurement
        .pods
        .iter()
        .filter(|pod| pod.cluster == cluster && pod.requests > 0)
        .map(|pod| pod.pod.clone())
        .collect()
}

/// scenarios/permissive.yaml: PERMISSIVE lets a sidecar-less caller through in plain text, STRICT
/// refuses it; without the DestinationRule, Istio 1.4 (no auto-mTLS) sends plain text and the
/// default version's auto-mTLS keeps the call mutual.
#[test]
fn permissive_accepts_a_caller_without_sidecar_in_plain_text_and_strict_refuses_it() {
    if !local_provider_available() {
        return;
    }
    let marker = unique_marker("permissive");
    let run = run(&scenario("permissive.yaml"), "permissive", &marker);
    assert_eq!(run.code, Some(0), "stdout:\n{}\nstderr:\n{}", run.stdout, run.stderr);
    let permissive = phase(&run, "no-sidecar-under-permissive");
    let m = &permissive.measurement;
    assert_eq!((m.success_rate, m.mtls_rate), (1.0, 0.0), "{m:?}");
    assert_eq!((m.plaintext_calls, m.mtls_calls), (m.attempted, 0), "{m:?}");
    let strict = phase(&run, "no-sidecar-under-strict");
    assert_eq!(strict.measurement.succeeded, 0, "{:?}", strict.measurement);
    assert!(strict.measurement.attempted > 0);
    let old = phase(&run, "no-destination-rule-without-auto-mtls");
    assert_eq!(
        (old.measurement.success_rate, old.measurement.mtls_rate),
        (1.0, 0.0),
        "Istio 1.4 without the DestinationRule sends plain text"
    );
    assert_eq!(old.measurement.plaintext_calls, old.measurement.attempted);
    let auto = phase(&run, "no-destination-rule-with-auto-mtls");
    assert_eq!(auto.measurement.mtls_rate, 1.0, "auto-mTLS on the default version");
    assert!(run.stdout.contains("in plain text"), "{}", run.stdout);
    assert_own_run_left_nothing(&marker, run.pid);
}

/// A service with three pods in one remote cluster, a pooled client at concurrency 8. With
/// Istio's default (`http` port → HTTP/1.1 between sidecars, row 7b) the client sidecar opens a
/// connection per request in flight and the passthrough gateway spreads those connections over
/// the remote pods; with `h2UpgradePolicy: UPGRADE` in the plan the single worker multiplexes
/// every request over one HTTP/2 connection, pinned to one remote pod (row 7a).
const POOLED_TOWARD_THREE_REMOTE_PODS: &str = "\
name: pooled-http
clusters:
  - name: cluster1
    proxyConcurrency: 1
    podCidr: 10.10.0.0/16
    serviceCidr: 10.96.0.0/16
  - name: cluster2
    podCidr: 10.20.0.0/16
    serviceCidr: 10.97.0.0/16
services:
  - name: foo
    namespace: ns1
    ports:
      - { name: http, number: 80, protocol: http }
    replicas: { cluster1: 1 }
  - name: bar
    namespace: ns2
    ports:
      - { name: http, number: 80, protocol: http }
    replicas: { cluster2: 3 }
phases:
  - name: pooled-http1
    from: { service: foo.ns1, cluster: cluster1 }
    to: { service: bar.ns2, port: http }
    requests: 800
    concurrency: 8
    expect:
      successRateAtLeast: 1.0
      mtlsRateAtLeast: 1.0
  - name: pooled-h2-upgrade
    from: { service: foo.ns1, cluster: cluster1 }
    to: { service: bar.ns2, port: http }
    h2UpgradePolicy: UPGRADE
    requests: 800
    concurrency: 8
    expect:
      successRateAtLeast: 1.0
      mtlsRateAtLeast: 1.0
";

#[test]
fn pooled_http1_reaches_several_remote_pods_and_an_h2_upgrade_pins_one() {
    if !local_provider_available() {
        return;
    }
    let dir = temp_dir("pooled-http");
    let path = dir.path().join("pooled-http.yaml");
    std::fs::write(&path, POOLED_TOWARD_THREE_REMOTE_PODS).unwrap();
    let marker = unique_marker("pooled-http");
    let run = run(&path, "pooled-http", &marker);
    assert_eq!(run.code, Some(0), "stdout:\n{}\nstderr:\n{}", run.stdout, run.stderr);
    let http1 = pods_answering_in(phase(&run, "pooled-http1"), "cluster2");
    assert!(http1.len() > 1, "HTTP/1.1 upstream: several remote pods, got {http1:?}");
    let h2 = pods_answering_in(phase(&run, "pooled-h2-upgrade"), "cluster2");
    assert_eq!(h2.len(), 1, "one HTTP/2 connection: one remote pod, got {h2:?}");
    assert_own_run_left_nothing(&marker, run.pid);
}

/// scenarios/gateway-loop.yaml at `version` (`None`: the default version).
fn gateway_loop_at(dir: &TempDir, version: Option<&str>) -> PathBuf {
    let text = std::fs::read_to_string(scenario("gateway-loop.yaml")).unwrap();
    let text = match version {
        Some(version) => text.replace("\"1.7.8\"", &format!("\"{version}\"")),
        None => text.replace("    istioVersion: \"1.7.8\"\n", ""),
    };
    let path = dir
        .path()
        .join(format!("gateway-loop-{}.yaml", version.unwrap_or("default")));
    std::fs::write(&path, text).unwrap();
    path
}

/// Rows 2b and 2d (pilot/pkg/xds/endpoint_builder.go@1.14.6, istio/istio#44356): on 1.7 the
/// gateways forward to each other (hops counted, calls succeed); on 1.20 Envoy rejects the
/// gateways' 15443 listener and the calls through them fail with the reason in the report; on the
/// default version neither happens.
#[test]
fn same_host_service_entries_bounce_between_1_7_gateways_and_take_down_1_20_gateway_listeners() {
    if !local_provider_available() {
        return;
    }
    let dir = temp_dir("gateway-loop");
    let marker = unique_marker("gateway-loop-1.7");
    let old = run(&scenario("gateway-loop.yaml"), "gateway-loop-1.7", &marker);
    assert_eq!(old.code, Some(0), "stdout:\n{}\nstderr:\n{}", old.stdout, old.stderr);
    let bounced = phase(&old, "new-connection-per-request");
    assert!(bounced.gateway_hops.unwrap_or(0) > 0, "{:?}", bounced.gateway_hops);
    assert!(bounced.config_rejections.is_empty(), "{:?}", bounced.config_rejections);
    assert!(old.stdout.contains("gateway-to-gateway hops: "), "{}", old.stdout);
    assert_own_run_left_nothing(&marker, old.pid);

    let marker = unique_marker("gateway-loop-1.20");
    // On 1.12-1.23 the sidecar's cluster is locality-weighted (docs/fidelity.md row 5a), and the
    // real Envoy then never picks a ServiceEntry endpoint without a locality (measured: 400 of 400
    // calls to the local pod, none to cluster2's gateway). With the gateways' localities in the
    // plan the calls do go to cluster2's gateway, whose rejected listener fails them.
    let path = gateway_loop_at(&dir, Some("1.20.8"));
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("  endpointWeights: equal\n"), "gateway-loop.yaml changed");
    std::fs::write(
        &path,
        text.replace(
            "  endpointWeights: equal\n",
            "  endpointWeights: equal\n  locality: true\n",
        ),
    )
    .unwrap();
    let broken = run(&path, "gateway-loop-1.20", &marker);
    assert_eq!(
        broken.code,
        Some(1),
        "stdout:\n{}\nstderr:\n{}",
        broken.stdout,
        broken.stderr
    );
    let rejected = phase(&broken, "new-connection-per-request");
    assert_eq!(rejected.config_rejections.len(), 2, "{:?}", rejected.config_rejections);
    assert!(
        rejected.config_rejections[0].contains("the same matching rules"),
        "{:?}",
        rejected.config_rejections
    );
    assert!(rejected.measurement.success_rate < 1.0);
    assert!(
        !rejected.measurement.clusters_reached.contains(&"cluster2".to_owned()),
        "no call gets through a gateway without its 15443 listener"
    );
    assert!(broken.stdout.contains("config rejected: "), "{}", broken.stdout);
    assert_own_run_left_nothing(&marker, broken.pid);

    let marker = unique_marker("gateway-loop-default");
    let fixed = run(&gateway_loop_at(&dir, None), "gateway-loop-default", &marker);
    assert_eq!(
        fixed.code,
        Some(0),
        "stdout:\n{}\nstderr:\n{}",
        fixed.stdout,
        fixed.stderr
    );
    let clean = phase(&fixed, "new-connection-per-request");
    assert_eq!(clean.gateway_hops, Some(0));
    assert!(clean.config_rejections.is_empty());
    assert_own_run_left_nothing(&marker, fixed.pid);
}

/// Row 2d on the seed itself (pilot/pkg/networking/core/v1alpha3/gateway.go@1.10.6
/// `builtAutoPassthroughFilterChains`, pilot/pkg/serviceregistry/aggregate/controller.go@1.10.6
/// `Services()`, istio/istio#44356): every cluster has a Service and a ServiceEntry for the other
/// cluster's service, so on 1.20.8 both gateways get a duplicated chain and Envoy rejects both
/// 15443 listeners. meshfed applies a plan's objects back to back, inside istiod's 100 ms debounce
/// (`PILOT_DEBOUNCE_AFTER`, pilot/pkg/features/pilot.go@1.20.8), so the first listener the
/// gateway is pushed already has the duplicate: no earlier one stays, and every cross-cluster
/// call fails. 1.22.0 (pilot/pkg/model/sidecar.go@1.22.0, one service per hostname) and 1.30.3 pass.
#[test]
fn the_seed_takes_both_gateways_15443_listeners_down_on_1_20_and_passes_on_1_22_and_1_30() {
    if !local_provider_available() {
        return;
    }
    let marker = unique_marker("seed-1.20");
    let broken = run_with(
        &scenario("seed.yaml"),
        &["--istio-version", "1.20.8"],
        "seed-1.20",
        &marker,
    );
    assert_eq!(
        broken.code,
        Some(1),
        "stdout:\n{}\nstderr:\n{}",
        broken.stdout,
        broken.stderr
    );
    for name in ["foo-to-bar-http", "foo-to-bar-tcp", "bar-to-foo-http"] {
        let rejected = phase(&broken, name);
        let rejections = &rejected.config_rejections;
        assert_eq!(rejections.len(), 2, "{name}: {rejections:?}");
        for (rejection, cluster) in rejections.iter().zip(["cluster1", "cluster2"]) {
            assert!(
                rejection.contains(&format!("gateway istio-ingressgateway in {cluster}")),
                "{rejection}"
            );
            assert!(
                rejection.contains("rejected its 15443 listener 0.0.0.0_15443"),
                "{rejection}"
            );
            assert!(rejection.contains("the same matching rules"), "{rejection}");
            assert!(rejection.contains("has no 15443 listener"), "{rejection}");
        }
        assert_eq!(
            rejected.measurement.succeeded, 0,
            "{name}: no call crosses a listener-less gateway"
        );
    }
    assert!(broken.stdout.contains("config rejected: "), "{}", broken.stdout);
    assert!(broken.stdout.contains("has no 15443 listener"), "{}", broken.stdout);
    assert_own_run_left_nothing(&marker, broken.pid);

    for version in ["1.22.0", "1.30.3"] {
        let label = format!("seed-{version}");
        let marker = unique_marker(&label);
        let fixed = run_with(&scenario("seed.yaml"), &["--istio-version", version], &label, &marker);
        assert_eq!(
            fixed.code,
            Some(0),
            "{version} stdout:\n{}\nstderr:\n{}",
            fixed.stdout,
            fixed.stderr
        );
        let report = fixed.report.as_ref().unwrap();
        assert!(
            report.phases.iter().all(|phase| phase.config_rejections.is_empty()),
            "{version}"
        );
        assert_own_run_left_nothing(&marker, fixed.pid);
    }
}

/// The way out of row 2d (docs/fidelity.md row 2e): with `federation.dnsProxying` the plan
/// replicates a Service only where the service runs, the sidecars resolve the other cluster's
/// service through their DNS proxy to the ServiceEntry's address (Istio 1.8.0
/// `releasenotes/notes/agent-dns-capture.yaml`, `pkg/dns/server/name_table.go@1.20.8`), and no
/// gateway lists a host twice: the seed passes on 1.20.8, every call mTLS with the caller's
/// identity, and no gateway refuses its listener.
#[test]
fn the_seed_with_dns_proxying_passes_on_1_20() {
    if !local_provider_available() {
        return;
    }
    let dir = temp_dir("seed-dns-proxying");
    let text = std::fs::read_to_string(scenario("seed.yaml"))
        .unwrap()
        .replace("  mtls: PERMISSIVE\n", "  mtls: PERMISSIVE\n  dnsProxying: true\n");
    assert!(text.contains("dnsProxying: true"));
    let path = dir.path().join("seed-dns-proxying.yaml");
    std::fs::write(&path, text).unwrap();
    let marker = unique_marker("seed-dns-1.20");
    let passed = run_with(&path, &["--istio-version", "1.20.8"], "seed-dns-1.20", &marker);
    assert_eq!(
        passed.code,
        Some(0),
        "stdout:\n{}\nstderr:\n{}",
        passed.stdout,
        passed.stderr
    );
    let report = passed.report.as_ref().unwrap();
    for phase in &report.phases {
        assert!(
            phase.config_rejections.is_empty(),
            "{}: {:?}",
            phase.name,
            phase.config_rejections
        );
        assert_eq!(
            phase.measurement.mtls_verified, phase.measurement.attempted,
            "{}",
            phase.name
        );
        assert!(phase.measurement.attempted > 0, "{}", phase.name);
    }
    assert_own_run_left_nothing(&marker, passed.pid);
}

fn requests_to_cluster(phase: &PhaseReport, cluster: &str) -> u64 {
    phase
        .measurement
        .pods
        .iter()
        .filter(|pod| pod.cluster == cluster)
        .map(|pod| pod.requests)
        .sum()
}

/// scenarios/locality.yaml (row 5: pilot/pkg/networking/core/v1alpha3/loadbalancer/loadbalancer.go@1.14.6):
/// with outlier detection a caller with a pod in its zone stays local and one without goes to the
/// gateway of the cluster in its region; without outlier detection the same world spreads calls
/// to the other region too (the control that shows the priorities are what keeps them near).
#[test]
fn with_outlier_detection_callers_stay_local_or_fail_over_to_the_nearest_region() {
    if !local_provider_available() {
        return;
    }
    let marker = unique_marker("locality");
    let run_with = run(&scenario("locality.yaml"), "locality", &marker);
    assert_eq!(
        run_with.code,
        Some(0),
        "stdout:\n{}\nstderr:\n{}",
        run_with.stdout,
        run_with.stderr
    );
    let local = phase(&run_with, "caller-with-a-local-pod-stays-local");
    assert_eq!(requests_to_cluster(local, "cluster1"), local.measurement.attempted);
    let nearest = phase(&run_with, "caller-without-local-pods-goes-to-the-nearest-region");
    assert_eq!(requests_to_cluster(nearest, "cluster1"), nearest.measurement.attempted);
    assert_eq!(requests_to_cluster(nearest, "cluster3"), 0);
    assert_own_run_left_nothing(&marker, run_with.pid);

    let dir = temp_dir("locality-control");
    let path = dir.path().join("no-outlier-detection.yaml");
    let text = std::fs::read_to_string(scenario("locality.yaml")).unwrap();
    std::fs::write(&path, text.replace("  outlierDetection: true\n", "")).unwrap();
    let marker = unique_marker("locality-control");
    let control = run(&path, "locality-control", &marker);
    let spread = phase(&control, "caller-without-local-pods-goes-to-the-nearest-region");
    assert!(
        requests_to_cluster(spread, "cluster3") > 0,
        "without outlier detection there are no priorities: {:?}",
        spread.measurement.pods
    );
    assert_own_run_left_nothing(&marker, control.pid);
}

/// bar only in cluster2, its three pods over two zones (bar-0 and bar-2 in zone2a, the gateway's
/// zone; bar-1 in zone2b), outlier detection in the rule.
const GATEWAY_IN_ZONE2A_WITH_A_POD_IN_ZONE2B: &str = "\
name: gateway-locality
clusters:
  - name: cluster1
    region: region1
    zone: zone1a
    podCidr: 10.10.0.0/16
    serviceCidr: 10.96.0.0/16
  - name: cluster2
    region: region2
    zone: zone2a
    zones: [zone2a, zone2b]
    podCidr: 10.20.0.0/16
    serviceCidr: 10.97.0.0/16
services:
  - name: foo
    namespace: ns1
    ports:
      - { name: http, number: 80, protocol: http }
    replicas: { cluster1: 1 }
  - name: bar
    namespace: ns2
    ports:
      - { name: http, number: 80, protocol: http }
    replicas: { cluster2: 3 }
federation:
  mode: serviceentry
  locality: true
  outlierDetection: true
phases:
  - name: through-the-zone2a-gateway
    from: { service: foo.ns1, cluster: cluster1 }
    to: { service: bar.ns2, port: http }
    requests: 300
    concurrency: 2
    connections: new-connection-per-request
    expect:
      successRateAtLeast: 1.0
";

/// Row 5 at gateways (`pilot/pkg/xds/endpoints/endpoint_builder.go@1.30.3`
/// builds failover priorities for any proxy): with outlier detection, calls entering cluster2's
/// gateway (zone2a) go to the pods in its zone only; without it the zone2b pod gets its share.
#[test]
fn with_outlier_detection_a_gateway_keeps_calls_in_its_own_zone() {
    if !local_provider_available() {
        return;
    }
    let dir = temp_dir("gateway-locality");
    let path = dir.path().join("gateway-locality.yaml");
    std::fs::write(&path, GATEWAY_IN_ZONE2A_WITH_A_POD_IN_ZONE2B).unwrap();
    let requests_to = |phase: &PhaseReport, pod: &str| {
        phase
            .measurement
            .pods
            .iter()
            .find(|load| load.pod == pod)
            .map_or(0, |load| load.requests)
    };
    let marker = unique_marker("gateway-locality");
    let with = run(&path, "gateway-locality", &marker);
    assert_eq!(with.code, Some(0), "stdout:\n{}\nstderr:\n{}", with.stdout, with.stderr);
    let kept = phase(&with, "through-the-zone2a-gateway");
    assert_eq!(requests_to(kept, "bar-1"), 0, "{:?}", kept.measurement.pods);
    assert!(requests_to(kept, "bar-0") > 0 && requests_to(kept, "bar-2") > 0);
    assert_own_run_left_nothing(&marker, with.pid);

    let control = dir.path().join("no-outlier-detection.yaml");
    std::fs::write(
        &control,
        GATEWAY_IN_ZONE2A_WITH_A_POD_IN_ZONE2B.replace("  outlierDetection: true\n", ""),
    )
    .unwrap();
    let marker = unique_marker("gateway-locality-control");
    let without = run(&control, "gateway-locality-control", &marker);
    let spread = phase(&without, "through-the-zone2a-gateway");
    assert!(
        requests_to(spread, "bar-1") > 0,
        "without outlier detection the gateway's cluster is flat: {:?}",
        spread.measurement.pods
    );
    assert_own_run_left_nothing(&marker, without.pid);
}

/// Row 6c (`pilot/pkg/xds/ep_filters.go@1.8.0`, "dont allow cross-network endpoints for
/// uninjected traffic"): with endpoint discovery and bar's pods without a sidecar, istiod gives
/// cluster1's sidecar no gateway for cluster2's pods, so every call goes to the local pod and
/// cluster2 is never reached (and none fails on a TLS connection to a pod without a sidecar).
#[test]
fn cross_network_discovery_leaves_out_remote_pods_without_a_sidecar() {
    if !local_provider_available() {
        return;
    }
    let dir = temp_dir("uninjected-remote");
    let path = dir.path().join("uninjected-remote.yaml");
    let text = std::fs::read_to_string(scenario("multi-zone-weight-bug.yaml"))
        .unwrap()
        .replace("    namespace: ns2\n", "    namespace: ns2\n    sidecar: false\n")
        // No retries: Istio's default retries would hide a call sent to the gateway by retrying it
        // on the local pod.
        .replace(
            "  mtls: PERMISSIVE\n",
            "  mtls: PERMISSIVE\n  destinationRule: false\n  retries: { attempts: 0 }\n",
        );
    let phases = text.find("\nphases:\n").unwrap();
    let scenario_text = format!(
        "{}\nphases:\n  - name: to-uninjected-bar\n    from: {{ service: foo.ns1, cluster: cluster1 }}\n    to: {{ service: bar.ns2, port: http }}\n    requests: 200\n    concurrency: 2\n    connections: new-connection-per-request\n    expect:\n      successRateAtLeast: 1.0\n      clustersReached: [cluster1]\n",
        &text[..phases]
    );
    std::fs::write(&path, scenario_text).unwrap();
    let marker = unique_marker("uninjected-remote");
    let run = run(&path, "uninjected-remote", &marker);
    assert_eq!(run.code, Some(0), "stdout:\n{}\nstderr:\n{}", run.stdout, run.stderr);
    let phase = phase(&run, "to-uninjected-bar");
    assert_eq!(requests_to_cluster(phase, "cluster1"), phase.measurement.attempted);
    assert_eq!(requests_to_cluster(phase, "cluster2"), 0);
    assert_own_run_left_nothing(&marker, run.pid);
}

/// scenarios/multi-zone-weight-bug.yaml (row 6b: `pilot/pkg/xds/ep_filters.go@1.8.0`, same shape
/// on 1.30.2, istio/istio#56355): cluster2's three bar pods sit in two zones (zone2a: 1,
/// zone2b: 2) and endpoint discovery programs cluster2's gateway with zone2a's weight only, so
/// cluster1's single pod takes half of the calls, not the quarter its pod count is worth.
#[test]
fn a_two_zone_remote_cluster_gets_only_its_first_zones_weight_under_endpoint_discovery() {
    if !local_provider_available() {
        return;
    }
    let marker = unique_marker("multi-zone");
    let run = run(&scenario("multi-zone-weight-bug.yaml"), "multi-zone", &marker);
    assert_eq!(run.code, Some(0), "stdout:\n{}\nstderr:\n{}", run.stdout, run.stderr);
    let phase = phase(&run, "ready-pods-weights-across-two-zones");
    assert_share(phase, "cluster1", "bar-0", 1.0 / 2.0);
    for pod in ["bar-0", "bar-1", "bar-2"] {
        assert_share(phase, "cluster2", pod, 1.0 / 6.0);
    }
    let samples = phase.measurement.request_skew.samples;
    let local = phase
        .measurement
        .pods
        .iter()
        .find(|load| load.cluster == "cluster1")
        .unwrap()
        .request_share;
    assert!(
        (local - 0.25).abs() > share_tolerance(samples, 0.25, Z),
        "the correct total weight (3) would give cluster1 a quarter; got {local:.4}"
    );
    assert_own_run_left_nothing(&marker, run.pid);
}
