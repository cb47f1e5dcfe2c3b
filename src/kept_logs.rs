//! What a run keeps for later (`--keep-logs`, and a failed run's `<report-dir>/logs/`): the plan
//! applied in each phase (YAML), each phase's request records (CSV), and what the provider hands
//! over from its proxies (Envoy logs and `/config_dump`s). Building the files is pure; writing them
//! goes through [`crate::atomic_files::Dir`]. No file that holds a private key is ever written.

use std::fmt::Write as _;
use std::path::PathBuf;

use crate::atomic_files;
use crate::plan::{self, Plan};
use crate::record::RequestRecord;

/// One file to keep, at its path relative to the logs directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeptFile {
    /// E.g. `envoy/cluster1/bar-0/envoy.log`.
    pub path: PathBuf,
    /// Its bytes.
    pub contents: Vec<u8>,
}

/// What the driver saw per phase: the plans in force (the phase's, then any re-planned one) and
/// the records its traffic returned.
#[derive(Clone, Debug, Default)]
pub struct Evidence {
    /// In scenario order.
    pub phases: Vec<PhaseEvidence>,
}

/// One phase's plans and records.
#[derive(Clone, Debug)]
pub struct PhaseEvidence {
    /// The phase's name as written in the scenario.
    pub name: String,
    /// Every plan in force during the phase, in the order applied.
    pub plans: Vec<Plan>,
    /// The records of its traffic; `None` when the traffic did not end.
    pub records: Option<Vec<RequestRecord>>,
}

impl Evidence {
    fn phase(&mut self, name: &str) -> &mut PhaseEvidence {
        if self.phases.last().is_none_or(|phase| phase.name != name) {
            self.phases.push(PhaseEvidence {
                name: name.to_owned(),
                plans: Vec::new(),
                records: None,
            });
        }
        self.phases.last_mut().expect("pushed above")
    }

    /// Notes that `plan` is in force in phase `phase`.
    pub fn plan_in_force(&mut self, phase: &str, plan: &Plan) {
        self.phase(phase).plans.push(plan.clone());
    }

    /// Keeps the records phase `phase`'s traffic returned and lends them back (kept, not copied,
    /// so the phase measures from the same records a failure would leave).
    pub fn records(&mut self, phase: &str, records: Vec<RequestRecord>) -> &[RequestRecord] {
        self.phase(phase).records.insert(records)
    }

    /// The files this evidence is kept as: `plans/NN-<phase>.yaml` (one YAML stream per phase,
    /// each object a document headed by the file `meshfed plan` would give it) and
    /// `records/NN-<phase>.csv`.
    pub fn files(&self) -> Result<Vec<KeptFile>, serde_saphyr::SerializeError> {
        let mut files = Vec::new();
        for (index, phase) in self.phases.iter().enumerate() {
            let stem = format!("{:02}-{}", index + 1, file_safe(&phase.name));
            let mut yaml = String::new();
            for (applied, plan) in phase.plans.iter().enumerate() {
                for rendered in plan::render(plan)? {
                    let _ = writeln!(
                        yaml,
                        "---\n# plan {} of phase {}: {}",
                        applied + 1,
                        phase.name,
                        rendered.path.display()
                    );
                    yaml.push_str(&rendered.yaml);
                }
            }
            files.push(KeptFile {
                path: PathBuf::from("plans").join(format!("{stem}.yaml")),
                contents: yaml.into_bytes(),
            });
            if let Some(records) = &phase.records {
                files.push(KeptFile {
                    path: PathBuf::from("records").join(format!("{stem}.csv")),
                    contents: records_csv(records).into_bytes(),
                });
            }
        }
        Ok(files)
    }
}

/// The CSV header: [`RequestRecord`]'s fields in declaration order.
pub const RECORDS_CSV_HEADER: &str =
    "seq,target,status,error,pod,cluster,peer_identity,started_us,latency_us,connection,server_connection";

/// Records as CSV (RFC 4180: fields with a comma, quote or line break are quoted); an absent
/// value is an empty field.
pub fn records_csv(records: &[RequestRecord]) -> String {
    let mut csv = String::from(RECORDS_CSV_HEADER);
    csv.push_str("\r\n");
    for record in records {
        let fields = [
            record.seq.to_string(),
            quoted(&record.target),
            record.status.map(|status| status.to_string()).unwrap_or_default(),
            quoted(record.error.as_deref().unwrap_or_default()),
            quoted(record.pod.as_deref().unwrap_or_default()),
            quoted(record.cluster.as_deref().unwrap_or_default()),
            quoted(record.peer_identity.as_deref().unwrap_or_default()),
            record.started_us.to_string(),
            record.latency_us.to_string(),
            record.connection.to_string(),
            quoted(record.server_connection.as_deref().unwrap_or_default()),
        ];
        csv.push_str(&fields.join(","));
        csv.push_str("\r\n");
    }
    csv
}

fn quoted(field: &str) -> String {
    if field.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_owned()
    }
}

/// A phase or pod name as one path component: anything but `[A-Za-z0-9._-]` becomes `_`, and a
/// name of dots only cannot climb out.
pub fn file_safe(name: &str) -> String {
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if safe.is_empty() || safe.chars().all(|c| c == '.') {
        format!("_{safe}")
    } else {
        safe
    }
}

/// True when `contents` holds a PEM private key (any `-----BEGIN ... PRIVATE KEY-----`) or a
/// config dump's inline private key: such a file is never kept.
pub fn holds_private_key(contents: &[u8]) -> bool {
    let text = String::from_utf8_lossy(contents);
    text.lines().any(|line| {
        let line = line.trim();
        (line.starts_with("-----BEGIN") && line.contains("PRIVATE KEY"))
            || (line.contains("\"private_key\"") && line.contains("\"inline_") && !line.contains("[redacted]"))
    })
}

/// Why a logs directory could not be filled.
#[derive(Debug, thiserror::Error)]
pub enum KeepError {
    /// The directory or one file in it could not be written.
    #[error("cannot keep {path} in {dir}")]
    Write {
        /// The logs directory.
        dir: PathBuf,
        /// The file, relative to it.
        path: PathBuf,
        /// The write error.
        #[source]
        source: std::io::Error,
    },
}

/// Writes `files` below `dir`, skipping (and naming, in the returned list) any file that holds a
/// private key. Returns the paths withheld.
pub fn write_kept(dir: &atomic_files::Dir, files: &[KeptFile]) -> Result<Vec<PathBuf>, KeepError> {
    let mut withheld = Vec::new();
    for file in files {
        if holds_private_key(&file.contents) {
            withheld.push(file.path.clone());
            continue;
        }
        dir.create_file_at(&file.path, &file.contents, 0o644, 0o755)
            .map_err(|source| KeepError::Write {
                dir: dir.path().to_owned(),
                path: file.path.clone(),
                source,
            })?;
    }
    Ok(withheld)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(seq: u64, error: Option<&str>) -> RequestRecord {
        RequestRecord {
            seq,
            target: "10.96.0.10:8080".to_owned(),
            status: error.is_none().then_some(200),
            error: error.map(str::to_owned),
            pod: Some("bar-0".to_owned()),
            cluster: Some("cluster2".to_owned()),
            peer_identity: None,
            started_us: 1500 + seq,
            latency_us: 420,
            connection: 3,
            server_connection: Some("10.20.0.9:41234".to_owned()),
        }
    }

    #[test]
    fn records_csv_has_one_column_per_record_field_and_quotes_commas() {
        let csv = records_csv(&[record(0, None), record(1, Some("reset, then \"eof\""))]);
        let lines: Vec<&str> = csv.split("\r\n").collect();
        assert_eq!(lines[0], RECORDS_CSV_HEADER);
        assert_eq!(
            lines[1],
            "0,10.96.0.10:8080,200,,bar-0,cluster2,,1500,420,3,10.20.0.9:41234"
        );
        assert_eq!(
            lines[2],
            "1,10.96.0.10:8080,,\"reset, then \"\"eof\"\"\",bar-0,cluster2,,1501,420,3,10.20.0.9:41234"
        );
        // Every field of the record is a column: the header names them all.
        let json = serde_json::to_value(record(0, None)).unwrap();
        let fields: Vec<&str> = RECORDS_CSV_HEADER.split(',').collect();
        assert_eq!(fields.len(), json.as_object().unwrap().len());
        for field in fields {
            assert!(json.get(field).is_some(), "{field} is no RequestRecord field");
        }
    }

    #[test]
    fn pem_keys_and_inline_keys_in_a_dump_are_caught_and_redacted_ones_are_not() {
        assert!(holds_private_key(b"x\n-----BEGIN PRIVATE KEY-----\nMIG...\n"));
        assert!(holds_private_key(b"-----BEGIN EC PRIVATE KEY-----\n"));
        assert!(holds_private_key(
            b"   \"private_key\": { \"inline_bytes\": \"LS0t\" },\n"
        ));
        assert!(!holds_private_key(
            b"   \"private_key\": { \"inline_bytes\": \"W3JlZGFjdGVkXQ==\", \"[redacted]\" }"
        ));
        assert!(!holds_private_key(
            b"\"private_key\": { \"filename\": \"/run/meshfed/world/c1/bar-0/certs/key.pem\" }"
        ));
        assert!(!holds_private_key(b"-----BEGIN CERTIFICATE-----\n"));
    }

    #[test]
    fn names_become_one_safe_path_component() {
        assert_eq!(file_safe("steady-state_1.x"), "steady-state_1.x");
        assert_eq!(file_safe("../etc"), ".._etc");
        assert_eq!(file_safe(".."), "_..");
        assert_eq!(file_safe("a/b c"), "a_b_c");
    }
}
