//! Providers: the worlds a scenario runs in (`local` network namespaces with real Envoy, `kind`, `kubeconfig`).

pub mod local;
