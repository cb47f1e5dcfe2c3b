//! docs/inventory.md's example is a valid inventory for the seed: `meshfed plan --inventory` with
//! it writes the documented gateway endpoint and no placeholder, and a broken copy is refused with
//! its position.

use crate::support::meshfed_command::Meshfed;
use crate::support::temp_dir::{TempDir, temp_dir};
use std::path::Path;

/// The first ```yaml block of docs/inventory.md.
fn documented_example() -> String {
    let doc = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/inventory.md")).unwrap();
    let start = doc.find("```yaml\n").expect("docs/inventory.md has a yaml example") + "```yaml\n".len();
    let length = doc[start..].find("```").expect("the example ends");
    doc[start..start + length].to_owned()
}

fn plan_with(inventory: &str, scratch: &TempDir) -> std::process::Output {
    let file = scratch.path().join("seed-inventory.yaml");
    std::fs::write(&file, inventory).unwrap();
    Meshfed::new(["plan"])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/seed.yaml"))
        .arg("--inventory")
        .arg(&file)
        .arg("--out")
        .arg(scratch.path().join("plan"))
        .output()
}

fn plan_text(dir: &Path) -> String {
    let mut text = String::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        if entry.file_type().unwrap().is_dir() {
            text.push_str(&plan_text(&entry.path()));
        } else if entry.path().extension().is_some_and(|extension| extension == "yaml") {
            text.push_str(&std::fs::read_to_string(entry.path()).unwrap());
        }
    }
    text
}

#[test]
fn documented_inventory_example_plans_the_seed_with_its_gateway_addresses() {
    let scratch = temp_dir("ok");
    let output = plan_with(&documented_example(), &scratch);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let plan = plan_text(&scratch.path().join("plan"));
    assert!(
        plan.contains("172.18.255.20"),
        "cluster2's gateway address is in the plan"
    );
    assert!(
        plan.contains("172.18.255.10"),
        "cluster1's gateway address is in the plan"
    );
    assert!(!plan.contains("gateway-address-of"), "no placeholder is left:\n{plan}");
}

#[test]
fn inventory_with_an_unknown_key_is_refused_at_its_position() {
    let scratch = temp_dir("bad");
    let broken = documented_example().replacen("    zone: zone2a\n", "    zone: zone2a\n    zones: [x]\n", 1);
    let output = plan_with(&broken, &scratch);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("seed-inventory.yaml:15:5"), "{stderr}");
    assert!(!scratch.path().join("plan").exists(), "nothing was written");
}
