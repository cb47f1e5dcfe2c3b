//! One record per request a client workload sent: the raw evidence every measurement is computed from.

use serde::{Deserialize, Serialize};

/// What one request observed. The client workload streams these as JSON lines; the measurements
/// read them back. Field names are part of the report's schema: change them only with its version.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RequestRecord {
    /// Sequence number of the request within its phase, from 0.
    pub seq: u64,
    /// `host:port` the client addressed (the service's cluster IP and port).
    pub target: String,
    /// HTTP status for HTTP ports; `None` for TCP ports and for requests that failed before a reply.
    pub status: Option<u16>,
    /// Why the request failed (connect refused, reset, timeout, bad reply); `None` on success.
    pub error: Option<String>,
    /// Name of the pod that answered, as the echo workload reported it.
    pub pod: Option<String>,
    /// Cluster of the pod that answered, as the echo workload reported it.
    pub cluster: Option<String>,
    /// SPIFFE identity of the caller as seen by the server side (from `x-forwarded-client-cert` for
    /// HTTP, from the inbound sidecar's PROXY protocol header for TCP); `None` when none was seen.
    pub peer_identity: Option<String>,
    /// When the request started, in microseconds from the start of its traffic (see
    /// [`crate::provider::Provider::start_traffic`]); time buckets and windows are computed from it.
    #[serde(default)]
    pub started_us: u64,
    /// Wall-clock time from starting the request to the full reply, in microseconds.
    pub latency_us: u64,
    /// Client-side number of the TCP connection that carried the request (unique within a phase).
    pub connection: u64,
    /// The mTLS connection that delivered the request to the answering pod, as its inbound sidecar
    /// saw it (the downstream peer address, e.g. `10.20.0.9:41234`). Requests sharing it rode one
    /// sidecar-to-sidecar (or gateway-to-sidecar) connection: the unit a passthrough gateway
    /// balances. `None` when the request got no reply.
    pub server_connection: Option<String>,
}

impl RequestRecord {
    /// True when the request got a complete, successful reply (2xx for HTTP, an echo for TCP).
    pub fn succeeded(&self) -> bool {
        self.error.is_none() && self.status.is_none_or(|code| (200..300).contains(&code))
    }
}
