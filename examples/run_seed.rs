//! Runs a scenario (default `scenarios/seed.yaml`) through the library, as a user's program would:
//! `cargo run --example run_seed [-- SCENARIO]`. Prints the summary and each phase's mTLS rate and
//! per-cluster shares; exits 1 if a check failed, 2 on bad input, 3 if the run itself failed.

use std::process::ExitCode;

fn main() -> ExitCode {
    let scenario = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "scenarios/seed.yaml".to_owned());
    let report = match meshfed::Run::new(meshfed::ScenarioSource::file(scenario)).run() {
        Ok(report) => report,
        Err(error @ meshfed::Error::BadInput { .. }) => {
            eprintln!("{error}");
            return ExitCode::from(2);
        }
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::from(3);
        }
    };
    print!("{}", report.summary());
    for phase in report.phases() {
        println!(
            "{}: mTLS {:.3}, success {:.3}, shares per cluster {:?}",
            phase.name(),
            phase.mtls_rate(),
            phase.success_rate(),
            phase.cluster_shares()
        );
    }
    if report.passed() {
        ExitCode::SUCCESS
    } else {
        for failure in report.failures() {
            eprintln!("failed: {failure}");
        }
        ExitCode::from(1)
    }
}
