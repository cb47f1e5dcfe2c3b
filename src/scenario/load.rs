//! Loading a scenario: the file read within bounds, the YAML parsed with located errors, the model
//! validated; every error a [`ScenarioError`] naming file, line and column.

use std::fmt;
use std::path::{Path, PathBuf};

use super::{IstioVersion, MAX_INPUT_BYTES, Scenario, file, spans, validate};

/// A scenario file that could not be used: where, and what is wrong and allowed.
///
/// Displayed as `file:line:column: message`, or `file: message` when the problem has no position
/// in the file (it could not be read at all); the message then says why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ScenarioError {
    /// The scenario file.
    pub file: PathBuf,
    /// 1-based line; 0 when the problem is not at one place (an unreadable file).
    pub line: u64,
    /// 1-based column; 0 when `line` is.
    pub column: u64,
    /// What is wrong, and what is allowed.
    pub message: String,
}

impl ScenarioError {
    /// A problem of the whole file, which has no position in it.
    pub fn whole_file(file: &Path, message: impl Into<String>) -> ScenarioError {
        ScenarioError {
            file: file.to_owned(),
            line: 0,
            column: 0,
            message: message.into(),
        }
    }

    /// Whether the error points at a line and column.
    pub fn has_position(&self) -> bool {
        self.line != 0
    }
}

impl fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.has_position() {
            write!(
                f,
                "{}:{}:{}: {}",
                self.file.display(),
                self.line,
                self.column,
                self.message
            )
        } else {
            write!(f, "{}: {}", self.file.display(), self.message)
        }
    }
}

/// Reads, parses and validates a scenario file. Only a regular file of at most
/// [`MAX_INPUT_BYTES`] is read: a FIFO, device or directory is refused without reading it.
pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
    load_with_istio_version(path, None)
}

/// [`load`], with every cluster's `istioVersion` replaced by `istio_version` (when given) before
/// validation, so the checks that depend on the version (endpoint discovery, upgrades) see it.
/// `meshfed run --istio-version` checks the range first, naming the flag.
pub fn load_with_istio_version(path: &Path, istio_version: Option<IstioVersion>) -> Result<Scenario, ScenarioError> {
    let text = file::read_text(path, "scenario file")?;
    parse_with_istio_version(path, &text, istio_version)
}

/// Parses and validates scenario text; `path` is only used in error messages. Pure: no I/O, and
/// nothing is allocated in proportion to a count before the count is checked.
pub fn parse(path: &Path, text: &str) -> Result<Scenario, ScenarioError> {
    parse_with_istio_version(path, text, None)
}

/// [`parse`], overriding every cluster's `istioVersion` before validation when one is given.
pub fn parse_with_istio_version(
    path: &Path,
    text: &str,
    istio_version: Option<IstioVersion>,
) -> Result<Scenario, ScenarioError> {
    if text.len() as u64 > MAX_INPUT_BYTES {
        return Err(ScenarioError::whole_file(
            path,
            format!(
                "the scenario is larger than {MAX_INPUT_BYTES} bytes (1 MiB), the most meshfed reads; \
                 a scenario within every documented bound is far smaller"
            ),
        ));
    }
    let mut scenario: Scenario = serde_saphyr::from_str(text).map_err(|error| {
        let location = error.location().unwrap_or(serde_saphyr::Location::UNKNOWN);
        ScenarioError {
            file: path.to_owned(),
            line: location.line(),
            column: location.column(),
            message: syntax_message(&error),
        }
    })?;
    if let Some(version) = istio_version {
        for cluster in &mut scenario.clusters {
            cluster.istio_version.value = version;
        }
    }
    let spans = spans::ScenarioSpans::read(text);
    validate::validate(&scenario, &spans).map_err(|problem| ScenarioError {
        file: path.to_owned(),
        line: problem.at.line(),
        column: problem.at.column(),
        message: problem.message,
    })?;
    Ok(scenario)
}

/// The first line of serde-saphyr's message without its own location prefix (the error already
/// carries file, line and column), with number-range messages saying what is allowed.
pub(crate) fn syntax_message(error: &serde_saphyr::Error) -> String {
    let rendered = error.to_string();
    let first = rendered.lines().next().unwrap_or("invalid scenario").trim();
    let message = strip_location_prefix(first.strip_prefix("error: ").unwrap_or(first));
    match message {
        "invalid u16" => "not a whole number from 0 to 65535".to_owned(),
        "invalid u32" => "not a whole number from 0 to 4294967295".to_owned(),
        "invalid u64" => "not a whole number from 0 to 18446744073709551615".to_owned(),
        other => printable(other),
    }
}

/// `text` through the one escaper ([`crate::printable`]; the YAML reader quotes keys and values it
/// did not expect as written) and cut at 300 characters, so a message never writes raw control or
/// bidi characters to a terminal.
fn printable(text: &str) -> String {
    const SHOWN: usize = 300;
    let shown: String = text.chars().take(SHOWN).collect();
    let mut shown = crate::printable::printable(&shown).into_owned();
    if text.chars().nth(SHOWN).is_some() {
        shown.push_str("...");
    }
    shown
}

/// `line 8 column 5: unknown field` → `unknown field`.
fn strip_location_prefix(message: &str) -> &str {
    let Some(rest) = message.strip_prefix("line ") else {
        return message;
    };
    match rest.split_once(": ") {
        Some((position, tail)) if position.split(" column ").all(|n| n.parse::<u64>().is_ok()) => tail,
        _ => message,
    }
}
