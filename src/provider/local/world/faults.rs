//! Changes to the `local` data plane while traffic runs: gateways stopped and started, clusters
//! partitioned and healed, replies delayed, containers killed (and restarted, as a kubelet
//! would), intermediate CAs rotated, a cluster's Istio version changed.

use super::{LocalOptions, World};
use crate::change::{InventoryEvent, WorldChange};
use crate::progress::Progress;
use crate::provider::ProviderError;

impl World {
    /// Carries out a data-plane change; returns the inventory events it caused.
    pub(super) async fn change_data_plane(
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
