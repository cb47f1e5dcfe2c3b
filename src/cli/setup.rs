//! `meshfed setup`: Envoy found or installed, network namespaces checked.

use super::CliError;
use crate::run::lifecycle;

pub(super) fn setup_command() -> Result<(), CliError> {
    let mode = lifecycle::setup(|version, envoy| println!("envoy {version}: {}", envoy.display()))?;
    println!("network namespaces: ok ({mode})");
    Ok(())
}
