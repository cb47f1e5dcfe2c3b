//! Connecting to a cluster by kubeconfig context, with deadlines: a missing kubeconfig, an unknown
//! context or an API server that does not answer is reported within seconds, naming which.

use std::time::Duration;

use kube::config::{KubeConfigOptions, Kubeconfig, KubeconfigError};

/// How long the TCP/TLS connect to an API server may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the first call (`/version`) may take in all.
pub const REACH_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one ordinary request may take to answer (watches ask the server to end sooner).
pub const READ_TIMEOUT: Duration = Duration::from_secs(90);

/// Why a cluster cannot be reached.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// No kubeconfig could be read.
    #[error(
        "cluster {cluster}: no kubeconfig ({}): {source}",
        std::env::var("KUBECONFIG").map(|path| format!("KUBECONFIG={path}")).unwrap_or_else(|_| "KUBECONFIG unset, ~/.kube/config".to_owned())
    )]
    NoKubeconfig {
        /// Scenario cluster.
        cluster: String,
        /// Why reading failed.
        #[source]
        source: KubeconfigError,
    },
    /// The kubeconfig has no usable context of that name.
    #[error(
        "cluster {cluster}: kubeconfig context {context:?} is missing or unusable (contexts: {available}): {source}"
    )]
    Context {
        /// Scenario cluster.
        cluster: String,
        /// The context asked for.
        context: String,
        /// Contexts the kubeconfig has.
        available: String,
        /// Why.
        #[source]
        source: KubeconfigError,
    },
    /// The client could not be built (TLS material, proxy).
    #[error("cluster {cluster}: cannot build a client for context {context}: {source}")]
    Client {
        /// Scenario cluster.
        cluster: String,
        /// The context.
        context: String,
        /// Why.
        #[source]
        source: kube::Error,
    },
    /// The API server did not answer `/version` in time or refused.
    #[error("cluster {cluster}: the API server {server} (context {context}) is not reachable: {reason}")]
    Unreachable {
        /// Scenario cluster.
        cluster: String,
        /// The context.
        context: String,
        /// Its server URL.
        server: String,
        /// What happened.
        reason: String,
    },
}

/// A client for `context` of the user's kubeconfig (`KUBECONFIG` or `~/.kube/config`), checked to
/// answer `/version` within [`REACH_TIMEOUT`].
pub async fn connect(cluster: &str, context: &str) -> Result<kube::Client, ConnectError> {
    connect_with(cluster, context, None).await
}

/// [`connect`] with the kubeconfig file named (kind writes one per cluster) instead of the user's.
pub async fn connect_with(
    cluster: &str,
    context: &str,
    kubeconfig_file: Option<&std::path::Path>,
) -> Result<kube::Client, ConnectError> {
    let kubeconfig = match kubeconfig_file {
        Some(path) => Kubeconfig::read_from(path),
        None => Kubeconfig::read(),
    }
    .map_err(|source| ConnectError::NoKubeconfig {
        cluster: cluster.to_owned(),
        source,
    })?;
    let available = kubeconfig
        .contexts
        .iter()
        .map(|named| named.name.clone())
        .collect::<Vec<_>>()
        .join(", ");
    let options = KubeConfigOptions {
        context: Some(context.to_owned()),
        ..KubeConfigOptions::default()
    };
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .map_err(|source| ConnectError::Context {
            cluster: cluster.to_owned(),
            context: context.to_owned(),
            available: if available.is_empty() {
                "none".to_owned()
            } else {
                available
            },
            source,
        })?;
    config.connect_timeout = Some(CONNECT_TIMEOUT);
    config.read_timeout = Some(READ_TIMEOUT);
    let server = config.cluster_url.to_string();
    let client = kube::Client::try_from(config).map_err(|source| ConnectError::Client {
        cluster: cluster.to_owned(),
        context: context.to_owned(),
        source,
    })?;
    let unreachable = |reason: String| ConnectError::Unreachable {
        cluster: cluster.to_owned(),
        context: context.to_owned(),
        server: server.clone(),
        reason,
    };
    match tokio::time::timeout(REACH_TIMEOUT, client.apiserver_version()).await {
        Ok(Ok(_)) => Ok(client),
        Ok(Err(error)) => Err(unreachable(format!("{error}"))),
        Err(_) => Err(unreachable(format!(
            "no answer to /version within {} s",
            REACH_TIMEOUT.as_secs()
        ))),
    }
}
