//! The command line's real-cluster side: `run --provider kubeconfig`, `down`, and
//! `plan --server-dry-run`. Each builds a multi-threaded runtime (the providers' futures are `Send`)
//! and maps what goes wrong to the documented exit codes: missing contexts or image are bad input
//! (2), an unreachable cluster is infrastructure (3), a rejected plan is a failed expectation (1).

use std::path::Path;

use super::{CliError, ProviderName, check_interrupted, infrastructure_or_interrupted};
use crate::plan::Plan;
use crate::progress::Progress;
use crate::provider::capabilities::{Capabilities, FaultKind};
use crate::provider::kube as kube_layer;
use crate::provider::kubeconfig::{KubeconfigOptions, KubeconfigProvider, WorkloadImage, workloads};
use crate::provider::local::LocalProvider;
use crate::scenario::{Scenario, ScenarioError};

/// What each provider supports, known before it is built.
pub(super) fn capabilities(provider: ProviderName) -> Capabilities {
    match provider {
        ProviderName::Local => LocalProvider::CAPABILITIES,
        ProviderName::Kubeconfig => KubeconfigProvider::CAPABILITIES,
        // kind = create clusters + the kubeconfig path: the same real-Istio abilities, plus
        // stopping the east-west gateway meshfed installed (phase-long `gatewayDown`).
        ProviderName::Kind => Capabilities {
            provider: "kind",
            faults: &[FaultKind::Scale, FaultKind::GatewayDown],
            ..KubeconfigProvider::CAPABILITIES
        },
    }
}

/// The kubeconfig context of each cluster: `clusters[].context`, or kind's `kind-<name>` when
/// `default_to_kind`. A missing one is bad input pointing at the cluster.
fn contexts(scenario: &Scenario, file: &Path, default_to_kind: bool) -> Result<Vec<(String, String)>, CliError> {
    scenario
        .clusters
        .iter()
        .map(|cluster| {
            let name = cluster.name.value.clone();
            match (&cluster.context, default_to_kind) {
                (Some(context), _) => Ok((name, context.clone())),
                (None, true) => Ok((name.clone(), format!("kind-{name}"))),
                (None, false) => Err(CliError::from(ScenarioError {
                    file: file.to_owned(),
                    line: cluster.name.referenced.line(),
                    column: cluster.name.referenced.column(),
                    message: format!(
                        "cluster {name} has no `context`: --provider kubeconfig needs the kubeconfig context of every cluster"
                    ),
                })),
            }
        })
        .collect()
}

fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(infrastructure_or_interrupted)
}

fn stderr_progress() -> impl Progress {
    let started = std::time::Instant::now();
    move |message: &str| eprintln!("[{:6.2}s] {message}", started.elapsed().as_secs_f64())
}

/// `meshfed run --provider kubeconfig`.
pub(super) fn run_kubeconfig(
    scenario: &Scenario,
    scenario_path: &Path,
    image: Option<String>,
    image_command: String,
) -> Result<crate::report::Report, CliError> {
    contexts(scenario, scenario_path, false)?;
    let image = image.ok_or_else(|| {
        CliError::BadInput(
            "--provider kubeconfig needs --image IMAGE: the image foo and bar run (meshfed's echo and client)"
                .to_owned(),
        )
    })?;
    check_interrupted()?;
    let options = KubeconfigOptions::new(WorkloadImage {
        image,
        command: image_command,
    });
    let mut progress = stderr_progress();
    runtime()?.block_on(super::run_world(
        KubeconfigProvider::new(options),
        scenario,
        scenario_path,
        &mut progress,
    ))
}

/// One sample object per kind meshfed writes for `cluster`, for `down` to list.
fn kinds_of(scenario: &Scenario, plan: &Plan, cluster: &str) -> Result<Vec<serde_json::Value>, CliError> {
    let mut kinds = Vec::new();
    if let Some(cluster_plan) = plan.clusters.iter().find(|candidate| candidate.cluster == cluster) {
        kinds = kube_layer::desired_objects(cluster_plan).map_err(|error| CliError::Infrastructure(error.into()))?;
    }
    let image = WorkloadImage {
        image: String::new(),
        command: String::new(),
    };
    kinds.extend(workloads::workload_objects(scenario, cluster, &image));
    kinds.push(serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "any", "namespace": "any"}}));
    Ok(kinds)
}

/// `meshfed down SCENARIO --provider kubeconfig`.
pub(super) fn down_command(scenario_path: &Path, provider: ProviderName) -> Result<(), CliError> {
    let scenario = crate::scenario::load(scenario_path)?;
    match provider {
        ProviderName::Local => {
            println!("local: nothing to remove (a local world lives and dies with its meshfed process)");
            return Ok(());
        }
        ProviderName::Kind => {
            return Err(CliError::BadInput(
                "provider kind is not available in this build yet".to_owned(),
            ));
        }
        ProviderName::Kubeconfig => {}
    }
    let contexts = contexts(&scenario, scenario_path, false)?;
    let plan = crate::plan::plan(&scenario, &crate::inventory::from_scenario(&scenario));
    runtime()?.block_on(async {
        let mut failures = Vec::new();
        for (cluster, context) in &contexts {
            let client = kube_layer::connect(cluster, context)
                .await
                .map_err(|error| CliError::Infrastructure(error.into()))?;
            let kinds = kinds_of(&scenario, &plan, cluster)?;
            match kube_layer::down(&client, cluster, &scenario.name, &kinds).await {
                Ok(removed) => {
                    for object in &removed.deleted {
                        println!("{cluster}: deleted {object}");
                    }
                    for (namespace, strangers) in &removed.kept {
                        println!(
                            "{cluster}: kept {namespace}: it holds objects meshfed does not own: {}",
                            strangers.join(", ")
                        );
                    }
                    if removed.deleted.is_empty() && removed.kept.is_empty() {
                        println!(
                            "{cluster}: nothing carries meshfed's labels for scenario {}",
                            scenario.name
                        );
                    }
                }
                Err(error) => failures.push(error.to_string()),
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(CliError::Infrastructure(anyhow::anyhow!(failures.join("\n"))))
        }
    })
}

/// `meshfed plan --server-dry-run`: every cluster's plan through server-side apply with
/// `dryRun=All`.
pub(super) fn server_dry_run(scenario: &Scenario, scenario_path: &Path, plan: &Plan) -> Result<(), CliError> {
    let contexts = contexts(scenario, scenario_path, true)?;
    runtime()?.block_on(async {
        let mut problems = Vec::new();
        for (cluster, context) in &contexts {
            let client = kube_layer::connect(cluster, context)
                .await
                .map_err(|error| CliError::Infrastructure(error.into()))?;
            let Some(cluster_plan) = plan.clusters.iter().find(|candidate| &candidate.cluster == cluster) else {
                continue;
            };
            let objects =
                kube_layer::desired_objects(cluster_plan).map_err(|error| CliError::Infrastructure(error.into()))?;
            match kube_layer::apply(
                &client,
                cluster,
                &scenario.name,
                &objects,
                kube_layer::ApplyMode::ServerDryRun,
            )
            .await
            {
                Ok(outcome) => {
                    println!(
                        "{cluster} (context {context}): server accepted {} of {} objects (dry run, nothing persisted)",
                        outcome.applied.len(),
                        objects.len()
                    );
                    for (object, message) in outcome.rejected {
                        problems.push(format!("{cluster}: {object} rejected: {message}"));
                    }
                }
                Err(kube_layer::ApplyError::Conflicts(conflicts)) => {
                    problems.extend(conflicts.iter().map(ToString::to_string));
                }
                Err(error) => return Err(CliError::Infrastructure(error.into())),
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            for problem in &problems {
                println!("{problem}");
            }
            Err(CliError::ExpectationFailed(format!(
                "the server-side dry run found {} problem(s); see above",
                problems.len()
            )))
        }
    })
}
