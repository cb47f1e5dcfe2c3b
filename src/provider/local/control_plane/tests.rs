//! Tests of the control plane's specs against planned worlds.
use std::path::{Path, PathBuf};

use super::*;
use crate::plan;
use crate::plan::istio::LocalityFailover;
use crate::provider::local::envoy_config::GatewaySpec;
use crate::provider::local::envoy_config::{OutlierDetection, Protocol, RetryPolicy};
use crate::provider::local::topology::topology;
use crate::scenario::EndpointWeights;

/// `scenarios/skew.yaml` with `edit` applied to its text, laid out and planned.
pub(super) fn skew_edited(edit: impl Fn(String) -> String, weights: EndpointWeights) -> (Topology, plan::Plan) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/skew.yaml");
    let text = edit(std::fs::read_to_string(&path).unwrap());
    let scenario = crate::scenario::parse(&path, &text).unwrap();
    let topology = topology(&scenario).unwrap();
    let plan = plan::plan_with_weights(&scenario, &topology.inventory(&scenario), weights);
    (topology, plan)
}

fn skew(weights: EndpointWeights) -> (Topology, plan::Plan) {
    skew_edited(|text| text, weights)
}

/// The sidecar of foo-0 in cluster1 for a planned world.
pub(super) fn foo_sidecar_of((topology, plan): (Topology, plan::Plan)) -> SidecarSpec {
    let cluster = topology.cluster("cluster1").unwrap();
    let foo = cluster.pods.iter().find(|pod| pod.name == "foo-0").unwrap();
    let certs = CertPaths::in_dir(&PathBuf::from("/certs"));
    sidecar_spec(&topology, "cluster.local", cluster, &plan.clusters[0], foo, certs)
}

fn foo_sidecar(weights: EndpointWeights) -> SidecarSpec {
    foo_sidecar_of(skew(weights))
}

fn bar_endpoints(spec: &SidecarSpec) -> Vec<(String, u16, u32)> {
    let bar = spec
        .outbound
        .iter()
        .find(|port| port.host == "bar.ns2.svc.cluster.local")
        .unwrap();
    bar.endpoints
        .iter()
        .map(|endpoint| (endpoint.address.to_string(), endpoint.port, endpoint.weight))
        .collect()
}

#[test]
fn equal_weights_make_the_remote_gateway_one_endpoint_beside_the_local_pod() {
    let spec = foo_sidecar(EndpointWeights::Equal);
    assert_eq!(
        bar_endpoints(&spec),
        [("10.10.0.11".to_owned(), 80, 1), ("100.64.0.11".to_owned(), 15443, 1)]
    );
}

#[test]
fn ready_pods_weights_give_the_remote_gateway_its_pod_count() {
    let spec = foo_sidecar(EndpointWeights::ReadyPods);
    assert_eq!(
        bar_endpoints(&spec),
        [("10.10.0.11".to_owned(), 80, 1), ("100.64.0.11".to_owned(), 15443, 3)]
    );
}

#[test]
fn sidecar_verifies_the_servers_spiffe_identity_and_listens_on_cluster_ips() {
    let spec = foo_sidecar(EndpointWeights::Equal);
    let bar = spec
        .outbound
        .iter()
        .find(|port| port.host == "bar.ns2.svc.cluster.local")
        .unwrap();
    assert_eq!(bar.server_identities, ["spiffe://cluster.local/ns/ns2/sa/bar"]);
    assert_eq!(
        bar.cluster_ip,
        Ipv4Addr::new(10, 96, 0, 11),
        "services in namespace order: foo.ns1 .10, bar.ns2 .11"
    );
    assert_eq!(spec.inbound.len(), 1);
    assert_eq!((spec.inbound[0].port, spec.inbound[0].protocol), (80, Protocol::Http));
}

fn bar_identities(spec: &SidecarSpec) -> Vec<String> {
    spec.outbound
        .iter()
        .find(|port| port.host == "bar.ns2.svc.cluster.local")
        .unwrap()
        .server_identities
        .clone()
}

/// Mirrors `pilot/pkg/model/push_context.go@1.30.3` (`ServiceAccounts`: the service accounts
/// of the service's endpoint shards plus `ServiceEntry.subjectAltNames`). In serviceentry mode
/// a cluster without local pods of the service knows no service account (ServiceEntry
/// endpoints carry none), so its sidecars check no SAN; with endpoint discovery the remote
/// cluster's shard brings its pods' service accounts.
#[test]
fn fidelity_server_san_check_uses_the_service_accounts_istiod_knows() {
    let bar_remote_only =
        |text: String| text.replace("replicas: { cluster1: 1, cluster2: 3 }", "replicas: { cluster2: 3 }");
    let serviceentry = foo_sidecar_of(skew_edited(bar_remote_only, EndpointWeights::Equal));
    assert_eq!(
        bar_identities(&serviceentry),
        Vec::<String>::new(),
        "no local pods: no SAN check"
    );
    let resources = sidecar_resources(&serviceentry);
    let bar_cluster = resources.clusters["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|cluster| cluster["name"].as_str().is_some_and(|name| name.ends_with(BAR)))
        .unwrap();
    let clusters = bar_cluster.to_string();
    assert!(
        // The root is still verified (the ROOTCA secret), only no SAN is matched.
        !clusters.contains("subject_alt_names") && clusters.contains("\"ROOTCA\""),
        "an empty SAN list must not be written as a check"
    );

    let discovery =
        move |text: String| bar_remote_only(text).replace("  mode: serviceentry", "  mode: endpoint-discovery");
    let discovered = foo_sidecar_of(skew_edited(discovery, EndpointWeights::Equal));
    assert_eq!(bar_identities(&discovered), ["spiffe://cluster.local/ns/ns2/sa/bar"]);

    let (topology, mut plan) = skew_edited(bar_remote_only, EndpointWeights::Equal);
    for object in &mut plan.clusters[0].objects {
        if let Object::ServiceEntry(entry) = object {
            entry.spec.subject_alt_names = vec!["spiffe://other.domain/ns/ns2/sa/bar".to_owned()];
        }
    }
    let with_sans = foo_sidecar_of((topology, plan));
    assert_eq!(bar_identities(&with_sans), ["spiffe://other.domain/ns/ns2/sa/bar"]);
}

#[test]
fn endpoint_discovery_gives_remote_gateways_weighted_by_their_pods() {
    let discovery = |text: String| text.replace("  mode: serviceentry", "  mode: endpoint-discovery");
    let (topology, plan) = skew_edited(discovery, EndpointWeights::Equal);
    assert!(
        plan.clusters[0]
            .objects
            .iter()
            .all(|object| object.kind() != "ServiceEntry")
    );
    let spec = foo_sidecar_of((topology, plan));
    assert_eq!(
        bar_endpoints(&spec),
        [("10.10.0.11".to_owned(), 80, 1), ("100.64.0.11".to_owned(), 15443, 3)]
    );
}

/// skew.yaml in endpoint-discovery mode on `version`, with cluster2's three bar pods spread
/// over zones `[zone2b, zone2a]`: zone2b gets bar-0 and bar-2, zone2a gets bar-1.
fn two_zone_remote_at(version: &str) -> (Topology, plan::Plan) {
    let version = version.to_owned();
    skew_edited(
        move |text| {
            text.replace("  mode: serviceentry", "  mode: endpoint-discovery")
                .replace(
                    "    podCidr:",
                    &format!("    istioVersion: \"{version}\"\n    podCidr:"),
                )
                .replace("    zone: zone2a\n", "    zone: zone2a\n    zones: [zone2b, zone2a]\n")
        },
        EndpointWeights::ReadyPods,
    )
}

/// Mirrors `pilot/pkg/xds/ep_filters.go@1.8.0` (`EndpointsByNetworkFilter`: the remote
/// network's gateway is appended once per locality group, weighted by that group's count;
/// same shape on 1.30.2, istio/istio#56355) plus Envoy keeping one host per address: the
/// programmed gateway weight is the first locality's (zone2a: 1 pod), not the network's 3.
/// No emulated version lacks the bug (fix PR #60835 unmerged), so both sides of the 1.8
/// reference are buggy and the correct total is checked on the fix path itself.
#[test]
fn fidelity_two_zone_remote_gateway_keeps_only_the_first_localitys_weight() {
    for version in ["1.8.6", "1.30.3"] {
        let (topology, plan) = two_zone_remote_at(version);
        let zones: Vec<(String, String)> = topology
            .cluster("cluster2")
            .unwrap()
            .pods
            .iter()
            .filter(|pod| pod.service == "bar.ns2")
            .map(|pod| (pod.name.clone(), pod.zone.clone()))
            .collect();
        assert_eq!(
            zones,
            [
                ("bar-0".to_owned(), "zone2b".to_owned()),
                ("bar-1".to_owned(), "zone2a".to_owned()),
                ("bar-2".to_owned(), "zone2b".to_owned())
            ]
        );
        let spec = foo_sidecar_of((topology, plan));
        assert_eq!(
            bar_endpoints(&spec),
            [("10.10.0.11".to_owned(), 80, 1), ("100.64.0.11".to_owned(), 15443, 1)],
            "{version}: the gateway is programmed with zone2a's count only"
        );
        let bar = spec.outbound.iter().find(|port| port.host == BAR).unwrap();
        let gateway_locality = bar.endpoints[1].locality.as_ref().unwrap();
        assert_eq!(
            (gateway_locality.region.as_str(), gateway_locality.zone.as_str()),
            ("region2", "zone2a")
        );
    }
    let (topology, _) = two_zone_remote_at("1.30.3");
    let groups = locality_groups(topology.cluster("cluster2").unwrap(), "bar.ns2");
    let gateway = Ipv4Addr::new(100, 64, 0, 11);
    let fixed = split_horizon_gateway_endpoint(gateway, &groups, false).unwrap();
    assert_eq!(
        fixed.weight, 3,
        "the fix (PR #60835) weighs the gateway by every zone's pods"
    );
    let buggy = split_horizon_gateway_endpoint(gateway, &groups, true).unwrap();
    assert_eq!(buggy.weight, 1);
    assert!(split_horizon_gateway_endpoint(gateway, &[], true).is_none());
}

/// A route per planned service port, to this cluster's pods only (foo has none in cluster2:
/// its chain exists, as Istio's does, with an empty cluster).
#[test]
fn gateway_routes_sni_to_its_own_clusters_pods_only() {
    let (topology, plan) = skew(EndpointWeights::Equal);
    let gateway = gateway_spec(topology.cluster("cluster2").unwrap(), &plan.clusters[1]);
    let routes: Vec<(String, usize)> = gateway
        .routes
        .iter()
        .map(|route| (route.sni.clone(), route.endpoints.len()))
        .collect();
    assert_eq!(
        routes,
        [
            ("outbound_.80_._.foo.ns1.svc.cluster.local".to_owned(), 0),
            ("outbound_.80_._.bar.ns2.svc.cluster.local".to_owned(), 3)
        ]
    );
}

#[test]
fn without_the_passthrough_gateway_in_the_plan_the_gateway_routes_nothing() {
    let (topology, mut plan) = skew(EndpointWeights::Equal);
    plan.clusters[1]
        .objects
        .retain(|object| !matches!(object, Object::Gateway(_)));
    assert!(
        gateway_spec(topology.cluster("cluster2").unwrap(), &plan.clusters[1])
            .routes
            .is_empty()
    );
}

// ---- Fidelity: each test names the Istio source it mirrors and checks the generated Envoy
// configuration on both sides of a version boundary (docs/fidelity.md).

use crate::provider::local::envoy_config::{outbound_cluster_name, sidecar_resources};
use serde_json::{Value, json};

const BAR: &str = "bar.ns2.svc.cluster.local";

/// skew.yaml with every cluster on `version` and `federation_extra` lines added to federation.
fn skew_at(version: &str, federation_extra: &str) -> (Topology, plan::Plan) {
    let version = version.to_owned();
    let extra = federation_extra.to_owned();
    skew_edited(
        move |text| {
            text.replace(
                "    podCidr:",
                &format!("    istioVersion: \"{version}\"\n    podCidr:"),
            )
            .replace("  mtls: PERMISSIVE\n", &format!("  mtls: PERMISSIVE\n{extra}"))
        },
        EndpointWeights::Equal,
    )
}

/// foo-0's (cluster1) Envoy cluster for bar:80 in `world`.
pub(super) fn foo_bar_cluster(world: (Topology, plan::Plan)) -> Value {
    sidecar_resources(&foo_sidecar_of(world)).clusters["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|cluster| cluster["name"] == outbound_cluster_name(80, BAR))
        .unwrap()
        .clone()
}

fn bar_cluster_at(version: &str, federation_extra: &str) -> Value {
    foo_bar_cluster(skew_at(version, federation_extra))
}

fn bar_inbound_at(version: &str, federation_extra: &str) -> Value {
    let (topology, plan) = skew_at(version, federation_extra);
    bar_inbound_in(&topology, &plan)
}

/// cluster1's bar-0 inbound listener as the control plane builds it from `plan`.
fn bar_inbound_in(topology: &Topology, plan: &crate::plan::Plan) -> Value {
    let cluster = topology.cluster("cluster1").unwrap();
    let bar = cluster.pods.iter().find(|pod| pod.name == "bar-0").unwrap();
    let spec = sidecar_spec(
        topology,
        "cluster.local",
        cluster,
        &plan.clusters[0],
        bar,
        CertPaths::in_dir(&PathBuf::from("/certs")),
    );
    sidecar_resources(&spec).listeners["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|listener| listener["name"].as_str().unwrap().starts_with("inbound_"))
        .unwrap()
        .clone()
}

/// Row 1b: pilot/pkg/networking/core/v1alpha3/listener_builder.go@1.5.10 (istio.alpn filter),
/// pilot/pkg/xds/filters/filters.go@1.14.6; 1.4: cluster TLS context ALPN `istio`.
#[test]
fn fidelity_client_alpn_changes_at_1_5() {
    let alpn = |version| {
        bar_cluster_at(version, "")["transport_socket"]["typed_config"]["common_tls_context"]["alpn_protocols"].clone()
    };
    assert_eq!(alpn("1.4.6"), json!(["istio"]));
    assert_eq!(alpn("1.5.10"), json!(["istio-http/1.1", "istio", "http/1.1"]));
    assert_eq!(alpn("1.30.3"), json!(["istio-http/1.1", "istio", "http/1.1"]));
}

/// Row 1d: auto-mTLS, on by default from 1.5 (`mtls.auto: true` in
/// operator/data/profiles/default.yaml@1.5.0 and manifests/global.yaml@1.5.0; `auto: false` in
/// install/kubernetes/helm/istio/values.yaml@1.4.10) and pilot/pkg/networking/core/v1alpha3/cluster.go@1.6.0
/// (transport_socket_matches on tlsMode). Without the DestinationRule: 1.4 plain text, 1.5
/// mTLS to sidecar pods only (the ServiceEntry's gateway has no tlsMode label).
#[test]
fn fidelity_without_a_destination_rule_mtls_needs_auto_mtls_from_1_5() {
    let no_rule = "  destinationRule: false\n";
    let old = bar_cluster_at("1.4.10", no_rule);
    assert!(old.get("transport_socket").is_none() && old.get("transport_socket_matches").is_none());
    let new = bar_cluster_at("1.5.0", no_rule);
    assert!(new.get("transport_socket").is_none());
    assert_eq!(
        new["transport_socket_matches"][0]["match"],
        json!({ "tlsMode": "istio" })
    );
    assert_eq!(new["transport_socket_matches"][1]["match"], json!({}));
    let endpoints = new["load_assignment"]["endpoints"].to_string();
    assert_eq!(endpoints.matches("\"tlsMode\":\"istio\"").count(), 1, "{endpoints}");
    let with_rule = bar_cluster_at("1.4.10", "");
    assert_eq!(with_rule["transport_socket"]["name"], "envoy.transport_sockets.tls");
}

/// Row 3a: pilot/pkg/networking/core/v1alpha3/filterchain_options.go@1.10.6: PERMISSIVE
/// inbound = tls_inspector + an mTLS chain matched on Istio ALPN + a raw_buffer chain; STRICT
/// = mTLS only.
#[test]
fn fidelity_permissive_inbound_accepts_plain_text_strict_does_not() {
    for version in ["1.5.10", "1.30.3"] {
        let permissive = bar_inbound_at(version, "");
        let chains = permissive["filter_chains"].as_array().unwrap();
        assert_eq!(chains.len(), 2, "{version}");
        assert_eq!(chains[0]["filter_chain_match"]["transport_protocol"], "tls");
        assert!(
            chains[0]["filter_chain_match"]["application_protocols"]
                .as_array()
                .unwrap()
                .contains(&json!("istio-http/1.1"))
        );
        assert_eq!(chains[1]["filter_chain_match"]["transport_protocol"], "raw_buffer");
        assert!(chains[1].get("transport_socket").is_none());
        assert_eq!(
            permissive["listener_filters"][0]["name"],
            "envoy.filters.listener.tls_inspector"
        );
    }
    let strict = bar_inbound_at("1.30.3", "").to_string();
    let strict_at = |version: &str| {
        let (topology, mut plan) = skew_at(version, "");
        for object in &mut plan.clusters[0].objects {
            if let Object::PeerAuthentication(policy) = object {
                policy.spec.mtls.mode = "STRICT".into();
            }
        }
        bar_inbound_in(&topology, &plan)
    };
    let strict_listener = strict_at("1.30.3");
    assert_ne!(strict_listener.to_string(), strict);
    let chains = strict_listener["filter_chains"].as_array().unwrap();
    assert_eq!(chains.len(), 1);
    assert_eq!(
        chains[0]["transport_socket"]["typed_config"]["require_client_certificate"],
        true
    );
}

/// Row 2c: pilot/pkg/networking/core/v1alpha3/cluster.go@1.14.0 (LEAST_REQUEST default),
/// pilot/pkg/networking/core/cluster_traffic_policy.go@1.30.3 (DestinationRule loadBalancer).
#[test]
fn fidelity_load_balancer_default_changes_at_1_14_unless_the_rule_sets_one() {
    assert_eq!(bar_cluster_at("1.13.9", "")["lb_policy"], "ROUND_ROBIN");
    assert_eq!(bar_cluster_at("1.14.0", "")["lb_policy"], "LEAST_REQUEST");
    assert_eq!(
        bar_cluster_at("1.14.0", "  loadBalancer: ROUND_ROBIN\n")["lb_policy"],
        "ROUND_ROBIN"
    );
    let (topology, plan) = skew_at("1.13.9", "");
    let gateway = gateway_spec(topology.cluster("cluster2").unwrap(), &plan.clusters[1]);
    assert_eq!(gateway.load_balancer, LoadBalancer::RoundRobin);
}

/// Row 7b: h2UpgradePolicy default DO_NOT_UPGRADE (istio/api mesh/v1alpha1/config.proto@1.30.3),
/// pilot/pkg/networking/core/cluster_traffic_policy.go@1.30.3: `http` ports go upstream as
/// HTTP/1.1, HTTP/2 with UPGRADE (and its ALPN then offers istio-h2).
#[test]
fn fidelity_http_ports_speak_http1_unless_the_rule_upgrades() {
    let protocol =
        |cluster: &Value| cluster["typed_extension_protocol_options"][HTTP_OPTIONS]["explicit_http_config"].clone();
    assert_eq!(
        protocol(&bar_cluster_at("1.30.3", "")),
        json!({ "http_protocol_options": {} })
    );
    let upgraded = bar_cluster_at("1.30.3", "  h2UpgradePolicy: UPGRADE\n");
    assert_eq!(protocol(&upgraded), json!({ "http2_protocol_options": {} }));
    assert_eq!(
        upgraded["transport_socket"]["typed_config"]["common_tls_context"]["alpn_protocols"],
        json!(["istio-h2", "istio", "h2"])
    );
}

const HTTP_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";

/// Row 7c: pilot/cmd/pilot-agent/config/config.go@1.30.3: two workers unless configured.
#[test]
fn fidelity_proxy_concurrency_is_two_by_default_and_configurable() {
    let (_, plan) = skew_at("1.30.3", "");
    assert_eq!(plan.clusters[0].install.proxy_concurrency, 2);
    let (_, plan) = skew_edited(
        |text| text.replacen("    podCidr: 10.10", "    proxyConcurrency: 4\n    podCidr: 10.10", 1),
        EndpointWeights::Equal,
    );
    assert_eq!(plan.clusters[0].install.proxy_concurrency, 4);
    assert_eq!(plan.clusters[1].install.proxy_concurrency, 2);
}

fn gateway_route_at(version: &str) -> SniRoute {
    let (topology, plan) = skew_at(version, "");
    let gateway = gateway_spec(topology.cluster("cluster2").unwrap(), &plan.clusters[1]);
    let bar = outbound_sni(80, BAR);
    gateway.routes.into_iter().find(|route| route.sni == bar).unwrap()
}

/// Rows 2b and 2d: pilot/pkg/xds/endpoint_builder.go@1.14.6 (SE endpoints merged into the
/// gateway's SNI cluster, 1.1-1.18; gone with pilot/pkg/xds/mtls_checker.go@1.19.0
/// in 1.19), pilot/pkg/networking/core/v1alpha3/gateway.go@1.10.6 (a chain per service, twice
/// for a Service + same-host ServiceEntry, 1.10-1.21, istio/istio#44356) and
/// pilot/pkg/networking/core/gateway.go@1.22.8 (one service per host).
#[test]
fn fidelity_gateway_merges_and_duplicates_by_version() {
    let cluster1_gateway = SocketAddrV4::new(Ipv4Addr::new(100, 64, 0, 10), 15443);
    let cases = [
        ("1.4.6", true, false),
        ("1.5.10", true, false),
        ("1.9.9", true, true),
        ("1.10.6", true, true),
        ("1.18.7", true, true),
        ("1.19.0", false, true),
        ("1.21.6", false, true),
        ("1.22.8", false, false),
        ("1.30.3", false, false),
    ];
    for (version, merged, duplicated) in cases {
        let route = gateway_route_at(version);
        let expected: Vec<(SocketAddrV4, u32)> = if merged { vec![(cluster1_gateway, 1)] } else { vec![] };
        assert_eq!(route.merged_gateways, expected, "{version}");
        assert_eq!(route.duplicated_chain, duplicated, "{version}");
        let resources = crate::provider::local::envoy_config::gateway_resources(&GatewaySpec {
            node_id: "gw".into(),
            routes: vec![route],
            load_balancer: LoadBalancer::RoundRobin,
        });
        let chains = resources.listeners["resources"][0]["filter_chains"]
            .as_array()
            .unwrap()
            .len();
        assert_eq!(chains, if duplicated { 2 } else { 1 }, "{version}");
        let endpoints = resources.clusters["resources"][0]["load_assignment"].to_string();
        assert_eq!(endpoints.contains("100.64.0.10"), merged, "{version}: {endpoints}");
    }
}

/// The SNIs of `cluster`'s gateway listener, each once per filter chain, as Envoy receives them.
fn gateway_listener_snis(topology: &Topology, plan: &plan::Plan, cluster: usize) -> Vec<String> {
    let name = &plan.clusters[cluster].cluster;
    let spec = gateway_spec(topology.cluster(name).unwrap(), &plan.clusters[cluster]);
    let resources = crate::provider::local::envoy_config::gateway_resources(&spec);
    resources.listeners["resources"][0]["filter_chains"]
        .as_array()
        .unwrap()
        .iter()
        .map(|chain| {
            chain["filter_chain_match"]["server_names"][0]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}

/// Row 2e: with `federation.dnsProxying` on 1.20.8 neither gateway holds a Service and a
/// ServiceEntry for one host, so each host has one chain (the ServiceEntry's, for the service
/// the gateway's cluster does not run: `builtAutoPassthroughFilterChains` skips only
/// MeshExternal services, `pilot/pkg/networking/core/v1alpha3/gateway.go@1.10.6`); foo's
/// sidecar serves bar on the ServiceEntry's address, which its DNS proxy answers for the host
/// (`pkg/dns/server/name_table.go@1.20.8`), and without the proxy the host resolves to nothing.
#[test]
fn fidelity_dns_proxying_gives_each_gateway_one_chain_per_host() {
    let (topology, plan) = skew_edited(
        |text| {
            text.replace("replicas: { cluster1: 1, cluster2: 3 }", "replicas: { cluster2: 3 }")
                .replace("    podCidr:", "    istioVersion: \"1.20.8\"\n    podCidr:")
                .replace("  mtls: PERMISSIVE\n", "  mtls: PERMISSIVE\n  dnsProxying: true\n")
        },
        EndpointWeights::Equal,
    );
    let foo = outbound_sni(80, "foo.ns1.svc.cluster.local");
    let bar = outbound_sni(80, BAR);
    for cluster in [0, 1] {
        let mut snis = gateway_listener_snis(&topology, &plan, cluster);
        snis.sort();
        assert_eq!(snis, [bar.clone(), foo.clone()], "cluster{}", cluster + 1);
    }
    assert!(plan.warnings.is_empty(), "{:?}", plan.warnings);
    let entry_address = plan.clusters[0]
        .objects
        .iter()
        .find_map(|object| match object {
            Object::ServiceEntry(entry) => entry.spec.addresses.first().cloned(),
            _ => None,
        })
        .unwrap()
        .parse::<Ipv4Addr>()
        .unwrap();
    let cluster1 = topology.cluster("cluster1").unwrap();
    assert_eq!(
        resolved_service_address(cluster1, &plan.clusters[0], "bar.ns2"),
        Some(entry_address)
    );
    assert_eq!(
        resolved_service_address(cluster1, &plan.clusters[0], "foo.ns1"),
        cluster1.service_ips.get("foo.ns1").copied(),
        "a Service resolves to its cluster IP"
    );
    let sidecar = foo_sidecar_of((topology.clone(), plan.clone()));
    let outbound = sidecar.outbound.iter().find(|port| port.host == BAR).unwrap();
    assert_eq!(outbound.cluster_ip, entry_address);
    assert_eq!(
        bar_endpoints(&sidecar),
        [("100.64.0.11".to_owned(), 15443, 1)],
        "the ServiceEntry's gateway"
    );
    let mut without_proxy = plan.clusters[0].clone();
    without_proxy.install.dns_capture = false;
    assert_eq!(resolved_service_address(cluster1, &without_proxy, "bar.ns2"), None);
}

/// Row 2d on the seed's shape (every service with pods in one cluster only):
/// `builtAutoPassthroughFilterChains` (`pilot/pkg/networking/core/v1alpha3/gateway.go@1.10.6`)
/// emits a chain per service port of `push.Services(proxy)` without looking at endpoints, and
/// the aggregate registry (`pilot/pkg/serviceregistry/aggregate/controller.go@1.10.6`,
/// `Services()`) lists a ServiceEntry beside the Kubernetes Service of its host, so each
/// gateway gets foo's (cluster2) or bar's (cluster1) chain twice although it has no pods of
/// it: from 1.8.6 and 1.9.5 (istio/istio#32840) to 1.21.6; not at 1.8.5, 1.9.4 or 1.22.0
/// (`pilot/pkg/model/sidecar.go@1.22.0` keeps one service per hostname).
#[test]
fn fidelity_a_service_with_pods_in_one_cluster_duplicates_its_chain_in_the_other_gateway() {
    let foo = outbound_sni(80, "foo.ns1.svc.cluster.local");
    let bar = outbound_sni(80, BAR);
    let twice = |snis: &[String], sni: &str| snis.iter().filter(|chain| *chain == sni).count();
    for (version, duplicated) in [
        ("1.8.5", false),
        ("1.8.6", true),
        ("1.9.4", false),
        ("1.9.5", true),
        ("1.12.0", true),
        ("1.20.8", true),
        ("1.21.6", true),
        ("1.22.0", false),
        ("1.30.3", false),
    ] {
        let version_owned = version.to_owned();
        let (topology, plan) = skew_edited(
            move |text| {
                text.replace("replicas: { cluster1: 1, cluster2: 3 }", "replicas: { cluster2: 3 }")
                    .replace(
                        "    podCidr:",
                        &format!("    istioVersion: \"{version_owned}\"\n    podCidr:"),
                    )
            },
            EndpointWeights::Equal,
        );
        let expected = if duplicated { 2 } else { 1 };
        let cluster1 = gateway_listener_snis(&topology, &plan, 0);
        let cluster2 = gateway_listener_snis(&topology, &plan, 1);
        assert_eq!(twice(&cluster1, &bar), expected, "{version} cluster1: {cluster1:?}");
        assert_eq!(twice(&cluster1, &foo), 1, "{version} cluster1: {cluster1:?}");
        assert_eq!(twice(&cluster2, &foo), expected, "{version} cluster2: {cluster2:?}");
        assert_eq!(twice(&cluster2, &bar), 1, "{version} cluster2: {cluster2:?}");
        let warned: Vec<&str> = plan.warnings.iter().map(|warning| warning.cluster.as_str()).collect();
        let expected_warnings: &[&str] = if duplicated { &["cluster1", "cluster2"] } else { &[] };
        assert_eq!(warned, expected_warnings, "{version}: {:?}", plan.warnings);
    }
}

/// Row 5: pilot/pkg/networking/core/v1alpha3/loadbalancer/loadbalancer.go@1.14.6 and
/// pilot/pkg/xds/endpoint_builder.go@1.14.6: failover priorities only with outlierDetection.
#[test]
fn fidelity_locality_priorities_need_outlier_detection() {
    let priorities = |extra: &str| {
        let bar = bar_port_with(extra);
        (
            bar.endpoints
                .iter()
                .map(|endpoint| endpoint.priority)
                .collect::<Vec<_>>(),
            bar.outlier_detection.is_some(),
        )
    };
    assert_eq!(priorities(""), (vec![0, 0], false));
    assert_eq!(priorities("  outlierDetection: true\n"), (vec![0, 1], true));
}

/// The foo sidecar's bar port in skew.yaml with `extra` added under `federation:`.
fn bar_port_with(extra: &str) -> OutboundPort {
    let (topology, plan) = skew_edited(
        |text| {
            text.replace("  locality: false\n", "  locality: true\n")
                .replace("  mtls: PERMISSIVE\n", &format!("  mtls: PERMISSIVE\n{extra}"))
        },
        EndpointWeights::Equal,
    );
    let spec = foo_sidecar_of((topology, plan));
    spec.outbound.iter().find(|port| port.host == BAR).unwrap().clone()
}

/// pilot/pkg/networking/core/cluster_traffic_policy.go@1.30 `applyOutlierDetection`: each
/// DestinationRule field becomes its Envoy field; unset ones stay unset (Envoy's defaults).
#[test]
fn fidelity_outlier_detection_fields_reach_envoy_as_istio_writes_them() {
    let bar = bar_port_with(
        "  outlierDetection:\n    consecutiveGatewayErrors: 1\n    interval: 250ms\n    baseEjectionTime: 5s\n    maxEjectionPercent: 100\n",
    );
    assert_eq!(
        bar.outlier_detection,
        Some(OutlierDetection {
            consecutive_5xx: None,
            consecutive_gateway_failure: Some(1),
            interval_millis: Some(250),
            base_ejection_millis: Some(5_000),
            max_ejection_percent: Some(100),
            envoy_panic_threshold: false,
        })
    );
    let cluster = &super::super::envoy_config::sidecar_resources(&SidecarSpec {
        outbound: vec![bar],
        inbound: Vec::new(),
        ..foo_sidecar_of(skew_edited(|text| text.to_owned(), EndpointWeights::Equal))
    })
    .clusters["resources"][0];
    let detection = &cluster["outlier_detection"];
    assert_eq!(detection["consecutive_gateway_failure"], 1);
    assert_eq!(detection["enforcing_consecutive_gateway_failure"], 100);
    assert_eq!(detection["enforcing_success_rate"], 0);
    assert_eq!(detection["interval"], "0.250s");
    assert_eq!(detection["base_ejection_time"], "5s");
    assert_eq!(detection["max_ejection_percent"], 100);
    assert!(detection.get("consecutive_5xx").is_none(), "{detection}");
    assert_eq!(cluster["common_lb_config"]["healthy_panic_threshold"]["value"], 0);
}

/// pilot/pkg/networking/core/route/retry/retry.go@1.30: without a VirtualService a route
/// gets Istio's default retries; `retries` overrides them (status codes split out of
/// `retryOn`), `attempts: 0` removes them; `timeout` becomes the route timeout.
#[test]
fn fidelity_retries_and_timeout_come_from_the_virtual_service_over_istios_default() {
    let default = bar_port_with("");
    assert_eq!(default.retry_policy, Some(RetryPolicy::istio_default()));
    assert_eq!(default.timeout_millis, None);
    let set = bar_port_with(
        "  retries: { attempts: 4, perTryTimeout: 500ms, retryOn: \"gateway-error,503\" }\n  timeout: 3s\n",
    );
    assert_eq!(
        set.retry_policy,
        Some(RetryPolicy {
            num_retries: 4,
            retry_on: vec!["gateway-error".into(), "retriable-status-codes".into()],
            retriable_status_codes: vec![503],
            per_try_timeout_millis: Some(500),
        })
    );
    assert_eq!(set.timeout_millis, Some(3_000));
    let off = bar_port_with("  retries: { attempts: 0 }\n");
    assert_eq!(off.retry_policy, None);
    let route =
        &super::super::envoy_config::sidecar_resources(&SidecarSpec {
            outbound: vec![set],
            inbound: Vec::new(),
            ..foo_sidecar_of(skew_edited(|text| text.to_owned(), EndpointWeights::Equal))
        })
        .listeners["resources"][0]["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]["virtual_hosts"]
            [0]["routes"][0]["route"]
            .clone();
    assert_eq!(route["timeout"], "3s");
    assert_eq!(route["retry_policy"]["num_retries"], 4);
    assert_eq!(
        route["retry_policy"]["retry_on"],
        "gateway-error,retriable-status-codes"
    );
    assert_eq!(route["retry_policy"]["per_try_timeout"], "0.500s");
    assert_eq!(
        route["retry_policy"]["retry_host_predicate"][0]["name"],
        "envoy.retry_host_predicates.previous_hosts"
    );
}

/// loadbalancer.go `applyLocalityFailover`: a failover rule from the caller's region puts its
/// `to` region before every other remote region.
#[test]
fn a_failover_rule_puts_its_region_before_the_other_remote_regions() {
    let local = Locality {
        region: "r1".into(),
        zone: "z1".into(),
    };
    let at = |region: &str| {
        Some(Locality {
            region: region.into(),
            zone: "z9".into(),
        })
    };
    let mut endpoints: Vec<LbEndpoint> = ["r2", "r3", "r1"]
        .iter()
        .map(|region| LbEndpoint {
            address: Ipv4Addr::new(10, 0, 0, 1),
            port: 15443,
            weight: 1,
            locality: at(region),
            priority: 0,
            istio_mtls: false,
        })
        .collect();
    let rule = |to: &str| LocalityFailover {
        from: "r1".into(),
        to: to.into(),
    };
    apply_locality_failover(&local, &mut endpoints, &[]);
    assert_eq!(endpoints.iter().map(|e| e.priority).collect::<Vec<_>>(), [1, 1, 0]);
    apply_locality_failover(&local, &mut endpoints, &[rule("r3")]);
    assert_eq!(endpoints.iter().map(|e| e.priority).collect::<Vec<_>>(), [2, 1, 0]);
    apply_locality_failover(&local, &mut endpoints, &[rule("r2")]);
    assert_eq!(endpoints.iter().map(|e| e.priority).collect::<Vec<_>>(), [1, 2, 0]);
}

#[test]
fn locality_priorities_are_compacted_zone_region_other() {
    let local = Locality {
        region: "r1".into(),
        zone: "z1".into(),
    };
    let at = |region: &str, zone: &str| LbEndpoint {
        address: Ipv4Addr::LOCALHOST,
        port: 1,
        weight: 1,
        locality: Some(Locality {
            region: region.into(),
            zone: zone.into(),
        }),
        priority: 9,
        istio_mtls: false,
    };
    let mut endpoints = vec![at("r1", "z2"), at("r2", "z1"), at("r1", "z2")];
    apply_locality_failover(&local, &mut endpoints, &[]);
    let found: Vec<u32> = endpoints.iter().map(|endpoint| endpoint.priority).collect();
    assert_eq!(found, [0, 1, 0], "no local pod: the same region comes first");
}

/// pilot/pkg/model/push_context.go@1.30.3 (MostSpecificHostMatch): an exact host beats `*.local`.
#[test]
fn the_most_specific_destination_rule_applies_alone() {
    let (_, mut plan) = skew_at("1.30.3", "");
    let mut exact = plan.clusters[0]
        .objects
        .iter()
        .find_map(|object| match object {
            Object::DestinationRule(rule) => Some(rule.clone()),
            _ => None,
        })
        .unwrap();
    exact.spec.host = BAR.into();
    exact.spec.traffic_policy.tls = None;
    plan.clusters[0].objects.push(Object::DestinationRule(exact));
    assert!(destination_rule_for(&plan.clusters[0], BAR).unwrap().tls.is_none());
    assert!(
        destination_rule_for(&plan.clusters[0], "foo.ns1.svc.cluster.local")
            .unwrap()
            .tls
            .is_some()
    );
    assert!(destination_rule_for(&plan.clusters[0], "example.com").is_none());
}

/// The connection policy is a DestinationRule connectionPool in the phase's plan.
#[test]
fn a_new_connection_per_request_phase_plans_max_requests_per_connection_one() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/skew.yaml");
    let scenario = crate::scenario::load(&path).unwrap();
    let topology = topology(&scenario).unwrap();
    let inventory = topology.inventory(&scenario);
    let per_request = &scenario.phases[0];
    assert_eq!(
        per_request.connections,
        crate::scenario::ConnectionPolicy::NewConnectionPerRequest
    );
    let plan = plan::plan_phase(&scenario, &inventory, per_request);
    let spec = foo_sidecar_of((topology.clone(), plan));
    let bar = spec.outbound.iter().find(|port| port.host == BAR).unwrap();
    assert_eq!(bar.max_requests_per_connection, Some(1));
    let pooled = scenario
        .phases
        .iter()
        .find(|phase| phase.connections == crate::scenario::ConnectionPolicy::Pooled)
        .unwrap();
    let spec = foo_sidecar_of((topology, plan::plan_phase(&scenario, &inventory, pooled)));
    let bar = spec.outbound.iter().find(|port| port.host == BAR).unwrap();
    assert_eq!(bar.max_requests_per_connection, None);
}
