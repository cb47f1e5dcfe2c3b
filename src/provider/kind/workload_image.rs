//! meshfed's workload image: the running meshfed binary (its `workload echo` and `workload client`
//! are the apps every pod runs) on a small Debian base, built with `docker build` from a context
//! holding only that binary, tagged by the binary's SHA-256 so an unchanged binary is not rebuilt,
//! then `docker save`d to an archive that `kind load image-archive` puts into every node (not `kind
//! load docker-image`, which fails under Docker's containerd image store with "content digest …
//! not found": kubernetes-sigs/kind issues 3795 and 4066; kind's docs name the archive as the
//! workaround, PR 4247). No registry is involved. The repository's `Dockerfile`
//! builds the same image from source, for a binary linked against a newer glibc than the base has.
#![forbid(unsafe_code)]

/// Docker label on every image meshfed builds; `meshfed down` removes the images carrying it.
pub const IMAGE_LABEL: &str = "io.meshfed.managed-by=meshfed";

/// Repository of the image.
pub const IMAGE_REPOSITORY: &str = "meshfed-workload";

/// The base image: Debian 13 (glibc 2.41), newer than the glibc of the Linux systems meshfed is
/// built on (Ubuntu 24.04 runners: 2.39).
pub const BASE_IMAGE: &str = "debian:trixie-slim";

/// The Dockerfile `docker build -f -` reads from stdin; the context holds only `meshfed`.
pub fn dockerfile() -> String {
    format!(
        "FROM {BASE_IMAGE}\n\
         COPY meshfed /usr/local/bin/meshfed\n\
         USER 65532:65532\n\
         ENTRYPOINT [\"/usr/local/bin/meshfed\", \"workload\"]\n"
    )
}

/// The image tag for a binary with this SHA-256 (hex): `meshfed-workload:<first 16 hex digits>`.
pub fn image_tag(binary_sha256: &str) -> String {
    format!("{IMAGE_REPOSITORY}:{}", &binary_sha256[..16.min(binary_sha256.len())])
}

/// The archive `docker save` writes in the image's build context.
pub const ARCHIVE_NAME: &str = "workload-image.tar";

/// Refuses to build the workload image from a meshfed binary that is not a Linux executable: kind's
/// nodes run Linux, so a macOS (or other) binary would fail in every pod after minutes of setup.
/// `os` is [`std::env::consts::OS`].
pub fn check_binary_runs_in_pods(os: &str) -> Result<(), String> {
    if os == "linux" {
        return Ok(());
    }
    Err(format!(
        "meshfed runs on {os} here, and its binary cannot run in kind's Linux pods: build the workload image \
         from source (`docker build -t meshfed-workload:dev .` with the repository's Dockerfile) and name it with \
         MESHFED_WORKLOAD_IMAGE, or run meshfed on Linux; nothing was created"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_linux_binary_is_built_into_the_workload_image() {
        assert_eq!(check_binary_runs_in_pods("linux"), Ok(()));
        let refused = check_binary_runs_in_pods("macos").unwrap_err();
        assert!(refused.contains("MESHFED_WORKLOAD_IMAGE"), "{refused}");
        assert!(refused.contains("macos"), "{refused}");
    }
}
