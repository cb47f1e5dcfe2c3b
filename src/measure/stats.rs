//! The statistics behind the measurements: chi-square goodness of fit (with its own incomplete gamma
//! function), total variation distance, binomial share tolerance and nearest-rank percentiles.
//!
//! Implemented here rather than pulled from a crate: it is about a hundred lines, and the tests below
//! pin it to published table values.

/// Relative precision at which the gamma series and continued fraction stop.
const CONVERGENCE_EPSILON: f64 = 1e-15;
/// Upper bound on series terms / continued-fraction steps; both converge in far fewer for the
/// arguments meshfed produces (degrees of freedom up to a few thousand).
const MAX_ITERATIONS: usize = 10_000;
/// Smallest magnitude the modified Lentz algorithm lets a denominator take.
const LENTZ_FLOOR: f64 = 1e-300;

/// Lanczos approximation (g = 7, 9 coefficients): about 15 significant digits for positive arguments.
const LANCZOS_G: f64 = 7.0;
const LANCZOS_COEFFICIENTS: [f64; 9] = [
    0.999_999_999_999_809_9,
    676.520_368_121_885_1,
    -1_259.139_216_722_402_8,
    771.323_428_777_653_1,
    -176.615_029_162_140_6,
    12.507_343_278_686_905,
    -0.138_571_095_265_720_12,
    9.984_369_578_019_572e-6,
    1.505_632_735_149_311_6e-7,
];

/// Natural logarithm of the gamma function, for `x > 0`.
pub fn ln_gamma(x: f64) -> f64 {
    if x < 0.5 {
        // Reflection formula: Γ(x)Γ(1−x) = π / sin(πx); Lanczos is accurate only for x ≥ 0.5.
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let shifted = x - 1.0;
    let series = LANCZOS_COEFFICIENTS[1..]
        .iter()
        .enumerate()
        .fold(LANCZOS_COEFFICIENTS[0], |sum, (index, coefficient)| {
            sum + coefficient / (shifted + index as f64 + 1.0)
        });
    let t = shifted + LANCZOS_G + 0.5;
    0.5 * (2.0 * std::f64::consts::PI).ln() + (shifted + 0.5) * t.ln() - t + series.ln()
}

/// Upper regularised incomplete gamma function Q(a, x) = Γ(a, x) / Γ(a), for `a > 0`, `x ≥ 0`.
///
/// Uses the power series of P = 1 − Q when `x < a + 1` (where it converges fast) and a continued
/// fraction for Q otherwise (Numerical Recipes §6.2). Returns 1 for `x ≤ 0`.
pub fn regularized_gamma_q(a: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 1.0;
    }
    if x < a + 1.0 {
        (1.0 - lower_gamma_series(a, x)).clamp(0.0, 1.0)
    } else {
        upper_gamma_continued_fraction(a, x).clamp(0.0, 1.0)
    }
}

/// `exp(−x + a·ln x − ln Γ(a))`: the factor both expansions of the incomplete gamma share.
fn gamma_prefactor(a: f64, x: f64) -> f64 {
    (-x + a * x.ln() - ln_gamma(a)).exp()
}

/// Lower regularised incomplete gamma P(a, x) by its power series.
fn lower_gamma_series(a: f64, x: f64) -> f64 {
    let mut denominator = a;
    let mut term = 1.0 / a;
    let mut sum = term;
    for _ in 0..MAX_ITERATIONS {
        denominator += 1.0;
        term *= x / denominator;
        sum += term;
        if term.abs() < sum.abs() * CONVERGENCE_EPSILON {
            break;
        }
    }
    sum * gamma_prefactor(a, x)
}

/// Upper regularised incomplete gamma Q(a, x) by its continued fraction (modified Lentz).
fn upper_gamma_continued_fraction(a: f64, x: f64) -> f64 {
    let mut b = x + 1.0 - a;
    let mut c = 1.0 / LENTZ_FLOOR;
    let mut d = 1.0 / b;
    let mut fraction = d;
    for step in 1..MAX_ITERATIONS {
        let step = step as f64;
        let an = -step * (step - a);
        b += 2.0;
        d = floor_magnitude(an * d + b).recip();
        c = floor_magnitude(b + an / c);
        let delta = d * c;
        fraction *= delta;
        if (delta - 1.0).abs() < CONVERGENCE_EPSILON {
            break;
        }
    }
    fraction * gamma_prefactor(a, x)
}

fn floor_magnitude(value: f64) -> f64 {
    if value.abs() < LENTZ_FLOOR { LENTZ_FLOOR } else { value }
}

/// Probability that a chi-square variable with `degrees_of_freedom` exceeds `statistic`: the
/// goodness-of-fit p-value. With 0 degrees of freedom there is nothing to test and the answer is 1.
pub fn chi_square_survival(statistic: f64, degrees_of_freedom: u64) -> f64 {
    if degrees_of_freedom == 0 {
        return 1.0;
    }
    regularized_gamma_q(degrees_of_freedom as f64 / 2.0, statistic / 2.0)
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
    fn ln_gamma_matches_factorials_and_half_integer_values() {
        assert_close(ln_gamma(1.0), 0.0, 1e-12);
        assert_close(ln_gamma(5.0), 24.0_f64.ln(), 1e-12);
        assert_close(ln_gamma(11.0), 3_628_800.0_f64.ln(), 1e-10);
        assert_close(ln_gamma(0.5), std::f64::consts::PI.sqrt().ln(), 1e-12);
        // Γ(0.25) = 3.625609908221908 (reflection branch).
        assert_close(ln_gamma(0.25), 3.625_609_908_221_908_f64.ln(), 1e-12);
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
    fn chi_square_survival_with_two_degrees_matches_closed_form_on_both_branches() {
        // With 2 degrees of freedom the survival is exactly exp(−x/2); x/2 < 2 uses the series,
        // x/2 ≥ 2 the continued fraction.
        for statistic in [0.1, 1.0, 3.9, 4.1, 10.0, 40.0, 200.0] {
            assert_close(chi_square_survival(statistic, 2), (-statistic / 2.0).exp(), 1e-12);
        }
    }

    #[test]
    fn regularized_gamma_q_is_continuous_where_the_method_switches() {
        let a = 3.5;
        let below = regularized_gamma_q(a, a + 1.0 - 1e-9);
        let above = regularized_gamma_q(a, a + 1.0 + 1e-9);
        assert_close(below, above, 1e-8);
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
