//! Malformed scenarios, run through the real binary: each is refused with exit code 2, the file,
//! line and column (or no position when the file could not be read at all) and what is allowed,
//! and nothing is written or deleted.

use crate::support::meshfed_command::MESHFED;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

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

/// What the scenario argument of a case is.
enum Input {
    /// VALID with the first `.0` replaced by `.1`.
    Edit(&'static str, &'static str),
    /// Text built by a function (for sizes the table cannot spell out).
    Text(fn() -> String),
    /// Raw bytes (not UTF-8).
    Bytes(&'static [u8]),
    /// A directory where the file should be.
    Directory,
    /// A FIFO nobody writes to: reading it would block forever.
    Fifo,
    /// A device that never ends.
    DevZero,
    /// A path with nothing there.
    Missing,
}

/// Where the error must point: a line and column, or nowhere (the file could not be read).
#[derive(Clone, Copy, Debug)]
enum At {
    Line(u64, u64),
    Nowhere,
}

struct Case {
    name: &'static str,
    input: Input,
    at: At,
    message: &'static str,
}

use At::{Line, Nowhere};
use Input::{Bytes, DevZero, Directory, Edit, Fifo, Missing, Text};

const CASES: &[Case] = &[
    // Syntax, types, unknown keys.
    Case {
        name: "yaml syntax: unclosed flow mapping",
        input: Edit("namespace: ns2\n", "namespace: \"ns2\n"),
        at: Line(16, 16),
        message: "unclosed quote",
    },
    Case {
        name: "unknown key",
        input: Edit(
            "    podCidr: 10.20.0.0/16",
            "    podCidr: 10.20.0.0/16\n    podCIDR: 10.20.0.0/16",
        ),
        at: Line(8, 5),
        message: "unknown field `podCIDR`, expected one of name, region, zone, network, istioVersion, podCidr",
    },
    Case {
        name: "wrong type: replicas is a list",
        input: Edit("replicas: { cluster2: 2 }", "replicas: [cluster2]"),
        at: Line(19, 15),
        message: "",
    },
    Case {
        name: "wrong type: port number is text",
        input: Edit(
            "number: 80, protocol: http }\n    replicas: { cluster1",
            "number: eighty, protocol: http }\n    replicas: { cluster1",
        ),
        at: Line(13, 31),
        message: "",
    },
    Case {
        name: "port number out of range",
        input: Edit(
            "number: 80, protocol: http }\n    replicas: { cluster1",
            "number: 80000, protocol: http }\n    replicas: { cluster1",
        ),
        at: Line(13, 31),
        message: "not a whole number from 0 to 65535",
    },
    Case {
        name: "unknown protocol",
        input: Edit(
            "protocol: http }\n    replicas: { cluster2",
            "protocol: grpc }\n    replicas: { cluster2",
        ),
        at: Line(18, 45),
        message: "unknown variant `grpc`, expected one of http, http2, tcp",
    },
    // Istio fidelity (docs/fidelity.md).
    Case {
        name: "istio version older than the emulated range",
        input: Edit(
            "    podCidr: 10.20.0.0/16",
            "    istioVersion: \"1.0.6\"\n    podCidr: 10.20.0.0/16",
        ),
        at: Line(7, 19),
        message: "istioVersion 1.0.6 of cluster cluster2 is outside the emulated range: use 1.1 to 1.30",
    },
    Case {
        name: "istio version newer than the emulated range",
        input: Edit(
            "    podCidr: 10.20.0.0/16",
            "    istioVersion: \"1.31.0\"\n    podCidr: 10.20.0.0/16",
        ),
        at: Line(7, 19),
        message: "istioVersion 1.31.0 of cluster cluster2 is outside the emulated range: use 1.1 to 1.30",
    },
    Case {
        name: "dns proxying on a version without the sidecar's DNS proxy",
        input: Edit(
            "    serviceCidr: 10.97.0.0/16\nservices:",
            "    serviceCidr: 10.97.0.0/16\n    istioVersion: \"1.7.8\"\nfederation:\n  dnsProxying: true\nservices:",
        ),
        at: Line(11, 16),
        message: "dnsProxying needs Istio 1.8.0 or newer (the sidecar's DNS proxy came in 1.8), cluster cluster2 has 1.7.8",
    },
    Case {
        name: "dns proxying with endpoint discovery",
        input: Edit(
            "    serviceCidr: 10.97.0.0/16\nservices:",
            "    serviceCidr: 10.97.0.0/16\nfederation:\n  mode: endpoint-discovery\n  dnsProxying: true\nservices:",
        ),
        at: Line(11, 16),
        message: "dnsProxying applies to mode serviceentry",
    },
    Case {
        name: "proxy concurrency out of range",
        input: Edit(
            "    podCidr: 10.20.0.0/16",
            "    proxyConcurrency: 0\n    podCidr: 10.20.0.0/16",
        ),
        at: Line(7, 23),
        message: "proxyConcurrency 0 of cluster cluster2 is out of range: use 1 to 64 Envoy workers",
    },
    Case {
        name: "sidecar injection differs within a namespace",
        input: Edit("    namespace: ns2", "    namespace: ns1\n    sidecar: false"),
        at: Line(17, 14),
        message: "service bar.ns1 says sidecar: false but foo.ns1 in the same namespace says true",
    },
    Case {
        name: "unknown federation mode",
        input: Edit("phases:\n", "federation:\n  mode: mesh-expansion\nphases:\n"),
        at: Line(21, 9),
        message: "unknown variant `mesh-expansion`, expected one of serviceentry, endpoint-discovery",
    },
    Case {
        name: "unknown key with a control character is escaped",
        input: Edit("name: t\n", "name: t\n\"bell\\a\": 1\n"),
        at: Line(2, 1),
        message: "unknown field `bell\\u{7}`",
    },
    Case {
        name: "invalid CIDR text",
        input: Edit("    podCidr: 10.10.0.0/16", "    podCidr: 10.10.0.1/16"),
        at: Line(4, 14),
        message: "invalid IPv4 CIDR \"10.10.0.1/16\": host bits are set",
    },
    // Empty where something is required.
    Case {
        name: "empty clusters",
        input: Text(|| "name: t\nclusters: []\nservices: []\n".to_owned()),
        at: Line(2, 11),
        message: "`clusters` is empty: a scenario needs at least one cluster",
    },
    Case {
        name: "empty trustDomain",
        input: Edit("name: t\n", "name: t\ntrustDomain: \"\"\n"),
        at: Line(2, 14),
        message: "invalid trustDomain \"\": use a SPIFFE trust domain",
    },
    Case {
        name: "service without ports",
        input: Edit(
            "    ports:\n      - { name: http, number: 80, protocol: http }\n    replicas: { cluster2",
            "    ports: []\n    replicas: { cluster2",
        ),
        at: Line(17, 12),
        message: "service bar.ns2 has no ports: declare at least one",
    },
    // Bounds.
    Case {
        name: "replicas over the pod bound",
        input: Edit("replicas: { cluster2: 2 }", "replicas: { cluster2: 2000000000 }"),
        at: Line(19, 27),
        message: "replicas 2000000000 of bar.ns2 in cluster2 is more than the 16384 pods a scenario may have: the plan and inventory hold every pod",
    },
    Case {
        name: "replicas over the pod bound on a huge network",
        input: Text(|| {
            VALID
                .replacen("    podCidr: 10.20.0.0/16", "    podCidr: 16.0.0.0/4", 1)
                .replacen("replicas: { cluster2: 2 }", "replicas: { cluster2: 2000000000 }", 1)
        }),
        at: Line(19, 27),
        message: "replicas 2000000000 of bar.ns2 in cluster2 is more than the 16384 pods",
    },
    Case {
        name: "total pods over the bound",
        input: Edit(
            "replicas: { cluster2: 2 }",
            "replicas: { cluster1: 16000, cluster2: 1000 }",
        ),
        at: Line(19, 44),
        message: "bring the scenario to 17001 pods, more than the 16384 allowed",
    },
    Case {
        name: "requests over the bound",
        input: Edit(
            "    to: { service: bar.ns2, port: http }\n",
            "    to: { service: bar.ns2, port: http }\n    requests: 1000001\n",
        ),
        at: Line(24, 15),
        message: "requests 1000001 is out of range: use 1 to 1000000; the record of every request is kept in memory",
    },
    Case {
        name: "zero requests",
        input: Edit(
            "    to: { service: bar.ns2, port: http }\n",
            "    to: { service: bar.ns2, port: http }\n    requests: 0\n",
        ),
        at: Line(24, 15),
        message: "requests 0 is out of range: use 1 to 1000000",
    },
    Case {
        name: "concurrency over the bound",
        input: Edit(
            "    to: { service: bar.ns2, port: http }\n",
            "    to: { service: bar.ns2, port: http }\n    concurrency: 5000\n",
        ),
        at: Line(24, 18),
        message: "concurrency 5000 is out of range: use 1 to 1024",
    },
    Case {
        name: "too many clusters",
        input: Text(too_many_clusters),
        at: Line(195, 11),
        message: "65 clusters are more than the 64 allowed",
    },
    Case {
        name: "too many services",
        input: Text(too_many_services),
        at: Line(8197, 11),
        message: "2049 services are more than the 2048 allowed",
    },
    Case {
        name: "too many ports",
        input: Text(too_many_ports),
        at: Line(40, 17),
        message: "service foo.ns1 has 33 ports, more than the 32 allowed",
    },
    Case {
        name: "too many ports in the plan",
        input: Text(too_many_planned_ports),
        at: Line(8611, 17),
        message: "7840 service ports (up to s244.ns) in 64 clusters make 501760 ports in the plan, more than the 500000 allowed",
    },
    Case {
        name: "delay over the bound",
        input: Edit(
            "    to: { service: bar.ns2, port: http }\n",
            "    to: { service: bar.ns2, port: http }\n    faults: [{ delay: { cluster: cluster2, service: bar.ns2, millis: 600000 } }]\n",
        ),
        at: Line(24, 14),
        message: "delay of 600000 ms is over the 60000 ms allowed",
    },
    Case {
        name: "rate above one",
        input: Edit(
            "    to: { service: bar.ns2, port: http }\n",
            "    to: { service: bar.ns2, port: http }\n    expect:\n      mtlsRateAtLeast: 1.5\n",
        ),
        at: Line(25, 24),
        message: "rate 1.5 is out of range: rates are between 0 and 1",
    },
    Case {
        name: "impossible skew bound",
        input: Edit(
            "    to: { service: bar.ns2, port: http }\n",
            "    to: { service: bar.ns2, port: http }\n    expect:\n      maxSkewRatioAtMost: 0.5\n",
        ),
        at: Line(25, 27),
        message: "skew ratio bound 0.5 is impossible",
    },
    // The grammar of every string.
    Case {
        name: "cluster name not a DNS label",
        input: Edit("  - name: cluster2", "  - name: Cluster_2"),
        at: Line(6, 11),
        message: "invalid cluster name \"Cluster_2\": use a DNS label: 1-63 lowercase letters",
    },
    Case {
        name: "service name starting with a digit",
        input: Edit("  - name: bar\n", "  - name: 1bar\n"),
        at: Line(15, 11),
        message: "invalid service name \"1bar\": use a Kubernetes Service name (DNS-1035 label)",
    },
    Case {
        name: "namespace too long",
        input: Edit(
            "namespace: ns2",
            "namespace: nsaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        ),
        at: Line(16, 16),
        message: "invalid namespace \"nsaaaa",
    },
    Case {
        name: "serviceAccount not a SPIFFE path segment",
        input: Edit(
            "    namespace: ns2\n",
            "    namespace: ns2\n    serviceAccount: bar/admin\n",
        ),
        at: Line(17, 21),
        message: "invalid serviceAccount \"bar/admin\": use a service account name (DNS subdomain and SPIFFE path segment)",
    },
    Case {
        name: "port name all digits",
        input: Edit(
            "{ name: http, number: 80, protocol: http }\n    replicas: { cluster2",
            "{ name: \"8080\", number: 80, protocol: http }\n    replicas: { cluster2",
        ),
        at: Line(18, 17),
        message: "invalid port name \"8080\": use a port name (IANA service name): 1-15 lowercase letters, digits and '-', with at least one letter",
    },
    Case {
        name: "port name too long",
        input: Edit(
            "{ name: http, number: 80, protocol: http }\n    replicas: { cluster2",
            "{ name: http-for-the-web, number: 80, protocol: http }\n    replicas: { cluster2",
        ),
        at: Line(18, 17),
        message: "invalid port name \"http-for-the-web\"",
    },
    Case {
        name: "region with a space",
        input: Edit("  - name: cluster2\n", "  - name: cluster2\n    region: eu west\n"),
        at: Line(7, 13),
        message: "invalid region \"eu west\": use a non-empty Kubernetes label value",
    },
    Case {
        name: "a zone listed twice",
        input: Edit("  - name: cluster2\n", "  - name: cluster2\n    zones: [z1, z2, z1]\n"),
        at: Line(7, 21),
        message: "zone \"z1\" is listed twice in cluster cluster2",
    },
    Case {
        name: "an invalid zone in zones",
        input: Edit("  - name: cluster2\n", "  - name: cluster2\n    zones: [z1, \"z 2\"]\n"),
        at: Line(7, 17),
        message: "invalid zone \"z 2\": use a non-empty Kubernetes label value",
    },
    Case {
        name: "too many zones",
        input: Edit(
            "  - name: cluster2\n",
            "  - name: cluster2\n    zones: [a, b, c, d, e, f, g, h, i]\n",
        ),
        at: Line(7, 37),
        message: "cluster cluster2 lists 9 zones, more than the 8 allowed",
    },
    Case {
        name: "zone ending with a dash",
        input: Edit("  - name: cluster2\n", "  - name: cluster2\n    zone: zone-\n"),
        at: Line(7, 11),
        message: "invalid zone \"zone-\"",
    },
    Case {
        name: "network with a slash",
        input: Edit("  - name: cluster2\n", "  - name: cluster2\n    network: net/2\n"),
        at: Line(7, 14),
        message: "invalid network \"net/2\"",
    },
    Case {
        name: "scenario name with an escape sequence is not printed raw",
        input: Edit("name: t\n", "name: \"t\\e[31m\"\n"),
        at: Line(1, 7),
        message: "invalid scenario name \"t\\u{1b}[31m\": use a non-empty Kubernetes label value",
    },
    Case {
        name: "trustDomain with upper case",
        input: Edit("name: t\n", "name: t\ntrustDomain: Example.ORG\n"),
        at: Line(2, 14),
        message: "invalid trustDomain \"Example.ORG\"",
    },
    Case {
        name: "description with a control character",
        input: Edit("name: t\n", "name: t\ndescription: \"ring\\a\"\n"),
        at: Line(2, 14),
        message: "invalid description \"ring\\u{7}\": use one line of at most 1000 characters without control characters",
    },
    // Descriptions used to take bidi overrides, U+2028 and noncharacters and the summary printed
    // them raw; the message shows each as the one escaper does, never raw.
    Case {
        name: "description with a bidi override",
        input: Edit("name: t\n", "name: t\ndescription: \"safe \\u202Eexe.txt\"\n"),
        at: Line(2, 14),
        message: "invalid description \"safe \\u{202e}exe.txt\": use one line of at most 1000 characters without control characters, bidirectional formatting characters",
    },
    Case {
        name: "description with a line separator",
        input: Edit("name: t\n", "name: t\ndescription: \"one\\Ltwo\"\n"),
        at: Line(2, 14),
        message: "invalid description \"one\\u{2028}two\"",
    },
    Case {
        name: "description with a noncharacter",
        input: Edit("name: t\n", "name: t\ndescription: \"x\\uFDD0\"\n"),
        at: Line(2, 14),
        message: "invalid description \"x\\u{fdd0}\"",
    },
    Case {
        name: "phase name with spaces",
        input: Edit("  - name: p\n", "  - name: p one\n"),
        at: Line(21, 11),
        message: "invalid phase name \"p one\"",
    },
    // Networks against the local address layout.
    Case {
        name: "pod network too small for the layout",
        input: Text(|| {
            VALID
                .replacen("    podCidr: 10.20.0.0/16", "    podCidr: 10.20.0.0/28", 1)
                .replacen("replicas: { cluster2: 2 }", "replicas: { cluster2: 6 }", 1)
        }),
        at: Line(7, 14),
        message: "podCidr 10.20.0.0/28 of cluster2 has 16 addresses, but the local address layout needs 17 for its 6 pods",
    },
    Case {
        name: "service network /32",
        input: Edit("    serviceCidr: 10.97.0.0/16", "    serviceCidr: 10.97.0.0/32"),
        at: Line(8, 18),
        message: "serviceCidr 10.97.0.0/32 of cluster2 has 1 addresses, but the local address layout needs 13 for the 2 services",
    },
    Case {
        name: "pod network in 0.0.0.0/8",
        input: Edit("    podCidr: 10.20.0.0/16", "    podCidr: 0.0.0.0/16"),
        at: Line(7, 14),
        message: "podCidr 0.0.0.0/16 of cluster2 overlaps 0.0.0.0/8",
    },
    Case {
        name: "multicast service network",
        input: Edit("    serviceCidr: 10.97.0.0/16", "    serviceCidr: 239.1.0.0/16"),
        at: Line(8, 18),
        message: "serviceCidr 239.1.0.0/16 of cluster2 overlaps 224.0.0.0/4: multicast",
    },
    Case {
        name: "loopback pod network",
        input: Edit("    podCidr: 10.20.0.0/16", "    podCidr: 127.0.0.0/16"),
        at: Line(7, 14),
        message: "overlaps 127.0.0.0/8: loopback",
    },
    Case {
        name: "link-local pod network",
        input: Edit("    podCidr: 10.20.0.0/16", "    podCidr: 169.254.0.0/16"),
        at: Line(7, 14),
        message: "overlaps 169.254.0.0/16: link-local",
    },
    Case {
        name: "broadcast address",
        input: Edit("    serviceCidr: 10.97.0.0/16", "    serviceCidr: 255.255.255.255/32"),
        at: Line(8, 18),
        message: "overlaps 240.0.0.0/4: reserved and broadcast",
    },
    Case {
        name: "networks covering the local outside network",
        input: Edit("    serviceCidr: 10.97.0.0/16", "    serviceCidr: 100.64.0.0/10"),
        at: Line(8, 18),
        message: "leave no free /24 in 100.64.0.0/10 for the network the local gateways share",
    },
    Case {
        name: "overlapping pod networks",
        input: Edit("    podCidr: 10.20.0.0/16", "    podCidr: 10.10.128.0/17"),
        at: Line(7, 14),
        message: "podCidr of cluster2 10.10.128.0/17 overlaps podCidr of cluster1 10.10.0.0/16",
    },
    Case {
        name: "service network overlapping a pod network",
        input: Edit("    serviceCidr: 10.97.0.0/16", "    serviceCidr: 10.10.0.0/24"),
        at: Line(8, 18),
        message: "serviceCidr of cluster2 10.10.0.0/24 overlaps podCidr of cluster1 10.10.0.0/16",
    },
    // Generated names that would collide, and duplicates.
    Case {
        name: "two services of one name with pods in one cluster",
        input: Text(|| {
            VALID
                .replacen(
                    "  - name: bar\n    namespace: ns2",
                    "  - name: foo\n    namespace: ns2",
                    1,
                )
                .replacen("replicas: { cluster2: 2 }", "replicas: { cluster1: 2 }", 1)
        }),
        at: Line(19, 27),
        message: "foo.ns1 and foo.ns2 both have pods in cluster1, and pods are named <service>-<index> per cluster, \
                  so both would have a pod foo-0: rename one service or give them pods in different clusters",
    },
    Case {
        name: "duplicate cluster name",
        input: Edit("  - name: cluster2", "  - name: cluster1"),
        at: Line(6, 11),
        message: "duplicate cluster name \"cluster1\": names must be unique",
    },
    Case {
        name: "duplicate service",
        input: Edit("  - name: bar\n    namespace: ns2", "  - name: foo\n    namespace: ns1"),
        at: Line(15, 11),
        message: "duplicate service foo.ns1: each name.namespace may be declared once",
    },
    Case {
        name: "pod name longer than a DNS label",
        input: Text(|| VALID.replacen("  - name: bar\n", &format!("  - name: b{}r\n", "a".repeat(60)), 1)),
        at: Line(19, 27),
        message: "-1 would be 64 characters, more than the 63 of a DNS label (pods are named <service>-<index>): \
                  shorten the service name",
    },
    Case {
        name: "duplicate port number",
        input: Edit(
            "protocol: http }\n    replicas: { cluster2",
            "protocol: http }\n      - { name: web, number: 80, protocol: http }\n    replicas: { cluster2",
        ),
        at: Line(19, 30),
        message: "duplicate port number 80 in service bar.ns2: port numbers must be unique within a service",
    },
    Case {
        name: "fault naming an unknown cluster",
        input: Edit(
            "    to: { service: bar.ns2, port: http }\n",
            "    to: { service: bar.ns2, port: http }\n    faults: [{ gatewayDown: { cluster: \"c\\x07\" } }]\n",
        ),
        at: Line(24, 14),
        message: "fault names unknown cluster \"c\\u{7}\": clusters are cluster1, cluster2",
    },
    Case {
        name: "duplicate phase name",
        input: Edit(
            "    to: { service: bar.ns2, port: http }\n",
            "    to: { service: bar.ns2, port: http }\n  - name: p\n    from: { service: foo.ns1, cluster: cluster1 }\n    to: { service: bar.ns2, port: http }\n",
        ),
        at: Line(24, 11),
        message: "duplicate phase name \"p\": names must be unique",
    },
    // References.
    Case {
        name: "replicas for an unknown cluster",
        input: Edit("replicas: { cluster2: 2 }", "replicas: { cluster9: 2 }"),
        at: Line(19, 27),
        message: "replicas of bar.ns2 for unknown cluster \"cluster9\": clusters are cluster1, cluster2",
    },
    Case {
        name: "port referenced but not declared",
        input: Edit("port: http }", "port: grpc }"),
        at: Line(23, 35),
        message: "phase p: port grpc is not declared by bar.ns2; declared ports: http (80)",
    },
    Case {
        name: "traffic from a service with no pods in that cluster",
        input: Edit(
            "from: { service: foo.ns1, cluster: cluster1 }",
            "from: { service: foo.ns1, cluster: cluster2 }",
        ),
        at: Line(22, 40),
        message: "phase p: foo.ns1 has no pods in cluster2 to send from; it has pods in: cluster1",
    },
    Case {
        name: "unknown service in a phase",
        input: Edit("to: { service: bar.ns2", "to: { service: bar.ns3"),
        at: Line(23, 20),
        message: "unknown service \"bar.ns3\": refer to services as name.namespace, one of foo.ns1, bar.ns2",
    },
    // Timed actions and change expectations.
    Case {
        name: "actions without ratePerSecond",
        input: Edit(
            "    to: { service: bar.ns2, port: http }\n",
            "    to: { service: bar.ns2, port: http }\n    actions:\n      - { atMillis: 10, stopGateway: { cluster: cluster2 } }\n",
        ),
        at: Line(25, 9),
        message: "phase p has actions but no ratePerSecond",
    },
    Case {
        name: "ratePerSecond 0",
        input: Edit(
            "    to: { service: bar.ns2, port: http }\n",
            "    to: { service: bar.ns2, port: http }\n    ratePerSecond: 0\n",
        ),
        at: Line(24, 20),
        message: "ratePerSecond 0 is out of range: use 1 to 100000",
    },
    Case {
        name: "bucketMillis too small",
        input: Edit(
            "    to: { service: bar.ns2, port: http }\n",
            "    to: { service: bar.ns2, port: http }\n    bucketMillis: 5\n",
        ),
        at: Line(24, 19),
        message: "bucketMillis 5 is out of range: use 10 to 60000",
    },
    Case {
        name: "atMillis beyond the traffic",
        input: Edit(
            "    to: { service: bar.ns2, port: http }\n",
            "    to: { service: bar.ns2, port: http }\n    requests: 100\n    ratePerSecond: 100\n    actions:\n      - { atMillis: 1000, stopGateway: { cluster: cluster2 } }\n",
        ),
        at: Line(27, 21),
        message: "atMillis 1000 is after the last request starts: request 100 of 100 starts at 990 ms (the traffic, 100 requests at ratePerSecond 100, lasts 1000 ms), and an action later than that may find the traffic over and never be taken: use 0 to 990",
    },
    Case {
        // A false PASS once: the last of 4 requests at 1 per second starts at 3000 ms, so an
        // action at 3500 ms found the traffic over, was not taken, and the run passed.
        name: "atMillis after the last request starts, within the traffic",
        input: Edit(
            "    to: { service: bar.ns2, port: http }\n",
            "    to: { service: bar.ns2, port: http }\n    requests: 4\n    ratePerSecond: 1\n    actions:\n      - { atMillis: 3500, stopGateway: { cluster: cluster2 } }\n",
        ),
        at: Line(27, 21),
        message: "atMillis 3500 is after the last request starts: request 4 of 4 starts at 3000 ms (the traffic, 4 requests at ratePerSecond 1, lasts 4000 ms), and an action later than that may find the traffic over and never be taken: use 0 to 3000",
    },
    Case {
        name: "actions out of order",
        input: Edit(
            "    to: { service: bar.ns2, port: http }\n",
            "    to: { service: bar.ns2, port: http }\n    requests: 100\n    ratePerSecond: 100\n    actions:\n      - { atMillis: 500, stopGateway: { cluster: cluster2 } }\n      - { atMillis: 100, startGateway: { cluster: cluster2 } }\n",
        ),
        at: Line(28, 21),
        message: "atMillis 100 comes before the previous action",
    },
    Case {
        name: "two change keys in one action",
        input: Edit(
            "    to: { service: bar.ns2, port: http }\n",
            "    to: { service: bar.ns2, port: http }\n    requests: 100\n    ratePerSecond: 100\n    actions:\n      - { atMillis: 10, stopGateway: { cluster: cluster2 }, heal: { cluster: cluster2 } }\n",
        ),
        at: Line(27, 67),
        message: "the action sets both stopGateway and heal: one change per action",
    },
    Case {
        name: "an action without a change",
        input: Edit(
            "    to: { service: bar.ns2, port: http }\n",
            "    to: { service: bar.ns2, port: http }\n    requests: 100\n    ratePerSecond: 100\n    actions:\n      - { atMillis: 10, name: nothing }\n",
        ),
        at: Line(27, 9),
        message: "the action names no change: use exactly one of stopGateway",
    },
    Case {
        name: "unknown change key",
        input: Edit(
            "    to: { service: bar.ns2, port: http }\n",
            "    to: { service: bar.ns2, port: http }\n    requests: 100\n    ratePerSecond: 100\n    actions:\n      - { atMillis: 10, explode: { cluster: cluster2 } }\n",
        ),
        at: Line(27, 25),
        message: "unknown field",
    },
    Case {
        name: "action on an unknown cluster",
        input: Edit(
            "    to: { service: bar.ns2, port: http }\n",
            "    to: { service: bar.ns2, port: http }\n    requests: 100\n    ratePerSecond: 100\n    actions:\n      - { atMillis: 10, partition: { cluster: cluster9 } }\n",
        ),
        at: Line(27, 47),
        message: "partition names unknown cluster \"cluster9\": clusters are cluster1, cluster2",
    },
    Case {
        name: "scale of an unknown service",
        input: Edit(
            "    to: { service: bar.ns2, port: http }\n",
            "    to: { service: bar.ns2, port: http }\n    requests: 100\n    ratePerSecond: 100\n    actions:\n      - { atMillis: 10, scale: { cluster: cluster2, service: baz.ns2, replicas: 1 } }\n",
        ),
        at: Line(27, 62),
        message: "scale names unknown service \"baz.ns2\"",
    },
    Case {
        name: "kill of a pod the cluster does not run",
        input: Edit(
            "    to: { service: bar.ns2, port: http }\n",
            "    to: { service: bar.ns2, port: http }\n    requests: 100\n    ratePerSecond: 100\n    actions:\n      - { atMillis: 10, kill: { cluster: cluster2, pod: bar-7, container: app } }\n",
        ),
        at: Line(27, 57),
        message: "kill names pod \"bar-7\", which cluster cluster2 does not run at that point; pods are named <service>-<index>, e.g. bar-0, bar-1",
    },
    Case {
        name: "kill of a container that does not exist",
        input: Edit(
            "    to: { service: bar.ns2, port: http }\n",
            "    to: { service: bar.ns2, port: http }\n    requests: 100\n    ratePerSecond: 100\n    actions:\n      - { atMillis: 10, kill: { cluster: cluster2, pod: bar-0, container: init } }\n",
        ),
        at: Line(27, 75),
        message: "unknown variant",
    },
    Case {
        name: "joinCluster of a cluster without joinsLater",
        input: Edit(
            "    to: { service: bar.ns2, port: http }\n",
            "    to: { service: bar.ns2, port: http }\n    requests: 100\n    ratePerSecond: 100\n    actions:\n      - { atMillis: 10, joinCluster: { cluster: cluster2 } }\n",
        ),
        at: Line(27, 49),
        message: "joinCluster cluster2: the cluster is in the mesh from the start; a cluster that joins says joinsLater: true",
    },
    Case {
        name: "action on a cluster after it left",
        input: Edit(
            "    to: { service: bar.ns2, port: http }\n",
            "    to: { service: bar.ns2, port: http }\n    requests: 100\n    ratePerSecond: 100\n    actions:\n      - { atMillis: 10, leaveCluster: { cluster: cluster2 } }\n      - { atMillis: 20, partition: { cluster: cluster2 } }\n",
        ),
        at: Line(28, 47),
        message: "partition on cluster cluster2, which is not in the mesh at atMillis 20 (it joins later or has left)",
    },
    Case {
        name: "leaveCluster of the sending cluster",
        input: Edit(
            "    to: { service: bar.ns2, port: http }\n",
            "    to: { service: bar.ns2, port: http }\n    requests: 100\n    ratePerSecond: 100\n    actions:\n      - { atMillis: 10, leaveCluster: { cluster: cluster1 } }\n",
        ),
        at: Line(27, 50),
        message: "leaveCluster cluster1: the phase sends from that cluster",
    },
    Case {
        name: "duplicate action name",
        input: Edit(
            "    to: { service: bar.ns2, port: http }\n",
            "    to: { service: bar.ns2, port: http }\n    requests: 100\n    ratePerSecond: 100\n    actions:\n      - { atMillis: 10, name: cut, partition: { cluster: cluster2 } }\n      - { atMillis: 20, name: cut, heal: { cluster: cluster2 } }\n",
        ),
        at: Line(28, 31),
        message: "duplicate action name \"cut\"",
    },
    Case {
        name: "upgrade outside the emulated range",
        input: Edit(
            "    to: { service: bar.ns2, port: http }\n",
            "    to: { service: bar.ns2, port: http }\n    requests: 100\n    ratePerSecond: 100\n    actions:\n      - { atMillis: 10, upgrade: { cluster: cluster2, to: 1.40.0 } }\n",
        ),
        at: Line(27, 59),
        message: "upgrade to 1.40.0 is outside the emulated range: use 1.1 to 1.30",
    },
    Case {
        name: "recovery after no action",
        input: Edit(
            "    to: { service: bar.ns2, port: http }\n",
            "    to: { service: bar.ns2, port: http }\n    requests: 100\n    ratePerSecond: 100\n    actions:\n      - { atMillis: 10, name: cut, partition: { cluster: cluster2 } }\n    expect:\n      recovery: { after: heal, successRateAtLeast: 0.9, withinMillis: 500 }\n",
        ),
        at: Line(29, 26),
        message: "recovery.after names no action of the phase: \"heal\" is not among the named actions (cut)",
    },
    Case {
        name: "empty window",
        input: Edit(
            "    to: { service: bar.ns2, port: http }\n",
            "    to: { service: bar.ns2, port: http }\n    expect:\n      windows:\n        - { fromMillis: 500, toMillis: 500, successRateAtLeast: 1.0 }\n",
        ),
        at: Line(26, 40),
        message: "window toMillis 500 is not after fromMillis 500",
    },
    Case {
        name: "window without a bound",
        input: Edit(
            "    to: { service: bar.ns2, port: http }\n",
            "    to: { service: bar.ns2, port: http }\n    expect:\n      windows:\n        - { fromMillis: 0, toMillis: 500 }\n",
        ),
        at: Line(26, 11),
        message: "the window sets no bound",
    },
    Case {
        name: "window naming an unknown cluster",
        input: Edit(
            "    to: { service: bar.ns2, port: http }\n",
            "    to: { service: bar.ns2, port: http }\n    expect:\n      windows:\n        - { fromMillis: 0, toMillis: 500, callsToClusterAtMost: { cluster: cluster7, calls: 0 } }\n",
        ),
        at: Line(26, 65),
        message: "window names unknown cluster \"cluster7\"",
    },
    Case {
        name: "everyBucket rate above 1",
        input: Edit(
            "    to: { service: bar.ns2, port: http }\n",
            "    to: { service: bar.ns2, port: http }\n    expect:\n      everyBucket: { successRateAtLeast: 1.5 }\n",
        ),
        at: Line(25, 42),
        message: "rate 1.5 is out of range: rates are between 0 and 1",
    },
    Case {
        name: "window after the traffic's end",
        input: Edit(
            "    to: { service: bar.ns2, port: http }\n",
            "    to: { service: bar.ns2, port: http }\n    requests: 100\n    ratePerSecond: 100\n    expect:\n      windows:\n        - { fromMillis: 1000, toMillis: 2000, successRateAtLeast: 1.0 }\n",
        ),
        at: Line(28, 25),
        message: "window fromMillis 1000 is not within the traffic, which lasts 1000 ms",
    },
    Case {
        name: "convergence without a scale or join",
        input: Edit(
            "    to: { service: bar.ns2, port: http }\n",
            "    to: { service: bar.ns2, port: http }\n    requests: 100\n    ratePerSecond: 100\n    actions:\n      - { atMillis: 10, partition: { cluster: cluster2 } }\n    expect:\n      convergenceMillisAtMost: 500\n",
        ),
        at: Line(29, 32),
        message: "convergenceMillisAtMost needs a scale or joinCluster action in the phase",
    },
    Case {
        name: "calls after leave without a leave",
        input: Edit(
            "    to: { service: bar.ns2, port: http }\n",
            "    to: { service: bar.ns2, port: http }\n    expect:\n      callsAfterLeaveAtMost: 0\n",
        ),
        at: Line(25, 30),
        message: "callsAfterLeaveAtMost needs a leaveCluster action in the phase",
    },
    Case {
        name: "joinsLater cluster nobody joins",
        input: Edit("  - name: cluster2\n", "  - name: cluster2\n    joinsLater: true\n"),
        at: Line(6, 11),
        message: "cluster cluster2 says joinsLater but no phase has a joinCluster action for it",
    },
    Case {
        name: "sending from a cluster that joins later",
        input: Edit("  - name: cluster1\n", "  - name: cluster1\n    joinsLater: true\n"),
        at: Line(23, 40),
        message: "phase p: cluster cluster1 is not in the mesh when the phase starts",
    },
    Case {
        name: "scale beyond the address layout's room",
        input: Text(scale_beyond_pod_network),
        at: Line(27, 81),
        message: "makes 40 pods, but podCidr 10.20.0.0/27 has room for",
    },
    Case {
        name: "too many actions",
        input: Text(too_many_actions),
        at: Line(91, 9),
        message: "phase p has 65 actions, more than the 64 allowed",
    },
    // Files that are not scenario files.
    Case {
        name: "a directory",
        input: Directory,
        at: Nowhere,
        message: "the scenario file is a directory, not a regular file",
    },
    Case {
        name: "a FIFO is refused without blocking",
        input: Fifo,
        at: Nowhere,
        message: "the scenario file is a FIFO, not a regular file",
    },
    Case {
        name: "/dev/zero",
        input: DevZero,
        at: Nowhere,
        message: "the scenario file is a character device, not a regular file",
    },
    Case {
        name: "oversized file",
        input: Text(oversized),
        at: Nowhere,
        message: "the scenario file is larger than 1048576 bytes (1 MiB)",
    },
    Case {
        name: "missing file",
        input: Missing,
        at: Nowhere,
        message: "cannot read the scenario file: No such file or directory",
    },
    Case {
        name: "not UTF-8",
        input: Bytes(b"name: t\ndescription: caf\xe9\n"),
        at: Line(2, 17),
        message: "the scenario file is not UTF-8: invalid byte 0xe9 here; save it as UTF-8",
    },
];

fn too_many_clusters() -> String {
    let clusters: String = (0..65)
        .map(|i| {
            format!(
                "  - name: c{i}\n    podCidr: 10.{i}.0.0/16\n    serviceCidr: 10.{}.0.0/16\n",
                100 + i
            )
        })
        .collect();
    format!("name: t\nclusters:\n{clusters}services: []\n")
}

fn too_many_services() -> String {
    let services: String = (0..2049)
        .map(|i| format!("  - name: s{i}\n    namespace: ns\n    ports: [{{ name: http, number: 80, protocol: http }}]\n    replicas: {{}}\n"))
        .collect();
    format!(
        "name: t\nclusters:\n  - {{ name: c, podCidr: 10.0.0.0/16, serviceCidr: 10.1.0.0/16 }}\nservices:\n{services}"
    )
}

fn too_many_ports() -> String {
    let ports: String = (0..33)
        .map(|i| format!("      - {{ name: p{i}, number: {}, protocol: tcp }}\n", 1000 + i))
        .collect();
    format!(
        "name: t\nclusters:\n  - {{ name: c, podCidr: 10.0.0.0/16, serviceCidr: 10.1.0.0/16 }}\nservices:\n  - name: foo\n    namespace: ns1\n    ports:\n{ports}"
    )
}

fn too_many_planned_ports() -> String {
    let clusters: String = (0..64)
        .map(|i| {
            format!(
                "  - {{ name: c{i}, podCidr: 10.{i}.0.0/16, serviceCidr: 10.{}.0.0/16 }}\n",
                100 + i
            )
        })
        .collect();
    let ports: String = (0..32)
        .map(|i| format!("      - {{ name: p{i}, number: {}, protocol: tcp }}\n", 1000 + i))
        .collect();
    let services: String = (0..245)
        .map(|i| format!("  - name: s{i}\n    namespace: ns\n    ports:\n{ports}"))
        .collect();
    format!("name: t\nclusters:\n{clusters}services:\n{services}")
}

fn scale_beyond_pod_network() -> String {
    VALID.replacen("10.20.0.0/16", "10.20.0.0/27", 1).replacen(
        "    to: { service: bar.ns2, port: http }\n",
        "    to: { service: bar.ns2, port: http }\n    requests: 100\n    ratePerSecond: 100\n    actions:\n      \
         - { atMillis: 10, scale: { cluster: cluster2, service: bar.ns2, replicas: 40 } }\n",
        1,
    )
}

fn too_many_actions() -> String {
    let actions: String = (0..65)
        .map(|index| format!("      - {{ atMillis: {index}, partition: {{ cluster: cluster2 }} }}\n"))
        .collect();
    VALID.replacen(
        "    to: { service: bar.ns2, port: http }\n",
        &format!("    to: {{ service: bar.ns2, port: http }}\n    requests: 1000\n    ratePerSecond: 100\n    actions:\n{actions}"),
        1,
    )
}

fn oversized() -> String {
    format!("{VALID}# {}\n", "x".repeat(1024 * 1024))
}

fn run_meshfed(scenario: &Path, out: &Path, marker: &str) -> (Option<i32>, String) {
    let mut child = Command::new(MESHFED)
        .arg("plan")
        .arg(scenario)
        .arg("--out")
        .arg(out)
        .env("MESHFED_TEST_MARKER", marker)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run meshfed");
    // A FIFO read would block forever: wait with a deadline, never without one.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().expect("wait for meshfed") {
            let mut stderr = String::new();
            use std::io::Read;
            child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
            return (status.code(), stderr);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return (
                None,
                "meshfed did not exit within 20 s (blocked on its input?)".to_owned(),
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A directory of its own per case, removed when dropped.
struct CaseDir(PathBuf);

impl Drop for CaseDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn unique(label: &str) -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
    format!("scenario-errors-{label}-{}-{nanos}", std::process::id())
}

fn listing(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut entries: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| {
            let entry = entry.unwrap();
            let contents = if entry.file_type().unwrap().is_file() {
                std::fs::read(entry.path()).unwrap()
            } else {
                Vec::new()
            };
            (entry.file_name().into_string().unwrap(), contents)
        })
        .collect();
    entries.sort();
    entries
}

/// Runs one case; `Err` says what was wrong.
fn check_case(index: usize, case: &Case) -> Result<(), String> {
    let dir = CaseDir(std::env::temp_dir().join(unique(&index.to_string())));
    std::fs::create_dir_all(&dir.0).unwrap();
    std::fs::write(dir.0.join("keep.txt"), "an earlier file that must survive").unwrap();
    let file = dir.0.join("scenario.yaml");
    let scenario_path = match &case.input {
        Edit(replace, with) => {
            assert!(
                VALID.contains(replace),
                "case {:?} replaces text that is not there",
                case.name
            );
            std::fs::write(&file, VALID.replacen(replace, with, 1)).unwrap();
            file
        }
        Text(build) => {
            std::fs::write(&file, build()).unwrap();
            file
        }
        Bytes(bytes) => {
            std::fs::write(&file, bytes).unwrap();
            file
        }
        Directory => {
            std::fs::create_dir(&file).unwrap();
            file
        }
        Fifo => {
            let status = Command::new("mkfifo").arg(&file).status().expect("mkfifo");
            assert!(status.success(), "mkfifo failed");
            file
        }
        DevZero => PathBuf::from("/dev/zero"),
        Missing => file,
    };
    let before = listing(&dir.0);
    let out = dir.0.join("plan");
    let (code, stderr) = run_meshfed(&scenario_path, &out, &unique("marker"));
    let mut wrong = Vec::new();
    if code != Some(2) {
        wrong.push(format!("exit code {code:?}, want 2"));
    }
    let shown = scenario_path.display();
    let prefix = match case.at {
        Line(line, column) => format!("meshfed: {shown}:{line}:{column}: "),
        Nowhere => format!("meshfed: {shown}: "),
    };
    if !stderr.starts_with(&prefix) {
        wrong.push(format!("stderr does not start with {prefix:?}"));
    }
    if let Nowhere = case.at {
        let after = stderr.strip_prefix(&format!("meshfed: {shown}")).unwrap_or("");
        if after.starts_with(':') && after[1..].starts_with(|c: char| c.is_ascii_digit()) {
            wrong.push("a position is printed where there is none".to_owned());
        }
    }
    if !stderr.contains(case.message) {
        wrong.push(format!("stderr lacks {:?}", case.message));
    }
    if stderr.chars().any(|c| c.is_control() && c != '\n') {
        wrong.push("stderr contains a raw control character".to_owned());
    }
    if out.exists() {
        wrong.push("the --out directory was created".to_owned());
    }
    if listing(&dir.0) != before {
        wrong.push("files next to the scenario changed".to_owned());
    }
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(format!("{}: {}\n    stderr: {stderr:?}", case.name, wrong.join("; ")))
    }
}

#[test]
fn valid_base_scenario_parses() {
    scenario::parse(Path::new("valid.yaml"), VALID).expect("the base of the table must be valid");
}

#[test]
fn malformed_scenarios_exit_2_with_position_and_what_is_allowed_and_change_nothing() {
    assert!(CASES.len() >= 40, "the table must hold at least 40 cases");
    let failures: Vec<String> = CASES
        .iter()
        .enumerate()
        .filter_map(|(index, case)| check_case(index, case).err())
        .collect();
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

#[test]
fn an_error_without_a_position_says_so_instead_of_0_0() {
    let error = scenario::load(Path::new("/nonexistent/meshfed/scenario.yaml")).unwrap_err();
    assert!(!error.has_position());
    assert_eq!(
        error.to_string(),
        "/nonexistent/meshfed/scenario.yaml: cannot read the scenario file: No such file or directory (os error 2)"
    );
}

#[test]
fn a_phase_with_every_kind_of_action_parses_into_its_world_changes_in_order() {
    use meshfed::change::{Container, WorldChange};
    let text = VALID
        .replacen(
            "  - name: cluster2\n",
            "  - name: cluster3\n    joinsLater: true\n    podCidr: 10.30.0.0/16\n    serviceCidr: 10.98.0.0/16\n  - name: cluster2\n",
            1,
        )
        .replacen(
            "    to: { service: bar.ns2, port: http }\n",
            "    to: { service: bar.ns2, port: http }\n    requests: 1000\n    ratePerSecond: 100\n    bucketMillis: 250\n    actions:
      - { atMillis: 0, name: down, stopGateway: { cluster: cluster2 } }
      - { atMillis: 100, startGateway: { cluster: cluster2 } }
      - { atMillis: 200, partition: { cluster: cluster2 } }
      - { atMillis: 300, heal: { cluster: cluster2 } }
      - { atMillis: 400, scale: { cluster: cluster2, service: bar.ns2, replicas: 3 } }
      - { atMillis: 500, delay: { cluster: cluster2, service: bar.ns2, millis: 20 } }
      - { atMillis: 600, kill: { cluster: cluster2, pod: bar-2, container: sidecar } }
      - { atMillis: 700, rotateIntermediate: { cluster: cluster2 } }
      - { atMillis: 800, joinCluster: { cluster: cluster3 } }
      - { atMillis: 850, upgrade: { cluster: cluster3, to: 1.29.0 } }
      - { atMillis: 900, leaveCluster: { cluster: cluster3 } }
    expect:
      windows:
        - { fromMillis: 0, toMillis: 100, failedCallsAtMost: 100 }
      everyBucket: { successRateAtLeast: 0.1 }
      recovery: { after: down, successRateAtLeast: 0.9, withinMillis: 1000 }
      convergenceMillisAtMost: 1000
      callsAfterLeaveAtMost: 0
",
            1,
        );
    let parsed = scenario::parse(Path::new("every-action.yaml"), &text).unwrap_or_else(|error| panic!("{error}"));
    let phase = &parsed.phases[0];
    assert_eq!(phase.bucket_millis(), 250);
    assert_eq!(phase.traffic_millis(), Some(10_000));
    let changes: Vec<WorldChange> = phase
        .actions
        .iter()
        .map(|action| action.value.change().unwrap())
        .collect();
    let c2 = || "cluster2".to_owned();
    assert_eq!(
        changes,
        [
            WorldChange::StopGateway { cluster: c2() },
            WorldChange::StartGateway { cluster: c2() },
            WorldChange::Partition { cluster: c2() },
            WorldChange::Heal { cluster: c2() },
            WorldChange::Scale {
                cluster: c2(),
                service: "bar.ns2".into(),
                replicas: 3
            },
            WorldChange::Delay {
                cluster: c2(),
                service: "bar.ns2".into(),
                millis: 20
            },
            WorldChange::Kill {
                cluster: c2(),
                pod: "bar-2".into(),
                container: Container::Sidecar
            },
            WorldChange::RotateIntermediate { cluster: c2() },
            WorldChange::JoinCluster {
                cluster: "cluster3".into()
            },
            WorldChange::Upgrade {
                cluster: "cluster3".into(),
                to: scenario::IstioVersion::new(1, 29, 0)
            },
            WorldChange::LeaveCluster {
                cluster: "cluster3".into()
            },
        ]
    );
    let labels: Vec<String> = phase.actions.iter().map(|action| action.value.label()).collect();
    assert_eq!(labels[0], "down");
    assert_eq!(labels[1], "startGateway@100ms");
}

/// The numbers in a Markdown table cell, commas removed (`1–1,000,000` → [1, 1000000]).
fn numbers_in(cell: &str) -> Vec<u64> {
    cell.replace(',', "")
        .split(|c: char| !c.is_ascii_digit())
        .filter(|part| !part.is_empty())
        .map(|part| part.parse().unwrap())
        .collect()
}

/// docs/scenario.md's bounds table must say what the validator enforces.
#[test]
fn the_bounds_table_in_docs_scenario_md_is_the_validators() {
    let doc = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/scenario.md")).unwrap();
    let table = &doc[doc.find("## Bounds").expect("docs/scenario.md has a Bounds section")..];
    let rows: std::collections::BTreeMap<String, Vec<u64>> = table
        .lines()
        .skip_while(|line| !line.starts_with("| what |"))
        .skip(2)
        .take_while(|line| line.starts_with('|'))
        .map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            (cells[1].to_owned(), numbers_in(cells[2]))
        })
        .collect();
    let max_zones = u64::try_from(scenario::MAX_ZONES_PER_CLUSTER).unwrap();
    let expected: [(&str, Vec<u64>); 16] = [
        ("file size", vec![scenario::MAX_INPUT_BYTES / (1024 * 1024)]),
        ("clusters", vec![1, scenario::MAX_CLUSTERS as u64]),
        ("services", vec![scenario::MAX_SERVICES as u64]),
        ("ports per service", vec![1, scenario::MAX_PORTS_PER_SERVICE as u64]),
        (
            "ports in the plan (clusters × all ports of all services)",
            vec![scenario::MAX_PLANNED_PORTS],
        ),
        ("pods (sum of all `replicas`)", vec![scenario::MAX_PODS]),
        ("`requests` per phase", vec![1, scenario::MAX_REQUESTS]),
        ("`concurrency`", vec![1, u64::from(scenario::MAX_CONCURRENCY)]),
        ("`zones` per cluster", vec![max_zones]),
        ("phases", vec![scenario::MAX_PHASES as u64]),
        ("faults per phase", vec![scenario::MAX_FAULTS_PER_PHASE as u64]),
        ("actions per phase", vec![scenario::MAX_ACTIONS_PER_PHASE as u64]),
        ("`ratePerSecond`", vec![1, u64::from(scenario::MAX_RATE_PER_SECOND)]),
        (
            "`bucketMillis`",
            vec![scenario::MIN_BUCKET_MILLIS, scenario::MAX_BUCKET_MILLIS],
        ),
        ("`windows` per phase", vec![scenario::MAX_WINDOWS_PER_PHASE as u64]),
        ("`delay.millis`", vec![u64::from(scenario::MAX_DELAY_MILLIS)]),
    ];
    for (what, bound) in expected {
        assert_eq!(rows.get(what), Some(&bound), "docs/scenario.md's bound for {what}");
    }
    assert_eq!(rows.len(), 16, "a row of the table is not checked here: {rows:?}");
}

/// docs/scenario.md once warned that YAML reads `1.10` as a number; meshfed reads the version as
/// written, so an unquoted `1.10` is 1.10.
#[test]
fn an_unquoted_istio_version_is_read_as_written() {
    let text = VALID.replace(
        "    podCidr: 10.10.0.0/16\n",
        "    podCidr: 10.10.0.0/16\n    istioVersion: 1.10\n",
    );
    let parsed = scenario::parse(Path::new("v.yaml"), &text).expect("valid");
    assert_eq!(parsed.clusters[0].istio_version.value.to_string(), "1.10.0");
}
