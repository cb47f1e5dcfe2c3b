//! Undoing a kind run: its teardown (the clusters it created and its run directory) and
//! `meshfed down` (every cluster and image meshfed made, and the run directories of dead runs).

use std::path::Path;
use std::time::Duration;

use crate::progress::Progress;
use crate::provider::ProviderError;

use super::{KindWorld, QUERY_TIMEOUT, failed, io_failed, text};
use crate::provider::kind::KindOptions;
use crate::provider::kind::config::is_meshfed_cluster;
use crate::provider::kind::tools::{Invocation, ToolError, Tools};
use crate::provider::kind::workload_image::IMAGE_LABEL;

/// `kind delete cluster`.
const DELETE_TIMEOUT: Duration = Duration::from_secs(180);

/// Deletes the clusters this run created (none with `--reuse` kept ones) and the run directory.
pub(in crate::provider::kind) fn teardown(
    options: &mut KindOptions,
    world: &mut KindWorld,
) -> Result<(), ProviderError> {
    let mut errors = Vec::new();
    for kind_name in std::mem::take(&mut world.created) {
        if options.reuse {
            (options.progress)(&format!("keeping kind cluster {kind_name} (--reuse)"));
            continue;
        }
        (options.progress)(&format!("deleting kind cluster {kind_name}"));
        if let Err(error) = delete_cluster(&options.tools, &kind_name) {
            errors.push(error.to_string());
        }
    }
    world.clusters.clear();
    if world.made_run_dir {
        world.made_run_dir = false;
        if let Err(error) = std::fs::remove_dir_all(&options.run_dir)
            && error.kind() != std::io::ErrorKind::NotFound
        {
            errors.push(format!("removing {}: {error}", options.run_dir.display()));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ProviderError::failed(
            "tearing down the kind world",
            anyhow::anyhow!(errors.join("; ")),
        ))
    }
}

fn delete_cluster(tools: &Tools, kind_name: &str) -> Result<Vec<u8>, ToolError> {
    tools.run_uninterruptible(&Invocation::new(
        "kind",
        ["delete", "cluster", "--name", kind_name],
        DELETE_TIMEOUT,
    ))
}

/// Deletes every kind cluster named with meshfed's prefix and every image carrying meshfed's label,
/// and nothing else; returns what it deleted.
pub(in crate::provider::kind) fn down(
    tools: &Tools,
    progress: &mut dyn Progress,
) -> Result<Vec<String>, ProviderError> {
    let listed = text(
        tools
            .run_uninterruptible(&Invocation::new("kind", ["get", "clusters"], QUERY_TIMEOUT))
            .map_err(failed("listing kind clusters"))?,
    );
    let mut deleted = Vec::new();
    for name in listed.lines().map(str::trim).filter(|name| is_meshfed_cluster(name)) {
        progress.step(&format!("deleting kind cluster {name}"));
        delete_cluster(tools, name).map_err(failed(format!("deleting kind cluster {name}")))?;
        deleted.push(format!("kind cluster {name}"));
    }
    let images = text(
        tools
            .run_uninterruptible(&Invocation::new(
                "docker",
                [
                    "image",
                    "ls",
                    "--filter",
                    &format!("label={IMAGE_LABEL}"),
                    "--format",
                    "{{.Repository}}:{{.Tag}}",
                ],
                QUERY_TIMEOUT,
            ))
            .map_err(failed("listing meshfed's workload images"))?,
    );
    for image in images.lines().map(str::trim).filter(|image| !image.is_empty()) {
        progress.step(&format!("removing image {image}"));
        tools
            .run_uninterruptible(&Invocation::new("docker", ["image", "rm", image], QUERY_TIMEOUT))
            .map_err(failed(format!("removing image {image}")))?;
        deleted.push(format!("image {image}"));
    }
    deleted.extend(remove_stale_run_dirs(&std::env::temp_dir(), progress)?);
    Ok(deleted)
}

/// The run directory of the meshfed process `pid` (kind configs, kubeconfigs, install files).
pub(in crate::provider::kind) fn run_dir_name(pid: u32) -> String {
    format!("meshfed-kind-{pid}")
}

/// Run directories of meshfed processes that no longer exist (a run killed with SIGKILL cannot
/// remove its own); those of live processes are left alone.
fn remove_stale_run_dirs(temp_dir: &Path, progress: &mut dyn Progress) -> Result<Vec<String>, ProviderError> {
    let mut removed = Vec::new();
    let Ok(entries) = std::fs::read_dir(temp_dir) else {
        return Ok(removed);
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("meshfed-kind-")
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if run_dir_name(pid) != name || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let path = entry.path();
        if !path.symlink_metadata().is_ok_and(|metadata| metadata.is_dir()) {
            continue;
        }
        progress.step(&format!(
            "removing {} (its run ended without cleaning up)",
            path.display()
        ));
        std::fs::remove_dir_all(&path).map_err(io_failed(format!("removing {}", path.display())))?;
        removed.push(format!("run directory {}", path.display()));
    }
    Ok(removed)
}
