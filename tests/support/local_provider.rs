//! Whether the local provider can run here: `meshfed setup` (Envoy, namespaces) once per test
//! binary; when it fails the test records a skip (a failure under `CI=true`) and returns.

use super::meshfed_command::Meshfed;
use std::sync::OnceLock;

/// Runs `meshfed setup` once; `false` (with a recorded skip) when the local provider cannot run
/// here.
pub fn local_provider_available() -> bool {
    static AVAILABLE: OnceLock<Result<(), String>> = OnceLock::new();
    let outcome = AVAILABLE.get_or_init(|| {
        let output = Meshfed::new(["setup"]).output();
        if output.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ))
        }
    });
    match outcome {
        Ok(()) => true,
        Err(reason) => {
            super::skip::skip(&format!(
                "the local provider cannot run here (`meshfed setup` failed):\n{reason}"
            ));
            false
        }
    }
}
