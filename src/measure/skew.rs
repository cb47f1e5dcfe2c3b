//! Skew of an observed split against the expected one: max ratio, total variation distance and
//! chi-square goodness of fit.

use super::{Skew, ratio, stats};

/// One category of a skew test: a pod or a cluster, what it got and what it should have got.
pub(super) struct SkewCell {
    label: String,
    observed: u64,
    expected_share: f64,
}

impl SkewCell {
    pub(super) fn new(label: impl Into<String>, observed: u64, expected_share: f64) -> Self {
        Self {
            label: label.into(),
            observed,
            expected_share,
        }
    }

    fn is_tested(&self) -> bool {
        self.expected_share > 0.0
    }
}

/// Skew of `cells` (whose expected shares sum to 1) given `unexpected_samples` that landed outside
/// them.
pub(super) fn skew(cells: &[SkewCell], unexpected_samples: u64) -> Skew {
    let samples = cells.iter().map(|cell| cell.observed).sum::<u64>() + unexpected_samples;
    let observed_shares: Vec<f64> = cells.iter().map(|cell| ratio(cell.observed, samples)).collect();
    let expected_shares: Vec<f64> = cells.iter().map(|cell| cell.expected_share).collect();
    let unexpected_share = ratio(unexpected_samples, samples);
    let (max_ratio, max_ratio_at) = max_ratio(cells, &observed_shares);
    let test = chi_square_test(cells);
    Skew {
        samples,
        unexpected_samples,
        max_ratio,
        max_ratio_at,
        total_variation_distance: stats::total_variation_distance(&observed_shares, &expected_shares)
            + 0.5 * unexpected_share,
        chi_square: test.statistic,
        degrees_of_freedom: test.degrees_of_freedom,
        p_value: test.p_value,
        min_expected_count: test.min_expected_count,
    }
}

/// The largest observed ÷ expected share over tested cells, and which cell it is.
fn max_ratio(cells: &[SkewCell], observed_shares: &[f64]) -> (f64, Option<String>) {
    cells
        .iter()
        .zip(observed_shares)
        .filter(|(cell, _)| cell.is_tested())
        .map(|(cell, observed)| (observed / cell.expected_share, &cell.label))
        .fold((0.0, None), |best, (ratio, label)| {
            if best.1.is_none() || ratio > best.0 {
                (ratio, Some(label.clone()))
            } else {
                best
            }
        })
}

struct ChiSquareTest {
    statistic: f64,
    degrees_of_freedom: u64,
    p_value: f64,
    min_expected_count: f64,
}

/// Pearson goodness of fit over the tested cells, conditional on the samples they received.
fn chi_square_test(cells: &[SkewCell]) -> ChiSquareTest {
    let tested: Vec<&SkewCell> = cells.iter().filter(|cell| cell.is_tested()).collect();
    let tested_share: f64 = tested.iter().map(|cell| cell.expected_share).sum();
    let tested_samples: u64 = tested.iter().map(|cell| cell.observed).sum();
    let observed: Vec<u64> = tested.iter().map(|cell| cell.observed).collect();
    let expected: Vec<f64> = tested
        .iter()
        .map(|cell| tested_samples as f64 * cell.expected_share / tested_share)
        .collect();
    let statistic = stats::chi_square_statistic(&observed, &expected);
    let degrees_of_freedom = (tested.len() as u64).saturating_sub(1);
    ChiSquareTest {
        statistic,
        degrees_of_freedom,
        p_value: stats::chi_square_survival(statistic, degrees_of_freedom),
        min_expected_count: expected.iter().copied().reduce(f64::min).unwrap_or(0.0),
    }
}
