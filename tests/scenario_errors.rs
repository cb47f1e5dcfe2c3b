//! Malformed scenarios: each is rejected with the file, line, column and what is allowed.

use std::path::Path;

use meshfed::scenario;

/// A valid scenario the cases below break one thing in.
const VALID: &str = "\
name: t
clusters:
  - name: cluster1
    podCidr: 10.10.0.0/16
    serviceCidr: 10.96.0.0/16
  - name: cluster2
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
    replicas: { cluster2: 2 }
phases:
  - name: p
    from: { service: foo.ns1, cluster: cluster1 }
    to: { service: bar.ns2, port: http }
";

struct Case {
    name: &'static str,
    replace: &'static str,
    with: &'static str,
    line: u64,
    column: u64,
    message: &'static str,
}

const CASES: &[Case] = &[
    Case {
        name: "unknown key",
        replace: "    podCidr: 10.20.0.0/16",
        with: "    podCidr: 10.20.0.0/16\n    podCIDR: 10.20.0.0/16",
        line: 8,
        column: 5,
        message: "unknown field `podCIDR`, expected one of name, region, zone, network, istioVersion, podCidr",
    },
    Case {
        name: "replicas for an unknown cluster",
        replace: "replicas: { cluster2: 2 }",
        with: "replicas: { cluster9: 2 }",
        line: 19,
        column: 27,
        message: "replicas of bar.ns2 for unknown cluster \"cluster9\": clusters are cluster1, cluster2",
    },
    Case {
        name: "duplicate cluster name",
        replace: "  - name: cluster2",
        with: "  - name: cluster1",
        line: 6,
        column: 11,
        message: "duplicate cluster name \"cluster1\": names must be unique",
    },
    Case {
        name: "port referenced but not declared",
        replace: "port: http }",
        with: "port: grpc }",
        line: 23,
        column: 35,
        message: "phase p: port grpc is not declared by bar.ns2; declared ports: http (80)",
    },
    Case {
        name: "traffic from a service with no pods in that cluster",
        replace: "from: { service: foo.ns1, cluster: cluster1 }",
        with: "from: { service: foo.ns1, cluster: cluster2 }",
        line: 22,
        column: 40,
        message: "phase p: foo.ns1 has no pods in cluster2 to send from; it has pods in: cluster1",
    },
    Case {
        name: "overlapping pod networks",
        replace: "    podCidr: 10.20.0.0/16",
        with: "    podCidr: 10.10.128.0/17",
        line: 7,
        column: 14,
        message: "podCidr of cluster2 10.10.128.0/17 overlaps podCidr of cluster1 10.10.0.0/16",
    },
    Case {
        name: "service network overlapping a pod network",
        replace: "    serviceCidr: 10.97.0.0/16",
        with: "    serviceCidr: 10.0.0.0/8",
        line: 8,
        column: 18,
        message: "serviceCidr of cluster2 10.0.0.0/8 overlaps podCidr of cluster1 10.10.0.0/16",
    },
    Case {
        name: "unknown protocol",
        replace: "{ name: http, number: 80, protocol: http }\n    replicas: { cluster2",
        with: "{ name: http, number: 80, protocol: grpc }\n    replicas: { cluster2",
        line: 18,
        column: 45,
        message: "unknown variant `grpc`, expected one of http, http2, tcp",
    },
    Case {
        name: "istio version outside the emulated range",
        replace: "    podCidr: 10.20.0.0/16",
        with: "    istioVersion: \"1.0.6\"\n    podCidr: 10.20.0.0/16",
        line: 7,
        column: 19,
        message: "istioVersion 1.0.6 of cluster cluster2 is outside the emulated range: use 1.1 to 1.30",
    },
    Case {
        name: "istio version newer than the emulated range",
        replace: "    podCidr: 10.20.0.0/16",
        with: "    istioVersion: \"1.31.0\"\n    podCidr: 10.20.0.0/16",
        line: 7,
        column: 19,
        message: "istioVersion 1.31.0 of cluster cluster2 is outside the emulated range: use 1.1 to 1.30",
    },
    Case {
        name: "proxy concurrency out of range",
        replace: "    podCidr: 10.20.0.0/16",
        with: "    proxyConcurrency: 0\n    podCidr: 10.20.0.0/16",
        line: 7,
        column: 23,
        message: "proxyConcurrency 0 of cluster cluster2 is out of range: use 1 to 64 Envoy workers",
    },
    Case {
        name: "sidecar injection differs within a namespace",
        replace: "    namespace: ns2",
        with: "    namespace: ns1\n    sidecar: false",
        line: 17,
        column: 14,
        message: "service bar.ns1 says sidecar: false but foo.ns1 in the same namespace says true",
    },
    Case {
        name: "unknown service in a phase",
        replace: "to: { service: bar.ns2",
        with: "to: { service: bar.ns3",
        line: 23,
        column: 20,
        message: "unknown service \"bar.ns3\": refer to services as name.namespace, one of foo.ns1, bar.ns2",
    },
    Case {
        name: "port number out of range",
        replace: "number: 80, protocol: http }\n    replicas: { cluster1",
        with: "number: 80000, protocol: http }\n    replicas: { cluster1",
        line: 13,
        column: 31,
        message: "not a whole number from 0 to 65535",
    },
    Case {
        name: "invalid CIDR",
        replace: "    podCidr: 10.10.0.0/16",
        with: "    podCidr: 10.10.0.1/16",
        line: 4,
        column: 14,
        message: "invalid IPv4 CIDR \"10.10.0.1/16\": host bits are set",
    },
    Case {
        name: "impossible skew bound",
        replace: "    to: { service: bar.ns2, port: http }\n",
        with: "    to: { service: bar.ns2, port: http }\n    expect:\n      maxSkewRatioAtMost: 0.5\n",
        line: 25,
        column: 27,
        message: "skew ratio bound 0.5 is impossible",
    },
    Case {
        name: "unknown federation mode",
        replace: "phases:\n",
        with: "federation:\n  mode: mesh-expansion\nphases:\n",
        line: 21,
        column: 9,
        message: "unknown variant `mesh-expansion`, expected one of serviceentry, endpoint-discovery",
    },
    Case {
        name: "invalid cluster name",
        replace: "  - name: cluster2",
        with: "  - name: Cluster_2",
        line: 6,
        column: 11,
        message: "invalid cluster name \"Cluster_2\": use 1-63 lowercase letters, digits and '-'",
    },
    Case {
        name: "rate above one",
        replace: "    to: { service: bar.ns2, port: http }\n",
        with: "    to: { service: bar.ns2, port: http }\n    expect:\n      mtlsRateAtLeast: 1.5\n",
        line: 25,
        column: 24,
        message: "rate 1.5 is out of range: rates are between 0 and 1",
    },
];

#[test]
fn valid_base_scenario_parses() {
    scenario::parse(Path::new("valid.yaml"), VALID).expect("the base of the table must be valid");
}

#[test]
fn malformed_scenarios_name_line_column_and_what_is_allowed() {
    let mut failures = Vec::new();
    for case in CASES {
        assert!(
            VALID.contains(case.replace),
            "case {:?} replaces text that is not there",
            case.name
        );
        let text = VALID.replacen(case.replace, case.with, 1);
        match scenario::parse(Path::new("broken.yaml"), &text) {
            Ok(_) => failures.push(format!("{}: accepted", case.name)),
            Err(error) => {
                let ok = error.line == case.line
                    && error.column == case.column
                    && error.message.contains(case.message)
                    && error.file == Path::new("broken.yaml");
                if !ok {
                    failures.push(format!(
                        "{}: got {}:{}: {:?}, want {}:{} containing {:?}",
                        case.name, error.line, error.column, error.message, case.line, case.column, case.message
                    ));
                }
            }
        }
    }
    assert!(CASES.len() >= 10);
    assert!(
        failures.is_empty(),
        "{} of {} cases wrong:\n{}",
        failures.len(),
        CASES.len(),
        failures.join("\n")
    );
}

#[test]
fn error_display_starts_with_file_line_column() {
    let text = VALID.replacen("replicas: { cluster2: 2 }", "replicas: { cluster9: 2 }", 1);
    let error = scenario::parse(Path::new("scenarios/x.yaml"), &text).unwrap_err();
    assert!(
        error
            .to_string()
            .starts_with("scenarios/x.yaml:19:27: replicas of bar.ns2"),
        "{error}"
    );
}
