//! Where meshfed's diagnostics go: progress lines, warnings and errors are `tracing` events, printed
//! on stderr by one subscriber installed at the start of the command line. By default only `info`
//! and above, as plain lines (what a person reads during a run); `-v` adds meshfed's `debug` events
//! (processes started and ended, plans applied, changes made) and `-vv` its `trace` events, with the
//! level in front; `RUST_LOG` (env-filter syntax, e.g. `RUST_LOG=meshfed=debug,kube=debug`) replaces
//! both. While the live progress view is drawn, events go through it ([`route_stderr_through`]) so
//! they print above its frame instead of into it.

use std::io::Write as _;
use std::sync::{Arc, Mutex};

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// Takes one printed event's bytes in place of stderr.
pub type StderrRoute = Arc<dyn Fn(&[u8]) + Send + Sync>;

/// Where events go instead of stderr, while something owns the bottom of the terminal (the live
/// progress view clears its frame, lets the event through, and redraws below it).
static ROUTE: Mutex<Option<StderrRoute>> = Mutex::new(None);

/// Sends every event from now on through `route` (`None`: straight to stderr again).
pub fn route_stderr_through(route: Option<StderrRoute>) {
    *ROUTE.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = route;
}

/// The subscriber's writer: one per event, holding the event's bytes until it is dropped, then
/// handing them whole to the route or to stderr.
struct EventWriter(Vec<u8>);

impl std::io::Write for EventWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for EventWriter {
    fn drop(&mut self) {
        let route = ROUTE.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone();
        match route {
            Some(route) => route(&self.0),
            None => {
                let _ = std::io::stderr().lock().write_all(&self.0);
            }
        }
    }
}

struct Stderr;

impl<'writer> MakeWriter<'writer> for Stderr {
    type Writer = EventWriter;

    fn make_writer(&'writer self) -> EventWriter {
        EventWriter(Vec::new())
    }
}

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
        .with_writer(Stderr)
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
    fn a_routed_event_reaches_the_route_whole_and_nothing_else() {
        let got: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
        let sink = Arc::clone(&got);
        route_stderr_through(Some(Arc::new(move |bytes: &[u8]| {
            sink.lock().unwrap().push(bytes.to_vec());
        })));
        let mut writer = Stderr.make_writer();
        writer.write_all(b"WARN meshfed: ").unwrap();
        writer.write_all(b"disk almost full\n").unwrap();
        assert!(got.lock().unwrap().is_empty(), "held until the event is complete");
        drop(writer);
        route_stderr_through(None);
        assert_eq!(*got.lock().unwrap(), [b"WARN meshfed: disk almost full\n".to_vec()]);
    }

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
