//! The Kubernetes-side providers (`kind`, `kubeconfig`) without a cluster: the whole `kind` sequence
//! with fake tools on `PATH`, the install values and kind configs meshfed generates, the CI workflow
//! that runs the live tests, timed actions on real-cluster providers, the `kubeconfig` provider's
//! errors against clusters that are not there, and istioctl downloads from a loopback file server.
//! The live tests against real clusters are separate binaries (`kind_live`, `kubeconfig_live`).

#[path = "../support/mod.rs"]
mod support;

mod background_traffic;
mod istioctl_download;
mod kind_configs;
mod kind_install_values;
mod kind_sequence;
mod kind_workflow;
mod kubeconfig_cli;
