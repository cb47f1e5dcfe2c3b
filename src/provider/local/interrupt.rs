//! Interrupts (SIGINT, SIGTERM, SIGHUP) from the first instruction of `main`: a handler that only records
//! the signal, so every long step can check [`is_interrupted`], stop, tear down and exit 130.
//!
//! While meshfed waits for its sandbox (see `sandbox`), the same handler also forwards the signal to
//! the one process it waits for. tokio's signal streams (signal-hook-registry) install their own
//! handler later and call the one they replace, so the flag keeps being set after a runtime
//! listens for signals too.

use std::io;
use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};

use nix::errno::Errno;
use nix::sys::signal::{self, SaFlags, SigAction, SigHandler, SigSet, SigmaskHow, Signal};
use nix::unistd::Pid;

/// The signals meshfed treats as "stop, tear down, exit 130". SIGHUP is what a closed terminal or
/// SSH session sends: its default action would end meshfed without a teardown.
pub const SIGNALS: [Signal; 3] = [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP];

/// The last interrupting signal received, as its number (0: none).
static RECEIVED_SIGNAL: AtomicI32 = AtomicI32::new(0);
/// How many interrupting signals were received.
static RECEIVED_COUNT: AtomicU32 = AtomicU32::new(0);
/// A process every received signal is passed on to (0: none).
static FORWARD_TO: AtomicI32 = AtomicI32::new(0);

extern "C" fn record_and_forward(signal: std::ffi::c_int) {
    // Only async-signal-safe work here: atomics, kill(2), and errno saved and given back so the
    // interrupted code never sees kill's.
    let errno = Errno::last_raw();
    RECEIVED_SIGNAL.store(signal, Ordering::SeqCst);
    RECEIVED_COUNT.fetch_add(1, Ordering::SeqCst);
    let target = FORWARD_TO.load(Ordering::SeqCst);
    if let (true, Ok(signal)) = (target > 0, Signal::try_from(signal)) {
        let _ = signal::kill(Pid::from_raw(target), signal);
    }
    Errno::set_raw(errno);
}

/// [`SIGNALS`] as a signal set.
fn signal_set() -> SigSet {
    let mut set = SigSet::empty();
    for signal in SIGNALS {
        set.add(signal);
    }
    set
}

/// Installs the recording handler for [`SIGNALS`] and unblocks them (a blocked mask is inherited
/// across exec, and would otherwise make Ctrl-C do nothing). Call it first thing in `main`.
///
/// The handler is installed without `SA_RESTART`, so a blocking wait returns `EINTR` and can look
/// at [`is_interrupted`].
pub fn install() -> io::Result<()> {
    for signal in SIGNALS {
        set_disposition(signal, Disposition::Record)?;
    }
    // Only this thread's mask: meshfed is single-threaded when this runs.
    signal::sigprocmask(SigmaskHow::SIG_UNBLOCK, Some(&signal_set()), None)?;
    Ok(())
}

/// Gives [`SIGNALS`] their default action again (for subcommands that have nothing to tear down:
/// a signal then ends them at once). Check [`is_interrupted`] afterwards for a signal that came
/// while the handler was still there.
pub fn restore_default() -> io::Result<()> {
    for signal in SIGNALS {
        set_disposition(signal, Disposition::Default)?;
    }
    Ok(())
}

/// Whether SIGINT, SIGTERM or SIGHUP was received since [`install`].
pub fn is_interrupted() -> bool {
    RECEIVED_SIGNAL.load(Ordering::SeqCst) != 0
}

/// Fails with [`Interrupted`] once an interrupting signal came: the one check every blocking
/// wait (`await_*`) makes on each round, so exit 130 follows an interrupt within a round.
pub fn check() -> Result<(), Interrupted> {
    if is_interrupted() { Err(Interrupted) } else { Ok(()) }
}

/// An interrupting signal came while waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("interrupted (SIGINT, SIGTERM or SIGHUP)")]
pub struct Interrupted;

/// The last interrupting signal received, if any.
pub fn received_signal() -> Option<Signal> {
    Signal::try_from(RECEIVED_SIGNAL.load(Ordering::SeqCst)).ok()
}

/// How many interrupting signals were received so far.
pub(crate) fn received_count() -> u32 {
    RECEIVED_COUNT.load(Ordering::SeqCst)
}

/// From now on, passes every interrupting signal on to `pid`; one that already came is passed on
/// at once. Used by the processes that wait for the sandbox (they never run meshfed's work).
pub(crate) fn forward_to(pid: Pid) {
    FORWARD_TO.store(pid.as_raw(), Ordering::SeqCst);
    // A signal that arrived before the store was recorded but not forwarded.
    if let Some(signal) = received_signal() {
        let _ = signal::kill(pid, signal);
    }
}

/// The dispositions of [`SIGNALS`] before [`install_forwarding`], to give them back.
pub(crate) struct SavedDispositions([SigAction; SIGNALS.len()]);

/// Installs the recording (and forwarding) handler, returning what was there before.
pub(crate) fn install_forwarding() -> io::Result<SavedDispositions> {
    let [first, second, third] = SIGNALS;
    Ok(SavedDispositions([
        set_disposition(first, Disposition::Record)?,
        set_disposition(second, Disposition::Record)?,
        set_disposition(third, Disposition::Record)?,
    ]))
}

/// Gives back the dispositions saved by [`install_forwarding`] and forgets any forwarding target.
pub(crate) fn restore(saved: &SavedDispositions) -> io::Result<()> {
    FORWARD_TO.store(0, Ordering::SeqCst);
    for (old, signal) in saved.0.iter().zip(SIGNALS) {
        // SAFETY: restoring an action the kernel handed us.
        unsafe { signal::sigaction(signal, old) }?;
    }
    Ok(())
}

enum Disposition {
    Record,
    Default,
}

fn set_disposition(signal: Signal, disposition: Disposition) -> io::Result<SigAction> {
    let handler = match disposition {
        Disposition::Record => SigHandler::Handler(record_and_forward),
        Disposition::Default => SigHandler::SigDfl,
    };
    // No SA_RESTART: blocking waits return EINTR and look at the flag.
    let action = SigAction::new(handler, SaFlags::empty(), signal_set());
    // SAFETY: the handler only touches atomics and errno and calls kill(2), all async-signal-safe.
    Ok(unsafe { signal::sigaction(signal, &action) }?)
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::process::Command;
    use std::time::{Duration, Instant};

    /// Set in the process that gets the signal: the flag is process-wide and never reset, so the
    /// test re-runs itself in a process of its own.
    // Lower case: a variable of this test only, not one meshfed reads (tests/cli/help.rs).
    const CHILD_ENV: &str = "meshfed_test_interrupt_child";
    const TEST_NAME: &str =
        "provider::local::interrupt::tests::the_local_worlds_blocking_waits_end_within_a_round_of_a_sighup";

    #[test]
    fn the_local_worlds_blocking_waits_end_within_a_round_of_a_sighup() {
        if std::env::var_os(CHILD_ENV).is_some() {
            return interrupted_waits();
        }
        let output = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", TEST_NAME, "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, "1")
            .output()
            .unwrap();
        let shown = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(output.status.success(), "{shown}");
        assert!(
            shown.contains("both waits ended on the interrupt"),
            "the child ran: {shown}"
        );
    }

    /// In the child: a SIGHUP 300 ms in ends the supervisor's `await_exit` (a child that would run
    /// 30 s, deadline 20 s) and `await_tcp_connect` (nothing listens, deadline 10 s, the wait of
    /// `await_apps`) at once.
    fn interrupted_waits() {
        use crate::provider::local::network::await_tcp_connect;
        use crate::provider::local::supervisor::{ChildOutput, Supervisor, SupervisorError};

        super::install().unwrap();
        let mut supervisor = Supervisor::new().unwrap();
        let mut sleeper = Command::new("sleep");
        sleeper.arg("30");
        let id = supervisor.spawn("sleeper", sleeper, None, ChildOutput::Piped).unwrap();
        let signaller = std::thread::spawn(|| {
            std::thread::sleep(Duration::from_millis(300));
            nix::sys::signal::kill(nix::unistd::getpid(), nix::sys::signal::Signal::SIGHUP).unwrap();
        });
        let started = Instant::now();
        let waited = supervisor.await_exit(id, Instant::now() + Duration::from_secs(20));
        assert!(
            matches!(waited, Err(SupervisorError::Interrupted { .. })),
            "{waited:?} after {:?}",
            started.elapsed()
        );
        assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
        signaller.join().unwrap();

        let nothing_listens = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let started = Instant::now();
        let error = await_tcp_connect(
            Path::new("/proc/self/ns/net"),
            nothing_listens,
            Instant::now() + Duration::from_secs(10),
        )
        .unwrap_err();
        assert_eq!(error.last_error.kind(), std::io::ErrorKind::Interrupted, "{error}");
        assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
        supervisor.shutdown(Duration::from_secs(2)).unwrap();
        println!("both waits ended on the interrupt");
    }
}
