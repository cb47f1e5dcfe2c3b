//! Changes to who is in the `local` world while traffic runs: a service scaled in a cluster (pods
//! created or removed), a cluster that joins or leaves the mesh.

use super::{LocalOptions, World};
use crate::change::{InventoryEvent, WorldChange};
use crate::progress::Progress;
use crate::provider::ProviderError;

impl World {
    /// Carries out a membership change; returns the inventory events it caused.
    pub(super) async fn change_membership(
        &mut self,
        options: &LocalOptions,
        change: &WorldChange,
        progress: &mut dyn Progress,
    ) -> Result<Vec<InventoryEvent>, ProviderError> {
        let _ = (options, progress);
        Err(ProviderError::Unsupported(format!(
            "the local provider cannot make the change {} yet",
            change.kind().name()
        )))
    }
}
