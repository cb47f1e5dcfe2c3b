//! The command line's arguments: clap's definitions of every command and flag, and the help text.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use super::diff;
use crate::run::ProviderKind;
use crate::scenario::{self, IstioVersion, NEWEST_EMULATED_ISTIO, OLDEST_EMULATED_ISTIO};

/// Shown after `meshfed --help`: what a caller needs beyond the flags.
const AFTER_HELP: &str = "\
Exit codes:
  0    every expectation held (run), or the command did what it says
  1    the run completed and at least one expectation or isolation probe failed
       (plan --server-dry-run: an API server rejected an object)
  2    bad input or usage: the message names file, line and column; nothing was changed
  3    infrastructure: the world could not be created, reached or torn down (names what)
  130  interrupted (SIGINT/SIGTERM/SIGHUP); everything meshfed created was torn down

Environment:
  MESHFED_ENVOY               the Envoy binary for --provider local (else PATH, the cache, then pip)
  MESHFED_CACHE_DIR           cache for Envoy and istioctl (default $XDG_CACHE_HOME/meshfed or
                              ~/.cache/meshfed)
  MESHFED_WORKLOAD_IMAGE      kind: use this image for foo and bar instead of building one
  MESHFED_ISTIO_RELEASES_URL  kind: where istioctl releases are downloaded from
  KUBECONFIG                  kind/kubeconfig: the kubeconfig file(s), as for kubectl
  RUST_LOG                    which diagnostics reach stderr (e.g. meshfed=debug); overrides -v/-vv
  MESHFED_LIBRARY_HELPER      set by the meshfed library when it re-executes a test binary as meshfed;
                              not for users

Documentation (in the meshfed source tree):
  README.md            commands, providers, tests
  docs/scenario.md     the scenario file
  docs/inventory.md    the --inventory file of `meshfed plan`, with an example
  docs/report.md       report.json, field by field
  docs/library.md      running scenarios from Rust and `cargo test` (meshfed::run)
  docs/fidelity.md     what the local provider emulates of each Istio version";

/// meshfed: stand up an Istio mesh across clusters, federate it, and measure cross-cluster mTLS and load skew.
#[derive(Debug, Parser)]
#[command(name = "meshfed", version, about, long_about = None, after_help = AFTER_HELP)]
pub(super) struct Cli {
    /// More detail on stderr: -v adds meshfed's debug events (processes, plans applied, changes),
    /// -vv its trace events. RUST_LOG (e.g. `meshfed=debug,kube=debug`) overrides both.
    #[arg(short = 'v', long = "verbose", action = clap::ArgAction::Count, global = true)]
    pub(super) verbose: u8,
    #[command(subcommand)]
    pub(super) command: Command,
}

#[derive(Debug, Subcommand)]
pub(super) enum Command {
    /// Write the federation plan: every object each cluster needs, one YAML file per object.
    Plan {
        /// The scenario file.
        scenario: PathBuf,
        /// Output directory; gets one sub-directory per cluster. An earlier plan there is replaced in
        /// one step (a symlink is resolved to its target); any other non-empty directory is refused.
        #[arg(long)]
        out: PathBuf,
        /// A real inventory (ready pods, gateway addresses, Istio versions) instead of the scenario's;
        /// format and example in docs/inventory.md.
        #[arg(long)]
        inventory: Option<PathBuf>,
        /// Also validate the plan against each cluster's API server (`clusters[].context`, default
        /// `kind-<name>`): server-side apply with dryRun=All, so admission and CEL rules run and
        /// nothing is persisted. Exit 1 if the server rejects an object or one is in the way.
        #[arg(long)]
        server_dry_run: bool,
        /// Write the plan in force during this phase (its connection policy, endpoint weights and
        /// traffic policy) instead of the scenario-wide one.
        #[arg(long)]
        phase: Option<String>,
    },
    /// Write the mesh PKI: a root CA and each cluster's `cacerts` files (keys mode 0600).
    Certs {
        /// The scenario file.
        scenario: PathBuf,
        /// Output directory: `<cluster>/{ca-cert,ca-key,root-cert,cert-chain}.pem` and `root-ca/`.
        #[arg(long)]
        out: PathBuf,
        /// Replace a PKI already in the output directory (a new root CA: clusters that trust the old
        /// one will reject the new certificates).
        #[arg(long)]
        force: bool,
    },
    /// Build the world, federate it, send the scenario's traffic and check its expectations.
    Run(RunArgs),
    /// Remove what meshfed created: for kind, every kind cluster named `meshfed-*` and every image
    /// labelled `io.meshfed.managed-by=meshfed`, nothing else; for kubeconfig (which needs the
    /// scenario), exactly the objects carrying meshfed's labels for that scenario (a namespace
    /// holding objects of others is kept).
    Down {
        /// The scenario file (kubeconfig: names the clusters' contexts and the scenario label).
        scenario: Option<PathBuf>,
        /// Whose leftovers (local leaves none: its worlds die with their run).
        #[arg(long, value_enum, default_value_t = ProviderName::Kind)]
        provider: ProviderName,
    },
    /// Compare two run reports of one scenario: exit 0 when nothing differs beyond the thresholds,
    /// 1 when something does, 2 when they cannot be compared (docs/diff.md).
    Diff(diff::DiffArgs),
    /// Prepare this machine for the local provider: find or install Envoy, check namespaces work.
    Setup,
    /// Meshfed's own workloads, run inside a pod by the local provider.
    #[command(hide = true, subcommand)]
    Workload(WorkloadCommand),
}

/// `meshfed run`'s arguments.
#[derive(Debug, clap::Args)]
pub(super) struct RunArgs {
    /// The scenario file.
    pub(super) scenario: PathBuf,
    /// Where the clusters come from.
    #[arg(long, value_enum, default_value_t = ProviderName::Local)]
    pub(super) provider: ProviderName,
    /// Directory for report.json (created if missing).
    #[arg(long)]
    pub(super) report_dir: Option<PathBuf>,
    /// kind/kubeconfig: the image foo and bar run (meshfed's echo and client in it).
    #[arg(long)]
    pub(super) image: Option<String>,
    /// kind/kubeconfig: the meshfed executable inside `--image`.
    #[arg(long, default_value = "meshfed")]
    pub(super) image_command: String,
    /// kind: use existing `meshfed-<cluster>` clusters and keep them afterwards, so the next run
    /// starts in seconds (`meshfed down` deletes them).
    #[arg(long)]
    pub(super) reuse: bool,
    /// Then diff the new report against this one (a report.json or a report directory of the
    /// same scenario) as `meshfed diff REPORT NEW` does; exit with the worse of the two.
    #[arg(long, value_name = "REPORT")]
    pub(super) compare_to: Option<PathBuf>,
    /// Every cluster runs this Istio version instead of its `istioVersion`. Given twice or more:
    /// a version matrix, one run per version (reports in <report-dir>/<version>/), each version
    /// diffed against the one before it (docs/diff.md).
    #[arg(long = "istio-version", value_name = "VERSION", value_parser = istio_version_flag)]
    pub(super) istio_versions: Vec<scenario::IstioVersion>,
    /// Thresholds of --compare-to and of the version matrix's diffs.
    #[command(flatten)]
    pub(super) thresholds: diff::ThresholdArgs,
    /// kind: print every command and Kubernetes object the run would run or apply, in order,
    /// and exit without running anything (no Docker or network needed); refuses what the run
    /// would refuse (exit 2).
    #[arg(long)]
    pub(super) dry_run: bool,
    /// Keep every Envoy's log and config dump, the plan applied in each phase (YAML) and each
    /// phase's request records (CSV) in DIR. A failed run keeps them in `<report-dir>/logs/`
    /// without it. Private keys are never copied.
    #[arg(long, value_name = "DIR")]
    pub(super) keep_logs: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub(super) enum WorkloadCommand {
    /// The echo app: answers HTTP and TCP with its pod, cluster and the caller identity it saw.
    Echo {
        /// Pod name to report.
        #[arg(long)]
        pod: String,
        /// Cluster name to report.
        #[arg(long)]
        cluster: String,
        /// Address to listen on (the sidecar forwards to loopback).
        #[arg(long, default_value = "127.0.0.1")]
        bind: std::net::IpAddr,
        /// An HTTP port (repeatable).
        #[arg(long = "http")]
        http_ports: Vec<u16>,
        /// A TCP port (repeatable).
        #[arg(long = "tcp")]
        tcp_ports: Vec<u16>,
        /// A file holding the delay before each reply in milliseconds, re-read while running.
        #[arg(long)]
        delay_file: Option<std::path::PathBuf>,
    },
    /// The client app: sends requests and prints one JSON record per request on stdout.
    Client {
        /// `ip:port` to connect to (a service's cluster IP).
        #[arg(long)]
        target: std::net::SocketAddr,
        /// HTTP Host header.
        #[arg(long)]
        host: String,
        /// `http` or `tcp`.
        #[arg(long, value_enum)]
        protocol: WorkloadProtocol,
        /// Number of requests.
        #[arg(long)]
        requests: u64,
        /// Requests in flight at once.
        #[arg(long, default_value_t = 1)]
        concurrency: u32,
        /// `pooled` or `new-connection-per-request`.
        #[arg(long, value_enum, default_value_t = WorkloadConnections::Pooled)]
        connections: WorkloadConnections,
        /// Per-request timeout in milliseconds.
        #[arg(long, default_value_t = 5000)]
        timeout_ms: u64,
        /// OS threads (2 helps when every request opens a connection).
        #[arg(long, default_value_t = 1)]
        threads: u32,
        /// Requests started per second, evenly spaced (each still waits for a free worker).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        rate: Option<u32>,
        /// Wall-clock start of the traffic in microseconds since the Unix epoch: records'
        /// `started_us` and the pacing count from it (default: the client's start).
        #[arg(long)]
        epoch_unix_us: Option<u64>,
        /// Ends the client after this many seconds whatever it is doing (SIGALRM, whose default
        /// action terminates it; also while blocked writing records nobody reads): a client whose
        /// caller went away, e.g. an aborted pods/exec, must not run on in its pod.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        stop_after_s: Option<u32>,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub(super) enum WorkloadProtocol {
    Http,
    Tcp,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub(super) enum WorkloadConnections {
    Pooled,
    NewConnectionPerRequest,
}

/// The providers `meshfed run` knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ProviderName {
    /// Network namespaces and real Envoy on this machine (default).
    Local,
    /// kind clusters with real Istio, created by meshfed (needs Docker and kind).
    Kind,
    /// Existing clusters with Istio, by kubeconfig context (`clusters[].context`).
    Kubeconfig,
}

impl From<ProviderName> for ProviderKind {
    fn from(provider: ProviderName) -> Self {
        match provider {
            ProviderName::Local => ProviderKind::Local,
            ProviderName::Kind => ProviderKind::Kind,
            ProviderName::Kubeconfig => ProviderKind::Kubeconfig,
        }
    }
}

/// `--istio-version`: `major.minor[.patch]` within the emulated range, as the scenario field.
fn istio_version_flag(text: &str) -> Result<IstioVersion, String> {
    let version: IstioVersion = text.parse()?;
    let oldest = (OLDEST_EMULATED_ISTIO.major, OLDEST_EMULATED_ISTIO.minor);
    let newest = (NEWEST_EMULATED_ISTIO.major, NEWEST_EMULATED_ISTIO.minor);
    if (version.major, version.minor) < oldest || (version.major, version.minor) > newest {
        return Err(format!(
            "Istio {version} is outside the emulated range: use {}.{} to {}.{} (any patch; see docs/fidelity.md)",
            oldest.0, oldest.1, newest.0, newest.1
        ));
    }
    Ok(version)
}
