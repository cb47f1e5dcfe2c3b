//! Interrupts (SIGINT, SIGTERM, SIGHUP) from the first instruction of `main`: a handler that only records
//! the signal, so every long step can check [`is_interrupted`], stop, tear down and exit 130.
//!
//! While meshfed waits for its sandbox (see `provider::local::sandbox`), the same handler also forwards the signal to
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
#[allow(
    unsafe_code,
    reason = "sigaction(2) through nix is unsafe: restores a disposition the kernel handed us"
)]
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

#[allow(
    unsafe_code,
    reason = "sigaction(2) through nix is unsafe: installs a handler that is async-signal-safe"
)]
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
