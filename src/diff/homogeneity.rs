//! Pearson's chi-square test of homogeneity on a 2×k table: did run A and run B spread their
//! samples over the same k pods (or clusters) in the same proportions?

use serde::{Deserialize, Serialize};

use crate::measure::stats;

/// The test's outcome.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HomogeneityTest {
    /// Pearson's statistic Σ (observed − expected)² ÷ expected over both rows of the table, where
    /// expected = row total × column total ÷ grand total.
    pub chi_square: f64,
    /// Columns with a sample in either run, minus 1 (0 when fewer than two: nothing to test).
    pub degrees_of_freedom: u64,
    /// Chance of a statistic at least this large if both runs drew from one split; small means
    /// the splits differ. 1 when there is nothing to test (no degrees of freedom, or a run with no
    /// samples).
    pub p_value: f64,
    /// Smallest expected cell count (0 when nothing was tested): the chi-square approximation wants
    /// it ≥ 5, so a smaller one makes `p_value` approximate.
    pub min_expected_count: f64,
}

/// Tests whether the counts `a[i]` and `b[i]` (the same k categories in two runs) come from one
/// distribution. Columns empty in both runs carry no information and are left out.
///
/// ```
/// # use meshfed::diff::homogeneity_test;
/// // 50/50 in A against 80/20 in B, 100 samples each: clearly different.
/// let test = homogeneity_test(&[50, 50], &[80, 20]);
/// assert_eq!(test.degrees_of_freedom, 1);
/// assert!(test.p_value < 1e-4);
/// ```
pub fn homogeneity_test(a: &[u64], b: &[u64]) -> HomogeneityTest {
    let columns: Vec<(u64, u64)> = a
        .iter()
        .zip(b)
        .map(|(a, b)| (*a, *b))
        .filter(|(a, b)| a + b > 0)
        .collect();
    let total_a: u64 = columns.iter().map(|(a, _)| a).sum();
    let total_b: u64 = columns.iter().map(|(_, b)| b).sum();
    let total = (total_a + total_b) as f64;
    if columns.len() < 2 || total_a == 0 || total_b == 0 {
        return HomogeneityTest {
            chi_square: 0.0,
            degrees_of_freedom: 0,
            p_value: 1.0,
            min_expected_count: 0.0,
        };
    }
    // The table's cells in one list, each with its expected count (row total × column total ÷
    // grand total); Pearson's statistic over them is the one goodness of fit uses.
    let (observed, expected): (Vec<u64>, Vec<f64>) = columns
        .iter()
        .flat_map(|(count_a, count_b)| {
            let column_total = (count_a + count_b) as f64;
            [(*count_a, total_a), (*count_b, total_b)]
                .map(|(observed, row_total)| (observed, row_total as f64 * column_total / total))
        })
        .unzip();
    let chi_square = stats::chi_square_statistic(&observed, &expected);
    let min_expected_count = expected.iter().copied().fold(f64::INFINITY, f64::min);
    let degrees_of_freedom = columns.len() as u64 - 1;
    HomogeneityTest {
        chi_square,
        degrees_of_freedom,
        p_value: stats::chi_square_survival(chi_square, degrees_of_freedom),
        min_expected_count,
    }
}
