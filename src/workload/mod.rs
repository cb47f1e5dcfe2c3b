//! meshfed's own workloads, run inside each pod's network namespace next to its sidecar: an echo
//! server that says who answered and what its sidecar saw of the caller, and a load client that
//! records one [`RequestRecord`](crate::record::RequestRecord) per request.
//!
//! Plain HTTP/1.1 and PROXY protocol parsing live in [`http`] and [`proxy_protocol`]: a few hundred
//! lines instead of an HTTP stack, so the client keeps up with `wrk`.

mod buffer;
pub mod client;
pub mod echo;
pub mod http;
pub mod proxy_protocol;

pub use client::{ClientConfig, ClientSummary, ConnectionPolicy, Protocol, RequestFailure, client};
pub use echo::{EchoConfig, EchoServer, echo};
