//! Parsing Envoy's admin `/stats` and `/clusters` text.

use std::collections::BTreeMap;

/// Parses the text of `/stats` into `name -> value` for every counter and gauge (histogram lines,
/// whose values are not integers, are skipped). Example:
/// `listener.10.10.0.5_80.ssl.fail_verify_error: 1`.
pub fn parse_counters(stats: &str) -> BTreeMap<String, u64> {
    stats
        .lines()
        .filter_map(|line| {
            let (name, value) = line.rsplit_once(": ")?;
            Some((name.trim().to_string(), value.trim().parse().ok()?))
        })
        .collect()
}

/// One upstream host of one cluster, from the admin `/clusters` text.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostStats {
    /// Cluster name, e.g. `outbound|80||bar.ns2.svc.cluster.local`.
    pub cluster: String,
    /// Host address, e.g. `10.20.0.3:15443`.
    pub address: String,
    /// Connections ever opened to the host.
    pub cx_total: u64,
    /// Connections open now.
    pub cx_active: u64,
    /// Failed connection attempts.
    pub cx_connect_fail: u64,
    /// Requests (HTTP) or connections (TCP proxy) sent to the host.
    pub rq_total: u64,
    /// Requests answered with a non-5xx status.
    pub rq_success: u64,
    /// Requests that failed (5xx, reset, timeout).
    pub rq_error: u64,
    /// Requests in flight.
    pub rq_active: u64,
    /// Load-balancing weight Envoy uses.
    pub weight: u64,
    /// Priority the host belongs to.
    pub priority: u64,
    /// Locality region (empty when none).
    pub region: String,
    /// Locality zone (empty when none).
    pub zone: String,
    /// Health flags, e.g. `healthy`.
    pub health_flags: String,
}

/// Parses the text of `/clusters` into one entry per (cluster, host), in output order. Lines look
/// like `outbound|80||bar.ns2.svc.cluster.local::10.20.0.3:15443::cx_total::4`; cluster-level
/// lines (`…::default_priority::…`, `…::added_via_api::…`) are skipped.
///
/// The counters start from zero whenever a CDS update replaces the cluster (e.g. a weight
/// change): compare snapshots taken within one configuration, not across a rewrite.
pub fn parse_clusters(text: &str) -> Vec<HostStats> {
    let mut hosts: Vec<HostStats> = Vec::new();
    for line in text.lines() {
        let parts: Vec<&str> = line.split("::").collect();
        let [cluster, address, stat, value] = parts[..] else {
            continue;
        };
        if address.parse::<std::net::SocketAddr>().is_err() {
            continue;
        }
        let position = hosts
            .iter()
            .position(|host| host.cluster == cluster && host.address == address);
        let host = match position {
            Some(index) => &mut hosts[index],
            None => {
                hosts.push(HostStats {
                    cluster: cluster.to_string(),
                    address: address.to_string(),
                    ..HostStats::default()
                });
                let last = hosts.len() - 1;
                &mut hosts[last]
            }
        };
        let number = || value.parse::<u64>().unwrap_or(0);
        match stat {
            "cx_total" => host.cx_total = number(),
            "cx_active" => host.cx_active = number(),
            "cx_connect_fail" => host.cx_connect_fail = number(),
            "rq_total" => host.rq_total = number(),
            "rq_success" => host.rq_success = number(),
            "rq_error" => host.rq_error = number(),
            "rq_active" => host.rq_active = number(),
            "weight" => host.weight = number(),
            "priority" => host.priority = number(),
            "region" => host.region = value.to_string(),
            "zone" => host.zone = value.to_string(),
            "health_flags" => host.health_flags = value.to_string(),
            _ => {}
        }
    }
    hosts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_gauges_are_parsed_and_histograms_skipped() {
        let counters = parse_counters(
            "cluster.outbound|80||bar.ns2.svc.cluster.local.upstream_cx_total: 7\n\
             listener.10.10.0.5_80.ssl.fail_verify_error: 2\n\
             server.live: 1\n\
             http.inbound_80.downstream_rq_time: P0(nan,1.0) P25(nan,1.05)\n",
        );
        assert_eq!(counters.len(), 3);
        assert_eq!(counters["listener.10.10.0.5_80.ssl.fail_verify_error"], 2);
        assert_eq!(
            counters["cluster.outbound|80||bar.ns2.svc.cluster.local.upstream_cx_total"],
            7
        );
    }

    #[test]
    fn clusters_output_becomes_per_host_stats() {
        let text = "outbound|80||bar.ns2.svc.cluster.local::observability_name::outbound|80||bar.ns2.svc.cluster.local\n\
            outbound|80||bar.ns2.svc.cluster.local::default_priority::max_connections::1024\n\
            outbound|80||bar.ns2.svc.cluster.local::10.77.0.3:15443::cx_active::1\n\
            outbound|80||bar.ns2.svc.cluster.local::10.77.0.3:15443::cx_total::1\n\
            outbound|80||bar.ns2.svc.cluster.local::10.77.0.3:15443::rq_total::90\n\
            outbound|80||bar.ns2.svc.cluster.local::10.77.0.3:15443::rq_success::90\n\
            outbound|80||bar.ns2.svc.cluster.local::10.77.0.3:15443::health_flags::healthy\n\
            outbound|80||bar.ns2.svc.cluster.local::10.77.0.3:15443::weight::3\n\
            outbound|80||bar.ns2.svc.cluster.local::10.77.0.3:15443::region::r2\n\
            outbound|80||bar.ns2.svc.cluster.local::10.77.0.3:15443::zone::z2\n\
            outbound|80||bar.ns2.svc.cluster.local::10.77.0.4:80::rq_total::30\n\
            inbound|80||::127.0.0.1:80::cx_total::4\n";
        let hosts = parse_clusters(text);
        assert_eq!(hosts.len(), 3);
        let gateway = &hosts[0];
        assert_eq!(gateway.cluster, "outbound|80||bar.ns2.svc.cluster.local");
        assert_eq!(gateway.address, "10.77.0.3:15443");
        assert_eq!(
            (
                gateway.cx_total,
                gateway.cx_active,
                gateway.rq_total,
                gateway.rq_success
            ),
            (1, 1, 90, 90)
        );
        assert_eq!(
            (gateway.weight, gateway.region.as_str(), gateway.zone.as_str()),
            (3, "r2", "z2")
        );
        assert_eq!(gateway.health_flags, "healthy");
        assert_eq!((hosts[1].address.as_str(), hosts[1].rq_total), ("10.77.0.4:80", 30));
        assert_eq!((hosts[2].cluster.as_str(), hosts[2].cx_total), ("inbound|80||", 4));
    }
}
