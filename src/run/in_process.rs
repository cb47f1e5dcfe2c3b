//! A run in this process, as `meshfed run` and the library's helper do it: load and check the
//! scenario, open the report directory, find or install Envoy, enter the sandbox, build the
//! runtime, run the engine, tear down (also on SIGINT/SIGTERM) and write `report.json` in one step.
//!
//! Must be called while the process is single-threaded for the local provider (it enters
//! namespaces): first thing in `main`, or in the helper process [`super::Run`] starts.

use std::path::{Path, PathBuf};

use crate::output;
use crate::progress::Progress;
use crate::provider::capabilities::Capabilities;
use crate::provider::kubeconfig::{KubeconfigOptions, KubeconfigProvider, WorkloadImage};
use crate::provider::local::{LocalProvider, interrupt};
use crate::report::Report;
use crate::scenario::{self, Scenario, ScenarioError};

use super::ProviderKind;

/// Why a run in this process gave no report; the command line maps each to its exit code.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RunFailure {
    /// Bad input (exit 2); nothing was created.
    #[error("{0}")]
    BadInput(String),
    /// The world could not be created, reached or torn down (exit 3).
    #[error("{0:#}")]
    Infrastructure(anyhow::Error),
    /// SIGINT/SIGTERM came; everything was torn down (exit 130).
    #[error("interrupted; everything meshfed created was torn down")]
    Interrupted,
}

impl From<ScenarioError> for RunFailure {
    fn from(error: ScenarioError) -> Self {
        RunFailure::BadInput(error.to_string())
    }
}

/// What to run.
pub(crate) struct RunRequest<'request> {
    /// The scenario file.
    pub scenario_path: &'request Path,
    /// Where the clusters come from.
    pub provider: ProviderKind,
    /// Where `report.json` goes, if anywhere.
    pub report_dir: Option<&'request Path>,
    /// kind/kubeconfig: the image foo and bar run.
    pub image: Option<String>,
    /// kind/kubeconfig: the meshfed executable inside the image.
    pub image_command: String,
    /// kind: keep and reuse `meshfed-<cluster>` clusters.
    pub reuse: bool,
    /// Every cluster's `istioVersion` instead of the scenario's (`--istio-version`).
    pub istio_version: Option<scenario::IstioVersion>,
    /// Where to keep proxy logs, config dumps, plans and records (`--keep-logs`); a failed run
    /// keeps them in `<report_dir>/logs/` without it.
    pub keep_logs: Option<&'request Path>,
}

/// An error of a step after which an interrupt may be the real cause: exit 130 if one came.
pub(crate) fn infrastructure_or_interrupted(error: impl Into<anyhow::Error>) -> RunFailure {
    if interrupt::is_interrupted() {
        RunFailure::Interrupted
    } else {
        RunFailure::Infrastructure(error.into())
    }
}

/// Fails with [`RunFailure::Interrupted`] if SIGINT/SIGTERM came; called between long steps.
pub(crate) fn check_interrupted() -> Result<(), RunFailure> {
    if interrupt::is_interrupted() {
        Err(RunFailure::Interrupted)
    } else {
        Ok(())
    }
}

/// What each provider supports, known before it is built.
pub(crate) fn capabilities(provider: ProviderKind) -> Capabilities {
    match provider {
        ProviderKind::Local => LocalProvider::CAPABILITIES,
        ProviderKind::Kubeconfig => KubeconfigProvider::CAPABILITIES,
        ProviderKind::Kind => crate::provider::kind::KIND_CAPABILITIES,
    }
}

/// The kubeconfig context of each cluster: `clusters[].context`, or kind's `kind-<name>` when
/// `default_to_kind`. A missing one is bad input pointing at the cluster.
pub(crate) fn contexts(
    scenario: &Scenario,
    file: &Path,
    default_to_kind: bool,
) -> Result<Vec<(String, String)>, ScenarioError> {
    scenario
        .clusters
        .iter()
        .map(|cluster| {
            let name = cluster.name.value.clone();
            match (&cluster.context, default_to_kind) {
                (Some(context), _) => Ok((name, context.clone())),
                (None, true) => Ok((name.clone(), format!("kind-{name}"))),
                (None, false) => Err(ScenarioError {
                    file: file.to_owned(),
                    line: cluster.name.referenced.line(),
                    column: cluster.name.referenced.column(),
                    message: format!(
                        "cluster {name} has no `context`: --provider kubeconfig needs the kubeconfig context of every cluster"
                    ),
                }),
            }
        })
        .collect()
}

/// Progress lines on stderr, timed from `started`.
fn stderr_progress(started: std::time::Instant) -> impl FnMut(&str) + Send + 'static {
    move |message: &str| tracing::info!("[{:6.2}s] {message}", started.elapsed().as_secs_f64())
}

/// A finished run whose report is not written yet: the caller shows the summary first, so a
/// report that cannot be written (a full disk) never hides the verdict.
pub(crate) struct FinishedRun {
    /// What the run found.
    pub report: Report,
    report_dir: Option<output::Dir>,
}

impl FinishedRun {
    /// Replaces `report.json` in the report directory, if one was asked for.
    pub(crate) fn write_report(&self) -> Result<(), RunFailure> {
        match &self.report_dir {
            Some(dir) => write_report(dir, &self.report),
            None => Ok(()),
        }
    }
}

/// Runs the scenario of `request`. A run whose expectations failed is `Ok`: the report says so.
pub(crate) fn run_scenario_file(request: RunRequest<'_>) -> Result<FinishedRun, RunFailure> {
    let scenario = scenario::load_with_istio_version(request.scenario_path, request.istio_version)?;
    crate::engine::check_runnable(&scenario, request.scenario_path, &capabilities(request.provider))?;
    crate::engine::check_provider_supports(&scenario, request.scenario_path, request.provider.cli_name())?;
    if request.reuse && request.provider != ProviderKind::Kind {
        return Err(RunFailure::BadInput(
            "--reuse applies to --provider kind only".to_owned(),
        ));
    }
    // Opened before the sandbox: the handle still reaches it after the sandbox's tmpfs hides /run,
    // and a directory that cannot take a report fails before any world is built.
    let report_dir = request
        .report_dir
        .map(|dir| open_output_dir(dir, "the report directory (--report-dir)"))
        .transpose()?;
    let keep_dir = request
        .keep_logs
        .map(|dir| open_output_dir(dir, "the --keep-logs directory"))
        .transpose()?;
    let keeping = Keeping {
        always: keep_dir.as_ref(),
        on_failure: report_dir.as_ref(),
    };
    let started = std::time::Instant::now();
    let mut progress = stderr_progress(started);
    let report = match request.provider {
        ProviderKind::Kubeconfig => {
            contexts(&scenario, request.scenario_path, false)?;
            let image = request.image.ok_or_else(|| {
                RunFailure::BadInput(
                    "--provider kubeconfig needs --image IMAGE: the image foo and bar run (meshfed's echo and client)"
                        .to_owned(),
                )
            })?;
            check_interrupted()?;
            let options = KubeconfigOptions::new(WorkloadImage {
                image,
                command: request.image_command,
            });
            multi_thread_runtime()?.block_on(run_world(
                KubeconfigProvider::new(options),
                &scenario,
                request.scenario_path,
                &mut progress,
                keeping,
            ))?
        }
        ProviderKind::Kind => {
            let provider = kind_provider(request.reuse, started, scenario.federation.mode)?;
            current_thread_runtime()?.block_on(run_world(
                provider,
                &scenario,
                request.scenario_path,
                &mut progress,
                keeping,
            ))?
        }
        ProviderKind::Local => {
            let provider = local_provider(&mut progress)?;
            current_thread_runtime()?.block_on(run_world(
                provider,
                &scenario,
                request.scenario_path,
                &mut progress,
                keeping,
            ))?
        }
    };
    Ok(FinishedRun { report, report_dir })
}

fn current_thread_runtime() -> Result<tokio::runtime::Runtime, RunFailure> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(infrastructure_or_interrupted)
}

/// The Kubernetes providers' futures are `Send`; two workers keep the API calls moving.
pub(crate) fn multi_thread_runtime() -> Result<tokio::runtime::Runtime, RunFailure> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(infrastructure_or_interrupted)
}

/// Enters the sandbox and finds Envoy: everything from here on (pip, envoy --version, Envoys,
/// apps, and whatever they start) lives in meshfed's PID namespace and dies with it, even on
/// SIGKILL. Must happen while the process is single-threaded: before any runtime exists.
fn local_provider(progress: &mut impl Progress) -> Result<LocalProvider, RunFailure> {
    use crate::provider::local::{LocalOptions, sandbox};
    check_interrupted()?;
    let mode = sandbox::contain_processes().map_err(infrastructure_or_interrupted)?;
    check_interrupted()?;
    progress.step("checking envoy");
    let (envoy, envoy_version) = provision_envoy(true)?;
    // The workloads run as `<this executable> workload ...`: the meshfed binary, or a test binary
    // acting as meshfed (see `run::helper_role`).
    let meshfed = std::env::current_exe().map_err(infrastructure_or_interrupted)?;
    check_interrupted()?;
    sandbox::isolate_network().map_err(infrastructure_or_interrupted)?;
    check_interrupted()?;
    progress.step(&format!(
        "sandbox entered ({mode}); envoy {envoy_version} at {}",
        envoy.display()
    ));
    Ok(LocalProvider::new(LocalOptions {
        envoy,
        envoy_version: envoy_version.to_string(),
        meshfed,
        run_dir: PathBuf::from(sandbox::RUN_DIR).join("world"),
        mode,
    }))
}

/// The kind provider for this machine: tools from `PATH`, meshfed's cache, a run directory of its
/// own, the workload image built from this binary unless `MESHFED_WORKLOAD_IMAGE` names one.
fn kind_provider(
    reuse: bool,
    started: std::time::Instant,
    mode: scenario::FederationMode,
) -> Result<crate::provider::kind::KindProvider<KubeconfigProvider>, RunFailure> {
    use crate::provider::kind::{KindOptions, KindProvider, Tools, istioctl};
    let cache_dir = crate::provider::local::envoy_binary::locate::cache_dir().map_err(infrastructure_or_interrupted)?;
    let options = KindOptions {
        tools: Tools::from_env(),
        cache_dir,
        releases_url: istioctl::releases_url(),
        run_dir: crate::provider::kind::run_dir(&std::env::temp_dir()),
        reuse,
        workload_binary: std::env::current_exe().map_err(infrastructure_or_interrupted)?,
        workload_image: std::env::var("MESHFED_WORKLOAD_IMAGE")
            .ok()
            .filter(|image| !image.is_empty()),
        progress: Box::new(stderr_progress(started)),
    };
    // The Kubernetes half: the kubeconfig provider on the clusters kind made (it learns their
    // kubeconfig files and the workload image when kind attaches them).
    let mut kube = KubeconfigOptions::new(WorkloadImage {
        image: String::new(),
        command: "/usr/local/bin/meshfed".to_owned(),
    });
    kube.gateway_service = (
        "istio-system".to_owned(),
        crate::provider::kind::install::federation_gateway(mode).to_owned(),
    );
    Ok(KindProvider::new(options, KubeconfigProvider::new(kube)))
}

/// Where a run keeps its diagnostics ([`crate::diagnostics`]).
#[derive(Clone, Copy)]
struct Keeping<'dirs> {
    /// `--keep-logs DIR`: kept whatever the verdict.
    always: Option<&'dirs output::Dir>,
    /// The report directory: a failed run (exit 1 or 3) keeps them in its `logs/`.
    on_failure: Option<&'dirs output::Dir>,
}

/// The subdirectory of the report directory a failed run keeps its diagnostics in.
pub(crate) const FAILED_RUN_LOGS: &str = "logs";

/// Runs the engine until it ends or SIGINT/SIGTERM comes, then tears the world down either way.
/// Before teardown, the diagnostics are taken from the proxies when `keeping` asks for them.
async fn run_world<P: crate::provider::Provider>(
    mut provider: P,
    scenario: &Scenario,
    scenario_path: &Path,
    progress: &mut impl Progress,
    keeping: Keeping<'_>,
) -> Result<Report, RunFailure> {
    // Registered before any work, so a signal during world creation is handled, not fatal.
    let interrupted = interrupted().map_err(|error| RunFailure::Infrastructure(error.into()))?;
    let mut evidence = crate::diagnostics::Evidence::default();
    let outcome = tokio::select! {
        result = crate::engine::run_scenario_noting(&mut provider, scenario, scenario_path, progress, &mut evidence) => Some(result),
        () = interrupted => None,
    };
    // Exit 1 (an expectation failed) or 3 (the world failed); not an interrupt.
    let failed = matches!(&outcome, Some(Err(_)) | Some(Ok(Report { passed: false, .. })));
    // A failed run's earlier logs are replaced; a passing one leaves none behind.
    let stale = keeping
        .on_failure
        .map(|dir| dir.remove_tree(FAILED_RUN_LOGS))
        .transpose();
    let failed_run_logs = match (failed, keeping.on_failure) {
        (true, Some(report_dir)) => report_dir
            .create_dir(FAILED_RUN_LOGS, 0o755)
            .map_err(|error| {
                warn(&format!(
                    "cannot create {}: {error}",
                    report_dir.path().join(FAILED_RUN_LOGS).display()
                ));
            })
            .ok(),
        _ => None,
    };
    // An interrupted run tears down at once: nothing is asked of its proxies.
    let targets: Vec<&output::Dir> = match outcome {
        Some(_) => keeping.always.into_iter().chain(failed_run_logs.as_ref()).collect(),
        None => Vec::new(),
    };
    if !targets.is_empty() {
        progress.step("keeping proxy logs, config dumps, plans and records");
        let mut files = provider.proxy_files().await;
        match evidence.files() {
            Ok(kept) => files.extend(kept),
            Err(error) => warn(&format!("cannot render the applied plans as YAML: {error}")),
        }
        for dir in targets {
            match crate::diagnostics::write_kept(dir, &files) {
                Ok(withheld) => {
                    for file in withheld {
                        warn(&format!(
                            "not kept (it holds a private key): {}",
                            dir.path().join(file).display()
                        ));
                    }
                    progress.step(&format!("diagnostics kept in {}", dir.path().display()));
                }
                Err(error) => warn(&format!("{:#}", anyhow::Error::new(error))),
            }
        }
    }
    if let Err(error) = stale {
        warn(&format!("cannot remove earlier logs in the report directory: {error}"));
    }
    progress.step("tearing down");
    let teardown = provider.teardown(progress).await;
    // A step that failed because of the interrupt (an `ip` batch or a child stopped by it) is an
    // interrupt too, not an infrastructure failure.
    if interrupt::is_interrupted() {
        return Err(RunFailure::Interrupted);
    }
    match (outcome, teardown) {
        (None, _) => Err(RunFailure::Interrupted),
        (Some(Err(error)), _) => Err(RunFailure::Infrastructure(error.into())),
        (Some(Ok(_)), Err(error)) => Err(RunFailure::Infrastructure(
            anyhow::Error::new(error).context("teardown failed"),
        )),
        (Some(Ok(report)), Ok(())) => Ok(report),
    }
}

/// A future that resolves on SIGINT (Ctrl-C) or SIGTERM. tokio's handlers are installed at once
/// (they chain the flag-setting handler of [`interrupt::install`]); a signal that came before them
/// is seen in the flag.
fn interrupted() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt_stream = signal(SignalKind::interrupt())?;
    let mut terminate_stream = signal(SignalKind::terminate())?;
    let already = interrupt::is_interrupted();
    Ok(async move {
        if already {
            return;
        }
        tokio::select! {
            _ = interrupt_stream.recv() => {}
            _ = terminate_stream.recv() => {}
        }
    })
}

/// A diagnostic that must not change the verdict: shown, not raised.
fn warn(message: &str) {
    tracing::warn!("meshfed: {message}");
}

/// Finds or installs Envoy ([`crate::provider::local::provision_envoy`]); interrupted if a signal
/// came meanwhile.
fn provision_envoy(
    show_progress: bool,
) -> Result<(PathBuf, crate::provider::local::envoy_binary::EnvoyVersion), RunFailure> {
    crate::provider::local::provision_envoy(show_progress).map_err(|error| {
        if error.is_interrupted() || interrupt::is_interrupted() {
            RunFailure::Interrupted
        } else {
            RunFailure::Infrastructure(error.into())
        }
    })
}

/// `meshfed setup`: enters the sandbox, finds or installs Envoy, checks network namespaces work.
/// Returns Envoy's version and path and the sandbox mode, for the caller to print.
pub(crate) fn setup(mut on_envoy: impl FnMut(&str, &Path)) -> Result<String, RunFailure> {
    use crate::provider::local::{network, sandbox};
    check_interrupted()?;
    let mode = sandbox::contain_processes().map_err(infrastructure_or_interrupted)?;
    let (envoy, version) = provision_envoy(true)?;
    on_envoy(&version.to_string(), &envoy);
    check_interrupted()?;
    sandbox::isolate_network().map_err(infrastructure_or_interrupted)?;
    network::check_namespaces_work().map_err(infrastructure_or_interrupted)?;
    Ok(mode.to_string())
}

/// A directory the run writes to (`what`: the report directory, or the `--keep-logs` one, named
/// as such in messages), created, opened and checked: exit 2 if it cannot be used, 3 if the disk
/// is full.
fn open_output_dir(dir: &Path, what: &str) -> Result<output::Dir, RunFailure> {
    let handle = output::Dir::create_all(dir).map_err(|error| {
        let message = format!("cannot create {what} {}: {error}", dir.display());
        if output::is_out_of_space(&error) {
            RunFailure::Infrastructure(anyhow::anyhow!(message))
        } else {
            RunFailure::BadInput(message)
        }
    })?;
    handle.check_writable().map_err(|error| {
        let out_of_space = error.is_out_of_space();
        let message = format!(
            "cannot write to {what} {}: {:#}",
            dir.display(),
            anyhow::Error::new(error)
        );
        if out_of_space {
            RunFailure::Infrastructure(anyhow::anyhow!(message))
        } else {
            RunFailure::BadInput(message)
        }
    })?;
    Ok(handle)
}

const REPORT_FILE: &str = "report.json";

/// Replaces `report.json` in one step; on failure the earlier report is unchanged (exit 3).
fn write_report(dir: &output::Dir, report: &Report) -> Result<(), RunFailure> {
    let path = dir.path().join(REPORT_FILE);
    let json = serde_json::to_string_pretty(report).map_err(|error| RunFailure::Infrastructure(error.into()))?;
    dir.write_file_atomic(REPORT_FILE, (json + "\n").as_bytes(), 0o644)
        .map_err(|error| {
            RunFailure::Infrastructure(anyhow::Error::new(error).context(format!(
                "cannot write {} (the run itself {}; any earlier {REPORT_FILE} there is unchanged)",
                path.display(),
                if report.passed { "passed" } else { "failed" }
            )))
        })?;
    for (name, written) in [
        (crate::report::JUNIT_FILE, crate::report::write_junit(dir, report)),
        (crate::report::HTML_FILE, crate::report::write_html(dir, report)),
    ] {
        written.map_err(|error| {
            RunFailure::Infrastructure(
                anyhow::Error::new(error).context(format!("cannot write {}", dir.path().join(name).display())),
            )
        })?;
    }
    tracing::info!(
        "report written to {} (with {} and {})",
        path.display(),
        crate::report::JUNIT_FILE,
        crate::report::HTML_FILE
    );
    Ok(())
}
