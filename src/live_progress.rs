//! A live view of a long run for a terminal (the kind cargo and docker give): one row per cluster
//! with its current step and how long it has been on it, and a row with the run's latest step,
//! redrawn in place. Pure: progress lines and their times in, frames out. Every character that
//! reaches a frame from a progress line (which may quote a tool's output) is made printable; the
//! only terminal control in a frame is meshfed's own ([`redraw`]). Whether a terminal gets frames at
//! all is [`live_display_wanted`]; writing them is the run's (`run::live_display`).

#![forbid(unsafe_code)]

use std::fmt::Write as _;
use std::time::Duration;

use crate::printable::printable;

/// What the live view shows: each cluster's step, and the run's latest step.
#[derive(Clone, Debug)]
pub struct Board {
    clusters: Vec<ClusterRow>,
    latest: Option<(String, Duration)>,
    width: usize,
}

#[derive(Clone, Debug)]
struct ClusterRow {
    name: String,
    /// The current step and when it started (from the run's start).
    step: Option<(String, Duration)>,
}

impl Board {
    /// A board for `clusters`, in that order, whose rows are cut to `width` characters (a row
    /// that wrapped would break the redraw).
    pub fn new<S: Into<String>>(clusters: impl IntoIterator<Item = S>, width: usize) -> Board {
        Board {
            clusters: clusters
                .into_iter()
                .map(|name| ClusterRow {
                    name: name.into(),
                    step: None,
                })
                .collect(),
            latest: None,
            width: width.max(20),
        }
    }

    /// Takes a progress line given `at` from the run's start. A line about one cluster
    /// (`cluster1: installing Istio 1.29.0`, or `cluster cluster1: scaling ...`) becomes that
    /// cluster's step; every line is the run's latest step.
    pub fn note(&mut self, at: Duration, line: &str) {
        let about = line.strip_prefix("cluster ").unwrap_or(line);
        if let Some((name, step)) = about.split_once(": ")
            && let Some(row) = self.clusters.iter_mut().find(|row| row.name == name)
        {
            row.step = Some((step.to_owned(), at));
        }
        self.latest = Some((line.to_owned(), at));
    }

    /// The rows as of `now` (from the run's start): the run's elapsed time and latest step, then
    /// one row per cluster with the time on its step. Printable text only, each row at most the
    /// board's width.
    pub fn lines(&self, now: Duration) -> Vec<String> {
        let name_width = self
            .clusters
            .iter()
            .map(|row| row.name.chars().count())
            .max()
            .unwrap_or(0);
        let mut lines = vec![self.cut(&format!(
            "[{:>6}] {}",
            elapsed(now),
            self.latest.as_ref().map_or("starting", |(line, _)| line.as_str())
        ))];
        for row in &self.clusters {
            let (step, since) = match &row.step {
                Some((step, since)) => (step.as_str(), elapsed(now.saturating_sub(*since))),
                None => ("waiting", String::new()),
            };
            lines.push(self.cut(&format!("  {:<name_width$}  {since:>6}  {step}", row.name)));
        }
        lines
    }

    /// `text` made printable and cut to the width (an ellipsis where it was cut).
    fn cut(&self, text: &str) -> String {
        let printable = printable(text).into_owned();
        if printable.chars().count() <= self.width {
            return printable;
        }
        let mut cut: String = printable.chars().take(self.width - 1).collect();
        cut.push('…');
        cut
    }
}

/// `12.3s` under a minute, `4m05s` from one.
fn elapsed(time: Duration) -> String {
    let seconds = time.as_secs_f64();
    if seconds < 60.0 {
        format!("{seconds:.1}s")
    } else {
        let whole = time.as_secs();
        format!("{}m{:02}s", whole / 60, whole % 60)
    }
}

/// The bytes that replace the previous frame (`previous_lines` rows, directly above the cursor)
/// with `lines`: cursor up to the frame's first row, each row cleared and written, anything below
/// the new frame erased. The cursor ends at the start of the line after the frame, where plain
/// output may continue.
pub fn redraw(previous_lines: usize, lines: &[String]) -> String {
    let mut out = String::new();
    if previous_lines > 0 {
        // CUU: cursor up; then CR to column 1.
        let _ = write!(out, "\x1b[{previous_lines}A");
    }
    for line in lines {
        // EL 2: erase the whole line.
        out.push_str("\r\x1b[2K");
        out.push_str(line);
        out.push('\n');
    }
    // ED 0: erase from the cursor to the end of the screen (a frame shorter than the last one).
    out.push_str("\x1b[J");
    out
}

/// Whether a run shows the live view: only when stderr is a terminal that can move its cursor
/// (`TERM` set and not `dumb`), and neither `NO_COLOR` (no-color.org: "present and not an empty
/// string") nor `CI` (set by GitHub Actions, GitLab CI and others to `true`) asks for plain
/// output. `env` reads a variable.
pub fn live_display_wanted(stderr_is_terminal: bool, env: impl Fn(&str) -> Option<String>) -> bool {
    let set = |name: &str| env(name).is_some_and(|value| !value.is_empty());
    stderr_is_terminal
        && !set("NO_COLOR")
        && env("CI").is_none_or(|value| value.is_empty() || value.eq_ignore_ascii_case("false"))
        && env("TERM").is_some_and(|term| !term.is_empty() && term != "dumb")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: f64) -> Duration {
        Duration::from_secs_f64(seconds)
    }

    #[test]
    fn each_cluster_shows_its_latest_step_and_the_time_on_it() {
        let mut board = Board::new(["cluster1", "cluster2"], 80);
        assert_eq!(
            board.lines(at(0.0)),
            [
                "[  0.0s] starting",
                "  cluster1          waiting",
                "  cluster2          waiting"
            ]
        );
        board.note(at(1.0), "checking kind and docker");
        board.note(at(2.0), "cluster1: creating kind cluster");
        board.note(at(2.5), "cluster2: creating kind cluster");
        board.note(at(40.0), "cluster2: kind cluster created in 38 s");
        board.note(at(70.0), "cluster1: installing Istio 1.29.0");
        board.note(at(80.0), "cluster cluster2: scaling bar.ns2 to 0");
        assert_eq!(
            board.lines(at(95.25)),
            [
                "[ 1m35s] cluster cluster2: scaling bar.ns2 to 0",
                "  cluster1   25.2s  installing Istio 1.29.0",
                "  cluster2   15.2s  scaling bar.ns2 to 0",
            ]
        );
        // A line about something else changes no cluster's row.
        board.note(
            at(96.0),
            "phase before-upgrade: 400 requests foo.ns1 -> bar.ns2 (deadline 530 s)",
        );
        let lines = board.lines(at(96.0));
        assert_eq!(
            lines[0],
            "[ 1m36s] phase before-upgrade: 400 requests foo.ns1 -> bar.ns2 (deadline 530 s)"
        );
        assert_eq!(lines[1], "  cluster1   26.0s  installing Istio 1.29.0");
    }

    #[test]
    fn a_frame_carries_no_control_character_from_a_progress_line_and_fits_the_width() {
        let mut board = Board::new(["cluster1"], 40);
        board.note(
            at(1.0),
            "cluster1: istioctl said \u{1b}[2J\u{1b}]0;owned\u{7}\r\u{202e}evil\n done and a long tail that does not fit",
        );
        for line in board.lines(at(2.0)) {
            assert!(line.chars().count() <= 40, "{line}");
            assert!(!line.chars().any(crate::printable::is_escaped), "{line:?}");
        }
        assert_eq!(
            printable("a\u{1b}[31mb\u{202e}c\u{2028}"),
            "a\\u{1b}[31mb\\u{202e}c\\u{2028}"
        );
    }

    #[test]
    fn a_redraw_moves_up_over_the_last_frame_clears_each_row_and_what_is_left_below() {
        let first = redraw(0, &["a".to_owned(), "b".to_owned()]);
        assert_eq!(first, "\r\x1b[2Ka\n\r\x1b[2Kb\n\x1b[J");
        let second = redraw(2, &["c".to_owned()]);
        assert_eq!(second, "\x1b[2A\r\x1b[2Kc\n\x1b[J");
    }

    #[test]
    fn only_a_capable_terminal_without_no_color_or_ci_gets_the_live_view() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(key, _)| *key == name)
                    .map(|(_, value)| (*value).to_owned())
            }
        };
        assert!(live_display_wanted(true, env(&[("TERM", "xterm-256color")])));
        assert!(
            !live_display_wanted(false, env(&[("TERM", "xterm-256color")])),
            "a file or a pipe"
        );
        assert!(!live_display_wanted(true, env(&[("TERM", "xterm"), ("NO_COLOR", "1")])));
        assert!(
            live_display_wanted(true, env(&[("TERM", "xterm"), ("NO_COLOR", "")])),
            "empty is unset"
        );
        assert!(!live_display_wanted(true, env(&[("TERM", "xterm"), ("CI", "true")])));
        assert!(live_display_wanted(true, env(&[("TERM", "xterm"), ("CI", "false")])));
        assert!(!live_display_wanted(true, env(&[("TERM", "dumb")])));
        assert!(!live_display_wanted(true, env(&[])), "no TERM");
    }
}
