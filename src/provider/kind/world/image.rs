//! The workload image of a kind run: the one named, or one built from meshfed's own binary
//! (`docker build`), saved and loaded into every cluster's nodes.

use std::path::Path;
use std::time::Duration;

use crate::progress::Progress;
use crate::provider::ProviderError;

use super::{failed, io_failed};
use crate::provider::kind::KindCluster;
use crate::provider::kind::istioctl::sha256_hex;
use crate::provider::kind::tools::{Invocation, Tools, os_args};
use crate::provider::kind::workload_image::{ARCHIVE_NAME, IMAGE_LABEL, dockerfile, image_tag};

/// `docker build` of the workload image (base image pull included).
const BUILD_TIMEOUT: Duration = Duration::from_secs(600);
/// `kind load image-archive` into one cluster.
const LOAD_TIMEOUT: Duration = Duration::from_secs(300);

/// The workload image: the named one, or one built from the binary and loaded into every cluster.
pub(super) fn workload_image(
    named: Option<&str>,
    binary: &Path,
    tools: &Tools,
    run_dir: &Path,
    clusters: &[KindCluster],
    progress: &mut dyn Progress,
) -> Result<String, ProviderError> {
    if let Some(image) = named {
        progress.step(&format!(
            "workload image {image} (MESHFED_WORKLOAD_IMAGE; pulled by the nodes)"
        ));
        return Ok(image.to_owned());
    }
    let bytes = std::fs::read(binary).map_err(io_failed(format!("reading {}", binary.display())))?;
    let tag = image_tag(&sha256_hex(&bytes));
    let context = run_dir.join("image");
    std::fs::create_dir_all(&context).map_err(io_failed(format!("creating {}", context.display())))?;
    let copy = context.join("meshfed");
    std::fs::write(&copy, &bytes).map_err(io_failed(format!("writing {}", copy.display())))?;
    std::fs::set_permissions(&copy, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .map_err(io_failed(format!("making {} executable", copy.display())))?;
    progress.step(&format!("building workload image {tag} from {}", binary.display()));
    tools
        .run(&build_image(&tag, &context))
        .map_err(failed(format!("building the workload image {tag}")))?;
    // Beside the build context, not in it (the next build would send it to the daemon).
    let archive = run_dir.join(ARCHIVE_NAME);
    tools
        .run(&save_image(&tag, &archive))
        .map_err(failed(format!("saving the workload image {tag}")))?;
    for cluster in clusters {
        tools
            .run(&load_image_archive(&archive, &cluster.kind_name))
            .map_err(failed(format!("loading {tag} into {}", cluster.kind_name)))?;
    }
    let _ = std::fs::remove_file(&archive);
    Ok(tag)
}

/// `docker build` of the workload image from `context`, the Dockerfile on stdin.
pub(in crate::provider::kind) fn build_image(tag: &str, context: &Path) -> Invocation {
    Invocation::new(
        "docker",
        os_args!["build", "--tag", tag, "--label", IMAGE_LABEL, "--file", "-", context],
        BUILD_TIMEOUT,
    )
    .stdin(dockerfile())
}

/// `docker save` of the workload image into `archive`.
pub(in crate::provider::kind) fn save_image(tag: &str, archive: &Path) -> Invocation {
    Invocation::new("docker", os_args!["save", "--output", archive, tag], BUILD_TIMEOUT)
}

/// `kind load image-archive` of `archive` into every node of `kind_name`.
pub(in crate::provider::kind) fn load_image_archive(archive: &Path, kind_name: &str) -> Invocation {
    Invocation::new(
        "kind",
        os_args!["load", "image-archive", archive, "--name", kind_name],
        LOAD_TIMEOUT,
    )
}
