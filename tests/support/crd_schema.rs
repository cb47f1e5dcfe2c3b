//! Test support: checks Istio objects against the OpenAPI v3 schemas in Istio's own CRD file, as
//! the API server would, except that unknown fields are violations (a structural schema would prune
//! them silently, which for meshfed means a generator bug).
//!
//! The CRD file is test data outside the project: its path comes from `MESHFED_ISTIO_CRDS` (see
//! [`crd_file_or_skip`]).
//!
//! The schemas are validated by the `jsonschema` crate (JSON Schema draft 4, which OpenAPI v3.0's
//! schema objects follow: `type`, `properties`, `required`, `enum`, `oneOf`/`anyOf`/`allOf`/`not`,
//! bounds, lengths, real `pattern`s, formats), after [`to_json_schema`] spells out Kubernetes'
//! extensions (`nullable`, `x-kubernetes-int-or-string`, `x-kubernetes-preserve-unknown-fields`,
//! `x-kubernetes-list-type: set`, the integer formats). What JSON Schema cannot say is checked
//! here: list-map keys (`x-kubernetes-list-type: map`) and the object metadata the API server
//! itself validates (name, namespace, label and annotation keys). CEL rules
//! (`x-kubernetes-validations`) are not evaluated; the [`ValidationReport`] lists those that applied
//! so a test can say how much went unchecked.

use super::skip;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use jsonschema::error::{TypeKind, ValidationErrorKind};
use serde_json::{Map, Number, Value, json};

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
        let body = Value::Object(body);
        check(&root_schema, &body, "", Context::Structural, &mut findings);
        check_kubernetes_lists(&root_schema, &body, "", &mut findings);
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
            "{kind}: {} violation(s); not evaluated: {} CEL rule(s), {} format(s)",
            self.violations.len(),
            self.unevaluated_cel_rules.len(),
            self.unchecked_formats.len()
        )
    }
}

#[derive(Debug, Default)]
struct Findings {
    violations: Vec<Violation>,
    unevaluated_cel_rules: Vec<NotEvaluated>,
    unchecked_formats: Vec<NotEvaluated>,
}

impl Findings {
    fn violation(&mut self, path: &str, message: impl Into<String>) {
        self.violations.push(Violation {
            path: path.to_owned(),
            message: message.into(),
        });
    }

    fn into_report(self, gvk: Option<GroupVersionKind>) -> ValidationReport {
        ValidationReport {
            gvk,
            violations: self.violations,
            unevaluated_cel_rules: self.unevaluated_cel_rules,
            unchecked_formats: self.unchecked_formats,
        }
    }
}

/// Whether unknown fields are rejected: in the structural schema yes (the API server would prune
/// them), inside `oneOf`/`anyOf`/`allOf`/`not` branches no (they only constrain, as in JSON Schema;
/// Kubernetes forbids `properties` and `additionalProperties` there anyway).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Context {
    Structural,
    Junctor,
}

/// The integer `format`s of OpenAPI and their ranges: the shim turns them into `minimum` and
/// `maximum`, since JSON Schema's formats apply to strings only.
const INTEGER_FORMATS: &[(&str, i128, i128)] = &[
    ("int32", i32::MIN as i128, i32::MAX as i128),
    ("int64", i64::MIN as i128, i64::MAX as i128),
    ("uint32", 0, u32::MAX as i128),
    ("uint64", 0, u64::MAX as i128),
];

/// One node of a Kubernetes structural schema as plain JSON Schema (draft 4, the dialect OpenAPI
/// v3.0 schemas follow), with Kubernetes' extensions spelled out as the apiextensions API
/// documents them (`JSONSchemaProps` in k8s.io/apiextensions-apiserver, and "Specifying a
/// structural schema" in the CustomResourceDefinition task of the Kubernetes docs):
///
/// - `nullable: true`: `null` is accepted besides the node's type (without it, `null` is a type
///   error, as the API server rejects it).
/// - `x-kubernetes-int-or-string: true`: an integer or a string; the node carries no `type`.
/// - `x-kubernetes-preserve-unknown-fields: true`: fields the schema does not name are kept;
///   without it (and without `additionalProperties`) the API server prunes them, which for meshfed
///   means a generator bug, so here they are violations (`additionalProperties: false`).
/// - `x-kubernetes-list-type: set`: the items are unique (`uniqueItems`); `map` uniqueness by
///   `x-kubernetes-list-map-keys` has no JSON Schema keyword and is checked by
///   [`check_kubernetes_lists`].
/// - `x-kubernetes-validations` (CEL) is not evaluated: [`check_kubernetes_lists`] lists the rules
///   that applied.
fn to_json_schema(node: &Value, context: Context) -> Value {
    let Some(fields) = node.as_object() else {
        return node.clone();
    };
    let mut schema = Map::new();
    for (keyword, value) in fields {
        let converted = match keyword.as_str() {
            "properties" => Value::Object(
                value
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(name, child)| (name.clone(), to_json_schema(child, context)))
                    .collect(),
            ),
            "items" | "additionalProperties" if value.is_object() => to_json_schema(value, context),
            "not" => to_json_schema(value, Context::Junctor),
            "oneOf" | "anyOf" | "allOf" => Value::Array(
                value
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|branch| to_json_schema(branch, Context::Junctor))
                    .collect(),
            ),
            "nullable" | "format" => continue,
            keyword if keyword.starts_with("x-kubernetes-") => continue,
            _ => value.clone(),
        };
        schema.insert(keyword.clone(), converted);
    }
    let flag = |name: &str| fields.get(name).and_then(Value::as_bool) == Some(true);
    if flag("x-kubernetes-int-or-string") {
        schema.insert("type".into(), json!(["integer", "string"]));
    }
    if let Some(format) = fields.get("format").and_then(Value::as_str) {
        match INTEGER_FORMATS.iter().find(|(name, ..)| *name == format) {
            Some((_, min, max)) => {
                schema.entry("minimum").or_insert(json!(min));
                schema.entry("maximum").or_insert(json!(max));
            }
            None => {
                schema.insert("format".into(), json!(format));
            }
        }
    }
    if fields.get("x-kubernetes-list-type").and_then(Value::as_str) == Some("set") {
        schema.insert("uniqueItems".into(), json!(true));
    }
    let is_object = fields.get("type").and_then(Value::as_str) == Some("object");
    if is_object
        && context == Context::Structural
        && !fields.contains_key("additionalProperties")
        && !flag("x-kubernetes-preserve-unknown-fields")
    {
        schema.insert("additionalProperties".into(), json!(false));
    }
    if flag("nullable") {
        if let Some(Value::String(single)) = schema.get("type") {
            let types = json!([single, "null"]);
            schema.insert("type".into(), types);
        }
        if let Some(Value::Array(options)) = schema.get_mut("enum") {
            options.push(Value::Null);
        }
    }
    Value::Object(schema)
}

/// Validates `value` against the Kubernetes schema `schema` with the `jsonschema` crate and adds
/// each error, at its path under `prefix`, to `out`.
fn check(schema: &Value, value: &Value, prefix: &str, context: Context, out: &mut Findings) {
    let json_schema = to_json_schema(schema, context);
    let validator = jsonschema::options()
        .with_draft(jsonschema::Draft::Draft4)
        .should_validate_formats(true)
        .with_format("byte", is_base64)
        .build(&json_schema)
        .unwrap_or_else(|error| panic!("the CRD schema at {prefix:?} is no valid JSON Schema: {error}"));
    for error in validator.iter_errors(value) {
        let at = instance_path(value, error.instance_path().as_str());
        let path = match (prefix.is_empty(), at.is_empty()) {
            (true, _) => at,
            (false, true) => prefix.to_owned(),
            (false, false) if at.starts_with('[') => format!("{prefix}{at}"),
            (false, false) => format!("{prefix}.{at}"),
        };
        let instance: &Value = error.instance();
        match error.kind() {
            ValidationErrorKind::AdditionalProperties { unexpected } => {
                for name in unexpected {
                    out.violation(
                        &child_path(&path, name),
                        "unknown field (the API server would prune it)",
                    );
                }
            }
            ValidationErrorKind::Required { property } => {
                let name = property.as_str().unwrap_or_default();
                out.violation(&child_path(&path, name), "required field is missing");
            }
            ValidationErrorKind::Type { .. } if instance.is_null() => {
                out.violation(&path, "got null (not nullable)");
            }
            ValidationErrorKind::Type { kind } => {
                let expected = match kind {
                    TypeKind::Single(single) => single.to_string(),
                    TypeKind::Multiple(set) => set.iter().map(|one| one.to_string()).collect::<Vec<_>>().join(" or "),
                };
                out.violation(&path, format!("expected {expected}, got {}", json_type_name(instance)));
            }
            ValidationErrorKind::Enum { options } => {
                out.violation(&path, format!("{} is not one of {options}", short_json(instance)));
            }
            ValidationErrorKind::Pattern { pattern } => {
                out.violation(
                    &path,
                    format!("{} does not match pattern {pattern}", short_json(instance)),
                );
            }
            ValidationErrorKind::MaxLength { limit } => {
                out.violation(&path, format!("{} exceeds maxLength {limit}", short_json(instance)));
            }
            ValidationErrorKind::Minimum { limit } | ValidationErrorKind::Maximum { limit } => {
                out.violation(&path, format!("{instance} is out of range (limit {limit})"));
            }
            ValidationErrorKind::Format { format } => {
                out.violation(&path, format!("{} is not valid format {format}", short_json(instance)));
            }
            ValidationErrorKind::Not { .. } => {
                out.violation(&path, "must not match the schema under `not`");
            }
            ValidationErrorKind::OneOfMultipleValid { .. } => {
                out.violation(&path, "matches more than one oneOf alternative");
            }
            _ => out.violation(&path, error.to_string()),
        }
    }
}

/// What JSON Schema cannot say about Kubernetes lists and rules, along the structural schema:
/// `x-kubernetes-list-type: map` items unique by their `x-kubernetes-list-map-keys`, and every
/// `x-kubernetes-validations` (CEL) rule and unknown `format` that applies to a value, listed as
/// not evaluated.
fn check_kubernetes_lists(schema: &Value, value: &Value, path: &str, out: &mut Findings) {
    let Some(node) = schema.as_object() else {
        return;
    };
    if let Some(format) = node.get("format").and_then(Value::as_str)
        && !is_known_format(format)
    {
        out.unchecked_formats.push(NotEvaluated {
            path: path.to_owned(),
            check: format!("format {format}"),
        });
    }
    if let Some(rules) = node.get("x-kubernetes-validations").and_then(Value::as_array) {
        for rule in rules {
            let check = rule.get("rule").and_then(Value::as_str).unwrap_or("?").to_owned();
            out.unevaluated_cel_rules.push(NotEvaluated {
                path: path.to_owned(),
                check,
            });
        }
    }
    match value {
        Value::Object(fields) => {
            let properties = node.get("properties").and_then(Value::as_object);
            for (name, child) in fields {
                let child_schema = properties
                    .and_then(|properties| properties.get(name))
                    .or_else(|| node.get("additionalProperties").filter(|schema| schema.is_object()));
                if let Some(child_schema) = child_schema {
                    check_kubernetes_lists(child_schema, child, &child_path(path, name), out);
                }
            }
        }
        Value::Array(items) => {
            let Some(item_schema) = node.get("items") else {
                return;
            };
            for (index, item) in items.iter().enumerate() {
                check_kubernetes_lists(item_schema, item, &format!("{path}[{index}]"), out);
            }
            if node.get("x-kubernetes-list-type").and_then(Value::as_str) != Some("map") {
                return;
            }
            let keys: Vec<&str> = node
                .get("x-kubernetes-list-map-keys")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let mut seen = BTreeMap::new();
            for (index, item) in items.iter().enumerate() {
                let key: Vec<String> = keys
                    .iter()
                    .map(|key| format!("{key}={}", item.get(key).map_or("null".to_owned(), short_json)))
                    .collect();
                if let Some(first) = seen.insert(key.clone(), index) {
                    out.violation(
                        &format!("{path}[{index}]"),
                        format!("duplicate list-map key ({}) of item {first}", key.join(", ")),
                    );
                }
            }
        }
        _ => {}
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

/// `/spec/ports/1` in `value` -> `spec.ports[1]` (an index where the value there is a list).
fn instance_path(value: &Value, pointer: &str) -> String {
    let mut path = String::new();
    let mut at = Some(value);
    for segment in pointer.split('/').skip(1) {
        let segment = segment.replace("~1", "/").replace("~0", "~");
        match at {
            Some(Value::Array(items)) => {
                path = format!("{path}[{segment}]");
                at = segment.parse::<usize>().ok().and_then(|index| items.get(index));
            }
            _ => {
                path = child_path(&path, &segment);
                at = at.and_then(|node| node.get(&segment));
            }
        }
    }
    path
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
