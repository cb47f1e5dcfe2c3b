//! The `upgrade` phase action: validated with file, line and column; refused by `local` (which
//! emulates Istio's data plane and has no Istio to upgrade); accepted for `kind` and `kubeconfig`.

use std::path::Path;

use meshfed::engine::check_provider_supports;
use meshfed::scenario;

fn upgrade_text() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/upgrade.yaml")).unwrap()
}

#[test]
fn the_shipped_upgrade_scenario_is_valid_for_real_istio_only() {
    let path = Path::new("scenarios/upgrade.yaml");
    let scenario = scenario::parse(path, &upgrade_text()).unwrap();
    let upgrade = scenario.phases[1].upgrade.as_ref().unwrap();
    assert_eq!(upgrade.value.to.value.to_string(), "1.30.0");
    assert_eq!(upgrade.value.clusters[0].value, "cluster2");
    check_provider_supports(&scenario, path, "kind").unwrap();
    check_provider_supports(&scenario, path, "kubeconfig").unwrap();
    let error = check_provider_supports(&scenario, path, "local").unwrap_err();
    assert_eq!((error.line, error.column), (54, 14), "{error}");
    assert!(error.message.contains("provider local cannot upgrade Istio"), "{error}");
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
