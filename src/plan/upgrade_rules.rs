//! Which Istio version jumps real Istio supports as an in-place upgrade. istio.io's in-place
//! upgrade page ("Upgrade prerequisites", the same from the 1.8 docs to today's): "The installed
//! Istio version is no more than one minor version less than the upgrade version. For example,
//! 1.6.0 or higher is required before you start the upgrade process to 1.7.x." A larger jump goes
//! through the minors in between, or through a canary (revision) upgrade.

#![forbid(unsafe_code)]

use crate::scenario::IstioVersion;

/// Whether going from `from` to `to` in place skips a minor version (more than one minor up, or a
/// change of major version), which istio.io's in-place upgrade prerequisites do not allow. A
/// patch change, one minor up, or a downgrade of at most one minor does not skip.
pub fn in_place_upgrade_skips_minors(from: &IstioVersion, to: &IstioVersion) -> bool {
    from.major != to.major || from.minor.abs_diff(to.minor) > 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn skips(from: &str, to: &str) -> bool {
        in_place_upgrade_skips_minors(&from.parse().unwrap(), &to.parse().unwrap())
    }

    #[test]
    fn one_minor_up_or_a_patch_is_in_place_and_more_skips() {
        // istio.io's own example: 1.6.0 or higher to 1.7.x.
        assert!(!skips("1.6.0", "1.7.3"));
        assert!(!skips("1.29.0", "1.30.0"));
        assert!(!skips("1.30.0", "1.30.3"));
        assert!(skips("1.5.10", "1.7.0"));
        assert!(skips("1.9.9", "1.22.0"));
        assert!(skips("1.30.0", "2.0.0"));
    }
}
