//! meshfed's workload image: the running meshfed binary (its `workload echo` and `workload client`
//! are the apps every pod runs) on a small Debian base, built with `docker build` from a context
//! holding only that binary, tagged by the binary's SHA-256 so an unchanged binary is not rebuilt,
//! then `kind load`ed into every node. No registry is involved. The repository's `Dockerfile`
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
