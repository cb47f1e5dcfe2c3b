//! Istio's rules for changing the version of a running mesh (pure): which upgrades istioctl may
//! do in place, so the real providers refuse the others before anything is created.
#![forbid(unsafe_code)]

use crate::scenario::IstioVersion;

/// Whether an in-place upgrade from `from` to `to` skips a minor version, which Istio does not
/// support: istio.io's in-place upgrade page (`docs/setup/upgrade/in-place`, unchanged from 1.8
/// to today) requires "the installed Istio version is no more than one minor version less than the
/// upgrade version. For example, 1.6.0 or higher is required before you start the upgrade process
/// to 1.7.x". So 1.29 → 1.30 is in place, 1.28 → 1.30 skips 1.29 and 1.9 → 1.22 skips twelve; a
/// canary (revision) upgrade or one step per minor is the way there. Patch changes and downgrades
/// skip nothing; a change of major version always skips.
///
/// ```
/// use meshfed::plan::upgrade_rules::in_place_upgrade_skips_minors;
/// use meshfed::scenario::IstioVersion;
/// assert!(!in_place_upgrade_skips_minors(&IstioVersion::new(1, 29, 0), &IstioVersion::new(1, 30, 0)));
/// assert!(in_place_upgrade_skips_minors(&IstioVersion::new(1, 9, 9), &IstioVersion::new(1, 22, 0)));
/// ```
pub fn in_place_upgrade_skips_minors(from: &IstioVersion, to: &IstioVersion) -> bool {
    from.major != to.major || to.minor > from.minor + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(minor: u32, patch: u32) -> IstioVersion {
        IstioVersion::new(1, minor, patch)
    }

    #[test]
    fn only_the_next_minor_or_a_patch_is_upgraded_in_place() {
        assert!(!in_place_upgrade_skips_minors(&version(29, 0), &version(30, 0)));
        assert!(!in_place_upgrade_skips_minors(&version(30, 0), &version(30, 3)));
        assert!(!in_place_upgrade_skips_minors(&version(6, 0), &version(7, 2)));
        assert!(in_place_upgrade_skips_minors(&version(28, 4), &version(30, 0)));
        assert!(in_place_upgrade_skips_minors(&version(9, 9), &version(22, 0)));
        assert!(in_place_upgrade_skips_minors(
            &version(30, 0),
            &IstioVersion::new(2, 0, 0)
        ));
    }
}
