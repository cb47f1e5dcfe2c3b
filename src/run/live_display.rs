//! The live progress view of a `kind` or `kubeconfig` run on a terminal: progress lines feed a
//! [`Board`], and the board is redrawn on stderr as each line comes and every
//! [`REDRAW_INTERVAL`] between them (so the time on a step keeps counting while istioctl or kind
//! works). Warnings and errors printed meanwhile go above the frame (`logging::route_stderr_through`).
//! Started only where [`live_display_wanted`] says so; everywhere else the run prints its plain
//! progress lines.

use std::io::{IsTerminal as _, Write as _};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::live_progress::{Board, live_display_wanted, redraw};

/// How often the view is redrawn while no progress line comes.
const REDRAW_INTERVAL: Duration = Duration::from_millis(500);

/// Columns assumed when the terminal does not say (`COLUMNS`).
const DEFAULT_WIDTH: usize = 100;

struct View {
    board: Board,
    started: Instant,
    /// Rows of the frame now on the screen, directly above the cursor.
    drawn: usize,
}

impl View {
    /// Removes the frame, prints `bytes` (an event) where it was, and draws the frame below.
    fn print_above(&mut self, bytes: &[u8]) {
        let clear = redraw(self.drawn, &[]);
        let mut stderr = std::io::stderr().lock();
        let _ = stderr.write_all(clear.as_bytes());
        let _ = stderr.write_all(bytes);
        drop(stderr);
        self.drawn = 0;
        self.draw();
    }

    fn draw(&mut self) {
        let lines = self.board.lines(self.started.elapsed());
        let frame = redraw(self.drawn, &lines);
        let mut stderr = std::io::stderr().lock();
        // A terminal that went away cannot be drawn on; the run goes on without its view.
        let _ = stderr.write_all(frame.as_bytes());
        let _ = stderr.flush();
        self.drawn = lines.len();
    }
}

/// A live view being drawn; dropping it draws the last frame and stops the redraws, leaving the
/// frame on screen above whatever is printed next.
pub(crate) struct LiveDisplay {
    view: Arc<Mutex<View>>,
    stop: Arc<AtomicBool>,
    ticker: Option<std::thread::JoinHandle<()>>,
}

impl LiveDisplay {
    /// A view of `clusters` timed from `started`, when stderr is a terminal that wants one.
    pub(crate) fn start_if_wanted(clusters: &[String], started: Instant) -> Option<LiveDisplay> {
        let wanted = live_display_wanted(std::io::stderr().is_terminal(), |name| std::env::var(name).ok());
        wanted.then(|| LiveDisplay::start(clusters, started))
    }

    fn start(clusters: &[String], started: Instant) -> LiveDisplay {
        let width = std::env::var("COLUMNS")
            .ok()
            .and_then(|columns| columns.trim().parse::<usize>().ok())
            .filter(|columns| *columns > 0)
            .unwrap_or(DEFAULT_WIDTH);
        // One column short of the edge: a row that fills the last column wraps on some terminals.
        let view = Arc::new(Mutex::new(View {
            board: Board::new(clusters.iter().cloned(), width.saturating_sub(1)),
            started,
            drawn: 0,
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let ticker = {
            let (view, stop) = (Arc::clone(&view), Arc::clone(&stop));
            std::thread::Builder::new()
                .name("meshfed-live-progress".to_owned())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::park_timeout(REDRAW_INTERVAL);
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        view.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).draw();
                    }
                })
                .ok()
        };
        let route = Arc::clone(&view);
        crate::logging::route_stderr_through(Some(Arc::new(move |bytes: &[u8]| {
            route
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .print_above(bytes);
        })));
        LiveDisplay { view, stop, ticker }
    }

    /// Where the run's progress lines go while the view is shown: each is noted and drawn.
    pub(crate) fn progress(&self) -> impl FnMut(&str) + Send + 'static {
        let view = Arc::clone(&self.view);
        move |line: &str| {
            let mut view = view.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let at = view.started.elapsed();
            view.board.note(at, line);
            view.draw();
        }
    }
}

impl Drop for LiveDisplay {
    fn drop(&mut self) {
        crate::logging::route_stderr_through(None);
        self.stop.store(true, Ordering::Relaxed);
        if let Some(ticker) = self.ticker.take() {
            ticker.thread().unpark();
            let _ = ticker.join();
        }
        self.view.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).draw();
    }
}
