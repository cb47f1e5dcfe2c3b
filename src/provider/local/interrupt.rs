//! Interrupts (SIGINT, SIGTERM) from the first instruction of `main`: a handler that only records
//! the signal, so every long step can check [`is_interrupted`], stop, tear down and exit 130.
//!
//! While meshfed waits for its sandbox (see `sandbox`), the same handler also forwards the signal to
//! the one process it waits for. tokio's signal streams (signal-hook-registry) install their own
//! handler later and call the one they replace, so the flag keeps being set after a runtime
//! listens for signals too.

use std::io;
use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};

/// The signals meshfed treats as "stop, tear down, exit 130".
pub const SIGNALS: [libc::c_int; 2] = [libc::SIGINT, libc::SIGTERM];

/// The last interrupting signal received (0: none).
static RECEIVED_SIGNAL: AtomicI32 = AtomicI32::new(0);
/// How many interrupting signals were received.
static RECEIVED_COUNT: AtomicU32 = AtomicU32::new(0);
/// A process every received signal is passed on to (0: none).
static FORWARD_TO: AtomicI32 = AtomicI32::new(0);

extern "C" fn record_and_forward(signal: libc::c_int) {
    // Only async-signal-safe work here: atomics and kill(2).
    RECEIVED_SIGNAL.store(signal, Ordering::SeqCst);
    RECEIVED_COUNT.fetch_add(1, Ordering::SeqCst);
    let target = FORWARD_TO.load(Ordering::SeqCst);
    if target > 0 {
        // SAFETY: kill(2) is async-signal-safe; errno is not read afterwards.
        unsafe { libc::kill(target, signal) };
    }
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
    // SAFETY: sigset operations on a local set; sigprocmask only changes this thread's mask
    // (meshfed is single-threaded when this runs).
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for signal in SIGNALS {
            libc::sigaddset(&mut set, signal);
        }
        if libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut()) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
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

/// Whether SIGINT or SIGTERM was received since [`install`].
pub fn is_interrupted() -> bool {
    RECEIVED_SIGNAL.load(Ordering::SeqCst) != 0
}

/// The last interrupting signal received, if any.
pub fn received_signal() -> Option<libc::c_int> {
    match RECEIVED_SIGNAL.load(Ordering::SeqCst) {
        0 => None,
        signal => Some(signal),
    }
}

/// How many interrupting signals were received so far.
pub(crate) fn received_count() -> u32 {
    RECEIVED_COUNT.load(Ordering::SeqCst)
}

/// From now on, passes every interrupting signal on to `pid`; one that already came is passed on
/// at once. Used by the processes that wait for the sandbox (they never run meshfed's work).
pub(crate) fn forward_to(pid: libc::pid_t) {
    FORWARD_TO.store(pid, Ordering::SeqCst);
    // A signal that arrived before the store was recorded but not forwarded.
    if let Some(signal) = received_signal() {
        // SAFETY: kill(2) on the child this process just forked.
        unsafe { libc::kill(pid, signal) };
    }
}

/// The dispositions of [`SIGNALS`] before [`install_forwarding`], to give them back.
pub(crate) struct SavedDispositions([libc::sigaction; SIGNALS.len()]);

/// Installs the recording (and forwarding) handler, returning what was there before.
pub(crate) fn install_forwarding() -> io::Result<SavedDispositions> {
    // SAFETY: sigaction is plain old data; zeroed is a valid value.
    let mut saved: [libc::sigaction; SIGNALS.len()] = unsafe { std::mem::zeroed() };
    for (slot, signal) in saved.iter_mut().zip(SIGNALS) {
        *slot = set_disposition(signal, Disposition::Record)?;
    }
    Ok(SavedDispositions(saved))
}

/// Gives back the dispositions saved by [`install_forwarding`] and forgets any forwarding target.
pub(crate) fn restore(saved: &SavedDispositions) -> io::Result<()> {
    FORWARD_TO.store(0, Ordering::SeqCst);
    for (old, signal) in saved.0.iter().zip(SIGNALS) {
        // SAFETY: restoring an action the kernel handed us.
        if unsafe { libc::sigaction(signal, old, std::ptr::null_mut()) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

enum Disposition {
    Record,
    Default,
}

fn set_disposition(signal: libc::c_int, disposition: Disposition) -> io::Result<libc::sigaction> {
    // SAFETY: sigaction is plain old data; the handler only touches atomics and calls kill(2).
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = match disposition {
            Disposition::Record => record_and_forward as extern "C" fn(libc::c_int) as libc::sighandler_t,
            Disposition::Default => libc::SIG_DFL,
        };
        // No SA_RESTART: blocking waits return EINTR and look at the flag.
        action.sa_flags = 0;
        libc::sigemptyset(&mut action.sa_mask);
        for other in SIGNALS {
            libc::sigaddset(&mut action.sa_mask, other);
        }
        let mut old: libc::sigaction = std::mem::zeroed();
        if libc::sigaction(signal, &action, &mut old) != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(old)
    }
}
