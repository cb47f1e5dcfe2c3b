//! Diagnostics that survive a run (`meshfed run --keep-logs`, and a failed run's
//! `<report-dir>/logs/`): Envoy logs and config dumps, the plans applied and the request records,
//! on the `local` provider (root or user namespaces, `ip`, Envoy; skipped with a message
//! elsewhere, a failure under `CI=true`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::support::local_provider;
use crate::support::marker;
use crate::support::meshfed_command::MESHFED;
use crate::support::temp_dir::temp_dir;
use local_provider::local_provider_available;
use marker::{MARKER_ENV, processes_with_marker, unique_marker};

const RECORDS_HEADER: &str =
    "seq,target,status,error,pod,cluster,peer_identity,started_us,latency_us,connection,server_connection";

/// Two phases of the seed's world; the first expects the wrong cluster, so the run exits 1.
const FAILING_PHASES: &str = "
  - name: wrong-cluster-expected
    from: { service: foo.ns1, cluster: cluster1 }
    to: { service: bar.ns2, port: http }
    requests: 24
    expect:
      clustersReached: [cluster1]
  - name: tcp-passes
    from: { service: foo.ns1, cluster: cluster1 }
    to: { service: bar.ns2, port: tcp }
    requests: 16
    expect:
      mtlsRateAtLeast: 1.0
";

/// The same world with expectations that hold.
const PASSING_PHASES: &str = "
  - name: http-passes
    from: { service: foo.ns1, cluster: cluster1 }
    to: { service: bar.ns2, port: http }
    requests: 20
    expect:
      clustersReached: [cluster2]
";

fn write_scenario(dir: &Path, phases: &str) -> PathBuf {
    let seed_file = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/seed.yaml");
    let seed = std::fs::read_to_string(seed_file).unwrap();
    let body = seed.split("phases:\n").next().unwrap();
    let path = dir.join("scenario.yaml");
    std::fs::write(&path, format!("{body}phases:\n{phases}")).unwrap();
    path
}

/// Runs `meshfed run` with `args` after the scenario; returns the exit code and stderr, and checks
/// the run left none of its processes behind.
fn meshfed_run(test: &str, scenario: &Path, args: &[&Path]) -> (Option<i32>, String) {
    let marker = unique_marker(test);
    let mut command = Command::new(MESHFED);
    command.arg("run").arg(scenario);
    for pair in args.chunks(2) {
        command.arg(pair[0]).arg(pair[1]);
    }
    let output = command
        .env(MARKER_ENV, &marker)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("start meshfed");
    let stderr = format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        processes_with_marker(&marker),
        Vec::<u32>::new(),
        "{test} left processes"
    );
    (output.status.code(), stderr)
}

/// Every file below `dir`, relative to it, sorted.
fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(next) = pending.pop() {
        for entry in std::fs::read_dir(&next).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                found.push(path.strip_prefix(dir).unwrap().to_owned());
            }
        }
    }
    found.sort();
    found
}

/// What a kept-logs directory must hold for the failing scenario's world (foo-0 in cluster1,
/// bar-0 in cluster2, one gateway each) and its two phases.
fn assert_complete_diagnostics(logs: &Path, context: &str) {
    let files = files_below(logs);
    let listing = format!("{files:#?}\n{context}");
    let envoys: Vec<&Path> = files
        .iter()
        .filter(|file| file.file_name().is_some_and(|name| name == "config_dump.json"))
        .map(|file| file.parent().unwrap())
        .collect();
    assert_eq!(
        envoys.len(),
        4,
        "a config dump per Envoy (2 sidecars, 2 gateways): {listing}"
    );
    for envoy in &envoys {
        assert!(envoy.starts_with("envoy"), "{listing}");
        let dump: serde_json::Value =
            serde_json::from_slice(&std::fs::read(logs.join(envoy).join("config_dump.json")).unwrap())
                .unwrap_or_else(|error| panic!("{} is no JSON: {error}", envoy.display()));
        assert!(
            dump["configs"].as_array().is_some_and(|configs| !configs.is_empty()),
            "{}: a config dump lists configs",
            envoy.display()
        );
        let log = files
            .iter()
            .find(|file| file.starts_with(envoy) && file.extension().is_some_and(|ext| ext == "log"))
            .unwrap_or_else(|| panic!("no Envoy log for {}: {listing}", envoy.display()));
        let text = std::fs::read_to_string(logs.join(log)).unwrap();
        // Envoy's line format (it logs at warning level here): `[time][thread][level][logger] [source/...`.
        assert!(
            text.lines()
                .next()
                .is_some_and(|line| line.starts_with('[') && line.contains("] [source/")),
            "{} is not Envoy's log:\n{text}",
            log.display()
        );
    }
    for pod in ["cluster1/foo-0", "cluster2/bar-0"] {
        assert!(
            envoys.iter().any(|envoy| envoy.ends_with(pod)),
            "no dump for the sidecar of {pod}: {listing}"
        );
    }
    for (phase, requests) in [("01-wrong-cluster-expected", 24), ("02-tcp-passes", 16)] {
        let csv = std::fs::read_to_string(logs.join("records").join(format!("{phase}.csv")))
            .unwrap_or_else(|error| panic!("records of {phase}: {error}: {listing}"));
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines[0], RECORDS_HEADER);
        assert_eq!(lines.len(), 1 + requests, "one row per request of {phase}:\n{csv}");
        for row in &lines[1..] {
            let columns: Vec<&str> = row.split(',').collect();
            assert_eq!(columns.len(), 11, "{row}");
            assert_eq!(columns[5], "cluster2", "answered by cluster2: {row}");
        }
        let plan = std::fs::read_to_string(logs.join("plans").join(format!("{phase}.yaml")))
            .unwrap_or_else(|error| panic!("plan of {phase}: {error}: {listing}"));
        assert!(plan.contains("kind: ServiceEntry"), "the plan of {phase}:\n{plan}");
    }
    for file in &files {
        let bytes = std::fs::read(logs.join(file)).unwrap();
        assert!(
            !String::from_utf8_lossy(&bytes).contains("PRIVATE KEY"),
            "{} holds a private key",
            file.display()
        );
    }
}

#[test]
fn a_failed_run_keeps_envoy_logs_config_dumps_plans_and_records_in_the_report_directory() {
    if !local_provider_available() {
        return;
    }
    let dir = temp_dir("failed");
    let scenario = write_scenario(dir.path(), FAILING_PHASES);
    let report_dir = dir.path().join("report");
    let (code, output) = meshfed_run("diag-failed", &scenario, &[Path::new("--report-dir"), &report_dir]);
    assert_eq!(code, Some(1), "{output}");
    assert!(report_dir.join("report.json").is_file(), "{output}");
    assert_complete_diagnostics(&report_dir.join("logs"), &output);
}

#[test]
fn a_passing_run_keeps_nothing_without_keep_logs_and_everything_with_it() {
    if !local_provider_available() {
        return;
    }
    let dir = temp_dir("passing");
    let scenario = write_scenario(dir.path(), PASSING_PHASES);
    let report_dir = dir.path().join("report");
    // Logs of an earlier failed run (meshfed's: they carry its marker) must not sit next to a
    // passing report.
    std::fs::create_dir_all(report_dir.join("logs/records")).unwrap();
    std::fs::write(report_dir.join("logs/records/01-old.csv"), "stale").unwrap();
    std::fs::write(
        report_dir.join("logs/.meshfed-logs"),
        "diagnostics kept by meshfed run\n",
    )
    .unwrap();
    let (code, output) = meshfed_run("diag-passing", &scenario, &[Path::new("--report-dir"), &report_dir]);
    assert_eq!(code, Some(0), "{output}");
    assert_eq!(
        files_below(&report_dir),
        [PathBuf::from("junit.xml"), "report.html".into(), "report.json".into()],
        "{output}"
    );

    let kept = dir.path().join("kept");
    let (code, output) = meshfed_run(
        "diag-kept",
        &scenario,
        &[Path::new("--report-dir"), &report_dir, Path::new("--keep-logs"), &kept],
    );
    assert_eq!(code, Some(0), "{output}");
    assert!(
        !report_dir.join("logs").exists(),
        "a passing run keeps nothing in the report directory"
    );
    let files = files_below(&kept);
    assert!(
        files.contains(&PathBuf::from("records/01-http-passes.csv")),
        "{files:#?}"
    );
    assert!(
        files.contains(&PathBuf::from("plans/01-http-passes.yaml")),
        "{files:#?}"
    );
    assert_eq!(
        files.iter().filter(|file| file.ends_with("config_dump.json")).count(),
        4,
        "{files:#?}"
    );
}

#[test]
fn a_passing_run_keeps_a_users_own_logs_folder_in_the_report_directory() {
    if !local_provider_available() {
        return;
    }
    let dir = temp_dir("users-logs");
    let scenario = write_scenario(dir.path(), PASSING_PHASES);
    let report_dir = dir.path().join("report");
    std::fs::create_dir_all(report_dir.join("logs")).unwrap();
    std::fs::write(report_dir.join("logs/notes.txt"), "the user's, not meshfed's").unwrap();
    let (code, output) = meshfed_run("diag-users-logs", &scenario, &[Path::new("--report-dir"), &report_dir]);
    assert_eq!(code, Some(0), "{output}");
    assert_eq!(
        files_below(&report_dir),
        [
            PathBuf::from("junit.xml"),
            "logs/notes.txt".into(),
            "report.html".into(),
            "report.json".into()
        ],
        "{output}"
    );
    assert_eq!(
        std::fs::read_to_string(report_dir.join("logs/notes.txt")).unwrap(),
        "the user's, not meshfed's"
    );
}

#[test]
fn keep_logs_inside_the_report_directory_is_reused_whole_and_a_symlink_in_it_changes_nothing() {
    if !local_provider_available() {
        return;
    }
    let dir = temp_dir("keep-nested");
    let failing = write_scenario(dir.path(), FAILING_PHASES);
    let passing_dir = dir.path().join("passing");
    std::fs::create_dir_all(&passing_dir).unwrap();
    let passing = write_scenario(&passing_dir, PASSING_PHASES);
    let report_dir = dir.path().join("report");
    let kept = report_dir.join("logs");
    let args = [Path::new("--report-dir"), &report_dir, Path::new("--keep-logs"), &kept];

    // --keep-logs R/logs with --report-dir R: the failed run's diagnostics are there, once.
    let (code, output) = meshfed_run("diag-nested-failed", &failing, &args);
    assert_eq!(code, Some(1), "{output}");
    assert_complete_diagnostics(&kept, &output);

    // Reused by a passing run: replaced as a whole (not deleted as stale, and no record of the
    // earlier run left to look current).
    let (code, output) = meshfed_run("diag-nested-passing", &passing, &args);
    assert_eq!(code, Some(0), "{output}");
    let files = files_below(&kept);
    assert!(
        files.contains(&PathBuf::from("records/01-http-passes.csv")),
        "{files:#?}\n{output}"
    );
    assert!(
        !files
            .iter()
            .any(|file| file.to_string_lossy().contains("wrong-cluster")),
        "nothing of the earlier run is left: {files:#?}"
    );

    // A symlink a user put inside it: the next run still keeps everything, and never writes
    // through it.
    let elsewhere = dir.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::fs::write(elsewhere.join("mine.txt"), "mine").unwrap();
    std::fs::remove_dir_all(kept.join("records")).unwrap();
    std::os::unix::fs::symlink(&elsewhere, kept.join("records")).unwrap();
    let (code, output) = meshfed_run("diag-nested-symlink", &passing, &args);
    assert_eq!(code, Some(0), "{output}");
    assert!(
        kept.join("records").is_dir() && !kept.join("records").is_symlink(),
        "{output}"
    );
    assert!(kept.join("records/01-http-passes.csv").is_file(), "{output}");
    assert_eq!(files_below(&elsewhere), [PathBuf::from("mine.txt")]);
}
