//! meshfed's own workloads, run inside each pod's network namespace next to its sidecar: an echo
//! server that says who answered and what its sidecar saw of the caller, and a load client that
//! records one [`RequestRecord`](crate::record::RequestRecord) per request.
//!
//! HTTP/1.1 and PROXY protocol v2 are read in [`http`] (heads by `httparse`) and [`proxy_protocol`]
//! (headers by `ppp`); connections stay meshfed's, not an HTTP stack's, so the client keeps up with
//! `wrk`.

mod buffer;
pub mod client;
pub mod echo;
pub mod http;
pub mod proxy_protocol;

pub use client::{ClientConfig, ClientSummary, ConnectionPolicy, Protocol, RequestFailure, client};
pub use echo::{EchoConfig, EchoServer, echo};
