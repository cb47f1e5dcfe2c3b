//! The `meshfed` binary: exit codes, what `plan` and `certs` write, and that bad input writes nothing.

use crate::support::meshfed_command::{MESHFED, Meshfed};
use crate::support::temp_dir::temp_dir;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

fn meshfed(args: &[&str]) -> Output {
    Meshfed::new(args).output()
}

fn scenario(name: &str) -> String {
    format!("{}/scenarios/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn plan_writes_numbered_files_per_cluster_and_a_summary() {
    let dir = temp_dir("plan");
    let out = dir.path().join("plan");
    let output = meshfed(&["plan", &scenario("seed.yaml"), "--out", out.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    assert!(stdout.contains("cluster1"), "{stdout}");
    assert!(stdout.contains("ServiceEntry"), "{stdout}");
    assert!(stdout.contains("placeholders"), "{stdout}");
    let mut names: Vec<String> = std::fs::read_dir(out.join("cluster1"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names.first().map(String::as_str), Some("00-namespace-ns1.yaml"));
    assert!(
        names.contains(&"07-serviceentry-remote-endpoint-for-bar-in-cluster1.ns2.yaml".to_owned()),
        "{names:?}"
    );
    // Re-planning into the same directory replaces the earlier plan.
    let again = meshfed(&["plan", &scenario("skew.yaml"), "--out", out.to_str().unwrap()]);
    assert_eq!(again.status.code(), Some(0), "{}", text(&again.stderr));
    let yaml =
        std::fs::read_to_string(out.join("cluster1/07-serviceentry-remote-endpoint-for-bar-in-cluster1.ns2.yaml"))
            .unwrap();
    assert!(yaml.contains("meshfed.io/scenario: skew"), "{yaml}");
}

#[test]
fn plan_with_a_malformed_scenario_exits_2_names_the_place_and_writes_nothing() {
    let dir = temp_dir("bad");
    let broken = dir.path().join("broken.yaml");
    let seed = std::fs::read_to_string(scenario("seed.yaml")).unwrap();
    std::fs::write(
        &broken,
        seed.replace("replicas: { cluster2: 1 }", "replicas: { cluster7: 1 }"),
    )
    .unwrap();
    let out = dir.path().join("plan");
    let output = meshfed(&["plan", broken.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "{}:29:27: replicas of bar.ns2 for unknown cluster \"cluster7\"",
            broken.display()
        )),
        "{stderr}"
    );
    assert!(!out.exists(), "a rejected scenario must not write anything");
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    assert_eq!(leftovers.len(), 1, "only the broken scenario itself: {leftovers:?}");
}

#[test]
fn plan_refuses_to_overwrite_a_directory_it_did_not_write() {
    let dir = temp_dir("foreign");
    let out = dir.path().join("precious");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("notes.txt"), "mine").unwrap();
    let output = meshfed(&["plan", &scenario("seed.yaml"), "--out", out.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output.stderr).contains("refusing to overwrite"));
    assert_eq!(std::fs::read_to_string(out.join("notes.txt")).unwrap(), "mine");
}

#[test]
fn missing_scenario_file_and_unknown_provider_exit_2() {
    let output = meshfed(&["plan", "/nonexistent/scenario.yaml", "--out", "/nonexistent/out"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output.stderr).contains("cannot read the scenario file"));
    let output = meshfed(&["run", &scenario("seed.yaml"), "--provider", "docker-swarm"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("docker-swarm") && stderr.contains("local") && stderr.contains("kind"),
        "{stderr}"
    );
}

#[test]
fn certs_writes_the_cacerts_layout_with_private_keys_0600() {
    let dir = temp_dir("certs");
    let out = dir.path().join("certs");
    let output = meshfed(&["certs", &scenario("seed.yaml"), "--out", out.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    for cluster in ["cluster1", "cluster2"] {
        let mut files: Vec<String> = std::fs::read_dir(out.join(cluster))
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .collect();
        files.sort();
        assert_eq!(files, ["ca-cert.pem", "ca-key.pem", "cert-chain.pem", "root-cert.pem"]);
        assert_eq!(mode(&out.join(cluster).join("ca-key.pem")), 0o600);
    }
    assert_eq!(mode(&out.join("root-ca/root-key.pem")), 0o600);
    assert!(!text(&output.stdout).contains("PRIVATE KEY") && !text(&output.stderr).contains("PRIVATE KEY"));
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn run_with_a_malformed_scenario_exits_2_before_building_anything() {
    let dir = temp_dir("run-bad");
    let broken = dir.path().join("broken.yaml");
    let seed = std::fs::read_to_string(scenario("seed.yaml")).unwrap();
    std::fs::write(&broken, seed.replace("port: tcp }", "port: grpc }")).unwrap();
    let report_dir = dir.path().join("report");
    let output = meshfed(&[
        "run",
        broken.to_str().unwrap(),
        "--report-dir",
        report_dir.to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("port grpc is not declared by bar.ns2; declared ports: http (80), tcp (9090)"),
        "{stderr}"
    );
    assert!(!report_dir.exists(), "nothing is created for a rejected scenario");
}

/// An unusable `--keep-logs DIR` used to be reported as "the report directory", which names
/// the wrong flag when both are given.
#[test]
fn an_unusable_keep_logs_directory_is_named_as_such_not_as_the_report_directory() {
    let dir = temp_dir("keep-logs-wording");
    let file = dir.path().join("a-file");
    std::fs::write(&file, "not a directory").unwrap();
    let keep = file.join("logs");
    let reports = dir.path().join("reports");
    let output = meshfed(&[
        "run",
        &scenario("seed.yaml"),
        "--report-dir",
        reports.to_str().unwrap(),
        "--keep-logs",
        keep.to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output.stderr));
    let stderr = text(&output.stderr);
    // Named as the --keep-logs directory (the message starts with the flag), with its path.
    assert!(stderr.starts_with("meshfed: --keep-logs: "), "{stderr}");
    assert!(stderr.contains(&keep.display().to_string()), "{stderr}");
    assert!(!stderr.contains("the report directory"), "{stderr}");
}

/// docs/diff.md: a scenario invalid under one version of a matrix exits 2 naming the version and
/// the position (it used to be missing when the cluster's version was the default).
#[test]
fn a_scenario_invalid_under_one_matrix_version_names_the_version_and_the_position() {
    let output = meshfed(&[
        "run",
        &scenario("multi-zone-weight-bug.yaml"),
        "--istio-version",
        "1.7",
        "--istio-version",
        "1.30",
    ]);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output.stderr));
    let stderr = text(&output.stderr);
    // The position of cluster1 (whose version the matrix sets) in the file, found rather than
    // hard-coded.
    let file = scenario("multi-zone-weight-bug.yaml");
    let text_of_file = std::fs::read_to_string(&file).unwrap();
    let line = text_of_file
        .lines()
        .position(|line| line == "  - name: cluster1")
        .expect("the scenario has cluster1")
        + 1;
    assert!(
        stderr.contains(&format!(
            "with --istio-version 1.7.0: {file}:{line}:11: federation mode endpoint-discovery needs Istio 1.8.0 or newer"
        )),
        "{stderr}"
    );
}

#[test]
fn plan_with_an_inventory_uses_its_gateway_addresses_and_ready_pods() {
    let dir = temp_dir("inventory");
    let inventory = dir.path().join("inventory.yaml");
    std::fs::write(
        &inventory,
        "clusters:
  cluster1:
    gateway: { address: 198.51.100.1 }
    istioVersion: 1.24.3
    region: r1
    zone: z1
    readyPods:
      foo.ns1: [{ name: foo-abc, region: r1, zone: z1 }]
  cluster2:
    gateway: { address: 198.51.100.2, port: 15443 }
    istioVersion: 1.24.3
    region: r2
    zone: z2
    readyPods:
      bar.ns2: [{ name: bar-a, region: r2, zone: z2 }, { name: bar-b, region: r2, zone: z2 }]
",
    )
    .unwrap();
    let out = dir.path().join("plan");
    let output = meshfed(&[
        "plan",
        &scenario("seed.yaml"),
        "--out",
        out.to_str().unwrap(),
        "--inventory",
        inventory.to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert!(!text(&output.stdout).contains("placeholders"));
    let entry =
        std::fs::read_to_string(out.join("cluster1/07-serviceentry-remote-endpoint-for-bar-in-cluster1.ns2.yaml"))
            .unwrap();
    let entry: serde_json::Value = serde_saphyr::from_str(&entry).unwrap();
    assert_eq!(
        entry["spec"]["endpoints"],
        serde_json::json!([{"address": "198.51.100.2", "ports": {"http": 15443, "tcp": 15443}}])
    );

    std::fs::write(&inventory, "clusters: {}\n").unwrap();
    let output = meshfed(&[
        "plan",
        &scenario("seed.yaml"),
        "--out",
        out.to_str().unwrap(),
        "--inventory",
        inventory.to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output.stderr).contains("the inventory has no entry for cluster cluster1"));
}

#[test]
fn v_and_rust_log_choose_which_diagnostics_reach_stderr() {
    let dir = temp_dir("verbosity");
    let run = |out: &str, extra: &[&str], rust_log: Option<&str>| {
        let mut command = Command::new(MESHFED);
        command
            .args(extra)
            .args(["plan", &scenario("seed.yaml"), "--out"])
            .arg(dir.path().join(out));
        command.env_remove("RUST_LOG");
        if let Some(filter) = rust_log {
            command.env("RUST_LOG", filter);
        }
        let output = command.output().expect("run meshfed");
        assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
        text(&output.stderr)
    };
    let quiet = run("quiet", &[], None);
    assert!(!quiet.contains("DEBUG"), "no debug events by default: {quiet}");
    let verbose = run("verbose", &["-v"], None);
    assert!(
        verbose.contains("DEBUG") && verbose.contains("planned") && verbose.contains("cluster=cluster2"),
        "-v shows meshfed's debug events with their fields: {verbose}"
    );
    let filtered = run("filtered", &[], Some("meshfed=debug"));
    assert!(filtered.contains("planned"), "RUST_LOG alone turns them on: {filtered}");
    let off = run("off", &["-v"], Some("off"));
    assert!(!off.contains("planned"), "RUST_LOG overrides -v: {off}");
}
