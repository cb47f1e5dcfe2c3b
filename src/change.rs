//! Changes to a running world: the vocabulary shared by the scenario's timed actions, the providers
//! that carry them out and the reconcile loop that keeps the federation plan true as the world
//! changes. What a change does to the inventory is an [`crate::inventory::InventoryEvent`]. Pure
//! data, no I/O; below the scenario, which uses it.

use serde::{Deserialize, Serialize};

use crate::value_types::IstioVersion;

/// One change a provider makes to the running world (a scenario action, or the start or end of a
/// phase-long fault). Every provider that lists the change's kind in its capabilities carries it
/// out through [`crate::provider::Provider::change_world`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum WorldChange {
    /// The cluster's east-west gateway stops (its process or pods are gone; connects are refused).
    StopGateway {
        /// The cluster.
        cluster: String,
    },
    /// The cluster's gateway runs again, at the same address, with the current plan.
    StartGateway {
        /// The cluster.
        cluster: String,
    },
    /// The cluster's gateway becomes unreachable from every other cluster, and the other clusters'
    /// gateways from it; the cluster itself keeps running.
    Partition {
        /// The cluster.
        cluster: String,
    },
    /// Undoes [`WorldChange::Partition`].
    Heal {
        /// The cluster.
        cluster: String,
    },
    /// The service runs `replicas` ready pods in the cluster (0 included): pods are removed or added.
    Scale {
        /// The cluster.
        cluster: String,
        /// The service, `name.namespace`.
        service: String,
        /// Ready pods after the change.
        replicas: u32,
    },
    /// Replies from the service's pods in the cluster are delayed by `millis` (0 removes a delay).
    Delay {
        /// The cluster.
        cluster: String,
        /// The service, `name.namespace`.
        service: String,
        /// Added delay in milliseconds.
        millis: u32,
    },
    /// One container of a pod is killed (SIGKILL); like a kubelet, the provider restarts it.
    Kill {
        /// The cluster.
        cluster: String,
        /// The pod, as the live inventory names it.
        pod: String,
        /// Which container.
        container: Container,
    },
    /// The cluster's intermediate CA is replaced by a new one under the same root and every
    /// workload certificate of the cluster is reissued; proxies pick them up without restart.
    RotateIntermediate {
        /// The cluster.
        cluster: String,
    },
    /// A cluster of the scenario declared `joinsLater` is created and joins the mesh.
    JoinCluster {
        /// The cluster.
        cluster: String,
    },
    /// A cluster leaves the mesh: its workloads and gateway are removed.
    LeaveCluster {
        /// The cluster.
        cluster: String,
    },
    /// The cluster's Istio is upgraded (or downgraded) to `to`; proxies restart pod by pod.
    Upgrade {
        /// The cluster.
        cluster: String,
        /// The version afterwards.
        to: IstioVersion,
    },
}

impl WorldChange {
    /// The cluster the change is about.
    pub fn cluster(&self) -> &str {
        match self {
            WorldChange::StopGateway { cluster }
            | WorldChange::StartGateway { cluster }
            | WorldChange::Partition { cluster }
            | WorldChange::Heal { cluster }
            | WorldChange::Scale { cluster, .. }
            | WorldChange::Delay { cluster, .. }
            | WorldChange::Kill { cluster, .. }
            | WorldChange::RotateIntermediate { cluster }
            | WorldChange::JoinCluster { cluster }
            | WorldChange::LeaveCluster { cluster }
            | WorldChange::Upgrade { cluster, .. } => cluster,
        }
    }

    /// The kind of change, as a scenario spells it.
    pub fn kind(&self) -> ChangeKind {
        match self {
            WorldChange::StopGateway { .. } => ChangeKind::StopGateway,
            WorldChange::StartGateway { .. } => ChangeKind::StartGateway,
            WorldChange::Partition { .. } => ChangeKind::Partition,
            WorldChange::Heal { .. } => ChangeKind::Heal,
            WorldChange::Scale { .. } => ChangeKind::Scale,
            WorldChange::Delay { .. } => ChangeKind::Delay,
            WorldChange::Kill { .. } => ChangeKind::Kill,
            WorldChange::RotateIntermediate { .. } => ChangeKind::RotateIntermediate,
            WorldChange::JoinCluster { .. } => ChangeKind::JoinCluster,
            WorldChange::LeaveCluster { .. } => ChangeKind::LeaveCluster,
            WorldChange::Upgrade { .. } => ChangeKind::Upgrade,
        }
    }
}

/// The kinds of [`WorldChange`], for capabilities and messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ChangeKind {
    /// `stopGateway`.
    StopGateway,
    /// `startGateway`.
    StartGateway,
    /// `partition`.
    Partition,
    /// `heal`.
    Heal,
    /// `scale`.
    Scale,
    /// `delay`.
    Delay,
    /// `kill`.
    Kill,
    /// `rotateIntermediate`.
    RotateIntermediate,
    /// `joinCluster`.
    JoinCluster,
    /// `leaveCluster`.
    LeaveCluster,
    /// `upgrade`.
    Upgrade,
}

impl ChangeKind {
    /// Every kind, in the order the docs list them.
    pub const ALL: [ChangeKind; 11] = [
        ChangeKind::StopGateway,
        ChangeKind::StartGateway,
        ChangeKind::Partition,
        ChangeKind::Heal,
        ChangeKind::Scale,
        ChangeKind::Delay,
        ChangeKind::Kill,
        ChangeKind::RotateIntermediate,
        ChangeKind::JoinCluster,
        ChangeKind::LeaveCluster,
        ChangeKind::Upgrade,
    ];

    /// The scenario's spelling.
    pub fn name(self) -> &'static str {
        match self {
            ChangeKind::StopGateway => "stopGateway",
            ChangeKind::StartGateway => "startGateway",
            ChangeKind::Partition => "partition",
            ChangeKind::Heal => "heal",
            ChangeKind::Scale => "scale",
            ChangeKind::Delay => "delay",
            ChangeKind::Kill => "kill",
            ChangeKind::RotateIntermediate => "rotateIntermediate",
            ChangeKind::JoinCluster => "joinCluster",
            ChangeKind::LeaveCluster => "leaveCluster",
            ChangeKind::Upgrade => "upgrade",
        }
    }
}

/// A container of a pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Container {
    /// The Istio sidecar (`istio-proxy`).
    Sidecar,
    /// The application.
    App,
}
