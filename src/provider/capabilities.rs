//! What a provider can do: the faults it executes, the phase actions it carries out and the changes
//! it makes under traffic (a phase's `upgrade:` among them). A scenario
//! that asks for anything else is refused before any world is created, with the file, line and
//! column of what it asked for and what the chosen provider supports instead.

use std::path::Path;

use crate::change::ChangeKind;
use crate::scenario::{ConnectionPolicy, Fault, FederationMode, Scenario, ScenarioError};

/// A kind of fault, as the scenario spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// `gatewayDown`.
    GatewayDown,
    /// `scale`.
    Scale,
    /// `foreignClientCert`.
    ForeignClientCert,
    /// `delay`.
    Delay,
}

impl FaultKind {
    /// The kind of `fault`.
    pub fn of(fault: &Fault) -> FaultKind {
        match fault {
            Fault::GatewayDown { .. } => FaultKind::GatewayDown,
            Fault::Scale { .. } => FaultKind::Scale,
            Fault::ForeignClientCert {} => FaultKind::ForeignClientCert,
            Fault::Delay { .. } => FaultKind::Delay,
        }
    }

    /// The scenario's spelling.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::GatewayDown => "gatewayDown",
            FaultKind::Scale => "scale",
            FaultKind::ForeignClientCert => "foreignClientCert",
            FaultKind::Delay => "delay",
        }
    }
}

/// Something a phase asks the world to do besides sending traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// `endpointWeights` on a phase: re-plan and push new weights to running proxies.
    ChangeEndpointWeights,
    /// `connections: new-connection-per-request`: the proxies open a new upstream connection per
    /// request.
    NewConnectionPerRequest,
}

impl Action {
    /// The scenario's spelling.
    pub fn name(self) -> &'static str {
        match self {
            Action::ChangeEndpointWeights => "endpointWeights (per phase)",
            Action::NewConnectionPerRequest => "connections: new-connection-per-request",
        }
    }
}

/// What a provider supports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// The provider's name (`local`, `kind`, `kubeconfig`).
    pub provider: &'static str,
    /// Faults it executes.
    pub faults: &'static [FaultKind],
    /// Phase actions it carries out.
    pub actions: &'static [Action],
    /// Changes it makes to a running world ([`crate::provider::Provider::change_world`]) while
    /// traffic runs across them (`start_traffic` / `await_traffic`): the kinds a phase's timed
    /// `actions` may use.
    pub changes: &'static [ChangeKind],
    /// Federation modes it builds (`federation.mode`).
    pub federation_modes: &'static [FederationMode],
}

impl Capabilities {
    /// The changes supported, as the scenario spells them, or `none`.
    pub fn supported_changes(&self) -> String {
        if self.changes.is_empty() {
            "none".to_owned()
        } else {
            self.changes
                .iter()
                .map(|change| change.name())
                .collect::<Vec<_>>()
                .join(", ")
        }
    }

    /// Nothing beyond sending traffic.
    pub const NONE: Capabilities = Capabilities {
        provider: "unnamed",
        faults: &[],
        actions: &[],
        changes: &[],
        federation_modes: &[FederationMode::Serviceentry],
    };

    /// Refuses the first fault or action of `scenario` this provider does not support, naming its
    /// position in `file` and what the provider supports.
    pub fn check(&self, scenario: &Scenario, file: &Path) -> Result<(), ScenarioError> {
        let mode = &scenario.federation.mode;
        if !self.federation_modes.contains(&mode.value) {
            let supported: Vec<&str> = self.federation_modes.iter().map(|mode| mode.name()).collect();
            return Err(ScenarioError {
                file: file.to_owned(),
                line: mode.referenced.line(),
                column: mode.referenced.column(),
                message: format!(
                    "federation mode {} is not supported by provider {}; it supports: {}",
                    mode.value.name(),
                    self.provider,
                    supported.join(", ")
                ),
            });
        }
        let supported_faults = || {
            if self.faults.is_empty() {
                "none".to_owned()
            } else {
                self.faults
                    .iter()
                    .map(|fault| fault.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        };
        for phase in &scenario.phases {
            for fault in &phase.faults {
                let kind = FaultKind::of(&fault.value);
                if !self.faults.contains(&kind) {
                    return Err(ScenarioError {
                        file: file.to_owned(),
                        line: fault.referenced.line(),
                        column: fault.referenced.column(),
                        message: format!(
                            "phase {}: fault {} is not supported by provider {}; it supports: {}",
                            phase.name.value,
                            kind.name(),
                            self.provider,
                            supported_faults()
                        ),
                    });
                }
            }
            // A phase's `upgrade:` is the `upgrade` change made at the traffic's start
            // (crate::driver), so a provider that cannot make it refuses it here rather than
            // letting a run pass as if an upgrade had been tested.
            if let Some(upgrade) = &phase.upgrade
                && !self.changes.contains(&ChangeKind::Upgrade)
            {
                return Err(ScenarioError {
                    file: file.to_owned(),
                    line: upgrade.referenced.line(),
                    column: upgrade.referenced.column(),
                    message: format!(
                        "phase {}: upgrade to {} is not supported by provider {}; it supports: {}",
                        phase.name.value,
                        upgrade.value.to.value,
                        self.provider,
                        self.supported_changes()
                    ),
                });
            }
            for action in &phase.actions {
                for (at, change) in action.value.changes() {
                    if !self.changes.contains(&change.kind()) {
                        return Err(ScenarioError {
                            file: file.to_owned(),
                            line: at.line(),
                            column: at.column(),
                            message: format!(
                                "phase {}: action {} ({} at {} ms) is not supported by provider {}; it supports: {}",
                                phase.name.value,
                                action.value.label(),
                                change.kind().name(),
                                action.value.at_millis.value,
                                self.provider,
                                self.supported_changes()
                            ),
                        });
                    }
                }
            }
            let mut asked = Vec::new();
            if phase.endpoint_weights.is_some() {
                asked.push(Action::ChangeEndpointWeights);
            }
            if phase.connections == ConnectionPolicy::NewConnectionPerRequest {
                asked.push(Action::NewConnectionPerRequest);
            }
            if let Some(action) = asked.into_iter().find(|action| !self.actions.contains(action)) {
                // These keys carry no position of their own: point at the phase's name.
                return Err(ScenarioError {
                    file: file.to_owned(),
                    line: phase.name.referenced.line(),
                    column: phase.name.referenced.column(),
                    message: format!(
                        "phase {}: {} is not supported by provider {}",
                        phase.name.value,
                        action.name(),
                        self.provider
                    ),
                });
            }
        }
        Ok(())
    }
}
