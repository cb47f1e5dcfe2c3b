//! Where meshfed's diagnostics go: progress lines, warnings and errors are `tracing` events, printed
//! on stderr by one subscriber installed at the start of the command line. By default only `info`
//! and above, as plain lines (what a person reads during a run); `-v` adds meshfed's `debug` events
//! (processes started and ended, plans applied, changes made) and `-vv` its `trace` events, with the
//! level in front; `RUST_LOG` (env-filter syntax, e.g. `RUST_LOG=meshfed=debug,kube=debug`) replaces
//! both.

use tracing_subscriber::EnvFilter;

/// The filter for `verbosity` (the count of `-v`), unless `RUST_LOG` is set.
pub fn filter_for(verbosity: u8, rust_log: Option<&str>) -> String {
    match rust_log {
        Some(directives) if !directives.trim().is_empty() => directives.to_owned(),
        _ => match verbosity {
            0 => "info".to_owned(),
            1 => "info,meshfed=debug".to_owned(),
            _ => "debug,meshfed=trace".to_owned(),
        },
    }
}

/// Installs the stderr subscriber for this process (a second call, or a process that already has
/// one, keeps the first). A `RUST_LOG` that does not parse falls back to the `-v` filter and says so.
pub fn init(verbosity: u8) {
    let rust_log = std::env::var("RUST_LOG").ok();
    let verbose = verbosity > 0 || rust_log.as_deref().is_some_and(|text| !text.trim().is_empty());
    let (filter, refused) = match EnvFilter::try_new(filter_for(verbosity, rust_log.as_deref())) {
        Ok(filter) => (filter, None),
        Err(error) => (EnvFilter::new(filter_for(verbosity, None)), Some(error)),
    };
    let installed = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter)
        .with_ansi(false)
        .without_time()
        .with_target(verbose)
        .with_level(verbose)
        .try_init();
    if let (Ok(()), Some(error)) = (installed, refused) {
        tracing::warn!("meshfed: RUST_LOG is not a filter ({error}); using the -v level instead");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rust_log_wins_over_v_and_v_raises_only_meshfeds_level() {
        assert_eq!(filter_for(0, None), "info");
        assert_eq!(filter_for(1, None), "info,meshfed=debug");
        assert_eq!(filter_for(2, None), "debug,meshfed=trace");
        assert_eq!(filter_for(2, Some("kube=debug")), "kube=debug");
        assert_eq!(filter_for(1, Some("  ")), "info,meshfed=debug");
        for verbosity in 0..3 {
            assert!(EnvFilter::try_new(filter_for(verbosity, None)).is_ok());
        }
    }
}
