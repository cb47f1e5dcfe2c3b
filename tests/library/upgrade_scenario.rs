//! An Istio upgrade, written as a phase's `upgrade:` or as a timed `upgrade` action: validated
//! with file, line and column; run by `local` (emulated) and `kind` (istioctl); refused up front by
//! `kubeconfig`, which does not own the cluster's Istio (before, it accepted a phase's `upgrade:`
//! and silently skipped it, so a run could pass as if an upgrade had been tested).

use std::path::Path;

use meshfed::driver::check_runnable;
use meshfed::provider::capabilities::Capabilities;
use meshfed::provider::kind::KIND_CAPABILITIES;
use meshfed::provider::kubeconfig::KubeconfigProvider;
use meshfed::provider::local::LocalProvider;
use meshfed::scenario;

fn upgrade_text() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/upgrade.yaml")).unwrap()
}

fn check(name: &str, capabilities: &Capabilities) -> Result<(), scenario::ScenarioError> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios").join(name);
    let scenario = scenario::load(&path).unwrap();
    check_runnable(&scenario, Path::new(name), capabilities)
}

#[test]
fn the_shipped_upgrade_scenario_is_valid() {
    let path = Path::new("scenarios/upgrade.yaml");
    let scenario = scenario::parse(path, &upgrade_text()).unwrap();
    let upgrade = scenario.phases[1].upgrade.as_ref().unwrap();
    assert_eq!(upgrade.value.to.value.to_string(), "1.30.0");
    assert_eq!(upgrade.value.clusters[0].value, "cluster2");
}

#[test]
fn both_spellings_of_an_upgrade_run_on_local_and_kind_and_kubeconfig_refuses_both_where_written() {
    for capabilities in [&LocalProvider::CAPABILITIES, &KIND_CAPABILITIES] {
        check("upgrade.yaml", capabilities).expect("a phase's upgrade:");
        check("rolling-upgrade.yaml", capabilities).expect("an upgrade action");
    }
    let phase = check("upgrade.yaml", &KubeconfigProvider::CAPABILITIES).unwrap_err();
    assert_eq!((phase.line, phase.column), (54, 14), "{phase}");
    assert!(
        phase.message.contains(
            "phase during-upgrade: upgrade to 1.30.0 is not supported by provider kubeconfig; it supports: scale, kill"
        ),
        "{phase}"
    );
    let action = check("rolling-upgrade.yaml", &KubeconfigProvider::CAPABILITIES).unwrap_err();
    assert!(
        action
            .message
            .contains("(upgrade at 300 ms) is not supported by provider kubeconfig"),
        "{action}"
    );
}

#[test]
fn a_phase_upgrade_beyond_the_emulated_range_is_refused_where_it_is_written() {
    let text = upgrade_text().replace("to: 1.30.0", "to: 1.31.0");
    let error = scenario::parse(Path::new("upgrade.yaml"), &text).unwrap_err();
    assert_eq!(error.line, 54, "{error}");
    assert!(
        error
            .message
            .contains("upgrade to 1.31.0 is outside the emulated range"),
        "{error}"
    );
}

#[test]
fn an_upgrade_to_an_older_or_equal_version_is_refused_where_it_is_written() {
    let text = upgrade_text().replace("to: 1.30.0", "to: 1.29.0");
    let error = scenario::parse(Path::new("upgrade.yaml"), &text).unwrap_err();
    assert_eq!(error.line, 54, "{error}");
    assert!(
        error
            .message
            .contains("upgrade to 1.29.0 is not newer than cluster2's Istio 1.29.0"),
        "{error}"
    );
}

#[test]
fn an_upgrade_of_an_unknown_cluster_names_the_known_ones() {
    let text = upgrade_text().replace("clusters: [cluster2] }", "clusters: [cluster9] }");
    let error = scenario::parse(Path::new("upgrade.yaml"), &text).unwrap_err();
    assert_eq!(error.line, 54, "{error}");
    assert!(error.message.contains("unknown cluster \"cluster9\""), "{error}");
    assert!(error.message.contains("cluster1"), "{error}");
}

#[test]
fn an_unknown_upgrade_field_is_refused() {
    let text = upgrade_text().replace("clusters: [cluster2] }", "clusters: [cluster2], method: canary }");
    let error = scenario::parse(Path::new("upgrade.yaml"), &text).unwrap_err();
    assert_eq!(error.line, 54, "{error}");
    assert!(error.message.contains("method"), "{error}");
}
