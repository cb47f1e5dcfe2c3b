//! The `local` world's control plane server: one Aggregated Discovery Service (ADS, Envoy's
//! `envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources`, the way
//! istiod serves its proxies) on a Unix socket every pod's Envoy reaches, whatever its network
//! namespace (a path-named socket belongs to the file system, not to a network namespace).
//!
//! Each Envoy keeps one gRPC stream, keyed by its node id; meshfed sets the resources each node
//! should have ([`AdsServer::set`]) and every open stream of that node gets the change at once
//! (state of the world: all resources of a type in each response; secrets only those asked for).
//! Envoy answers each response with an ACK or a NACK (`error_detail`); [`AdsServer::await_acked`]
//! waits for one. No file is watched, so an Envoy holds no inotify instance for its configuration
//! (`fs.inotify.max_user_instances` is 128 by default: file watches limited a world to 56 Envoys).
//!
//! Private keys travel only inside `Secret` resources on the socket (mode 0600); nothing here logs
//! a resource.

mod server;
mod state;
mod transcode;
mod wire;

pub use server::{ADS_CLUSTER, AdsServer, AwaitAckError};
pub use state::Rejection;
pub use transcode::{TranscodeError, encode_resource};
pub use wire::{CLUSTER_TYPE, LISTENER_TYPE, SECRET_TYPE};
