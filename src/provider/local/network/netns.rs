//! Work inside a network namespace: a short-lived thread enters it, binds or connects, and leaves
//! the socket behind for the caller.

use std::fs::File;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use thiserror::Error;

/// Moves the calling *thread* into the network namespace at `netns`.
///
/// Only for threads that exist for this purpose (see [`run_in_netns`]): the thread stays there.
pub(crate) fn enter_netns_for_this_thread(netns: &Path) -> io::Result<()> {
    let file = File::open(netns)?;
    // CLONE_NEWNET only moves the calling thread.
    Ok(nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)?)
}

/// Runs `work` on a short-lived thread inside the network namespace at `netns` and returns its
/// result. Sockets created there stay in that namespace after the thread ends, so this is how to
/// bind a listener or connect "from pod X".
pub fn run_in_netns<T, F>(netns: &Path, work: F) -> io::Result<T>
where
    F: FnOnce() -> T + Send,
    T: Send,
{
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                enter_netns_for_this_thread(netns)?;
                Ok(work())
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Binds a TCP listener on `addr` inside the namespace at `netns`.
pub fn bind_in_netns(netns: &Path, addr: SocketAddr) -> io::Result<TcpListener> {
    run_in_netns(netns, || TcpListener::bind(addr))?
}

/// Connects to `addr` from inside the namespace at `netns`, giving up after `timeout`.
pub fn connect_in_netns(netns: &Path, addr: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    run_in_netns(netns, || TcpStream::connect_timeout(&addr, timeout))?
}

/// Nothing accepted a connection before the deadline.
#[derive(Debug, Error)]
#[error("no TCP connection to {addr} from network namespace {netns} within {waited:?} ({attempts} attempts)")]
pub struct AwaitConnectError {
    /// The target.
    pub addr: SocketAddr,
    /// Where the connect was made from.
    pub netns: PathBuf,
    /// How long it tried.
    pub waited: Duration,
    /// How many connects it made.
    pub attempts: u32,
    /// The last connect's error.
    #[source]
    pub last_error: io::Error,
}

/// Connects to `addr` from inside `netns`, retrying until it succeeds or `deadline` passes
/// (e.g. until a freshly started Envoy listens), or until meshfed is interrupted. Blocking: call
/// it from `spawn_blocking` in async code.
pub fn await_tcp_connect(netns: &Path, addr: SocketAddr, deadline: Instant) -> Result<TcpStream, AwaitConnectError> {
    let started = Instant::now();
    let mut attempts = 0;
    loop {
        attempts += 1;
        let remaining = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        let error = match connect_in_netns(netns, addr, remaining) {
            Ok(stream) => return Ok(stream),
            Err(error) => error,
        };
        // An interrupt ends the wait at once (exit 130 within a round, not at the deadline).
        let error = match crate::interrupt::check() {
            Ok(()) => error,
            Err(interrupted) => io::Error::new(io::ErrorKind::Interrupted, interrupted),
        };
        if Instant::now() >= deadline || error.kind() == io::ErrorKind::Interrupted {
            return Err(AwaitConnectError {
                addr,
                netns: netns.to_path_buf(),
                waited: started.elapsed(),
                attempts,
                last_error: error,
            });
        }
        std::thread::sleep(Duration::from_millis(5).min(deadline - Instant::now()));
    }
}
