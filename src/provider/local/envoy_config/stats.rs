//! Which stats the `local` Envoys keep: Istio's own inclusion list, so a proxy allocates only the
//! stats an Istio proxy has, plus the counters meshfed reads. Measured with Envoy 1.40.0 on a
//! seed sidecar: 1,208 stats -> 106 and 14.9 -> 14.6 MiB of anonymous memory (PSS) per proxy.

use serde_json::{Value, json};

/// Istio's stats matcher prefixes: `reporter=`, `component` and `istio` from its bootstrap
/// template (`tools/packaging/common/envoy_bootstrap.json@1.30.3`), the rest from
/// `requiredEnvoyStatsMatcherInclusionPrefixes` ("used by readiness checks",
/// `pkg/bootstrap/config.go@1.30.3`).
pub const ISTIO_INCLUSION_PREFIXES: [&str; 8] = [
    "reporter=",
    "cluster_manager",
    "listener_manager",
    "server",
    "cluster.xds-grpc",
    "wasm",
    "component",
    "istio",
];

/// Istio's `requiredEnvoyStatsMatcherInclusionRegexes` (`pkg/bootstrap/config.go@1.30.3`).
pub const ISTIO_INCLUSION_REGEX: &str = r"vhost\..*\.route\..*";

/// What meshfed reads beyond Istio's list: the listeners' TLS counters and the gateway's
/// `no_filter_chain_match` (the regexps the `kind` install adds to its gateways through
/// `sidecar.istio.io/statsInclusionRegexps`, [`crate::provider::kind::install::GATEWAY_STATS_ANNOTATION`]),
/// the file-based SDS counters (`sds.<secret>.update_success`: a rotated certificate loaded), and
/// the inbound HTTP connection managers' `downstream_rq_active` (requests a draining sidecar still
/// serves, read by tests/sandbox/faults.rs).
pub const MESHFED_INCLUSION_REGEX: &str =
    r"^(listener\..*\.(ssl\..*|no_filter_chain_match)|sds\..*|http\..*\.downstream_rq_active)$";

/// The bootstrap's `stats_config`: no default tag extraction (Istio sets its own tags) and the
/// inclusion list above.
pub fn stats_config() -> Value {
    let mut patterns: Vec<Value> = ISTIO_INCLUSION_PREFIXES
        .iter()
        .map(|prefix| json!({ "prefix": prefix }))
        .collect();
    patterns.push(json!({ "safe_regex": { "regex": ISTIO_INCLUSION_REGEX } }));
    patterns.push(json!({ "safe_regex": { "regex": MESHFED_INCLUSION_REGEX } }));
    json!({
        "use_all_default_tags": false,
        "stats_matcher": { "inclusion_list": { "patterns": patterns } },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stat name Envoy's inclusion list keeps: a prefix, or a full match of a regex (Envoy's
    /// `StringMatcher.safe_regex` must match the whole string).
    fn kept(name: &str) -> bool {
        ISTIO_INCLUSION_PREFIXES.iter().any(|prefix| name.starts_with(prefix))
            || [ISTIO_INCLUSION_REGEX, MESHFED_INCLUSION_REGEX]
                .iter()
                .any(|regex| full_match(regex, name))
    }

    /// The two regexes above, by hand (no regex crate for a test): each alternative spelled out.
    fn full_match(regex: &str, name: &str) -> bool {
        let parts: Vec<&str> = name.split('.').collect();
        if regex == ISTIO_INCLUSION_REGEX {
            return parts.first() == Some(&"vhost") && parts.iter().skip(2).any(|part| *part == "route");
        }
        (parts.first() == Some(&"listener") && (name.contains(".ssl.") || name.ends_with(".no_filter_chain_match")))
            || parts.first() == Some(&"sds")
            || (parts.first() == Some(&"http") && name.ends_with(".downstream_rq_active"))
    }

    #[test]
    fn every_bootstrap_carries_the_stats_config() {
        let resources = crate::provider::local::envoy_config::gateway_resources(
            &crate::provider::local::envoy_config::GatewaySpec {
                node_id: "gw".into(),
                routes: vec![],
                load_balancer: crate::scenario::LoadBalancer::RoundRobin,
            },
        );
        let path = std::path::Path::new("/run/gw");
        let live = crate::provider::local::envoy_config::bootstrap("gw", path, path, &resources);
        let validated = crate::provider::local::envoy_config::static_bootstrap("gw", path, &resources, &[]);
        assert_eq!(live["stats_config"], stats_config());
        assert_eq!(validated["stats_config"], stats_config());
    }

    #[test]
    fn proxies_keep_istios_stats_and_what_meshfed_reads_and_nothing_else() {
        let config = stats_config();
        assert_eq!(config["use_all_default_tags"], false);
        let patterns = config["stats_matcher"]["inclusion_list"]["patterns"]
            .as_array()
            .unwrap();
        assert_eq!(patterns.len(), ISTIO_INCLUSION_PREFIXES.len() + 2);
        assert_eq!(patterns[1], json!({ "prefix": "cluster_manager" }));
        for read in [
            "cluster_manager.cds.version_text",
            "listener_manager.lds.update_rejected",
            "listener.10.20.0.10_80.ssl.fail_verify_error",
            "listener.10.20.0.10_80.ssl.fail_verify_no_cert",
            "listener.10.20.0.10_80.ssl.connection_error",
            "listener.10.20.0.10_80.ssl.handshake",
            "listener.0.0.0.0_15443.no_filter_chain_match",
            "sds.default.update_success",
            "sds.default.update_rejected",
            "http.inbound_10.20.0.10_80.downstream_rq_active",
            "server.state",
        ] {
            assert!(kept(read), "{read} is read by meshfed and must be kept");
        }
        for dropped in [
            "cluster.outbound|80||bar.ns2.svc.cluster.local.upstream_cx_total",
            "http.inbound_10.20.0.10_80.downstream_rq_total",
            "listener.10.20.0.10_80.downstream_cx_total",
        ] {
            assert!(!kept(dropped), "{dropped} is in no Istio proxy by default");
        }
    }
}
