//! The resilience settings of a scenario (`outlierDetection`, `localityLbSetting`, `retries`,
//! `timeout`): what they plan, and every bad value refused at its own file, line and column with
//! what is allowed. The binary's exit code 2 for such errors is proved by tests/cli/scenario_errors.rs.

use std::path::Path;

use meshfed::inventory;
use meshfed::plan::{self, Object};
use meshfed::scenario;

/// Two regions, bar in both; `{federation}` is replaced by each case's settings.
const BASE: &str = "\
name: t
clusters:
  - name: cluster1
    region: region1
    podCidr: 10.10.0.0/16
    serviceCidr: 10.96.0.0/16
  - name: cluster2
    region: region2
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
    replicas: { cluster1: 1, cluster2: 2 }
  - name: db
    namespace: ns2
    ports:
      - { name: tcp, number: 5432, protocol: tcp }
    replicas: { cluster2: 1 }
federation:
  locality: true
{federation}";

fn parse(federation: &str) -> Result<scenario::Scenario, scenario::ScenarioError> {
    scenario::parse(Path::new("t.yaml"), &BASE.replace("{federation}", federation))
}

/// The line `{federation}` starts on.
const FIRST: u64 = 29;

#[test]
fn bad_resilience_values_are_refused_at_their_line_and_column_saying_what_is_allowed() {
    let cases: [(&str, u64, u64, &str); 10] = [
        ("  outlierDetection: yes-please\n", FIRST, 3, "true, false, or a map"),
        (
            "  outlierDetection:\n    interval: 10\n",
            FIRST + 1,
            15,
            "a whole number and a unit",
        ),
        (
            "  outlierDetection:\n    baseEjectionTime: 2h\n",
            FIRST + 1,
            23,
            "from 1ms to 1h",
        ),
        (
            "  outlierDetection:\n    maxEjectionPercent: 101\n",
            FIRST + 1,
            25,
            "0 to 100",
        ),
        (
            "  outlierDetection:\n    consecutiveErrors: 5\n",
            FIRST + 1,
            5,
            "consecutive5xxErrors",
        ),
        ("  retries: { attempts: 11 }\n", FIRST, 24, "more than 10"),
        (
            "  retries: { attempts: 2, retryOn: \"5xx,timeout\" }\n",
            FIRST,
            36,
            "\"timeout\" is not an HTTP status code",
        ),
        ("  timeout: 1.5s\n", FIRST, 12, "a whole number and a unit"),
        (
            "  localityLbSetting:\n    failover: [{ from: region1, to: region2 }]\n",
            FIRST + 1,
            5,
            "needs outlierDetection",
        ),
        (
            "  outlierDetection: true\n  localityLbSetting:\n    failover: [{ from: region1, to: region9 }]\n",
            FIRST + 2,
            37,
            "region \"region9\" is no cluster's region; the clusters' regions are region1, region2",
        ),
    ];
    let mut failures = Vec::new();
    for (federation, line, column, needle) in cases {
        match parse(federation) {
            Ok(_) => failures.push(format!("accepted: {federation}")),
            Err(error) => {
                let shown = error.to_string();
                let at = format!("t.yaml:{line}:{column}: ");
                if !shown.starts_with(&at) || !shown.contains(needle) {
                    failures.push(format!("{federation:?}: wanted {at}…{needle}…, got {shown}"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn distribute_is_refused_rather_than_silently_ignored() {
    let error = parse("  outlierDetection: true\n  localityLbSetting:\n    distribute: []\n").unwrap_err();
    assert!(error.to_string().contains("distribute"), "{error}");
    assert!(error.has_position(), "{error}");
}

#[test]
fn resilience_settings_plan_a_destination_rule_and_a_virtual_service_per_http_service() {
    let scenario = parse(
        "  outlierDetection: { consecutiveGatewayErrors: 1, interval: 500ms, baseEjectionTime: 10s, maxEjectionPercent: 100 }\n  \
         localityLbSetting:\n    failover: [{ from: region1, to: region2 }]\n  retries: { attempts: 3, perTryTimeout: 1s, retryOn: \"connect-failure,503\" }\n  timeout: 4s\n",
    )
    .unwrap();
    let plan = plan::plan(&scenario, &inventory::from_scenario(&scenario));
    let objects = &plan.clusters[0].objects;
    let rule = objects.iter().find_map(|object| match object {
        Object::DestinationRule(rule) => Some(serde_json::to_value(rule).unwrap()),
        _ => None,
    });
    let policy = &rule.expect("a DestinationRule")["spec"]["trafficPolicy"];
    assert_eq!(
        policy["outlierDetection"],
        serde_json::json!({ "consecutiveGatewayErrors": 1, "interval": "500ms", "baseEjectionTime": "10s", "maxEjectionPercent": 100 })
    );
    assert_eq!(
        policy["loadBalancer"],
        serde_json::json!({ "localityLbSetting": { "failover": [{ "from": "region1", "to": "region2" }] } })
    );
    let services: Vec<serde_json::Value> = objects
        .iter()
        .filter(|object| object.kind() == "VirtualService")
        .map(|object| serde_json::to_value(object).unwrap())
        .collect();
    let hosts: Vec<&str> = services
        .iter()
        .map(|service| service["spec"]["hosts"][0].as_str().unwrap())
        .collect();
    assert_eq!(
        hosts,
        ["foo.ns1.svc.cluster.local", "bar.ns2.svc.cluster.local"],
        "one per HTTP service, none for the TCP-only db"
    );
    let bar = &services[1]["spec"]["http"][0];
    assert_eq!(bar["route"][0]["destination"]["host"], "bar.ns2.svc.cluster.local");
    assert_eq!(
        bar["retries"],
        serde_json::json!({ "attempts": 3, "perTryTimeout": "1s", "retryOn": "connect-failure,503" })
    );
    assert_eq!(bar["timeout"], "4s");
    assert_eq!(services[1]["metadata"]["namespace"], "ns2");
}

#[test]
fn outlier_detection_true_still_plans_the_documented_example_values() {
    let scenario = parse("  outlierDetection: true\n").unwrap();
    let plan = plan::plan(&scenario, &inventory::from_scenario(&scenario));
    let rule = plan.clusters[0]
        .objects
        .iter()
        .find(|object| object.kind() == "DestinationRule")
        .map(|object| serde_json::to_value(object).unwrap())
        .unwrap();
    assert_eq!(
        rule["spec"]["trafficPolicy"]["outlierDetection"],
        serde_json::json!({ "consecutive5xxErrors": 5, "interval": "10s", "baseEjectionTime": "30s" })
    );
    assert!(
        plan.clusters[0]
            .objects
            .iter()
            .all(|object| object.kind() != "VirtualService"),
        "no retries or timeout set: Istio's defaults need no object"
    );
}
