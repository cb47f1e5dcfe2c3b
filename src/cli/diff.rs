//! `meshfed diff A B`: reads two run reports (bounded, validated, errors with file:line:column),
//! compares them with [`crate::diff::diff`] and prints the result for people or as JSON.
//! Exit 0: nothing differs beyond the thresholds; 1: something does; 2: the reports cannot be
//! compared (unreadable, malformed, another schema, another scenario).
//!
//! Also the runs that compare themselves: the baseline of `meshfed run --compare-to`, and the
//! version matrix of `meshfed run --istio-version A --istio-version B`.

use std::fs::File;
use std::io::{Read as _, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};

use super::CliError;
use crate::diff::{self, Thresholds};
use crate::printable::printable;
use crate::report::{REPORT_SCHEMA, Report};
use crate::run::ProviderKind;
use crate::run::matrix::{self, Matrix};
use crate::scenario::{self, IstioVersion, NEWEST_EMULATED_ISTIO, OLDEST_EMULATED_ISTIO};

/// Largest report meshfed reads: a report holds aggregates, not requests, so even a thousand-pod
/// phase list stays far below this; anything bigger is not a report.
pub const MAX_REPORT_BYTES: u64 = 64 * 1024 * 1024;

/// The file a report directory holds.
const REPORT_FILE: &str = "report.json";

/// `meshfed diff` arguments.
#[derive(Debug, Args)]
pub struct DiffArgs {
    /// Run A, the baseline: a report.json, or a report directory (`--report-dir` of `meshfed run`).
    pub a: PathBuf,
    /// Run B, compared against A.
    pub b: PathBuf,
    /// How much may change before it is a difference.
    #[command(flatten)]
    pub thresholds: ThresholdArgs,
    /// `text` for people, `json` for machines (schema in docs/diff.md).
    #[arg(long, value_enum, default_value_t = DiffFormat::Text)]
    pub format: DiffFormat,
}

/// The thresholds of a comparison, shared by `meshfed diff` and `meshfed run --compare-to` /
/// `--istio-version A --istio-version B`.
#[derive(Debug, Args)]
pub struct ThresholdArgs {
    /// A pod's or cluster's share may move by this much (0.05 = 5 percentage points) before it is
    /// a difference; a move counts only if the homogeneity test also rejects at --alpha.
    #[arg(long, default_value_t = Thresholds::default().share_tolerance, value_parser = fraction)]
    pub share_tolerance: f64,
    /// Significance level of the chi-square homogeneity test over the request (or connection)
    /// counts: the splits differ only when its p-value is below this.
    #[arg(long, default_value_t = Thresholds::default().alpha, value_parser = probability)]
    pub alpha: f64,
    /// mTLS and success rates, and TLS failures and gateway hops per request, may move by this much
    /// (0.01 = 1 percentage point).
    #[arg(long, default_value_t = Thresholds::default().rate_tolerance, value_parser = fraction)]
    pub rate_tolerance: f64,
    /// A latency percentile may grow or shrink by this fraction (1.0: one run up to twice as slow as
    /// the other) ...
    #[arg(long, default_value_t = Thresholds::default().latency_tolerance, value_parser = non_negative)]
    pub latency_tolerance: f64,
    /// ... and changes smaller than this many milliseconds never count.
    #[arg(long, default_value_t = Thresholds::default().latency_floor_us as f64 / 1000.0, value_parser = non_negative)]
    pub latency_floor_ms: f64,
    /// Judge latency also when a run is on the `local` provider (an emulation: its latency is this
    /// machine's load, so by default it is shown, never flagged).
    #[arg(long)]
    pub judge_local_latency: bool,
}

impl ThresholdArgs {
    /// The thresholds these flags set.
    pub fn thresholds(&self) -> Thresholds {
        Thresholds {
            share_tolerance: self.share_tolerance,
            alpha: self.alpha,
            rate_tolerance: self.rate_tolerance,
            latency_tolerance: self.latency_tolerance,
            latency_floor_us: (self.latency_floor_ms * 1000.0).round() as u64,
            judge_emulated_latency: self.judge_local_latency,
        }
    }
}

/// How `meshfed diff` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DiffFormat {
    /// A summary for people.
    Text,
    /// The whole comparison as JSON (`meshfed.diff/v1`).
    Json,
}

fn parse_number(text: &str) -> Result<f64, String> {
    let value: f64 = text.parse().map_err(|_| format!("{text:?} is not a number"))?;
    if value.is_finite() {
        Ok(value)
    } else {
        Err(format!("{text:?} is not a finite number"))
    }
}

/// 0 to 1 inclusive.
fn fraction(text: &str) -> Result<f64, String> {
    let value = parse_number(text)?;
    if (0.0..=1.0).contains(&value) {
        Ok(value)
    } else {
        Err(format!(
            "{value} is outside 0..=1 (a fraction: 0.05 = 5 percentage points)"
        ))
    }
}

/// Strictly between 0 and 1.
fn probability(text: &str) -> Result<f64, String> {
    let value = parse_number(text)?;
    if value > 0.0 && value < 1.0 {
        Ok(value)
    } else {
        Err(format!("{value} is outside 0 < alpha < 1 (e.g. 0.001)"))
    }
}

fn non_negative(text: &str) -> Result<f64, String> {
    let value = parse_number(text)?;
    if value >= 0.0 {
        Ok(value)
    } else {
        Err(format!("{value} is negative"))
    }
}

/// Runs `meshfed diff`.
///
/// Each report's text lives only until it is parsed (A is parsed before B is read), and the
/// output is written as it is rendered, so memory stays near the two parsed reports.
pub fn diff_command(args: &DiffArgs) -> Result<(), CliError> {
    let thresholds = args.thresholds.thresholds();
    let (path_a, schema_a, report_a) = read_report_of_schema(&args.a)?;
    let (path_b, schema_b, report_b) = read_report_of_schema(&args.b)?;
    let label_a = path_a.display().to_string();
    let label_b = path_b.display().to_string();
    // The schema first: a report of another schema may not parse as this one, and "another
    // schema" is the message that helps, not the first field it lacks.
    if schema_a != schema_b {
        return Err(incomparable(diff::Incomparable::SchemaMismatch {
            label_a,
            schema_a,
            label_b,
            schema_b,
        }));
    }
    let (Some(report_a), Some(report_b)) = (report_a?, report_b?) else {
        return Err(incomparable(diff::Incomparable::UnsupportedSchema {
            label: label_a,
            schema: schema_a,
        }));
    };
    let compared = diff::diff(&report_a, &label_a, &report_b, &label_b, &thresholds).map_err(incomparable)?;
    drop((report_a, report_b));
    let mut stdout = std::io::BufWriter::new(std::io::stdout().lock());
    let written = match args.format {
        DiffFormat::Text => stdout.write_all(diff::summary(&compared).as_bytes()),
        DiffFormat::Json => {
            let mut serializer =
                serde_json::Serializer::with_formatter(&mut stdout, crate::printable::JsonFormatter::pretty());
            serde::Serialize::serialize(&compared, &mut serializer)
                .map_err(std::io::Error::from)
                .and_then(|()| stdout.write_all(b"\n"))
        }
    };
    written
        .and_then(|()| stdout.flush())
        .map_err(|error| CliError::Infrastructure(anyhow::Error::new(error).context("cannot write the diff")))?;
    if compared.differs {
        Err(CliError::ExpectationFailed(format!(
            "{} difference(s) beyond the thresholds between {label_a} and {label_b}",
            compared.differences.len()
        )))
    } else {
        Ok(())
    }
}

/// A report file read for `meshfed diff`: its path, its `schema`, and the report parsed when the
/// schema is the one this meshfed reads (`Ok(None)` otherwise; the caller decides which message
/// fits). A malformed report of the right schema is the inner error, reported only after both
/// schemas were compared.
type ReadReport = (PathBuf, String, Result<Option<Report>, CliError>);

/// Reads and parses one report; its text is dropped once parsed.
fn read_report_of_schema(path: &Path) -> Result<ReadReport, CliError> {
    let (file, text) = read_report_text(path)?;
    let schema = schema_of(&file, &text)?;
    let report = if schema == REPORT_SCHEMA {
        parse_report(&file, &text).map(Some)
    } else {
        Ok(None)
    };
    drop(text);
    Ok((file, schema, report))
}

/// A baseline report for `meshfed run --compare-to`: read and checked (bounded, UTF-8, this
/// schema, well-formed) before the run starts, so a report that cannot be compared changes nothing.
/// Returns its label (the report file) and the report.
/// A baseline of another scenario than `scenario_name` (of `scenario_path`) cannot be compared.
pub fn read_baseline(path: &Path, scenario_path: &Path, scenario_name: &str) -> Result<(String, Report), CliError> {
    let (file, text) = read_report_text(path)?;
    let label = file.display().to_string();
    let schema = schema_of(&file, &text)?;
    if schema != REPORT_SCHEMA {
        return Err(incomparable(diff::Incomparable::UnsupportedSchema { label, schema }));
    }
    let report = parse_report(&file, &text)?;
    if report.scenario.name != scenario_name {
        return Err(incomparable(diff::Incomparable::ScenarioMismatch {
            label_a: label,
            scenario_a: report.scenario.name,
            label_b: scenario_path.display().to_string(),
            scenario_b: scenario_name.to_owned(),
        }));
    }
    Ok((label, report))
}

/// `--istio-version`: `major.minor[.patch]` within the emulated range, as the scenario field.
pub fn istio_version_flag(text: &str) -> Result<IstioVersion, String> {
    let version: IstioVersion = text.parse()?;
    let oldest = (OLDEST_EMULATED_ISTIO.major, OLDEST_EMULATED_ISTIO.minor);
    let newest = (NEWEST_EMULATED_ISTIO.major, NEWEST_EMULATED_ISTIO.minor);
    if (version.major, version.minor) < oldest || (version.major, version.minor) > newest {
        return Err(format!(
            "Istio {version} is outside the emulated range: use {}.{} to {}.{} (any patch; see docs/fidelity.md)",
            oldest.0, oldest.1, newest.0, newest.1
        ));
    }
    Ok(version)
}

/// `meshfed run SCENARIO --istio-version A --istio-version B [...]`.
pub struct MatrixArgs<'args> {
    /// The scenario file.
    pub scenario_path: &'args Path,
    /// The versions, in order; at least two.
    pub versions: &'args [IstioVersion],
    /// Where the clusters come from.
    pub provider: ProviderKind,
    /// Each version's report goes to `<report_dir>/<version>/`.
    pub report_dir: Option<&'args Path>,
    /// kind/kubeconfig: the image foo and bar run.
    pub image: Option<String>,
    /// How much may change between neighbouring versions.
    pub thresholds: Thresholds,
}

/// Runs the scenario once per version and diffs each version against the one before it. Exit 0
/// when every run passed and no diff flagged anything, 1 otherwise; every version is checked
/// against the scenario (exit 2, nothing run) before the first run starts.
pub fn matrix_command(args: MatrixArgs<'_>) -> Result<(), CliError> {
    for (index, version) in args.versions.iter().enumerate() {
        if args.versions[..index].contains(version) {
            return Err(CliError::BadInput(format!(
                "--istio-version {version} is given twice: each version runs once (its report goes to <report-dir>/{version}/)"
            )));
        }
        scenario::load_with_istio_version(args.scenario_path, Some(*version))
            .map_err(|error| CliError::BadInput(format!("with --istio-version {version}: {error}")))?;
    }
    // Every version's report directory is checked before anything is created, then the matrix's
    // own directory is locked for the whole matrix (each version's run locks its own).
    let _report_dir = match args.report_dir {
        Some(dir) => {
            matrix::check_report_dirs(dir, args.versions).map_err(CliError::BadInput)?;
            Some(crate::run::report_dir::open(dir)?)
        }
        None => None,
    };
    let print = |text: &str| {
        let mut stdout = std::io::stdout().lock();
        stdout
            .write_all(text.as_bytes())
            .and_then(|()| stdout.flush())
            .map_err(|error| CliError::Infrastructure(anyhow::Error::new(error).context("cannot write to stdout")))
    };
    let mut print_error = None;
    let runs = matrix::matrix(
        Matrix {
            scenario_path: args.scenario_path,
            versions: args.versions,
            provider: args.provider,
            report_dir: args.report_dir,
            image: args.image,
        },
        crate::interrupt::is_interrupted,
        |run| {
            let written = run
                .report_dir
                .as_ref()
                .map_or_else(String::new, |dir| format!(" (report in {})", dir.display()));
            if let Err(error) = print(&format!(
                "=== Istio {}{written} ===\n{}\n",
                run.version,
                run.report.summary().trim_end()
            )) {
                print_error.get_or_insert(error);
            }
        },
    )
    .map_err(|(version, error)| match error {
        crate::run::Error::BadInput { message } => CliError::BadInput(format!("the run on Istio {version}: {message}")),
        crate::run::Error::Interrupted => CliError::Interrupted,
        other => CliError::Infrastructure(anyhow::Error::new(other).context(format!("the run on Istio {version}"))),
    })?;
    if let Some(error) = print_error {
        return Err(error);
    }
    let failed_runs: Vec<String> = runs
        .iter()
        .filter(|run| !run.report.passed())
        .map(|run| run.version.to_string())
        .collect();
    let mut differing_pairs = Vec::new();
    for pair in runs.windows(2) {
        let label = |run: &matrix::VersionRun| match &run.report_dir {
            Some(dir) => format!("{} ({})", run.version, dir.display()),
            None => run.version.to_string(),
        };
        let (label_a, label_b) = (label(&pair[0]), label(&pair[1]));
        let (summary, differs) = compare(
            (&label_a, pair[0].report.report()),
            (&label_b, pair[1].report.report()),
            &args.thresholds,
        )?;
        print(&format!(
            "=== diff Istio {} -> {} ===\n{}\n",
            pair[0].version,
            pair[1].version,
            summary.trim_end()
        ))?;
        if differs {
            differing_pairs.push(format!("{} -> {}", pair[0].version, pair[1].version));
        }
    }
    if failed_runs.is_empty() && differing_pairs.is_empty() {
        print(&format!(
            "matrix: every run passed on {} and no neighbouring versions differ beyond the thresholds\n",
            versions_list(args.versions)
        ))?;
        return Ok(());
    }
    let mut reasons = Vec::new();
    if !failed_runs.is_empty() {
        reasons.push(format!("checks failed on Istio {}", failed_runs.join(", ")));
    }
    if !differing_pairs.is_empty() {
        reasons.push(format!(
            "differences beyond the thresholds: {}",
            differing_pairs.join(", ")
        ));
    }
    Err(CliError::ExpectationFailed(format!("matrix: {}", reasons.join("; "))))
}

fn versions_list(versions: &[IstioVersion]) -> String {
    versions.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

/// Diffs `b` against `a` and returns the summary for people and whether anything differs beyond
/// the thresholds; reports that cannot be compared are bad input (exit 2).
pub fn compare(
    (label_a, report_a): (&str, &Report),
    (label_b, report_b): (&str, &Report),
    thresholds: &Thresholds,
) -> Result<(String, bool), CliError> {
    let compared = diff::diff(report_a, label_a, report_b, label_b, thresholds).map_err(incomparable)?;
    Ok((diff::summary(&compared), compared.differs))
}

fn incomparable(error: diff::Incomparable) -> CliError {
    CliError::BadInput(format!("cannot compare: {error}"))
}

/// The report file `path` names (itself, or `report.json` in it when it is a directory) and its
/// text: a regular UTF-8 file of at most [`MAX_REPORT_BYTES`].
fn read_report_text(path: &Path) -> Result<(PathBuf, String), CliError> {
    let bad = |path: &Path, message: String| CliError::BadInput(format!("{}: {message}", path.display()));
    let metadata = std::fs::metadata(path).map_err(|error| bad(path, format!("cannot read the report: {error}")))?;
    let file_path = if metadata.is_dir() {
        path.join(REPORT_FILE)
    } else {
        path.to_owned()
    };
    let not_a_file = |path: &Path| {
        bad(
            path,
            "not a regular file: give a report.json or a directory holding one".to_owned(),
        )
    };
    let metadata = std::fs::metadata(&file_path).map_err(|error| {
        bad(
            &file_path,
            format!("cannot read the report: {error} (give a report.json or a directory holding one)"),
        )
    })?;
    if !metadata.is_file() {
        return Err(not_a_file(&file_path));
    }
    // O_NONBLOCK: a FIFO swapped in after the check must not block the open.
    let file = File::options()
        .read(true)
        .custom_flags((nix::fcntl::OFlag::O_NONBLOCK | nix::fcntl::OFlag::O_NOCTTY).bits())
        .open(&file_path)
        .map_err(|error| bad(&file_path, format!("cannot read the report: {error}")))?;
    if !file.metadata().is_ok_and(|metadata| metadata.is_file()) {
        return Err(not_a_file(&file_path));
    }
    let mut bytes = Vec::new();
    file.take(MAX_REPORT_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|error| bad(&file_path, format!("cannot read the report: {error}")))?;
    if bytes.len() as u64 > MAX_REPORT_BYTES {
        return Err(bad(
            &file_path,
            format!("larger than {MAX_REPORT_BYTES} bytes (64 MiB), the most meshfed reads; a report is far smaller"),
        ));
    }
    let text = String::from_utf8(bytes).map_err(|error| {
        let valid = &error.as_bytes()[..error.utf8_error().valid_up_to()];
        let line = valid.iter().filter(|byte| **byte == b'\n').count() + 1;
        // Columns count characters, as for JSON errors: the valid prefix is UTF-8, so counting
        // the bytes that start a character counts characters.
        let column = valid
            .iter()
            .rev()
            .take_while(|byte| **byte != b'\n')
            .filter(|byte| **byte & 0xC0 != 0x80)
            .count()
            + 1;
        CliError::BadInput(format!(
            "{}:{line}:{column}: not UTF-8: invalid byte 0x{:02x} here (a report.json is UTF-8 JSON)",
            file_path.display(),
            error.as_bytes()[valid.len()]
        ))
    })?;
    Ok((file_path, text))
}

/// A JSON error at its position: `path:line:column: message`. serde_json reports column 0 at the
/// very end of input (an empty file, a file ending in a newline); positions here start at 1, and
/// the position is given once, in front, not again in serde_json's own words.
fn json_error(path: &Path, error: &serde_json::Error, what: &str) -> CliError {
    let (line, column) = (error.line().max(1), error.column().max(1));
    let message = error.to_string();
    let message = message
        .strip_suffix(&format!(" at line {} column {}", error.line(), error.column()))
        .unwrap_or(&message);
    CliError::BadInput(format!(
        "{}:{line}:{column}: {what}: {}",
        path.display(),
        printable(message)
    ))
}

/// The report's `schema`, read before anything else.
fn schema_of(path: &Path, text: &str) -> Result<String, CliError> {
    #[derive(serde::Deserialize)]
    struct SchemaOnly {
        schema: Option<serde_json::Value>,
    }
    let probe: SchemaOnly = serde_json::from_str(text)
        .map_err(|error| json_error(path, &error, "not a meshfed report (JSON object expected)"))?;
    match probe.schema {
        Some(serde_json::Value::String(schema)) => Ok(schema),
        Some(other) => Err(CliError::BadInput(format!(
            "{}: `schema` is {other}, not a string such as {REPORT_SCHEMA:?}",
            path.display()
        ))),
        None => Err(CliError::BadInput(format!(
            "{}: no `schema` field: not a meshfed report (expected \"schema\": {REPORT_SCHEMA:?})",
            path.display()
        ))),
    }
}

fn parse_report(path: &Path, text: &str) -> Result<Report, CliError> {
    serde_json::from_str(text).map_err(|error| {
        json_error(
            path,
            &error,
            &format!("does not match the report schema {REPORT_SCHEMA} (docs/report.md)"),
        )
    })
}
