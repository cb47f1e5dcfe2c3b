//! `meshfed plan`: the federation plan of a scenario (or of one of its phases) written to a directory, one object per file.

use std::io::Write as _;
use std::path::Path;

use super::plan_dir::{check_replaceable, out_dir_error, write_plan_dir};
use super::{CliError, clusters};
use crate::{atomic_files, inventory, plan, scenario};

pub(super) fn plan_command(
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
    let out_dir = atomic_files::OutDir::resolve(out).map_err(out_dir_error)?;
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
