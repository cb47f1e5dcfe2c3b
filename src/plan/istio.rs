//! Istio's configuration kinds that the plan writes, as serde types (field names as in Istio's CRDs).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};

use crate::scenario::IstioVersion;

/// An Istio custom resource: `apiVersion`, `kind`, `metadata`, `spec`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IstioObject<Spec> {
    /// `group/version`, e.g. `networking.istio.io/v1`.
    pub api_version: String,
    /// The kind, e.g. `ServiceEntry`.
    pub kind: String,
    /// Name, namespace, labels.
    pub metadata: ObjectMeta,
    /// The kind's spec.
    pub spec: Spec,
}

/// `ServiceEntry.spec`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceEntrySpec {
    /// Hosts the entry is for.
    pub hosts: Vec<String>,
    /// Virtual addresses of the hosts: with DNS proxying (`federation.dnsProxying`) the address
    /// the sidecar's DNS proxy answers for a host no Service carries, and the one its outbound
    /// listener serves; none otherwise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
    /// The service's ports.
    pub ports: Vec<IstioPort>,
    /// `STATIC`: endpoints are IP addresses.
    pub resolution: String,
    /// `MESH_INTERNAL`: the endpoints are in the mesh and speak Istio mTLS.
    pub location: String,
    /// Where to send traffic.
    pub endpoints: Vec<WorkloadEntry>,
    /// Identities the client accepts from the entry's endpoints (Istio adds them to the service's
    /// SAN list); meshfed plans none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subject_alt_names: Vec<String>,
}

/// A port as Istio's Gateway and ServiceEntry declare it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IstioPort {
    /// Port number.
    pub number: u16,
    /// Port name.
    pub name: String,
    /// `HTTP`, `TCP`, `TLS`, ...
    pub protocol: String,
}

/// A ServiceEntry endpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadEntry {
    /// Address of the endpoint: a remote cluster's gateway.
    pub address: String,
    /// Service port name → port on the endpoint (all map to the gateway port).
    pub ports: BTreeMap<String, u16>,
    /// Load-balancing weight: the remote cluster's ready pods (`ready-pods`), absent for `equal`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    /// `region/zone` of the remote cluster, when locality is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locality: Option<String>,
}

/// `DestinationRule.spec` (only what the plan uses).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DestinationRuleSpec {
    /// Host the rule applies to: `*.local`, or one service's host. Istio applies one rule per
    /// host: an exact host beats a wildcard, so a per-service rule must repeat `tls`.
    pub host: String,
    /// TLS origination, connection pool, load balancing, outlier detection.
    pub traffic_policy: TrafficPolicy,
}

/// `DestinationRule.spec.trafficPolicy`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TrafficPolicy {
    /// Client TLS settings (absent: auto-mTLS decides, on the versions that have it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ClientTls>,
    /// Connection pool settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_pool: Option<ConnectionPoolSettings>,
    /// Load-balancing policy (absent: the version's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer: Option<LoadBalancerSettings>,
    /// Outlier detection; its presence also turns on locality failover priorities.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetection>,
}

/// `trafficPolicy.connectionPool`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionPoolSettings {
    /// HTTP settings.
    pub http: HttpConnectionPool,
}

/// `trafficPolicy.connectionPool.http`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpConnectionPool {
    /// `1`: a new upstream connection per request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_requests_per_connection: Option<u32>,
    /// `UPGRADE` or `DO_NOT_UPGRADE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub h2_upgrade_policy: Option<String>,
}

/// `trafficPolicy.loadBalancer`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoadBalancerSettings {
    /// `ROUND_ROBIN`, `LEAST_REQUEST`, `RANDOM` (absent: the version's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub simple: Option<String>,
    /// Locality failover rules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locality_lb_setting: Option<LocalityLbSetting>,
}

/// `loadBalancer.localityLbSetting` (only `failover`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LocalityLbSetting {
    /// Region failover rules.
    pub failover: Vec<LocalityFailover>,
}

/// `localityLbSetting.failover[]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LocalityFailover {
    /// The callers' region.
    pub from: String,
    /// The region tried first when the callers' own has no healthy endpoint.
    pub to: String,
}

/// `trafficPolicy.outlierDetection`; an absent field keeps Envoy's default.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OutlierDetection {
    /// 5xx responses (or connect failures) in a row before an endpoint is ejected.
    #[serde(rename = "consecutive5xxErrors", default, skip_serializing_if = "Option::is_none")]
    pub consecutive_5xx_errors: Option<u32>,
    /// 502/503/504 responses (or connect failures) in a row before an endpoint is ejected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_gateway_errors: Option<u32>,
    /// How often endpoints are checked, e.g. `10s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    /// How long an ejected endpoint stays out at least, e.g. `30s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_ejection_time: Option<String>,
    /// Most endpoints ejected at once, in percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ejection_percent: Option<u32>,
}

/// `VirtualService.spec` (one HTTP route to the host itself, carrying retries and timeout).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VirtualServiceSpec {
    /// Hosts the routes apply to.
    pub hosts: Vec<String>,
    /// HTTP routes.
    pub http: Vec<HttpRoute>,
}

/// `VirtualService.spec.http[]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpRoute {
    /// Where requests go.
    pub route: Vec<HttpRouteDestination>,
    /// Retry policy (absent: Istio's default retries).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<HttpRetry>,
    /// Whole-request timeout, e.g. `2s` (absent: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
}

/// `http[].route[]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteDestination {
    /// The destination.
    pub destination: Destination,
}

/// `Destination` (only the host).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Destination {
    /// Service host.
    pub host: String,
}

/// `HTTPRetry`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpRetry {
    /// Retries after the first try; 0 turns retries off.
    pub attempts: u32,
    /// Deadline of each try.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_try_timeout: Option<String>,
    /// Conditions and status codes, comma separated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_on: Option<String>,
}

/// `ClientTLSSettings` (only the mode).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientTls {
    /// `ISTIO_MUTUAL`.
    pub mode: String,
}

/// `Gateway.spec`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GatewaySpec {
    /// Labels of the gateway pods this applies to.
    pub selector: BTreeMap<String, String>,
    /// Listeners.
    pub servers: Vec<GatewayServer>,
}

/// `Gateway.spec.servers[]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GatewayServer {
    /// The port.
    pub port: IstioPort,
    /// TLS mode.
    pub tls: ServerTls,
    /// Hosts served.
    pub hosts: Vec<String>,
}

/// `ServerTLSSettings` (only the mode).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerTls {
    /// `AUTO_PASSTHROUGH`: route on SNI, pass mTLS through to the pod.
    pub mode: String,
}

/// `PeerAuthentication.spec` (mesh-wide: no selector).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerAuthenticationSpec {
    /// mTLS mode.
    pub mtls: MtlsSetting,
}

/// `{mode: PERMISSIVE|STRICT}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MtlsSetting {
    /// `PERMISSIVE` or `STRICT`.
    pub mode: String,
}

/// `MeshPolicy.spec` (authentication.istio.io/v1alpha1, Istio before 1.5).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MeshPolicySpec {
    /// Peer authentication methods.
    pub peers: Vec<PeerMethod>,
}

/// `MeshPolicy.spec.peers[]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerMethod {
    /// mTLS settings.
    pub mtls: MtlsSetting,
}

/// Which generation of Istio's APIs a cluster understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum IstioApi {
    /// Before 1.5: `MeshPolicy` (authentication.istio.io/v1alpha1), networking v1alpha3.
    Legacy,
    /// 1.5 to 1.21: `PeerAuthentication` security.istio.io/v1beta1, networking v1alpha3.
    V1beta1,
    /// 1.22 and later: networking.istio.io/v1 and security.istio.io/v1.
    V1,
}

impl IstioApi {
    /// The API generation of an Istio version.
    pub fn of(version: IstioVersion) -> IstioApi {
        if version < IstioVersion::new(1, 5, 0) {
            IstioApi::Legacy
        } else if version < IstioVersion::new(1, 22, 0) {
            IstioApi::V1beta1
        } else {
            IstioApi::V1
        }
    }

    /// `apiVersion` for networking kinds.
    pub fn networking(self) -> &'static str {
        match self {
            IstioApi::Legacy | IstioApi::V1beta1 => "networking.istio.io/v1alpha3",
            IstioApi::V1 => "networking.istio.io/v1",
        }
    }

    /// `apiVersion` for PeerAuthentication (`None` before 1.5, which has MeshPolicy instead).
    pub fn security(self) -> Option<&'static str> {
        match self {
            IstioApi::Legacy => None,
            IstioApi::V1beta1 => Some("security.istio.io/v1beta1"),
            IstioApi::V1 => Some("security.istio.io/v1"),
        }
    }
}
