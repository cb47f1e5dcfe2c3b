//! The `kubeconfig` provider: the scenario's clusters are existing clusters, named by their
//! kubeconfig contexts (`clusters[].context`), with Istio already installed. meshfed installs
//! nothing there but the scenario's own objects (the plan, and foo/bar as Deployments of the image
//! the user names), never touches an object it does not own, and deletes nothing at the end
//! (`meshfed down` does, and only what carries its labels).
//!
//! Traffic is sent from inside the sending pod (`pods/exec` of meshfed's client in its `app`
//! container: the request leaves through that pod's sidecar, as the scenario means; a separate Job
//! would be another pod with its own identity), to the end or in the background while timed
//! actions change the world ([`traffic`]). HTTP records carry the caller identity the echo
//! read from `x-forwarded-client-cert`; TCP records get theirs from the answering sidecars' access
//! logs ([`evidence`]). TLS failure counters come from `pilot-agent request GET stats` in the
//! `istio-proxy` containers of the service's pods and of the gateways.

pub mod access_log;
pub mod changes;
pub mod evidence;
pub mod exec;
mod kind_side;
pub mod traffic;
pub mod workloads;

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::ListParams;
use serde_json::Value;

use super::capabilities::Capabilities;
use super::kube_api as kube_layer;
use super::kube_api::kind_seam::{KUBERNETES_SIDE_CAPABILITIES, federation_gateway};
use super::kube_api::wait::{self, Watched};
use super::{
    IsolationProbe, IsolationRule, PhaseSettings, Provider, ProviderError, ProviderInfo, TIMED_OUT, TlsFailures,
    Traffic, take_running_traffic,
};
use crate::inventory::{ClusterInventory, GatewayAddress, Inventory, ReadyPod};
use crate::plan::{PLACEHOLDER_ANNOTATION, Plan, SCENARIO_LABEL};
use crate::progress::Progress;
use crate::record::RequestRecord;
use crate::scenario::{FederationMode, Protocol, Scenario};
pub use workloads::WorkloadImage;

/// How the provider runs.
#[derive(Clone, Debug)]
pub struct KubeconfigOptions {
    /// The image of foo and bar (meshfed's echo and client).
    pub image: WorkloadImage,
    /// `namespace/name` of the Service whose LoadBalancer address is the cluster's 15443 gateway.
    pub gateway_service: (String, String),
    /// How long deployments, endpoints and the gateway address may take to become ready.
    pub ready_timeout: Duration,
    /// When a direct connect to another cluster's pod counts as isolated: on clusters meshfed did
    /// not network itself a timeout counts when the gateway connects; `kind` makes the other
    /// clusters' networks unreachable and asks for that.
    pub isolation: IsolationRule,
}

impl KubeconfigOptions {
    /// Defaults: Istio's ingress gateway in `istio-system` (the seed's gateway), five minutes
    /// (Istio's own install wait).
    pub fn new(image: WorkloadImage) -> KubeconfigOptions {
        KubeconfigOptions {
            image,
            gateway_service: ("istio-system".to_owned(), "istio-ingressgateway".to_owned()),
            ready_timeout: Duration::from_secs(300),
            isolation: IsolationRule::UnreachableOrTimeout,
        }
    }

    /// The options of the Kubernetes half of a kind run: the gateway Service of `mode`, the workload
    /// command inside meshfed's image, and the strict isolation rule (the nodes' `unreachable` routes
    /// make a direct connect to another cluster fail fast, so a timeout is a failure as on `local`).
    pub fn for_kind(mode: FederationMode) -> KubeconfigOptions {
        let mut options = KubeconfigOptions::new(WorkloadImage {
            image: String::new(),
            command: "/usr/local/bin/meshfed".to_owned(),
        });
        options.gateway_service = ("istio-system".to_owned(), federation_gateway(mode).to_owned());
        options.isolation = IsolationRule::Unreachable;
        options
    }
}

struct Connected {
    context: String,
    client: kube::Client,
}

/// Existing clusters by kubeconfig context.
pub struct KubeconfigProvider {
    options: KubeconfigOptions,
    clusters: BTreeMap<String, Connected>,
    /// Clusters the `kind` provider made: scenario cluster → (kubeconfig file, context).
    attached: BTreeMap<String, (std::path::PathBuf, String)>,
    scenario: Option<Scenario>,
    inventory: Option<Inventory>,
    /// Traffic started by `start_traffic` and not yet awaited to its end; dropping it (a failed
    /// or interrupted run drops the provider) aborts the exec.
    background: Option<traffic::BackgroundTraffic>,
}

/// The CRD whose presence shows Istio's networking API is served.
const ISTIO_CRD: &str = "serviceentries.networking.istio.io";
/// How long one stats read or probe may take.
const SHORT_CALL: Duration = Duration::from_secs(15);

fn unavailable(message: impl std::fmt::Display) -> ProviderError {
    ProviderError::Unavailable(message.to_string())
}

impl KubeconfigProvider {
    /// What `kubeconfig` supports: per-phase endpoint weights (re-applied ServiceEntries) and a
    /// new connection per request (the client's side; the sidecars follow the plan's
    /// DestinationRule). Of the faults only a phase-long `scale` of a Deployment meshfed created
    /// (made before the phase's traffic and undone after it): a foreign client certificate needs a
    /// pod with its own certificate files, which real Istio does not let meshfed swap. Timed
    /// actions: the changes [`changes::KUBECONFIG_CHANGES`] (`scale`, `kill`), made while the
    /// client runs in the background ([`traffic::BackgroundTraffic`]).
    pub const CAPABILITIES: Capabilities = KUBERNETES_SIDE_CAPABILITIES;

    /// A provider that has not connected yet.
    pub fn new(options: KubeconfigOptions) -> KubeconfigProvider {
        KubeconfigProvider {
            options,
            clusters: BTreeMap::new(),
            attached: BTreeMap::new(),
            scenario: None,
            inventory: None,
            background: None,
        }
    }

    fn scenario(&self) -> Result<&Scenario, ProviderError> {
        self.scenario
            .as_ref()
            .ok_or_else(|| ProviderError::Unsupported("the world was not created".to_owned()))
    }

    fn client(&self, cluster: &str) -> Result<&kube::Client, ProviderError> {
        self.clusters
            .get(cluster)
            .map(|connected| &connected.client)
            .ok_or_else(|| ProviderError::Unsupported(format!("unknown cluster {cluster}")))
    }

    /// Connects to every cluster's context concurrently; each failure names the cluster, its
    /// context and what is missing.
    pub async fn connect(&mut self, scenario: &Scenario) -> Result<(), ProviderError> {
        let attached = &self.attached;
        let attempts = scenario.clusters.iter().map(|cluster| async move {
            let name = cluster.name.value.clone();
            let (file, context) = match attached.get(&name) {
                Some((file, context)) => (Some(file.as_path()), context.clone()),
                None => (
                    None,
                    cluster.context.clone().ok_or_else(|| {
                        unavailable(format!(
                            "cluster {name} names no kubeconfig context (clusters[].context); the kubeconfig provider needs one per cluster"
                        ))
                    })?,
                ),
            };
            let client = kube_layer::connect::connect_with(&name, &context, file)
                .await
                .map_err(unavailable)?;
            Ok::<_, ProviderError>((name, Connected { context, client }))
        });
        let connected = futures::future::join_all(attempts).await;
        let mut failures = Vec::new();
        for attempt in connected {
            match attempt {
                Ok((name, connected)) => {
                    self.clusters.insert(name, connected);
                }
                Err(error) => failures.push(error.to_string()),
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(unavailable(failures.join("\n")))
        }
    }

    async fn check_istio(&self, cluster: &str, needs_access_log: bool) -> Result<(), ProviderError> {
        let connected = &self.clusters[cluster];
        let crds: kube::Api<CustomResourceDefinition> = kube::Api::all(connected.client.clone());
        wait::await_condition(
            &crds,
            &Watched::Name(ISTIO_CRD.to_owned()),
            &format!(
                "CRD {ISTIO_CRD} established in cluster {cluster} (context {})",
                connected.context
            ),
            SHORT_CALL,
            wait::crd_established,
        )
        .await
        .map_err(|error| {
            unavailable(format!(
                "{error}: is Istio installed there? (the kubeconfig provider installs nothing)"
            ))
        })?;
        if needs_access_log {
            let config_maps: kube::Api<ConfigMap> = kube::Api::namespaced(connected.client.clone(), "istio-system");
            let mesh = config_maps
                .get_opt("istio")
                .await
                .map_err(|error| {
                    unavailable(format!(
                        "cluster {cluster}: reading ConfigMap istio-system/istio: {error}"
                    ))
                })?
                .and_then(|map| map.data)
                .and_then(|data| data.get("mesh").cloned())
                .unwrap_or_default();
            if !mesh.contains(evidence::REQUIRED_OPERATOR) {
                return Err(unavailable(format!(
                    "cluster {cluster}: the mesh config (ConfigMap istio-system/istio) has no access log with {}: TCP phases need \
                     meshConfig.accessLogFile=/dev/stdout, accessLogEncoding=JSON and accessLogFormat={}",
                    evidence::REQUIRED_OPERATOR,
                    evidence::ACCESS_LOG_FORMAT
                )));
            }
        }
        Ok(())
    }

    /// The plan's namespaces (labelled for injection) and the workloads of `cluster`.
    fn workload_world(&self, scenario: &Scenario, cluster: &str, plan_objects: Vec<Value>) -> Vec<Value> {
        let mut objects = workloads::with_injection(plan_objects);
        objects.extend(workloads::workload_objects(scenario, cluster, &self.options.image));
        objects
    }

    async fn apply_objects(
        &self,
        cluster: &str,
        objects: &[Value],
        progress: &mut dyn Progress,
    ) -> Result<(), ProviderError> {
        let scenario = self.scenario()?;
        if let Some(placeholder) = objects.iter().find(|object| {
            object
                .pointer("/metadata/annotations")
                .and_then(|a| a.get(PLACEHOLDER_ANNOTATION))
                .is_some()
        }) {
            return Err(ProviderError::Unsupported(format!(
                "cluster {cluster}: {} {} holds placeholders ({}): the kubeconfig provider does not create remote-secret credentials yet",
                placeholder["kind"],
                placeholder["metadata"]["name"],
                placeholder["metadata"]["annotations"][PLACEHOLDER_ANNOTATION]
            )));
        }
        let applied = kube_layer::apply(
            self.client(cluster)?,
            cluster,
            &scenario.name,
            objects,
            kube_layer::ApplyMode::Apply,
        )
        .await
        .map_err(|error| ProviderError::failed(format!("applying the plan to cluster {cluster}"), error))?;
        progress.step(&format!("cluster {cluster}: applied {} objects", applied.applied.len()));
        for (object, message) in &applied.forced {
            progress.step(&format!(
                "cluster {cluster}: took back meshfed's fields of {object} ({message})"
            ));
        }
        Ok(())
    }

    async fn await_workloads(&self, cluster: &str, progress: &mut dyn Progress) -> Result<(), ProviderError> {
        let scenario = self.scenario()?;
        let client = self.client(cluster)?;
        for service in scenario.services_in(cluster) {
            let namespace = &service.namespace.value;
            let name = &service.name.value;
            progress.step(&format!("cluster {cluster}: waiting for deployment {namespace}/{name}"));
            let deployments: kube::Api<Deployment> = kube::Api::namespaced(client.clone(), namespace);
            wait::await_condition(
                &deployments,
                &Watched::Name(name.clone()),
                &format!("deployment {namespace}/{name} available in cluster {cluster}"),
                self.options.ready_timeout,
                wait::deployment_available,
            )
            .await
            .map_err(|error| ProviderError::failed("waiting for the workloads", error))?;
        }
        Ok(())
    }

    async fn cluster_inventory(
        &self,
        scenario: &Scenario,
        cluster: &str,
        progress: &mut dyn Progress,
    ) -> Result<ClusterInventory, ProviderError> {
        let client = self.client(cluster)?;
        let declared = scenario
            .cluster(cluster)
            .ok_or_else(|| ProviderError::Unsupported(format!("unknown cluster {cluster}")))?;
        let (gateway_namespace, gateway_name) = &self.options.gateway_service;
        progress.step(&format!(
            "cluster {cluster}: waiting for the address of {gateway_namespace}/{gateway_name}"
        ));
        let services: kube::Api<Service> = kube::Api::namespaced(client.clone(), gateway_namespace);
        let gateway = wait::await_condition(
            &services,
            &Watched::Name(gateway_name.clone()),
            &format!("LoadBalancer address of {gateway_namespace}/{gateway_name} in cluster {cluster}"),
            self.options.ready_timeout,
            wait::gateway_address_assigned,
        )
        .await
        .map_err(|error| ProviderError::failed("waiting for the gateway address", error))?;
        let address = gateway
            .first()
            .and_then(wait::load_balancer_address)
            .unwrap_or_default();
        let mut ready_pods = BTreeMap::new();
        for service in scenario.services_in(cluster) {
            let pods: kube::Api<Pod> = kube::Api::namespaced(client.clone(), &service.namespace.value);
            let selector = format!(
                "{}={},{SCENARIO_LABEL}={}",
                workloads::APP_LABEL,
                service.name.value,
                scenario.name
            );
            let listed = pods
                .list(&ListParams::default().labels(&selector))
                .await
                .map_err(|error| {
                    ProviderError::failed(
                        format!("listing the pods of {} in cluster {cluster}", service.reference()),
                        error,
                    )
                })?;
            let mut ready: Vec<ReadyPod> = listed
                .items
                .iter()
                .filter(|pod| pod.metadata.deletion_timestamp.is_none() && pod_is_ready(pod))
                .map(|pod| ReadyPod {
                    name: pod.metadata.name.clone().unwrap_or_default(),
                    region: declared.region.clone(),
                    zone: declared.zone.clone(),
                })
                .collect();
            ready.sort_by(|a, b| a.name.cmp(&b.name));
            ready_pods.insert(service.reference(), ready);
        }
        Ok(ClusterInventory {
            gateway: GatewayAddress {
                address,
                port: crate::inventory::GATEWAY_PORT,
                placeholder: false,
            },
            istio_version: declared.istio_version.value,
            region: declared.region.clone(),
            zone: declared.zone.clone(),
            ready_pods,
        })
    }

    async fn pods_of(&self, cluster: &str, service: &str) -> Result<Vec<String>, ProviderError> {
        Ok(self
            .inventory
            .as_ref()
            .and_then(|inventory| inventory.clusters.get(cluster))
            .and_then(|cluster| cluster.ready_pods.get(service))
            .map(|pods| pods.iter().map(|pod| pod.name.clone()).collect())
            .unwrap_or_default())
    }

    async fn envoy_counters(
        &self,
        cluster: &str,
        namespace: &str,
        pod: &str,
    ) -> Result<BTreeMap<String, u64>, ProviderError> {
        let output = exec::exec(
            self.client(cluster)?,
            namespace,
            pod,
            workloads::SIDECAR_CONTAINER,
            ["pilot-agent", "request", "GET", "stats"].map(str::to_owned).to_vec(),
            SHORT_CALL,
        )
        .await
        .map_err(|error| ProviderError::failed(format!("reading Envoy stats in cluster {cluster}"), error))?;
        if !output.succeeded {
            return Err(ProviderError::failed(
                format!("reading Envoy stats of {namespace}/{pod} in cluster {cluster}"),
                anyhow::anyhow!("{}: {}", output.status, output.stderr.trim()),
            ));
        }
        Ok(crate::provider::local::envoy_binary::parse_counters(&output.stdout))
    }
}

fn pod_is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|status| status.conditions.as_ref())
        .is_some_and(|conditions| conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn service_namespace(service: &str) -> &str {
    service.split_once('.').map_or("default", |(_, namespace)| namespace)
}

impl Provider for KubeconfigProvider {
    fn info(&self) -> ProviderInfo {
        let versions: Vec<String> = self
            .scenario
            .iter()
            .flat_map(|scenario| {
                scenario
                    .clusters
                    .iter()
                    .map(|cluster| format!("{}={}", cluster.name.value, cluster.istio_version.value))
            })
            .collect();
        ProviderInfo {
            name: "kubeconfig".to_owned(),
            emulates: None,
            mode: self
                .clusters
                .iter()
                .map(|(name, connected)| format!("{name}@{}", connected.context))
                .collect::<Vec<_>>()
                .join(", "),
            proxy: format!("istio (declared: {})", versions.join(", ")),
        }
    }

    fn capabilities(&self) -> Capabilities {
        KubeconfigProvider::CAPABILITIES
    }

    async fn change_world(
        &mut self,
        change: &crate::change::WorldChange,
        progress: &mut dyn Progress,
    ) -> Result<Vec<crate::inventory::InventoryEvent>, ProviderError> {
        self.change_world_through_the_api(change, progress).await
    }

    async fn create_world(
        &mut self,
        scenario: &Scenario,
        progress: &mut dyn Progress,
    ) -> Result<Inventory, ProviderError> {
        self.scenario = Some(scenario.clone());
        progress.step(&format!(
            "connecting to {} clusters by kubeconfig context",
            scenario.clusters.len()
        ));
        self.connect(scenario).await?;
        let needs_access_log = scenario.phases.iter().any(|phase| {
            scenario
                .service(&phase.to.service.value)
                .and_then(|service| service.port(&phase.to.port.value))
                .is_some_and(|port| port.protocol == Protocol::Tcp)
        });
        let placeholder_plan = crate::plan::plan(scenario, &crate::inventory::from_scenario(scenario));
        for cluster_plan in &placeholder_plan.clusters {
            let cluster = &cluster_plan.cluster;
            progress.step(&format!("cluster {cluster}: checking Istio"));
            self.check_istio(cluster, needs_access_log).await?;
            let namespaces: Vec<Value> = kube_layer::desired_objects(cluster_plan)
                .map_err(|error| ProviderError::failed("rendering the plan", error))?
                .into_iter()
                .filter(|object| object["kind"] == "Namespace")
                .collect();
            let objects = self.workload_world(scenario, cluster, namespaces);
            self.apply_objects(cluster, &objects, progress).await?;
        }
        let mut clusters = BTreeMap::new();
        for cluster in scenario.clusters.iter().map(|cluster| cluster.name.value.clone()) {
            self.await_workloads(&cluster, progress).await?;
            let inventory = self.cluster_inventory(scenario, &cluster, progress).await?;
            clusters.insert(cluster, inventory);
        }
        let inventory = Inventory { clusters };
        self.inventory = Some(inventory.clone());
        Ok(inventory)
    }

    async fn apply_plan(
        &mut self,
        plan: &Plan,
        settings: &PhaseSettings,
        progress: &mut dyn Progress,
    ) -> Result<(), ProviderError> {
        if settings.foreign_client_cert.is_some() {
            return Err(ProviderError::Unsupported(
                "the kubeconfig provider cannot give a pod a foreign certificate".to_owned(),
            ));
        }
        let scenario = self.scenario()?.clone();
        for cluster_plan in &plan.clusters {
            let objects = kube_layer::desired_objects(cluster_plan)
                .map_err(|error| ProviderError::failed("rendering the plan", error))?;
            let objects = self.workload_world(&scenario, &cluster_plan.cluster, objects);
            self.apply_objects(&cluster_plan.cluster, &objects, progress).await?;
            // The replicated Services of local pods must have their endpoints before traffic.
            let client = self.client(&cluster_plan.cluster)?.clone();
            for service in scenario.services_in(&cluster_plan.cluster) {
                let slices: kube::Api<EndpointSlice> = kube::Api::namespaced(client.clone(), &service.namespace.value);
                wait::await_condition(
                    &slices,
                    &Watched::Labels(format!("kubernetes.io/service-name={}", service.name.value)),
                    &format!(
                        "endpoints of {} in cluster {}",
                        service.reference(),
                        cluster_plan.cluster
                    ),
                    self.options.ready_timeout,
                    wait::endpoints_ready(service.replicas_in(&cluster_plan.cluster) as usize),
                )
                .await
                .map_err(|error| ProviderError::failed("waiting for endpoints", error))?;
            }
        }
        Ok(())
    }

    async fn check_isolation(&mut self) -> Result<Vec<IsolationProbe>, ProviderError> {
        // Probed from the sidecar container: its own traffic (uid 1337) bypasses the redirect, so
        // the connect goes to the network as is. bash's /dev/tcp, bounded by `timeout`.
        let scenario = self.scenario()?.clone();
        let inventory = self.inventory.clone().unwrap_or(Inventory {
            clusters: BTreeMap::new(),
        });
        let mut probes = Vec::new();
        for from in scenario.clusters.iter().map(|cluster| cluster.name.value.clone()) {
            let Some((service, pod)) = scenario.services.iter().find_map(|service| {
                inventory
                    .clusters
                    .get(&from)?
                    .ready_pods
                    .get(&service.reference())?
                    .first()
                    .map(|pod| (service, pod.name.clone()))
            }) else {
                continue;
            };
            for to in scenario
                .clusters
                .iter()
                .map(|cluster| cluster.name.value.clone())
                .filter(|to| *to != from)
            {
                let Some(target_pod) = self.first_pod_ip(&scenario, &inventory, &to).await? else {
                    continue;
                };
                let gateway = &inventory.clusters[&to].gateway;
                let gateway_address = format!("{}:{}", gateway.address, gateway.port);
                let pod_connect = self.probe(&from, &service.namespace.value, &pod, &target_pod).await;
                let gateway_connect = self
                    .probe(&from, &service.namespace.value, &pod, &gateway_address)
                    .await;
                probes.push(IsolationProbe {
                    from_cluster: from.clone(),
                    from_pod: pod.clone(),
                    to_cluster: to.clone(),
                    isolated: self.options.isolation.isolated(&pod_connect, &gateway_connect),
                    pod_address: target_pod,
                    pod_connect,
                    gateway_address,
                    gateway_connect,
                });
            }
        }
        Ok(probes)
    }

    async fn send_traffic(
        &mut self,
        traffic: &Traffic,
        progress: &mut dyn Progress,
    ) -> Result<Vec<RequestRecord>, ProviderError> {
        let scenario = self.scenario()?.clone();
        let mut running = self.start_client(&scenario, traffic, Pacing::FromNow, progress).await?;
        // The exec carries its own deadline (client_deadline); this bound is only a backstop.
        let until = std::time::Instant::now() + traffic::client_deadline(traffic) + SHORT_CALL;
        let mut records = running
            .await_records(until, progress)
            .await?
            .ok_or_else(|| unavailable(format!("the client in pod {} never ended", traffic.from_pod)))?;
        self.attribute_tcp(&scenario, traffic, running.epoch, &mut records)
            .await?;
        Ok(records)
    }

    /// Starts the client in the sending pod with an epoch [`traffic::EPOCH_LEAD`] ahead, and
    /// returns when the exec stream is open and the epoch has come: the engine's action offsets
    /// then count from the client's epoch (see [`traffic`] for the clock assumption).
    async fn start_traffic(&mut self, traffic: &Traffic, progress: &mut dyn Progress) -> Result<(), ProviderError> {
        if let Some(running) = &self.background {
            return Err(ProviderError::Unsupported(format!(
                "traffic from pod {} is already running; await it before starting more",
                running.traffic().from_pod
            )));
        }
        let scenario = self.scenario()?.clone();
        let running = self
            .start_client(&scenario, traffic, Pacing::FromEpochAhead, progress)
            .await?;
        let epoch = running.epoch;
        self.background = Some(running);
        match epoch.duration_since(std::time::SystemTime::now()) {
            Ok(until_epoch) => tokio::time::sleep(until_epoch).await,
            Err(late) => progress.step(&format!(
                "  the exec took {} ms longer than its lead of {} s: the actions run that much later on the records' clock",
                late.duration().as_millis(),
                traffic::EPOCH_LEAD.as_secs()
            )),
        }
        Ok(())
    }

    /// The records of the background traffic once it ended (checked like `send_traffic`'s, TCP
    /// records attributed from the access logs), `None` while it runs. It does not list the pods
    /// while waiting: pods replaced by a timed `kill` or `scale` are not ready for a while, which
    /// is what the phase measures, not a death; the engine's `check_alive` follows the phase.
    async fn await_traffic(
        &mut self,
        until: std::time::Instant,
        progress: &mut dyn Progress,
    ) -> Result<Option<Vec<RequestRecord>>, ProviderError> {
        let mut running = take_running_traffic(&mut self.background)?;
        let Some(mut records) = running.await_records(until, progress).await? else {
            self.background = Some(running);
            return Ok(None);
        };
        let scenario = self.scenario()?.clone();
        let traffic = running.traffic().clone();
        self.attribute_tcp(&scenario, &traffic, running.epoch, &mut records)
            .await?;
        Ok(Some(records))
    }

    async fn tls_failures(&mut self, service: &str) -> Result<TlsFailures, ProviderError> {
        let scenario = self.scenario()?.clone();
        let (gateway_namespace, gateway_name) = self.options.gateway_service.clone();
        let mut sidecars = Vec::new();
        let mut gateways = Vec::new();
        for cluster in scenario.clusters.iter().map(|cluster| cluster.name.value.clone()) {
            for pod in self.pods_of(&cluster, service).await? {
                sidecars.push(self.envoy_counters(&cluster, service_namespace(service), &pod).await?);
            }
            let pods: kube::Api<Pod> = kube::Api::namespaced(self.client(&cluster)?.clone(), &gateway_namespace);
            let gateway_pods = pods
                .list(&ListParams::default().labels(&format!("istio={}", gateway_name.trim_start_matches("istio-"))))
                .await
                .map_err(|error| ProviderError::failed(format!("listing gateway pods in cluster {cluster}"), error))?;
            for pod in gateway_pods.items.iter().filter_map(|pod| pod.metadata.name.clone()) {
                gateways.push(self.envoy_counters(&cluster, &gateway_namespace, &pod).await?);
            }
        }
        Ok(evidence::tls_failures(&sidecars, &gateways))
    }

    async fn check_alive(&mut self) -> Result<(), ProviderError> {
        // A pod that restarted or went unready since the inventory was taken is named.
        let scenario = self.scenario()?.clone();
        let mut dead = Vec::new();
        for (cluster, connected) in &self.clusters {
            for service in scenario.services_in(cluster) {
                let pods: kube::Api<Pod> = kube::Api::namespaced(connected.client.clone(), &service.namespace.value);
                let selector = format!(
                    "{}={},{SCENARIO_LABEL}={}",
                    workloads::APP_LABEL,
                    service.name.value,
                    scenario.name
                );
                let listed = tokio::time::timeout(SHORT_CALL, pods.list(&ListParams::default().labels(&selector)))
                    .await
                    .map_err(|_| {
                        unavailable(format!(
                            "cluster {cluster}: listing pods did not answer within {} s",
                            SHORT_CALL.as_secs()
                        ))
                    })?
                    .map_err(|error| ProviderError::failed(format!("listing pods in cluster {cluster}"), error))?;
                for pod in &listed.items {
                    if !pod_is_ready(pod) {
                        dead.push(format!(
                            "pod {}/{} in cluster {cluster} is not ready",
                            service.namespace.value,
                            pod.metadata.name.clone().unwrap_or_default()
                        ));
                    }
                }
            }
        }
        if dead.is_empty() {
            Ok(())
        } else {
            Err(ProviderError::NotAlive(dead))
        }
    }

    async fn stuck(&mut self) -> Vec<String> {
        match tokio::time::timeout(SHORT_CALL, self.check_alive()).await {
            Ok(Err(ProviderError::NotAlive(lines))) => lines,
            Ok(Err(error)) => vec![error.to_string()],
            Ok(Ok(())) => Vec::new(),
            Err(_) => vec![format!(
                "the API servers did not answer within {} s",
                SHORT_CALL.as_secs()
            )],
        }
    }

    async fn teardown(&mut self, progress: &mut dyn Progress) -> Result<(), ProviderError> {
        if let Some(scenario) = &self.scenario {
            progress.step(&format!(
                "kubeconfig: the scenario's objects stay in the clusters; `meshfed down {} --provider kubeconfig` removes exactly them",
                scenario.name
            ));
        }
        // A client still running (the run failed mid-phase) is aborted before the clients go.
        self.background = None;
        self.clusters.clear();
        Ok(())
    }
}

/// Where a client's clock starts.
#[derive(Clone, Copy)]
enum Pacing {
    /// When it starts (a phase without timed actions).
    FromNow,
    /// At an epoch [`traffic::EPOCH_LEAD`] ahead, which the engine's action clock also counts from.
    FromEpochAhead,
}

impl KubeconfigProvider {
    /// Starts meshfed's client in the sending pod through pods/exec and returns it running on its
    /// own task (its output read as it comes, its records counted for progress, aborted on drop).
    async fn start_client(
        &self,
        scenario: &Scenario,
        traffic: &Traffic,
        pacing: Pacing,
        progress: &mut dyn Progress,
    ) -> Result<traffic::BackgroundTraffic, ProviderError> {
        let client = self.client(&traffic.from_cluster)?.clone();
        let (target, host) = self.client_target(scenario, traffic).await?;
        // Taken after the Service lookup: only the exec's own start has to fit in the lead.
        let (epoch, command) = match pacing {
            Pacing::FromNow => (
                std::time::SystemTime::now(),
                traffic::client_command(&self.options.image.command, &target, &host, traffic, None),
            ),
            Pacing::FromEpochAhead => {
                let epoch = std::time::SystemTime::now() + traffic::EPOCH_LEAD;
                let command =
                    traffic::client_command(&self.options.image.command, &target, &host, traffic, Some(epoch));
                (epoch, command)
            }
        };
        progress.step(&format!(
            "sending {} requests from pod {} in {} (pods/exec{})",
            traffic.requests,
            traffic.from_pod,
            traffic.from_cluster,
            match pacing {
                Pacing::FromNow => "",
                Pacing::FromEpochAhead => ", in the background",
            }
        ));
        let namespace = service_namespace(&traffic.from_service).to_owned();
        let first_word = command.first().cloned().unwrap_or_default();
        let started = tokio::time::timeout(
            SHORT_CALL,
            exec::start(
                &client,
                &namespace,
                &traffic.from_pod,
                workloads::APP_CONTAINER,
                command,
            ),
        )
        .await
        .map_err(|_| {
            exec::deadline_exceeded(
                first_word.clone(),
                &namespace,
                &traffic.from_pod,
                workloads::APP_CONTAINER,
                SHORT_CALL,
            )
        })
        .and_then(|started| started)
        .map_err(|error| ProviderError::failed("starting traffic", error))?;
        let deadline = traffic::client_deadline(traffic);
        let pod = traffic.from_pod.clone();
        let records_so_far = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counted = records_so_far.clone();
        let run = async move {
            tokio::time::timeout(deadline, started.finish(&counted))
                .await
                .map_err(|_| exec::deadline_exceeded(first_word, &namespace, &pod, workloads::APP_CONTAINER, deadline))
        };
        Ok(traffic::BackgroundTraffic::spawn(run, records_so_far, traffic, epoch))
    }

    /// Where the client aims `traffic`: the target Service's cluster IP as the sending cluster has
    /// it (`ip:port`), and the Host header.
    async fn client_target(&self, scenario: &Scenario, traffic: &Traffic) -> Result<(String, String), ProviderError> {
        let client = self.client(&traffic.from_cluster)?;
        let target_service = scenario
            .service(&traffic.to_service)
            .ok_or_else(|| ProviderError::Unsupported(format!("unknown service {}", traffic.to_service)))?;
        let services: kube::Api<Service> = kube::Api::namespaced(client.clone(), &target_service.namespace.value);
        let cluster_ip = tokio::time::timeout(SHORT_CALL, services.get(&target_service.name.value))
            .await
            .map_err(|_| {
                unavailable(format!(
                    "cluster {}: reading Service {} did not answer within {} s",
                    traffic.from_cluster,
                    traffic.to_service,
                    SHORT_CALL.as_secs()
                ))
            })?
            .map_err(|error| {
                ProviderError::failed(
                    format!(
                        "reading Service {} in cluster {}",
                        traffic.to_service, traffic.from_cluster
                    ),
                    error,
                )
            })?
            .spec
            .and_then(|spec| spec.cluster_ip)
            .ok_or_else(|| {
                ProviderError::Unsupported(format!(
                    "Service {} has no cluster IP in {}",
                    traffic.to_service, traffic.from_cluster
                ))
            })?;
        Ok((format!("{cluster_ip}:{}", traffic.port), target_service.host()))
    }

    async fn first_pod_ip(
        &self,
        scenario: &Scenario,
        inventory: &Inventory,
        cluster: &str,
    ) -> Result<Option<String>, ProviderError> {
        let client = self.client(cluster)?;
        for service in &scenario.services {
            let Some(pod) = inventory
                .clusters
                .get(cluster)
                .and_then(|c| c.ready_pods.get(&service.reference()))
                .and_then(|pods| pods.first())
            else {
                continue;
            };
            let pods: kube::Api<Pod> = kube::Api::namespaced(client.clone(), &service.namespace.value);
            let found = pods.get(&pod.name).await.map_err(|error| {
                ProviderError::failed(format!("reading pod {} in cluster {cluster}", pod.name), error)
            })?;
            if let Some(ip) = found.status.and_then(|status| status.pod_ip) {
                return Ok(Some(format!("{ip}:{}", service.ports[0].number.value)));
            }
        }
        Ok(None)
    }

    /// `connected`, `refused`, `unreachable`, `timed out`, or why the probe could not run.
    async fn probe(&self, cluster: &str, namespace: &str, pod: &str, address: &str) -> String {
        let Some((host, port)) = address.rsplit_once(':') else {
            return format!("bad address {address}");
        };
        let Ok(client) = self.client(cluster) else {
            return "no client".to_owned();
        };
        let script = format!("timeout 3 bash -c '</dev/tcp/{host}/{port}'");
        match exec::exec(
            client,
            namespace,
            pod,
            workloads::SIDECAR_CONTAINER,
            vec!["sh".into(), "-c".into(), script],
            SHORT_CALL,
        )
        .await
        {
            Ok(output) if output.succeeded => "connected".to_owned(),
            Ok(output) if output.stderr.contains("refused") => "refused".to_owned(),
            Ok(output) if output.stderr.contains("No route") || output.stderr.contains("unreachable") => {
                "unreachable".to_owned()
            }
            Ok(output) if output.status.contains("124") => TIMED_OUT.to_owned(),
            Ok(output) => format!("probe failed: {} {}", output.status, output.stderr.trim()),
            Err(error) => format!("probe could not run: {error}"),
        }
    }
}
