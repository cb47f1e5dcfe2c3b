//! The shipped scenarios on real kind clusters with real Istio. They need Docker and kind (and
//! network access for images and istioctl), so they are ignored by default and never reported as
//! run; `.github/workflows/kind-e2e.yml` runs them:
//!
//! ```text
//! cargo test --release --test kind_live -- --ignored --test-threads=1
//! ```
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
    assert!(
        meshfed_clusters().is_empty(),
        "meshfed-* clusters exist before the run: run `meshfed down`"
    );
    let report_dir = std::env::var_os("MESHFED_LIVE_REPORT_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join(format!("meshfed-live-{}", std::process::id())))
        .join(name);
    let scenario = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scenarios")
        .join(format!("{name}.yaml"));
    let status = Command::new(env!("CARGO_BIN_EXE_meshfed"))
        .arg("run")
        .arg(&scenario)
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
