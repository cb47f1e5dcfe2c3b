//! The local world's blocking waits (the supervisor's, a TCP connect into a namespace) end on an
//! interrupt ([`crate::interrupt`]) within a round of their poll.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// Set in the process that gets the signal: the flag is process-wide and never reset, so the
/// test re-runs itself in a process of its own.
// Lower case: a variable of this test only, not one meshfed reads (tests/cli/help.rs).
const CHILD_ENV: &str = "meshfed_test_interrupt_child";
const TEST_NAME: &str =
    "provider::local::interrupt_tests::the_local_worlds_blocking_waits_end_within_a_round_of_a_sighup";

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

    crate::interrupt::install().unwrap();
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
