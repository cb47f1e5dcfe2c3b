//! docs/fidelity.md stays true to the code: every row of its behaviour table names at least one
//! test, every test it names exists in the sources, every row cites an Istio source with a
//! `path@tag` (or says which API it follows), and every row says what the report shows when it
//! applies. (Whether a cited `path@tag` exists in istio/istio is checked by hand with
//! `git show TAG:PATH`; this machine-independent test checks the form.)

use std::collections::BTreeSet;
use std::path::Path;

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn fidelity_doc() -> String {
    std::fs::read_to_string(manifest_dir().join("docs/fidelity.md")).unwrap()
}

/// The cells of each row of the markdown table whose header starts with `header`.
fn table_rows(doc: &str, header: &str) -> Vec<Vec<String>> {
    let mut lines = doc.lines().skip_while(|line| !line.starts_with(header));
    assert!(lines.next().is_some(), "docs/fidelity.md has a table headed {header:?}");
    lines
        .skip(1)
        .take_while(|line| line.starts_with('|'))
        .map(|line| {
            line.trim_matches('|')
                .split(" | ")
                .map(|cell| cell.trim().to_owned())
                .collect()
        })
        .collect()
}

/// Every backticked word of `cell` that looks like a Rust test name (snake case, three words or
/// more).
fn test_names(cell: &str) -> Vec<String> {
    cell.split('`')
        .skip(1)
        .step_by(2)
        .filter(|word| {
            word.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                && word.matches('_').count() >= 2
        })
        .map(str::to_owned)
        .collect()
}

/// Every `fn name` defined in the crate's sources and tests.
fn defined_functions() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut dirs = vec![manifest_dir().join("src"), manifest_dir().join("tests")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                for rest in text.split("fn ").skip(1) {
                    let name: String = rest
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    names.insert(name);
                }
            }
        }
    }
    names
}

#[test]
fn every_fidelity_row_names_tests_that_exist_and_a_source() {
    let doc = fidelity_doc();
    let rows = table_rows(&doc, "| # | behaviour |");
    assert!(rows.len() >= 15, "the behaviour table is read: {rows:?}");
    let functions = defined_functions();
    for row in &rows {
        assert_eq!(row.len(), 5, "five cells: {row:?}");
        let (id, source, tests) = (&row[0], &row[3], &row[4]);
        let named = test_names(tests);
        assert!(
            !named.is_empty() || tests == "same" || tests.contains("e2e"),
            "row {id} names a test: {tests}"
        );
        for name in named {
            assert!(
                functions.contains(&name),
                "row {id} names test `{name}`, which does not exist"
            );
        }
        let cites_a_tag = source.split('`').skip(1).step_by(2).any(|part| {
            part.rsplit_once('@')
                .is_some_and(|(path, tag)| path.contains('/') && tag.split('.').all(|n| n.parse::<u32>().is_ok()))
        });
        assert!(
            cites_a_tag || source.starts_with('(') || source.contains("istio/api"),
            "row {id} cites an Istio source as path@tag: {source}"
        );
    }
}

#[test]
fn every_numbered_fidelity_row_says_what_the_report_shows() {
    let doc = fidelity_doc();
    let behaviours: BTreeSet<String> = table_rows(&doc, "| # | behaviour |")
        .into_iter()
        .map(|row| row[0].clone())
        .filter(|id| id != "—")
        .collect();
    let shown: BTreeSet<String> = table_rows(&doc, "| # | in the report |")
        .into_iter()
        .map(|row| row[0].clone())
        .collect();
    let missing: Vec<&String> = behaviours.difference(&shown).collect();
    assert!(missing.is_empty(), "rows without a report line: {missing:?}");
}
