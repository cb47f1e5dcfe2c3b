//! Reading run reports for `meshfed diff` and `meshfed run --compare-to`: bounded, a regular
//! UTF-8 file, the schema checked first, errors with file:line:column (exit 2).

use std::fs::File;
use std::io::Read as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use super::CliError;
use super::diff::incomparable;
use crate::diff;
use crate::printable::printable;
use crate::report::{REPORT_SCHEMA, Report};

/// Largest report meshfed reads: a report holds aggregates, not requests, so even a thousand-pod
/// phase list stays far below this; anything bigger is not a report.
pub(super) const MAX_REPORT_BYTES: u64 = 64 * 1024 * 1024;

/// The file a report directory holds.
const REPORT_FILE: &str = "report.json";

/// A report file read for `meshfed diff`: its path, its `schema`, and the report parsed when the
/// schema is the one this meshfed reads (`Ok(None)` otherwise; the caller decides which message
/// fits). A malformed report of the right schema is the inner error, reported only after both
/// schemas were compared.
pub(super) type ReadReport = (PathBuf, String, Result<Option<Report>, CliError>);

/// Reads and parses one report; its text is dropped once parsed.
pub(super) fn read_report_of_schema(path: &Path) -> Result<ReadReport, CliError> {
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
pub(super) fn read_baseline(
    path: &Path,
    scenario_path: &Path,
    scenario_name: &str,
) -> Result<(String, Report), CliError> {
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
