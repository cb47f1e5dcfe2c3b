//! `meshfed --help` tells a caller the exit codes, the environment variables meshfed reads and
//! where the documentation is, and every document it names exists.

use crate::support::meshfed_command::Meshfed;
use std::path::Path;

fn help() -> String {
    let output = Meshfed::new(["--help"]).output();
    assert_eq!(output.status.code(), Some(0));
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn help_names_every_exit_code() {
    let help = help();
    let section = &help[help.find("Exit codes:").expect("an exit code section")..];
    for code in ["0", "1", "2", "3", "130"] {
        assert!(
            section
                .lines()
                .any(|line| line.trim_start().starts_with(&format!("{code} "))),
            "exit code {code} is not explained:\n{section}"
        );
    }
}

#[test]
fn help_names_the_environment_variables_meshfed_reads() {
    let help = help();
    // Every MESHFED_* variable the sources read must be in the help.
    let mut read = std::collections::BTreeSet::new();
    let mut stack = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("src")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|extension| extension == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                for piece in text.split('"').skip(1).step_by(2) {
                    if piece.starts_with("MESHFED_")
                        && piece.bytes().all(|byte| byte.is_ascii_uppercase() || byte == b'_')
                    {
                        read.insert(piece.to_owned());
                    }
                }
            }
        }
    }
    assert!(read.contains("MESHFED_ENVOY"), "the scan finds the variables: {read:?}");
    for variable in &read {
        assert!(help.contains(variable.as_str()), "--help does not mention {variable}");
    }
}

#[test]
fn help_points_at_documents_that_exist() {
    let help = help();
    let docs: Vec<&str> = help.split_whitespace().filter(|word| word.ends_with(".md")).collect();
    assert!(
        docs.contains(&"docs/inventory.md") && docs.contains(&"docs/library.md"),
        "{docs:?}"
    );
    for doc in docs {
        assert!(
            Path::new(env!("CARGO_MANIFEST_DIR")).join(doc).is_file(),
            "--help names {doc}, which does not exist"
        );
    }
}

/// docs/fidelity.md once named `envoy_config.rs`, a folder. Every repository path
/// the README and docs/ write in backquotes exists, as a folder when written with a trailing `/`
/// and as a file otherwise.
#[test]
fn every_repository_path_the_docs_name_exists_as_what_they_say() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut documents = vec![root.join("README.md")];
    for entry in std::fs::read_dir(root.join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|extension| extension == "md") {
            documents.push(path);
        }
    }
    let mut wrong = Vec::new();
    for document in &documents {
        let text = std::fs::read_to_string(document).unwrap();
        for (index, quoted) in text.split('`').enumerate() {
            let is_path = [
                "src/",
                "tests/",
                "benches/",
                "scenarios/",
                "docs/",
                "scripts/",
                "kind-configs/",
            ]
            .iter()
            .any(|prefix| quoted.starts_with(prefix));
            // Odd pieces are inside backquotes; globs, placeholders and commands are not paths.
            if index % 2 == 0 || !is_path || quoted.contains(['*', '<', ' ', '{']) {
                continue;
            }
            let path = root.join(quoted);
            let right = if quoted.ends_with('/') {
                path.is_dir()
            } else {
                path.is_file()
            };
            if !right {
                wrong.push(format!("{}: {quoted}", document.display()));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "paths the docs name that are not there as named:\n{}",
        wrong.join("\n")
    );
}

/// A comment or doc that cites a ticket (the word "issue" and its number) instead of saying the reason sends
/// the reader to a tracker a clone does not have. Upstream tickets are cited by their project's
/// own form (`istio/istio#56355`, "kind issues 3795"), which this does not match.
#[test]
fn no_source_comment_cites_a_ticket_instead_of_its_reason() {
    fn visit(path: &Path, found: &mut Vec<String>) {
        if path.is_dir() {
            for entry in std::fs::read_dir(path).unwrap() {
                visit(&entry.unwrap().path(), found);
            }
            return;
        }
        let Ok(text) = std::fs::read_to_string(path) else {
            return; // not text (fixtures such as binary captures)
        };
        for (number, line) in text.lines().enumerate() {
            let lower = line.to_lowercase();
            let cites = lower
                .match_indices("issue ")
                .any(|(at, matched)| lower[at + matched.len()..].starts_with(|c: char| c.is_ascii_digit()));
            if cites {
                found.push(format!("{}:{}: {}", path.display(), number + 1, line.trim()));
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut found = Vec::new();
    for place in [
        "src",
        "tests",
        "benches",
        "scripts",
        "docs",
        "examples",
        "Cargo.toml",
        "README.md",
    ] {
        visit(&root.join(place), &mut found);
    }
    assert!(found.is_empty(), "say why, not which ticket:\n{}", found.join("\n"));
}
