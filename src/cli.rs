//! The command line: parses arguments, calls one library entry point, maps errors to exit codes.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::scenario::ScenarioError;
use crate::{inventory, pki, plan, scenario};

/// Exit code: every expectation held.
pub const EXIT_OK: u8 = 0;
/// Exit code: the run completed and at least one expectation failed.
pub const EXIT_EXPECTATION_FAILED: u8 = 1;
/// Exit code: bad input or usage (nothing was changed).
pub const EXIT_BAD_INPUT: u8 = 2;
/// Exit code: the world could not be created or reached.
pub const EXIT_INFRASTRUCTURE: u8 = 3;
/// Exit code: interrupted (Ctrl-C / SIGINT / SIGTERM); everything was torn down.
pub const EXIT_INTERRUPTED: u8 = 130;

/// meshfed: stand up an Istio mesh across clusters, federate it, and measure cross-cluster mTLS and load skew.
#[derive(Debug, Parser)]
#[command(name = "meshfed", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write the federation plan: every object each cluster needs, one YAML file per object.
    Plan {
        /// The scenario file.
        scenario: PathBuf,
        /// Output directory; gets one sub-directory per cluster. Replaced if it holds an earlier plan.
        #[arg(long)]
        out: PathBuf,
        /// A real inventory (ready pods, gateway addresses, Istio versions) instead of the scenario's.
        #[arg(long)]
        inventory: Option<PathBuf>,
    },
    /// Write the mesh PKI: a root CA and each cluster's `cacerts` files (keys mode 0600).
    Certs {
        /// The scenario file.
        scenario: PathBuf,
        /// Output directory: `<cluster>/{ca-cert,ca-key,root-cert,cert-chain}.pem` and `root-ca/`.
        #[arg(long)]
        out: PathBuf,
    },
    /// Build the world, federate it, send the scenario's traffic and check its expectations.
    Run {
        /// The scenario file.
        scenario: PathBuf,
        /// Where the clusters come from.
        #[arg(long, value_enum, default_value_t = ProviderName::Local)]
        provider: ProviderName,
        /// Directory for report.json (created if missing).
        #[arg(long)]
        report_dir: Option<PathBuf>,
    },
    /// Meshfed's own workloads, run inside a pod by the local provider.
    #[command(hide = true, subcommand)]
    Workload(WorkloadCommand),
}

#[derive(Debug, Subcommand)]
enum WorkloadCommand {
    /// Placeholder until the workloads land.
    Echo,
}

/// The providers `meshfed run` knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ProviderName {
    /// Network namespaces and real Envoy on this machine (default).
    Local,
    /// kind clusters with real Istio (needs Docker and kind).
    Kind,
    /// Existing clusters by kubeconfig context.
    Kubeconfig,
}

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

impl From<ScenarioError> for CliError {
    fn from(error: ScenarioError) -> Self {
        CliError::BadInput(error.to_string())
    }
}

/// Entry point of the `meshfed` binary.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return ExitCode::from(if error.use_stderr() { EXIT_BAD_INPUT } else { EXIT_OK });
        }
    };
    match execute(cli.command) {
        Ok(()) => ExitCode::from(EXIT_OK),
        Err(error) => {
            eprintln!("meshfed: {error}");
            ExitCode::from(error.exit_code())
        }
    }
}

fn execute(command: Command) -> Result<(), CliError> {
    match command {
        Command::Plan {
            scenario,
            out,
            inventory,
        } => plan_command(&scenario, &out, inventory.as_deref()),
        Command::Certs { scenario, out } => certs_command(&scenario, &out),
        Command::Run { .. } => Err(CliError::Infrastructure(anyhow::anyhow!("run is not available yet"))),
        Command::Workload(_) => Err(CliError::BadInput("workloads are not available yet".to_owned())),
    }
}

fn plan_command(scenario_path: &Path, out: &Path, inventory_path: Option<&Path>) -> Result<(), CliError> {
    let scenario = scenario::load(scenario_path)?;
    let inventory = match inventory_path {
        Some(path) => inventory::load(path, &scenario)?,
        None => inventory::from_scenario(&scenario),
    };
    let plan = plan::plan(&scenario, &inventory);
    let files = plan::render(&plan).map_err(|error| CliError::Infrastructure(error.into()))?;
    check_replaceable(out)?;
    write_plan_dir(out, &files).map_err(CliError::Infrastructure)?;
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(
        stdout,
        "wrote {} objects for {} clusters to {}",
        files.len(),
        plan.clusters.len(),
        out.display()
    );
    let _ = write!(stdout, "{}", plan::summary(&plan));
    let placeholders: Vec<&str> = inventory
        .clusters
        .iter()
        .filter(|(_, cluster)| cluster.gateway.placeholder)
        .map(|(name, _)| name.as_str())
        .collect();
    if !placeholders.is_empty() {
        let _ = writeln!(
            stdout,
            "note: gateway addresses of {} are placeholders (<gateway-address-of-CLUSTER>); pass --inventory FILE with real ones",
            placeholders.join(", ")
        );
    }
    Ok(())
}

/// Marker file that identifies a directory meshfed wrote a plan into (and may therefore replace).
const PLAN_MARKER: &str = ".meshfed-plan";

fn check_replaceable(out: &Path) -> Result<(), CliError> {
    let Ok(mut entries) = std::fs::read_dir(out) else {
        return Ok(());
    };
    if entries.next().is_none() || out.join(PLAN_MARKER).exists() {
        return Ok(());
    }
    Err(CliError::BadInput(format!(
        "{} exists and is not a meshfed plan directory: refusing to overwrite it; choose another --out",
        out.display()
    )))
}

/// Writes into a sibling temporary directory, then swaps it in, so a failure leaves the old plan.
fn write_plan_dir(out: &Path, files: &[plan::RenderedFile]) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let parent = out
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let staging = parent.join(format!(
        ".{}.meshfed-tmp-{}",
        out.file_name().and_then(|name| name.to_str()).unwrap_or("plan"),
        std::process::id()
    ));
    let result = (|| -> anyhow::Result<()> {
        std::fs::create_dir_all(&staging).with_context(|| format!("cannot create {}", staging.display()))?;
        std::fs::write(staging.join(PLAN_MARKER), "written by meshfed plan\n")?;
        for file in files {
            let path = staging.join(&file.path);
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::write(&path, &file.yaml).with_context(|| format!("cannot write {}", path.display()))?;
        }
        if out.exists() {
            std::fs::remove_dir_all(out).with_context(|| format!("cannot replace {}", out.display()))?;
        }
        std::fs::rename(&staging, out).with_context(|| format!("cannot move the plan to {}", out.display()))
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    result
}

fn certs_command(scenario_path: &Path, out: &Path) -> Result<(), CliError> {
    let scenario = scenario::load(scenario_path)?;
    let clusters: Vec<&str> = scenario
        .clusters
        .iter()
        .map(|cluster| cluster.name.value.as_str())
        .collect();
    let mesh_pki = pki::pki(&scenario.trust_domain, &clusters, scenario.pki.key_algorithm)
        .map_err(|error| CliError::Infrastructure(error.into()))?;
    let written = pki::create_cacerts_dir(&mesh_pki, out)
        .map_err(|error| CliError::Infrastructure(anyhow::Error::new(error).context("cannot write certificates")))?;
    println!(
        "wrote {} files to {} (keys mode 0600; the root key stays out of every cluster)",
        written.len(),
        out.display()
    );
    Ok(())
}
