//! Why a run in this process gave no report: shared by the steps of [`super::lifecycle`] (the
//! report directory, the kept logs) so none of them imports another back.

use crate::scenario::ScenarioError;

/// Why a run in this process gave no report; the command line maps each to its exit code.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RunFailure {
    /// Bad input (exit 2); nothing was created.
    #[error("{0}")]
    BadInput(String),
    /// The world could not be created, reached or torn down (exit 3).
    #[error("{0:#}")]
    Infrastructure(anyhow::Error),
    /// SIGINT, SIGTERM or SIGHUP came; everything was torn down (exit 130).
    #[error("interrupted; everything meshfed created was torn down")]
    Interrupted,
}

impl From<ScenarioError> for RunFailure {
    fn from(error: ScenarioError) -> Self {
        RunFailure::BadInput(error.to_string())
    }
}
