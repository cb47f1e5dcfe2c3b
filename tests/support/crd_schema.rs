//! Test support: checks Istio objects against the OpenAPI v3 schemas in Istio's own CRD file, as
//! the API server would, except that unknown fields are violations (a structural schema would prune
//! them silently, which for meshfed means a generator bug).
//!
//! The CRD file is test data outside the
//! project: its path comes from `MESHFED_ISTIO_CRDS` (see [`crd_file_or_skip`]).
//!
//! What is checked: `type`, `properties`, `additionalProperties` (bool or schema), `required`,
//! `enum`, `items`, `oneOf`/`anyOf`/`allOf`/`not`, `minimum`/`maximum` (and the exclusive forms),
//! `multipleOf`, `format` (int32, int64, uint32, uint64, float, double, byte, date-time),
//! `minItems`/`maxItems`/`uniqueItems`, `minLength`/`maxLength`, `minProperties`/`maxProperties`,
//! `nullable`, `x-kubernetes-preserve-unknown-fields`, `x-kubernetes-int-or-string`,
//! `x-kubernetes-list-type` (set/map uniqueness) with `x-kubernetes-list-map-keys`, and the
//! object metadata the API server itself validates (name, namespace, label and annotation keys).
//! What is not: CEL rules (`x-kubernetes-validations`) and regular-expression `pattern`s other than
//! the few Istio uses, which are matched by hand. Both are listed in the [`ValidationReport`] so a
//! test can say how much went unchecked.

use super::skip;

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use serde_json::{Map, Number, Value};

/// Environment variable naming Istio's `customresourcedefinitions.gen.yaml`.
pub const CRD_FILE_ENV: &str = "MESHFED_ISTIO_CRDS";

/// Schema keywords this module validates.
pub const VALIDATED_KEYWORDS: &[&str] = &[
    "type",
    "properties",
    "additionalProperties",
    "required",
    "enum",
    "items",
    "oneOf",
    "anyOf",
    "allOf",
    "not",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
    "format",
    "minItems",
    "maxItems",
    "uniqueItems",
    "minLength",
    "maxLength",
    "minProperties",
    "maxProperties",
    "pattern",
    "nullable",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-int-or-string",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
];

/// Schema keywords that are recognised but deliberately not evaluated; every occurrence met while
/// validating an object is listed in its [`ValidationReport`].
pub const NOT_EVALUATED_KEYWORDS: &[&str] = &["x-kubernetes-validations"];

/// Schema keywords with no effect on whether an object is accepted.
pub const ANNOTATION_KEYWORDS: &[&str] = &[
    "description",
    "title",
    "example",
    "externalDocs",
    "x-kubernetes-map-type",
];

/// Returns the CRD file named by `MESHFED_ISTIO_CRDS`, or `None` after printing why the calling
/// test is skipped. Under `CI=true` a missing variable or file panics instead: CI must not pass by
/// skipping the schema check.
///
/// The skip message goes straight to the process's stderr, so it shows even though the test
/// harness captures `println!` output of passing tests.
pub fn crd_file_or_skip() -> Option<PathBuf> {
    let reason = match std::env::var_os(CRD_FILE_ENV) {
        None => format!("{CRD_FILE_ENV} is not set"),
        Some(value) if value.is_empty() => format!("{CRD_FILE_ENV} is empty"),
        Some(value) => {
            let path = PathBuf::from(value);
            if path.is_file() {
                return Some(path);
            }
            format!("{CRD_FILE_ENV}={} is not an existing file", path.display())
        }
    };
    let hint = format!(
        "set {CRD_FILE_ENV} to Istio's customresourcedefinitions.gen.yaml \
         (from the istio/api repository: kubernetes/customresourcedefinitions.gen.yaml; .ci/run points at a copy)"
    );
    if std::env::var("CI").is_ok_and(|ci| ci == "true") {
        panic!("Istio CRD schema check cannot run under CI=true: {reason}; {hint}");
    }
    skip::skip(&format!("Istio CRD schema check not run: {reason}; {hint}"));
    None
}

/// [`crd_file_or_skip`] followed by loading that file once per test binary. Panics if the file
/// exists but cannot be loaded.
pub fn shared_crd_schemas() -> Option<&'static CrdSchemas> {
    static LOADED: OnceLock<Mutex<BTreeMap<PathBuf, &'static CrdSchemas>>> = OnceLock::new();
    let path = crd_file_or_skip()?;
    let mut loaded = LOADED
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(schemas) = loaded.get(&path) {
        return Some(schemas);
    }
    let schemas: &'static CrdSchemas = match CrdSchemas::load(&path) {
        Ok(schemas) => Box::leak(Box::new(schemas)),
        Err(error) => panic!("{}", error_chain(&error)),
    };
    loaded.insert(path, schemas);
    Some(schemas)
}

/// An error with all its sources, for panic messages.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

/// Why the CRD file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum CrdLoadError {
    /// The file could not be read.
    #[error("failed to read Istio CRD file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid YAML.
    #[error("failed to parse Istio CRD file {path} as YAML")]
    Parse {
        path: PathBuf,
        #[source]
        source: Box<serde_saphyr::Error>,
    },
    /// A document is not a well-formed CustomResourceDefinition.
    #[error("Istio CRD file {path}, document {document}: {problem}")]
    Malformed {
        path: PathBuf,
        /// 1-based position of the YAML document in the file.
        document: usize,
        problem: String,
    },
}

/// The key a schema is found by: `networking.istio.io`, `v1alpha3`, `ServiceEntry`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GroupVersionKind {
    pub group: String,
    pub version: String,
    pub kind: String,
}

impl GroupVersionKind {
    /// Splits an object's `apiVersion` (`group/version`) and pairs it with `kind`.
    pub fn from_api_version(api_version: &str, kind: &str) -> Self {
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        Self {
            group: group.to_owned(),
            version: version.to_owned(),
            kind: kind.to_owned(),
        }
    }

    /// `group/version`, as written in an object's `apiVersion`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
}

impl fmt::Display for GroupVersionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.api_version(), self.kind)
    }
}

/// One served version of a CRD and its schema.
#[derive(Debug, Clone)]
pub struct CrdVersion {
    pub served: bool,
    pub storage: bool,
    pub deprecated: bool,
    /// `schema.openAPIV3Schema` of this version.
    pub schema: Value,
}

/// Which schema keywords (and which values of a few of them) occur in the CRD file, counted over
/// schema nodes (property names are not mistaken for keywords).
#[derive(Debug, Clone, Default)]
pub struct KeywordSurvey {
    /// Keyword → number of schema nodes carrying it.
    pub keywords: BTreeMap<String, usize>,
    /// `format` value → occurrences.
    pub formats: BTreeMap<String, usize>,
    /// `pattern` value → occurrences.
    pub patterns: BTreeMap<String, usize>,
    /// `x-kubernetes-list-type` value → occurrences.
    pub list_types: BTreeMap<String, usize>,
    /// Total number of CEL rules in `x-kubernetes-validations`.
    pub cel_rules: usize,
}

impl KeywordSurvey {
    /// Keywords that occur in the file but that this module neither validates, nor lists as not
    /// evaluated, nor knows to be annotations. Must be empty for the validation to be trusted.
    pub fn unhandled_keywords(&self) -> Vec<&str> {
        self.keywords
            .keys()
            .map(String::as_str)
            .filter(|keyword| {
                !VALIDATED_KEYWORDS.contains(keyword)
                    && !NOT_EVALUATED_KEYWORDS.contains(keyword)
                    && !ANNOTATION_KEYWORDS.contains(keyword)
            })
            .collect()
    }

    /// `format` values that occur in the file but are not checked.
    pub fn unchecked_formats(&self) -> Vec<&str> {
        self.formats
            .keys()
            .map(String::as_str)
            .filter(|format| !is_known_format(format))
            .collect()
    }

    /// `pattern` values that occur in the file but are not matched (skipped).
    pub fn unmatched_patterns(&self) -> Vec<&str> {
        self.patterns
            .keys()
            .map(String::as_str)
            .filter(|pattern| known_pattern(pattern).is_none())
            .collect()
    }

    fn record_node(&mut self, schema: &Map<String, Value>) {
        for (keyword, value) in schema {
            *self.keywords.entry(keyword.clone()).or_default() += 1;
            let tally = match keyword.as_str() {
                "format" => &mut self.formats,
                "pattern" => &mut self.patterns,
                "x-kubernetes-list-type" => &mut self.list_types,
                "x-kubernetes-validations" => {
                    self.cel_rules += value.as_array().map_or(0, Vec::len);
                    continue;
                }
                _ => continue,
            };
            let shown = value.as_str().map_or_else(|| value.to_string(), str::to_owned);
            *tally.entry(shown).or_default() += 1;
        }
    }

    fn walk(&mut self, schema: &Value) {
        let Some(node) = schema.as_object() else {
            return;
        };
        self.record_node(node);
        if let Some(properties) = node.get("properties").and_then(Value::as_object) {
            properties.values().for_each(|child| self.walk(child));
        }
        for keyword in ["items", "additionalProperties", "not"] {
            if let Some(child) = node.get(keyword) {
                self.walk(child);
            }
        }
        for keyword in ["oneOf", "anyOf", "allOf"] {
            if let Some(branches) = node.get(keyword).and_then(Value::as_array) {
                branches.iter().for_each(|branch| self.walk(branch));
            }
        }
    }
}

/// Every schema in Istio's CRD file, indexed by group, version and kind.
#[derive(Debug, Clone, Default)]
pub struct CrdSchemas {
    versions: BTreeMap<GroupVersionKind, CrdVersion>,
    survey: KeywordSurvey,
}

impl CrdSchemas {
    /// Reads and indexes a (multi-document) CRD YAML file.
    pub fn load(path: &Path) -> Result<Self, CrdLoadError> {
        let text = std::fs::read_to_string(path).map_err(|source| CrdLoadError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_yaml_str(&text, path)
    }

    /// Indexes CRDs given as YAML text; `origin` only names the text in errors.
    pub fn from_yaml_str(yaml: &str, origin: &Path) -> Result<Self, CrdLoadError> {
        let documents: Vec<Value> = serde_saphyr::from_multiple(yaml).map_err(|source| CrdLoadError::Parse {
            path: origin.to_owned(),
            source: Box::new(source),
        })?;
        let mut schemas = Self::default();
        for (index, document) in documents.iter().enumerate() {
            schemas.add_crd(document).map_err(|problem| CrdLoadError::Malformed {
                path: origin.to_owned(),
                document: index + 1,
                problem,
            })?;
        }
        Ok(schemas)
    }

    fn add_crd(&mut self, document: &Value) -> Result<(), String> {
        if document.get("kind").and_then(Value::as_str) != Some("CustomResourceDefinition") {
            return Ok(());
        }
        let text_at = |pointer: &str| {
            document
                .pointer(pointer)
                .and_then(Value::as_str)
                .ok_or_else(|| format!("{} is missing or not a string", pointer_to_path(pointer)))
        };
        let group = text_at("/spec/group")?;
        let kind = text_at("/spec/names/kind")?;
        let versions = document
            .pointer("/spec/versions")
            .and_then(Value::as_array)
            .ok_or("spec.versions is missing or not a list")?;
        for (index, version) in versions.iter().enumerate() {
            let name = version
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| format!("spec.versions[{index}].name is missing"))?;
            let schema = version
                .pointer("/schema/openAPIV3Schema")
                .filter(|schema| schema.is_object())
                .ok_or_else(|| format!("spec.versions[{index}] ({name}) has no schema.openAPIV3Schema"))?;
            let flag = |key: &str| version.get(key).and_then(Value::as_bool).unwrap_or(false);
            self.survey.walk(schema);
            self.versions.insert(
                GroupVersionKind {
                    group: group.to_owned(),
                    version: name.to_owned(),
                    kind: kind.to_owned(),
                },
                CrdVersion {
                    served: flag("served"),
                    storage: flag("storage"),
                    deprecated: flag("deprecated"),
                    schema: schema.clone(),
                },
            );
        }
        Ok(())
    }

    /// Every (group, version, kind) the file has a schema for, sorted.
    pub fn kinds(&self) -> impl Iterator<Item = (&GroupVersionKind, &CrdVersion)> {
        self.versions.iter()
    }

    /// The version entry for `apiVersion` + `kind`, if the file defines it.
    pub fn version(&self, api_version: &str, kind: &str) -> Option<&CrdVersion> {
        self.versions
            .get(&GroupVersionKind::from_api_version(api_version, kind))
    }

    /// Keywords, formats, patterns and CEL rules found in the file.
    pub fn survey(&self) -> &KeywordSurvey {
        &self.survey
    }

    /// Validates an object (`apiVersion`, `kind`, `metadata`, `spec`) against the schema of its
    /// apiVersion and kind, and returns every violation, each with a JSON path.
    pub fn validate(&self, object: &Value) -> ValidationReport {
        let mut findings = Findings::default();
        let Some(fields) = object.as_object() else {
            findings.violation("", format!("expected an object, got {}", json_type_name(object)));
            return findings.into_report(None);
        };
        let api_version = fields.get("apiVersion").and_then(Value::as_str);
        let kind = fields.get("kind").and_then(Value::as_str);
        let (Some(api_version), Some(kind)) = (api_version, kind) else {
            for key in ["apiVersion", "kind"] {
                if !fields.get(key).is_some_and(Value::is_string) {
                    findings.violation(key, "required string field is missing or not a string");
                }
            }
            return findings.into_report(None);
        };
        let gvk = GroupVersionKind::from_api_version(api_version, kind);
        let Some(version) = self.versions.get(&gvk) else {
            let known: Vec<String> = self
                .versions
                .keys()
                .filter(|known| known.kind == gvk.kind)
                .map(GroupVersionKind::api_version)
                .collect();
            findings.violation(
                "apiVersion",
                format!(
                    "the CRD file has no schema for {gvk} (versions of {kind} it has: {})",
                    if known.is_empty() {
                        "none".to_owned()
                    } else {
                        known.join(", ")
                    }
                ),
            );
            return findings.into_report(Some(gvk));
        };
        if !version.served {
            findings.violation("apiVersion", format!("{gvk} is defined but not served"));
        }

        // apiVersion, kind and metadata are implicit at the root of every CRD schema.
        let mut body = fields.clone();
        body.remove("apiVersion");
        body.remove("kind");
        let metadata = body.remove("metadata");
        match &metadata {
            Some(metadata) => check_object_meta(metadata, &mut findings),
            None => findings.violation("metadata", "required field is missing"),
        }
        if let (Some(metadata), Some(meta_schema)) = (&metadata, version.schema.pointer("/properties/metadata")) {
            check(meta_schema, metadata, "metadata", Context::Junctor, &mut findings);
        }
        let mut root_schema = version.schema.clone();
        if let Some(properties) = root_schema.get_mut("properties").and_then(Value::as_object_mut) {
            properties.remove("metadata");
        }
        check(
            &root_schema,
            &Value::Object(body),
            "",
            Context::Structural,
            &mut findings,
        );
        findings.into_report(Some(gvk))
    }

    /// [`validate`](Self::validate), panicking with every violation if there is any.
    pub fn expect_valid(&self, object: &Value) -> ValidationReport {
        let report = self.validate(object);
        assert!(
            report.is_valid(),
            "{} violates Istio's schema:\n{}",
            object_label(object),
            report.violation_lines()
        );
        report
    }
}

/// One way an object breaks its schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// JSON path of the offending value, e.g. `spec.endpoints[0].ports.http`.
    pub path: String,
    /// What is wrong, e.g. `expected integer, got string`.
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = if self.path.is_empty() { "(root)" } else { &self.path };
        write!(f, "{path}: {}", self.message)
    }
}

/// A check that applied to the object but was not carried out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotEvaluated {
    /// JSON path of the value the check applies to.
    pub path: String,
    /// The rule, pattern or format that was not checked.
    pub check: String,
}

/// The outcome of validating one object.
#[derive(Debug, Clone, Default)]
pub struct ValidationReport {
    /// The object's group, version and kind, if it named them.
    pub gvk: Option<GroupVersionKind>,
    /// Every violation found, in document order.
    pub violations: Vec<Violation>,
    /// CEL rules (`x-kubernetes-validations`) that apply to values in the object but were not
    /// evaluated.
    pub unevaluated_cel_rules: Vec<NotEvaluated>,
    /// Regular-expression patterns that apply but were not matched.
    pub skipped_patterns: Vec<NotEvaluated>,
    /// Formats that apply but are not known to this module.
    pub unchecked_formats: Vec<NotEvaluated>,
}

impl ValidationReport {
    /// True when no violation was found (checks that were not evaluated are not counted).
    pub fn is_valid(&self) -> bool {
        self.violations.is_empty()
    }

    /// True when some violation is at exactly `path` and its message contains `message_part`.
    pub fn has_violation(&self, path: &str, message_part: &str) -> bool {
        self.violations
            .iter()
            .any(|violation| violation.path == path && violation.message.contains(message_part))
    }

    /// One violation per line.
    pub fn violation_lines(&self) -> String {
        self.violations
            .iter()
            .map(|violation| format!("  {violation}"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// One line naming what was checked and what was not, for test output.
    pub fn summary(&self) -> String {
        let kind = self
            .gvk
            .as_ref()
            .map_or_else(|| "object".to_owned(), ToString::to_string);
        format!(
            "{kind}: {} violation(s); not evaluated: {} CEL rule(s), {} pattern(s), {} format(s)",
            self.violations.len(),
            self.unevaluated_cel_rules.len(),
            self.skipped_patterns.len(),
            self.unchecked_formats.len()
        )
    }
}

#[derive(Debug, Default)]
struct Findings {
    violations: Vec<Violation>,
    unevaluated_cel_rules: Vec<NotEvaluated>,
    skipped_patterns: Vec<NotEvaluated>,
    unchecked_formats: Vec<NotEvaluated>,
}

impl Findings {
    fn violation(&mut self, path: &str, message: impl Into<String>) {
        self.violations.push(Violation {
            path: path.to_owned(),
            message: message.into(),
        });
    }

    /// Keeps what a junctor branch could not evaluate, drops its violations.
    fn absorb_unevaluated(&mut self, branch: Findings) {
        self.unevaluated_cel_rules.extend(branch.unevaluated_cel_rules);
        self.skipped_patterns.extend(branch.skipped_patterns);
        self.unchecked_formats.extend(branch.unchecked_formats);
    }

    fn into_report(self, gvk: Option<GroupVersionKind>) -> ValidationReport {
        ValidationReport {
            gvk,
            violations: self.violations,
            unevaluated_cel_rules: self.unevaluated_cel_rules,
            skipped_patterns: self.skipped_patterns,
            unchecked_formats: self.unchecked_formats,
        }
    }
}

/// Whether unknown fields are rejected: in the structural schema yes (the API server would prune
/// them), inside `oneOf`/`anyOf`/`allOf`/`not` branches no (they only constrain, as in JSON Schema).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Context {
    Structural,
    Junctor,
}

fn check(schema: &Value, value: &Value, path: &str, context: Context, out: &mut Findings) {
    let node = match schema {
        Value::Object(node) => node,
        Value::Bool(false) => {
            out.violation(path, "no value is allowed here (schema is false)");
            return;
        }
        _ => return,
    };
    let flag = |key: &str| node.get(key).and_then(Value::as_bool).unwrap_or(false);
    let declared_type = node.get("type").and_then(Value::as_str);

    if value.is_null() {
        if flag("nullable") {
            return;
        }
        if let Some(expected) = declared_type {
            out.violation(path, format!("expected {expected}, got null (not nullable)"));
        } else if flag("x-kubernetes-int-or-string") {
            out.violation(path, "expected integer or string, got null (not nullable)");
        }
        return;
    }

    if let Some(rules) = node.get("x-kubernetes-validations").and_then(Value::as_array) {
        for rule in rules {
            out.unevaluated_cel_rules.push(NotEvaluated {
                path: path.to_owned(),
                check: rule
                    .get("rule")
                    .and_then(Value::as_str)
                    .map_or_else(|| short_json(rule), str::to_owned),
            });
        }
    }

    if flag("x-kubernetes-int-or-string") && !(is_integer(value) || value.is_string()) {
        out.violation(
            path,
            format!("expected integer or string, got {}", json_type_name(value)),
        );
        return;
    }
    if let Some(expected) = declared_type
        && !type_matches(expected, value)
    {
        out.violation(path, format!("expected {expected}, got {}", json_type_name(value)));
        return;
    }
    if let Some(allowed) = node.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        let listed: Vec<String> = allowed.iter().map(short_json).collect();
        out.violation(
            path,
            format!("{} is not one of {}", short_json(value), listed.join(", ")),
        );
    }

    match value {
        Value::String(text) => check_string(node, text, path, out),
        Value::Number(number) => check_number(node, number, path, out),
        Value::Array(items) => check_array(node, items, path, context, out),
        Value::Object(fields) => check_object(node, fields, path, context, out),
        Value::Bool(_) | Value::Null => {}
    }
    check_junctors(node, value, path, out);
}

fn check_string(node: &Map<String, Value>, text: &str, path: &str, out: &mut Findings) {
    let length = text.chars().count() as u64;
    if let Some(max) = node.get("maxLength").and_then(Value::as_u64)
        && length > max
    {
        out.violation(path, format!("length {length} exceeds maxLength {max}"));
    }
    if let Some(min) = node.get("minLength").and_then(Value::as_u64)
        && length < min
    {
        out.violation(path, format!("length {length} is below minLength {min}"));
    }
    if let Some(pattern) = node.get("pattern").and_then(Value::as_str) {
        match known_pattern(pattern) {
            Some(matches) if !matches(text) => out.violation(
                path,
                format!("{} does not match pattern {pattern}", short_json(&text.into())),
            ),
            Some(_) => {}
            None => out.skipped_patterns.push(NotEvaluated {
                path: path.to_owned(),
                check: pattern.to_owned(),
            }),
        }
    }
    match node.get("format").and_then(Value::as_str) {
        Some("byte") if !is_base64(text) => {
            out.violation(path, "format byte: not standard base64");
        }
        Some("date-time") if !is_rfc3339_date_time(text) => {
            out.violation(path, "format date-time: not an RFC 3339 date-time");
        }
        Some(format) if !is_known_format(format) => out.unchecked_formats.push(NotEvaluated {
            path: path.to_owned(),
            check: format.to_owned(),
        }),
        _ => {}
    }
}

fn check_number(node: &Map<String, Value>, number: &Number, path: &str, out: &mut Findings) {
    let shown = number.to_string();
    let exclusive = |key: &str| node.get(key).and_then(Value::as_bool).unwrap_or(false);
    if let Some(Value::Number(minimum)) = node.get("minimum") {
        let order = compare_numbers(number, minimum);
        if order == Ordering::Less || (exclusive("exclusiveMinimum") && order == Ordering::Equal) {
            out.violation(path, format!("{shown} is below minimum {minimum}"));
        }
    }
    if let Some(Value::Number(maximum)) = node.get("maximum") {
        let order = compare_numbers(number, maximum);
        if order == Ordering::Greater || (exclusive("exclusiveMaximum") && order == Ordering::Equal) {
            out.violation(path, format!("{shown} is above maximum {maximum}"));
        }
    }
    if let Some(divisor) = node.get("multipleOf").and_then(Value::as_f64) {
        let quotient = number.as_f64().unwrap_or(f64::NAN) / divisor;
        if divisor > 0.0 && (quotient - quotient.round()).abs() > 1e-9 {
            out.violation(path, format!("{shown} is not a multiple of {divisor}"));
        }
    }
    let Some(format) = node.get("format").and_then(Value::as_str) else {
        return;
    };
    let integer = integer_value(number);
    let range: Option<(i128, i128)> = match format {
        "int32" => Some((i32::MIN.into(), i32::MAX.into())),
        "int64" => Some((i64::MIN.into(), i64::MAX.into())),
        "uint32" => Some((0, u32::MAX.into())),
        "uint64" => Some((0, u64::MAX.into())),
        "float" | "double" => None,
        other => {
            if !is_known_format(other) {
                out.unchecked_formats.push(NotEvaluated {
                    path: path.to_owned(),
                    check: other.to_owned(),
                });
            }
            None
        }
    };
    if let (Some((low, high)), Some(integer)) = (range, integer)
        && (integer < low || integer > high)
    {
        out.violation(path, format!("{shown} is out of range for format {format}"));
    }
}

fn check_array(node: &Map<String, Value>, items: &[Value], path: &str, context: Context, out: &mut Findings) {
    let count = items.len() as u64;
    if let Some(max) = node.get("maxItems").and_then(Value::as_u64)
        && count > max
    {
        out.violation(path, format!("{count} items exceed maxItems {max}"));
    }
    if let Some(min) = node.get("minItems").and_then(Value::as_u64)
        && count < min
    {
        out.violation(path, format!("{count} items are below minItems {min}"));
    }
    let list_type = node.get("x-kubernetes-list-type").and_then(Value::as_str);
    let unique = node.get("uniqueItems").and_then(Value::as_bool) == Some(true);
    if unique || list_type == Some("set") {
        for (index, item) in items.iter().enumerate() {
            if let Some(first) = items[..index].iter().position(|earlier| earlier == item) {
                out.violation(
                    &format!("{path}[{index}]"),
                    format!("duplicate of [{first}] in a list of unique items"),
                );
            }
        }
    }
    if list_type == Some("map") {
        let keys: Vec<&str> = node
            .get("x-kubernetes-list-map-keys")
            .and_then(Value::as_array)
            .map(|keys| keys.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let key_of = |item: &Value| -> Vec<Value> {
            keys.iter()
                .map(|key| item.get(key).cloned().unwrap_or(Value::Null))
                .collect()
        };
        for (index, item) in items.iter().enumerate() {
            let key = key_of(item);
            if let Some(first) = items[..index].iter().position(|earlier| key_of(earlier) == key) {
                let shown: Vec<String> = keys
                    .iter()
                    .zip(&key)
                    .map(|(name, value)| format!("{name}={}", short_json(value)))
                    .collect();
                out.violation(
                    &format!("{path}[{index}]"),
                    format!(
                        "duplicate list-map key ({}) already used by [{first}]",
                        shown.join(", ")
                    ),
                );
            }
        }
    }
    if let Some(item_schema) = node.get("items") {
        for (index, item) in items.iter().enumerate() {
            check(item_schema, item, &format!("{path}[{index}]"), context, out);
        }
    }
}

fn check_object(
    node: &Map<String, Value>,
    fields: &Map<String, Value>,
    path: &str,
    context: Context,
    out: &mut Findings,
) {
    let count = fields.len() as u64;
    if let Some(max) = node.get("maxProperties").and_then(Value::as_u64)
        && count > max
    {
        out.violation(path, format!("{count} fields exceed maxProperties {max}"));
    }
    if let Some(min) = node.get("minProperties").and_then(Value::as_u64)
        && count < min
    {
        out.violation(path, format!("{count} fields are below minProperties {min}"));
    }
    if let Some(required) = node.get("required").and_then(Value::as_array) {
        for name in required.iter().filter_map(Value::as_str) {
            if !fields.contains_key(name) {
                out.violation(&child_path(path, name), "required field is missing");
            }
        }
    }
    let properties = node.get("properties").and_then(Value::as_object);
    let additional = node.get("additionalProperties");
    let preserve_unknown = node
        .get("x-kubernetes-preserve-unknown-fields")
        .and_then(Value::as_bool)
        == Some(true);
    for (name, value) in fields {
        let field_path = child_path(path, name);
        if let Some(property) = properties.and_then(|properties| properties.get(name)) {
            check(property, value, &field_path, context, out);
            continue;
        }
        match additional {
            Some(Value::Bool(false)) => {
                out.violation(&field_path, "unknown field (additionalProperties is false)");
            }
            Some(Value::Bool(true)) => {}
            Some(additional_schema) => check(additional_schema, value, &field_path, context, out),
            None if preserve_unknown || context == Context::Junctor => {}
            None => {
                let known: Vec<&str> = properties
                    .map(|properties| properties.keys().map(String::as_str).collect())
                    .unwrap_or_default();
                out.violation(
                    &field_path,
                    format!(
                        "unknown field (the API server would prune it); known fields: {}",
                        if known.is_empty() {
                            "none".to_owned()
                        } else {
                            known.join(", ")
                        }
                    ),
                );
            }
        }
    }
}

fn check_junctors(node: &Map<String, Value>, value: &Value, path: &str, out: &mut Findings) {
    if let Some(branches) = node.get("allOf").and_then(Value::as_array) {
        for branch in branches {
            check(branch, value, path, Context::Junctor, out);
        }
    }
    if let Some(branches) = node.get("anyOf").and_then(Value::as_array) {
        let results = evaluate_branches(branches, value, path, out);
        if !results.iter().any(|result| result.is_empty()) {
            out.violation(
                path,
                format!(
                    "matches none of the anyOf alternatives: {}",
                    describe_failures(branches, &results)
                ),
            );
        }
    }
    if let Some(branches) = node.get("oneOf").and_then(Value::as_array) {
        let results = evaluate_branches(branches, value, path, out);
        let matched: Vec<String> = branches
            .iter()
            .zip(&results)
            .filter(|(_, result)| result.is_empty())
            .map(|(branch, _)| describe_branch(branch))
            .collect();
        match matched.len() {
            1 => {}
            0 => out.violation(
                path,
                format!(
                    "matches none of the oneOf alternatives: {}",
                    describe_failures(branches, &results)
                ),
            ),
            _ => out.violation(
                path,
                format!(
                    "matches {} oneOf alternatives where exactly one is allowed (mutually exclusive): {}",
                    matched.len(),
                    matched.join("; ")
                ),
            ),
        }
    }
    if let Some(negated) = node.get("not") {
        let mut branch = Findings::default();
        check(negated, value, path, Context::Junctor, &mut branch);
        if branch.violations.is_empty() {
            out.violation(path, format!("must not match: {}", describe_branch(negated)));
        }
        out.absorb_unevaluated(branch);
    }
}

/// Validates `value` against each branch and returns each branch's violations.
fn evaluate_branches(branches: &[Value], value: &Value, path: &str, out: &mut Findings) -> Vec<Vec<Violation>> {
    branches
        .iter()
        .map(|branch| {
            let mut findings = Findings::default();
            check(branch, value, path, Context::Junctor, &mut findings);
            let violations = std::mem::take(&mut findings.violations);
            out.absorb_unevaluated(findings);
            violations
        })
        .collect()
}

fn describe_failures(branches: &[Value], results: &[Vec<Violation>]) -> String {
    branches
        .iter()
        .zip(results)
        .map(|(branch, violations)| {
            let first = violations
                .first()
                .map_or_else(String::new, |violation| format!(" ({violation})"));
            format!("{}{first}", describe_branch(branch))
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Short human description of a junctor branch; Istio's are mostly `required: [x]` and
/// `not: {anyOf: [{required: [x]}, …]}`, i.e. "sets x" and "sets none of x, y".
fn describe_branch(branch: &Value) -> String {
    let required_of = |schema: &Value| -> Option<Vec<String>> {
        let node = schema.as_object()?;
        if node.len() != 1 {
            return None;
        }
        let names = node.get("required")?.as_array()?;
        Some(names.iter().filter_map(Value::as_str).map(str::to_owned).collect())
    };
    if let Some(names) = required_of(branch) {
        return format!("sets {}", names.join(" and "));
    }
    let none_of = branch
        .get("not")
        .and_then(|negated| negated.get("anyOf"))
        .and_then(Value::as_array)
        .and_then(|alternatives| alternatives.iter().map(required_of).collect::<Option<Vec<_>>>());
    if let Some(alternatives) = none_of {
        let names: Vec<String> = alternatives.into_iter().flatten().collect();
        return format!("sets none of {}", names.join(", "));
    }
    let text = short_json(branch);
    if text.len() > 120 {
        format!("{}…", text.chars().take(120).collect::<String>())
    } else {
        text
    }
}

/// What the API server validates in every object's metadata, beyond the CRD schema.
fn check_object_meta(metadata: &Value, out: &mut Findings) {
    let Some(fields) = metadata.as_object() else {
        out.violation("metadata", format!("expected object, got {}", json_type_name(metadata)));
        return;
    };
    const STRING_FIELDS: &[&str] = &[
        "name",
        "generateName",
        "namespace",
        "uid",
        "resourceVersion",
        "selfLink",
        "creationTimestamp",
        "deletionTimestamp",
    ];
    const OTHER_FIELDS: &[&str] = &[
        "labels",
        "annotations",
        "generation",
        "deletionGracePeriodSeconds",
        "finalizers",
        "ownerReferences",
        "managedFields",
    ];
    for (name, value) in fields {
        let path = child_path("metadata", name);
        if STRING_FIELDS.contains(&name.as_str()) {
            if !value.is_string() {
                out.violation(&path, format!("expected string, got {}", json_type_name(value)));
            }
        } else if !OTHER_FIELDS.contains(&name.as_str()) {
            out.violation(&path, "unknown ObjectMeta field");
        }
    }
    match fields.get("name").and_then(Value::as_str) {
        Some(name) if !is_dns1123_subdomain(name) => out.violation(
            "metadata.name",
            format!("{name:?} is not a DNS-1123 subdomain (lowercase alphanumerics, '-', '.', at most 253)"),
        ),
        Some(_) => {}
        None if fields.contains_key("generateName") => {}
        None => out.violation("metadata.name", "required field is missing"),
    }
    if let Some(namespace) = fields.get("namespace").and_then(Value::as_str)
        && !is_dns1123_label(namespace)
    {
        out.violation(
            "metadata.namespace",
            format!("{namespace:?} is not a DNS-1123 label (lowercase alphanumerics, '-', at most 63)"),
        );
    }
    for (map_name, check_value) in [("labels", true), ("annotations", false)] {
        let Some(map) = fields.get(map_name) else {
            continue;
        };
        let map_path = child_path("metadata", map_name);
        let Some(entries) = map.as_object() else {
            out.violation(&map_path, format!("expected object, got {}", json_type_name(map)));
            continue;
        };
        for (key, value) in entries {
            let entry_path = child_path(&map_path, key);
            if !is_qualified_name(key) {
                out.violation(&entry_path, format!("{key:?} is not a valid {map_name} key"));
            }
            match value.as_str() {
                None => out.violation(&entry_path, format!("expected string, got {}", json_type_name(value))),
                Some(text) if check_value && !is_label_value(text) => out.violation(
                    &entry_path,
                    format!(
                        "{text:?} is not a valid label value (at most 63 of [A-Za-z0-9-_.], alphanumeric at both ends)"
                    ),
                ),
                Some(_) => {}
            }
        }
    }
}

/// Hand-written matchers for the regular expressions Istio's CRDs use; `None` for any other.
fn known_pattern(pattern: &str) -> Option<fn(&str) -> bool> {
    Some(match pattern {
        "^[-_A-Za-z0-9]+$" => {
            |text: &str| !text.is_empty() && text.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        }
        r"^$|^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$" => {
            |text: &str| text.is_empty() || text.split('.').all(is_lowercase_dns_word)
        }
        "^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$" => |text: &str| {
            let bytes = text.as_bytes();
            bytes.first().is_some_and(u8::is_ascii_alphabetic)
                && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
                && bytes.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'-')
        },
        "(^$|^[a-f0-9]{64}$)" => |text: &str| {
            text.is_empty() || (text.len() == 64 && text.bytes().all(|b| matches!(b, b'a'..=b'f' | b'0'..=b'9')))
        },
        _ => return None,
    })
}

fn is_known_format(format: &str) -> bool {
    matches!(
        format,
        "int32" | "int64" | "uint32" | "uint64" | "float" | "double" | "byte" | "date-time"
    )
}

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?` without a length limit.
fn is_lowercase_dns_word(word: &str) -> bool {
    let bytes = word.as_bytes();
    let alphanumeric = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    bytes.first().is_some_and(alphanumeric)
        && bytes.last().is_some_and(alphanumeric)
        && bytes.iter().all(|b| alphanumeric(b) || *b == b'-')
}

fn is_dns1123_label(text: &str) -> bool {
    text.len() <= 63 && is_lowercase_dns_word(text)
}

fn is_dns1123_subdomain(text: &str) -> bool {
    text.len() <= 253 && text.split('.').all(is_lowercase_dns_word)
}

/// Kubernetes qualified name: optional DNS-subdomain prefix and `/`, then a name of at most 63
/// characters of `[A-Za-z0-9-_.]`, alphanumeric at both ends.
fn is_qualified_name(key: &str) -> bool {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    prefix.is_none_or(is_dns1123_subdomain) && !name.is_empty() && is_label_value(name)
}

fn is_label_value(text: &str) -> bool {
    let bytes = text.as_bytes();
    text.is_empty()
        || (text.len() <= 63
            && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
            && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
            && bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')))
}

fn is_base64(text: &str) -> bool {
    let body = text.trim_end_matches('=');
    text.len().is_multiple_of(4)
        && text.len() - body.len() <= 2
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

/// `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`, checked for shape and field ranges.
fn is_rfc3339_date_time(text: &str) -> bool {
    let bytes = text.as_bytes();
    let digits = |range: std::ops::Range<usize>| -> Option<u32> {
        let slice = bytes.get(range)?;
        slice
            .iter()
            .all(u8::is_ascii_digit)
            .then(|| slice.iter().fold(0, |acc, b| acc * 10 + u32::from(b - b'0')))
    };
    let separators_ok = bytes.get(4) == Some(&b'-')
        && bytes.get(7) == Some(&b'-')
        && matches!(bytes.get(10), Some(b'T' | b't'))
        && bytes.get(13) == Some(&b':')
        && bytes.get(16) == Some(&b':');
    let fields = (
        digits(0..4),
        digits(5..7),
        digits(8..10),
        digits(11..13),
        digits(14..16),
        digits(17..19),
    );
    let (Some(_), Some(month), Some(day), Some(hour), Some(minute), Some(second)) = fields else {
        return false;
    };
    if !separators_ok
        || !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return false;
    }
    let mut rest = &text[19..];
    if let Some(fraction) = rest.strip_prefix('.') {
        let digit_count = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if digit_count == 0 {
            return false;
        }
        rest = &fraction[digit_count..];
    }
    match rest.as_bytes() {
        [b'Z' | b'z'] => true,
        [b'+' | b'-', h1, h2, b':', m1, m2] => {
            [h1, h2, m1, m2].iter().all(|b| b.is_ascii_digit())
                && (h1 - b'0') * 10 + (h2 - b'0') <= 23
                && (m1 - b'0') * 10 + (m2 - b'0') <= 59
        }
        _ => false,
    }
}

fn type_matches(expected: &str, value: &Value) -> bool {
    match expected {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "boolean" => value.is_boolean(),
        "integer" => is_integer(value),
        "number" => value.is_number(),
        _ => false,
    }
}

/// Like the API server: a JSON number without a fractional part counts as an integer.
fn is_integer(value: &Value) -> bool {
    matches!(value, Value::Number(number) if integer_value(number).is_some())
}

fn integer_value(number: &Number) -> Option<i128> {
    if let Some(signed) = number.as_i64() {
        return Some(signed.into());
    }
    if let Some(unsigned) = number.as_u64() {
        return Some(unsigned.into());
    }
    let float = number.as_f64()?;
    (float.is_finite() && float.fract() == 0.0 && float.abs() < 1e38).then_some(float as i128)
}

fn compare_numbers(left: &Number, right: &Number) -> Ordering {
    match (integer_value(left), integer_value(right)) {
        (Some(left), Some(right)) => left.cmp(&right),
        _ => {
            let left = left.as_f64().unwrap_or(f64::NAN);
            let right = right.as_f64().unwrap_or(f64::NAN);
            left.partial_cmp(&right).unwrap_or(Ordering::Equal)
        }
    }
}

fn json_type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(number) if integer_value(number).is_some() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// `spec.ports`, `spec.endpoints[0].ports.http`, `metadata.labels["app.kubernetes.io/name"]`.
fn child_path(parent: &str, name: &str) -> String {
    let plain = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    match (parent.is_empty(), plain) {
        (true, true) => name.to_owned(),
        (false, true) => format!("{parent}.{name}"),
        (_, false) => format!("{parent}[{name:?}]"),
    }
}

fn pointer_to_path(pointer: &str) -> String {
    pointer.trim_start_matches('/').replace('/', ".")
}

fn short_json(value: &Value) -> String {
    match value {
        Value::String(text) => format!("{text:?}"),
        other => other.to_string(),
    }
}

fn object_label(object: &Value) -> String {
    let text = |pointer: &str| object.pointer(pointer).and_then(Value::as_str).unwrap_or("?");
    format!("{} {} {}", text("/apiVersion"), text("/kind"), text("/metadata/name"))
}
