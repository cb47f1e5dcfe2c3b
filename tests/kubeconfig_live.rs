//! The `kubeconfig` provider against live clusters. Never run in meshfed's development
//! environment (no Docker there); CI runs it from `.github/workflows/kind-e2e.yml`.
//!
//! To run it: two clusters with Istio, whose gateways (`istio-system/istio-ingressgateway`, port
//! 15443) get LoadBalancer addresses, as contexts `kind-meshfed-cluster1` and
//! `kind-meshfed-cluster2`, meshfed's access-log format in the mesh config, and the workload image
//! loaded into both. `meshfed run scenarios/seed.yaml --provider kind --reuse` leaves such clusters
//! (kind clusters `meshfed-cluster1`, `meshfed-cluster2`), but its kubeconfig lives in the run's
//! temp directory and goes with it: export the contexts into your own kubeconfig first, as the
//! kubeconfig job of `.github/workflows/kind-e2e.yml` does:
//!
//! ```sh
//! meshfed run scenarios/seed.yaml --provider kind --reuse
//! kind export kubeconfig --name meshfed-cluster1 && kind export kubeconfig --name meshfed-cluster2
//! docker build -t meshfed-workload:dev . && docker save -o /tmp/workload.tar meshfed-workload:dev
//! kind load image-archive /tmp/workload.tar --name meshfed-cluster1   # and meshfed-cluster2
//! MESHFED_IMAGE=meshfed-workload:dev cargo test --test kubeconfig_live -- --ignored --test-threads 1
//! ```
//!
//! Expect 3–6 minutes (deployments, sidecar injection, 1,000 requests through exec).

use std::path::{Path, PathBuf};
use std::process::Command;

fn seed_on_kind_contexts() -> PathBuf {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/seed.yaml")).unwrap();
    let text = text
        .replace(
            "  - name: cluster1\n",
            "  - name: cluster1\n    context: kind-meshfed-cluster1\n",
        )
        .replace(
            "  - name: cluster2\n",
            "  - name: cluster2\n    context: kind-meshfed-cluster2\n",
        );
    let path = std::env::temp_dir().join(format!("meshfed-kubeconfig-live-{}.yaml", std::process::id()));
    std::fs::write(&path, text).unwrap();
    path
}

fn image() -> String {
    std::env::var("MESHFED_IMAGE").expect("MESHFED_IMAGE names the workload image loaded into the clusters")
}

#[test]
#[ignore = "needs docker and kind"]
fn seed_passes_on_live_clusters_and_down_removes_only_meshfeds_objects() {
    let scenario = seed_on_kind_contexts();
    let report_dir = std::env::temp_dir().join(format!("meshfed-kubeconfig-live-report-{}", std::process::id()));
    let run = Command::new(env!("CARGO_BIN_EXE_meshfed"))
        .args([
            "run",
            scenario.to_str().unwrap(),
            "--provider",
            "kubeconfig",
            "--image",
            &image(),
        ])
        .arg("--report-dir")
        .arg(&report_dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(
        run.status.code(),
        Some(0),
        "{}\n{stderr}",
        String::from_utf8_lossy(&run.stdout)
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report_dir.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["provider"]["name"], "kubeconfig");
    for phase in report["phases"].as_array().unwrap() {
        assert_eq!(phase["measurement"]["mtls_rate"], 1.0, "{phase}");
    }
    let down = Command::new(env!("CARGO_BIN_EXE_meshfed"))
        .args(["down", scenario.to_str().unwrap(), "--provider", "kubeconfig"])
        .output()
        .unwrap();
    assert_eq!(down.status.code(), Some(0), "{}", String::from_utf8_lossy(&down.stderr));
    let left = Command::new("kubectl")
        .args([
            "--context",
            "kind-meshfed-cluster2",
            "get",
            "all,serviceentries",
            "-A",
            "-l",
            "app.kubernetes.io/managed-by=meshfed",
        ])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&left.stdout).trim().is_empty(),
        "{}",
        String::from_utf8_lossy(&left.stdout)
    );
    let istio = Command::new("kubectl")
        .args([
            "--context",
            "kind-meshfed-cluster2",
            "get",
            "deployment",
            "istiod",
            "-n",
            "istio-system",
        ])
        .output()
        .unwrap();
    assert!(istio.status.success(), "down must leave Istio alone");
}

#[test]
#[ignore = "needs docker and kind"]
fn server_dry_run_accepts_the_seed_plan_on_live_clusters() {
    let scenario = seed_on_kind_contexts();
    let out = std::env::temp_dir().join(format!("meshfed-kubeconfig-live-plan-{}", std::process::id()));
    let plan = Command::new(env!("CARGO_BIN_EXE_meshfed"))
        .args([
            "plan",
            scenario.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--server-dry-run",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&plan.stdout);
    // Placeholder gateway addresses are not IPs: the server must reject those ServiceEntries.
    assert_eq!(plan.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("ServiceEntry") && stdout.contains("rejected"),
        "{stdout}"
    );
}
