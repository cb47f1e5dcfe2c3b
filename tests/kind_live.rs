//! The shipped scenarios on real kind clusters with real Istio. They need Docker and kind (and
//! network access for images and istioctl), so they are ignored by default and never reported as
//! run; `.github/workflows/kind-e2e.yml` runs them:
//!
//! ```text
//! cargo test --release --test kind_live -- --ignored --test-threads=1
//! ```
//!
//! (The workflow skips `seed_passes_on_kind` there: its kubeconfig job runs the seed on kind and
//! keeps those clusters for `tests/kubeconfig_live.rs`, so no scenario runs twice.)
//!
//! Each runs `meshfed run scenarios/<name>.yaml --provider kind`, expects exit 0 and a passing
//! report from the `kind` provider, and then no `meshfed-*` kind cluster left. Reports go to
//! `$MESHFED_LIVE_REPORT_DIR/<name>/report.json` when that is set.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn meshfed_clusters() -> Vec<String> {
    let output = Command::new("kind")
        .args(["get", "clusters"])
        .output()
        .expect("kind runs");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|name| name.starts_with("meshfed-"))
        .map(str::to_owned)
        .collect()
}

fn run_live(name: &str) {
    let scenario = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scenarios")
        .join(format!("{name}.yaml"));
    run_live_file(name, &scenario);
}

/// Runs `scenario` on kind as [`run_live`] describes and returns its report.
fn run_live_file(name: &str, scenario: &Path) -> serde_json::Value {
    assert!(
        meshfed_clusters().is_empty(),
        "meshfed-* clusters exist before the run: run `meshfed down`"
    );
    let report_dir = std::env::var_os("MESHFED_LIVE_REPORT_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join(format!("meshfed-live-{}", std::process::id())))
        .join(name);
    let status = Command::new(env!("CARGO_BIN_EXE_meshfed"))
        .arg("run")
        .arg(scenario)
        .args(["--provider", "kind", "--report-dir"])
        .arg(&report_dir)
        .env(
            "MESHFED_TEST_MARKER",
            format!("kind-live-{name}-{}", std::process::id()),
        )
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .status()
        .unwrap();
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report_dir.join("report.json")).expect("report.json written"))
            .unwrap();
    assert_eq!(report["provider"]["name"], "kind");
    assert!(
        report["provider"]["proxy"].as_str().unwrap().starts_with("istio "),
        "{}",
        report["provider"]
    );
    assert_eq!(report["passed"], true, "see {}", report_dir.display());
    assert_eq!(status.code(), Some(0));
    assert_eq!(
        meshfed_clusters(),
        Vec::<String>::new(),
        "the run deletes the clusters it created"
    );
    report
}

#[test]
#[ignore = "needs docker and kind"]
fn seed_passes_on_kind() {
    run_live("seed");
}

#[test]
#[ignore = "needs docker and kind"]
fn skew_passes_on_kind() {
    run_live("skew");
}

#[test]
#[ignore = "needs docker and kind"]
fn upgrade_from_1_29_to_1_30_keeps_mtls_on_kind() {
    run_live("upgrade");
}

/// bar has two pods in cluster2, scaled to 0 at 5 s and back to 2 at 25 s while foo in cluster1
/// calls it at 100/s for 60 s (kind's pods take seconds to stop and start: the offsets leave room).
const TIMED_SCALE: &str = "
name: kind-timed-scale
description: bar in cluster2 scales to zero and back under traffic on kind.
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
    replicas: { cluster1: 1, cluster2: 2 }
federation:
  endpointWeights: ready-pods
phases:
  - name: scale-down-and-up
    from: { service: foo.ns1, cluster: cluster1 }
    to: { service: bar.ns2, port: http }
    requests: 6000
    ratePerSecond: 100
    concurrency: 4
    bucketMillis: 1000
    actions:
      - { atMillis: 5000, name: to-zero, scale: { cluster: cluster2, service: bar.ns2, replicas: 0 } }
      - { atMillis: 25000, name: back, scale: { cluster: cluster2, service: bar.ns2, replicas: 2 } }
    expect:
      successRateAtLeast: 0.5
";

/// Requests answered by cluster2 in the buckets starting in `[from_ms, to_ms)`.
fn cluster2_answers(timeline: &serde_json::Value, from_ms: u64, to_ms: u64) -> u64 {
    timeline["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|bucket| (from_ms..to_ms).contains(&bucket["start_ms"].as_u64().unwrap()))
        .map(|bucket| bucket["per_cluster"]["cluster2"].as_u64().unwrap_or(0))
        .sum()
}

#[test]
#[ignore = "needs docker and kind"]
fn a_timed_scale_under_background_traffic_moves_answers_on_kind() {
    let dir = std::env::temp_dir().join(format!("meshfed-kind-timed-scale-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let scenario = dir.join("kind-timed-scale.yaml");
    std::fs::write(&scenario, TIMED_SCALE).unwrap();
    let report = run_live_file("kind-timed-scale", &scenario);
    std::fs::remove_dir_all(&dir).unwrap();
    let phase = &report["phases"][0];
    let timeline = &phase["timeline"];
    let actions = timeline["actions"].as_array().unwrap();
    assert_eq!(
        actions.len(),
        2,
        "both actions were taken while the traffic ran: {actions:?}"
    );
    let (down, up) = (&actions[0], &actions[1]);
    let gone: Vec<&str> = down["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|event| event["podGone"]["pod"].as_str())
        .collect();
    assert_eq!(
        gone.len(),
        2,
        "the scale-down reported cluster2's two pods gone: {down}"
    );
    let new_pods: Vec<&str> = up["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|event| event["podReady"]["pod"]["name"].as_str())
        .collect();
    assert_eq!(new_pods.len(), 2, "the scale-up reported two new pods ready: {up}");
    let ms = |action: &serde_json::Value, key: &str| action[key].as_u64().unwrap();
    assert!(
        cluster2_answers(timeline, 0, ms(down, "started_ms")) > 0,
        "cluster2 answered before the scale-down"
    );
    // Istio needs a moment to drop the gone pods' endpoints (the re-planned ServiceEntry): 5 s.
    assert_eq!(
        cluster2_answers(timeline, ms(down, "completed_ms") + 5000, ms(up, "started_ms")),
        0,
        "no answers from cluster2 while it has no pods"
    );
    assert!(
        cluster2_answers(timeline, ms(up, "completed_ms"), u64::MAX) > 0,
        "cluster2 answers again after the scale-up"
    );
    let answered_by_new: u64 = phase["measurement"]["pods"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|pod| new_pods.contains(&pod["pod"].as_str().unwrap()))
        .map(|pod| pod["requests"].as_u64().unwrap())
        .sum();
    assert!(
        answered_by_new > 0,
        "the pods the scale-up made (which exist only after it) answered: {new_pods:?}"
    );
}
