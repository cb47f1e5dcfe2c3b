//! The command line's real-cluster side: `down` and `plan --server-dry-run` (`run` on any
//! provider is in the library, `run::lifecycle`). Each builds a multi-threaded runtime (the providers' futures are `Send`)
//! and maps what goes wrong to the documented exit codes: missing contexts or image are bad input
//! (2), an unreachable cluster is infrastructure (3), a rejected plan is a failed expectation (1).

use std::path::Path;

use super::{CliError, ProviderName};
use crate::plan::Plan;
use crate::provider::kube_api as kube_layer;
use crate::provider::kubeconfig::{WorkloadImage, workloads};
use crate::run::lifecycle;
use crate::scenario::Scenario;

fn contexts(scenario: &Scenario, file: &Path, default_to_kind: bool) -> Result<Vec<(String, String)>, CliError> {
    Ok(lifecycle::contexts(scenario, file, default_to_kind)?)
}

fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    Ok(lifecycle::multi_thread_runtime()?)
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
