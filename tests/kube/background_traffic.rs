//! Timed actions on the real-cluster providers: a scenario whose phase scales or kills while
//! traffic runs is accepted by `kubeconfig` and `kind` (their traffic runs in the background, see
//! src/provider/kubeconfig/traffic.rs), `kind` also takes gateway stops and starts, and a change
//! neither can make is refused before anything is created, with the action's file:line:column and
//! the changes the provider does make. No cluster is needed: this is the check `meshfed run` does
//! first.

use std::path::Path;

use meshfed::driver;
use meshfed::provider::capabilities::Capabilities;
use meshfed::provider::kind::KIND_CAPABILITIES;
use meshfed::provider::kubeconfig::KubeconfigProvider;
use meshfed::scenario;

/// scenarios/scale-to-zero.yaml with its two timed actions replaced by `actions` (YAML list
/// items, each on its own line, indented as the scenario's).
fn with_actions(actions: &str) -> String {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/scale-to-zero.yaml")).unwrap();
    let start = text.find("    actions:\n").expect("the scenario has timed actions");
    let end = text.find("    expect:\n").expect("the scenario has expectations");
    format!("{}    actions:\n{actions}{}", &text[..start], &text[end..])
}

/// `file:line:column` of the first `needle` in `text`, 1-based, as scenario errors print it.
fn position_of(file: &str, text: &str, needle: &str) -> String {
    let offset = text
        .find(needle)
        .unwrap_or_else(|| panic!("{needle} is in the scenario"));
    let line = text[..offset].matches('\n').count() + 1;
    let column = offset - text[..offset].rfind('\n').map_or(0, |newline| newline + 1) + 1;
    format!("{file}:{line}:{column}")
}

fn check(text: &str, file: &str, capabilities: &Capabilities) -> Result<(), String> {
    let scenario = scenario::parse(Path::new(file), text).map_err(|error| format!("parse: {error}"))?;
    driver::check_runnable(&scenario, Path::new(file), capabilities).map_err(|error| error.to_string())
}

#[test]
fn timed_scale_and_kill_actions_are_accepted_by_kubeconfig_and_kind() {
    let text = with_actions(
        "      - { atMillis: 800, name: to-zero, scale: { cluster: cluster2, service: bar.ns2, replicas: 0 } }\n\
         \x20     - { atMillis: 1200, name: kill-local-bar, kill: { cluster: cluster1, pod: bar-0, container: sidecar } }\n\
         \x20     - { atMillis: 1800, name: back, scale: { cluster: cluster2, service: bar.ns2, replicas: 2 } }\n",
    );
    check(&text, "timed.yaml", &KubeconfigProvider::CAPABILITIES).expect("kubeconfig scales and kills under traffic");
    check(&text, "timed.yaml", &KIND_CAPABILITIES).expect("kind scales and kills under traffic");
    // The scenario as shipped, too: scenarios/scale-to-zero.yaml runs on the real providers.
    let shipped =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/scale-to-zero.yaml")).unwrap();
    check(&shipped, "scale-to-zero.yaml", &KIND_CAPABILITIES).unwrap();
    check(&shipped, "scale-to-zero.yaml", &KubeconfigProvider::CAPABILITIES).unwrap();
}

#[test]
fn a_timed_gateway_stop_is_taken_on_kind_and_refused_on_kubeconfig_with_its_position() {
    let text = with_actions(
        "      - { atMillis: 800, name: gw-down, stopGateway: { cluster: cluster2 } }\n\
         \x20     - { atMillis: 1800, name: gw-up, startGateway: { cluster: cluster2 } }\n",
    )
    // Convergence is measured from new pods; a gateway stop makes none.
    .replace("      convergenceMillisAtMost: 1000\n", "");
    check(&text, "gateway.yaml", &KIND_CAPABILITIES).expect("kind stops and starts the gateway it installed");
    let refusal = check(&text, "gateway.yaml", &KubeconfigProvider::CAPABILITIES).unwrap_err();
    assert_eq!(
        refusal,
        format!(
            "{}: phase scale-down-and-up: action gw-down (stopGateway at 800 ms) is not supported by provider \
             kubeconfig; it supports: scale, kill",
            position_of("gateway.yaml", &text, "{ cluster: cluster2 } }")
        )
    );
}

#[test]
fn a_timed_partition_is_refused_by_kind_and_kubeconfig_with_its_position_and_what_they_can_do() {
    let text = with_actions(
        "      - { atMillis: 800, name: to-zero, scale: { cluster: cluster2, service: bar.ns2, replicas: 0 } }\n\
         \x20     - { atMillis: 1000, name: cut, partition: { cluster: cluster2 } }\n",
    );
    let position = position_of("cut.yaml", &text, "{ cluster: cluster2 } }");
    let on_kind = check(&text, "cut.yaml", &KIND_CAPABILITIES).unwrap_err();
    assert_eq!(
        on_kind,
        format!(
            "{position}: phase scale-down-and-up: action cut (partition at 1000 ms) is not supported by provider kind; \
             it supports: scale, kill, stopGateway, startGateway, upgrade"
        )
    );
    let on_kubeconfig = check(&text, "cut.yaml", &KubeconfigProvider::CAPABILITIES).unwrap_err();
    assert!(
        on_kubeconfig.starts_with(&format!("{position}: ")) && on_kubeconfig.ends_with("it supports: scale, kill"),
        "{on_kubeconfig}"
    );
    for refusal in [&on_kind, &on_kubeconfig] {
        assert!(
            !refusal.contains("supports: none") && !refusal.contains("only local"),
            "the old refusal (no timed actions off local) is gone: {refusal}"
        );
    }
}

#[test]
fn a_timed_upgrade_runs_on_kind_and_is_refused_on_kubeconfig_naming_what_it_supports() {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/rolling-upgrade.yaml")).unwrap();
    check(&text, "rolling-upgrade.yaml", &KIND_CAPABILITIES).expect("kind upgrades the Istio it installed");
    let refusal = check(&text, "rolling-upgrade.yaml", &KubeconfigProvider::CAPABILITIES).unwrap_err();
    assert!(
        refusal.starts_with("rolling-upgrade.yaml:")
            && refusal.contains("(upgrade at ")
            && refusal.ends_with("is not supported by provider kubeconfig; it supports: scale, kill"),
        "{refusal}"
    );
}
