//! `meshfed down`: kind's clusters and images, local's nothing; kubeconfig's objects through `clusters`.

use std::path::Path;

use super::args::ProviderName;
use super::{CliError, clusters, infrastructure_or_interrupted};

/// `meshfed down [SCENARIO] --provider P`: kubeconfig needs the scenario (its contexts and label).
pub(super) fn down_command(scenario: Option<&Path>, provider: ProviderName) -> Result<(), CliError> {
    match (provider, scenario) {
        (ProviderName::Kubeconfig, Some(scenario)) => clusters::down_command(scenario, provider),
        (ProviderName::Kubeconfig, None) => Err(CliError::BadInput(
            "meshfed down --provider kubeconfig needs the scenario file: meshfed down SCENARIO --provider kubeconfig"
                .to_owned(),
        )),
        (provider, _) => down_without_scenario(provider),
    }
}

fn down_without_scenario(provider: ProviderName) -> Result<(), CliError> {
    match provider {
        ProviderName::Local => {
            tracing::info!("meshfed: nothing to remove: the local provider's worlds end with their run");
            Ok(())
        }
        ProviderName::Kubeconfig => Err(CliError::BadInput(
            "provider kubeconfig is not available in this build yet".to_owned(),
        )),
        ProviderName::Kind => {
            let tools = crate::provider::kind::Tools::from_env();
            let mut progress = |message: &str| tracing::info!("{message}");
            let deleted = crate::provider::kind::down(&tools, &mut progress).map_err(infrastructure_or_interrupted)?;
            if deleted.is_empty() {
                tracing::info!(
                    "meshfed: no kind cluster named meshfed-* and no image labelled by meshfed exists; nothing deleted"
                );
            } else {
                tracing::info!("meshfed: deleted {}", deleted.join(", "));
            }
            Ok(())
        }
    }
}
