//! The statistics behind the measurements: chi-square goodness of fit (its tail from `statrs`),
//! total variation distance, binomial share tolerance and nearest-rank percentiles.
//!
//! The chi-square tail used to be a hand-written incomplete gamma function; `statrs` now provides
//! it, and the tests below still pin it to published table values.

use statrs::distribution::{ChiSquared, ContinuousCDF};

/// Probability that a chi-square variable with `degrees_of_freedom` exceeds `statistic`: the
/// goodness-of-fit (or homogeneity) p-value. With 0 degrees of freedom there is nothing to test and
/// the answer is 1; a statistic of 0 or less (or NaN) is no evidence at all and also gives 1.
pub fn chi_square_survival(statistic: f64, degrees_of_freedom: u64) -> f64 {
    if degrees_of_freedom == 0 || statistic.is_nan() || statistic <= 0.0 {
        return 1.0;
    }
    if statistic.is_infinite() {
        return 0.0;
    }
    match ChiSquared::new(degrees_of_freedom as f64) {
        Ok(distribution) => distribution.sf(statistic).clamp(0.0, 1.0),
        // Unreachable for a positive, finite number of degrees of freedom; 1 claims nothing.
        Err(_) => 1.0,
    }
}

/// Pearson's statistic Σ (observed − expected)² / expected over paired counts. Cells whose expected
/// count is not positive are skipped (they carry no information for the test).
pub fn chi_square_statistic(observed: &[u64], expected: &[f64]) -> f64 {
    observed
        .iter()
        .zip(expected)
        .filter(|(_, expected)| **expected > 0.0)
        .map(|(observed, expected)| (*observed as f64 - expected).powi(2) / expected)
        .sum()
}

/// Total variation distance ½ Σ |p − q| between two distributions given as paired shares.
pub fn total_variation_distance(observed_shares: &[f64], expected_shares: &[f64]) -> f64 {
    0.5 * observed_shares
        .iter()
        .zip(expected_shares)
        .map(|(observed, expected)| (observed - expected).abs())
        .sum::<f64>()
}

/// How far an observed share may stray from `expected_share` over `samples` independent samples
/// before it is suspicious: `z · sqrt(p(1 − p) / n)`, the normal approximation to the binomial.
///
/// `z` sets the false-failure rate of a single two-sided check: 1.96 → 5 %, 3.29 → 0.1 %,
/// 4.4 → about 1e-5. Use it in tests instead of hand-picked tolerances, e.g.
/// `assert!((observed - 0.5).abs() <= share_tolerance(600, 0.5, 4.4))` (≈ 0.09).
///
/// The samples must be independent: requests riding one pooled connection are not, so derive
/// request-share tolerances only when every request has its own connection, and otherwise use the
/// connection count. With 0 samples any share is possible and the tolerance is 1. `expected_share`
/// is clamped to [0, 1].
pub fn share_tolerance(samples: u64, expected_share: f64, z: f64) -> f64 {
    if samples == 0 {
        return 1.0;
    }
    let p = expected_share.clamp(0.0, 1.0);
    z * (p * (1.0 - p) / samples as f64).sqrt()
}

/// The `percentile`-th percentile (0 < percentile ≤ 100) of `sorted` by the nearest-rank method:
/// the smallest value with at least `percentile` % of the values at or below it, always an observed
/// value (no interpolation). `None` for an empty slice. `sorted` must be ascending.
pub fn nearest_rank(sorted: &[u64], percentile: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (percentile / 100.0 * sorted.len() as f64).ceil() as usize;
    let index = rank.clamp(1, sorted.len()) - 1;
    sorted.get(index).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE_PRECISION: f64 = 1e-4;

    fn assert_close(actual: f64, expected: f64, tolerance: f64) {
        assert!(
            (actual - expected).abs() <= tolerance,
            "expected {expected} ± {tolerance}, got {actual}"
        );
    }

    #[test]
    fn chi_square_survival_matches_published_critical_values() {
        // (critical value, degrees of freedom, upper-tail probability), from standard tables.
        let table = [
            (3.841, 1, 0.05),
            (6.635, 1, 0.01),
            (5.991, 2, 0.05),
            (11.345, 3, 0.01),
            (7.815, 3, 0.05),
            (18.307, 10, 0.05),
            (23.209, 10, 0.01),
            (124.342, 100, 0.05),
            (0.003_932, 1, 0.95),
        ];
        for (statistic, degrees_of_freedom, probability) in table {
            assert_close(
                chi_square_survival(statistic, degrees_of_freedom),
                probability,
                TABLE_PRECISION,
            );
        }
    }

    #[test]
    fn chi_square_survival_of_zero_is_one() {
        for degrees_of_freedom in [1, 2, 7, 500] {
            assert_eq!(chi_square_survival(0.0, degrees_of_freedom), 1.0);
        }
    }

    #[test]
    fn chi_square_survival_with_two_degrees_matches_the_closed_form() {
        // With 2 degrees of freedom the survival is exactly exp(−x/2); the statistics span both
        // sides of x/2 = a + 1, where incomplete-gamma implementations switch method.
        for statistic in [0.1, 1.0, 3.9, 4.1, 10.0, 40.0, 200.0] {
            assert_close(chi_square_survival(statistic, 2), (-statistic / 2.0).exp(), 1e-12);
        }
    }

    #[test]
    fn chi_square_survival_is_zero_far_in_the_tail_and_one_with_no_dof() {
        assert!(chi_square_survival(10_000.0, 3) < 1e-300);
        assert_eq!(chi_square_survival(123.0, 0), 1.0);
    }

    #[test]
    fn chi_square_statistic_skips_cells_with_no_expectation() {
        let statistic = chi_square_statistic(&[60, 40, 5], &[50.0, 50.0, 0.0]);
        assert_close(statistic, 4.0, 1e-12);
    }

    #[test]
    fn total_variation_distance_is_half_the_l1_distance() {
        assert_close(total_variation_distance(&[1.0, 0.0], &[0.5, 0.5]), 0.5, 1e-12);
        assert_close(total_variation_distance(&[0.25, 0.75], &[0.25, 0.75]), 0.0, 1e-12);
    }

    #[test]
    fn share_tolerance_shrinks_with_the_square_root_of_samples() {
        let at_100 = share_tolerance(100, 0.5, 4.4);
        let at_400 = share_tolerance(400, 0.5, 4.4);
        assert_close(at_100, 4.4 * 0.05, 1e-12);
        assert_close(at_100 / at_400, 2.0, 1e-12);
    }

    #[test]
    fn share_tolerance_without_samples_allows_any_share() {
        assert_eq!(share_tolerance(0, 0.3, 4.4), 1.0);
    }

    #[test]
    fn nearest_rank_returns_observed_values() {
        let sorted: Vec<u64> = (1..=100).collect();
        assert_eq!(nearest_rank(&sorted, 50.0), Some(50));
        assert_eq!(nearest_rank(&sorted, 99.0), Some(99));
        assert_eq!(nearest_rank(&[7, 9, 30], 50.0), Some(9));
        assert_eq!(nearest_rank(&[7, 9, 30], 90.0), Some(30));
        assert_eq!(nearest_rank(&[42], 1.0), Some(42));
        assert_eq!(nearest_rank(&[], 50.0), None);
    }
}
