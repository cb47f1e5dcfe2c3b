//! The terminal rendering of a [`ReportDiff`]: per phase what changed, then every difference
//! beyond the thresholds with the threshold it crossed.

use std::fmt::Write as _;

use super::phase::{cell_name, format_p, millis, verdict_word};
use super::{PhaseDiff, Presence, ReportDiff, SettingChange, ShareDiff};
use crate::printable::printable;

/// The summary `meshfed diff` prints for people. Every string taken from a report goes through
/// [`printable`]: maintainers diff strangers' report.json files, so a pod name, an
/// expectation or a rejection must not be able to move the cursor, recolour or reorder the text.
pub fn summary(diff: &ReportDiff) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "meshfed diff of scenario {}", printable(&diff.scenario));
    for (side, run) in [("A", &diff.a), ("B", &diff.b)] {
        let _ = writeln!(
            out,
            "  {side}: {} (provider {}, {}, meshfed {}, verdict {})",
            printable(&run.label),
            printable(&run.provider),
            printable(&run.proxy),
            printable(&run.meshfed_version),
            verdict_word(run.passed)
        );
    }
    let thresholds = &diff.thresholds;
    let _ = writeln!(
        out,
        "  thresholds: share tolerance {:.1} points, alpha {}, rate tolerance {:.3}, latency tolerance {:.0}% above {}",
        thresholds.share_tolerance * 100.0,
        thresholds.alpha,
        thresholds.rate_tolerance,
        thresholds.latency_tolerance * 100.0,
        millis(thresholds.latency_floor_us)
    );
    if !diff.latency_judged {
        let _ = writeln!(
            out,
            "  latency: shown, not judged (a run is on an emulation, whose latency is this machine's load; --judge-local-latency judges it)"
        );
    }
    settings(&mut out, "  runs differ in", &diff.context);
    for probe in diff.isolation.iter().filter(|probe| probe.flagged) {
        let _ = writeln!(
            out,
            "  isolation {} -> {}: {} in A, {} in B *",
            printable(&probe.from_cluster),
            printable(&probe.to_cluster),
            super::isolation_word(probe.isolated_a),
            super::isolation_word(probe.isolated_b)
        );
    }
    for phase in &diff.phases {
        phase_summary(&mut out, phase, diff.latency_judged);
    }
    if diff.differences.is_empty() {
        let _ = writeln!(out, "\nno difference beyond the thresholds");
    } else {
        let _ = writeln!(out, "\ndifferences beyond the thresholds ({}):", diff.differences.len());
        for difference in &diff.differences {
            let _ = writeln!(
                out,
                "  {}{}: {} [crossed: {}]",
                difference
                    .phase
                    .as_deref()
                    .map(|phase| format!("phase {}: ", printable(phase)))
                    .unwrap_or_default(),
                printable(&difference.subject),
                printable(&difference.detail),
                printable(&difference.threshold)
            );
        }
    }
    out
}

fn settings(out: &mut String, heading: &str, changes: &[SettingChange]) {
    if changes.is_empty() {
        return;
    }
    let listed: Vec<String> = changes
        .iter()
        .map(|change| {
            format!(
                "{} {} -> {}",
                printable(&change.field),
                printable(&change.a),
                printable(&change.b)
            )
        })
        .collect();
    let _ = writeln!(out, "{heading}: {}", listed.join("; "));
}

fn phase_summary(out: &mut String, phase: &PhaseDiff, diff_latency_judged: bool) {
    match phase.presence {
        Presence::OnlyInA => {
            let _ = writeln!(out, "\nphase {}: in A only", printable(&phase.name));
            return;
        }
        Presence::OnlyInB => {
            let _ = writeln!(out, "\nphase {}: in B only", printable(&phase.name));
            return;
        }
        Presence::Both => {}
    }
    let _ = writeln!(out, "\nphase {}", printable(&phase.name));
    settings(out, "  settings differ", &phase.settings);
    if phase.pod_shares.is_none() {
        let _ = writeln!(out, "  pods compared {}", printable(&phase.pod_match));
    }
    for shares in [&phase.pod_shares, &phase.cluster_shares].into_iter().flatten() {
        share_table(out, shares);
    }
    let rates: Vec<String> = phase
        .rates
        .iter()
        .map(|rate| {
            format!(
                "{} {:.3} -> {:.3}{}",
                rate.name,
                rate.a,
                rate.b,
                if rate.flagged { " *" } else { "" }
            )
        })
        .collect();
    let _ = writeln!(out, "  {}", rates.join(", "));
    let latency: Vec<String> = phase
        .latency
        .iter()
        .map(|latency| {
            let side = |us: Option<u64>| us.map_or("-".to_owned(), millis);
            format!(
                "{} {} -> {}{}{}{}",
                latency.percentile,
                side(latency.a_us),
                side(latency.b_us),
                latency
                    .relative_change
                    .map_or(String::new(), |change| format!(" ({:+.0}%)", change * 100.0)),
                if latency.judged || !diff_latency_judged {
                    ""
                } else {
                    " (too few samples to judge)"
                },
                if latency.flagged { " *" } else { "" }
            )
        })
        .collect();
    let _ = writeln!(out, "  latency {}", latency.join(", "));
    let counters: Vec<String> = phase
        .counters
        .iter()
        .filter(|counter| counter.a != counter.b)
        .map(|counter| {
            let side = |count: Option<u64>| count.map_or("not counted".to_owned(), |count| count.to_string());
            format!(
                "{} {} -> {}{}",
                counter.name,
                side(counter.a),
                side(counter.b),
                if counter.flagged { " *" } else { "" }
            )
        })
        .collect();
    if counters.is_empty() {
        let _ = writeln!(out, "  TLS failure counters and gateway hops: the same in both runs");
    } else {
        let _ = writeln!(out, "  counters {}", counters.join(", "));
    }
    for rejection in &phase.config_rejections.only_in_a {
        let _ = writeln!(out, "  config rejected in A only: {} *", printable(rejection));
    }
    for rejection in &phase.config_rejections.only_in_b {
        let _ = writeln!(out, "  config rejected in B only: {} *", printable(rejection));
    }
    for expectation in &phase.expectations {
        let verdict = |passed: Option<bool>| passed.map_or("-", verdict_word);
        let changed = expectation.passed_a != expectation.passed_b;
        let _ = writeln!(
            out,
            "  {} -> {} {} {} (observed {} -> {}){}",
            verdict(expectation.passed_a),
            verdict(expectation.passed_b),
            printable(&expectation.expectation),
            printable(
                expectation
                    .bound_b
                    .as_deref()
                    .or(expectation.bound_a.as_deref())
                    .unwrap_or("-")
            ),
            printable(expectation.observed_a.as_deref().unwrap_or("-")),
            printable(expectation.observed_b.as_deref().unwrap_or("-")),
            if changed { " *" } else { "" }
        );
    }
}

fn share_table(out: &mut String, shares: &ShareDiff) {
    let test = &shares.test;
    let _ = writeln!(
        out,
        "  {} shares by {}: chi-square {:.1}, {} degree(s) of freedom, p = {}{}{}",
        shares.level,
        shares.unit,
        test.chi_square,
        test.degrees_of_freedom,
        format_p(test.p_value),
        if test.degrees_of_freedom > 0 && test.min_expected_count < 5.0 {
            format!(
                " (approximate: smallest expected count {:.1} < 5)",
                test.min_expected_count
            )
        } else {
            String::new()
        },
        if shares.flagged { " *" } else { "" }
    );
    if shares.unit == "connections" {
        let _ = writeln!(out, "    tested by {}", printable(&shares.unit_reason));
    }
    let _ = writeln!(
        out,
        "    {:<30} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9}",
        shares.level, "A count", "A share", "B count", "B share", "change", "expected"
    );
    for cell in &shares.cells {
        let expected = if cell.expected_share_a == cell.expected_share_b {
            format!("{:.1}%", cell.expected_share_a * 100.0)
        } else {
            format!(
                "{:.0}->{:.0}%",
                cell.expected_share_a * 100.0,
                cell.expected_share_b * 100.0
            )
        };
        let _ = writeln!(
            out,
            "    {:<30} {:>8} {:>7.1}% {:>8} {:>7.1}% {:>+9.1} {:>9}{}{}",
            printable(&cell_name(cell)),
            cell.count_a,
            cell.share_a * 100.0,
            cell.count_b,
            cell.share_b * 100.0,
            cell.delta * 100.0,
            expected,
            if cell.expected { "" } else { " (not expected)" },
            if shares.flagged && cell.beyond_tolerance {
                " *"
            } else {
                ""
            }
        );
    }
}
