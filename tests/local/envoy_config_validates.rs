//! Envoy itself accepts the configuration meshfed generates: `envoy --mode validate` on a bootstrap
//! holding the sidecar and gateway listeners and clusters as static resources.
//!
//! Skipped (with a message) when no Envoy binary is found; fails instead when `CI=true`.

use crate::support::skip;
use crate::support::temp_dir::temp_dir;

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::Command;

use meshfed::provider::local::envoy_binary::find_envoy;
use meshfed::provider::local::envoy_config::{
    CertPaths, CircuitBreaker, GATEWAY_PORT, GatewayFailover, GatewaySpec, InboundMtls, InboundPort, LbEndpoint,
    Locality, OutboundPort, OutlierDetection, Protocol, RetryPolicy, SidecarSpec, SniRoute, UpstreamTls, XdsResources,
    bootstrap, gateway_resources, outbound_sni, root_ca_secret, sds_secret, sidecar_resources, static_bootstrap,
};
use meshfed::scenario::LoadBalancer;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SanType};

const BAR: &str = "bar.ns2.svc.cluster.local";

fn envoy_or_skip() -> Option<PathBuf> {
    match find_envoy() {
        Ok(envoy) => Some(envoy),
        Err(error) => {
            skip::skip(&format!("envoy config validation needs an envoy binary: {error}"));
            None
        }
    }
}

/// A root CA and a workload certificate with a SPIFFE URI SAN, in Istio's file layout.
fn write_workload_certs(dir: &Path) -> CertPaths {
    std::fs::create_dir_all(dir).unwrap();
    let root_key = KeyPair::generate().unwrap();
    let mut root_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    root_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let root = root_params.self_signed(&root_key).unwrap();
    let issuer = Issuer::new(root_params, root_key);
    let leaf_key = KeyPair::generate().unwrap();
    let mut leaf_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    leaf_params.subject_alt_names = vec![SanType::URI("spiffe://cluster.local/ns/ns1/sa/foo".try_into().unwrap())];
    let leaf = leaf_params.signed_by(&leaf_key, &issuer).unwrap();
    let certs = CertPaths::in_dir(dir);
    std::fs::write(&certs.cert_chain, leaf.pem() + &root.pem()).unwrap();
    std::fs::write(&certs.key, leaf_key.serialize_pem()).unwrap();
    std::fs::write(&certs.root, root.pem()).unwrap();
    certs
}

fn sidecar(certs: CertPaths) -> SidecarSpec {
    let endpoint = |address: [u8; 4], port, weight, zone: Option<&str>, priority| LbEndpoint {
        address: Ipv4Addr::from(address),
        port,
        weight,
        locality: zone.map(|zone| Locality {
            region: "region-a".into(),
            zone: zone.into(),
        }),
        priority,
        istio_mtls: port != GATEWAY_PORT,
    };
    let outbound = |port, protocol, max_requests_per_connection, tls, http2| OutboundPort {
        host: BAR.into(),
        cluster_ip: Ipv4Addr::new(10, 96, 0, 10),
        port,
        protocol,
        server_identities: vec!["spiffe://cluster.local/ns/ns2/sa/bar".into()],
        endpoints: vec![
            endpoint([10, 10, 0, 7], port, 1, Some("zone-1"), 0),
            endpoint([10, 20, 0, 2], GATEWAY_PORT, 2, Some("zone-2"), 0),
            endpoint([10, 30, 0, 2], GATEWAY_PORT, 1, None, 1),
        ],
        tls,
        alpn: vec!["istio-http/1.1".into(), "istio".into(), "http/1.1".into()],
        http2,
        load_balancer: LoadBalancer::LeastRequest,
        max_requests_per_connection,
        // Port 80 carries every resilience setting Istio can write, so Envoy validates each.
        outlier_detection: (port == 80).then_some(OutlierDetection {
            consecutive_5xx: Some(0),
            consecutive_gateway_failure: Some(3),
            interval_millis: Some(250),
            base_ejection_millis: Some(30_000),
            max_ejection_percent: Some(100),
            envoy_panic_threshold: false,
        }),
        retry_policy: (port == 80).then(|| RetryPolicy {
            num_retries: 3,
            retry_on: vec!["gateway-error".into(), "retriable-status-codes".into()],
            retriable_status_codes: vec![503, 504],
            per_try_timeout_millis: Some(1_500),
        }),
        timeout_millis: (port == 80).then_some(5_000),
        l4_only: false,
        // Istio's circuit breaker (1.4+) and locality weights (1.12-1.23 by default) on port 80.
        circuit_breaker: CircuitBreaker {
            max_retries: u32::MAX,
            max_requests: (port == 80).then_some(u32::MAX),
        },
        locality_weighted: port == 80,
    };
    let permissive = InboundMtls::Permissive {
        istio_alpn: vec!["istio-http/1.1".into(), "istio".into()],
    };
    SidecarSpec {
        node_id: "foo-0.cluster1".into(),
        pod: "foo-0".into(),
        cluster: "cluster1".into(),
        pod_ip: Ipv4Addr::new(10, 10, 0, 5),
        certs,
        inbound: vec![
            InboundPort {
                port: 80,
                protocol: Protocol::Http,
                mtls: permissive.clone(),
            },
            InboundPort {
                port: 9090,
                protocol: Protocol::Tcp,
                mtls: permissive,
            },
            InboundPort {
                port: 8080,
                protocol: Protocol::Http2,
                mtls: InboundMtls::Strict,
            },
            InboundPort {
                port: 7070,
                protocol: Protocol::Tcp,
                mtls: InboundMtls::Disabled,
            },
        ],
        outbound: vec![
            outbound(80, Protocol::Http, Some(1), UpstreamTls::IstioMutual, false),
            outbound(8080, Protocol::Http2, None, UpstreamTls::Auto, true),
            outbound(9090, Protocol::Tcp, None, UpstreamTls::Auto, false),
            outbound(7070, Protocol::Tcp, None, UpstreamTls::Plaintext, false),
        ],
    }
}

fn gateway() -> GatewaySpec {
    GatewaySpec {
        node_id: "gateway.cluster2".into(),
        routes: [80, 9090]
            .into_iter()
            .map(|port| SniRoute {
                sni: outbound_sni(port, BAR),
                endpoints: vec![SocketAddrV4::new(Ipv4Addr::new(10, 20, 0, 7), port)],
                merged_gateways: vec![(SocketAddrV4::new(Ipv4Addr::new(100, 64, 0, 12), GATEWAY_PORT), 3)],
                duplicated_chain: false,
                // Port 80's cluster carries the gateway's locality failover, so Envoy validates it.
                failover: (port == 80).then(|| GatewayFailover {
                    priorities: vec![1],
                    merged_gateways_priority: 2,
                    outlier_detection: OutlierDetection {
                        consecutive_gateway_failure: Some(1),
                        ..OutlierDetection::default()
                    },
                }),
            })
            .collect(),
        load_balancer: LoadBalancer::LeastRequest,
    }
}

/// Runs `envoy --mode validate` and returns (success, combined output).
fn validate(envoy: &Path, dir: &Path, name: &str, resources: &XdsResources) -> (bool, String) {
    let certs = CertPaths::in_dir(&dir.join("certs"));
    let secrets: Vec<serde_json::Value> = std::fs::read_to_string(&certs.cert_chain)
        .and_then(|chain| Ok((chain, std::fs::read_to_string(&certs.key)?)))
        .and_then(|(chain, key)| Ok((chain, key, std::fs::read_to_string(&certs.root)?)))
        .map(|(chain, key, root)| vec![sds_secret(&certs.secret, &chain, &key), root_ca_secret(&root)])
        .unwrap_or_default();
    let bootstrap = static_bootstrap(name, &dir.join(format!("{name}.sock")), resources, &secrets);
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&path, serde_json::to_vec_pretty(&bootstrap).unwrap()).unwrap();
    let output = Command::new(envoy)
        .args(["--mode", "validate", "--disable-hot-restart", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text)
}

#[test]
fn envoy_accepts_generated_sidecar_and_gateway_config() {
    let Some(envoy) = envoy_or_skip() else { return };
    let scratch = temp_dir("envoy-validate-accepts");
    let dir = scratch.path();
    let certs = write_workload_certs(&dir.join("certs"));
    for (name, resources) in [
        ("sidecar", sidecar_resources(&sidecar(certs))),
        ("gateway", gateway_resources(&gateway())),
    ] {
        let (valid, output) = validate(&envoy, dir, name, &resources);
        assert!(valid, "envoy rejected the generated {name} config:\n{output}");
        assert!(output.contains("OK"), "{output}");
    }
    let empty = gateway_resources(&GatewaySpec {
        node_id: "gateway.empty".into(),
        routes: vec![],
        load_balancer: LoadBalancer::RoundRobin,
    });
    let (valid, output) = validate(&envoy, dir, "empty-gateway", &empty);
    assert!(valid, "envoy rejected a gateway without routes:\n{output}");
}

/// The control that shows the validation above can fail: Envoy needs the secrets (`default`,
/// `ROOTCA`) the TLS contexts name, here static ones made from the certificate files. (Routes to missing clusters pass validation by design: the listeners are
/// static and CDS delivers the clusters later, so `validate_clusters` is off; the unit tests check
/// that every cluster a listener names exists.)
#[test]
fn envoy_validation_catches_missing_certificate_files() {
    let Some(envoy) = envoy_or_skip() else { return };
    let scratch = temp_dir("envoy-validate-rejects");
    let dir = scratch.path();
    let certs = write_workload_certs(&dir.join("certs"));
    let resources = sidecar_resources(&sidecar(certs));
    std::fs::remove_dir_all(dir.join("certs")).unwrap();
    let (valid, output) = validate(&envoy, dir, "broken-sidecar", &resources);
    assert!(
        !valid,
        "envoy accepted TLS contexts whose certificate files are missing:\n{output}"
    );
}

/// Istio 1.8.6, 1.9.5-1.21 emit the same AUTO_PASSTHROUGH filter chain twice for a host that is both a
/// Service and a ServiceEntry (istio/istio#44356; `pilot/pkg/networking/core/v1alpha3/gateway.go@1.10.6`),
/// and Envoy refuses such a listener: the emulation relies on Envoy itself to reject it.
#[test]
fn envoy_rejects_a_gateway_listener_with_duplicated_passthrough_chains() {
    let Some(envoy) = envoy_or_skip() else { return };
    let scratch = temp_dir("envoy-validate-duplicated");
    let dir = scratch.path();
    let mut spec = gateway();
    spec.routes[0].duplicated_chain = true;
    let (valid, output) = validate(&envoy, dir, "duplicated-gateway", &gateway_resources(&spec));
    assert!(!valid, "envoy accepted duplicated filter chains:\n{output}");
    assert!(output.contains("the same matching rules"), "{output}");
}

/// Runs a real Envoy against meshfed's ADS server with `resources` (listeners only when dynamic)
/// and the identity secret from `certs`; returns what `await_acked` says of the clusters,
/// listeners (dynamic only) and secrets, then stops the Envoy.
fn over_ads(
    envoy: &Path,
    dir: &Path,
    name: &str,
    resources: &XdsResources,
    certs: Option<&CertPaths>,
) -> Vec<(&'static str, Result<(), String>)> {
    use meshfed::provider::local::ads::{self, AdsServer};
    use meshfed::provider::local::envoy_binary::{envoy_args, write_bootstrap};
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let _entered = runtime.enter();
    let server = AdsServer::start(&dir.join(format!("{name}-ads.sock"))).unwrap();
    let encode = |response: &serde_json::Value| -> Vec<(String, Vec<u8>)> {
        response["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|resource| ads::encode_resource(resource).unwrap())
            .collect()
    };
    let version = |response: &serde_json::Value| response["version_info"].as_str().unwrap().to_owned();
    server.set(
        name,
        ads::CLUSTER_TYPE,
        &version(&resources.clusters),
        encode(&resources.clusters),
    );
    let mut expected = vec![("clusters", ads::CLUSTER_TYPE, version(&resources.clusters))];
    if resources.listeners_dynamic {
        server.set(
            name,
            ads::LISTENER_TYPE,
            &version(&resources.listeners),
            encode(&resources.listeners),
        );
        expected.push(("listeners", ads::LISTENER_TYPE, version(&resources.listeners)));
    }
    if let Some(certs) = certs {
        let secret = sds_secret(
            &certs.secret,
            &std::fs::read_to_string(&certs.cert_chain).unwrap(),
            &std::fs::read_to_string(&certs.key).unwrap(),
        );
        let root = root_ca_secret(&std::fs::read_to_string(&certs.root).unwrap());
        let both = version(&secret) + &version(&root);
        server.set(name, ads::SECRET_TYPE, &both, [encode(&secret), encode(&root)].concat());
        expected.push(("secrets", ads::SECRET_TYPE, both));
    }
    let bootstrap_path = dir.join(format!("{name}-bootstrap.json"));
    let bootstrap = bootstrap(
        name,
        server.socket(),
        &dir.join(format!("{name}-admin.sock")),
        resources,
    );
    write_bootstrap(&bootstrap_path, &bootstrap).unwrap();
    let mut child = Command::new(envoy)
        .args(envoy_args(&bootstrap_path, "warning", 1))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let answers = expected
        .into_iter()
        .map(|(what, type_url, version)| {
            let answer = runtime
                .block_on(server.await_acked(name, type_url, &version, std::time::Duration::from_secs(20)))
                .map_err(|error| error.to_string());
            (what, answer)
        })
        .collect();
    let _ = child.kill();
    let _ = child.wait();
    answers
}

/// Every resource meshfed generates goes through the ADS path (JSON transcoded to protobuf with
/// xds-api's descriptors and meshfed's own for the extensions xds-api lacks) and a real Envoy
/// acknowledges it: a wrong type or field would be a NACK naming it.
#[test]
fn a_real_envoy_acknowledges_every_generated_resource_over_ads() {
    let Some(envoy) = envoy_or_skip() else { return };
    let scratch = temp_dir("envoy-ads");
    let dir = scratch.path().to_path_buf();
    let certs = write_workload_certs(&dir.join("certs"));
    let mut sidecar = sidecar_resources(&sidecar(certs.clone()));
    // Its listeners bind pod addresses this host does not have; the clusters and the secret
    // are what travel over ADS.
    sidecar.listeners["resources"] = serde_json::json!([]);
    for (what, answer) in over_ads(&envoy, &dir, "sidecar", &sidecar, Some(&certs)) {
        assert_eq!(answer, Ok(()), "the sidecar's {what}");
    }
    // A gateway's listener goes over ADS too (it binds 0.0.0.0:15443 of this host while it runs).
    for (what, answer) in over_ads(&envoy, &dir, "gateway", &gateway_resources(&gateway()), None) {
        assert_eq!(answer, Ok(()), "the gateway's {what}");
    }
}

/// A listener Envoy refuses comes back as a NACK with Envoy's reason, which meshfed reports
/// (a gateway's) or fails the run with (a cluster).
#[test]
fn a_refused_listener_over_ads_is_a_nack_with_envoys_reason() {
    let Some(envoy) = envoy_or_skip() else { return };
    let scratch = temp_dir("envoy-nack");
    let dir = scratch.path().to_path_buf();
    let mut spec = gateway();
    spec.routes[0].duplicated_chain = true;
    let answers = over_ads(&envoy, &dir, "duplicated", &gateway_resources(&spec), None);
    assert_eq!(answers[0], ("clusters", Ok(())), "{answers:?}");
    let (what, listeners) = &answers[1];
    assert_eq!(*what, "listeners");
    let reason = listeners.clone().unwrap_err();
    assert!(reason.contains("rejected version"), "{reason}");
    assert!(reason.contains("the same matching rules"), "{reason}");
}
