//! `meshfed certs`: the mesh PKI (a root CA and each cluster's `cacerts` files) written to a directory.

use std::path::Path;

use super::CliError;
use crate::{pki, scenario};

pub(super) fn certs_command(scenario_path: &Path, out: &Path, force: bool) -> Result<(), CliError> {
    let scenario = scenario::load(scenario_path)?;
    let clusters = scenario.cluster_names();
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
