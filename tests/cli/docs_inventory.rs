//! docs/inventory.md's example is a valid inventory for the seed: `meshfed plan --inventory` with
//! it writes the documented gateway endpoint and no placeholder, and a broken copy is refused with
//! its position.

use crate::support::meshfed_command::MESHFED;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The first ```yaml block of docs/inventory.md.
fn documented_example() -> String {
    let doc = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/inventory.md")).unwrap();
    let start = doc.find("```yaml\n").expect("docs/inventory.md has a yaml example") + "```yaml\n".len();
    let length = doc[start..].find("```").expect("the example ends");
    doc[start..start + length].to_owned()
}

struct Scratch(PathBuf);

impl Scratch {
    fn new(label: &str) -> Scratch {
        let path = std::env::temp_dir().join(format!("meshfed-docs-inventory-{label}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        Scratch(path)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn plan_with(inventory: &str, scratch: &Scratch) -> std::process::Output {
    let file = scratch.0.join("seed-inventory.yaml");
    std::fs::write(&file, inventory).unwrap();
    Command::new(MESHFED)
        .arg("plan")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/seed.yaml"))
        .arg("--inventory")
        .arg(&file)
        .arg("--out")
        .arg(scratch.0.join("plan"))
        .output()
        .unwrap()
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
    let scratch = Scratch::new("ok");
    let output = plan_with(&documented_example(), &scratch);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let plan = plan_text(&scratch.0.join("plan"));
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
    let scratch = Scratch::new("bad");
    let broken = documented_example().replacen("    zone: zone2a\n", "    zone: zone2a\n    zones: [x]\n", 1);
    let output = plan_with(&broken, &scratch);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("seed-inventory.yaml:15:5"), "{stderr}");
    assert!(!scratch.0.join("plan").exists(), "nothing was written");
}
