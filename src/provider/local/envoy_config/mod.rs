//! Envoy configuration for the `local` provider, pure: sidecar and gateway specs in, Envoy v3 JSON out.
//!
//! The shapes reproduce Istio's data plane for "gateway connectivity":
//! - a client sidecar binds `<service cluster IP>:<port>` and originates mTLS (SNI
//!   `outbound_.P_._.host`, ALPN `istio-peer-exchange`, `istio`, server SPIFFE id verified) to
//!   cluster `outbound|P||host`, whose endpoints are local pods and remote gateways (`:15443`);
//! - a server sidecar binds `<pod IP>:<port>`, requires a client certificate from the mesh root and
//!   hands the request to the app on `127.0.0.1:<port>` with the caller's identity attached
//!   (`x-forwarded-client-cert` for HTTP, a PROXY protocol v2 header for TCP, see
//!   [`PEER_IDENTITY_TLV_TYPE`]);
//! - a gateway binds `0.0.0.0:15443` and routes on SNI without terminating TLS (AUTO_PASSTHROUGH).
//!
//! Nothing here touches the file system or a process: [`super::envoy_binary`] writes and runs it.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The gateway port every cluster's SNI gateway listens on (Istio's `tls` port, AUTO_PASSTHROUGH).
pub use crate::inventory::GATEWAY_PORT;

/// PROXY protocol v2 TLV type that carries the caller's SPIFFE id to TCP apps. 0xE0 is the first
/// type the PROXY protocol spec reserves for custom use (`PP2_TYPE_MIN_CUSTOM`).
///
/// What a TCP app on `127.0.0.1:<port>` receives first on every accepted connection (measured with
/// Envoy 1.40.0), then the caller's bytes unchanged:
/// - the 12-byte v2 signature `\r\n\r\n\0\r\nQUIT\n`, then `0x21` (v2, PROXY), `0x11` (TCP over
///   IPv4), a big-endian u16 length of the rest;
/// - source address and port = the connection that delivered the call (the client sidecar's
///   `podIP:port`, or through a gateway the gateway's `IP:port`), destination = `podIP:port`;
/// - one TLV: type 0xE0, big-endian u16 length, value = the client certificate's URI SAN in UTF-8,
///   e.g. `spiffe://cluster.local/ns/ns1/sa/foo` (several URI SANs are joined with `,`; a
///   certificate without one gives `-`, Envoy's empty-value placeholder).
///
/// The app is connected to only after the client's TLS handshake succeeded, so a rejected client
/// never reaches it.
pub const PEER_IDENTITY_TLV_TYPE: u8 = 0xE0;

/// Request header the server sidecar sets (overwriting anything the caller sent) to the address of
/// the connection that delivered the request, e.g. `10.10.0.7:41234`: the client sidecar or, through
/// a gateway, the gateway's side of its connection.
pub const DOWNSTREAM_PEER_HEADER: &str = "x-meshfed-downstream-peer";

/// ALPN the server sidecar accepts on HTTP ports: it picks `h2` when the client offers it.
const INBOUND_HTTP_ALPN: [&str; 2] = ["h2", "http/1.1"];

/// Timeout for establishing an upstream connection (TCP + TLS handshake): Istio's mesh
/// `connectTimeout`, 10 s (`pkg/config/mesh/mesh.go@1.30.3`; the 1.1 install's mesh config,
/// `install/kubernetes/helm/istio/templates/configmap.yaml@1.1.0`, already set 10 s).
const CONNECT_TIMEOUT: &str = "10s";

const LISTENER_TYPE: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
const CLUSTER_TYPE: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
const HCM_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
const TCP_PROXY_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy";
const ROUTER_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router";
const TLS_INSPECTOR_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector";
const UPSTREAM_TLS_TYPE: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext";
const DOWNSTREAM_TLS_TYPE: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext";
const PROXY_PROTOCOL_TYPE: &str =
    "type.googleapis.com/envoy.extensions.transport_sockets.proxy_protocol.v3.ProxyProtocolUpstreamTransport";
const RAW_BUFFER_TYPE: &str = "type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer";
const HTTP_PROTOCOL_OPTIONS_KEY: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";
const HTTP_PROTOCOL_OPTIONS_TYPE: &str = "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions";

/// Port protocols are the scenario's own.
pub use crate::scenario::Protocol;

mod bootstrap;
mod gateway;
mod sidecar;
pub mod stats;

pub use bootstrap::{ADS_CLUSTER, bootstrap, static_bootstrap};
pub use gateway::gateway_resources;
pub use sidecar::sidecar_resources;

/// Workload certificate files in Istio 1.1's layout (`cert-chain.pem`, `key.pem`,
/// `root-cert.pem`). meshfed reads them and pushes them to the Envoy as SDS secrets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertPaths {
    /// Leaf certificate (with the SPIFFE URI SAN) followed by its intermediate CA.
    pub cert_chain: PathBuf,
    /// The leaf's private key (mode 0600).
    pub key: PathBuf,
    /// The mesh root certificate peers are verified against.
    pub root: PathBuf,
    /// The SDS secret Envoy takes the certificate and key of as its identity ([`sds_secret`] of
    /// the chain and key, pushed by meshfed's ADS server; pushed again when reissued).
    pub secret: String,
}

impl CertPaths {
    /// The files Istio 1.1 mounts, inside `dir`: `cert-chain.pem`, `key.pem`, `root-cert.pem`,
    /// delivered as the SDS secret `default` (Istio's name for the workload identity).
    pub fn in_dir(dir: &Path) -> CertPaths {
        CertPaths::named(dir, IDENTITY_SECRET_NAME)
    }

    /// The same files, delivered as the SDS secret `secret` (a second identity of one proxy).
    pub fn named(dir: &Path, secret: &str) -> CertPaths {
        CertPaths {
            cert_chain: dir.join("cert-chain.pem"),
            key: dir.join("key.pem"),
            root: dir.join("root-cert.pem"),
            secret: secret.to_owned(),
        }
    }
}

/// A port the pod's app serves on `127.0.0.1:<port>`; the sidecar accepts callers for it on
/// `<pod IP>:<port>`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboundPort {
    /// Service port, app port and inbound listener port (all the same number).
    pub port: u16,
    /// How the port is proxied.
    pub protocol: Protocol,
    /// What callers must present.
    pub mtls: InboundMtls,
}

/// What an inbound listener accepts (PeerAuthentication / MeshPolicy mode).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum InboundMtls {
    /// Istio mTLS only: a client certificate from the mesh root is required.
    Strict,
    /// `tls_inspector` chains as Istio builds them: TLS offering one of `istio_alpn` is mTLS, plain
    /// text is accepted as plain text (`pilot/pkg/networking/core/v1alpha3/filterchain_options.go`).
    Permissive {
        /// ALPN values that select the mTLS chain.
        istio_alpn: Vec<String>,
    },
    /// No sidecar: the app's port, plain text only.
    Disabled,
}

/// How a client sidecar secures connections to a service port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum UpstreamTls {
    /// A DestinationRule with `tls.mode: ISTIO_MUTUAL`: mTLS to every endpoint.
    IstioMutual,
    /// Auto-mTLS: mTLS to endpoints labelled `tlsMode: istio`, plain text to the others.
    Auto,
    /// Plain text (no DestinationRule and no auto-mTLS, or no sidecar).
    Plaintext,
}

/// Where an endpoint runs, as Envoy's locality (Kubernetes `topology.kubernetes.io/region`/`zone`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Locality {
    /// Region, e.g. `us-east1`.
    pub region: String,
    /// Zone, e.g. `us-east1-b`.
    pub zone: String,
}

/// One endpoint of an outbound service: a local pod (`podIP:port`) or a remote cluster's gateway
/// (`gatewayIP:15443`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LbEndpoint {
    /// IPv4 address to connect to.
    pub address: Ipv4Addr,
    /// Port to connect to.
    pub port: u16,
    /// Load-balancing weight relative to the other endpoints of the same priority. 0 means "send
    /// nothing": the endpoint is left out (Envoy rejects weight 0).
    pub weight: u32,
    /// Locality reported to Envoy; `None` leaves it empty (what the seed's ServiceEntry gives).
    pub locality: Option<Locality>,
    /// Envoy priority: 0 is used first; higher priorities get traffic only when lower ones are
    /// unhealthy (failover).
    pub priority: u32,
    /// The endpoint carries Istio's `tlsMode: istio` label (a sidecar-injected pod), which
    /// auto-mTLS matches on.
    pub istio_mtls: bool,
}

/// A service port the pod's app calls at `<cluster IP>:<port>`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboundPort {
    /// Service host, e.g. `bar.ns2.svc.cluster.local`.
    pub host: String,
    /// The service's cluster IP (inside the pod's locally routed service CIDR).
    pub cluster_ip: Ipv4Addr,
    /// Service port.
    pub port: u16,
    /// How the port is proxied.
    pub protocol: Protocol,
    /// SPIFFE ids the server may present (exact URI SAN match), e.g.
    /// `spiffe://cluster.local/ns/ns2/sa/bar`. Empty accepts any certificate from the mesh root.
    pub server_identities: Vec<String>,
    /// Endpoints; empty makes every call fail (HTTP 503 "no healthy upstream", TCP reset).
    pub endpoints: Vec<LbEndpoint>,
    /// mTLS origination.
    pub tls: UpstreamTls,
    /// ALPN offered on mTLS (the version's, see [`crate::plan::versions::IstioBehaviour::client_alpn`]).
    pub alpn: Vec<String>,
    /// HTTP/2 to the upstream sidecar (an `http2` port or `h2UpgradePolicy: UPGRADE`); HTTP/1.1
    /// otherwise.
    pub http2: bool,
    /// Load-balancing policy.
    pub load_balancer: crate::scenario::LoadBalancer,
    /// Requests per upstream connection (HTTP only): `Some(1)` opens a new mTLS connection per
    /// request, so a passthrough gateway balances each request. `None` pools connections.
    pub max_requests_per_connection: Option<u32>,
    /// Envoy outlier detection (the DestinationRule's `outlierDetection`), with Istio's panic
    /// threshold 0.
    pub outlier_detection: Option<OutlierDetection>,
    /// The route's retry policy (HTTP only): Istio's default, the VirtualService's, or none.
    pub retry_policy: Option<RetryPolicy>,
    /// The route's whole-request timeout in milliseconds (the VirtualService's `timeout`); `None`
    /// writes Istio's `0s` (no timeout), not Envoy's 15 s default.
    pub timeout_millis: Option<u64>,
    /// Proxy bytes only (a pod without a sidecar: kube-proxy), whatever the port's protocol.
    pub l4_only: bool,
    /// The cluster's circuit-breaker thresholds as istiod writes them.
    pub circuit_breaker: CircuitBreaker,
    /// Envoy's `locality_weighted_lb_config`: pick a locality by its weight (the sum of its
    /// endpoints' weights) before picking an endpoint in it.
    pub locality_weighted: bool,
}

/// The default circuit-breaker thresholds istiod writes on a cluster (see
/// [`crate::plan::versions::IstioBehaviour::circuit_breaker_max_retries`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CircuitBreaker {
    /// `max_retries` (Envoy's own default is 3).
    pub max_retries: u32,
    /// `max_requests`, `max_connections` and `max_pending_requests`; `None` keeps Envoy's 1024.
    pub max_requests: Option<u32>,
}

impl CircuitBreaker {
    /// Envoy's own thresholds (what a plain kube-proxy path has: no Istio cluster).
    pub const ENVOY_DEFAULT: CircuitBreaker = CircuitBreaker {
        max_retries: 3,
        max_requests: None,
    };
}

/// Envoy `outlier_detection` as Istio writes it from a DestinationRule: success-rate ejection
/// off; unset fields keep Envoy's defaults (5 consecutive 5xx, 10 s, 30 s, 10 %).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutlierDetection {
    /// `consecutive_5xx` (enforced at 100 % when above 0, off at 0).
    pub consecutive_5xx: Option<u32>,
    /// `consecutive_gateway_failure` (enforced at 100 % when above 0, off at 0).
    pub consecutive_gateway_failure: Option<u32>,
    /// `interval` in milliseconds.
    pub interval_millis: Option<u64>,
    /// `base_ejection_time` in milliseconds.
    pub base_ejection_millis: Option<u64>,
    /// `max_ejection_percent`.
    pub max_ejection_percent: Option<u32>,
    /// Leave Envoy's 50 % healthy panic threshold (Istio 1.1-1.2) instead of Istio's
    /// `minHealthPercent` 0.
    pub envoy_panic_threshold: bool,
}

/// An Envoy route `retry_policy` as Istio writes it (`pilot/pkg/networking/core/route/retry/retry.go`):
/// retries prefer hosts not tried yet (`previous_hosts`, up to 5 host selections).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// `num_retries`.
    pub num_retries: u32,
    /// `retry_on` conditions.
    pub retry_on: Vec<String>,
    /// `retriable_status_codes`.
    pub retriable_status_codes: Vec<u16>,
    /// `per_try_timeout` in milliseconds.
    pub per_try_timeout_millis: Option<u64>,
}

impl RetryPolicy {
    /// Istio's retry policy for a route without a VirtualService `retries`: 2 retries on
    /// connect failures, refused streams, gRPC unavailable/cancelled and HTTP 503.
    pub fn istio_default() -> Self {
        RetryPolicy {
            num_retries: 2,
            retry_on: [
                "connect-failure",
                "refused-stream",
                "unavailable",
                "cancelled",
                "retriable-status-codes",
            ]
            .map(str::to_owned)
            .to_vec(),
            retriable_status_codes: vec![503],
            per_try_timeout_millis: None,
        }
    }
}

/// Everything one pod's sidecar needs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SidecarSpec {
    /// Envoy node id (unique per Envoy; appears in its admin output).
    pub node_id: String,
    /// Pod name (for people reading config dumps).
    pub pod: String,
    /// Cluster name the pod belongs to (for people reading config dumps).
    pub cluster: String,
    /// The pod's address on its `eth0`.
    pub pod_ip: Ipv4Addr,
    /// The workload certificate files.
    pub certs: CertPaths,
    /// Ports the pod serves.
    pub inbound: Vec<InboundPort>,
    /// Service ports the pod calls.
    pub outbound: Vec<OutboundPort>,
}

/// One SNI the gateway passes through, to the local pods behind it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SniRoute {
    /// The SNI, e.g. `outbound_.80_._.bar.ns2.svc.cluster.local` (see [`outbound_sni`]).
    pub sni: String,
    /// Local pods' `podIP:port`; one choice per TCP connection.
    pub endpoints: Vec<SocketAddrV4>,
    /// Other clusters' gateways (`address:15443`, weight) merged in from a same-host ServiceEntry
    /// (Istio 1.1-1.18, docs/fidelity.md row 2b): the ClientHello goes on unchanged, so the next
    /// gateway chooses again.
    pub merged_gateways: Vec<(SocketAddrV4, u32)>,
    /// The filter chain is emitted twice (Istio 1.8.6/1.9.5-1.21, row 2d): Envoy rejects the
    /// listener.
    pub duplicated_chain: bool,
    /// Locality failover at the gateway (row 5): with outlier detection in the rule istiod gives
    /// the gateway's cluster priorities too, so it prefers the pods in its own zone. `None`: flat.
    pub failover: Option<GatewayFailover>,
}

/// A gateway SNI cluster's locality failover, as istiod's EDS builds it for any proxy
/// (`pilot/pkg/xds/endpoints/endpoint_builder.go@1.30.3`) when the rule has outlier detection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayFailover {
    /// Envoy priority of each of the route's `endpoints`, in the same order (0 = the gateway's
    /// own zone).
    pub priorities: Vec<u32>,
    /// Priority of the merged gateways (they carry no locality of the gateway's region).
    pub merged_gateways_priority: u32,
    /// The rule's outlier detection, as on the sidecars.
    pub outlier_detection: OutlierDetection,
}

/// Everything one cluster's SNI gateway needs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewaySpec {
    /// Envoy node id.
    pub node_id: String,
    /// One route per planned (service, port), with or without local pods.
    pub routes: Vec<SniRoute>,
    /// Load-balancing policy of the SNI clusters (the version's default).
    pub load_balancer: crate::scenario::LoadBalancer,
}

/// LDS and CDS content, each a `DiscoveryResponse` as Envoy's file-based xDS reads it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct XdsResources {
    /// `{"version_info": …, "resources": [Listener…]}`.
    pub listeners: Value,
    /// `{"version_info": …, "resources": [Cluster…]}`.
    pub clusters: Value,
    /// The listeners come from a watched LDS file instead of the bootstrap, so a listener Envoy
    /// rejects is reported (`listener_manager.lds.update_rejected`) instead of stopping Envoy:
    /// gateways, whose 15443 listener Istio 1.10-1.21 can make invalid (row 2d).
    #[serde(default)]
    pub listeners_dynamic: bool,
}

/// Istio's outbound cluster name for a service port: `outbound|80||bar.ns2.svc.cluster.local`.
pub fn outbound_cluster_name(port: u16, host: &str) -> String {
    format!("outbound|{port}||{host}")
}

/// The SNI the client sidecar sends and the gateway routes on:
/// `outbound_.80_._.bar.ns2.svc.cluster.local`.
pub fn outbound_sni(port: u16, host: &str) -> String {
    format!("outbound_.{port}_._.{host}")
}

/// Istio's inbound cluster name for a port (the app on loopback): `inbound|80||`.
pub fn inbound_cluster_name(port: u16) -> String {
    format!("inbound|{port}||")
}

/// Name of the gateway's listener on [`GATEWAY_PORT`]; its stats are
/// `listener.0.0.0.0_15443.*`, e.g. `listener.0.0.0.0_15443.no_filter_chain_match`.
pub fn gateway_listener_name() -> String {
    format!("0.0.0.0_{GATEWAY_PORT}")
}

/// Name of a sidecar's inbound listener: `inbound_10.10.0.5_80` (stats
/// `listener.10.10.0.5_80.*`, TLS failures under `listener.10.10.0.5_80.ssl.*`).
pub fn inbound_listener_name(pod_ip: Ipv4Addr, port: u16) -> String {
    format!("inbound_{pod_ip}_{port}")
}

/// Name of a sidecar's outbound listener: `outbound_10.96.0.10_80`.
pub fn outbound_listener_name(cluster_ip: Ipv4Addr, port: u16) -> String {
    format!("outbound_{cluster_ip}_{port}")
}

fn lb_endpoint(address: Ipv4Addr, port: u16, weight: u32) -> Value {
    json!({
        "endpoint": { "address": socket_address(address, port) },
        "load_balancing_weight": weight,
    })
}

fn socket_address(address: Ipv4Addr, port: u16) -> Value {
    json!({ "socket_address": { "address": address.to_string(), "port_value": port } })
}

/// The workload's identity certificate, delivered by SDS over the ADS stream as the secret
/// `certs.secret` (Istio delivers it by SDS too, as the secret `default`): a new one pushed hands
/// running listeners and clusters a new certificate without a restart, and connections made
/// before keep theirs. Each Envoy loads it once, whichever listeners and clusters name it.
fn tls_certificate_sds(certs: &CertPaths) -> Value {
    json!({
        "name": certs.secret,
        "sds_config": { "resource_api_version": "V3", "ads": {} },
    })
}

/// The mesh root peers are verified against, delivered by SDS over the ADS stream as the secret
/// `ROOTCA` (Istio's name), combined with `default_validation_context` (the SAN matchers).
fn root_ca_sds(default_validation_context: Value) -> Value {
    json!({
        "default_validation_context": default_validation_context,
        "validation_context_sds_secret_config": {
            "name": ROOT_CA_SECRET_NAME,
            "sds_config": { "resource_api_version": "V3", "ads": {} },
        },
    })
}

/// The name of the root CA secret (Istio's).
pub const ROOT_CA_SECRET_NAME: &str = "ROOTCA";

/// The SDS response holding the root CA secret `ROOTCA` with the mesh root inline.
pub fn root_ca_secret(root_pem: &str) -> Value {
    json!({
        "version_info": format!("{:016x}", fnv1a(root_pem.as_bytes())),
        "resources": [{
            "@type": SECRET_TYPE,
            "name": ROOT_CA_SECRET_NAME,
            "validation_context": { "trusted_ca": { "inline_string": root_pem } },
        }],
    })
}

/// The name of the identity secret (Istio's).
pub const IDENTITY_SECRET_NAME: &str = "default";
const SECRET_TYPE: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";

/// The SDS response (a DiscoveryResponse) holding the identity secret `name` with the certificate
/// chain and key inline, so one push replaces both at once.
pub fn sds_secret(name: &str, cert_chain_pem: &str, key_pem: &str) -> Value {
    json!({
        "version_info": format!("{:016x}", fnv1a(cert_chain_pem.as_bytes())),
        "resources": [{
            "@type": SECRET_TYPE,
            "name": name,
            "tls_certificate": {
                "certificate_chain": { "inline_string": cert_chain_pem },
                "private_key": { "inline_string": key_pem },
            },
        }],
    })
}

fn tcp_proxy_filter(stat_prefix: &str, cluster: &str) -> Value {
    json!({
        "name": "envoy.filters.network.tcp_proxy",
        "typed_config": { "@type": TCP_PROXY_TYPE, "stat_prefix": stat_prefix, "cluster": cluster },
    })
}

fn router_filter() -> Value {
    json!({ "name": "envoy.filters.http.router", "typed_config": { "@type": ROUTER_TYPE } })
}

/// A DiscoveryResponse whose `version_info` is a hash of its content, so the same resources always
/// carry the same version and a change is visible in `/config_dump`.
fn discovery_response(type_url: &str, resources: Vec<Value>) -> Value {
    let resources = Value::Array(resources);
    json!({
        "version_info": format!("{:016x}", fnv1a(resources.to_string().as_bytes())),
        "type_url": type_url,
        "resources": resources,
    })
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    const BAR: &str = "bar.ns2.svc.cluster.local";
    const BAR_IDENTITY: &str = "spiffe://cluster.local/ns/ns2/sa/bar";

    fn endpoint(address: [u8; 4], port: u16, weight: u32, zone: Option<&str>, priority: u32) -> LbEndpoint {
        LbEndpoint {
            address: Ipv4Addr::from(address),
            port,
            weight,
            locality: zone.map(|zone| Locality {
                region: "region-a".into(),
                zone: zone.into(),
            }),
            priority,
            istio_mtls: port != GATEWAY_PORT,
        }
    }

    fn outbound(port: u16, protocol: Protocol, endpoints: Vec<LbEndpoint>, max: Option<u32>) -> OutboundPort {
        OutboundPort {
            host: BAR.into(),
            cluster_ip: Ipv4Addr::new(10, 96, 0, 10),
            port,
            protocol,
            server_identities: vec![BAR_IDENTITY.into()],
            endpoints,
            tls: UpstreamTls::IstioMutual,
            alpn: if protocol.is_http() {
                vec!["istio-http/1.1".into(), "istio".into(), "http/1.1".into()]
            } else {
                vec!["istio-peer-exchange".into(), "istio".into()]
            },
            http2: false,
            load_balancer: crate::scenario::LoadBalancer::RoundRobin,
            max_requests_per_connection: max,
            outlier_detection: None,
            retry_policy: None,
            timeout_millis: None,
            l4_only: false,
            circuit_breaker: CircuitBreaker::ENVOY_DEFAULT,
            locality_weighted: false,
        }
    }

    fn foo_sidecar() -> SidecarSpec {
        SidecarSpec {
            node_id: "foo-0.cluster1".into(),
            pod: "foo-0".into(),
            cluster: "cluster1".into(),
            pod_ip: Ipv4Addr::new(10, 10, 0, 5),
            certs: CertPaths::in_dir(Path::new("/certs/foo-0")),
            inbound: vec![
                InboundPort {
                    port: 80,
                    protocol: Protocol::Http,
                    mtls: InboundMtls::Strict,
                },
                InboundPort {
                    port: 9090,
                    protocol: Protocol::Tcp,
                    mtls: InboundMtls::Strict,
                },
            ],
            outbound: vec![
                outbound(
                    80,
                    Protocol::Http,
                    vec![
                        endpoint([10, 10, 0, 7], 80, 1, Some("zone-1"), 0),
                        endpoint([10, 20, 0, 2], GATEWAY_PORT, 2, Some("zone-2"), 0),
                        endpoint([10, 30, 0, 2], GATEWAY_PORT, 3, None, 1),
                    ],
                    Some(1),
                ),
                outbound(
                    9090,
                    Protocol::Tcp,
                    vec![endpoint([10, 20, 0, 2], GATEWAY_PORT, 2, None, 0)],
                    None,
                ),
            ],
        }
    }

    fn gateway() -> GatewaySpec {
        GatewaySpec {
            node_id: "gateway.cluster2".into(),
            routes: vec![
                SniRoute {
                    sni: outbound_sni(80, BAR),
                    endpoints: vec![
                        SocketAddrV4::new(Ipv4Addr::new(10, 20, 0, 7), 80),
                        SocketAddrV4::new(Ipv4Addr::new(10, 20, 0, 8), 80),
                    ],
                    merged_gateways: vec![],
                    duplicated_chain: false,
                    failover: None,
                },
                SniRoute {
                    sni: outbound_sni(9090, BAR),
                    endpoints: vec![SocketAddrV4::new(Ipv4Addr::new(10, 20, 0, 7), 9090)],
                    merged_gateways: vec![],
                    duplicated_chain: false,
                    failover: None,
                },
            ],
            load_balancer: crate::scenario::LoadBalancer::RoundRobin,
        }
    }

    fn resources_of(response: &Value) -> &Vec<Value> {
        response["resources"].as_array().expect("resources is an array")
    }

    fn named<'a>(response: &'a Value, name: &str) -> &'a Value {
        resources_of(response)
            .iter()
            .find(|resource| resource["name"] == name)
            .unwrap_or_else(|| panic!("no resource named {name}"))
    }

    /// Every cluster a listener names: tcp_proxy `cluster` and route `cluster`.
    fn clusters_referenced(value: &Value, found: &mut BTreeSet<String>) {
        match value {
            Value::Object(map) => {
                for (key, inner) in map {
                    if key == "cluster"
                        && let Some(name) = inner.as_str()
                    {
                        found.insert(name.to_string());
                    }
                    clusters_referenced(inner, found);
                }
            }
            Value::Array(items) => items.iter().for_each(|item| clusters_referenced(item, found)),
            _ => {}
        }
    }

    fn assert_listeners_only_name_existing_clusters(resources: &XdsResources) {
        let mut referenced = BTreeSet::new();
        clusters_referenced(&resources.listeners, &mut referenced);
        let defined: BTreeSet<String> = resources_of(&resources.clusters)
            .iter()
            .map(|cluster| cluster["name"].as_str().expect("cluster name").to_string())
            .collect();
        assert!(!referenced.is_empty());
        let missing: Vec<_> = referenced.difference(&defined).collect();
        assert!(missing.is_empty(), "listeners name undefined clusters {missing:?}");
    }

    #[test]
    fn names_follow_istio_formats() {
        assert_eq!(outbound_cluster_name(80, BAR), "outbound|80||bar.ns2.svc.cluster.local");
        assert_eq!(outbound_sni(80, BAR), "outbound_.80_._.bar.ns2.svc.cluster.local");
        assert_eq!(inbound_cluster_name(9090), "inbound|9090||");
    }

    #[test]
    fn sidecar_listeners_only_name_existing_clusters() {
        assert_listeners_only_name_existing_clusters(&sidecar_resources(&foo_sidecar()));
    }

    #[test]
    fn gateway_listeners_only_name_existing_clusters() {
        assert_listeners_only_name_existing_clusters(&gateway_resources(&gateway()));
        assert_listeners_only_name_existing_clusters(&gateway_resources(&GatewaySpec {
            node_id: "empty".into(),
            routes: vec![],
            load_balancer: crate::scenario::LoadBalancer::RoundRobin,
        }));
    }

    #[test]
    fn resources_carry_their_xds_type_urls() {
        let resources = sidecar_resources(&foo_sidecar());
        for (response, type_url) in [
            (&resources.listeners, LISTENER_TYPE),
            (&resources.clusters, CLUSTER_TYPE),
        ] {
            assert_eq!(response["type_url"], type_url);
            assert!(
                resources_of(response)
                    .iter()
                    .all(|resource| resource["@type"] == type_url)
            );
        }
    }

    #[test]
    fn outbound_listener_binds_the_cluster_ip_and_port() {
        let resources = sidecar_resources(&foo_sidecar());
        let listener = named(&resources.listeners, "outbound_10.96.0.10_80");
        assert_eq!(listener["address"]["socket_address"]["address"], "10.96.0.10");
        assert_eq!(listener["address"]["socket_address"]["port_value"], 80);
    }

    #[test]
    fn outbound_endpoints_keep_weight_locality_and_priority() {
        let resources = sidecar_resources(&foo_sidecar());
        let cluster = named(&resources.clusters, &outbound_cluster_name(80, BAR));
        assert_eq!(cluster["lb_policy"], "ROUND_ROBIN");
        let groups = cluster["load_assignment"]["endpoints"].as_array().expect("groups");
        let summary: Vec<(Value, Value, Value, Value)> = groups
            .iter()
            .flat_map(|group| {
                group["lb_endpoints"]
                    .as_array()
                    .expect("lb_endpoints")
                    .iter()
                    .map(|member| {
                        (
                            member["endpoint"]["address"]["socket_address"]["address"].clone(),
                            member["load_balancing_weight"].clone(),
                            group["locality"]["zone"].clone(),
                            group["priority"].clone(),
                        )
                    })
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                (json!("10.10.0.7"), json!(1), json!("zone-1"), Value::Null),
                (json!("10.20.0.2"), json!(2), json!("zone-2"), Value::Null),
                (json!("10.30.0.2"), json!(3), Value::Null, json!(1)),
            ]
        );
    }

    #[test]
    fn endpoints_sharing_locality_and_priority_share_one_group() {
        let mut spec = foo_sidecar();
        spec.outbound[0].endpoints = vec![
            endpoint([10, 10, 0, 7], 80, 1, Some("zone-1"), 0),
            endpoint([10, 20, 0, 2], GATEWAY_PORT, 2, Some("zone-2"), 0),
            endpoint([10, 10, 0, 8], 80, 1, Some("zone-1"), 0),
        ];
        let resources = sidecar_resources(&spec);
        let cluster = named(&resources.clusters, &outbound_cluster_name(80, BAR));
        let sizes: Vec<usize> = cluster["load_assignment"]["endpoints"]
            .as_array()
            .expect("groups")
            .iter()
            .map(|group| group["lb_endpoints"].as_array().expect("members").len())
            .collect();
        assert_eq!(sizes, vec![2, 1]);
    }

    #[test]
    fn zero_weight_endpoints_are_left_out() {
        let mut spec = foo_sidecar();
        spec.outbound[0].endpoints = vec![
            endpoint([10, 10, 0, 7], 80, 0, None, 0),
            endpoint([10, 20, 0, 2], GATEWAY_PORT, 4, None, 0),
        ];
        let resources = sidecar_resources(&spec);
        let cluster = named(&resources.clusters, &outbound_cluster_name(80, BAR));
        let text = cluster["load_assignment"].to_string();
        assert!(!text.contains("10.10.0.7"), "{text}");
        assert!(text.contains("10.20.0.2"), "{text}");
    }

    #[test]
    fn client_sidecar_originates_istio_mtls() {
        let resources = sidecar_resources(&foo_sidecar());
        for (port, alpn) in [
            (80, json!(["istio-http/1.1", "istio", "http/1.1"])),
            (9090, json!(["istio-peer-exchange", "istio"])),
        ] {
            let cluster = named(&resources.clusters, &outbound_cluster_name(port, BAR));
            let tls = &cluster["transport_socket"]["typed_config"];
            assert_eq!(tls["@type"], UPSTREAM_TLS_TYPE);
            assert_eq!(tls["sni"], outbound_sni(port, BAR));
            let context = &tls["common_tls_context"];
            assert_eq!(context["alpn_protocols"], alpn);
            assert_eq!(
                context["tls_certificate_sds_secret_configs"],
                json!([{
                    "name": "default",
                    "sds_config": {
                        "resource_api_version": "V3",
                        "ads": {},
                    },
                }])
            );
            let validation = &context["combined_validation_context"];
            assert_eq!(
                validation["validation_context_sds_secret_config"],
                json!({ "name": "ROOTCA", "sds_config": { "resource_api_version": "V3", "ads": {} } })
            );
            assert_eq!(
                validation["default_validation_context"]["match_typed_subject_alt_names"],
                json!([{ "san_type": "URI", "matcher": { "exact": BAR_IDENTITY } }])
            );
        }
    }

    #[test]
    fn the_sds_response_holds_the_identity_secret_inline_and_its_version_follows_the_chain() {
        let secret = sds_secret("default", "CHAIN", "KEY");
        let resource = &secret["resources"][0];
        assert_eq!(resource["@type"], SECRET_TYPE);
        assert_eq!(resource["name"], "default");
        assert_eq!(
            resource["tls_certificate"]["certificate_chain"]["inline_string"],
            "CHAIN"
        );
        assert_eq!(resource["tls_certificate"]["private_key"]["inline_string"], "KEY");
        assert_eq!(
            secret["version_info"],
            sds_secret("default", "CHAIN", "OTHER KEY")["version_info"]
        );
        assert_ne!(
            secret["version_info"],
            sds_secret("default", "NEW CHAIN", "KEY")["version_info"]
        );
    }

    #[test]
    fn the_root_ca_secret_holds_the_mesh_root_inline_and_its_version_follows_it() {
        let secret = root_ca_secret("ROOT");
        let resource = &secret["resources"][0];
        assert_eq!(resource["@type"], SECRET_TYPE);
        assert_eq!(resource["name"], "ROOTCA");
        assert_eq!(resource["validation_context"]["trusted_ca"]["inline_string"], "ROOT");
        assert_ne!(secret["version_info"], root_ca_secret("OTHER ROOT")["version_info"]);
    }

    #[test]
    fn http_outbound_speaks_http1_and_limits_requests_per_connection() {
        let resources = sidecar_resources(&foo_sidecar());
        let http = named(&resources.clusters, &outbound_cluster_name(80, BAR));
        let options = &http["typed_extension_protocol_options"][HTTP_PROTOCOL_OPTIONS_KEY];
        assert_eq!(options["explicit_http_config"], json!({ "http_protocol_options": {} }));
        assert_eq!(
            options["common_http_protocol_options"]["max_requests_per_connection"],
            1
        );
        let tcp = named(&resources.clusters, &outbound_cluster_name(9090, BAR));
        assert!(tcp.get("typed_extension_protocol_options").is_none());
    }

    #[test]
    fn pooled_http_outbound_has_no_request_limit() {
        let mut spec = foo_sidecar();
        spec.outbound[0].max_requests_per_connection = None;
        let resources = sidecar_resources(&spec);
        let http = named(&resources.clusters, &outbound_cluster_name(80, BAR));
        let options = &http["typed_extension_protocol_options"][HTTP_PROTOCOL_OPTIONS_KEY];
        assert!(options.get("common_http_protocol_options").is_none());
    }

    #[test]
    fn inbound_requires_a_client_certificate_from_the_mesh_root() {
        let resources = sidecar_resources(&foo_sidecar());
        for port in [80, 9090] {
            let listener = named(
                &resources.listeners,
                &inbound_listener_name(Ipv4Addr::new(10, 10, 0, 5), port),
            );
            assert_eq!(listener["address"]["socket_address"]["address"], "10.10.0.5");
            assert_eq!(listener["address"]["socket_address"]["port_value"], port);
            let tls = &listener["filter_chains"][0]["transport_socket"]["typed_config"];
            assert_eq!(tls["@type"], DOWNSTREAM_TLS_TYPE);
            assert_eq!(tls["require_client_certificate"], true);
            assert_eq!(
                tls["common_tls_context"]["combined_validation_context"]["validation_context_sds_secret_config"]["name"],
                "ROOTCA"
            );
        }
    }

    #[test]
    fn inbound_http_tells_the_app_who_called_and_over_which_connection() {
        let resources = sidecar_resources(&foo_sidecar());
        let listener = named(
            &resources.listeners,
            &inbound_listener_name(Ipv4Addr::new(10, 10, 0, 5), 80),
        );
        let manager = &listener["filter_chains"][0]["filters"][0]["typed_config"];
        assert_eq!(manager["forward_client_cert_details"], "APPEND_FORWARD");
        assert_eq!(
            manager["set_current_client_cert_details"],
            json!({ "subject": true, "uri": true, "dns": true })
        );
        let virtual_host = &manager["route_config"]["virtual_hosts"][0];
        assert_eq!(
            virtual_host["request_headers_to_add"][0],
            json!({
                "header": { "key": DOWNSTREAM_PEER_HEADER, "value": "%DOWNSTREAM_DIRECT_REMOTE_ADDRESS%" },
                "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
            })
        );
        assert_eq!(virtual_host["routes"][0]["route"]["cluster"], "inbound|80||");
        let app = named(&resources.clusters, "inbound|80||");
        assert!(app.get("transport_socket").is_none(), "plain HTTP/1.1 to the app");
        assert!(app["load_assignment"].to_string().contains("127.0.0.1"));
    }

    #[test]
    fn inbound_tcp_hands_the_app_a_proxy_header_with_the_peer_identity() {
        let resources = sidecar_resources(&foo_sidecar());
        let listener = named(
            &resources.listeners,
            &inbound_listener_name(Ipv4Addr::new(10, 10, 0, 5), 9090),
        );
        let proxy = &listener["filter_chains"][0]["filters"][0]["typed_config"];
        assert_eq!(proxy["cluster"], "inbound|9090||");
        assert_eq!(proxy["upstream_connect_mode"], "ON_DOWNSTREAM_TLS_HANDSHAKE");
        assert_eq!(
            proxy["proxy_protocol_tlvs"],
            json!([{
                "type": 0xE0,
                "format_string": { "text_format_source": { "inline_string": "%DOWNSTREAM_PEER_URI_SAN%" } },
            }])
        );
        let app = named(&resources.clusters, "inbound|9090||");
        let socket = &app["transport_socket"]["typed_config"];
        assert_eq!(socket["config"]["version"], "V2");
        assert_eq!(socket["config"]["pass_through_tlvs"]["tlv_type"], json!([0xE0]));
    }

    #[test]
    fn gateway_routes_each_sni_to_its_pods_without_terminating_tls() {
        let resources = gateway_resources(&gateway());
        let listener = named(&resources.listeners, "0.0.0.0_15443");
        assert_eq!(listener["address"]["socket_address"]["address"], "0.0.0.0");
        assert_eq!(listener["address"]["socket_address"]["port_value"], GATEWAY_PORT);
        assert_eq!(
            listener["listener_filters"][0]["name"],
            "envoy.filters.listener.tls_inspector"
        );
        let chains = listener["filter_chains"].as_array().expect("filter chains");
        assert_eq!(chains.len(), 2);
        for (chain, port) in chains.iter().zip([80, 9090]) {
            let sni = outbound_sni(port, BAR);
            assert_eq!(chain["filter_chain_match"]["server_names"], json!([sni]));
            assert!(
                chain.get("transport_socket").is_none(),
                "passthrough: no TLS termination"
            );
            assert_eq!(chain["filters"][0]["typed_config"]["cluster"], sni);
            let cluster = named(&resources.clusters, &sni);
            assert!(cluster.get("transport_socket").is_none());
        }
        assert!(
            listener.get("default_filter_chain").is_none(),
            "unknown SNI must be refused"
        );
        let http_pods = named(&resources.clusters, &outbound_sni(80, BAR))["load_assignment"].to_string();
        assert!(
            http_pods.contains("10.20.0.7") && http_pods.contains("10.20.0.8"),
            "{http_pods}"
        );
    }

    #[test]
    fn gateway_without_routes_still_listens() {
        let resources = gateway_resources(&GatewaySpec {
            node_id: "gw".into(),
            routes: vec![],
            load_balancer: crate::scenario::LoadBalancer::RoundRobin,
        });
        let listener = named(&resources.listeners, "0.0.0.0_15443");
        assert_eq!(listener["filter_chains"].as_array().map(Vec::len), Some(1));
    }

    #[test]
    fn bootstrap_has_static_listeners_takes_cds_over_ads_and_serves_admin_on_a_socket() {
        let resources = sidecar_resources(&foo_sidecar());
        let bootstrap = bootstrap(
            "foo-0",
            Path::new("/run/meshfed/ads.sock"),
            Path::new("/run/foo-0.sock"),
            &resources,
        );
        assert_eq!(bootstrap["node"]["id"], "foo-0");
        let dynamic = &bootstrap["dynamic_resources"];
        assert_eq!(
            dynamic["cds_config"],
            json!({ "resource_api_version": "V3", "ads": {} })
        );
        assert_eq!(dynamic["ads_config"]["api_type"], "GRPC");
        assert_eq!(dynamic["ads_config"]["transport_api_version"], "V3");
        assert_eq!(
            dynamic["ads_config"]["grpc_services"][0]["envoy_grpc"]["cluster_name"],
            ADS_CLUSTER
        );
        assert!(dynamic.get("lds_config").is_none(), "a sidecar's listeners are static");
        let ads = &bootstrap["static_resources"]["clusters"][0];
        assert_eq!(ads["name"], ADS_CLUSTER);
        assert_eq!(
            ads["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["pipe"]["path"],
            "/run/meshfed/ads.sock"
        );
        assert!(
            !bootstrap.to_string().contains("path_config_source"),
            "nothing is read from a watched file"
        );
        let listeners = bootstrap["static_resources"]["listeners"].as_array().unwrap();
        assert_eq!(listeners.len(), 4);
        assert!(listeners.iter().all(|listener| listener.get("@type").is_none()));
        assert_eq!(bootstrap["admin"]["address"]["pipe"]["path"], "/run/foo-0.sock");
    }

    /// A gateway's listener comes from LDS, so Envoy can reject it and keep running (row 2d).
    #[test]
    fn gateway_bootstrap_takes_its_listener_from_lds_over_ads() {
        let resources = gateway_resources(&gateway());
        let bootstrap = bootstrap("gw", Path::new("/run/ads.sock"), Path::new("/run/gw.sock"), &resources);
        assert_eq!(bootstrap["static_resources"]["listeners"], json!([]));
        assert_eq!(
            bootstrap["dynamic_resources"]["lds_config"],
            json!({ "resource_api_version": "V3", "ads": {} })
        );
    }

    #[test]
    fn same_spec_gives_identical_json_and_a_change_changes_the_version() {
        let first = sidecar_resources(&foo_sidecar());
        assert_eq!(first, sidecar_resources(&foo_sidecar()));
        let mut changed = foo_sidecar();
        changed.outbound[0].endpoints[1].weight = 5;
        let second = sidecar_resources(&changed);
        assert_ne!(first.clusters["version_info"], second.clusters["version_info"]);
        assert_eq!(first.listeners["version_info"], second.listeners["version_info"]);
    }

    #[test]
    fn static_bootstrap_inlines_resources_without_type_urls() {
        let resources = sidecar_resources(&foo_sidecar());
        let secret = sds_secret("default", "CHAIN", "KEY");
        let bootstrap = static_bootstrap("foo-0", Path::new("/run/admin.sock"), &resources, &[secret]);
        assert_eq!(bootstrap["static_resources"]["secrets"][0]["name"], "default");
        assert!(bootstrap["static_resources"]["secrets"][0].get("@type").is_none());
        assert!(!bootstrap.to_string().contains("sds_config"), "secrets are static");
        let listeners = bootstrap["static_resources"]["listeners"]
            .as_array()
            .expect("listeners");
        assert_eq!(listeners.len(), resources_of(&resources.listeners).len());
        assert!(listeners.iter().all(|listener| listener.get("@type").is_none()));
    }
}
