//! Checks of the clusters: names, zones, Istio versions (within the emulated range, and what each
//! version can do: endpoint discovery, DNS proxying), proxy settings.

use serde_saphyr::{Location, Spanned};

use super::{Checked, MAX_CLUSTERS, NOWHERE, check_dns_label, check_string, check_unique, problem, quoted};
use crate::scenario::grammar::Grammar;
use crate::scenario::spans::{self, ScenarioSpans};
use crate::scenario::{
    Cluster, FederationMode, IstioVersion, MAX_PROXY_CONCURRENCY, MAX_ZONES_PER_CLUSTER, NEWEST_EMULATED_ISTIO,
    OLDEST_EMULATED_ISTIO, Scenario, address_layout,
};

/// Checks `text` against `grammar`; the message quotes the text with escapes, so a control
/// character is never printed raw.
/// A cluster's `zones`: label values, distinct, at most [`MAX_ZONES_PER_CLUSTER`].
fn check_zones(cluster: &Cluster) -> Checked {
    if let Some(extra) = cluster.zones.get(MAX_ZONES_PER_CLUSTER) {
        return Err(problem(
            extra.referenced,
            format!(
                "cluster {} lists {} zones, more than the {MAX_ZONES_PER_CLUSTER} allowed",
                cluster.name.value,
                cluster.zones.len()
            ),
        ));
    }
    for (index, zone) in cluster.zones.iter().enumerate() {
        check_string(&zone.value, Grammar::LabelValue, "zone", zone.referenced)?;
        if cluster.zones[..index].iter().any(|earlier| earlier.value == zone.value) {
            return Err(problem(
                zone.referenced,
                format!(
                    "zone {} is listed twice in cluster {}: each zone once (replicas go round-robin over the list)",
                    quoted(&zone.value),
                    cluster.name.value
                ),
            ));
        }
    }
    Ok(())
}

/// Istio version from which multi-network endpoint discovery through an east-west gateway exists.
const ENDPOINT_DISCOVERY_SINCE: IstioVersion = IstioVersion::new(1, 8, 0);
/// DNS proxying in the sidecar (`ISTIO_META_DNS_CAPTURE`): Istio 1.8.0's release note
/// `releasenotes/notes/agent-dns-capture.yaml`.
const DNS_PROXYING_SINCE: IstioVersion = IstioVersion::new(1, 8, 0);

pub(super) fn check_clusters(scenario: &Scenario, spans: &ScenarioSpans) -> Checked {
    if scenario.clusters.is_empty() {
        return Err(problem(
            spans::at(spans.clusters.as_ref(), NOWHERE),
            "`clusters` is empty: a scenario needs at least one cluster",
        ));
    }
    if let Some(extra) = scenario.clusters.get(MAX_CLUSTERS) {
        return Err(problem(
            extra.name.referenced,
            format!(
                "{} clusters are more than the {MAX_CLUSTERS} allowed: every cluster runs at least a gateway \
                 and a router, and the plan grows with the square of the clusters",
                scenario.clusters.len()
            ),
        ));
    }
    if let Some(flag) = scenario.federation.dns_proxying.as_ref().filter(|flag| flag.value)
        && scenario.federation.mode.value == FederationMode::EndpointDiscovery
    {
        return Err(problem(
            flag.referenced,
            "dnsProxying applies to mode serviceentry: endpoint discovery writes no ServiceEntry whose host the \
             proxy could resolve; remove dnsProxying or use mode serviceentry",
        ));
    }
    for (index, cluster) in scenario.clusters.iter().enumerate() {
        check_dns_label(&cluster.name, "cluster name")?;
        check_istio_version(cluster)?;
        if let Some(concurrency) = cluster
            .proxy_concurrency
            .as_ref()
            .filter(|count| !(1..=MAX_PROXY_CONCURRENCY).contains(&count.value))
        {
            return Err(problem(
                concurrency.referenced,
                format!(
                    "proxyConcurrency {} of cluster {} is out of range: use 1 to {MAX_PROXY_CONCURRENCY} Envoy workers",
                    concurrency.value, cluster.name.value
                ),
            ));
        }
        let cluster_spans = spans.cluster(index);
        let fallback = cluster.name.referenced;
        let at = |span: fn(&super::spans::ClusterSpans) -> Option<&Spanned<String>>| {
            spans::at(cluster_spans.and_then(span), fallback)
        };
        check_string(
            &cluster.region,
            Grammar::LabelValue,
            "region",
            at(|c| c.region.as_ref()),
        )?;
        check_string(&cluster.zone, Grammar::LabelValue, "zone", at(|c| c.zone.as_ref()))?;
        check_zones(cluster)?;
        if let Some(network) = &cluster.network {
            check_string(network, Grammar::LabelValue, "network", at(|c| c.network.as_ref()))?;
        }
        if let Some(context) = &cluster.context {
            check_string(context, Grammar::ContextName, "context", at(|c| c.context.as_ref()))?;
        }
        if scenario.federation.mode.value == FederationMode::EndpointDiscovery
            && cluster.istio_version.value < ENDPOINT_DISCOVERY_SINCE
        {
            return Err(problem(
                version_at(cluster),
                format!(
                    "federation mode endpoint-discovery needs Istio {ENDPOINT_DISCOVERY_SINCE} or newer, cluster {} has {}; \
                     use mode serviceentry for older versions",
                    cluster.name.value, cluster.istio_version.value
                ),
            ));
        }
        if let Some(flag) = scenario.federation.dns_proxying.as_ref().filter(|flag| flag.value)
            && cluster.istio_version.value < DNS_PROXYING_SINCE
        {
            return Err(problem(
                flag.referenced,
                format!(
                    "dnsProxying needs Istio {DNS_PROXYING_SINCE} or newer (the sidecar's DNS proxy came in 1.8), \
                     cluster {} has {}; remove dnsProxying or use 1.8 or newer",
                    cluster.name.value, cluster.istio_version.value
                ),
            ));
        }
        for (network, what) in [(&cluster.pod_cidr, "podCidr"), (&cluster.service_cidr, "serviceCidr")] {
            if let Some((reserved, why)) = address_layout::reserved_range(network.value) {
                return Err(problem(
                    network.referenced,
                    format!(
                        "{what} {} of {} overlaps {reserved}: {why}; use a private range such as 10.0.0.0/8, \
                         172.16.0.0/12 or 192.168.0.0/16",
                        network.value, cluster.name.value
                    ),
                ));
            }
        }
    }
    check_unique(scenario.clusters.iter().map(|cluster| &cluster.name), "cluster name")
}

/// Where a cluster's Istio version is written, or the cluster's name when it is not (the default,
/// or a version `--istio-version` set): an error about the version always has a position.
fn version_at(cluster: &Cluster) -> Location {
    if cluster.istio_version.referenced.line() == 0 {
        cluster.name.referenced
    } else {
        cluster.istio_version.referenced
    }
}

/// Versions outside the emulated range would get behaviour nobody checked against Istio's source.
fn check_istio_version(cluster: &Cluster) -> Checked {
    let version = cluster.istio_version.value;
    let oldest = (OLDEST_EMULATED_ISTIO.major, OLDEST_EMULATED_ISTIO.minor);
    let newest = (NEWEST_EMULATED_ISTIO.major, NEWEST_EMULATED_ISTIO.minor);
    if (version.major, version.minor) < oldest || (version.major, version.minor) > newest {
        return Err(problem(
            version_at(cluster),
            format!(
                "istioVersion {version} of cluster {} is outside the emulated range: use {}.{} to {}.{} (any patch; see docs/fidelity.md)",
                cluster.name.value, oldest.0, oldest.1, newest.0, newest.1
            ),
        ));
    }
    Ok(())
}
