//! Runs the network's `ip` batches and sysctls (each batch with a deadline, stopped on Ctrl-C
//! except when cleaning up) and removes the namespaces again.

use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use thiserror::Error;

use super::commands::{
    ClusterNetwork, NamespaceSetup, NetnsNames, NetworkSpec, NetworkSpecError, PodAddress, Sysctl,
    mk_add_cluster_commands, mk_add_pod_commands, mk_network_commands, mk_remove_cluster_router_commands,
};
use super::netns::enter_netns_for_this_thread;
use crate::process::{BoundedRun, BoundedRunError, bounded_run};
use crate::provider::local::sandbox::NETNS_DIR;

/// Why the network could not be created or removed.
#[derive(Debug, Error)]
pub enum NetworkError {
    /// The spec is inconsistent.
    #[error(transparent)]
    InvalidSpec(#[from] NetworkSpecError),
    /// The `ip` binary (iproute2) could not be started.
    #[error("failed to run `ip` (iproute2) for namespace {netns}; is iproute2 installed?")]
    SpawnIp {
        /// Where it was meant to run (`sandbox` for meshfed's own namespace).
        netns: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// An `ip -batch` exited unsuccessfully.
    #[error("`ip -batch` in namespace {netns} failed ({status}): {stderr}")]
    IpFailed {
        /// Where it ran (`sandbox` for meshfed's own namespace).
        netns: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// What it printed on stderr (names the failing line).
        stderr: String,
    },
    /// An `ip -batch` did not finish within [`IP_BATCH_TIMEOUT`], or meshfed was interrupted while
    /// it ran; it was killed. The message names the batch and its namespace.
    #[error(transparent)]
    IpStopped(BoundedRunError),
    /// Entering a namespace failed.
    #[error("failed to enter network namespace {netns}")]
    EnterNetns {
        /// The namespace.
        netns: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Writing a sysctl failed.
    #[error("failed to set sysctl {key}={value} in network namespace {netns}")]
    Sysctl {
        /// The namespace.
        netns: String,
        /// Path under `/proc/sys`.
        key: String,
        /// The value.
        value: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A namespace was still listed after teardown.
    #[error("network namespaces still present after teardown: {0:?}")]
    Leftover(Vec<String>),
}

impl NetworkError {
    /// Whether an `ip` batch was stopped because meshfed was interrupted (exit 130, not 3).
    pub fn is_interrupted(&self) -> bool {
        matches!(self, NetworkError::IpStopped(BoundedRunError::Interrupted { .. }))
    }
}

/// How long one `ip -batch` may take. Creating a hundred namespaces with their veths takes well
/// under a second; a batch still running after this is stuck (e.g. on the RTNL lock).
pub const IP_BATCH_TIMEOUT: Duration = Duration::from_secs(30);

/// Whether a batch stops when meshfed is interrupted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum OnInterrupt {
    /// Building: stop, the teardown removes what exists.
    Stop,
    /// Cleaning up: must run to the end even (especially) after Ctrl-C.
    Finish,
}

/// A created network; its namespaces are under `/run/netns`.
///
/// Dropping it tears it down (best effort); [`Network::teardown`] does so and reports errors.
#[derive(Debug)]
pub struct Network {
    names: NetnsNames,
    netns_names: Vec<String>,
    torn_down: bool,
    /// What exists now: pods and clusters added and removed while it runs are kept here.
    spec: NetworkSpec,
    /// Each cluster's bridge number in the router (a number is never reused within a run).
    bridges: std::collections::BTreeMap<String, usize>,
    /// Pods added so far (names the router's ends of their veths).
    pods_added: usize,
}

static NETWORKS_CREATED: AtomicUsize = AtomicUsize::new(0);

/// Creates the network described by `spec`, with namespace names prefixed per run
/// (`mf<pid>-<n>-`), and returns it.
///
/// Run it inside the sandbox (see `sandbox::enter`): it needs `CAP_NET_ADMIN`/`CAP_SYS_ADMIN` over
/// meshfed's namespaces, which rootless meshfed only has there. On failure, whatever was created is
/// removed again.
pub fn create_network(spec: &NetworkSpec) -> Result<Network, NetworkError> {
    let names = NetnsNames::new(format!(
        "mf{}-{}-",
        std::process::id(),
        NETWORKS_CREATED.fetch_add(1, Ordering::Relaxed)
    ));
    create_network_named(spec, names)
}

/// Like [`create_network`], with the caller's namespace names.
pub fn create_network_named(spec: &NetworkSpec, names: NetnsNames) -> Result<Network, NetworkError> {
    let commands = mk_network_commands(spec, &names)?;
    let network = Network {
        names,
        netns_names: commands.netns_names.clone(),
        torn_down: false,
        spec: spec.clone(),
        bridges: spec
            .clusters
            .iter()
            .enumerate()
            .map(|(index, cluster)| (cluster.name.clone(), index))
            .collect(),
        pods_added: 0,
    };
    // On error `network` is dropped here, which deletes whatever namespaces exist.
    run_ip_batch(
        "creating the namespaces and veths",
        "sandbox",
        &[],
        &commands.create,
        OnInterrupt::Stop,
    )?;
    configure_in_parallel(&commands.configure)?;
    Ok(network)
}

/// Runs each set-up in its own namespace, in parallel (each on a thread of its own, since entering
/// a namespace is per thread).
fn configure_in_parallel(setups: &[NamespaceSetup]) -> Result<(), NetworkError> {
    std::thread::scope(|scope| {
        let running: Vec<_> = setups
            .iter()
            .map(|setup| scope.spawn(move || configure_namespace(setup)))
            .collect();
        running.into_iter().try_for_each(|setup| match setup.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        })
    })
}

fn configure_namespace(setup: &NamespaceSetup) -> Result<(), NetworkError> {
    enter_netns_for_this_thread(&netns_path(&setup.netns)).map_err(|source| NetworkError::EnterNetns {
        netns: setup.netns.clone(),
        source,
    })?;
    for Sysctl { key, value } in &setup.sysctls {
        std::fs::write(Path::new("/proc/sys").join(key), value).map_err(|source| NetworkError::Sysctl {
            netns: setup.netns.clone(),
            key: key.clone(),
            value: value.clone(),
            source,
        })?;
    }
    // `ip` forked from this thread starts in the namespace this thread entered.
    run_ip_batch(
        "configuring addresses and routes",
        &setup.netns,
        &[],
        &setup.ip_commands,
        OnInterrupt::Stop,
    )
}

/// Runs `ip [options] -batch -` with `commands` on stdin, in the calling thread's network namespace,
/// within [`IP_BATCH_TIMEOUT`]. `purpose` and `netns` name the batch in errors.
fn run_ip_batch(
    purpose: &str,
    netns: &str,
    options: &[&str],
    commands: &[String],
    on_interrupt: OnInterrupt,
) -> Result<(), NetworkError> {
    run_ip_batch_within(purpose, netns, options, commands, on_interrupt, IP_BATCH_TIMEOUT, "ip")
}

fn run_ip_batch_within(
    purpose: &str,
    netns: &str,
    options: &[&str],
    commands: &[String],
    on_interrupt: OnInterrupt,
    timeout: Duration,
    ip_binary: &str,
) -> Result<(), NetworkError> {
    let mut ip = Command::new(ip_binary);
    ip.args(options).args(["-batch", "-"]);
    let mut script = commands.join("\n");
    script.push('\n');
    let run = BoundedRun {
        what: format!(
            "`ip -batch` {purpose} in namespace {netns} ({} lines, first: {:?})",
            commands.len(),
            commands.first().map(String::as_str).unwrap_or_default()
        ),
        timeout,
        stdin: Some(script.into_bytes()),
        capture: true,
        interruptible: on_interrupt == OnInterrupt::Stop,
    };
    // If `ip` stops at a failing line it closes its stdin; its exit status and stderr say more
    // than the broken pipe.
    let output = bounded_run(ip, &run).map_err(|error| match error {
        BoundedRunError::Spawn { source, .. } => NetworkError::SpawnIp {
            netns: netns.to_string(),
            source,
        },
        other => NetworkError::IpStopped(other),
    })?;
    if output.status.success() {
        Ok(())
    } else {
        Err(NetworkError::IpFailed {
            netns: netns.to_string(),
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        })
    }
}

fn netns_path(name: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(name)
}

impl Network {
    /// The namespace of pod `pod` (or the gateway) of cluster `cluster`, or `None` if there is none.
    pub fn netns_path(&self, cluster: &str, pod: &str) -> Option<PathBuf> {
        let name = self.names.pod(cluster, pod);
        self.netns_names.contains(&name).then(|| netns_path(&name))
    }

    /// Every namespace of this network, router first.
    pub fn netns_names(&self) -> &[String] {
        &self.netns_names
    }

    fn cluster_position(&self, cluster: &str) -> Option<(usize, usize)> {
        let position = self.spec.clusters.iter().position(|known| known.name == cluster)?;
        Some((position, *self.bridges.get(cluster)?))
    }

    /// Adds pods to a cluster of the running network (a scale-up) and returns their namespaces,
    /// in order: one `ip` batch creates every namespace and veth pair, then each namespace and the
    /// router are configured in parallel, as [`create_network`] does. One `ip` run per pod and
    /// step cost a 50-pod scale-up seconds (three runs per pod, each waiting on a busy machine).
    pub fn add_pods(&mut self, cluster: &str, pods: &[PodAddress]) -> Result<Vec<PathBuf>, NetworkError> {
        let (position, bridge) = self
            .cluster_position(cluster)
            .ok_or_else(|| NetworkSpecError::new(format!("no cluster {cluster} in the network")))?;
        let mut spec = self.spec.clone();
        let mut create = Vec::new();
        let mut setups = Vec::new();
        let mut router = NamespaceSetup {
            netns: self.names.router(),
            sysctls: Vec::new(),
            ip_commands: Vec::new(),
        };
        for pod in pods {
            spec.clusters[position].pods.push(pod.clone());
            let commands = mk_add_pod_commands(&spec, position, bridge, pod, self.pods_added, &self.names)?;
            self.pods_added += 1;
            // Listed first, so a failure half-way still removes it at teardown.
            self.netns_names.push(commands.setup.netns.clone());
            create.extend(commands.create);
            setups.push(commands.setup);
            router.sysctls.extend(commands.router.sysctls);
            router.ip_commands.extend(commands.router.ip_commands);
        }
        self.spec = spec;
        let what = match pods {
            [pod] => format!("adding pod {} to {cluster}", pod.name),
            _ => format!("adding {} pods to {cluster}", pods.len()),
        };
        run_ip_batch(&what, "sandbox", &[], &create, OnInterrupt::Stop)?;
        let namespaces = setups.iter().map(|setup| netns_path(&setup.netns)).collect();
        setups.push(router);
        configure_in_parallel(&setups)?;
        Ok(namespaces)
    }

    /// Removes a pod's namespace (its veth pair goes with it) and checks it is gone.
    pub fn remove_pod(&mut self, cluster: &str, pod: &str) -> Result<(), NetworkError> {
        let name = self.names.pod(cluster, pod);
        delete_namespaces(std::slice::from_ref(&name))?;
        self.netns_names.retain(|known| *known != name);
        if let Some(known) = self.spec.clusters.iter_mut().find(|known| known.name == cluster) {
            known.pods.retain(|known| known.name != pod);
        }
        Ok(())
    }

    /// Adds a whole cluster (one that joins) to the running network.
    pub fn add_cluster(&mut self, cluster: &ClusterNetwork) -> Result<(), NetworkError> {
        let bridge = self.bridges.values().max().map_or(0, |highest| highest + 1);
        let mut spec = self.spec.clone();
        spec.clusters.push(cluster.clone());
        let commands = mk_add_cluster_commands(&spec, spec.clusters.len() - 1, bridge, &self.names)?;
        self.netns_names.extend(commands.netns_names.iter().cloned());
        self.spec = spec;
        self.bridges.insert(cluster.name.clone(), bridge);
        run_ip_batch(
            &format!("adding cluster {}", cluster.name),
            "sandbox",
            &[],
            &commands.create,
            OnInterrupt::Stop,
        )?;
        configure_in_parallel(&commands.configure)
    }

    /// Removes a whole cluster (one that leaves): its namespaces, then its bridge and the router's
    /// refusals; checks its namespaces are gone.
    pub fn remove_cluster(&mut self, cluster: &str) -> Result<(), NetworkError> {
        let (position, bridge) = self
            .cluster_position(cluster)
            .ok_or_else(|| NetworkSpecError::new(format!("no cluster {cluster} in the network")))?;
        let prefix = self.names.pod(cluster, "");
        let namespaces: Vec<String> = self
            .netns_names
            .iter()
            .filter(|name| name.starts_with(&prefix))
            .cloned()
            .collect();
        delete_namespaces(&namespaces)?;
        self.netns_names.retain(|name| !namespaces.contains(name));
        if let Some(router) = mk_remove_cluster_router_commands(&self.spec, position, bridge, &self.names) {
            configure_in_parallel(&[router])?;
        }
        self.spec.clusters.remove(position);
        self.bridges.remove(cluster);
        Ok(())
    }

    /// Deletes every namespace (and with them their veths and bridges), then checks none is left.
    pub fn teardown(mut self) -> Result<(), NetworkError> {
        self.torn_down = true;
        delete_namespaces(&self.netns_names)
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        if !self.torn_down {
            let _ = delete_namespaces(&self.netns_names);
        }
    }
}

fn delete_namespaces(names: &[String]) -> Result<(), NetworkError> {
    let existing: Vec<&String> = names.iter().filter(|name| netns_path(name).exists()).collect();
    if existing.is_empty() {
        return Ok(());
    }
    let commands: Vec<String> = existing.iter().map(|name| format!("netns del {name}")).collect();
    // Keep going even if one line fails (`-force`), then check what is left.
    let result = run_ip_batch(
        "deleting the namespaces",
        "sandbox",
        &["-force"],
        &commands,
        OnInterrupt::Finish,
    );
    let left: Vec<String> = names.iter().filter(|name| netns_path(name).exists()).cloned().collect();
    if !left.is_empty() {
        return Err(NetworkError::Leftover(left));
    }
    result
}

/// Creates and deletes one network namespace with a veth pair: what `meshfed setup` checks.
pub fn check_namespaces_work() -> Result<(), NetworkError> {
    let probe = "meshfed-setup-probe".to_owned();
    let result = run_ip_batch(
        "probing that namespaces work",
        "sandbox",
        &[],
        &[
            format!("netns add {probe}"),
            format!("link add eth0 netns {probe} type veth peer name probe0 netns {probe}"),
        ],
        OnInterrupt::Stop,
    );
    let deleted = delete_namespaces(std::slice::from_ref(&probe));
    result.and(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stuck_ip_batch_is_killed_and_named_with_its_namespace() {
        let dir = std::env::temp_dir().join(format!("meshfed-ip-batch-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // A stand-in `ip` that reads its batch, then hangs.
        let fake_ip = dir.join("ip");
        std::fs::write(&fake_ip, "#!/bin/sh\ncat > /dev/null\nsleep 30\n").unwrap();
        std::fs::set_permissions(&fake_ip, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let started = std::time::Instant::now();
        let error = run_ip_batch_within(
            "configuring addresses and routes",
            "mf1-0-c1.bar-0",
            &[],
            &["link set lo up".to_string(), "link set eth0 up".to_string()],
            OnInterrupt::Stop,
            Duration::from_millis(300),
            fake_ip.to_str().unwrap(),
        )
        .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
        assert!(!error.is_interrupted());
        assert_eq!(
            error.to_string(),
            "`ip -batch` configuring addresses and routes in namespace mf1-0-c1.bar-0 (2 lines, first: \
             \"link set lo up\") did not answer within 300 ms; it was killed"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_failing_ip_batch_quotes_its_stderr() {
        let error = run_ip_batch_within(
            "probing",
            "sandbox",
            &[],
            &["no-such-object".to_string()],
            OnInterrupt::Stop,
            Duration::from_secs(10),
            "ip",
        )
        .unwrap_err();
        let message = error.to_string();
        assert!(
            message.starts_with("`ip -batch` in namespace sandbox failed"),
            "{message}"
        );
        assert!(message.contains("no-such-object"), "{message}");
    }
}
