//! `meshfed run|down|plan --server-dry-run` against clusters that are not there: a missing
//! kubeconfig or an API server that does not answer ends in exit 3 within seconds, naming the
//! cluster, its context and what is missing; a scenario or command line the kubeconfig provider
//! cannot use is bad input (exit 2) naming file, line and column. No cluster is needed.

use crate::support::kubeconfig::{seed_with_contexts, write_loopback_kubeconfig};
use crate::support::meshfed_command::{Meshfed, Ran};
use crate::support::temp_dir::temp_dir;

use std::path::{Path, PathBuf};
use std::time::Duration;

/// Longest a command that cannot reach a cluster may run before this test calls it hung.
const HUNG_AFTER: Duration = Duration::from_secs(30);

/// A kubeconfig whose contexts point at a local port nothing listens on.
fn unreachable_kubeconfig(dir: &Path) -> PathBuf {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    write_loopback_kubeconfig(dir, "kubeconfig", port)
}

/// Runs meshfed with `KUBECONFIG`/`HOME` set, failing the test if it does not end in time.
fn meshfed(args: &[&str], kubeconfig: &Path, home: &Path) -> Ran {
    Meshfed::new(args)
        .env("KUBECONFIG", kubeconfig)
        .env("HOME", home)
        .deadline(HUNG_AFTER)
        .run()
}

#[test]
fn run_with_no_kubeconfig_exits_3_naming_what_is_missing() {
    let dir = temp_dir("no-kubeconfig");
    let scenario = seed_with_contexts(dir.path());
    let missing = dir.path().join("no-such-kubeconfig");
    let ran = meshfed(
        &[
            "run",
            scenario.to_str().unwrap(),
            "--provider",
            "kubeconfig",
            "--image",
            "example/meshfed:test",
        ],
        &missing,
        dir.path(),
    );
    assert_eq!(ran.code, Some(3), "{}", ran.stderr);
    assert!(ran.stderr.contains("cluster cluster1: no kubeconfig"), "{}", ran.stderr);
    assert!(
        ran.stderr.contains(&format!("KUBECONFIG={}", missing.display())),
        "{}",
        ran.stderr
    );
}

#[test]
fn run_against_an_unreachable_api_server_exits_3_naming_cluster_context_and_server() {
    let dir = temp_dir("unreachable");
    let scenario = seed_with_contexts(dir.path());
    let kubeconfig = unreachable_kubeconfig(dir.path());
    let ran = meshfed(
        &[
            "run",
            scenario.to_str().unwrap(),
            "--provider",
            "kubeconfig",
            "--image",
            "example/meshfed:test",
        ],
        &kubeconfig,
        dir.path(),
    );
    assert_eq!(ran.code, Some(3), "{}", ran.stderr);
    for cluster in ["cluster1", "cluster2"] {
        assert!(
            ran.stderr
                .contains(&format!("cluster {cluster}: the API server https://127.0.0.1:")),
            "{}",
            ran.stderr
        );
    }
    assert!(
        ran.stderr.contains("(context ctx-one) is not reachable"),
        "{}",
        ran.stderr
    );
}

#[test]
fn run_with_a_context_the_kubeconfig_lacks_exits_3_listing_the_contexts_it_has() {
    let dir = temp_dir("unknown-context");
    let scenario = seed_with_contexts(dir.path());
    std::fs::write(
        &scenario,
        std::fs::read_to_string(&scenario)
            .unwrap()
            .replace("ctx-two", "ctx-three"),
    )
    .unwrap();
    let kubeconfig = unreachable_kubeconfig(dir.path());
    let ran = meshfed(
        &[
            "run",
            scenario.to_str().unwrap(),
            "--provider",
            "kubeconfig",
            "--image",
            "example/meshfed:test",
        ],
        &kubeconfig,
        dir.path(),
    );
    assert_eq!(ran.code, Some(3), "{}", ran.stderr);
    assert!(
        ran.stderr.contains(
            "cluster cluster2: kubeconfig context \"ctx-three\" is missing or unusable (contexts: ctx-one, ctx-two)"
        ),
        "{}",
        ran.stderr
    );
}

#[test]
fn a_cluster_without_a_context_is_bad_input_with_its_position() {
    let dir = temp_dir("no-context");
    let scenario = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/seed.yaml");
    let ran = meshfed(
        &[
            "run",
            scenario.to_str().unwrap(),
            "--provider",
            "kubeconfig",
            "--image",
            "example/meshfed:test",
        ],
        &dir.path().join("unused"),
        dir.path(),
    );
    assert_eq!(ran.code, Some(2), "{}", ran.stderr);
    assert!(
        ran.stderr
            .contains("seed.yaml:8:11: cluster cluster1 has no `context`: --provider kubeconfig needs"),
        "{}",
        ran.stderr
    );
}

#[test]
fn kubeconfig_without_an_image_is_bad_input() {
    let dir = temp_dir("no-image");
    let scenario = seed_with_contexts(dir.path());
    let ran = meshfed(
        &["run", scenario.to_str().unwrap(), "--provider", "kubeconfig"],
        &dir.path().join("unused"),
        dir.path(),
    );
    assert_eq!(ran.code, Some(2), "{}", ran.stderr);
    assert!(
        ran.stderr.contains("--provider kubeconfig needs --image IMAGE"),
        "{}",
        ran.stderr
    );
}

#[test]
fn a_fault_the_kubeconfig_provider_does_not_execute_is_refused_with_its_position() {
    let dir = temp_dir("fault");
    let scenario = seed_with_contexts(dir.path());
    let text = std::fs::read_to_string(&scenario).unwrap().replacen(
        "    requests: 400\n",
        "    requests: 400\n    faults:\n      - foreignClientCert: {}\n",
        1,
    );
    std::fs::write(&scenario, text).unwrap();
    let ran = meshfed(
        &[
            "run",
            scenario.to_str().unwrap(),
            "--provider",
            "kubeconfig",
            "--image",
            "example/meshfed:test",
        ],
        &dir.path().join("unused"),
        dir.path(),
    );
    assert_eq!(ran.code, Some(2), "{}", ran.stderr);
    assert!(
        ran.stderr.contains("seed-contexts.yaml:43:9: phase foo-to-bar-http: fault foreignClientCert is not supported by provider kubeconfig; it supports: scale"),
        "{}",
        ran.stderr
    );
}

#[test]
fn down_and_server_dry_run_against_an_unreachable_cluster_exit_3() {
    let dir = temp_dir("down");
    let scenario = seed_with_contexts(dir.path());
    let kubeconfig = unreachable_kubeconfig(dir.path());
    let ran = meshfed(
        &["down", scenario.to_str().unwrap(), "--provider", "kubeconfig"],
        &kubeconfig,
        dir.path(),
    );
    assert_eq!(ran.code, Some(3), "{}", ran.stderr);
    assert!(
        ran.stderr.contains("cluster cluster1: the API server"),
        "{}",
        ran.stderr
    );
    let out = dir.path().join("plan");
    let ran = meshfed(
        &[
            "plan",
            scenario.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--server-dry-run",
        ],
        &kubeconfig,
        dir.path(),
    );
    assert_eq!(ran.code, Some(3), "{}", ran.stderr);
    assert!(
        ran.stdout.contains("wrote"),
        "the plan itself is written first: {}",
        ran.stdout
    );
    assert!(
        ran.stderr.contains("(context ctx-one) is not reachable"),
        "{}",
        ran.stderr
    );
}

/// A phase's `upgrade:` used to pass validation on kubeconfig and be skipped
/// without a word (a run could pass as if an upgrade had been tested). It is refused before any
/// cluster is reached: exit 2, the `upgrade:` key's position, and what the provider can do.
#[test]
fn a_phase_upgrade_on_kubeconfig_is_refused_up_front_with_its_position() {
    let dir = temp_dir("upgrade-refused");
    let upgrade = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/upgrade.yaml");
    let text = std::fs::read_to_string(&upgrade)
        .unwrap()
        .replace("  - name: cluster1\n", "  - name: cluster1\n    context: ctx-one\n")
        .replace("  - name: cluster2\n", "  - name: cluster2\n    context: ctx-two\n");
    let scenario = dir.path().join("upgrade-contexts.yaml");
    std::fs::write(&scenario, &text).unwrap();
    let line = text.lines().position(|line| line.contains("upgrade: { to:")).unwrap() + 1;
    let ran = meshfed(
        &[
            "run",
            scenario.to_str().unwrap(),
            "--provider",
            "kubeconfig",
            "--image",
            "example.com/meshfed:test",
        ],
        &unreachable_kubeconfig(dir.path()),
        dir.path(),
    );
    assert_eq!(ran.code, Some(2), "{}", ran.stderr);
    assert!(
        ran.stderr.contains(&format!("upgrade-contexts.yaml:{line}:14: phase during-upgrade: upgrade to 1.30.0 is not supported by provider kubeconfig; it supports: scale, kill")),
        "{}",
        ran.stderr
    );
}
