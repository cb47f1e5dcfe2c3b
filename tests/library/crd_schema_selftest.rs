//! Self-tests of the CRD schema checker (`tests/support/crd_schema.rs`) against Istio's real CRD
//! file: the seed's objects validate, broken ones are caught with a JSON path.
//!
//! Run with `MESHFED_ISTIO_CRDS=<path to Istio's customresourcedefinitions.gen.yaml> cargo
//! test --test library crd_schema_selftest:: -- --nocapture` to see what the file holds and what went
//! unchecked. Without the variable the tests that need the file say they were skipped (and fail
//! under `CI=true`).

use crate::support::crd_schema;
use crate::support::libtest::libtest_name;

use std::path::Path;
use std::process::Command;

use crd_schema::{CRD_FILE_ENV, CrdSchemas, ValidationReport, crd_file_or_skip, shared_crd_schemas};
use serde_json::{Value, json};

fn yaml(text: &str) -> Value {
    serde_saphyr::from_str(text).expect("test YAML parses")
}

/// The seed's ServiceEntry for `bar.ns2` in cluster1, with the gateway address filled in.
fn seed_service_entry(api_version: &str) -> Value {
    let mut object = yaml(
        r#"
apiVersion: networking.istio.io/v1alpha3
kind: ServiceEntry
metadata:
  name: remote-endpoint-for-bar-in-cluster1
spec:
  hosts:
  - bar.ns2.svc.cluster.local
  ports:
  # Add all ports from bar service
  - number: 80
    name: http
    protocol: HTTP
  - number: 9090
    name: tcp
    protocol: TCP
  resolution: STATIC
  location: MESH_INTERNAL
  endpoints:
  - address: 192.0.2.10
    ports:
      http: 15443 # Map everything to 15443 of ingress gateway
      tcp: 15443
"#,
    );
    object["apiVersion"] = json!(api_version);
    object
}

/// The seed's mesh-wide DestinationRule.
fn seed_destination_rule(api_version: &str) -> Value {
    let mut object = yaml(
        r#"
apiVersion: networking.istio.io/v1alpha3
kind: DestinationRule
metadata:
  name: default
spec:
  host: "*.local"
  trafficPolicy:
    tls:
      mode: ISTIO_MUTUAL
"#,
    );
    object["apiVersion"] = json!(api_version);
    object
}

fn peer_authentication_strict(api_version: &str) -> Value {
    json!({
        "apiVersion": api_version,
        "kind": "PeerAuthentication",
        "metadata": {
            "name": "default",
            "namespace": "istio-system",
            "labels": {"app.kubernetes.io/managed-by": "meshfed"}
        },
        "spec": {"mtls": {"mode": "STRICT"}}
    })
}

fn auto_passthrough_gateway(api_version: &str) -> Value {
    json!({
        "apiVersion": api_version,
        "kind": "Gateway",
        "metadata": {"name": "cross-network-gateway", "namespace": "istio-system"},
        "spec": {
            "selector": {"istio": "ingressgateway"},
            "servers": [{
                "port": {"number": 15443, "name": "tls", "protocol": "TLS"},
                "tls": {"mode": "AUTO_PASSTHROUGH"},
                "hosts": ["*.local"]
            }]
        }
    })
}

/// The API versions of `group`/`kind` the file has, among those given; fails if `required` is absent.
fn versions_present<'a>(
    schemas: &CrdSchemas,
    group: &str,
    kind: &str,
    candidates: &[&'a str],
    required: &str,
) -> Vec<&'a str> {
    let present: Vec<&str> = candidates
        .iter()
        .copied()
        .filter(|version| schemas.version(&format!("{group}/{version}"), kind).is_some())
        .collect();
    assert!(
        present.contains(&required),
        "the CRD file has no {group}/{required} {kind}; it has {present:?}"
    );
    present
}

fn assert_caught(report: &ValidationReport, path: &str, message_part: &str) {
    assert!(
        report.has_violation(path, message_part),
        "expected a violation at {path} containing {message_part:?}; got:\n{}",
        report.violation_lines()
    );
}

#[test]
fn crd_file_holds_istio_kinds_and_every_schema_keyword_is_handled() {
    let Some(schemas) = shared_crd_schemas() else {
        return;
    };
    println!("kinds and versions in the CRD file:");
    for (gvk, version) in schemas.kinds() {
        println!(
            "  {gvk} (served {}, storage {}, deprecated {})",
            version.served, version.storage, version.deprecated
        );
    }
    let survey = schemas.survey();
    println!("schema keywords (nodes carrying each): {:?}", survey.keywords);
    println!("formats: {:?}", survey.formats);
    println!("patterns: {:?}", survey.patterns);
    println!("x-kubernetes-list-type values: {:?}", survey.list_types);
    println!("CEL rules in the file: {}", survey.cel_rules);
    println!("formats not checked: {:?}", survey.unchecked_formats());
    let mesh_policy = schemas.kinds().any(|(gvk, _)| gvk.kind == "MeshPolicy");
    println!("MeshPolicy in the file: {mesh_policy}");

    for kind in ["ServiceEntry", "DestinationRule", "Gateway"] {
        assert!(
            schemas.version("networking.istio.io/v1alpha3", kind).is_some(),
            "no networking.istio.io/v1alpha3 {kind}"
        );
    }
    assert!(
        schemas
            .version("security.istio.io/v1beta1", "PeerAuthentication")
            .is_some()
    );
    assert!(survey.keywords.contains_key("oneOf") && survey.cel_rules > 0);
    assert_eq!(
        survey.unhandled_keywords(),
        Vec::<&str>::new(),
        "the CRD file uses schema keywords the checker ignores"
    );
}

#[test]
fn seed_service_entry_validates_under_every_networking_version() {
    let Some(schemas) = shared_crd_schemas() else {
        return;
    };
    let versions = versions_present(
        schemas,
        "networking.istio.io",
        "ServiceEntry",
        &["v1alpha3", "v1beta1", "v1"],
        "v1alpha3",
    );
    for version in versions {
        let object = seed_service_entry(&format!("networking.istio.io/{version}"));
        let report = schemas.expect_valid(&object);
        println!("{}", report.summary());
        // The seed's endpoint, ports and hosts carry CEL rules: they must be listed, not ignored.
        assert!(
            report
                .unevaluated_cel_rules
                .iter()
                .any(|rule| rule.path == "spec.endpoints[0]"),
            "no CEL rule listed for spec.endpoints[0]: {:?}",
            report.unevaluated_cel_rules
        );
    }
}

#[test]
fn seed_destination_rule_validates() {
    let Some(schemas) = shared_crd_schemas() else {
        return;
    };
    let versions = versions_present(
        schemas,
        "networking.istio.io",
        "DestinationRule",
        &["v1alpha3", "v1beta1", "v1"],
        "v1alpha3",
    );
    for version in versions {
        let report = schemas.expect_valid(&seed_destination_rule(&format!("networking.istio.io/{version}")));
        println!("{}", report.summary());
    }
}

#[test]
fn strict_peer_authentication_validates_under_v1beta1_and_v1() {
    let Some(schemas) = shared_crd_schemas() else {
        return;
    };
    let versions = versions_present(
        schemas,
        "security.istio.io",
        "PeerAuthentication",
        &["v1beta1", "v1"],
        "v1beta1",
    );
    for version in versions {
        let object = peer_authentication_strict(&format!("security.istio.io/{version}"));
        println!("{}", schemas.expect_valid(&object).summary());
    }
}

#[test]
fn auto_passthrough_gateway_on_15443_validates() {
    let Some(schemas) = shared_crd_schemas() else {
        return;
    };
    let versions = versions_present(
        schemas,
        "networking.istio.io",
        "Gateway",
        &["v1alpha3", "v1beta1", "v1"],
        "v1alpha3",
    );
    for version in versions {
        let object = auto_passthrough_gateway(&format!("networking.istio.io/{version}"));
        println!("{}", schemas.expect_valid(&object).summary());
    }
}

#[test]
fn unknown_spec_field_is_a_violation() {
    let Some(schemas) = shared_crd_schemas() else {
        return;
    };
    let mut object = seed_service_entry("networking.istio.io/v1alpha3");
    object["spec"]["endpoint"] = json!([{"address": "192.0.2.10"}]);
    object["spec"]["endpoints"][0]["wieght"] = json!(2);
    object["extra"] = json!(true);
    let report = schemas.validate(&object);
    assert_caught(&report, "spec.endpoint", "unknown field");
    assert_caught(&report, "spec.endpoints[0].wieght", "unknown field");
    assert_caught(&report, "extra", "unknown field");
    assert_eq!(report.violations.len(), 3, "{}", report.violation_lines());
}

#[test]
fn resolution_outside_its_enum_is_a_violation() {
    let Some(schemas) = shared_crd_schemas() else {
        return;
    };
    let mut object = seed_service_entry("networking.istio.io/v1alpha3");
    object["spec"]["resolution"] = json!("SOMETIMES");
    let report = schemas.validate(&object);
    assert_caught(&report, "spec.resolution", "\"SOMETIMES\" is not one of");
    assert_eq!(report.violations.len(), 1, "{}", report.violation_lines());
}

#[test]
fn port_number_given_as_string_is_a_violation() {
    let Some(schemas) = shared_crd_schemas() else {
        return;
    };
    let mut object = seed_service_entry("networking.istio.io/v1alpha3");
    object["spec"]["endpoints"][0]["ports"]["http"] = json!("15443");
    object["spec"]["ports"][1]["number"] = json!("9090");
    let report = schemas.validate(&object);
    println!("{}", report.violation_lines());
    assert_caught(&report, "spec.endpoints[0].ports.http", "expected integer, got string");
    assert_caught(&report, "spec.ports[1].number", "expected integer, got string");
    assert_eq!(report.violations.len(), 2, "{}", report.violation_lines());
}

#[test]
fn port_number_out_of_range_is_a_violation() {
    let Some(schemas) = shared_crd_schemas() else {
        return;
    };
    let mut object = seed_service_entry("networking.istio.io/v1alpha3");
    object["spec"]["endpoints"][0]["ports"]["http"] = json!(-1);
    object["spec"]["ports"][0]["number"] = json!(4_294_967_296_u64);
    let report = schemas.validate(&object);
    println!("{}", report.violation_lines());
    assert_caught(&report, "spec.endpoints[0].ports.http", "");
    assert_caught(&report, "spec.ports[0].number", "");
}

#[test]
fn missing_required_fields_are_violations() {
    let Some(schemas) = shared_crd_schemas() else {
        return;
    };
    let mut object = seed_service_entry("networking.istio.io/v1alpha3");
    let spec = object["spec"].as_object_mut().expect("spec is an object");
    spec.remove("hosts");
    spec["ports"][0]
        .as_object_mut()
        .expect("port is an object")
        .remove("name");
    let report = schemas.validate(&object);
    assert_caught(&report, "spec.hosts", "required field is missing");
    assert_caught(&report, "spec.ports[0].name", "required field is missing");

    // ServiceEntry's root schema requires spec (DestinationRule's does not).
    let mut no_spec = seed_service_entry("networking.istio.io/v1");
    no_spec.as_object_mut().expect("object").remove("spec");
    assert_caught(&schemas.validate(&no_spec), "spec", "required field is missing");
    let mut no_spec = seed_destination_rule("networking.istio.io/v1");
    no_spec.as_object_mut().expect("object").remove("spec");
    schemas.expect_valid(&no_spec);
}

#[test]
fn duplicate_port_names_break_the_list_map() {
    let Some(schemas) = shared_crd_schemas() else {
        return;
    };
    let mut object = seed_service_entry("networking.istio.io/v1");
    object["spec"]["ports"][1]["name"] = json!("http");
    let report = schemas.validate(&object);
    assert_caught(&report, "spec.ports[1]", "duplicate list-map key (name=\"http\")");
}

#[test]
fn mutually_exclusive_load_balancer_settings_break_one_of() {
    let Some(schemas) = shared_crd_schemas() else {
        return;
    };
    let mut object = seed_destination_rule("networking.istio.io/v1alpha3");
    let load_balancer = json!({"simple": "ROUND_ROBIN", "consistentHash": {"useSourceIp": true}});
    object["spec"]["trafficPolicy"]["loadBalancer"] = load_balancer;
    let report = schemas.validate(&object);
    println!("{}", report.violation_lines());
    assert_caught(
        &report,
        "spec.trafficPolicy.loadBalancer",
        "matches more than one oneOf alternative",
    );

    object["spec"]["trafficPolicy"]["loadBalancer"] = json!({"simple": "ROUND_ROBIN"});
    schemas.expect_valid(&object);
}

#[test]
fn null_where_the_schema_is_not_nullable_is_a_violation() {
    let Some(schemas) = shared_crd_schemas() else {
        return;
    };
    let mut object = seed_service_entry("networking.istio.io/v1alpha3");
    object["spec"]["location"] = Value::Null;
    assert_caught(&schemas.validate(&object), "spec.location", "got null (not nullable)");
}

#[test]
fn bad_metadata_is_a_violation() {
    let Some(schemas) = shared_crd_schemas() else {
        return;
    };
    let mut object = peer_authentication_strict("security.istio.io/v1beta1");
    object["metadata"]["name"] = json!("Default_Policy");
    object["metadata"]["labels"]["app.kubernetes.io/managed-by"] = json!(7);
    object["metadata"]["labels"]["bad key!"] = json!("x");
    object["metadata"]["owner"] = json!("meshfed");
    let report = schemas.validate(&object);
    assert_caught(&report, "metadata.name", "not a DNS-1123 subdomain");
    assert_caught(
        &report,
        "metadata.labels[\"app.kubernetes.io/managed-by\"]",
        "expected string, got integer",
    );
    assert_caught(&report, "metadata.labels[\"bad key!\"]", "not a valid labels key");
    assert_caught(&report, "metadata.owner", "unknown ObjectMeta field");
    assert_eq!(report.violations.len(), 4, "{}", report.violation_lines());
}

#[test]
fn mesh_policy_and_unknown_versions_have_no_schema() {
    let Some(schemas) = shared_crd_schemas() else {
        return;
    };
    let mesh_policy = yaml(
        r#"
apiVersion: authentication.istio.io/v1alpha1
kind: MeshPolicy
metadata:
  name: default
spec:
  peers:
  - mtls:
      mode: PERMISSIVE
"#,
    );
    let report = schemas.validate(&mesh_policy);
    assert_caught(
        &report,
        "apiVersion",
        "no schema for authentication.istio.io/v1alpha1 MeshPolicy",
    );
    let report = schemas.validate(&seed_service_entry("networking.istio.io/v9"));
    assert_caught(&report, "apiVersion", "versions of ServiceEntry it has: ");
}

/// A tiny CRD exercising what Istio's file uses sparsely: patterns (matched by the regex engine),
/// int-or-string, formats, length limits, `not`.
const SYNTHETIC_CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  group: example.com
  names:
    kind: Widget
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            not:
              required: [forbidden]
            properties:
              label:
                type: string
                pattern: ^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$
                maxLength: 8
              digest:
                type: string
                pattern: ^sha256:[a-f0-9]+$
              port:
                x-kubernetes-int-or-string: true
              count:
                type: integer
                format: int32
              data:
                type: string
                format: byte
              at:
                type: string
                format: date-time
              free:
                type: object
                x-kubernetes-preserve-unknown-fields: true
              forbidden:
                type: boolean
"#;

#[test]
fn synthetic_schema_checks_patterns_formats_and_int_or_string() {
    let schemas = CrdSchemas::from_yaml_str(SYNTHETIC_CRD, Path::new("synthetic")).expect("loads");
    let good = json!({
        "apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"},
        "spec": {"label": "a-1", "digest": "sha256:ab", "port": "http", "count": 3,
                 "data": "aGk=", "at": "2026-11-26T05:47:14.5Z", "free": {"any": {"thing": 1}}}
    });
    schemas.expect_valid(&good);

    let bad = json!({
        "apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"},
        "spec": {"label": "1-too-long", "digest": "md5:zz", "port": true, "count": 2_147_483_648_u64,
                 "data": "not base64!", "at": "2026-13-01T00:00:00Z", "forbidden": false}
    });
    let report = schemas.validate(&bad);
    println!("{}", report.violation_lines());
    assert_caught(&report, "spec.label", "does not match pattern");
    assert_caught(&report, "spec.label", "exceeds maxLength 8");
    assert_caught(&report, "spec.port", "expected integer or string, got boolean");
    assert_caught(&report, "spec.digest", "does not match pattern ^sha256:[a-f0-9]+$");
    assert_caught(&report, "spec.count", "out of range (limit 2147483647)");
    assert_caught(&report, "spec.data", "format byte");
    assert_caught(&report, "spec.at", "format date-time");
    assert_caught(&report, "spec", "must not match");
    assert_eq!(report.violations.len(), 8, "{}", report.violation_lines());
}

/// Runs this test binary's `crd_file_rule_probe` with the given environment.
fn run_probe(crd_file: Option<&str>, ci: Option<&str>) -> (bool, String) {
    let mut command = Command::new(std::env::current_exe().expect("test binary path"));
    command
        .arg("--exact")
        .arg(libtest_name(module_path!(), "crd_file_rule_probe"))
        .args(["--nocapture", "--test-threads=1"]);
    // The probe skips on purpose: its skip is not one of this run's.
    command
        .env_remove(CRD_FILE_ENV)
        .env_remove("CI")
        .env_remove("MESHFED_SKIP_LOG");
    if let Some(path) = crd_file {
        command.env(CRD_FILE_ENV, path);
    }
    if let Some(value) = ci {
        command.env("CI", value);
    }
    let output = command.output().expect("test binary runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// Used by `missing_crd_file_skips_locally_and_fails_under_ci` in a child process.
#[test]
fn crd_file_rule_probe() {
    if let Some(path) = crd_file_or_skip() {
        assert!(path.is_file());
        println!("probe: using {}", path.display());
    }
}

#[test]
fn missing_crd_file_skips_locally_and_fails_under_ci() {
    let (passed, output) = run_probe(None, None);
    assert!(
        passed && output.contains("skipped") && output.contains("is not set"),
        "{output}"
    );

    let (passed, output) = run_probe(Some("/nonexistent/crds.yaml"), None);
    assert!(passed && output.contains("is not an existing file"), "{output}");

    let (passed, output) = run_probe(None, Some("true"));
    assert!(!passed && output.contains("cannot run under CI=true"), "{output}");

    let (passed, output) = run_probe(Some("/nonexistent/crds.yaml"), Some("true"));
    assert!(!passed && output.contains("cannot run under CI=true"), "{output}");

    let this_file = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/library/crd_schema_selftest.rs");
    let (passed, output) = run_probe(Some(this_file), Some("true"));
    assert!(passed && output.contains("probe: using"), "{output}");
}

#[test]
fn broken_crd_files_are_load_errors_that_name_the_document() {
    let error =
        CrdSchemas::from_yaml_str("spec: [unclosed", Path::new("broken.yaml")).expect_err("invalid YAML is rejected");
    let message = crd_schema::error_chain(&error);
    assert!(
        message.starts_with("failed to parse Istio CRD file broken.yaml"),
        "{message}"
    );

    let without_schema = SYNTHETIC_CRD.replace("    schema:\n      openAPIV3Schema:", "    other:\n      x:");
    let two_documents = format!("{SYNTHETIC_CRD}\n---\n{without_schema}");
    let error = CrdSchemas::from_yaml_str(&two_documents, Path::new("two.yaml"))
        .expect_err("a version without a schema is rejected");
    assert_eq!(
        error.to_string(),
        "Istio CRD file two.yaml, document 2: spec.versions[0] (v1) has no schema.openAPIV3Schema"
    );
}
