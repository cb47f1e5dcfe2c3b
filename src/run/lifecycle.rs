//! A run's lifecycle in this process, as `meshfed run` and the library's helper do it: load and
//! check the scenario, open the report directory, find or install Envoy, enter the sandbox, build
//! the runtime, drive the scenario ([`crate::driver`]), tear down (also on SIGINT/SIGTERM) and
//! write `report.json` in one step.
//!
//! Must be called while the process is single-threaded for the local provider (it enters
//! namespaces): first thing in `main`, or in the helper process [`super::Run`] starts.

use std::path::{Path, PathBuf};

use crate::interrupt;
use crate::progress::Progress;
use crate::provider::capabilities::Capabilities;
use crate::provider::kubeconfig::{KubeconfigOptions, KubeconfigProvider, WorkloadImage};
use crate::provider::local::LocalProvider;
use crate::report::Report;
use crate::scenario::{self, Scenario, ScenarioError};

use super::ProviderKind;
pub(crate) use super::failure::RunFailure;
use super::live_display::LiveDisplay;
use super::logs_dir::{self, LogsDir};
use super::report_dir::{self, ReportDir};

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

/// Progress lines on stderr, timed from `started`: into the live view when one is shown, else
/// plain lines.
fn stderr_progress(started: std::time::Instant, live: Option<&LiveDisplay>) -> Box<dyn FnMut(&str) + Send> {
    match live {
        Some(live) => Box::new(live.progress()),
        None => Box::new(move |message: &str| tracing::info!("[{:6.2}s] {message}", started.elapsed().as_secs_f64())),
    }
}

/// A finished run whose report is not written yet: the caller shows the summary first, so a
/// report that cannot be written (a full disk) never hides the verdict.
pub(crate) struct FinishedRun {
    /// What the run found.
    pub report: Report,
    report_dir: Option<ReportDir>,
}

impl FinishedRun {
    /// Replaces `report.json` in the report directory, if one was asked for.
    pub(crate) fn write_report(&self) -> Result<(), RunFailure> {
        match &self.report_dir {
            Some(dir) => report_dir::write_report(dir, &self.report),
            None => Ok(()),
        }
    }
}

/// On the providers with real Istio, refuses (before anything is created) what real Istio cannot
/// do: an Istio that does not install on kind's pinned node image, an in-place upgrade that skips
/// a minor ([`crate::plan::support_matrix`]). The Kubernetes of `kubeconfig` clusters is not known
/// before connecting, so there only the upgrade rule applies.
pub(crate) fn check_real_istio(
    scenario: &Scenario,
    file: &std::path::Path,
    provider: ProviderKind,
) -> Result<(), scenario::ScenarioError> {
    use crate::plan::support_matrix::{KIND, check_real_istio};
    match provider {
        ProviderKind::Local => Ok(()),
        ProviderKind::Kind => check_real_istio(scenario, file, provider.cli_name(), Some(KIND.kubernetes_minor)),
        ProviderKind::Kubeconfig => check_real_istio(scenario, file, provider.cli_name(), None),
    }
}

/// The scenario at `path`, checked for everything `provider` would refuse before creating
/// anything (the live run and `--dry-run` refuse the same scenarios).
fn load_runnable(
    path: &std::path::Path,
    provider: ProviderKind,
    istio_version: Option<scenario::IstioVersion>,
) -> Result<Scenario, RunFailure> {
    let scenario = scenario::load_with_istio_version(path, istio_version)?;
    check_real_istio(&scenario, path, provider)?;
    crate::driver::check_runnable(&scenario, path, &capabilities(provider))?;
    Ok(scenario)
}

/// `meshfed run SCENARIO --provider kind --dry-run`: what the kind run would run and apply, in
/// order ([`crate::provider::kind::dry_run`]), after the same refusals as a live run.
pub(crate) fn kind_dry_run(
    path: &std::path::Path,
    istio_version: Option<scenario::IstioVersion>,
) -> Result<String, RunFailure> {
    use crate::provider::kind::{dry_run, istioctl};
    let scenario = load_runnable(path, ProviderKind::Kind, istio_version)?;
    dry_run::dry_run(
        &scenario,
        &dry_run::DryRunInputs {
            releases_url: istioctl::releases_url(),
            os: std::env::consts::OS.to_owned(),
            arch: std::env::consts::ARCH.to_owned(),
            workload_image: std::env::var("MESHFED_WORKLOAD_IMAGE")
                .ok()
                .filter(|image| !image.is_empty()),
        },
    )
    .map_err(RunFailure::BadInput)
}

/// Runs the scenario of `request`. A run whose expectations failed is `Ok`: the report says so.
pub(crate) fn run_scenario_file(request: RunRequest<'_>) -> Result<FinishedRun, RunFailure> {
    let scenario = load_runnable(request.scenario_path, request.provider, request.istio_version)?;
    if request.reuse && request.provider != ProviderKind::Kind {
        return Err(RunFailure::BadInput(
            "--reuse applies to --provider kind only".to_owned(),
        ));
    }
    // Opened (and locked) before the sandbox: the handle still reaches it after the sandbox's
    // tmpfs hides /run, and a directory that cannot take a report fails before any world is built.
    let report_dir = request.report_dir.map(report_dir::open).transpose()?;
    let keep_dir = request
        .keep_logs
        .map(|path| {
            LogsDir::resolve(path)
                .map_err(|error| RunFailure::BadInput(format!("--keep-logs: {:#}", anyhow::Error::new(error))))
        })
        .transpose()?;
    if let (Some(keep), Some(report_dir)) = (&keep_dir, &report_dir) {
        logs_dir::check_apart(keep, report_dir.resolved())?;
    }
    // A failed run's `logs/` is left alone when --keep-logs is it or lies inside it.
    let failed_run_logs = report_dir
        .as_ref()
        .and_then(|dir| logs_dir::failed_run_logs(dir.resolved()))
        .filter(|logs| {
            !keep_dir
                .as_ref()
                .is_some_and(|keep| keep.path().starts_with(logs.path()))
        });
    let keeping = Keeping {
        always: keep_dir.as_ref(),
        on_failure: failed_run_logs.as_ref(),
    };
    let started = std::time::Instant::now();
    // A kind or kubeconfig run takes minutes: on a terminal it shows each cluster's step live.
    // Dropped before this returns, so its last frame is drawn before the summary or an error.
    let live = match request.provider {
        ProviderKind::Local => None,
        ProviderKind::Kind | ProviderKind::Kubeconfig => LiveDisplay::start_if_wanted(
            &scenario
                .clusters
                .iter()
                .map(|cluster| cluster.name.value.clone())
                .collect::<Vec<_>>(),
            started,
        ),
    };
    let mut progress = stderr_progress(started, live.as_ref());
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
            let provider = kind_provider(
                request.reuse,
                stderr_progress(started, live.as_ref()),
                scenario.federation.mode.value,
            )?;
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
    // acting as meshfed (see `helper_role`).
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
    progress: Box<dyn FnMut(&str) + Send>,
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
        progress,
    };
    // The Kubernetes half: the kubeconfig provider on the clusters kind made (it learns their
    // kubeconfig files and the workload image when kind attaches them).
    let kube = KubeconfigOptions::for_kind(mode);
    Ok(KindProvider::new(options, KubeconfigProvider::new(kube)))
}

/// Where a run keeps its diagnostics ([`crate::kept_logs`]).
#[derive(Clone, Copy)]
struct Keeping<'dirs> {
    /// `--keep-logs DIR`: kept whatever the verdict.
    always: Option<&'dirs LogsDir>,
    /// The report directory's `logs/` (or `meshfed-logs/`): replaced by a failed run (exit 1 or
    /// 3), removed by a passing one, and only when meshfed kept it there.
    on_failure: Option<&'dirs LogsDir>,
}

/// Drives the scenario until it ends or SIGINT/SIGTERM/SIGHUP comes, then tears the world down either way.
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
    let mut evidence = crate::kept_logs::Evidence::default();
    let outcome = tokio::select! {
        result = crate::driver::drive_scenario_noting(&mut provider, scenario, scenario_path, progress, &mut evidence) => Some(result),
        () = interrupted => None,
    };
    // Exit 1 (an expectation failed) or 3 (the world failed); not an interrupt.
    let failed = matches!(&outcome, Some(Err(_)) | Some(Ok(Report { passed: false, .. })));
    // A passing run leaves no earlier failed run's logs behind (only meshfed's own).
    if !failed
        && outcome.is_some()
        && let Some(logs) = keeping.on_failure
        && let Err(error) = logs.remove_if_kept_by_meshfed()
    {
        warn(&format!(
            "cannot remove earlier logs {}: {error}",
            logs.path().display()
        ));
    }
    // An interrupted run tears down at once: nothing is asked of its proxies.
    let targets: Vec<&LogsDir> = match outcome {
        Some(_) => keeping
            .always
            .into_iter()
            .chain(keeping.on_failure.filter(|_| failed))
            .collect(),
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
            match dir.replace(&files) {
                Ok(withheld) => {
                    for file in withheld {
                        warn(&format!(
                            "not kept (it holds a private key): {}",
                            dir.path().join(file).display()
                        ));
                    }
                    progress.step(&format!("diagnostics kept in {}", dir.path().display()));
                }
                Err(error) => warn(&format!(
                    "cannot keep diagnostics in {} (anything kept there before is unchanged): {error:#}",
                    dir.path().display()
                )),
            }
        }
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

/// A future that resolves on SIGINT (Ctrl-C), SIGTERM or SIGHUP. tokio's handlers are installed at once
/// (they chain the flag-setting handler of [`interrupt::install`]); a signal that came before them
/// is seen in the flag.
fn interrupted() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt_stream = signal(SignalKind::interrupt())?;
    let mut terminate_stream = signal(SignalKind::terminate())?;
    let mut hangup_stream = signal(SignalKind::hangup())?;
    let already = interrupt::is_interrupted();
    Ok(async move {
        if already {
            return;
        }
        tokio::select! {
            _ = interrupt_stream.recv() => {}
            _ = terminate_stream.recv() => {}
            _ = hangup_stream.recv() => {}
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
