//! `meshfed diff A B`: reads two run reports (bounded, validated, errors with file:line:column),
//! compares them with [`crate::diff::diff`] and prints the result for people or as JSON.
//! Exit 0: nothing differs beyond the thresholds; 1: something does; 2: the reports cannot be
//! compared (unreadable, malformed, another schema, another scenario).

use std::fs::File;
use std::io::{Read as _, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};

use super::CliError;
use crate::diff::{self, Thresholds};
use crate::report::{REPORT_SCHEMA, Report};

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
    /// `text` for people, `json` for machines (schema in docs/diff.md).
    #[arg(long, value_enum, default_value_t = DiffFormat::Text)]
    pub format: DiffFormat,
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
pub fn diff_command(args: &DiffArgs) -> Result<(), CliError> {
    let thresholds = Thresholds {
        share_tolerance: args.share_tolerance,
        alpha: args.alpha,
        rate_tolerance: args.rate_tolerance,
        latency_tolerance: args.latency_tolerance,
        latency_floor_us: (args.latency_floor_ms * 1000.0).round() as u64,
        judge_emulated_latency: args.judge_local_latency,
    };
    let (path_a, text_a) = read_report_text(&args.a)?;
    let (path_b, text_b) = read_report_text(&args.b)?;
    let label_a = path_a.display().to_string();
    let label_b = path_b.display().to_string();
    // The schema first: a report of another schema may not parse as this one, and "another
    // schema" is the message that helps, not the first field it lacks.
    let schema_a = schema_of(&path_a, &text_a)?;
    let schema_b = schema_of(&path_b, &text_b)?;
    if schema_a != schema_b {
        return Err(incomparable(diff::Incomparable::SchemaMismatch {
            label_a,
            schema_a,
            label_b,
            schema_b,
        }));
    }
    if schema_a != REPORT_SCHEMA {
        return Err(incomparable(diff::Incomparable::UnsupportedSchema {
            label: label_a,
            schema: schema_a,
        }));
    }
    let report_a = parse_report(&path_a, &text_a)?;
    let report_b = parse_report(&path_b, &text_b)?;
    let compared = diff::diff(&report_a, &label_a, &report_b, &label_b, &thresholds).map_err(incomparable)?;
    let rendered = match args.format {
        DiffFormat::Text => diff::summary(&compared),
        DiffFormat::Json => {
            serde_json::to_string_pretty(&compared).map_err(|error| CliError::Infrastructure(error.into()))? + "\n"
        }
    };
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(rendered.as_bytes())
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
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
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
        let column = valid.iter().rev().take_while(|byte| **byte != b'\n').count() + 1;
        bad(
            &file_path,
            format!("{line}:{column}: not UTF-8 (a report.json is UTF-8 JSON)"),
        )
    })?;
    Ok((file_path, text))
}

/// A JSON error at its position: `path:line:column: message`.
fn json_error(path: &Path, error: &serde_json::Error, what: &str) -> CliError {
    CliError::BadInput(format!(
        "{}:{}:{}: {what}: {error}",
        path.display(),
        error.line(),
        error.column()
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
