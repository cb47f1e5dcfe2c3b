//! Every Istio object the plan generates for a current Istio version validates against Istio's own
//! CRD schemas. The schema file lives outside the project: `MESHFED_ISTIO_CRDS` names it (`.ci/run`
//! sets it); without it the test says it was skipped, and under `CI=true` it fails.

use crate::support::crd_schema;

use std::path::{Path, PathBuf};

use meshfed::inventory::{self, GatewayAddress};
use meshfed::plan::{self, Object};
use meshfed::scenario;

fn plans_to_check() -> Vec<(String, plan::Plan)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let mut plans = Vec::new();
    for name in ["seed.yaml", "skew.yaml"] {
        let scenario = scenario::load(&dir.join(name)).unwrap();
        let gateways = |cluster: &str| GatewayAddress {
            address: format!("192.0.2.{}", cluster.len()),
            port: 15443,
            placeholder: false,
        };
        let inventory = inventory::from_scenario_with_gateways(&scenario, gateways);
        for weights in [scenario::EndpointWeights::Equal, scenario::EndpointWeights::ReadyPods] {
            plans.push((
                format!("{name} {weights:?}"),
                plan::plan_with_weights(&scenario, &inventory, weights),
            ));
        }
    }
    let text = std::fs::read_to_string(dir.join("skew.yaml"))
        .unwrap()
        .replace("  locality: false", "  locality: true")
        .replace("  mode: serviceentry", "  mode: endpoint-discovery")
        .replace("  mtls: PERMISSIVE", "  mtls: STRICT");
    let scenario = scenario::parse(Path::new("skew-variant.yaml"), &text).unwrap();
    plans.push((
        "endpoint-discovery STRICT".to_owned(),
        plan::plan(&scenario, &inventory::from_scenario(&scenario)),
    ));
    // DNS proxying: ServiceEntries with `addresses` where no Service carries the host.
    let text = std::fs::read_to_string(dir.join("seed.yaml"))
        .unwrap()
        .replace("  mtls: PERMISSIVE\n", "  mtls: PERMISSIVE\n  dnsProxying: true\n");
    let scenario = scenario::parse(Path::new("seed-dns-proxying.yaml"), &text).unwrap();
    let dns_plan = plan::plan(
        &scenario,
        &inventory::from_scenario_with_gateways(&scenario, |_| GatewayAddress {
            address: "192.0.2.9".to_owned(),
            port: 15443,
            placeholder: false,
        }),
    );
    assert!(
        dns_plan
            .clusters
            .iter()
            .flat_map(|cluster| &cluster.objects)
            .any(|object| matches!(object,
            Object::ServiceEntry(entry) if !entry.spec.addresses.is_empty())),
        "the DNS-proxying plan writes ServiceEntry addresses"
    );
    plans.push(("seed dnsProxying".to_owned(), dns_plan));
    let text = std::fs::read_to_string(dir.join("skew.yaml"))
        .unwrap()
        .replace("  locality: false", "  locality: true");
    let scenario = scenario::parse(Path::new("skew-locality.yaml"), &text).unwrap();
    let inventory = inventory::from_scenario_with_gateways(&scenario, |_| GatewayAddress {
        address: "192.0.2.7".to_owned(),
        port: 15443,
        placeholder: false,
    });
    plans.push((
        "ready-pods locality".to_owned(),
        plan::plan_with_weights(&scenario, &inventory, scenario::EndpointWeights::ReadyPods),
    ));
    // Every phase's plan: DestinationRule connectionPool, loadBalancer, h2UpgradePolicy and
    // outlierDetection as the phases and federation ask for them.
    let text = std::fs::read_to_string(dir.join("locality.yaml")).unwrap().replace(
        "  outlierDetection: true",
        "  outlierDetection: true\n  loadBalancer: RANDOM\n  h2UpgradePolicy: UPGRADE",
    );
    for (name, text) in [
        ("skew.yaml", std::fs::read_to_string(dir.join("skew.yaml")).unwrap()),
        (
            "locality.yaml",
            std::fs::read_to_string(dir.join("locality.yaml")).unwrap(),
        ),
        ("locality-variant.yaml", text),
        (
            "locality-resilience.yaml",
            std::fs::read_to_string(dir.join("locality.yaml"))
                .unwrap()
                .replace("  outlierDetection: true\n", RESILIENCE_SETTINGS),
        ),
    ] {
        let scenario = scenario::parse(Path::new(name), &text).unwrap();
        let inventory = inventory::from_scenario_with_gateways(&scenario, |_| GatewayAddress {
            address: "192.0.2.8".to_owned(),
            port: 15443,
            placeholder: false,
        });
        for phase in &scenario.phases {
            plans.push((
                format!("{name} phase {}", phase.name.value),
                plan::plan_phase(&scenario, &inventory, phase),
            ));
        }
    }
    plans
}

/// Every resilience field the scenario can set, so each one is checked against the schema.
const RESILIENCE_SETTINGS: &str = "  outlierDetection:
    consecutive5xxErrors: 0
    consecutiveGatewayErrors: 2
    interval: 250ms
    baseEjectionTime: 5s
    maxEjectionPercent: 100
  localityLbSetting:
    failover:
      - { from: region1, to: region2 }
  retries: { attempts: 3, perTryTimeout: 500ms, retryOn: \"connect-failure,gateway-error,503\" }
  timeout: 2s
";

#[test]
fn generated_istio_objects_validate_against_istios_crd_schemas() {
    let Some(schemas) = crd_schema::shared_crd_schemas() else {
        return;
    };
    let mut checked = 0;
    let mut kinds = std::collections::BTreeSet::new();
    for (label, plan) in plans_to_check() {
        for cluster in &plan.clusters {
            assert_eq!(
                cluster.api,
                plan::IstioApi::V1,
                "{label}: the scenarios use a current Istio"
            );
            for object in &cluster.objects {
                if matches!(object, Object::Namespace(_) | Object::Service(_) | Object::Secret(_)) {
                    continue;
                }
                let value = serde_json::to_value(object).unwrap();
                let report = schemas.validate(&value);
                assert!(
                    report.is_valid(),
                    "{label} {}: {} violates Istio's schema:\n{}",
                    cluster.cluster,
                    object.kind(),
                    report.violation_lines()
                );
                kinds.insert(format!("{} {}", value["apiVersion"].as_str().unwrap(), object.kind()));
                checked += 1;
            }
        }
    }
    eprintln!("validated {checked} Istio objects of kinds {kinds:?} (CEL rules are not evaluated here)");
    assert!(
        kinds.len() >= 5,
        "expected PeerAuthentication, DestinationRule, Gateway, ServiceEntry and VirtualService, got {kinds:?}"
    );
}

#[test]
fn a_broken_service_entry_is_caught_by_the_same_check() {
    let Some(schemas) = crd_schema::shared_crd_schemas() else {
        return;
    };
    let (_, plan) = plans_to_check().remove(0);
    let entry = plan.clusters[0]
        .objects
        .iter()
        .find(|object| object.kind() == "ServiceEntry")
        .unwrap();
    let mut value = serde_json::to_value(entry).unwrap();
    value["spec"]["resolution"] = "SOMETIMES".into();
    assert!(
        !schemas.validate(&value).is_valid(),
        "the schema check must be able to fail"
    );
}

#[test]
fn a_misspelt_resilience_field_is_caught_by_the_same_check() {
    let Some(schemas) = crd_schema::shared_crd_schemas() else {
        return;
    };
    let plan = plans_to_check()
        .into_iter()
        .find(|(label, _)| label.starts_with("locality-resilience.yaml"))
        .unwrap()
        .1;
    let find = |kind: &str| {
        let object = plan.clusters[0]
            .objects
            .iter()
            .find(|object| object.kind() == kind)
            .unwrap();
        serde_json::to_value(object).unwrap()
    };
    let mut rule = find("DestinationRule");
    assert_eq!(rule["spec"]["trafficPolicy"]["outlierDetection"]["interval"], "250ms");
    rule["spec"]["trafficPolicy"]["outlierDetection"]["maxEjectionPercent"] = "all".into();
    assert!(
        !schemas.validate(&rule).is_valid(),
        "the schema check must be able to fail"
    );
    let mut service = find("VirtualService");
    assert_eq!(service["spec"]["http"][0]["retries"]["attempts"], 3);
    service["spec"]["http"][0]["retries"]["attempts"] = "three".into();
    assert!(
        !schemas.validate(&service).is_valid(),
        "the schema check must be able to fail"
    );
}
