//! Real files as their projects publish them (MetalLB's `metallb-native.yaml`, the IstioOperator
//! Istio's `gen-eastwest-gateway.sh` prints, ...), kept outside the repository: their folder comes
//! from `MESHFED_UPSTREAM` (`.ci/run` sets it). Without it the calling test records itself skipped
//! ([`super::skip`]), never a silent `ok`.

/// The environment variable naming the folder.
pub const UPSTREAM_ENV: &str = "MESHFED_UPSTREAM";

/// The text of `relative` in the upstream folder, or `None` after recording the skip.
pub fn upstream_file(relative: &str) -> Option<String> {
    let Some(dir) = std::env::var_os(UPSTREAM_ENV) else {
        super::skip::skip(&format!(
            "{UPSTREAM_ENV} is not set (the folder of upstream artefacts; .ci/run sets it)"
        ));
        return None;
    };
    let path = std::path::Path::new(&dir).join(relative);
    Some(std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("reading {}: {error}", path.display())))
}
