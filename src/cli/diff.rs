//! `meshfed diff A B`: reads two run reports (bounded, validated, errors with file:line:column),
//! compares them with [`crate::diff::diff`] and prints the result for people or as JSON.
//! Exit 0: nothing differs beyond the thresholds; 1: something does; 2: the reports cannot be
//! compared (unreadable, malformed, another schema, another scenario).
//!
//! Reading the reports is `report_file`'s job; the runs that compare themselves are in
//! `run_scenario` (`--compare-to`) and `version_matrix` (`--istio-version A --istio-version B`).

use std::io::Write as _;
use std::path::PathBuf;

use clap::{Args, ValueEnum};

use super::CliError;
use super::report_file::read_report_of_schema;
use crate::diff::{self, Thresholds};
use crate::report::Report;

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

pub(super) fn incomparable(error: diff::Incomparable) -> CliError {
    CliError::BadInput(format!("cannot compare: {error}"))
}
