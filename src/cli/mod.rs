//! The command line: parses arguments, calls one library entry point, maps errors to exit codes.
//!
//! [`args`] holds clap's definitions; each command's body has its own file (`plan`, `certs`,
//! `run_scenario` with `version_matrix` for several `--istio-version`s, `down`, `diff`, `setup`,
//! `workload`); `plan_dir` writes the plan directory, `report_file` reads reports for `diff` and
//! `--compare-to`, and `clusters` holds what `down` and `plan --server-dry-run` do against real
//! clusters.

use std::process::ExitCode;

use clap::Parser as _;

mod args;
mod certs;
mod clusters;
mod diff;
mod down;
mod plan;
mod plan_dir;
mod report_file;
mod run_scenario;
mod setup;
mod version_matrix;
mod workload;

pub use args::ProviderName;
use args::{Cli, Command};

use crate::exit_code::{EXIT_BAD_INPUT, EXIT_EXPECTATION_FAILED, EXIT_INFRASTRUCTURE, EXIT_INTERRUPTED, EXIT_OK};
use crate::interrupt;
use crate::run::lifecycle::{self, RunFailure};
use crate::scenario::ScenarioError;

/// What went wrong, by exit code.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad input: exit 2.
    #[error("{0}")]
    BadInput(String),
    /// An expectation failed: exit 1 (the report already says which).
    #[error("{0}")]
    ExpectationFailed(String),
    /// Infrastructure: exit 3.
    #[error("{0:#}")]
    Infrastructure(anyhow::Error),
    /// Interrupted: exit 130.
    #[error("interrupted; everything meshfed created was torn down")]
    Interrupted,
}

impl CliError {
    /// The documented exit code.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::BadInput(_) => EXIT_BAD_INPUT,
            CliError::ExpectationFailed(_) => EXIT_EXPECTATION_FAILED,
            CliError::Infrastructure(_) => EXIT_INFRASTRUCTURE,
            CliError::Interrupted => EXIT_INTERRUPTED,
        }
    }
}

impl From<RunFailure> for CliError {
    fn from(failure: RunFailure) -> Self {
        match failure {
            RunFailure::BadInput(message) => CliError::BadInput(message),
            RunFailure::Infrastructure(error) => CliError::Infrastructure(error),
            RunFailure::Interrupted => CliError::Interrupted,
        }
    }
}

impl From<ScenarioError> for CliError {
    fn from(error: ScenarioError) -> Self {
        CliError::BadInput(error.to_string())
    }
}

/// Entry point of the `meshfed` binary.
pub fn main() -> ExitCode {
    ExitCode::from(main_with_args(std::env::args_os()))
}

/// The command line on `args` (the program name first); returns the exit code. Also what a test
/// binary runs when the library re-executes it as meshfed's helper (see [`crate::run`]).
pub fn main_with_args(args: impl IntoIterator<Item = std::ffi::OsString>) -> u8 {
    // First: from here on SIGINT/SIGTERM only set a flag that every long step looks at, so an
    // interrupt at any moment ends in a clean teardown and exit 130.
    if let Err(error) = interrupt::install() {
        eprintln!("meshfed: cannot install signal handlers: {error}");
        return EXIT_INFRASTRUCTURE;
    }
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return if error.use_stderr() { EXIT_BAD_INPUT } else { EXIT_OK };
        }
    };
    crate::logging::init(cli.verbose);
    if !matches!(cli.command, Command::Run(_) | Command::Setup | Command::Down { .. }) {
        // Nothing to tear down: a signal may end these at once, as usual (the supervisor stops
        // workloads with SIGTERM and expects them to go).
        if let Err(error) = interrupt::restore_default() {
            tracing::error!("meshfed: cannot reset signal handlers: {error}");
            return EXIT_INFRASTRUCTURE;
        }
    }
    let result = if interrupt::is_interrupted() {
        Err(CliError::Interrupted)
    } else {
        execute(cli.command)
    };
    match result {
        Ok(()) => EXIT_OK,
        Err(error) => {
            // Messages quote what they are about (a path, a report's field, a log line): through
            // the one escaper, as every text output.
            tracing::error!("meshfed: {}", crate::printable::printable_lines(&error.to_string()));
            error.exit_code()
        }
    }
}

/// An error of a step after which an interrupt may be the real cause: exit 130 if one came.
pub(crate) fn infrastructure_or_interrupted(error: impl Into<anyhow::Error>) -> CliError {
    lifecycle::infrastructure_or_interrupted(error).into()
}

fn execute(command: Command) -> Result<(), CliError> {
    match command {
        Command::Plan {
            scenario,
            out,
            inventory,
            server_dry_run,
            phase,
        } => plan::plan_command(&scenario, &out, inventory.as_deref(), phase.as_deref(), server_dry_run),
        Command::Certs { scenario, out, force } => certs::certs_command(&scenario, &out, force),
        Command::Run(args) => run_scenario::run_command(args),
        Command::Down { scenario, provider } => down::down_command(scenario.as_deref(), provider),
        Command::Diff(args) => diff::diff_command(&args),
        Command::Setup => setup::setup_command(),
        Command::Workload(workload) => workload::workload_command(workload),
    }
}
